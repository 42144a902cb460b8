//! LocalSend through lanshare's own machinery, on loopback: one daemon
//! receives as a LocalSend server, another sends as a LocalSend client
//! (`localsend://HOST:PORT`, since loopback has no multicast). Consent,
//! inbox, history, staging and trust are the daemon's; these tests check
//! that a LocalSend offer goes through them like a native one.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::{TestDaemon, assert_same_file, eventually, random_file, tree};

/// A loopback daemon with LocalSend on a free port.
pub(crate) fn localsend_daemon(name: &str, accept: &str, extra: &[&str]) -> TestDaemon {
    TestDaemon::builder(name)
        .accept(accept)
        .args(&["--localsend", "--localsend-port", "0"])
        .args(extra)
        .spawn()
}

/// Asserts that a command exited 0, showing its stderr if not.
pub(crate) fn succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `localsend://127.0.0.1:PORT` of a daemon's LocalSend server.
pub(crate) fn localsend_addr(daemon: &TestDaemon) -> String {
    let status = daemon.json(&["status"]);
    let port = status["localsend"]["port"]
        .as_u64()
        .expect("LocalSend is on and names its port");
    format!("localsend://127.0.0.1:{port}")
}

/// The LocalSend fingerprint a daemon announces.
pub(crate) fn fingerprint(daemon: &TestDaemon) -> String {
    daemon.json(&["status"])["localsend"]["fingerprint"]
        .as_str()
        .expect("a fingerprint")
        .to_owned()
}

/// Starts `share send ARGS --json` from `sender` without waiting.
fn send_in_background(sender: &TestDaemon, args: &[&str]) -> std::process::Child {
    std::process::Command::new(crate::common::share_bin())
        .arg("send")
        .args(args)
        .arg("--json")
        .env("SHARE_SOCKET", &sender.socket)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run share send")
}

fn finish(child: std::process::Child) -> (bool, Value, String) {
    let out = child.wait_with_output().expect("share send ends");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pending_from<'a>(transfers: &'a [Value], peer: &str) -> Option<&'a Value> {
    transfers
        .iter()
        .find(|t| t["direction"] == "in" && t["state"] == "pending" && t["peer"] == peer)
}

#[test]
fn files_and_a_folder_wait_for_consent_then_arrive_verified() {
    let receiver = localsend_daemon("nas", "ask", &[]);
    let sender = localsend_daemon("laptop", "ask", &[]);
    let src = tempfile::tempdir().unwrap();
    let album = src.path().join("album");
    std::fs::create_dir_all(album.join("2024")).unwrap();
    random_file(&album.join("2024/a.jpg"), 3 << 20, 1);
    random_file(&album.join("b.png"), 1000, 2);
    std::fs::write(album.join("empty"), b"").unwrap();
    random_file(&src.path().join("notes.txt"), 70_000, 3);
    let past = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    std::fs::File::options()
        .write(true)
        .open(album.join("b.png"))
        .unwrap()
        .set_modified(past)
        .unwrap();

    let to = localsend_addr(&receiver);
    let child = send_in_background(
        &sender,
        &[
            &to,
            album.to_str().unwrap(),
            src.path().join("notes.txt").to_str().unwrap(),
        ],
    );
    let offer = receiver.wait_transfer("the LocalSend offer waits for consent", |t| {
        t["direction"] == "in" && t["state"] == "pending"
    });
    assert_eq!(offer["transport"], "localsend");
    assert_eq!(offer["peer"], "laptop");
    assert_eq!(offer["files"], 4);
    assert!(
        tree(&receiver.download).is_empty(),
        "nothing lands before consent"
    );
    receiver.accept_offer(&offer);
    let (ok, result, stderr) = finish(child);
    assert!(ok, "share send failed: {stderr}");
    assert_eq!(result["transport"], "localsend");
    assert_eq!(result["files"], 4);
    assert_eq!(result["bytes"], (3 << 20) + 1000 + 70_000);

    let got = &receiver.download;
    assert_same_file(&album.join("2024/a.jpg"), &got.join("album/2024/a.jpg"));
    assert_same_file(&album.join("b.png"), &got.join("album/b.png"));
    assert_same_file(&src.path().join("notes.txt"), &got.join("notes.txt"));
    assert_eq!(std::fs::read(got.join("album/empty")).unwrap(), b"");
    let mtime = std::fs::metadata(got.join("album/b.png")).unwrap().mtime();
    assert_eq!(mtime, 1_500_000_000, "metadata.modified became the mtime");
    assert!(
        !tree(got).iter().any(|p| p.starts_with(".lanshare")),
        "no staging left: {:?}",
        tree(got)
    );
    let done = receiver.wait_transfer("the transfer is done", |t| {
        t["id"] == offer["id"] && t["state"] == "done"
    });
    assert_eq!(done["bytes_done"], result["bytes"]);
    let history = receiver.json(&["history"]);
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["id"] == offer["id"] && h["outcome"] == "done"),
        "history: {history}"
    );

    // The same again: nothing is overwritten.
    let child = send_in_background(
        &sender,
        &[&to, src.path().join("notes.txt").to_str().unwrap()],
    );
    let offer = receiver.wait_transfer("the second offer", |t| {
        t["direction"] == "in" && t["state"] == "pending"
    });
    receiver.accept_offer(&offer);
    assert!(finish(child).0);
    assert_same_file(&src.path().join("notes.txt"), &got.join("notes (1).txt"));
}

#[test]
fn a_rejected_offer_is_403_at_the_sender_with_the_reason() {
    let receiver = localsend_daemon("nas", "ask", &[]);
    let sender = localsend_daemon("laptop", "ask", &[]);
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("x.bin");
    random_file(&file, 10, 1);
    let child = send_in_background(
        &sender,
        &[&localsend_addr(&receiver), file.to_str().unwrap()],
    );
    let offer = eventually("the offer", Duration::from_secs(30), || {
        pending_from(&receiver.transfers(), "laptop").cloned()
    });
    let id = offer["id"].as_str().unwrap();
    let out = receiver.cli(&["reject", id, "--reason", "not now"]);
    assert!(out.status.success());
    let (ok, result, stderr) = finish(child);
    assert!(!ok, "the send must fail");
    assert!(
        stderr.contains("rejected") && stderr.contains("not now"),
        "{stderr}"
    );
    assert_eq!(result["kind"], "rejected", "{result}");
    assert!(tree(&receiver.download).is_empty());
    // The sender lists it as rejected too.
    sender.wait_transfer("the send is rejected", |t| {
        t["direction"] == "out" && t["state"] == "rejected"
    });
}

#[test]
fn a_pin_is_asked_for_checked_and_never_replaces_consent() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[localsend]\nenabled = true\nport = 0\npin = \"4711\"\n",
    )
    .unwrap();
    let receiver = TestDaemon::builder("nas")
        .accept("ask")
        .args(&["--config", config.to_str().unwrap()])
        .spawn();
    assert_eq!(receiver.json(&["status"])["localsend"]["pin"], true);
    let sender = localsend_daemon("laptop", "ask", &[]);
    let file = dir.path().join("x.bin");
    random_file(&file, 100, 1);
    let to = localsend_addr(&receiver);

    let out = sender.cli(&["send", &to, file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--pin"), "{err}");
    let out = sender.cli(&["send", "--pin", "1234", &to, file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("PIN is wrong"),
        "{err}"
    );
    assert!(
        receiver.transfers().is_empty(),
        "a missing or wrong PIN never reaches the user"
    );
    // The right PIN still needs consent.
    let child = send_in_background(&sender, &["--pin", "4711", &to, file.to_str().unwrap()]);
    let offer = receiver.wait_transfer("the offer with the right PIN waits", |t| {
        t["state"] == "pending"
    });
    receiver.accept_offer(&offer);
    assert!(finish(child).0);
    assert_same_file(&file, &receiver.download.join("x.bin"));
}

#[test]
fn a_text_message_lands_in_the_inbox() {
    let receiver = localsend_daemon("nas", "all", &[]);
    let sender = localsend_daemon("laptop", "all", &[]);
    let out = sender.cli(&[
        "send",
        &localsend_addr(&receiver),
        "--text",
        "hello from a phone",
    ]);
    succeeded(&out);
    let inbox = receiver.json(&["inbox"]);
    let texts = inbox.as_array().unwrap();
    assert_eq!(texts.len(), 1, "{inbox}");
    assert_eq!(texts[0]["text"], "hello from a phone");
    assert_eq!(texts[0]["peer"], "laptop");
    assert!(
        tree(&receiver.download).is_empty(),
        "a message is not a file"
    );
}

#[test]
fn trust_pins_the_certificate_hash_proven_in_the_handshake() {
    let receiver = localsend_daemon("nas", "ask", &[]);
    let sender = localsend_daemon("laptop", "ask", &[]);
    let file = tempfile::NamedTempFile::new().unwrap();
    random_file(file.path(), 1000, 9);
    // The receiver trusts the sender's LocalSend server: a register to it
    // proves its fingerprint.
    let out = receiver.cli(&["trust", &localsend_addr(&sender)]);
    succeeded(&out);
    let peers = receiver.json(&["peers"]);
    let listed = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["protocol"] == "localsend")
        .unwrap_or_else(|| panic!("the trusted LocalSend device is listed: {peers}"));
    assert_eq!(listed["localsend"]["fingerprint"], fingerprint(&sender));
    assert_eq!(listed["trusted"], true);
    assert_eq!(listed["name"], "laptop");
    // Its offers are now accepted without asking.
    let out = sender.cli(&[
        "send",
        &localsend_addr(&receiver),
        file.path().to_str().unwrap(),
    ]);
    succeeded(&out);
    let name = file.path().file_name().unwrap();
    assert_same_file(file.path(), &receiver.download.join(name));
}

#[test]
fn the_sender_cancels_a_waiting_offer() {
    let receiver = localsend_daemon("nas", "ask", &[]);
    let sender = localsend_daemon("laptop", "ask", &[]);
    let file = tempfile::NamedTempFile::new().unwrap();
    random_file(file.path(), 10, 9);
    let to = localsend_addr(&receiver);
    let child = send_in_background(&sender, &[&to, file.path().to_str().unwrap()]);
    let offer = receiver.wait_transfer("the offer waits", |t| t["state"] == "pending");
    let out_id = sender.wait_transfer("the send waits", |t| {
        t["direction"] == "out" && t["state"] == "pending"
    })["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(sender.cli(&["cancel", &out_id]).status.success());
    let (ok, _, stderr) = finish(child);
    assert!(!ok, "cancelled sends fail: {stderr}");
    receiver.wait_transfer("the receiver sees the sender's cancel", |t| {
        t["id"] == offer["id"] && t["state"] == "cancelled"
    });
    // The slot is free again: a new offer is not refused as busy.
    let child = send_in_background(&sender, &[&to, file.path().to_str().unwrap()]);
    let offer = receiver.wait_transfer("the second offer waits", |t| {
        t["state"] == "pending" && t["direction"] == "in"
    });
    receiver.accept_offer(&offer);
    assert!(finish(child).0);
}

#[test]
fn a_queued_send_goes_out_to_a_localsend_device() {
    let receiver = localsend_daemon("nas", "all", &[]);
    let sender = localsend_daemon("laptop", "all", &[]);
    let file = tempfile::NamedTempFile::new().unwrap();
    random_file(file.path(), 5000, 5);
    let out = sender.cli(&[
        "send",
        "--queue",
        &localsend_addr(&receiver),
        file.path().to_str().unwrap(),
    ]);
    succeeded(&out);
    let name = file.path().file_name().unwrap();
    eventually("the queued file arrives", Duration::from_secs(30), || {
        receiver.download.join(name).exists().then_some(())
    });
    assert_same_file(file.path(), &receiver.download.join(name));
}

/// Files received through LocalSend are as private as native ones.
#[test]
fn received_files_get_the_native_modes() {
    let receiver = localsend_daemon("nas", "all", &[]);
    let sender = localsend_daemon("laptop", "all", &[]);
    let file = tempfile::NamedTempFile::new().unwrap();
    random_file(file.path(), 10, 5);
    assert!(
        sender
            .cli(&[
                "send",
                &localsend_addr(&receiver),
                file.path().to_str().unwrap()
            ])
            .status
            .success()
    );
    let got = receiver.download.join(file.path().file_name().unwrap());
    let mode = std::fs::metadata(&got).unwrap().mode() & 0o777;
    assert_eq!(mode & 0o007, 0, "no access for others: {mode:o}");
    assert!(Path::new(&got).exists());
}
