//! TCP fallback on loopback (issue 4): no namespaces needed.

use std::time::{Duration, Instant};

use crate::common::{TestDaemon, assert_same_file, random_file, tree};
use crate::transfer::{CLI_LIMIT, failure, send_json, share_within};

#[test]
fn receiver_without_quic_gets_the_file_over_tcp_quickly() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::builder("bob")
        .accept("all")
        .args(&["--no-quic"])
        .spawn();
    assert_eq!(
        bob.json(&["status"])["transports"],
        serde_json::json!(["tcp"])
    );
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("big.bin");
    random_file(&file, 32 << 20, 8);
    let file = file.to_str().unwrap();

    let started = Instant::now();
    let result = send_json(&alice, &[&bob.addr(), file]);
    let wall = started.elapsed();
    let seconds = result["seconds"].as_f64().unwrap();
    eprintln!("32 MiB to a --no-quic receiver: {seconds:.3} s (CLI wall clock {wall:?})");
    assert_eq!(result["status"], "done");
    assert_eq!(result["transport"], "tcp");
    assert_eq!(result["bytes"], 32 << 20);
    assert!(seconds < 2.0, "fallback send took {seconds:.3} s");
    assert_same_file(std::path::Path::new(file), &bob.download.join("big.bin"));
    assert_eq!(bob.transfers()[0]["transport"], "tcp");
    assert_eq!(alice.transfers()[0]["transport"], "tcp");

    // The path is remembered: the next dial goes straight to TCP.
    assert_eq!(alice.json(&["status"])["quic_broken_paths"], 1);
    let small = src.path().join("small.txt");
    std::fs::write(&small, "again").unwrap();
    let again = send_json(&alice, &[&bob.addr(), small.to_str().unwrap()]);
    assert_eq!(again["transport"], "tcp");
    assert!(alice.wait_logged("QUIC known broken on this path"));
}

#[test]
fn forced_tcp_works_and_is_reported_everywhere() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::start("bob");
    assert_eq!(
        bob.json(&["status"])["transports"],
        serde_json::json!(["quic", "tcp"])
    );
    let src = tempfile::tempdir().unwrap();
    let a = src.path().join("a.bin");
    random_file(&a, 1 << 20, 9);
    let b = src.path().join("b.bin");
    random_file(&b, 1 << 20, 10);

    let forced = send_json(
        &alice,
        &[&bob.addr(), a.to_str().unwrap(), "--transport", "tcp"],
    );
    assert_eq!(forced["transport"], "tcp");
    let auto = send_json(&alice, &[&bob.addr(), b.to_str().unwrap()]);
    assert_eq!(auto["transport"], "quic");
    assert_same_file(&a, &bob.download.join("a.bin"));
    assert_same_file(&b, &bob.download.join("b.bin"));

    for daemon in [&alice, &bob] {
        let list = daemon.transfers();
        let transports: Vec<(&str, &str)> = list
            .iter()
            .map(|t| {
                (
                    t["names"][0].as_str().unwrap(),
                    t["transport"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(transports, [("a.bin", "tcp"), ("b.bin", "quic")]);
    }
    // A forced TCP dial says nothing about QUIC on that path.
    assert_eq!(alice.json(&["status"])["quic_broken_paths"], 0);
}

#[test]
fn forced_quic_to_a_receiver_without_quic_fails_fast_and_clearly() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::builder("bob")
        .accept("all")
        .args(&["--no-quic"])
        .spawn();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f.bin");
    random_file(&file, 1000, 11);

    let started = Instant::now();
    let out = share_within(
        &alice,
        &[
            "send",
            &bob.addr(),
            file.to_str().unwrap(),
            "--transport",
            "quic",
        ],
        CLI_LIMIT,
    );
    let elapsed = started.elapsed();
    eprintln!("forced QUIC to a --no-quic receiver failed after {elapsed:?}");
    let (code, stderr) = failure(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(stderr.contains("quic"), "{stderr}");
    assert!(stderr.contains("UDP"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(tree(&bob.download), Vec::<String>::new());
}

/// Regression (found by the benchmark): with many small files the receiver
/// can finish and send `Done` before the sender has noticed it sent its
/// last byte; that is success, not a protocol violation.
#[test]
fn many_small_files_over_both_transports() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::start("bob");
    let src = tempfile::tempdir().unwrap();
    let tree_dir = src.path().join("small");
    for i in 0..300 {
        let dir = tree_dir.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        random_file(&dir.join(format!("f{i}.bin")), 4096, i);
    }
    for (round, transport) in ["tcp", "quic", "tcp", "quic"].iter().enumerate() {
        let result = send_json(
            &alice,
            &[
                &bob.addr(),
                tree_dir.to_str().unwrap(),
                "--transport",
                transport,
            ],
        );
        assert_eq!(result["status"], "done", "round {round}: {result}");
        assert_eq!(result["files"], 300);
    }
    for i in [0u64, 151, 299] {
        let rel = format!("d{}/f{i}.bin", i % 10);
        assert_same_file(
            &tree_dir.join(&rel),
            &bob.download.join("small (3)").join(&rel),
        );
    }
}
