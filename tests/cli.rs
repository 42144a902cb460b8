//! The CLI contract: exit codes, one-line errors, JSON shapes.

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::{TestDaemon, share_bin};
use crate::transfer::{failure, finish_within, one_json};

/// Runs `share ARGS` with a clean environment: `HOME` and the control
/// socket point into `dir`, where no daemon runs.
fn share_offline(dir: &std::path::Path, args: &[&str]) -> Output {
    let child = Command::new(share_bin())
        .args(args)
        .env_clear()
        .env("HOME", dir)
        .env("SHARE_SOCKET", dir.join("nobody-home.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start share");
    finish_within(child, std::time::Duration::from_secs(10))
}

#[test]
fn client_commands_without_a_daemon_say_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.txt");
    std::fs::write(&file, "f").unwrap();
    let file = file.to_str().unwrap();
    let commands: [&[&str]; 9] = [
        &["status"],
        &["status", "--json"],
        &["peers", "--json"],
        &["transfers"],
        &["send", "127.0.0.1:9", file],
        &["accept", "abcd"],
        &["reject", "abcd"],
        &["trust", "desktop"],
        &["id"],
    ];
    for args in commands {
        let out = share_offline(dir.path(), args);
        let (code, stderr) = failure(&out);
        assert_eq!(code, Some(1), "share {args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "share {args:?}: {stderr}");
        assert!(
            stderr.contains("daemon is running"),
            "share {args:?}: {stderr}"
        );
        assert!(
            stderr.contains("`share daemon`"),
            "share {args:?}: {stderr}"
        );
        if args.contains(&"--json") {
            let document = one_json(&out);
            assert_eq!(document["status"], "failed", "share {args:?}: {document}");
            assert_eq!(document["kind"], "no_daemon", "share {args:?}: {document}");
        } else {
            assert!(out.stdout.is_empty(), "share {args:?} printed on stdout");
        }
    }
}

/// With `--json`, stdout holds exactly one document, also when the
/// command fails: `status` `failed`, the message, and a kind for
/// programs, whoever found the failure (the daemon, the control socket,
/// or the CLI itself).
#[test]
fn json_failures_are_one_document_with_a_kind() {
    let dir = tempfile::tempdir().unwrap();
    let offline: [&[&str]; 8] = [
        &["status", "--json"],
        &["peers", "--json"],
        &["transfers", "--json"],
        &["inbox", "--json"],
        &["queue", "--json"],
        &["pair", "--list", "--json"],
        &["receive", "--text", "--json"],
        &["send", "127.0.0.1:9", "--text", "hi", "--json"],
    ];
    let expect = |out: &Output, args: &[&str], kind: &str| {
        let (code, stderr) = failure(out);
        assert_eq!(code, Some(1), "share {args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "share {args:?}: {stderr}");
        let document = one_json(out);
        assert_eq!(document["status"], "failed", "share {args:?}: {document}");
        assert_eq!(document["kind"], kind, "share {args:?}: {document}");
        assert_eq!(
            format!("share: {}", document["error"].as_str().unwrap()),
            stderr.trim_end(),
            "share {args:?}: the document's error is the line on stderr"
        );
        document
    };
    for args in offline {
        expect(&share_offline(dir.path(), args), args, "no_daemon");
    }

    let daemon = TestDaemon::start("jsonfail");
    let missing = dir.path().join("missing.txt");
    let missing = missing.to_str().unwrap();
    let args = ["send", "127.0.0.1:9", missing, "--json"];
    let document = expect(&daemon.cli(&args), &args, "not_found");
    assert_eq!(document["peer"], "127.0.0.1:9", "{document}");
    let args = ["send", "127.0.0.1:9", "/dev/null", "--json"];
    expect(&daemon.cli(&args), &args, "invalid");
    let args = ["receive", "--text", "--json"];
    expect(&daemon.cli(&args), &args, "not_found");
    let args = ["send", "127.0.0.1:9", "--text", "", "--json"];
    expect(&daemon.cli(&args), &args, "invalid");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let commands: [&[&str]; 7] = [
        &[],
        &["frobnicate"],
        &["send"],
        &["send", "bob"],
        &["send", "bob", "f", "--transport", "carrier-pigeon"],
        &["status", "--bogus"],
        // `share accept` alone accepts the one waiting offer; two IDs are
        // one too many.
        &["accept", "9cbf", "1a2b"],
    ];
    for args in commands {
        let out = share_offline(dir.path(), args);
        let (code, stderr) = failure(&out);
        assert_eq!(code, Some(2), "share {args:?}: {stderr}");
        assert!(!stderr.is_empty(), "share {args:?}: no usage message");
        assert!(out.stdout.is_empty(), "share {args:?} printed on stdout");
    }
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// `share ARGS --json`: succeeds, exactly one document on stdout,
/// nothing on stderr.
fn json_only(daemon: &TestDaemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = daemon.cli(&all);
    assert!(out.status.success(), "share {all:?}: {:?}", failure(&out));
    assert!(out.stderr.is_empty(), "share {all:?}: {:?}", failure(&out));
    one_json(&out)
}

#[test]
fn json_outputs_have_the_documented_shapes() {
    let alice = TestDaemon::start("alice");

    let id = json_only(&alice, &["id"]);
    assert_eq!(keys(&id), BTreeSet::from(["name", "id"]));
    assert_eq!(id["name"], "alice");
    let text = id["id"].as_str().unwrap();
    let parsed: lanshare::identity::DeviceId = text.parse().unwrap();
    assert_eq!(parsed.to_string(), text);

    let status = json_only(&alice, &["status"]);
    for key in ["name", "id", "port", "version"] {
        assert!(status.get(key).is_some(), "status lacks {key}: {status}");
    }
    assert_eq!(status["name"], "alice");
    assert_eq!(status["id"], id["id"]);
    assert_eq!(status["port"], alice.port);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));

    assert_eq!(json_only(&alice, &["peers"]), serde_json::json!([]));
    assert_eq!(json_only(&alice, &["transfers"]), serde_json::json!([]));
}

#[test]
fn unknown_transfer_id_is_a_one_line_error() {
    let alice = TestDaemon::start("alice");
    for verb in ["accept", "reject", "cancel"] {
        let out = alice.cli(&[verb, "nonexistent"]);
        let (code, stderr) = failure(&out);
        assert_eq!(code, Some(1), "share {verb}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "share {verb}: {stderr}");
        assert!(stderr.contains("nonexistent"), "share {verb}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

/// A failure's final reply line carries a machine-readable `kind` beside
/// the message, and `share send --json` puts it in its failure document.
#[test]
fn failures_carry_a_machine_readable_kind() {
    let daemon = TestDaemon::start("kinds");
    let socket = &daemon.socket;
    let error = |request: &str| -> Value {
        let reply = crate::common::control(socket, request).unwrap_err();
        serde_json::from_str(&reply).unwrap()
    };
    let reply = error(r#"{"v":1,"cmd":"accept","id":"abcd"}"#);
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["kind"], "not_found", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("share transfers"),
        "{reply}"
    );
    let reply = error(r#"{"v":1,"cmd":"untrust","peer":"nobody-at-all"}"#);
    assert_eq!(reply["kind"], "not_found", "{reply}");
    let reply = error(r#"{"v":1,"cmd":"send_text","peer":"127.0.0.1:9","text":""}"#);
    assert_eq!(reply["kind"], "invalid", "{reply}");
    let reply = error(r#"{"v":1,"cmd":"receive_text"}"#);
    assert_eq!(reply["kind"], "not_found", "{reply}");
    let reply = error(r#"{"v":2,"cmd":"status"}"#);
    assert_eq!(reply["kind"], "invalid", "{reply}");

    // A name while mDNS is off: not found, said so, kind in the document.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.txt");
    std::fs::write(&file, "f").unwrap();
    let out = daemon.cli(&["send", "desktop", file.to_str().unwrap(), "--json"]);
    let (code, stderr) = failure(&out);
    assert_eq!(code, Some(1), "{stderr}");
    let result = one_json(&out);
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(result["kind"], "not_found", "{result}");
    assert!(stderr.contains("mDNS is off"), "{stderr}");
}

/// Every command exits quietly, with status 0, when its reader went away
/// (`share completions bash | true`, `share peers | head -1`): stdout is
/// a pipe whose read end is closed before the command starts.
#[test]
fn every_command_exits_quietly_on_a_closed_stdout() {
    let daemon = TestDaemon::start("pipes");
    let commands: Vec<Vec<&str>> = ["bash", "zsh", "fish", "elvish", "powershell"]
        .into_iter()
        .map(|shell| vec!["completions", shell])
        .chain(
            [
                &["man"][..],
                &["--help"],
                &["send", "--help"],
                &["id"],
                &["status"],
                &["peers"],
                &["transfers"],
                &["history"],
                &["queue"],
                &["inbox"],
                &["pair", "--list"],
                &["doctor"],
            ]
            .into_iter()
            .flat_map(|args| {
                let mut json = args.to_vec();
                json.push("--json");
                let plain = args.to_vec();
                let has_json =
                    !matches!(args[0], "man" | "--help") && args.get(1) != Some(&"--help");
                std::iter::once(plain).chain(has_json.then_some(json))
            }),
        )
        .collect();
    for args in commands {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let child = Command::new(share_bin())
            .args(&args)
            .env("SHARE_SOCKET", &daemon.socket)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = finish_within(child, std::time::Duration::from_secs(30));
        assert_eq!(
            out.status.code(),
            Some(0),
            "share {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "share {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// An error names its cause once: a missing file, a name that cannot be
/// sent, a state directory that cannot be created.
#[test]
fn errors_name_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nonexistent");
    let control = dir.path().join("ctl\u{1}.txt");
    std::fs::write(&control, "x").unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let state = not_a_dir.join("state");
    let socket = dir.path().join("run/share.sock");
    let runs: [(Vec<&str>, &str); 3] = [
        (
            vec!["send", "127.0.0.1:9", missing.to_str().unwrap()],
            "No such file or directory",
        ),
        (
            vec!["send", "127.0.0.1:9", control.to_str().unwrap()],
            "character",
        ),
        (
            vec![
                "daemon",
                "--no-mdns",
                "--port",
                "0",
                "--state-dir",
                state.to_str().unwrap(),
                "--socket",
                socket.to_str().unwrap(),
            ],
            "Not a directory",
        ),
    ];
    for (args, cause) in runs {
        let out = share_offline(dir.path(), &args);
        let (code, stderr) = failure(&out);
        assert!(matches!(code, Some(1 | 78)), "share {args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "share {args:?}: {stderr}");
        assert_eq!(
            stderr.matches(cause).count(),
            1,
            "share {args:?} names its cause more than once: {stderr}"
        );
    }
}

/// `share accept`, `reject` and `cancel` of a finished transfer say what
/// state it is in and that there is nothing to do.
#[test]
fn deciding_a_finished_transfer_says_there_is_nothing_to_do() {
    let receiver = TestDaemon::start("receiver");
    let sender = TestDaemon::start("sender");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.txt");
    std::fs::write(&file, "f").unwrap();
    let sent = sender.json(&["send", &receiver.addr(), file.to_str().unwrap()]);
    assert_eq!(sent["status"], "done");
    let id = receiver.transfers()[0]["id"].as_str().unwrap().to_owned();
    for verb in ["accept", "reject", "cancel"] {
        let out = receiver.cli(&[verb, &id]);
        let (code, stderr) = failure(&out);
        assert_eq!(code, Some(1), "share {verb}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("share: transfer {id} is already done; there is nothing to {verb}"),
        );
    }
}

/// The usual mistakes get a hint that says what to type instead.
#[test]
fn usual_mistakes_get_hints() {
    let laptop = TestDaemon::builder("laptop").spawn();
    let desktop = TestDaemon::start("desktop");
    let out = laptop.cli(&["peers", "add", &desktop.addr()]);
    assert!(out.status.success(), "{:?}", failure(&out));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.txt");
    std::fs::write(&file, "f").unwrap();
    let file = file.to_str().unwrap();
    let short = desktop.id()[..3].to_owned();
    let runs: [(Vec<&str>, &str); 5] = [
        (
            vec!["send", "10.0.0.5", file],
            "add the peer's service port (47000 unless it was changed): 10.0.0.5:47000",
        ),
        (vec!["send", "fe80::1", file], "[fe80::1]:47000"),
        (
            vec!["send", "LAPTOP", file],
            "\"LAPTOP\" is this device's own name",
        ),
        (
            vec!["send", &short, file],
            "too short for a device-ID prefix: type at least 4 characters",
        ),
        (
            vec!["send", "--queue", "nobody", file],
            "no device called \"nobody\" has been seen",
        ),
    ];
    for (args, hint) in runs {
        let out = laptop.cli(&args);
        let (code, stderr) = failure(&out);
        assert_eq!(code, Some(1), "share {args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "share {args:?}: {stderr}");
        assert!(stderr.contains(hint), "share {args:?}: {stderr}");
    }
    let queued = laptop.json(&["send", "--queue", "--wait-for-peer", "nobody", file]);
    assert_eq!(queued["peer"], "nobody", "{queued}");

    // A second daemon on the same port, with the same socket or with one
    // where a CLI finds the first daemon (here the state-home socket):
    // that is what it says first, not "pick another --port".
    let state_home = dir.path().join("state-home");
    std::fs::create_dir_all(state_home.join("lanshare")).unwrap();
    std::os::unix::fs::symlink(&laptop.socket, state_home.join("lanshare/share.sock")).unwrap();
    let own_socket = dir.path().join("run2/share.sock");
    for (socket, says) in [
        (
            &laptop.socket,
            "another lanshare daemon is already running on ",
        ),
        (
            &own_socket,
            "another lanshare daemon is already running (control socket ",
        ),
    ] {
        let out = Command::new(share_bin())
            .args(["daemon", "--no-mdns", "--bind", "127.0.0.1", "--port"])
            .arg(laptop.port.to_string())
            .arg("--state-dir")
            .arg(dir.path().join("state2"))
            .arg("--download-dir")
            .arg(dir.path().join("downloads2"))
            .arg("--socket")
            .arg(socket)
            .env("XDG_STATE_HOME", &state_home)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let (code, stderr) = failure(&out);
        assert_ne!(code, Some(0), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.contains(says), "{stderr}");
        assert!(!last.contains("pick another --port"), "{stderr}");
    }
}

/// `share id` without a daemon shows the name the daemon announced (here
/// given with `--name`, which no config file holds), not the host name.
#[test]
fn id_without_a_daemon_shows_the_name_peers_saw() {
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join(".local/state/lanshare");
    let mut daemon = TestDaemon::builder("desk-by-the-window")
        .state_dir(&state)
        .spawn();
    let online = daemon.json(&["id"]);
    assert_eq!(online["name"], "desk-by-the-window", "{online}");
    assert!(daemon.stop());

    let out = share_offline(home.path(), &["id", "--json"]);
    assert!(out.status.success(), "{:?}", failure(&out));
    assert_eq!(one_json(&out), online);
    let out = share_offline(home.path(), &["id"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        format!("desk-by-the-window\n{}\n", online["id"].as_str().unwrap())
    );
}

/// The time and rate after a send count from the receiver's accept, not
/// from the request: the user's two seconds of thinking are said apart.
#[test]
fn send_rate_counts_from_the_first_byte() {
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::builder("bob").spawn(); // asks before accepting
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f.bin");
    std::fs::write(&file, vec![7u8; 1 << 20]).unwrap();
    let thinking = std::time::Duration::from_secs(2);
    let addr = bob.addr();
    let send_and_accept = |json: bool| {
        let mut args = vec!["send", &addr, file.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let sender = crate::transfer::spawn_share(&alice, &args);
        let offer = bob.wait_transfer("a pending offer", |t| {
            t["state"] == "pending" && t["direction"] == "in"
        });
        // The user reads the offer: this wait is what is measured.
        std::thread::sleep(thinking);
        let out = bob.cli(&["accept", offer["id"].as_str().unwrap()]);
        assert!(out.status.success(), "{:?}", failure(&out));
        let sent = finish_within(sender, std::time::Duration::from_secs(60));
        assert!(sent.status.success(), "{:?}", failure(&sent));
        sent
    };

    let result = one_json(&send_and_accept(true));
    let all = result["seconds"].as_f64().unwrap();
    let moving = result["transfer_seconds"].as_f64().unwrap();
    assert!(all >= thinking.as_secs_f64(), "{result}");
    assert!(moving < all - thinking.as_secs_f64() + 0.5, "{result}");

    let out = send_and_accept(false);
    let line = String::from_utf8(out.stdout).unwrap();
    let shown: f64 = line
        .split(" in ")
        .nth(1)
        .and_then(|rest| rest.split(" s").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no time in {line}"));
    assert!(shown < thinking.as_secs_f64(), "{line}");
    assert!(
        line.contains("s in all, with connecting and the wait for accept)"),
        "{line}"
    );
}

/// `share transfers` for a decision: a pending offer says how long is
/// left, and the columns stay aligned when a peer's name is wider than
/// the header expects.
#[test]
fn transfers_show_time_left_and_keep_columns_aligned() {
    let long = "the-laptop-in-the-meeting-room-upstairs";
    let senders = [TestDaemon::start(long), TestDaemon::start("al")];
    let bob = TestDaemon::builder("bob").spawn(); // asks before accepting
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f.txt");
    std::fs::write(&file, "f").unwrap();
    let addr = bob.addr();
    let mut sends: Vec<_> = senders
        .iter()
        .map(|s| crate::transfer::spawn_share(s, &["send", &addr, file.to_str().unwrap()]))
        .collect();
    let pending = |list: &Value| {
        list.as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "pending")
            .count()
    };
    let list = crate::common::eventually(
        "two pending offers",
        std::time::Duration::from_secs(20),
        || {
            let list = bob.json(&["transfers"]);
            (pending(&list) == 2).then_some(list)
        },
    );
    for t in list.as_array().unwrap() {
        let left = t["expires_in_s"].as_u64().unwrap();
        assert!((1..=120).contains(&left), "{t}");
    }

    let out = bob.cli(&["transfers"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let column = lines[0].find("PROGRESS").unwrap();
    for row in &lines[1..] {
        assert_eq!(row.find("0 B / 1 B"), Some(column), "{text}");
        assert!(row.contains("pending ("), "{text}");
        assert!(row.contains(" s left)"), "{text}");
    }
    assert!(text.contains(long), "{text}");
    for send in &mut sends {
        let _ = send.kill();
        let _ = send.wait();
    }
}

/// `share send --queue` to a name never seen asks on a terminal (`script`
/// gives it one): yes queues it, no leaves the queue empty and exits 1.
#[test]
fn queueing_for_a_name_never_seen_asks_on_a_terminal() {
    let laptop = TestDaemon::start("laptop");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.txt");
    std::fs::write(&file, "f").unwrap();
    let on_terminal = |answer: &[u8]| {
        let command = format!(
            "SHARE_SOCKET={} {} send --queue nobody {}",
            laptop.socket.display(),
            share_bin(),
            file.display()
        );
        let mut child = Command::new("script")
            .args(["--quiet", "--return", "--command", &command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script(1)");
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(answer).unwrap();
        }
        let out = finish_within(child, std::time::Duration::from_secs(20));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let queued = || laptop.json(&["queue"]).as_array().unwrap().len();

    let (code, shown) = on_terminal(b"n\n");
    assert!(shown.contains("Queue it anyway"), "{shown}");
    assert_eq!(code, Some(1), "{shown}");
    assert_eq!(queued(), 0);

    let (code, shown) = on_terminal(b"y\n");
    assert_eq!(code, Some(0), "{shown}");
    assert_eq!(queued(), 1, "{shown}");
}
