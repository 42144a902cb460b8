//! Pairing with a short authentication string (`share pair`): the same
//! code on both sides, mutual trust only after both users confirm, a
//! different code through a man in the middle, and no pairing through an
//! identity mismatch.

use std::time::Duration;

use serde_json::Value;

use crate::common::{TestDaemon, eventually, random_file};
use crate::transfer::{CLI_LIMIT, failure, one_json, send_json, share_within};

/// `share pair --list --json`.
fn pairings(daemon: &TestDaemon) -> Vec<Value> {
    daemon.json(&["pair", "--list"]).as_array().unwrap().clone()
}

/// Polls the pairing list until `pred` holds for an entry (bounded).
fn wait_pairing(daemon: &TestDaemon, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    eventually(what, Duration::from_secs(20), || {
        pairings(daemon).into_iter().find(|p| pred(p))
    })
}

/// `share pair PEER --json` from `from`; returns the pairing document.
fn start_pairing(from: &TestDaemon, to: &TestDaemon, transport: &str) -> Value {
    let out = share_within(
        from,
        &["pair", &to.addr(), "--transport", transport, "--json"],
        CLI_LIMIT,
    );
    assert!(out.status.success(), "{:?}", failure(&out));
    one_json(&out)
}

fn trusted_ids(daemon: &TestDaemon) -> String {
    std::fs::read_to_string(daemon.state.join("trusted.json")).unwrap_or_default()
}

/// Alice asks to pair with bob over `transport`; both list the same code;
/// after both confirm, each trusts the other.
fn pair_both_ways(transport: &str) {
    // Default policy (ask): trust is what makes offers go through unasked.
    let alice = TestDaemon::builder("alice").spawn();
    let bob = TestDaemon::builder("bob").spawn();
    let ours = start_pairing(&alice, &bob, transport);
    assert_eq!(ours["state"], "waiting");
    assert_eq!(ours["direction"], "out");
    assert_eq!(ours["peer"], "bob");
    assert_eq!(ours["peer_id"], bob.id());
    assert_eq!(ours["transport"], transport);
    let code = ours["code"].as_str().unwrap().to_owned();
    assert!(
        code.len() == 6 && code.chars().all(|c| c.is_ascii_digit()),
        "{code}"
    );

    let theirs = wait_pairing(&bob, "the incoming request", |p| p["direction"] == "in");
    assert_eq!(
        theirs["code"],
        code.as_str(),
        "both sides must show the same code"
    );
    assert_eq!(theirs["peer"], "alice");
    assert_eq!(theirs["peer_id"], alice.id());
    assert_eq!(theirs["state"], "waiting");
    assert!(bob.wait_logged(&format!("code {code}")));

    // Both have to confirm, and `share status` says so.
    assert_eq!(alice.json(&["status"])["pairings_to_confirm"], 1);
    assert_eq!(bob.json(&["status"])["pairings_to_confirm"], 1);

    // One side confirming is not enough.
    let out = share_within(
        &alice,
        &["pair", "--confirm", ours["id"].as_str().unwrap(), "--json"],
        CLI_LIMIT,
    );
    assert!(out.status.success(), "{:?}", failure(&out));
    assert_eq!(alice.json(&["status"])["pairings_to_confirm"], 0);
    assert_eq!(bob.json(&["status"])["pairings_to_confirm"], 1);
    let after = one_json(&out);
    assert_eq!(
        (&after["state"], &after["you_confirmed"]),
        (&Value::from("waiting"), &Value::from(true))
    );
    assert!(!trusted_ids(&alice).contains(&bob.id()));
    wait_pairing(&bob, "alice's confirmation", |p| {
        p["peer_confirmed"] == true
    });
    assert!(!trusted_ids(&bob).contains(&alice.id()));

    // Bob confirms and waits for the outcome.
    let out = share_within(
        &bob,
        &[
            "pair",
            "--confirm",
            &theirs["id"].as_str().unwrap()[..4],
            "--wait",
            "--json",
        ],
        CLI_LIMIT,
    );
    assert!(out.status.success(), "{:?}", failure(&out));
    assert_eq!(one_json(&out)["state"], "paired");
    wait_pairing(&alice, "the pairing to complete", |p| {
        p["state"] == "paired"
    });
    assert!(trusted_ids(&alice).contains(&bob.id()));
    assert!(trusted_ids(&bob).contains(&alice.id()));

    // Each now accepts the other's files without asking.
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("after-pairing.bin");
    random_file(&file, 10_000, 3);
    let file = file.to_str().unwrap();
    assert_eq!(send_json(&alice, &[&bob.addr(), file])["status"], "done");
    assert_eq!(send_json(&bob, &[&alice.addr(), file])["status"], "done");
}

#[test]
fn both_sides_show_the_same_code_and_trust_each_other_over_quic() {
    pair_both_ways("quic");
}

#[test]
fn both_sides_show_the_same_code_and_trust_each_other_over_tcp() {
    pair_both_ways("tcp");
}

#[test]
fn a_declined_pairing_trusts_nobody() {
    let alice = TestDaemon::builder("alice").spawn();
    let bob = TestDaemon::builder("bob").spawn();
    let ours = start_pairing(&alice, &bob, "auto");
    let theirs = wait_pairing(&bob, "the incoming request", |p| p["direction"] == "in");
    let out = bob.cli(&["pair", "--reject", theirs["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{:?}", failure(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("declined pairing with alice"));
    let ended = wait_pairing(&alice, "the refusal", |p| p["state"] == "rejected");
    assert_eq!(ended["reason"], "declined on bob");
    assert_eq!(ended["peer_confirmed"], false);
    // Confirming afterwards fails with the reason.
    let out = alice.cli(&["pair", "--confirm", ours["id"].as_str().unwrap()]);
    let (code, stderr) = failure(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("already over"), "{stderr}");
    assert!(!trusted_ids(&alice).contains(&bob.id()));
    assert!(!trusted_ids(&bob).contains(&alice.id()));
}

#[test]
fn pairing_through_an_identity_mismatch_fails() {
    // Bob trusts alice; a second daemon calling itself "alice" (another
    // key) asks bob to pair: bob refuses before any code is shown.
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::builder("bob").spawn();
    let out = bob.cli(&["trust", &alice.addr()]);
    assert!(out.status.success(), "{:?}", failure(&out));
    let impostor = TestDaemon::start("alice");
    let out = share_within(&impostor, &["pair", &bob.addr()], CLI_LIMIT);
    let (code, stderr) = failure(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("identity mismatch"), "{stderr}");
    assert!(pairings(&bob).is_empty());
    assert!(pairings(&impostor).is_empty());
    assert!(bob.wait_logged(
        "REFUSED: a device presents a different identity under the name of a trusted device"
    ));

    // The other way round: alice trusts bob, and whoever answers at an
    // address under bob's name with another key is not paired with.
    let out = alice.cli(&["trust", &bob.addr()]);
    assert!(out.status.success(), "{:?}", failure(&out));
    let fake_bob = TestDaemon::start("bob");
    let out = share_within(&alice, &["pair", &fake_bob.addr()], CLI_LIMIT);
    let (code, stderr) = failure(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("identity mismatch"), "{stderr}");
    assert!(pairings(&fake_bob).is_empty());
    assert!(!trusted_ids(&alice).contains(&fake_bob.id()));
}

/// A relay that terminates TLS towards alice (posing as bob) and dials bob
/// (posing as alice), as a man in the middle would: each side's code comes
/// from its own TLS session, so alice and bob see different codes, and each
/// equals the code of the relay's session with that side.
#[test]
fn a_man_in_the_middle_gets_different_codes() {
    use lanshare::identity::Identity;
    use lanshare::identity::trust::TrustStore;
    use lanshare::protocol::Message;
    use lanshare::transfer::framed::Framed;
    use lanshare::transfer::handshake;
    use lanshare::transport::Transport;
    use lanshare::transport::quic::QuicTransport;

    let alice = TestDaemon::builder("alice").spawn();
    let bob = TestDaemon::builder("bob").spawn();
    let bob_addr: std::net::SocketAddr = bob.addr().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let trust_dir = tempfile::tempdir().unwrap();
    let (relay_addr, relay_codes) = runtime.block_on(async {
        let identity = Identity::generate().unwrap();
        let relay = std::sync::Arc::new(
            QuicTransport::bind("127.0.0.1:0".parse().unwrap(), &identity, true).unwrap(),
        );
        let addr = relay.local_addr().unwrap();
        let (links_tx, mut links_rx) = tokio::sync::mpsc::channel(1);
        let cancel = tokio_util::sync::CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        tokio::spawn(relay.clone().serve(
            links_tx,
            lanshare::transport::admission::Handshakes::new(Default::default()),
            cancel,
            tracker,
        ));
        let trust = TrustStore::load(trust_dir.path()).unwrap();
        let (codes_tx, codes_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let from_alice = links_rx.recv().await.unwrap();
            let mut from_alice = Framed::new(from_alice);
            handshake::server(&mut from_alice, "bob", &trust)
                .await
                .unwrap();
            assert_eq!(from_alice.recv().await.unwrap(), Message::PairRequest);
            let to_bob = relay.connect(bob_addr, None).await.unwrap();
            let mut to_bob = Framed::new(to_bob);
            handshake::client(&mut to_bob, "alice").await.unwrap();
            to_bob.send(&Message::PairRequest).await.unwrap();
            let codes = (
                from_alice.link().pairing_code().unwrap(),
                to_bob.link().pairing_code().unwrap(),
            );
            codes_tx.send(codes).unwrap();
            // Keep both sessions open while the test looks at the codes.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop((from_alice, to_bob));
        });
        (addr, codes_rx)
    });

    let out = share_within(
        &alice,
        &[
            "pair",
            &relay_addr.to_string(),
            "--transport",
            "quic",
            "--json",
        ],
        CLI_LIMIT,
    );
    assert!(out.status.success(), "{:?}", failure(&out));
    let alice_code = one_json(&out)["code"].as_str().unwrap().to_owned();
    let bob_code = wait_pairing(&bob, "the relayed request", |p| p["direction"] == "in")["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let (relay_alice, relay_bob) = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), relay_codes).await })
        .unwrap()
        .unwrap();
    assert_eq!(alice_code, format!("{relay_alice:06}"));
    assert_eq!(bob_code, format!("{relay_bob:06}"));
    // Two independent TLS sessions: equal codes would be a 1-in-10^6 fluke.
    assert_ne!(alice_code, bob_code, "the users would not notice the relay");
    runtime.shutdown_background();
}

/// `share pair` with a device this one already trusts says so before the
/// code; declining at the prompt (on a terminal: `script` gives it one)
/// exits 1.
#[test]
fn pairing_a_trusted_device_says_so_and_declining_exits_1() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::start("bob");
    let out = alice.cli(&["trust", &bob.addr()]);
    assert!(out.status.success(), "{:?}", failure(&out));
    let command = format!(
        "SHARE_SOCKET={} {} pair {}",
        alice.socket.display(),
        crate::common::share_bin(),
        bob.addr()
    );
    let mut child = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run script(1)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"n\n").unwrap();
    }
    let out = crate::transfer::finish_within(child, CLI_LIMIT);
    let shown = String::from_utf8_lossy(&out.stdout);
    let trusted = shown
        .find("is already trusted here")
        .unwrap_or_else(|| panic!("{shown}"));
    let code = shown
        .find("pairing with bob")
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(trusted < code, "said after the code: {shown}");
    assert!(
        shown.contains("declined pairing with bob; it is still trusted"),
        "{shown}"
    );
    assert_eq!(out.status.code(), Some(1), "{shown}");
}
