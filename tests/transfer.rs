//! End-to-end transfers between two loopback daemons.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{TestDaemon, assert_same_file, eventually, random_file, share_bin, tree};

/// Upper bound for any single `share` client command in these tests.
pub(crate) const CLI_LIMIT: Duration = Duration::from_secs(30);

/// Starts `share ARGS` against `daemon` in the background, output piped.
pub(crate) fn spawn_share(daemon: &TestDaemon, args: &[&str]) -> Child {
    spawn_share_under(&[], daemon, args)
}

/// Like [`spawn_share`], run by the command `wrapper` (e.g. `setpriv ...
/// --`), which gets the path of `share` and `args` after its own.
pub(crate) fn spawn_share_under(wrapper: &[&str], daemon: &TestDaemon, args: &[&str]) -> Child {
    let mut cmd = match wrapper.split_first() {
        Some((program, its_args)) => {
            let mut cmd = Command::new(program);
            cmd.args(its_args).arg(share_bin());
            cmd
        }
        None => Command::new(share_bin()),
    };
    cmd.args(args)
        .env("SHARE_SOCKET", &daemon.socket)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start share")
}

/// Waits for a `share` process to exit; kills it and fails the test if
/// it is still running after `limit`.
pub(crate) fn finish_within(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("wait for share"),
        Err(_) => {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            panic!("share (pid {pid}) did not finish within {limit:?}");
        }
    }
}

/// Runs `share ARGS` against `daemon`, bounded by `limit`.
pub(crate) fn share_within(daemon: &TestDaemon, args: &[&str], limit: Duration) -> Output {
    finish_within(spawn_share(daemon, args), limit)
}

/// Parses stdout as exactly one JSON document.
pub(crate) fn one_json(out: &Output) -> Value {
    let mut docs = serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>();
    let first = docs
        .next()
        .unwrap_or_else(|| {
            panic!(
                "no JSON on stdout; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .expect("stdout is JSON");
    assert!(
        docs.next().is_none(),
        "more than one JSON document on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    first
}

/// `share send ARGS --json` from `daemon`, which must succeed; returns
/// the result document.
pub(crate) fn send_json(daemon: &TestDaemon, args: &[&str]) -> Value {
    let mut all = vec!["send"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = share_within(daemon, &all, CLI_LIMIT);
    assert!(
        out.status.success(),
        "share {all:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    one_json(&out)
}

/// Exit code and stderr (trimmed) of a finished `share`.
pub(crate) fn failure(out: &Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// A port with nothing listening on 127.0.0.1 over UDP or TCP.
fn dead_port() -> u16 {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let _tcp = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    port
}

/// A path as a command-line argument.
pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn file_and_nested_tree_arrive_byte_identical() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::start("bob");
    let src = tempfile::tempdir().unwrap();
    let big = src.path().join("big.bin");
    random_file(&big, 64 << 20, 1);
    let photos = src.path().join("photos");
    std::fs::create_dir_all(photos.join("2024/été")).unwrap();
    std::fs::write(photos.join("2024/été/plage ☀.txt"), "sunny").unwrap();
    std::fs::write(photos.join("empty"), "").unwrap();
    std::fs::create_dir(photos.join("empty-dir")).unwrap();

    let result = send_json(&alice, &[&bob.addr(), s(&big), s(&photos)]);
    assert_eq!(result["status"], "done");
    assert_eq!(result["peer"], "bob");
    assert_eq!(result["transport"], "quic");
    assert_eq!(result["files"], 3);
    assert_eq!(result["bytes"], (64 << 20) + 5);

    assert_same_file(&big, &bob.download.join("big.bin"));
    assert_same_file(
        &photos.join("2024/été/plage ☀.txt"),
        &bob.download.join("photos/2024/été/plage ☀.txt"),
    );
    assert_eq!(
        tree(&bob.download),
        [
            "big.bin",
            "photos",
            "photos/2024",
            "photos/2024/été",
            "photos/2024/été/plage ☀.txt",
            "photos/empty",
            "photos/empty-dir",
        ]
    );
}

#[test]
fn same_names_twice_get_numbered_copies() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::start("bob");
    let src = tempfile::tempdir().unwrap();
    let report = src.path().join("report.pdf");
    random_file(&report, 300_000, 2);
    let notes = src.path().join("notes");
    std::fs::write(&notes, "remember the milk").unwrap();
    let album = src.path().join("album");
    std::fs::create_dir_all(album.join("2024")).unwrap();
    random_file(&album.join("2024/a.jpg"), 70_000, 3);

    for _ in 0..2 {
        let r = send_json(&alice, &[&bob.addr(), s(&report), s(&notes), s(&album)]);
        assert_eq!(r["status"], "done");
        assert_eq!(r["files"], 3);
    }

    let mut expected = vec![
        "album",
        "album/2024",
        "album/2024/a.jpg",
        "album (1)",
        "album (1)/2024",
        "album (1)/2024/a.jpg",
        "notes",
        "notes (1)",
        "report.pdf",
        "report (1).pdf",
    ];
    expected.sort();
    assert_eq!(tree(&bob.download), expected);
    for copy in ["report.pdf", "report (1).pdf"] {
        assert_same_file(&report, &bob.download.join(copy));
    }
    for copy in ["notes", "notes (1)"] {
        assert_same_file(&notes, &bob.download.join(copy));
    }
    for copy in ["album", "album (1)"] {
        assert_same_file(
            &album.join("2024/a.jpg"),
            &bob.download.join(copy).join("2024/a.jpg"),
        );
    }
}

#[test]
fn rejected_offer_fails_the_send_with_the_reason() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::builder("bob").spawn(); // default policy: ask
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("doc.bin");
    random_file(&file, 1 << 20, 4);

    let sender = spawn_share(&alice, &["send", &bob.addr(), s(&file)]);
    let offer = bob.wait_transfer("a pending offer", |t| {
        t["state"] == "pending" && t["direction"] == "in"
    });
    assert_eq!(offer["peer"], "alice");
    assert_eq!(offer["bytes"], 1 << 20);
    assert_eq!(offer["names"], serde_json::json!(["doc.bin"]));
    // The sender shows the transfer as waiting for consent.
    alice.wait_transfer("the outgoing offer", |t| {
        t["state"] == "pending" && t["direction"] == "out"
    });
    let id = offer["id"].as_str().unwrap();
    // `share status` tells the receiver an answer is needed (only there).
    assert_eq!(bob.json(&["status"])["offers_to_answer"], 1);
    assert_eq!(alice.json(&["status"])["offers_to_answer"], 0);
    let out = bob.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("waiting:      1 offer to accept (share transfers)"),
        "{text}"
    );

    let out = bob.cli(&["reject", id, "--reason", "no thanks"]);
    assert!(out.status.success(), "{:?}", failure(&out));
    assert_eq!(bob.json(&["status"])["offers_to_answer"], 0);

    let sent = finish_within(sender, CLI_LIMIT);
    let (code, stderr) = failure(&sent);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no thanks"), "{stderr}");
    assert!(stderr.contains("rejected"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let theirs = bob.transfers();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["state"], "rejected");
    assert_eq!(theirs[0]["reason"], "no thanks");
    let ours = alice.transfers();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["state"], "rejected");
    // Nothing written, not even a hidden temporary file.
    assert_eq!(tree(&bob.download), Vec::<String>::new());
}

#[test]
fn accepted_offer_completes_and_both_sides_list_it_done() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::builder("bob").spawn(); // default policy: ask
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("slides.bin");
    random_file(&file, (3 << 20) + 7, 5);

    let sender = spawn_share(&alice, &["send", &bob.addr(), s(&file), "--json"]);
    let offer = bob.wait_transfer("a pending offer", |t| {
        t["state"] == "pending" && t["direction"] == "in"
    });
    // Nothing lands before consent.
    assert_eq!(tree(&bob.download), Vec::<String>::new());
    let id = offer["id"].as_str().unwrap();
    let out = bob.cli(&["accept", id]);
    assert!(out.status.success(), "{:?}", failure(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(id));

    let sent = finish_within(sender, CLI_LIMIT);
    assert!(sent.status.success(), "{:?}", failure(&sent));
    let result = one_json(&sent);
    assert_eq!(result["status"], "done");
    assert_eq!(result["peer"], "bob");
    assert_eq!(tree(&bob.download), ["slides.bin"]);
    assert_same_file(&file, &bob.download.join("slides.bin"));

    let size = (3u64 << 20) + 7;
    let theirs = bob.wait_transfer("the incoming transfer done", |t| t["state"] == "done");
    let ours = alice.transfers();
    assert_eq!(ours.len(), 1);
    let ours = &ours[0];
    assert_eq!(theirs["id"], id);
    assert_eq!(theirs["direction"], "in");
    assert_eq!(theirs["peer"], "alice");
    assert_eq!(ours["id"], result["id"]);
    assert_eq!(ours["direction"], "out");
    assert_eq!(ours["peer"], "bob");
    assert_eq!(ours["state"], "done");
    for t in [&theirs, ours] {
        assert_eq!(t["files"], 1);
        assert_eq!(t["bytes"], size);
        assert_eq!(t["bytes_done"], size);
        assert_eq!(t["names"], serde_json::json!(["slides.bin"]));
    }
}

/// The offer names each file's version, not its content: a file changed
/// between the offer and the reading fails the send (nothing lands), and
/// sending it again is a new offer that asks again, not a resume of the old
/// one.
#[test]
fn file_changed_after_its_offer_fails_the_send_and_lands_nowhere() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::builder("bob").spawn(); // default policy: ask
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("draft.bin");
    random_file(&file, (3 << 20) + 7, 6);
    let send = ["send", &bob.addr(), s(&file), "--json"];

    let sender = spawn_share(&alice, &send);
    let offer = bob.wait_transfer("a pending offer", |t| t["state"] == "pending");
    // Change a byte in the middle; repeat until the change time moves
    // (it has the kernel's timestamp granularity).
    let before = std::fs::metadata(&file).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    for _ in 0..100 {
        f.write_all_at(b"edited", 1 << 20).unwrap();
        let now = std::fs::metadata(&file).unwrap();
        if (now.ctime(), now.ctime_nsec()) != (before.ctime(), before.ctime_nsec()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bob.accept_offer(&offer);
    let sent = finish_within(sender, CLI_LIMIT);
    let (code, stderr) = failure(&sent);
    assert_eq!(code, Some(1), "{stderr}");
    let result = one_json(&sent);
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(result["kind"], "failed", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("changed while being sent"), "{error}");
    bob.wait_transfer("the incoming transfer failed", |t| t["state"] == "failed");
    assert_eq!(tree(&bob.download), Vec::<String>::new());

    // Sent again: a new offer (consent is asked again), the edited content.
    let sender = spawn_share(&alice, &send);
    let offer = bob.wait_transfer("a second pending offer", |t| t["state"] == "pending");
    bob.accept_offer(&offer);
    let sent = finish_within(sender, CLI_LIMIT);
    assert_eq!(one_json(&sent)["status"], "done", "{:?}", failure(&sent));
    assert_same_file(&file, &bob.download.join("draft.bin"));
}

#[test]
fn unanswered_offer_expires_as_rejected() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::builder("bob")
        .args(&["--offer-timeout", "1"])
        .spawn();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("late.txt");
    std::fs::write(&file, "too late").unwrap();

    let started = Instant::now();
    let sent = share_within(&alice, &["send", &bob.addr(), s(&file)], CLI_LIMIT);
    let elapsed = started.elapsed();
    let (code, stderr) = failure(&sent);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("expired"), "{stderr}");
    assert!(stderr.contains("rejected"), "{stderr}");
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    let theirs = bob.transfers();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["state"], "rejected");
    assert!(
        theirs[0]["reason"].as_str().unwrap().contains("expired"),
        "{theirs:?}"
    );
    assert_eq!(tree(&bob.download), Vec::<String>::new());
}

#[test]
fn trusted_sender_is_accepted_without_asking() {
    let alice = TestDaemon::start("alice");
    // Default policy (ask); a short offer timeout turns a wrongly pending
    // offer into a quick failure instead of a hang.
    let bob = TestDaemon::builder("bob")
        .args(&["--offer-timeout", "5"])
        .spawn();
    let alice_id = alice.id();

    // Trust by HOST:PORT: bob connects to alice to learn her ID.
    let out = bob.cli(&["trust", &alice.addr()]);
    assert!(out.status.success(), "{:?}", failure(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("trusted alice"), "{said}");
    assert!(said.contains(&alice_id), "{said}");
    let out = bob.cli(&["trust", &alice_id]);
    assert!(out.status.success(), "{:?}", failure(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already trusted"));

    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("holiday.bin");
    random_file(&file, 200_000, 6);
    let result = send_json(&alice, &[&bob.addr(), s(&file)]);
    assert_eq!(result["status"], "done");
    assert_same_file(&file, &bob.download.join("holiday.bin"));

    // Control: once untrusted, the same sender has to be asked again.
    let out = bob.cli(&["untrust", "alice"]);
    assert!(out.status.success(), "{:?}", failure(&out));
    let sender = spawn_share(&alice, &["send", &bob.addr(), s(&file)]);
    let offer = bob.wait_transfer("a pending offer after untrust", |t| t["state"] == "pending");
    let out = bob.cli(&["reject", offer["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{:?}", failure(&out));
    let sent = finish_within(sender, CLI_LIMIT);
    assert_eq!(sent.status.code(), Some(1), "{:?}", failure(&sent));
    assert_eq!(tree(&bob.download), ["holiday.bin"]);
}

#[test]
fn trusted_only_policy_rejects_unknown_senders_at_once() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::builder("bob").accept("trusted").spawn();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("spam.txt");
    std::fs::write(&file, "buy now").unwrap();

    let started = Instant::now();
    let sent = share_within(&alice, &["send", &bob.addr(), s(&file)], CLI_LIMIT);
    let elapsed = started.elapsed();
    let (code, stderr) = failure(&sent);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("only accepts files from trusted devices"),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let theirs = bob.transfers();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["state"], "rejected");
    assert_eq!(tree(&bob.download), Vec::<String>::new());
}

#[test]
fn send_to_an_address_without_a_daemon_fails_quickly_as_json() {
    let alice = TestDaemon::start("alice");
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("x.txt");
    std::fs::write(&file, "x").unwrap();
    let addr = format!("127.0.0.1:{}", dead_port());

    let started = Instant::now();
    let out = share_within(&alice, &["send", &addr, s(&file), "--json"], CLI_LIMIT);
    let elapsed = started.elapsed();
    let (code, stderr) = failure(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    let result = one_json(&out);
    assert_eq!(result["status"], "failed");
    assert_eq!(result["kind"], "unreachable", "{result}");
    assert_eq!(result["peer"], addr.as_str());
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("cannot connect"), "{error}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(alice.transfers(), Vec::<Value>::new());
}

#[test]
fn forgotten_partial_transfers_expire() {
    let dirs = tempfile::tempdir().unwrap();
    let (state, download) = (dirs.path().join("state"), dirs.path().join("dl"));
    let key = "0123456789abcdef0123456789abcdef";
    std::fs::create_dir_all(state.join("resume")).unwrap();
    let id = lanshare::identity::DeviceId::from_cert_der(b"someone");
    let record = serde_json::json!({"peer": id, "peer_name": "old", "created": 0, "verified": "1"});
    std::fs::write(state.join(format!("resume/{key}.json")), record.to_string()).unwrap();
    let staging = download.join(format!(".lanshare-{key}.part"));
    std::fs::create_dir_all(staging.join("sub")).unwrap();
    std::fs::write(staging.join("sub/partial.bin"), b"half").unwrap();
    // A fresh record must survive the same sweep.
    let fresh = "fedcba9876543210fedcba9876543210";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let record =
        serde_json::json!({"peer": id, "peer_name": "new", "created": now, "verified": ""});
    std::fs::write(
        state.join(format!("resume/{fresh}.json")),
        record.to_string(),
    )
    .unwrap();

    let _daemon = TestDaemon::builder("gc")
        .state_dir(&state)
        .download_dir(&download)
        .spawn();
    // The sweep runs as the daemon starts: the data, then the record.
    let record = state.join(format!("resume/{key}.json"));
    eventually("the expired record to go", Duration::from_secs(10), || {
        (!record.exists()).then_some(())
    });
    assert!(!staging.exists(), "expired partial data was not removed");
    assert!(state.join(format!("resume/{fresh}.json")).exists());
    assert_eq!(tree(&download), Vec::<String>::new());
}
