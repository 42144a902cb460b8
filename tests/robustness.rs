//! Transfers that survive the real world (issue 5): a receiver or sender
//! killed half way, cancel from either side, many transfers at once, a full
//! download file system, and a lossy link.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{TestDaemon, assert_same_file, random_file, tree};
use crate::transfer::{failure, finish_within, one_json, spawn_share};

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The transfer with `id` in `daemon`'s list, if any.
fn transfer(daemon: &TestDaemon, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    daemon.transfers().into_iter().find(|t| pred(t))
}

/// Polls `share transfers --json` every ~20 ms until `pred` holds for some
/// transfer; panics after `limit`. Returns the transfer and when it was seen.
fn poll_transfer(
    daemon: &TestDaemon,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let list = daemon.transfers();
        if let Some(t) = list.iter().find(|t| pred(t)) {
            return t.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{}: timed out after {limit:?} waiting for {what}; transfers: {list:#?}",
            daemon.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Hidden staging directories left in a download directory.
fn staging_dirs(download: &Path) -> Vec<String> {
    std::fs::read_dir(download)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".lanshare-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Resume records left in a state directory.
fn resume_records(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("resume"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn bytes_of(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// A successful `share send --json` result.
fn sent_ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "share send failed: {:?}",
        failure(out)
    );
    one_json(out)
}

#[test]
fn receiver_killed_half_way_resumes_by_itself() {
    let size = 256 * MIB;
    let alice = TestDaemon::start("alice");
    let mut bob = TestDaemon::start("bob");
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("big.bin");
    random_file(&file, size as usize, 11);

    let started = Instant::now();
    let sender = spawn_share(&alice, &["send", &bob.addr(), s(&file), "--json"]);
    let seen = poll_transfer(&bob, Duration::from_secs(60), "half of the data", |t| {
        t["direction"] == "in" && bytes_of(t, "bytes_done") >= size / 2
    });
    bob.kill();
    let at_kill = bytes_of(&seen, "bytes_done");
    eprintln!(
        "killed bob at {} MiB after {:.2?}",
        at_kill / MIB,
        started.elapsed()
    );
    assert!(at_kill < size, "the transfer finished before the kill");

    let bob2 = TestDaemon::builder("bob")
        .accept("all")
        .port(bob.port)
        .state_dir(&bob.state)
        .download_dir(&bob.download)
        .spawn();
    let restarted = started.elapsed();
    let out = finish_within(sender, Duration::from_secs(90));
    let result = sent_ok(&out);
    eprintln!(
        "restarted at {restarted:.2?}, done after {:.2?}: {result}",
        started.elapsed()
    );
    assert_eq!(result["status"], "done");
    assert_eq!(bytes_of(&result, "bytes"), size);
    let sent = bytes_of(&result, "bytes_sent");
    assert!(
        sent <= size * 13 / 10,
        "sent {} MiB for a {} MiB file",
        sent / MIB,
        size / MIB
    );
    assert!(
        sent > size,
        "bytes_sent {sent} does not count the first attempt"
    );
    assert!(bytes_of(&result, "attempts") >= 2, "{result}");
    assert_same_file(&file, &bob2.download.join("big.bin"));
    assert_eq!(tree(&bob2.download), ["big.bin"]);
    assert_eq!(staging_dirs(&bob2.download), Vec::<String>::new());
    assert_eq!(resume_records(&bob2.state), Vec::<String>::new());
    // The restarted receiver asked only for what it lacked.
    let theirs = bob2.wait_transfer("the resumed transfer done", |t| t["state"] == "done");
    assert!(
        bytes_of(&theirs, "bytes_sent") <= size - size / 3,
        "the receiver took {} MiB again",
        bytes_of(&theirs, "bytes_sent") / MIB
    );
}
