//! `share transfers --watch` and `share peers --watch`: redrawn in place
//! on a pseudo-terminal as the daemon's events arrive, and one JSON
//! document per event with `--json`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::common::pty::Pty;
use crate::common::{TestDaemon, random_file};
use crate::transfer::spawn_share;

/// JSON lines of a `--json --watch` view, as they are printed.
struct JsonLines {
    lines: mpsc::Receiver<Value>,
    child: std::process::Child,
}

impl JsonLines {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let doc = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not one JSON document per line ({e}): {line}"));
                if tx.send(doc).is_err() {
                    break;
                }
            }
        });
        Self { lines, child }
    }

    /// Documents until one `pred` accepts (that one).
    fn until(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let doc = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no JSON line for {what}"));
            if pred(&doc) {
                return doc;
            }
        }
    }
}

impl Drop for JsonLines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn transfers_watch_redraws_the_table_in_place() {
    let alpha = TestDaemon::start("alpha");
    let beta = TestDaemon::builder("beta").spawn();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("song.ogg");
    random_file(&file, 500_000, 9);

    let mut view = Pty::spawn(beta.command(&["transfers", "--watch"]));
    let json = JsonLines::start(beta.command(&["transfers", "--watch", "--json"]));
    view.expect("no transfers");
    json.until("the snapshot", |d| d["event"] == "snapshot");
    let mut sending = spawn_share(&alpha, &["send", &beta.addr(), file.to_str().unwrap()]);
    view.expect(" pending (");
    let offer = json.until("the offer", |d| d["event"] == "offer");
    assert_eq!(offer["transfer"]["names"], serde_json::json!(["song.ogg"]));
    assert_eq!(offer["trusted"], false);
    beta.accept_offer(&offer["transfer"]);
    view.expect(" done ");
    let done = json.until("done", |d| {
        d["event"] == "transfer" && d["transfer"]["state"] == "done"
    });
    assert_eq!(done["transfer"]["bytes_done"], 500_000);
    assert!(sending.wait().unwrap().success());
    // In place: each frame went back over the last one (cursor up, then
    // the rows rewritten), not appended below it.
    let raw = view.raw();
    assert!(
        raw.contains("\x1b[2F"),
        "no redraw over the last frame: {raw:?}"
    );
    let headers = raw.matches("ID        DIR  STATE").count();
    assert!(headers >= 2, "the table was drawn once: {raw:?}");
}

#[test]
fn peers_watch_shows_devices_as_they_are_added_and_removed() {
    let alpha = TestDaemon::start("alpha");
    let beta = TestDaemon::start("beta");
    let mut view = Pty::spawn(alpha.command(&["peers", "--watch"]));
    let json = JsonLines::start(alpha.command(&["peers", "--watch", "--json"]));
    view.expect("no peers found");
    let snapshot = json.until("the snapshot", |d| d["event"] == "snapshot");
    assert_eq!(snapshot["peers"], serde_json::json!([]));
    assert!(snapshot.get("transfers").is_none(), "{snapshot:#}");

    assert!(alpha.cli(&["peers", "add", &beta.addr()]).status.success());
    view.expect("beta");
    view.expect("manual");
    let listed = json.until("beta listed", |d| d["event"] == "peers");
    assert_eq!(listed["peers"][0]["name"], "beta", "{listed:#}");
    assert!(alpha.cli(&["peers", "remove", "beta"]).status.success());
    view.expect("no peers found");
    let gone = json.until("beta gone", |d| d["event"] == "peers");
    assert_eq!(gone["peers"], serde_json::json!([]));
}
