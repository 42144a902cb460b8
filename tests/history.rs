//! The persistent transfer history (`share history`) and queued sends
//! (`share send --queue`, `share queue`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{TestDaemon, assert_same_file, eventually, random_file};
use crate::transfer::{CLI_LIMIT, failure, finish_within, one_json, share_within, spawn_share};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn history(daemon: &TestDaemon, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["history"];
    args.extend_from_slice(extra);
    daemon.json(&args).as_array().unwrap().clone()
}

#[test]
fn history_records_rejected_and_completed_transfers_across_a_restart() {
    let alice = TestDaemon::start("alice");
    let mut bob = TestDaemon::builder("bob").spawn(); // default policy: ask
    let src = tempfile::tempdir().unwrap();
    let unwanted = src.path().join("unwanted.bin");
    let wanted = src.path().join("wanted.bin");
    random_file(&unwanted, 300_000, 1);
    random_file(&wanted, 200_000, 2);

    // 1. Rejected by bob's user.
    let sender = spawn_share(&alice, &["send", &bob.addr(), s(&unwanted)]);
    let offer = bob.wait_transfer("the first offer", |t| t["state"] == "pending");
    let out = bob.cli(&[
        "reject",
        offer["id"].as_str().unwrap(),
        "--reason",
        "not now",
    ]);
    assert!(out.status.success(), "{:?}", failure(&out));
    assert_eq!(finish_within(sender, CLI_LIMIT).status.code(), Some(1));

    // 2. Accepted and completed.
    let sender = spawn_share(&alice, &["send", &bob.addr(), s(&wanted)]);
    let offer = bob.wait_transfer("the second offer", |t| {
        t["state"] == "pending" && t["names"][0] == "wanted.bin"
    });
    bob.accept_offer(&offer);
    let sent = finish_within(sender, CLI_LIMIT);
    assert!(sent.status.success(), "{:?}", failure(&sent));
    assert_same_file(&wanted, &bob.download.join("wanted.bin"));

    let check = |entries: &[Value], direction: &str, peer: &str, peer_id: &str| {
        assert_eq!(entries.len(), 2, "{entries:?}");
        let (rejected, done) = (&entries[0], &entries[1]);
        for e in entries {
            assert_eq!(e["direction"], direction);
            assert_eq!(e["peer"], peer);
            assert_eq!(e["peer_id"], peer_id);
            assert_eq!(e["kind"], "files");
            assert_eq!(e["files"], 1);
            assert!(["quic", "tcp"].contains(&e["transport"].as_str().unwrap()));
            assert!(e["duration_s"].as_f64().unwrap() >= 0.0);
            assert!(e["time"].as_u64().unwrap() >= e["started"].as_u64().unwrap());
        }
        assert_eq!(rejected["outcome"], "rejected");
        assert_eq!(rejected["names"], serde_json::json!(["unwanted.bin"]));
        assert_eq!(rejected["bytes"], 300_000);
        assert_eq!(rejected["bytes_sent"], 0);
        assert!(
            rejected["reason"].as_str().unwrap().contains("not now"),
            "{rejected}"
        );
        assert_eq!(done["outcome"], "done");
        assert_eq!(done["names"], serde_json::json!(["wanted.bin"]));
        assert_eq!(done["bytes"], 200_000);
        assert_eq!(done["bytes_done"], 200_000);
        assert!(done.get("reason").is_none(), "{done}");
    };
    check(&history(&bob, &[]), "in", "alice", &alice.id());
    check(&history(&alice, &[]), "out", "bob", &bob.id());

    // The history outlives the daemon; the registry does not.
    let (state, download) = (bob.state.clone(), bob.download.clone());
    let before = history(&bob, &[]);
    assert!(bob.stop(), "bob did not stop cleanly");
    let bob = TestDaemon::builder("bob")
        .state_dir(&state)
        .download_dir(&download)
        .spawn();
    assert!(bob.transfers().is_empty());
    assert_eq!(history(&bob, &[]), before);
    let last = history(&bob, &["--limit", "1"]);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0]["outcome"], "done");
    // The human table names both outcomes.
    let out = bob.cli(&["history"]);
    assert!(out.status.success(), "{:?}", failure(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("rejected") && table.contains("not now"),
        "{table}"
    );
    assert!(
        table.contains("done") && table.contains("wanted.bin"),
        "{table}"
    );
}

/// A port with nothing listening, for a receiver that starts later.
fn free_port() -> u16 {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let _tcp = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    port
}

fn queue(daemon: &TestDaemon) -> Vec<Value> {
    daemon.json(&["queue"]).as_array().unwrap().clone()
}

/// `share send --queue` to a peer that is not running returns at once;
/// the send survives a restart of the sender and goes out when the
/// receiver starts on that address.
#[test]
fn queued_send_goes_out_when_the_peer_appears() {
    let mut alice = TestDaemon::start("alice");
    let port = free_port();
    let peer = format!("127.0.0.1:{port}");
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("album");
    std::fs::create_dir(&dir).unwrap();
    random_file(&dir.join("a.jpg"), 150_000, 5);
    random_file(&dir.join("b.jpg"), 10_000, 6);

    let started = Instant::now();
    let out = share_within(
        &alice,
        &["send", "--queue", &peer, s(&dir), "--json"],
        CLI_LIMIT,
    );
    assert!(out.status.success(), "{:?}", failure(&out));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "queueing must not wait"
    );
    let queued = one_json(&out);
    assert_eq!(queued["peer"], peer.as_str());
    assert_eq!(queued["files"], 2);
    assert_eq!(queued["names"], serde_json::json!(["album"]));
    let listed = queue(&alice);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], queued["id"]);

    // The queue is persisted: restart the sender.
    let state = alice.state.clone();
    assert!(alice.stop(), "alice did not stop cleanly");
    let alice = TestDaemon::builder("alice")
        .accept("all")
        .state_dir(&state)
        .spawn();
    assert_eq!(queue(&alice)[0]["id"], queued["id"]);

    let bob = TestDaemon::builder("bob").accept("all").port(port).spawn();
    eventually("the queued send to arrive", Duration::from_secs(60), || {
        (bob.download.join("album/b.jpg").exists() && queue(&alice).is_empty()).then_some(())
    });
    assert_same_file(&dir.join("a.jpg"), &bob.download.join("album/a.jpg"));
    assert_same_file(&dir.join("b.jpg"), &bob.download.join("album/b.jpg"));
    let h = history(&alice, &[]);
    assert_eq!(h.last().unwrap()["outcome"], "done", "{h:?}");
    assert_eq!(h.last().unwrap()["peer_id"], bob.id());
}

#[test]
fn a_queued_send_can_be_cancelled() {
    let alice = TestDaemon::start("alice");
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("later.txt");
    std::fs::write(&file, "later").unwrap();
    let peer = format!("127.0.0.1:{}", free_port());
    let out = share_within(&alice, &["send", "--queue", &peer, s(&file)], CLI_LIMIT);
    assert!(out.status.success(), "{:?}", failure(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("queued send"), "{stdout}");
    let id = queue(&alice)[0]["id"].as_str().unwrap().to_owned();
    let out = alice.cli(&["queue", "cancel", &id[..4]]);
    assert!(out.status.success(), "{:?}", failure(&out));
    assert!(queue(&alice).is_empty());
    let out = alice.cli(&["queue", "cancel", &id]);
    assert_eq!(out.status.code(), Some(1));
    let h = history(&alice, &[]);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["outcome"], "cancelled");
    assert_eq!(h[0]["names"], serde_json::json!(["later.txt"]));
}

/// `share history` without a daemon reads the history file in the state
/// directory, and shows times in the local time zone (`TZ`); `--json`
/// keeps Unix seconds.
#[test]
fn history_works_without_a_daemon_and_shows_local_time() {
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state/lanshare");
    let mut alice = TestDaemon::builder("alice").state_dir(&state).spawn();
    let bob = TestDaemon::start("bob");
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f.bin");
    random_file(&file, 1000, 3);
    alice.json(&["send", &bob.addr(), s(&file)]);
    let online = history(&alice, &[]);
    assert_eq!(online.len(), 1, "{online:#?}");
    assert!(alice.stop());

    let offline = |args: &[&str]| {
        let child = std::process::Command::new(crate::common::share_bin())
            .args(args)
            .env_clear()
            .env("HOME", home.path())
            .env("XDG_STATE_HOME", home.path().join("state"))
            .env("SHARE_SOCKET", home.path().join("no-daemon.sock"))
            .env("TZ", "IST-5:30")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        finish_within(child, CLI_LIMIT)
    };
    let out = offline(&["history", "--json"]);
    assert!(out.status.success(), "{:?}", failure(&out));
    assert_eq!(one_json(&out), Value::Array(online.clone()));

    let out = offline(&["history"]);
    assert!(out.status.success(), "{:?}", failure(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let header = text.lines().next().unwrap();
    assert!(header.starts_with("ENDED "), "{text}");
    assert!(!header.contains("(UTC)"), "{text}");
    // 5:30 ahead of UTC, computed independently of the code under test.
    let shifted = online[0]["time"].as_u64().unwrap() + 5 * 3600 + 30 * 60;
    let (days, rest) = (shifted / 86_400, shifted % 86_400);
    let clock = format!("{:02}:{:02}", rest / 3600, rest % 3600 / 60);
    let row = text.lines().nth(1).unwrap();
    assert!(
        row[..16].ends_with(&clock),
        "expected {clock} (day {days}) in {row}"
    );
}
