//! The control socket's subscription, spoken directly (as `socat` would):
//! the snapshot first, then the events of a transfer and of the peer
//! table, and the limit on subscriptions per user.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

use crate::common::{TestDaemon, assert_same_file, random_file};
use crate::transfer::spawn_share;

/// A raw subscription: the request written, then one event per line.
struct Raw {
    lines: std::io::Lines<BufReader<UnixStream>>,
}

impl Raw {
    /// Subscribes to `topics`; with `half_close`, shuts the writing side
    /// afterwards, as `echo … | socat` does.
    fn open(daemon: &TestDaemon, topics: &str, half_close: bool) -> Self {
        let mut stream = UnixStream::connect(&daemon.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        writeln!(stream, r#"{{"v":1,"cmd":"subscribe","topics":{topics}}}"#).unwrap();
        if half_close {
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        Self {
            lines: BufReader::new(stream).lines(),
        }
    }

    /// The next reply line.
    fn line(&mut self) -> Value {
        let line = self.lines.next().expect("a line").expect("read a line");
        serde_json::from_str(&line).unwrap()
    }

    /// Events until one `pred` accepts (that one).
    fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let line = self.line();
            assert_eq!(line["type"], "event", "{line}");
            if pred(&line["event"]) {
                return line["event"].clone();
            }
        }
    }
}

#[test]
fn a_subscription_streams_a_transfer_and_the_peer_table() {
    let alpha = TestDaemon::start("alpha");
    let beta = TestDaemon::builder("beta").spawn();
    let mut transfers = Raw::open(&beta, r#"["transfers"]"#, true);
    let mut peers = Raw::open(&beta, r#"["peers"]"#, false);
    let first = transfers.until(|_| true);
    assert_eq!(first["event"], "snapshot", "{first}");
    assert_eq!(first["transfers"], serde_json::json!([]));
    assert!(first.get("peers").is_none(), "{first}");
    let first = peers.until(|_| true);
    assert_eq!(
        (
            first["event"].as_str(),
            first["peers"].as_array().map(Vec::len)
        ),
        (Some("snapshot"), Some(0))
    );

    assert!(beta.cli(&["peers", "add", &alpha.addr()]).status.success());
    let listed = peers.until(|e| e["event"] == "peers");
    assert_eq!(listed["peers"][0]["name"], "alpha", "{listed}");

    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("a.bin");
    random_file(&file, 3 << 20, 11);
    let sending = spawn_share(&alpha, &["send", &beta.addr(), file.to_str().unwrap()]);
    let offer = transfers.until(|e| e["event"] != "snapshot");
    assert_eq!(offer["event"], "offer", "the offer comes first: {offer}");
    assert_eq!(
        (
            offer["trusted"].as_bool(),
            offer["transfer"]["state"].as_str()
        ),
        (Some(false), Some("pending"))
    );
    beta.accept_offer(&offer["transfer"]);
    let active =
        transfers.until(|e| e["event"] == "transfer" && e["transfer"]["state"] != "pending");
    assert_eq!(active["transfer"]["state"], "active", "{active}");
    let done = transfers.until(|e| e["event"] == "transfer" && e["transfer"]["state"] != "active");
    assert_eq!(done["transfer"]["state"], "done", "{done}");
    let saved = beta.download.join("a.bin");
    assert_eq!(
        done["transfer"]["saved"],
        serde_json::json!([saved.display().to_string()])
    );
    assert!(sending.wait_with_output().unwrap().status.success());
    assert_same_file(&file, &saved);
}

#[test]
fn one_user_holds_at_most_eight_subscriptions() {
    let daemon = TestDaemon::start("solo");
    let mut open: Vec<Raw> = Vec::new();
    for _ in 0..8 {
        let mut raw = Raw::open(&daemon, "[]", false);
        assert_eq!(raw.line()["event"]["event"], "snapshot");
        open.push(raw);
    }
    let refused = Raw::open(&daemon, "[]", false).line();
    assert_eq!(
        (refused["type"].as_str(), refused["kind"].as_str()),
        (Some("error"), Some("busy")),
        "{refused}"
    );
    // Commands still work, and a closed subscription frees its place.
    assert!(daemon.cli(&["status"]).status.success());
    open.pop();
    crate::common::eventually("a place freed", Duration::from_secs(10), || {
        let mut raw = Raw::open(&daemon, "[]", false);
        (raw.line()["type"] == "event").then_some(())
    });
}
