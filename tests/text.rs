//! Short texts (`share send PEER --text`, `share inbox`,
//! `share receive --text`): exact round trips of non-ASCII text, consent
//! like offers, and the 64 KiB limit enforced by the sending CLI, the
//! sending daemon and the receiver.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{TestDaemon, share_bin};
use crate::transfer::{CLI_LIMIT, failure, finish_within, one_json, share_within, spawn_share};

const LIMIT: usize = 64 << 10;

/// `share ARGS` against `daemon` with `input` on stdin (bounded).
fn share_with_stdin(daemon: &TestDaemon, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(share_bin())
        .args(args)
        .env("SHARE_SOCKET", &daemon.socket)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start share");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A writer thread: the CLI may stop reading (over-long input).
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    finish_within(child, CLI_LIMIT)
}

fn inbox(daemon: &TestDaemon) -> Vec<Value> {
    daemon.json(&["inbox"]).as_array().unwrap().clone()
}

fn history(daemon: &TestDaemon) -> Vec<Value> {
    daemon.json(&["history"]).as_array().unwrap().clone()
}

#[test]
fn non_ascii_text_round_trip_is_exact() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::start("bob");
    let text = "Grüße aus der Küche 🍰\nzweite Zeile: ünïcödé ✓ — 日本語\n\tend";
    let out = share_within(
        &alice,
        &["send", &bob.addr(), "--text", text, "--json"],
        CLI_LIMIT,
    );
    assert!(out.status.success(), "{:?}", failure(&out));
    let sent = one_json(&out);
    assert_eq!(sent["status"], "done");
    assert_eq!(sent["peer"], "bob");
    assert_eq!(sent["bytes"], text.len());

    let texts = inbox(&bob);
    assert_eq!(texts.len(), 1);
    assert_eq!(texts[0]["text"], text);
    assert_eq!(texts[0]["peer"], "alice");
    assert_eq!(texts[0]["peer_id"], alice.id());
    assert_eq!(texts[0]["read"], false);
    assert_eq!(bob.json(&["status"])["unread_texts"], 1);

    // Exactly the bytes sent, nothing added (stdout is a pipe).
    let out = bob.cli(&["receive", "--text"]);
    assert!(out.status.success(), "{:?}", failure(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
    // Read once: the next call has nothing unread.
    let out = bob.cli(&["receive", "--text"]);
    let (code, stderr) = failure(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no unread text"), "{stderr}");
    assert_eq!(inbox(&bob)[0]["read"], true);
    assert_eq!(bob.json(&["status"])["unread_texts"], 0);

    // Both histories record it as a text.
    for (daemon, direction, peer) in [(&alice, "out", "bob"), (&bob, "in", "alice")] {
        let h = history(daemon);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0]["kind"], "text");
        assert_eq!(h[0]["outcome"], "done");
        assert_eq!(h[0]["direction"], direction);
        assert_eq!(h[0]["peer"], peer);
        assert_eq!(h[0]["bytes"], text.len());
        assert_eq!(h[0]["names"][0], "text: Grüße aus der Küche 🍰…");
    }
}

#[test]
fn text_from_stdin_up_to_the_limit_and_not_beyond() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::start("bob");
    // Exactly 64 KiB of 4-byte characters arrives intact.
    let full = "🍰".repeat(LIMIT / 4);
    assert_eq!(full.len(), LIMIT);
    let out = share_with_stdin(
        &alice,
        &["send", &bob.addr(), "--text", "-"],
        full.as_bytes(),
    );
    assert!(out.status.success(), "{:?}", failure(&out));
    let out = bob.cli(&["receive", "--text"]);
    assert!(out.status.success(), "{:?}", failure(&out));
    assert!(
        out.stdout == full.as_bytes(),
        "the 64 KiB text changed on the way"
    );

    // One byte more: the CLI refuses with a clear message, nothing is sent.
    let over = "x".repeat(LIMIT + 1);
    let out = share_with_stdin(
        &alice,
        &["send", &bob.addr(), "--text", "-"],
        over.as_bytes(),
    );
    let (code, stderr) = failure(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("65536 bytes (64 KiB)"), "{stderr}");
    assert!(stderr.contains("send it as a file"), "{stderr}");
    let out = share_within(&alice, &["send", &bob.addr(), "--text", &over], CLI_LIMIT);
    let (code, stderr) = failure(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("65537 bytes"), "{stderr}");

    // A client bypassing the CLI meets the same check in the daemon.
    let request = serde_json::json!({
        "v": 1, "cmd": "send_text", "peer": bob.addr(), "text": over,
    });
    let reply = raw_control(&alice, &request);
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("65537 bytes"),
        "{reply}"
    );

    // Invalid UTF-8 on stdin is refused too.
    let out = share_with_stdin(&alice, &["send", &bob.addr(), "--text", "-"], b"caf\xe9");
    let (code, stderr) = failure(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not UTF-8"), "{stderr}");
    assert_eq!(inbox(&bob).len(), 1);
}

/// One request line on the control socket, returning the final reply.
fn raw_control(daemon: &TestDaemon, request: &Value) -> Value {
    use std::io::{BufRead, BufReader};
    let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut line = serde_json::to_vec(request).unwrap();
    line.push(b'\n');
    stream.write_all(&line).unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        let reply: Value = serde_json::from_str(&reply).unwrap();
        if reply["type"] != "event" {
            return reply;
        }
    }
}

/// A peer that ignores the limit: the receiver stops it at the length
/// field with a protocol error and stores nothing.
#[test]
fn receiver_rejects_an_over_limit_text() {
    use lanshare::identity::Identity;
    use lanshare::protocol::{ErrorCode, Message};
    use lanshare::transfer::framed::Framed;
    use lanshare::transfer::handshake;
    use lanshare::transport::Transport;
    use lanshare::transport::quic::QuicTransport;
    use tokio::io::AsyncWriteExt;

    let bob = TestDaemon::start("bob");
    let bob_addr: std::net::SocketAddr = bob.addr().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = runtime.block_on(async {
        let identity = Identity::generate().unwrap();
        let quic = QuicTransport::bind("127.0.0.1:0".parse().unwrap(), &identity, false).unwrap();
        let link = quic.connect(bob_addr, None).await.unwrap();
        let mut framed = Framed::new(link);
        handshake::client(&mut framed, "mallory").await.unwrap();
        let mut link = framed.into_link();
        let len = LIMIT + 1;
        let mut frame = Vec::with_capacity(9 + len);
        frame.extend_from_slice(&u32::try_from(1 + 4 + len).unwrap().to_be_bytes());
        frame.push(0x0d);
        frame.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        frame.resize(9 + len, b'x');
        link.writer.write_all(&frame).await.unwrap();
        link.writer.flush().await.unwrap();
        let mut framed = Framed::new(link);
        tokio::time::timeout(Duration::from_secs(10), framed.recv())
            .await
            .unwrap()
            .unwrap()
    });
    let Message::Error { code, message } = reply else {
        panic!("expected Error, got {reply:?}");
    };
    assert_eq!(code, ErrorCode::Protocol);
    let message = message.clean();
    assert!(
        message.contains("text of 65537 bytes exceeds the 65536-byte limit"),
        "{message}"
    );
    assert!(inbox(&bob).is_empty());
    assert!(bob.transfers().is_empty());
}

#[test]
fn text_waits_for_consent_like_an_offer() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::builder("bob").spawn(); // default policy: ask
    // A reader waiting for the next text.
    let reader = spawn_share(&bob, &["receive", "--text", "--wait", "25", "--json"]);
    let sender = spawn_share(&alice, &["send", &bob.addr(), "--text", "ping ✓"]);
    let pending = bob.wait_transfer("the pending text", |t| t["state"] == "pending");
    assert_eq!(pending["kind"], "text");
    assert_eq!(pending["names"][0], "text: ping ✓");
    assert_eq!(pending["files"], 0);
    assert!(inbox(&bob).is_empty(), "stored before consent");
    bob.accept_offer(&pending);
    let sent = finish_within(sender, CLI_LIMIT);
    assert!(sent.status.success(), "{:?}", failure(&sent));
    assert!(String::from_utf8_lossy(&sent.stdout).contains("sent text"));
    let read = finish_within(reader, CLI_LIMIT);
    assert!(read.status.success(), "{:?}", failure(&read));
    let got = one_json(&read);
    assert_eq!(got["text"], "ping ✓");
    assert_eq!(got["peer"], "alice");

    // A rejected text fails the sender with the reason and is not stored.
    let sender = spawn_share(&alice, &["send", &bob.addr(), "--text", "spam"]);
    let pending = bob.wait_transfer("the second text", |t| {
        t["state"] == "pending" && t["names"][0] == "text: spam"
    });
    let out = bob.cli(&[
        "reject",
        pending["id"].as_str().unwrap(),
        "--reason",
        "no spam",
    ]);
    assert!(out.status.success(), "{:?}", failure(&out));
    let sent = finish_within(sender, CLI_LIMIT);
    let (code, stderr) = failure(&sent);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no spam"), "{stderr}");
    assert_eq!(inbox(&bob).len(), 1);
    let started = Instant::now();
    let out = bob.cli(&["receive", "--text", "--wait", "1"]);
    let (code, stderr) = failure(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no text arrived within 1 s"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // `share cancel` on a pending text: the sender learns it was cancelled.
    let sender = spawn_share(&alice, &["send", &bob.addr(), "--text", "later"]);
    let pending = bob.wait_transfer("the third text", |t| {
        t["state"] == "pending" && t["names"][0] == "text: later"
    });
    let out = bob.cli(&["cancel", pending["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{:?}", failure(&out));
    let sent = finish_within(sender, CLI_LIMIT);
    let (code, stderr) = failure(&sent);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cancelled by peer"), "{stderr}");

    let h = history(&bob);
    assert_eq!(
        h.iter()
            .map(|e| e["outcome"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["done", "rejected", "cancelled"]
    );
    assert_eq!(h[1]["reason"], "no spam");
    assert_eq!(history(&alice)[2]["outcome"], "cancelled");
    assert_eq!(inbox(&bob).len(), 1);
}
