//! `share send --choose FILES...`: pick the device from a list, then send.
//!
//! This is what the file managers' "Send to" entries run (Nautilus script,
//! Dolphin service menu, Thunar custom action; see `packaging/desktop/`).
//! On a terminal the list is numbered and read from the keyboard. Without
//! one (started from a file manager) it is a dialog: `kdialog` first on
//! KDE, otherwise `zenity`, then `kdialog`, whichever is installed; with
//! neither, a desktop notification with one button per device. The send
//! itself is the ordinary `share send`; without a terminal its outcome is
//! reported as a desktop notification, since nobody sees the output.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;

use super::output::parse;
use super::send::{self, SendArgs};
use crate::control::Request;
use crate::control::client;
use crate::describe;
use crate::desktop::agent::{Note, Urgency};
use crate::desktop::bus::Notifier;
use crate::peers::PeerInfo;
use crate::safe_text::printable;

/// Dialog title.
const TITLE: &str = "Send to device";

/// How long the notification chooser waits for a choice.
const NOTIFICATION_WAIT: Duration = Duration::from_secs(120);

/// Devices the notification chooser offers (servers show few buttons).
const NOTIFICATION_CHOICES: usize = 4;

/// `share send --choose FILES...`.
pub(super) async fn send(sockets: &[PathBuf], args: SendArgs) -> Result<()> {
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let files = args.choose.clone();
    let result = choose_and_send(sockets, args, terminal).await;
    if !terminal && let Err(e) = &result {
        tell_desktop(
            &format!("Could not send {}", count(&files)),
            &printable(&format!("{e:#}")),
            "transfer.error",
        )
        .await;
    }
    result
}

async fn choose_and_send(sockets: &[PathBuf], args: SendArgs, terminal: bool) -> Result<()> {
    let files = args.choose.clone();
    let peers: Vec<PeerInfo> = parse(client::call(sockets, Request::Peers, |_| {}).await?)?;
    if peers.is_empty() {
        bail!(
            "no devices found to send to (is lanshare running on the other one? see `share peers`)"
        );
    }
    let chosen = if terminal {
        ask_terminal(&peers, &files)?
    } else {
        ask_desktop(&peers, &files).await?
    };
    let Some(peer) = chosen else {
        bail!("nothing sent: no device chosen");
    };
    let peer = &peers[peer];
    let send_args = SendArgs {
        peer: Some(peer.id.to_string()),
        paths: files.clone(),
        choose: Vec::new(),
        ..args
    };
    send::send_files(sockets, send_args).await?;
    if !terminal {
        tell_desktop(
            &format!("Sent {} to {}", count(&files), peer.name),
            &printable(&names(&files)),
            "transfer.complete",
        )
        .await;
    }
    Ok(())
}

/// `desktop (AXNNA454, trusted)`, with look-alikes flagged.
fn label(p: &PeerInfo) -> String {
    describe::device(&p.name, &p.id, p.trusted, p.looks_like.as_ref())
}

/// `3 files`, `report.pdf`.
fn count(files: &[PathBuf]) -> String {
    match files {
        [one] => one.file_name().map_or_else(
            || "1 file".to_owned(),
            |n| printable(&n.to_string_lossy()).into_owned(),
        ),
        many => format!("{} files", many.len()),
    }
}

/// The files' names, for a message.
fn names(files: &[PathBuf]) -> String {
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    names.join(", ")
}

/// The numbered list on stderr, the answer from stdin.
fn ask_terminal(peers: &[PeerInfo], files: &[PathBuf]) -> Result<Option<usize>> {
    let mut err = std::io::stderr().lock();
    writeln!(err, "Send {} to:", count(files))?;
    for (i, p) in peers.iter().enumerate() {
        writeln!(err, "  {:>2}  {}", i + 1, label(p))?;
    }
    loop {
        write!(err, "Device [1-{}, Enter to cancel]: ", peers.len())?;
        err.flush()?;
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line)? == 0 {
            return Ok(None);
        }
        match parse_choice(&line, peers.len()) {
            Ok(choice) => return Ok(choice),
            Err(why) => writeln!(err, "{why}")?,
        }
    }
}

/// A typed answer: a number from 1 to `count`, or nothing (cancel).
fn parse_choice(input: &str, count: usize) -> Result<Option<usize>, String> {
    let input = input.trim();
    if input.is_empty() {
        return Ok(None);
    }
    match input.parse::<usize>() {
        Ok(n) if (1..=count).contains(&n) => Ok(Some(n - 1)),
        _ => Err(format!(
            "type a number from 1 to {count}, or Enter to cancel"
        )),
    }
}

/// A dialog, or a notification with a button per device.
async fn ask_desktop(peers: &[PeerInfo], files: &[PathBuf]) -> Result<Option<usize>> {
    let text = format!("Send {} to:", count(files));
    for tool in dialog_order(std::env::var("XDG_CURRENT_DESKTOP").ok().as_deref()) {
        let Some(program) = find_program(tool) else {
            continue;
        };
        let (args, input) = dialog(tool, &text, peers);
        let mut child = tokio::process::Command::new(program)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {tool}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).await?;
        }
        let out = child.wait_with_output().await?;
        // Cancel, or the dialog closed: nothing chosen.
        if !out.status.success() {
            return Ok(None);
        }
        return Ok(dialog_answer(&String::from_utf8_lossy(&out.stdout), peers));
    }
    let notifier = Notifier::connect().await.context(
        "no terminal to ask on, no zenity or kdialog, and no desktop session: run `share send --choose` in a terminal",
    )?;
    let note = Note {
        actions: peers
            .iter()
            .take(NOTIFICATION_CHOICES)
            .enumerate()
            .map(|(i, p)| (i.to_string(), label(p)))
            .collect(),
        urgency: Urgency::Critical,
        transient: true,
        ..Note::new(text, printable(&names(files)).into_owned(), "transfer")
    };
    let picked = notifier.ask(&note, NOTIFICATION_WAIT).await?;
    Ok(picked
        .and_then(|key| key.parse::<usize>().ok())
        .filter(|&i| i < peers.len()))
}

/// Which dialog programs to try, in order, on this desktop.
fn dialog_order(desktop: Option<&str>) -> [&'static str; 2] {
    if desktop.is_some_and(|d| d.split(':').any(|d| d.eq_ignore_ascii_case("KDE"))) {
        ["kdialog", "zenity"]
    } else {
        ["zenity", "kdialog"]
    }
}

/// `tool`'s arguments and what it reads on stdin. Device names go where
/// they cannot be taken for options: zenity reads its rows from stdin,
/// and each kdialog item starts with its number.
fn dialog(tool: &str, text: &str, peers: &[PeerInfo]) -> (Vec<String>, String) {
    if tool == "kdialog" {
        let mut args = vec![
            "--title".to_owned(),
            TITLE.to_owned(),
            "--menu".to_owned(),
            text.to_owned(),
        ];
        for (i, p) in peers.iter().enumerate() {
            args.push((i + 1).to_string());
            args.push(format!("{}. {}", i + 1, label(p)));
        }
        return (args, String::new());
    }
    let args = [
        "--list",
        &format!("--title={TITLE}"),
        &format!("--text={text}"),
        "--column=#",
        "--column=Device",
        "--hide-column=1",
        "--print-column=1",
        "--width=420",
        "--height=320",
    ]
    .map(str::to_owned)
    .to_vec();
    let rows: String = peers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}\n{}\n", i + 1, label(p)))
        .collect();
    (args, rows)
}

/// The device a dialog printed (its number, from 1).
fn dialog_answer(output: &str, peers: &[PeerInfo]) -> Option<usize> {
    let n: usize = output.lines().next()?.trim().parse().ok()?;
    (1..=peers.len()).contains(&n).then(|| n - 1)
}

/// `name` in `PATH`, if it is there and executable.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A notification for a user who started this from a file manager; quiet
/// when there is no desktop session.
async fn tell_desktop(summary: &str, body: &str, category: &'static str) {
    let Ok(notifier) = Notifier::connect().await else {
        return;
    };
    let note = Note::new(summary.to_owned(), body.to_owned(), category);
    if let Err(e) = notifier.show(&note, 0).await {
        tracing::warn!("cannot show a notification: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::PeerSource;
    use crate::identity::DeviceId;

    fn peer(name: &str, trusted: bool) -> PeerInfo {
        PeerInfo {
            name: name.into(),
            id: DeviceId::from_cert_der(name.as_bytes()),
            addresses: Vec::new(),
            tcp_port: None,
            trusted,
            source: PeerSource::Mdns,
            last_seen_s: 0,
            last_seen: 0,
            looks_like: None,
            protocol: crate::peers::Protocol::Lanshare,
            localsend: None,
        }
    }

    #[test]
    fn typed_choices() {
        assert_eq!(parse_choice("2\n", 3), Ok(Some(1)));
        assert_eq!(parse_choice(" 1 ", 1), Ok(Some(0)));
        assert_eq!(parse_choice("\n", 3), Ok(None));
        assert!(parse_choice("0", 3).is_err());
        assert!(parse_choice("4", 3).is_err());
        assert!(parse_choice("desktop", 3).is_err());
    }

    #[test]
    fn dialogs_never_take_a_device_name_for_an_option() {
        let peers = [peer("--help", false), peer("desk", true)];
        let (args, rows) = dialog("zenity", "Send 2 files to:", &peers);
        assert!(args.iter().all(|a| a.starts_with("--")));
        assert!(
            !args
                .iter()
                .any(|a| a.contains("help") && !a.starts_with("--text"))
        );
        let id = peers[1].id.short();
        assert_eq!(
            rows,
            format!(
                "1\n--help ({}, not trusted)\n2\ndesk ({id}, trusted)\n",
                peers[0].id.short()
            )
        );
        let (args, rows) = dialog("kdialog", "Send 2 files to:", &peers);
        assert!(rows.is_empty());
        assert_eq!(
            &args[4..6],
            [
                "1",
                &format!("1. --help ({}, not trusted)", peers[0].id.short())
            ]
        );
        assert_eq!(dialog_answer("2\n", &peers), Some(1));
        assert_eq!(dialog_answer("1\n", &peers), Some(0));
        assert_eq!(dialog_answer("3\n", &peers), None);
        assert_eq!(dialog_answer("", &peers), None);
    }

    #[test]
    fn kde_asks_kdialog_first() {
        assert_eq!(dialog_order(Some("KDE")), ["kdialog", "zenity"]);
        assert_eq!(dialog_order(Some("ubuntu:GNOME")), ["zenity", "kdialog"]);
        assert_eq!(dialog_order(None), ["zenity", "kdialog"]);
    }
}
