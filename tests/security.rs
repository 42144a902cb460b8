//! Identity and access: impostors, key files, the control socket.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::common::{TestDaemon, assert_same_file, random_file, tree};
use crate::transfer::{CLI_LIMIT, failure, send_json, share_within};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Bob trusts alice; a second daemon calling itself "alice" (fresh
/// state, so a different key) tries to send to bob over `transport`.
fn impostor_is_refused(transport: &[&str], expect: &str) {
    let alice = TestDaemon::start("alice");
    // `--accept all`: whatever stops the impostor, it is not consent.
    let bob = TestDaemon::start("bob");
    let out = bob.cli(&["trust", &alice.addr()]);
    assert!(out.status.success(), "{:?}", failure(&out));
    let impostor = TestDaemon::start("alice");
    assert_ne!(impostor.id(), alice.id());

    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("invoice.pdf");
    random_file(&file, 50_000, 7);
    let file = file.to_str().unwrap();
    let bob_addr = bob.addr();
    let mut args = vec!["send", &bob_addr, file];
    args.extend_from_slice(transport);

    let out = share_within(&impostor, &args, CLI_LIMIT);
    let (code, stderr) = failure(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("identity mismatch"), "{stderr}");
    assert_eq!(tree(&bob.download), Vec::<String>::new());
    assert!(bob.transfers().is_empty(), "{:?}", bob.transfers());
    assert!(bob.wait_logged(
        "REFUSED: a device presents a different identity under the name of a trusted device"
    ));
    if transport.is_empty() {
        // Auto mode: QUIC wins the race on loopback, and its refusal must
        // end the dial; a TCP attempt afterwards means the refusal was
        // mistaken for a network failure.
        assert!(
            !bob.logged("kind=tcp"),
            "the dialer fell back to TCP after QUIC refused the impostor"
        );
    }

    // The real alice is unaffected.
    let result = send_json(&alice, &args[1..]);
    assert_eq!(result["status"], "done");
    assert_eq!(result["transport"], expect);
    assert_same_file(Path::new(file), &bob.download.join("invoice.pdf"));
}

#[test]
fn impostor_under_a_trusted_name_is_refused_by_default() {
    // Auto: the race must not turn a refusal into a TCP success.
    impostor_is_refused(&[], "quic");
}

#[test]
fn impostor_under_a_trusted_name_is_refused_over_quic() {
    impostor_is_refused(&["--transport", "quic"], "quic");
}

#[test]
fn impostor_under_a_trusted_name_is_refused_over_tcp() {
    impostor_is_refused(&["--transport", "tcp"], "tcp");
}

/// RFC 4648 base32, no padding: written out here so the test does not
/// trust the code under test for the encoding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = String::new();
    for b in bytes {
        bits.push_str(&format!("{b:08b}"));
    }
    bits.as_bytes()
        .chunks(5)
        .map(|c| {
            let mut v = 0;
            for i in 0..5 {
                v = v * 2 + usize::from(c.get(i) == Some(&b'1'));
            }
            ALPHABET[v] as char
        })
        .collect()
}

#[test]
fn identity_is_private_persistent_and_derived_from_the_certificate() {
    let mut first = TestDaemon::start("alice");
    let state = first.state.clone();
    let id = first.id();
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("key.pem")), 0o600);
    let cert_pem = std::fs::read(state.join("cert.pem")).unwrap();
    let key_pem = std::fs::read(state.join("key.pem")).unwrap();

    let cert = CertificateDer::from_pem_file(state.join("cert.pem")).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    assert_eq!(id.replace('-', ""), base32(digest.as_ref()));
    assert_eq!(
        id,
        lanshare::identity::DeviceId::from_cert_der(&cert).to_string()
    );

    assert!(first.stop(), "daemon did not stop cleanly");
    let second = TestDaemon::builder("alice").state_dir(&state).spawn();
    assert_eq!(second.id(), id);
    assert_eq!(std::fs::read(state.join("cert.pem")).unwrap(), cert_pem);
    assert_eq!(std::fs::read(state.join("key.pem")).unwrap(), key_pem);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("key.pem")), 0o600);
}

#[test]
fn control_socket_is_owner_only() {
    let alice = TestDaemon::start("alice");
    let meta = std::fs::metadata(&alice.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
}
