//! `share receive` (on a pseudo-terminal and from scripts) and
//! `share accept` without an ID, between two loopback daemons.

use std::process::{Child, Output};

use serde_json::Value;

use crate::common::pty::Pty;
use crate::common::{TestDaemon, assert_same_file, random_file};
use crate::transfer::spawn_share;

/// `share send RECEIVER FILE` from `sender`, in the background.
fn send(sender: &TestDaemon, receiver: &TestDaemon, file: &std::path::Path) -> Child {
    spawn_share(sender, &["send", &receiver.addr(), file.to_str().unwrap()])
}

fn succeeded(child: Child) -> Output {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `share receive --json ARGS` with stdout piped (no terminal), started.
fn receive_json(daemon: &TestDaemon, args: &[&str]) -> Child {
    spawn_share(daemon, &[&["receive", "--json"], args].concat())
}

fn document(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A pending offer on `daemon`, once it is listed.
fn pending(daemon: &TestDaemon) -> Value {
    daemon.wait_transfer("an offer waiting", |t| {
        t["direction"] == "in" && t["state"] == "pending"
    })
}

#[test]
fn receive_on_a_terminal_asks_then_shows_the_final_paths() {
    let alpha = TestDaemon::start("alpha");
    let beta = TestDaemon::builder("beta").spawn();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("photo.jpg");
    random_file(&file, 2 << 20, 3);

    let mut term = Pty::spawn(beta.command(&["receive"]));
    term.expect("waiting for an offer (on the other device: share send beta FILES)");
    let sending = send(&alpha, &beta, &file);
    let offer = term.expect("Accept? [y/N]");
    assert!(offer.contains("alpha ("), "{offer}");
    assert!(
        offer.contains("not trusted) offers photo.jpg (2.0 MiB)"),
        "{offer}"
    );
    term.send("y\n");
    let saved = beta.download.join("photo.jpg");
    term.expect("received photo.jpg (2.0 MiB) from alpha");
    term.expect(&saved.display().to_string());
    assert!(term.wait().success());
    succeeded(sending);
    assert_same_file(&file, &saved);
}

#[test]
fn answering_no_rejects_and_ctrl_c_leaves_the_offer_pending() {
    let alpha = TestDaemon::start("alpha");
    let beta = TestDaemon::builder("beta").spawn();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("notes.txt");
    random_file(&file, 1000, 4);

    let mut term = Pty::spawn(beta.command(&["receive"]));
    let sending = send(&alpha, &beta, &file);
    term.expect("Accept? [y/N]");
    term.send("n\n");
    term.expect("declined the offer from alpha");
    assert_eq!(term.wait().code(), Some(1));
    let refused = sending.wait_with_output().unwrap();
    assert!(!refused.status.success());

    let mut term = Pty::spawn(beta.command(&["receive"]));
    term.expect("waiting for an offer");
    let sending = send(&alpha, &beta, &file);
    term.expect("Accept? [y/N]");
    term.signal(rustix::process::Signal::INT);
    assert!(!term.wait().success(), "Ctrl-C stops share receive");
    let offer = pending(&beta);
    // The offer survived; the one waiting offer is accepted without an ID.
    let accepted = beta.cli(&["accept"]);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let said = String::from_utf8_lossy(&accepted.stdout);
    assert!(
        said.contains(&format!(
            "accepted transfer {}",
            offer["id"].as_str().unwrap()
        )),
        "{said}"
    );
    succeeded(sending);
    assert_same_file(&file, &beta.download.join("notes.txt"));
}

#[test]
fn scripts_accept_only_what_the_flags_allow() {
    let alpha = TestDaemon::start("alpha");
    let beta = TestDaemon::builder("beta").spawn();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("data.bin");
    random_file(&file, 300_000, 5);

    // Nothing comes: --timeout gives up with kind `timeout`.
    let out = receive_json(&beta, &["--timeout", "1"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc = document(&out);
    assert_eq!(
        (doc["status"].as_str(), doc["kind"].as_str()),
        (Some("failed"), Some("timeout"))
    );

    // --yes never accepts an untrusted device; the offer stays pending.
    let sending = send(&alpha, &beta, &file);
    let out = receive_json(&beta, &["--yes"]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc = document(&out);
    assert_eq!(doc["kind"], "refused", "{doc:#}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("not a trusted device"),
        "{doc:#}"
    );
    let offer = pending(&beta);

    // --from another device does not take it; --yes-untrusted does.
    let out = receive_json(&beta, &["--from", "gamma", "--timeout", "1"])
        .wait_with_output()
        .unwrap();
    assert_eq!(document(&out)["kind"], "timeout");
    let out = succeeded(receive_json(&beta, &["--yes-untrusted", "--from", "ALPHA"]));
    let doc = document(&out);
    assert_eq!(doc["status"], "done", "{doc:#}");
    assert_eq!(doc["id"], offer["id"]);
    assert_eq!(
        (doc["peer"].as_str(), doc["trusted"].as_bool()),
        (Some("alpha"), Some(false))
    );
    let saved = beta.download.join("data.bin");
    assert_eq!(
        doc["paths"],
        serde_json::json!([saved.display().to_string()])
    );
    succeeded(sending);
    assert_same_file(&file, &saved);

    // A trusted device's offer is accepted by the daemon; receive follows it.
    let trusted = beta.cli(&["trust", &alpha.addr()]);
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let mut term = Pty::spawn(beta.command(&["receive"]));
    term.expect("waiting for an offer");
    let sending = send(&alpha, &beta, &file);
    term.expect("trusted) offers data.bin");
    term.expect("accepted without asking: a trusted device");
    term.expect(&beta.download.join("data (1).bin").display().to_string());
    assert!(term.wait().success());
    succeeded(sending);
}

#[test]
fn accept_without_an_id_needs_exactly_one_offer() {
    let alpha = TestDaemon::start("alpha");
    let beta = TestDaemon::builder("beta").spawn();
    let none = beta.cli(&["accept"]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no offer is waiting"));

    let src = tempfile::tempdir().unwrap();
    let (a, b) = (src.path().join("a.txt"), src.path().join("b.txt"));
    random_file(&a, 10, 1);
    random_file(&b, 10, 2);
    let first = send(&alpha, &beta, &a);
    pending(&beta);
    let second = send(&alpha, &beta, &b);
    crate::common::eventually("two offers", std::time::Duration::from_secs(30), || {
        let waiting = beta
            .transfers()
            .into_iter()
            .filter(|t| t["state"] == "pending")
            .count();
        (waiting == 2).then_some(())
    });
    let several = beta.cli(&["accept"]);
    assert!(!several.status.success());
    let why = String::from_utf8_lossy(&several.stderr);
    assert!(why.contains("2 offers are waiting"), "{why}");
    for offer in beta.transfers() {
        beta.accept_offer(&offer);
    }
    succeeded(first);
    succeeded(second);
}

/// A daemon that takes offers from any device (`accept = "all"`) accepts
/// a stranger's files without asking; `share receive` follows them but
/// does not call the stranger trusted.
#[test]
fn an_offer_the_policy_accepted_is_not_called_trusted() {
    let alpha = TestDaemon::start("alpha");
    let beta = TestDaemon::start("beta");
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("data.bin");
    random_file(&file, 100_000, 9);
    let mut term = Pty::spawn(beta.command(&["receive"]));
    term.expect("waiting for an offer");
    let sending = send(&alpha, &beta, &file);
    term.expect(", not trusted) offers data.bin");
    term.expect("accepted without asking: this daemon accepts offers from any device");
    term.expect(&beta.download.join("data.bin").display().to_string());
    assert!(term.wait().success());
    succeeded(sending);
    assert_same_file(&file, &beta.download.join("data.bin"));
}
