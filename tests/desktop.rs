//! The desktop side: the `share notify` agent against a real
//! `dbus-daemon --session` and a test notification server, and the
//! file manager's "Send to" (`share send --choose`) without a terminal.
//!
//! The agent test runs on a namespace LAN (root): the sender finds the
//! receiver by mDNS and sends by name, as a user would. Each step waits
//! for the D-Bus call it expects ([`Desktop::next`]), never for time.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::desktop::{Call, Desktop, file_uri};
use crate::common::netns::{Lan, has_id, wait_peers};
use crate::common::{TestDaemon, assert_same_file, random_file, share_bin};
use crate::transfer::spawn_share;

/// Capabilities of a typical desktop's notification server.
const FULL: [&str; 5] = [
    "actions",
    "body",
    "body-markup",
    "persistence",
    "icon-static",
];

/// `share send PEER FILE` on `daemon`, in the background.
fn send(daemon: &TestDaemon, peer: &str, file: &std::path::Path) -> std::process::Child {
    spawn_share(daemon, &["send", peer, file.to_str().unwrap()])
}

fn finished(child: std::process::Child) -> Output {
    child.wait_with_output().expect("share send finishes")
}

/// After the offer shown as `offer` was accepted: the send succeeds, and
/// every notification up to "Received" updates the offer's (one
/// notification per offer). Returns those updates.
fn delivered(
    desktop: &Desktop,
    sending: std::process::Child,
    offer: u32,
) -> Vec<crate::common::desktop::Notification> {
    let sent = finished(sending);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let updates = desktop.notifications_until("received", |n| n.summary.starts_with("Received"));
    assert!(
        updates.iter().all(|n| n.replaces_id == offer),
        "an offer got more than one notification: {updates:#?}"
    );
    updates
}

#[test]
#[ignore = "needs root: network namespaces"]
fn the_agent_asks_for_each_offer_and_follows_it_to_the_end() {
    let lan = Lan::new(2);
    let alpha = lan.daemon(0, "alpha").spawn();
    let beta = lan.daemon(1, "beta").spawn();
    let beta_id = beta.id();
    wait_peers(
        &alpha,
        std::time::Instant::now(),
        Duration::from_secs(10),
        "beta on the LAN",
        |p| has_id(p, &beta_id),
    );
    let desktop = Desktop::start(&FULL);
    let agent = desktop.agent(&beta);
    let src = tempfile::tempdir().unwrap();
    let photo = src.path().join("photo.jpg");
    random_file(&photo, 3 << 20, 18);

    // Accept: one notification, updated in place to the end.
    let sending = send(&alpha, "beta", &photo);
    let offer = desktop.next_notification("the offer");
    assert_eq!(offer.replaces_id, 0, "{offer:?}");
    assert!(
        offer
            .summary
            .starts_with("alpha wants to send you photo.jpg"),
        "{offer:?}"
    );
    assert!(offer.body.contains("not trusted"), "{offer:?}");
    for key in ["accept", "reject", "always"] {
        assert!(offer.has_action(key), "no {key} on {offer:?}");
    }
    desktop.invoke(offer.id, "accept");
    let updates = delivered(&desktop, sending, offer.id);
    assert!(
        updates[0].progress.is_some(),
        "accepting shows progress: {updates:#?}"
    );
    let received = updates.last().unwrap();
    let saved = beta.download.join("photo.jpg");
    assert_same_file(&photo, &saved);
    assert!(
        received.body.contains(&beta.download.display().to_string()),
        "{received:?}"
    );
    desktop.invoke(received.id, "open");
    match desktop.next("the folder opened") {
        Call::ShowItems(uris) => assert_eq!(uris, [file_uri(&saved)]),
        other => panic!("expected the file manager, got {other:?}"),
    }

    // Reject: the sender is told why.
    let sending = send(&alpha, "beta", &photo);
    let offer = desktop.next_notification("the second offer");
    assert_eq!(offer.replaces_id, 0, "{offer:?}");
    desktop.invoke(offer.id, "reject");
    let refused = finished(sending);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("declined by the receiving user"), "{why}");
    let declined = desktop.next_notification("the offer declined");
    assert_eq!(declined.replaces_id, offer.id, "{declined:?}");
    assert!(declined.summary.contains("declined"), "{declined:?}");

    // Always accept: trusted from now on.
    let sending = send(&alpha, "beta", &photo);
    let offer = desktop.next_notification("the third offer");
    desktop.invoke(offer.id, "always");
    delivered(&desktop, sending, offer.id);
    let trusted = beta.json(&["peers"]);
    assert_eq!(trusted[0]["trusted"], true, "{trusted:#}");

    // A trusted sender: no question, one "received" notification only.
    let sent = finished(send(&alpha, "beta", &photo));
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let only = desktop.next_notification("received from a trusted device");
    assert_eq!(only.replaces_id, 0, "{only:?}");
    assert!(only.summary.starts_with("Received photo.jpg"), "{only:?}");
    assert!(!only.has_action("accept"), "{only:?}");
    assert!(
        agent.stop().success(),
        "share notify stops cleanly on SIGTERM"
    );
    // The agent is gone, so every call it made has arrived: nothing else.
    assert!(
        desktop.pending().is_empty(),
        "more than one notification for a trusted transfer: {:#?}",
        desktop.pending()
    );
}

/// The agent outlives a daemon restart: it subscribes again and shows
/// the next offer (one that waits already when it comes back counts).
#[test]
fn the_agent_follows_the_daemon_through_a_restart() {
    let alpha = TestDaemon::start("alpha");
    let home = tempfile::tempdir().unwrap();
    let socket = home.path().join("run/share.sock");
    let state = home.path().join("state");
    let mut beta = TestDaemon::builder("beta")
        .socket(&socket)
        .state_dir(&state)
        .spawn();
    let desktop = Desktop::start(&FULL);
    let _agent = desktop.agent(&beta);
    assert!(beta.stop(), "beta stops cleanly");
    let beta = TestDaemon::builder("beta")
        .socket(&socket)
        .state_dir(&state)
        .spawn();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("again.txt");
    random_file(&file, 1000, 3);
    let sending = spawn_share(&alpha, &["send", &beta.addr(), file.to_str().unwrap()]);
    let offer = desktop.next_notification("the offer after the restart");
    assert!(
        offer
            .summary
            .starts_with("alpha wants to send you again.txt"),
        "{offer:?}"
    );
    desktop.invoke(offer.id, "accept");
    delivered(&desktop, sending, offer.id);
    assert_same_file(&file, &beta.download.join("again.txt"));
}

#[test]
fn without_a_session_bus_the_agent_says_so_and_exits() {
    let daemon = TestDaemon::start("solo");
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(share_bin())
        .arg("notify")
        .env("SHARE_SOCKET", &daemon.socket)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("XDG_RUNTIME_DIR", empty.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("no desktop session bus"), "{err}");
}

/// What a file manager's "Send to" runs: no terminal, no zenity or
/// kdialog, so the device is chosen from a notification.
#[test]
fn send_to_without_a_terminal_asks_with_a_notification() {
    let alpha = TestDaemon::start("alpha");
    let beta = TestDaemon::start("beta");
    let added = alpha.cli(&["peers", "add", &beta.addr()]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let desktop = Desktop::start(&FULL);
    let src = tempfile::tempdir().unwrap();
    let report = src.path().join("report.pdf");
    random_file(&report, 200_000, 7);
    let no_dialogs = tempfile::tempdir().unwrap();
    let choosing = desktop
        .command(share_bin())
        .args(["send", "--choose"])
        .arg(&report)
        .env("SHARE_SOCKET", &alpha.socket)
        .env("PATH", no_dialogs.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let chooser = desktop.next_notification("the device chooser");
    assert_eq!(chooser.summary, "Send report.pdf to:", "{chooser:?}");
    let (key, label) = &chooser.actions[0];
    assert!(label.starts_with("beta ("), "{chooser:?}");
    desktop.invoke(chooser.id, key);
    assert!(matches!(desktop.next("the chooser withdrawn"), Call::Close(id) if id == chooser.id));
    let done = desktop.next_notification("the outcome");
    assert_eq!(done.summary, "Sent report.pdf to beta", "{done:?}");
    let out = choosing.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_file(&report, &beta.download.join("report.pdf"));
}

/// The "Send to Device…" entries the package installs all run
/// `share send --choose` with absolute paths.
#[test]
fn file_manager_entries_send_absolute_paths_with_choose() {
    for entry in [
        "packaging/desktop/lanshare-dolphin.desktop",
        "packaging/desktop/lanshare-thunar-sendto.desktop",
    ] {
        let text = std::fs::read_to_string(entry).unwrap();
        let exec: Vec<&str> = text.lines().filter(|l| l.starts_with("Exec=")).collect();
        assert_eq!(exec, ["Exec=share send --choose %F"], "{entry}");
    }
    let uca = std::fs::read_to_string("packaging/desktop/thunar-uca.xml").unwrap();
    assert!(uca.contains("<command>share send --choose %F</command>"));
    let nautilus = std::fs::read_to_string("packaging/desktop/lanshare-nautilus.py").unwrap();
    assert!(nautilus.contains(r#"["share", "send", "--choose", *paths]"#));

    // The Nautilus script: names relative to the folder become absolute,
    // so "-x" is a file, not an option; a fake `share` shows the arguments.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let seen = dir.path().join("args");
    let fake = bin.join("share");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\n", seen.display()),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).unwrap();
    let folder = dir.path().join("My Files");
    std::fs::create_dir(&folder).unwrap();
    let script = std::fs::canonicalize("packaging/desktop/send-to-device.sh").unwrap();
    let out = Command::new(&script)
        .args(["-x", "a b.txt", "/abs/c"])
        .current_dir(&folder)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let args = std::fs::read_to_string(&seen).unwrap();
    let folder = folder.display();
    assert_eq!(
        args,
        format!("send\n--choose\n{folder}/-x\n{folder}/a b.txt\n/abs/c\n")
    );
}
