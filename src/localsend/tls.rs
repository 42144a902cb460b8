//! The certificate LocalSend apps see, and the TLS configurations of the
//! LocalSend server and client.
//!
//! LocalSend identifies a device by the SHA-256 of its certificate (its
//! "fingerprint", upper-case hex), the same hash lanshare calls a device
//! ID. lanshare keeps a separate identity for it ([`KIND`]: ECDSA P-256,
//! which every app version accepts; the native identity is Ed25519), so the
//! LocalSend port never presents the native certificate and a LocalSend
//! device can never pass for a native one.
//!
//! Both sides require and verify the peer's certificate with
//! [`PeerVerifier`]: a single self-signed certificate whose key signed the
//! handshake. The server demands a client certificate as LocalSend 1.18
//! does, so every request carries the sender's proven fingerprint; the
//! client pins the fingerprint it expects (from discovery or trust), or
//! accepts any and reads it off the handshake (a first `register`).
//!
//! LocalSend needs TLS 1.2 as well as 1.3 (older apps); this is the only
//! place in lanshare that allows 1.2, with ring only, like the native
//! transport whose TLS 1.3-only configuration lives in
//! [`crate::transport::tls`].

use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::server::NoServerSessionStorage;

use crate::identity::verifier::PeerVerifier;
use crate::identity::{DeviceId, Identity, IdentityError, Kind};
use crate::transport::tls::provider;

/// The LocalSend identity: ECDSA P-256 in `localsend-cert.pem` /
/// `localsend-key.pem` in the state directory.
pub const KIND: Kind = Kind {
    cert_file: "localsend-cert.pem",
    key_file: "localsend-key.pem",
    algorithm: &rcgen::PKCS_ECDSA_P256_SHA256,
    common_name: "LocalSend User",
    dns_name: "localsend.invalid",
};

/// ALPN both sides offer (LocalSend speaks HTTP/1.1).
const ALPN: &[u8] = b"http/1.1";

/// The name sent as SNI; LocalSend pins by fingerprint, not by name.
pub const SERVER_NAME: &str = "localsend.invalid";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("invalid LocalSend TLS configuration: {0}")]
pub struct TlsError(#[from] rustls::Error);

/// Loads the LocalSend identity from `state_dir`, creating it on first use.
/// Its fingerprint ([`Identity::id`], shown with [`DeviceId::to_hex`]) stays
/// the same across restarts.
///
/// # Errors
/// As [`Identity::load_or_create`].
pub fn load_identity(state_dir: &Path) -> Result<Identity, IdentityError> {
    Identity::load_or_create_kind(state_dir, &KIND)
}

/// The server side: TLS 1.2 and 1.3, a client certificate required.
///
/// # Errors
/// [`TlsError`] if the identity's key does not fit its certificate.
pub fn server_config(identity: &Identity) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(Arc::new(PeerVerifier::any(provider)))
        .with_single_cert(vec![identity.cert().clone()], identity.key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption: every connection proves its client certificate anew.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(config)
}

/// The client side, presenting our certificate; pinned to `expected` when
/// we know whom we mean to reach.
///
/// # Errors
/// [`TlsError`] if the identity's key does not fit its certificate.
pub fn client_config(
    identity: &Identity,
    expected: Option<DeviceId>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = match expected {
        Some(id) => PeerVerifier::pinned(provider.clone(), id),
        None => PeerVerifier::any(provider.clone()),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![identity.cert().clone()], identity.key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// A TLS 1.2-only client presenting `identity`'s certificate.
    fn tls12_client(identity: &Identity) -> rustls::ClientConfig {
        let provider = provider();
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerVerifier::any(provider)))
            .with_client_auth_cert(vec![identity.cert().clone()], identity.key())
            .unwrap()
    }

    async fn handshake(server: rustls::ServerConfig, client: rustls::ClientConfig) -> bool {
        let (a, b) = tokio::io::duplex(64 << 10);
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
        let (accepted, connected) = tokio::join!(
            TlsAcceptor::from(Arc::new(server)).accept(a),
            TlsConnector::from(Arc::new(client)).connect(name, b)
        );
        accepted.is_ok() && connected.is_ok()
    }

    #[tokio::test]
    async fn localsend_speaks_tls_1_2_and_the_native_transport_does_not() {
        let ours = Identity::generate_kind(&KIND).unwrap();
        let phone = Identity::generate_kind(&KIND).unwrap();
        let localsend = server_config(&ours).unwrap();
        assert!(handshake(localsend, tls12_client(&phone)).await);
        let native_identity = Identity::generate().unwrap();
        let native = crate::transport::tls::server_config(&native_identity).unwrap();
        assert!(!handshake(native, tls12_client(&phone)).await);
        // And the native client never offers 1.2 either.
        let native_client = crate::transport::tls::client_config(&native_identity, None).unwrap();
        let tls12_only = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ours.cert().clone()], ours.key())
            .unwrap();
        assert!(!handshake(tls12_only, native_client).await);
    }

    #[test]
    fn the_localsend_identity_is_p256_stable_and_apart_from_the_device_one() {
        let tmp = tempfile::tempdir().unwrap();
        let first = load_identity(tmp.path()).unwrap();
        let again = load_identity(tmp.path()).unwrap();
        assert_eq!(first.id(), again.id(), "fingerprint stable across restarts");
        assert_eq!(first.id(), DeviceId::from_cert_der(first.cert()));
        let device = Identity::load_or_create(tmp.path()).unwrap();
        assert_ne!(device.id(), first.id());
        let cert = webpki::EndEntityCert::try_from(first.cert()).unwrap();
        // id-ecPublicKey with the prime256v1 curve in the SPKI.
        let spki = cert.subject_public_key_info();
        let p256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert!(spki.windows(p256.len()).any(|w| w == p256), "not P-256");
        assert!(tmp.path().join(KIND.cert_file).exists());
    }
}
