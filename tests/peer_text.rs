//! Text from peers and users never reaches a log or a terminal with its
//! control characters (issue 13 item 2, issue 14 item 4): a hostile
//! peer's device name, its `Reject` reason and `Error` message, and a
//! group member's `share reject --reason` are shown cleaned, and none of
//! them can start a log line of its own (which journald would take as a
//! new entry, `<0>` making it an emergency).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use lanshare::identity::Identity;
use lanshare::identity::trust::TrustStore;
use lanshare::protocol::{ErrorCode, Message};
use lanshare::transfer::framed::Framed;
use lanshare::transfer::handshake;
use lanshare::transport::admission::{HandshakeLimits, Handshakes};
use lanshare::transport::quic::QuicTransport;
use lanshare::transport::tcp::TcpTransport;
use lanshare::transport::{Link, Transport};

use crate::common::{TestDaemon, control, eventually, random_file};
use crate::hostile::offer_of;
use crate::transfer::{CLI_LIMIT, finish_within, spawn_share};

/// A reason or message that tries everything at once: a line feed and a
/// journald priority (a forged emergency entry), an OSC title change, a
/// CSI colour, and a right-to-left override.
const HOSTILE_REASON: &str =
    "no\n<0>forged emerg entry\r\n\u{1b}]0;pwned\u{7}\u{1b}[31mred\u{202e}txt.exe";

/// The marker every cleaned form of [`HOSTILE_REASON`] keeps.
const MARKER: &str = "forged emerg entry";

/// A device name with an OSC and a CSI escape, a right-to-left override
/// and a zero-width space.
const HOSTILE_NAME: &str = "\u{1b}]0;pwned\u{7}evil\u{202e}\u{200b}laptop\u{1b}[2J";

/// [`HOSTILE_NAME`] as every listing must show it.
const CLEAN_NAME: &str = "]0;pwnedevillaptop[2J";

/// Characters that must never reach a terminal or a log line.
const FORBIDDEN: [char; 6] = ['\u{1b}', '\u{7}', '\r', '\u{202e}', '\u{200b}', '\u{9b}'];

/// How long the hostile peer waits for the daemon under test.
const LIMIT: Duration = Duration::from_secs(20);

/// A hostile lanshare device on its own loopback address: an identity,
/// a QUIC endpoint to dial from and a TCP listener to be dialled at,
/// driven from a private runtime so the tests stay synchronous.
struct Hostile {
    rt: tokio::runtime::Runtime,
    identity: Identity,
    tcp_addr: SocketAddr,
    links: mpsc::Receiver<Link>,
    cancel: CancellationToken,
}

impl Hostile {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let identity = Identity::generate().unwrap();
        let cancel = CancellationToken::new();
        let (tx, links) = mpsc::channel(4);
        let tcp_addr = rt.block_on(async {
            let tcp = Arc::new(
                TcpTransport::bind("127.0.0.3:0".parse().unwrap(), &identity, true)
                    .await
                    .unwrap(),
            );
            let addr = tcp.local_addr().unwrap();
            tokio::spawn(tcp.serve(
                tx,
                Handshakes::new(HandshakeLimits::default()),
                cancel.clone(),
                TaskTracker::new(),
            ));
            addr
        });
        Self {
            rt,
            identity,
            tcp_addr,
            links,
            cancel,
        }
    }

    /// The next connection a daemon makes to us, answered with `Hello`
    /// under `name` (raw: the encoder sends whatever it is given).
    fn accept(&mut self, name: &str) -> Framed {
        self.rt.block_on(async {
            let link = tokio::time::timeout(LIMIT, self.links.recv())
                .await
                .expect("the daemon did not connect")
                .unwrap();
            let mut framed = Framed::new(link);
            let state = tempfile::tempdir().unwrap();
            let trust = TrustStore::load(state.path()).unwrap();
            handshake::server(&mut framed, name, &trust).await.unwrap();
            framed
        })
    }

    /// A connection to `daemon`, introduced under `name`.
    fn dial(&self, daemon: &TestDaemon, name: &str) -> Framed {
        self.rt.block_on(async {
            let quic =
                QuicTransport::bind("127.0.0.3:0".parse().unwrap(), &self.identity, false).unwrap();
            let link = quic
                .connect(daemon.addr().parse().unwrap(), None)
                .await
                .unwrap();
            let mut framed = Framed::new(link);
            handshake::client(&mut framed, name).await.unwrap();
            framed
        })
    }

    fn recv(&self, framed: &mut Framed) -> Message {
        self.rt
            .block_on(framed.recv_within(LIMIT))
            .expect("no message from the daemon")
    }

    fn send(&self, framed: &mut Framed, message: Message) {
        self.rt.block_on(framed.send(&message)).unwrap();
    }

    /// Says its last word and waits (bounded) for the daemon to hang up.
    fn close(&self, framed: Framed) {
        self.rt.block_on(async {
            let mut link = framed.into_link();
            let _ = link.finish().await;
            link.wait_peer_closed(Duration::from_secs(5)).await;
        });
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// `text` holds none of [`FORBIDDEN`] and no line of it starts with a
/// journald priority.
fn assert_harmless(what: &str, text: &str) {
    for c in FORBIDDEN {
        assert!(
            !text.contains(c),
            "{what} contains U+{:04X}:\n{text:?}",
            u32::from(c)
        );
    }
    for line in text.lines() {
        assert!(
            !line.starts_with("<0>"),
            "{what} has a forged line:\n{text}"
        );
    }
}

/// The daemon's log so far is harmless, and `marker` appears in it only
/// inside lines of the daemon's own making (a level, then the event).
fn assert_log_harmless(daemon: &TestDaemon, marker: &str) {
    assert!(
        daemon.wait_logged(marker),
        "{}: nothing about {marker:?} in the log",
        daemon.name
    );
    let lines = daemon.log_lines();
    assert_harmless(&format!("{}'s log", daemon.name), &lines.join("\n"));
    for line in lines.iter().filter(|l| l.contains(marker)) {
        assert!(
            [" INFO ", " WARN ", " ERROR ", " DEBUG "]
                .iter()
                .any(|level| line.contains(level)),
            "{}: a log line that is not an event: {line:?}",
            daemon.name
        );
    }
}

/// A receiver that first says `Error(Busy)` and then `Reject`, both with
/// a hostile text: the sending daemon logs each on one line, and `share
/// send` shows them without a single escape character.
#[test]
fn a_hostile_receivers_words_forge_no_log_line_and_reach_no_terminal_raw() {
    let alice = TestDaemon::start("alice");
    let mut mallory = Hostile::start();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("a.bin");
    random_file(&file, 10_000, 1);
    let target = mallory.tcp_addr.to_string();
    let send = spawn_share(
        &alice,
        &[
            "send",
            "--transport",
            "tcp",
            &target,
            file.to_str().unwrap(),
        ],
    );

    let mut first = mallory.accept("mallory");
    assert!(matches!(mallory.recv(&mut first), Message::Metadata(_)));
    assert!(matches!(mallory.recv(&mut first), Message::Offer(_)));
    mallory.send(
        &mut first,
        Message::Error {
            code: ErrorCode::Busy,
            message: HOSTILE_REASON.into(),
        },
    );
    mallory.close(first);
    // The sender retries a busy receiver.
    let mut second = mallory.accept("mallory");
    assert!(matches!(mallory.recv(&mut second), Message::Metadata(_)));
    assert!(matches!(mallory.recv(&mut second), Message::Offer(_)));
    mallory.send(
        &mut second,
        Message::Reject {
            reason: HOSTILE_REASON.into(),
        },
    );
    mallory.close(second);

    let out = finish_within(send, CLI_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the rejected send succeeded");
    assert!(
        stderr.contains("interrupted") && stderr.contains("rejected the transfer"),
        "{stderr}"
    );
    assert!(stderr.contains(MARKER), "{stderr}");
    assert_harmless("share send's stderr", &stderr);
    assert_log_harmless(&alice, MARKER);
}

/// A device whose `Hello` name carries escapes and invisible characters
/// shows up cleaned in every listing: its pending offer in `share
/// transfers`, the failed transfer in `share history`, and, when a user
/// adds it by address, in `share peers`.
#[test]
fn a_hostile_device_name_is_listed_cleaned() {
    let bob = TestDaemon::builder("bob").spawn(); // asks before accepting
    let mut mallory = Hostile::start();

    let mut offer = mallory.dial(&bob, HOSTILE_NAME);
    mallory.send(&mut offer, Message::Offer(offer_of("a.txt", b"hello")));
    let pending = bob.wait_transfer("the pending offer", |t| t["state"] == "pending");
    assert_eq!(pending["peer"], CLEAN_NAME);
    let listing = bob.cli(&["transfers"]);
    let shown = String::from_utf8_lossy(&listing.stdout);
    assert!(shown.contains(CLEAN_NAME), "{shown}");
    assert_harmless("share transfers", &shown);

    mallory
        .rt
        .block_on(async { offer.into_link().abort("gone") });
    eventually("the abandoned offer in the history", LIMIT, || {
        let history = bob.json(&["history"]);
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["peer"] == CLEAN_NAME)
            .then_some(())
    });
    let history = bob.cli(&["history"]);
    let shown = String::from_utf8_lossy(&history.stdout);
    assert!(shown.contains(CLEAN_NAME), "{shown}");
    assert_harmless("share history", &shown);

    let target = mallory.tcp_addr.to_string();
    let add = spawn_share(&bob, &["peers", "add", &target]);
    let answered = mallory.accept(HOSTILE_NAME);
    let added = finish_within(add, CLI_LIMIT);
    mallory.close(answered);
    let said = String::from_utf8_lossy(&added.stdout);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(said.contains(CLEAN_NAME), "{said}");
    assert_harmless("share peers add", &said);
    let peers = bob.cli(&["peers"]);
    let shown = String::from_utf8_lossy(&peers.stdout);
    assert!(shown.contains(CLEAN_NAME), "{shown}");
    assert_harmless("share peers", &shown);

    assert_log_harmless(&bob, "evillaptop");
}

/// A user of the receiving daemon (any member of group `lanshare`, for
/// the system service) rejects with a reason that tries to forge a log
/// entry: through `share reject --reason`, and as a raw request on the
/// control socket. Neither forges a line in the receiver's log, and the
/// sender's user sees the reason cleaned.
#[test]
fn a_reject_reason_forges_no_log_line() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::builder("bob").spawn(); // asks before accepting
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("a.bin");
    random_file(&file, 10_000, 2);

    for (i, via) in ["share reject --reason", "a raw control request"]
        .into_iter()
        .enumerate()
    {
        let marker = format!("forged by a member {i}");
        let reason = format!("no\n<0>{marker}\u{1b}[2J\u{202e}");
        let send = spawn_share(&alice, &["send", &bob.addr(), file.to_str().unwrap()]);
        let offer = bob.wait_transfer("the pending offer", |t| t["state"] == "pending");
        let id = offer["id"].as_str().unwrap();
        if i == 0 {
            let out = bob.cli(&["reject", id, "--reason", &reason]);
            assert!(out.status.success(), "{via}: {out:?}");
        } else {
            let request = serde_json::json!({"v": 1, "cmd": "reject", "id": id, "reason": reason});
            control(&bob.socket, &request.to_string()).unwrap();
        }
        let out = finish_within(send, CLI_LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{via}: the rejected send succeeded");
        assert!(stderr.contains(&marker), "{via}: {stderr}");
        assert_harmless(&format!("{via}: share send's stderr"), &stderr);
        assert_log_harmless(&bob, &marker);
        assert_log_harmless(&alice, &marker);
        let rejected = bob
            .transfers()
            .into_iter()
            .find(|t| t["id"] == offer["id"])
            .unwrap();
        assert_eq!(
            rejected["reason"].as_str().unwrap(),
            format!("no <0>{marker}[2J"),
            "{via}"
        );
    }
}

/// Strangers named like a trusted device (Cyrillic `е`, full-width
/// letters) are flagged as look-alikes of it wherever they are listed,
/// with their own ID prefix beside the name, and the receiving daemon
/// warns; a stranger with a name of its own is not flagged.
#[test]
fn strangers_named_like_a_trusted_device_are_flagged() {
    let state = tempfile::tempdir().unwrap();
    let trusted = Identity::generate().unwrap().id();
    TrustStore::load(state.path())
        .unwrap()
        .trust(trusted, &"desktop".into())
        .unwrap();
    let bob = TestDaemon::builder("bob").state_dir(state.path()).spawn();
    let flag = format!("look-alike of trusted {}", trusted.short());

    // An offer from "dеsktop" (Cyrillic е), and one from "laptop".
    let mut mallory = Hostile::start();
    let mallory_id = mallory.identity.id();
    let mut offer = mallory.dial(&bob, "d\u{435}sktop");
    mallory.send(&mut offer, Message::Offer(offer_of("a.txt", b"hello")));
    let honest = Hostile::start();
    let mut other = honest.dial(&bob, "laptop");
    honest.send(&mut other, Message::Offer(offer_of("b.txt", b"hello")));
    let pending = |name: &'static str| {
        bob.wait_transfer(name, move |t| t["state"] == "pending" && t["peer"] == name)
    };
    let alike = pending("d\u{435}sktop");
    assert_eq!(alike["looks_like"], trusted.to_string());
    assert_eq!(alike["peer_id"], mallory_id.to_string());
    assert!(pending("laptop").get("looks_like").is_none());
    let listing = String::from_utf8(bob.cli(&["transfers"]).stdout).unwrap();
    let row = |name: &str| {
        listing
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{listing}"))
            .to_owned()
    };
    assert!(
        row("d\u{435}sktop").contains(&format!("({}, {flag})", mallory_id.short())),
        "{listing}"
    );
    assert!(
        row("laptop").contains(&format!("laptop ({})", honest.identity.id().short())),
        "{listing}"
    );
    assert!(!row("laptop").contains("look-alike"), "{listing}");
    assert!(bob.wait_logged("looks like that of the trusted device desktop"));

    // Abandoned, it stays flagged in the history.
    mallory
        .rt
        .block_on(async { offer.into_link().abort("gone") });
    eventually("the abandoned offer in the history", LIMIT, || {
        let history = bob.json(&["history"]);
        history
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["peer"] == "d\u{435}sktop")
            .map(|e| assert_eq!(e["looks_like"], trusted.to_string()))
    });
    let history = String::from_utf8(bob.cli(&["history"]).stdout).unwrap();
    assert!(history.contains(&flag), "{history}");

    // Added by address under a full-width name, it is flagged in `share
    // peers` too.
    let target = mallory.tcp_addr.to_string();
    let add = spawn_share(&bob, &["peers", "add", &target]);
    let answered = mallory.accept("\u{ff44}\u{ff45}\u{ff53}\u{ff4b}\u{ff54}\u{ff4f}\u{ff50}");
    let added = finish_within(add, CLI_LIMIT);
    mallory.close(answered);
    assert!(added.status.success(), "{added:?}");
    let peers = bob.json(&["peers"]);
    let listed = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == mallory_id.to_string())
        .expect("the added peer is listed");
    assert_eq!(listed["looks_like"], trusted.to_string());
    let shown = String::from_utf8(bob.cli(&["peers"]).stdout).unwrap();
    assert!(shown.contains(&flag), "{shown}");
    drop(other);
}
