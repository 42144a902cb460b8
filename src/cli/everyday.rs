//! The everyday commands: `share pair`, `share history`, `share queue`,
//! `share inbox`, `share receive --text`, and the `--text` / `--queue`
//! forms of `share send`.
//!
//! Like the rest of the CLI these are thin: they ask the daemon and render
//! its answer, as aligned text or (with `--json`) one JSON document on
//! stdout. The one interactive step is `share pair PEER` on a terminal,
//! which shows the code and asks whether the other device shows the same.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;

use super::{SendArgs, TransportArg, render};
use crate::control::client;
use crate::control::records::{
    HistoryEntry, InboxText, PairingInfo, PairingState, QueuedSend, TextResult,
};
use crate::control::{Ack, Request};
use crate::protocol::MAX_TEXT_LEN;
use crate::transfer::receive::human_bytes;
use crate::transfer::registry::TransferKind;
use crate::transfer::source::Layout;

/// `writeln!` to stdout that returns an error (a broken pipe) instead of
/// panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

/// `share pair`.
#[derive(Debug, Args)]
pub struct PairArgs {
    /// Device to pair with: name, device-ID prefix, or HOST:PORT. Without
    /// it, lists pairing requests.
    #[arg(conflicts_with_all = ["list", "confirm", "reject"])]
    pub peer: Option<String>,
    /// List pairing requests and their codes.
    #[arg(long)]
    pub list: bool,
    /// Confirm pairing ID: this device shows the same code as the other.
    #[arg(long, value_name = "ID", conflicts_with_all = ["list", "reject"])]
    pub confirm: Option<String>,
    /// Decline pairing ID (the codes differ, or you did not ask for it).
    #[arg(long, value_name = "ID", conflicts_with = "list")]
    pub reject: Option<String>,
    /// With --confirm: return only when the other device has answered too.
    #[arg(long, requires = "confirm")]
    pub wait: bool,
    /// Transport for `share pair PEER`: race QUIC and TCP (auto), or force one.
    #[arg(long, value_enum, default_value_t = TransportArg::Auto)]
    pub transport: TransportArg,
    /// Print one JSON document on stdout (never asks interactively).
    #[arg(long)]
    pub json: bool,
}

/// `share history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Show the newest N transfers (0: all that are kept).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `share queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// What to do; without an action, list the queued sends.
    #[command(subcommand)]
    pub action: Option<QueueAction>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `share queue` actions.
#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// Remove a queued send.
    Cancel {
        /// Queue ID (or a unique prefix) from `share queue`.
        id: String,
    },
}

/// `share receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Print the newest unread text to stdout, exactly as sent, and mark it read.
    #[arg(long, required = true)]
    pub text: bool,
    /// If no text is unread, wait up to SECS for the next one.
    #[arg(long, value_name = "SECS")]
    pub wait: Option<u64>,
    /// Print one JSON document (sender, time, text) instead of the bare text.
    #[arg(long)]
    pub json: bool,
}

fn parse<T: DeserializeOwned>(data: serde_json::Value) -> Result<T> {
    Ok(serde_json::from_value(data)?)
}

fn json(data: &serde_json::Value) -> Result<()> {
    outln!("{}", serde_json::to_string(data)?);
    Ok(())
}

/// `123456` as `123 456`, easier to compare aloud.
fn spaced(code: &str) -> String {
    match code.len() {
        6 => format!("{} {}", &code[..3], &code[3..]),
        _ => code.to_owned(),
    }
}

/// `share pair ...`.
pub(super) async fn pair(sockets: &[PathBuf], args: PairArgs) -> Result<()> {
    let call = |request| client::call(sockets, request, |_| {});
    if let Some(id) = args.confirm.clone().or(args.reject.clone()) {
        let accept = args.confirm.is_some();
        let data = call(Request::PairDecide {
            id,
            accept,
            wait: args.wait,
        })
        .await?;
        if args.json {
            return json(&data);
        }
        return report_decision(&parse(data)?, accept);
    }
    let Some(peer) = args.peer else {
        let data = call(Request::Pairings).await?;
        return if args.json {
            json(&data)
        } else {
            list_pairings(&parse::<Vec<PairingInfo>>(data)?)
        };
    };
    let data = call(Request::Pair {
        peer,
        transport: args.transport.into(),
    })
    .await?;
    if args.json {
        return json(&data);
    }
    let info: PairingInfo = parse(data)?;
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    outln!(
        "pairing with {} ({}): code {}",
        info.peer,
        info.peer_id.short(),
        spaced(&info.code)
    );
    if !interactive {
        outln!(
            "compare it with the code on {}; if they match, run `share pair --confirm {}` here and confirm on {} too (within {} s)",
            info.peer,
            info.id,
            info.peer,
            info.expires_in_s
        );
        return Ok(());
    }
    eprintln!(
        "{} lists this request under `share pair --list`; confirm it there too.",
        info.peer
    );
    eprint!(
        "Does {} show the code {}? [y/N] ",
        info.peer,
        spaced(&info.code)
    );
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .context("internal error: the prompt stopped")?
    .context("cannot read the answer")?;
    let accept = matches!(answer.trim().to_lowercase().as_str(), "y" | "yes");
    if accept {
        eprintln!("waiting for {} to confirm…", info.peer);
    }
    let data = call(Request::PairDecide {
        id: info.id,
        accept,
        wait: accept,
    })
    .await?;
    report_decision(&parse(data)?, accept)
}

/// Prints where a pairing stands after this user's answer; fails if it
/// ended without pairing.
fn report_decision(info: &PairingInfo, accepted: bool) -> Result<()> {
    match info.state {
        PairingState::Paired => {
            outln!(
                "paired with {} ({}): both devices now trust each other",
                info.peer,
                info.peer_id
            );
            Ok(())
        }
        PairingState::Waiting if accepted => {
            outln!(
                "confirmed; waiting for {} to confirm code {} ({} s left; `share pair --list` shows the outcome)",
                info.peer,
                spaced(&info.code),
                info.expires_in_s
            );
            Ok(())
        }
        PairingState::Waiting | PairingState::Rejected if !accepted => {
            outln!("declined pairing with {}", info.peer);
            Ok(())
        }
        state => bail!(
            "pairing with {} {}: {}",
            info.peer,
            state.as_str(),
            info.reason.as_deref().unwrap_or("no reason given")
        ),
    }
}

fn list_pairings(list: &[PairingInfo]) -> Result<()> {
    if list.is_empty() {
        outln!("no pairing requests");
        return Ok(());
    }
    outln!("ID        DIR  STATE     PEER            CODE     YOU  PEER  EXPIRES");
    let answer = |a: Option<bool>| match a {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    for p in list {
        let expires = if p.state.finished() {
            p.reason.clone().unwrap_or_default()
        } else {
            format!("{} s", p.expires_in_s)
        };
        outln!(
            "{:8}  {:3}  {:8}  {:14}  {:7}  {:3}  {:4}  {}",
            p.id,
            p.direction.as_str(),
            p.state.as_str(),
            p.peer,
            spaced(&p.code),
            answer(p.you_confirmed),
            answer(p.peer_confirmed),
            expires
        );
    }
    Ok(())
}

/// `share history`.
pub(super) async fn history(sockets: &[PathBuf], args: HistoryArgs) -> Result<()> {
    let limit = (args.limit > 0).then_some(args.limit);
    let data = client::call(sockets, Request::History { limit }, |_| {}).await?;
    if args.json {
        return json(&data);
    }
    let entries: Vec<HistoryEntry> = parse(data)?;
    if entries.is_empty() {
        outln!("no transfers recorded yet");
        return Ok(());
    }
    outln!("ENDED (UTC)       DIR  OUTCOME    PEER            SIZE        TIME      VIA   WHAT");
    for e in entries {
        let what = match e.kind {
            TransferKind::Text => e.names.join(", "),
            TransferKind::Files => format!(
                "{} ({} file{})",
                e.names.join(", "),
                e.files,
                if e.files == 1 { "" } else { "s" }
            ),
        };
        outln!(
            "{:16}  {:3}  {:9}  {:14}  {:10}  {:>7.1} s  {:4}  {}{}",
            utc(e.time),
            e.direction.as_str(),
            e.outcome.as_str(),
            e.peer,
            human_bytes(e.bytes),
            e.duration_s,
            e.transport
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
            what,
            e.reason.map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    Ok(())
}

/// `share queue [cancel ID]`.
pub(super) async fn queue(sockets: &[PathBuf], args: QueueArgs) -> Result<()> {
    if let Some(QueueAction::Cancel { id }) = args.action {
        let data = client::call(sockets, Request::QueueCancel { id }, |_| {}).await?;
        let ack: Ack = parse(data)?;
        outln!("{}", ack.message);
        return Ok(());
    }
    let data = client::call(sockets, Request::Queue, |_| {}).await?;
    if args.json {
        return json(&data);
    }
    let list: Vec<QueuedSend> = parse(data)?;
    if list.is_empty() {
        outln!("no queued sends");
        return Ok(());
    }
    outln!("ID        STATE    PEER                  QUEUED (UTC)      FILES  WHAT");
    for q in list {
        outln!(
            "{:8}  {:7}  {:20}  {:16}  {:5}  {}{}",
            q.id,
            q.state.as_str(),
            q.peer,
            utc(q.queued),
            q.files,
            q.names.join(", "),
            q.last_error
                .map(|r| format!(" (last try: {r})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `share inbox`.
pub(super) async fn inbox(sockets: &[PathBuf], as_json: bool) -> Result<()> {
    let data = client::call(sockets, Request::Inbox, |_| {}).await?;
    if as_json {
        return json(&data);
    }
    let texts: Vec<InboxText> = parse(data)?;
    if texts.is_empty() {
        outln!("no texts received");
        return Ok(());
    }
    outln!("ID        RECEIVED (UTC)    NEW  FROM            TEXT");
    for t in texts {
        let first = t.text.lines().next().unwrap_or("");
        let mut shown: String = first.chars().filter(|c| !c.is_control()).take(60).collect();
        if first.chars().count() > 60 || t.text.lines().nth(1).is_some() {
            shown.push('…');
        }
        outln!(
            "{:8}  {:16}  {:3}  {:14}  {}",
            t.id,
            utc(t.received),
            if t.read { "" } else { "*" },
            t.peer,
            shown
        );
    }
    Ok(())
}

/// `share receive --text [--wait SECS]`.
pub(super) async fn receive(sockets: &[PathBuf], args: ReceiveArgs) -> Result<()> {
    let data = client::call(sockets, Request::ReceiveText { wait_s: args.wait }, |_| {}).await?;
    if args.json {
        return json(&data);
    }
    let text: InboxText = parse(data)?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.text.as_bytes())?;
    // Exact bytes for pipes; a final newline for a terminal prompt.
    if out.is_terminal() && !text.text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Reads the text of `share send --text`: the argument, or stdin for `-`,
/// refusing more than [`MAX_TEXT_LEN`] bytes without reading further.
fn text_argument(text: &str) -> Result<String> {
    let text = if text == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .take(MAX_TEXT_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .context("cannot read the text from stdin")?;
        if bytes.len() > MAX_TEXT_LEN {
            bail!(
                "the text on stdin is more than {MAX_TEXT_LEN} bytes (64 KiB), the limit for texts; send it as a file instead"
            );
        }
        String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("stdin is not UTF-8 text; send it as a file instead"))?
    } else {
        text.to_owned()
    };
    if let Err(reason) = crate::control::records::check_text(&text) {
        bail!("{reason}");
    }
    Ok(text)
}

/// `share send PEER --text TEXT`.
pub(super) async fn send_text(sockets: &[PathBuf], args: &SendArgs, text: &str) -> Result<()> {
    let text = text_argument(text)?;
    let request = Request::SendText {
        peer: args.peer.clone(),
        text,
        transport: args.transport.into(),
    };
    let mut progress = render::SendProgress::new(!args.json);
    let result = client::call(sockets, request, |event| progress.event(&event)).await;
    progress.finish();
    match result {
        Ok(data) if args.json => json(&data),
        Ok(data) => {
            let r: TextResult = parse(data)?;
            outln!(
                "sent text ({}) to {} over {} in {:.2} s",
                human_bytes(r.bytes),
                r.peer,
                r.transport,
                r.seconds
            );
            Ok(())
        }
        Err(e) => {
            if args.json {
                render::send_failure(&args.peer, &e)?;
            }
            Err(e.into())
        }
    }
}

/// `share send --queue PEER PATH...`: hand the open files and the paths to
/// the daemon, which keeps them until the peer is reachable.
pub(super) async fn queue_send(
    sockets: &[PathBuf],
    args: &SendArgs,
    layout: &Layout,
    files: &[std::fs::File],
) -> Result<()> {
    let roots = args
        .paths
        .iter()
        .map(|p| std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let (entries, skipped) = super::request_layout(layout);
    let request = Request::QueueSend {
        peer: args.peer.clone(),
        entries,
        skipped,
        transport: args.transport.into(),
        roots,
    };
    for s in &layout.skipped {
        eprintln!("warning: skipped {s}");
    }
    let fds = crate::control::fds::borrow_all(files);
    let data = client::call_with_files(sockets, request, &fds, |_| {}).await?;
    if args.json {
        return json(&data);
    }
    let q: QueuedSend = parse(data)?;
    outln!(
        "queued send {} to {}: {} ({} file{}); it goes out when {} is reachable (`share queue` lists it)",
        q.id,
        q.peer,
        q.names.join(", "),
        q.files,
        if q.files == 1 { "" } else { "s" },
        q.peer
    );
    Ok(())
}

/// `YYYY-MM-DD HH:MM` (UTC) for seconds since the Unix epoch.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_795_664_161), "2026-11-26 03:36");
    }

    #[test]
    fn codes_are_spaced() {
        assert_eq!(spaced("012345"), "012 345");
        assert_eq!(spaced("12"), "12");
    }
}
