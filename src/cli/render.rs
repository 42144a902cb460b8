//! Human-readable and JSON output of CLI results.
//!
//! JSON goes to stdout as exactly one document; human output is aligned
//! text. Progress (bars, "waiting for ... to accept") goes to stderr and
//! only when stderr is a terminal, so pipes and scripts stay clean.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;

use crate::control::client::ClientError;
use crate::control::{
    Ack, IdInfo, PeerInfo, ResultStatus, SendEvent, SendResult, StatusInfo, TransferList,
};
use crate::transfer::receive::human_bytes;

/// `println!` that returns an error instead of panicking when stdout is
/// closed (`share peers | head -1`); `main` treats a broken pipe as success.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

fn parse<T: DeserializeOwned>(data: &serde_json::Value) -> Result<T> {
    Ok(serde_json::from_value(data.clone())?)
}

fn json(data: &serde_json::Value) -> Result<()> {
    outln!("{}", serde_json::to_string(data)?);
    Ok(())
}

/// `share id`.
pub(super) fn id(data: &serde_json::Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(data);
    }
    let info: IdInfo = parse(data)?;
    outln!("{}\n{}", info.name, info.id);
    Ok(())
}

/// `share status`.
pub(super) fn status(data: &serde_json::Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(data);
    }
    let s: StatusInfo = parse(data)?;
    let transports: Vec<String> = s.transports.iter().map(ToString::to_string).collect();
    outln!("name:         {}", s.name);
    outln!("device ID:    {}", s.id);
    outln!("port:         {} ({})", s.port, transports.join(" + "));
    outln!(
        "discovery:    {}",
        if s.mdns {
            "mDNS"
        } else {
            "off (HOST:PORT only)"
        }
    );
    outln!("accept:       {}", s.accept.as_str());
    outln!("peers:        {}", s.peers);
    outln!("transfers:    {} active", s.active_transfers);
    let waiting: Vec<String> = [
        (s.offers_to_answer, "offer", "to accept (share transfers)"),
        (
            s.pairings_to_confirm,
            "pairing",
            "to confirm (share pair --list)",
        ),
        (s.unread_texts, "unread text", "(share inbox)"),
    ]
    .into_iter()
    .filter(|(n, ..)| *n > 0)
    .map(|(n, what, how)| format!("{n} {what}{} {how}", if n == 1 { "" } else { "s" }))
    .collect();
    if !waiting.is_empty() {
        outln!("waiting:      {}", waiting.join(", "));
    }
    outln!("downloads:    {}", s.download_dir.display());
    outln!("state:        {}", s.state_dir.display());
    outln!("uptime:       {} s", s.uptime_s);
    outln!("version:      {} (protocol {})", s.version, s.protocol);
    for i in &s.interfaces {
        if i.used {
            outln!(
                "interface:    {} ({}): discovery uses it",
                i.name,
                i.addresses.join(", ")
            );
        } else {
            outln!(
                "interface:    {}: ignored, {}",
                i.name,
                i.reason.as_deref().unwrap_or("not used")
            );
        }
    }
    for w in &s.warnings {
        outln!("warning:      {w}");
    }
    Ok(())
}

/// `share peers`.
pub(super) fn peers(data: &serde_json::Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(data);
    }
    let peers: Vec<PeerInfo> = parse(data)?;
    if peers.is_empty() {
        outln!("no peers found (is another daemon running on the LAN? see `share status`)");
        return Ok(());
    }
    let width = peers
        .iter()
        .map(|p| p.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    outln!(
        "{:width$}  {:9}  {:7}  {:10}  {:9}  ADDRESSES",
        "NAME",
        "ID",
        "TRUSTED",
        "FOUND BY",
        "SEEN"
    );
    for p in peers {
        outln!(
            "{:width$}  {:9}  {:7}  {:10}  {:9}  {}",
            p.name,
            p.id.short(),
            if p.trusted { "yes" } else { "no" },
            p.source.as_str(),
            ago(p.last_seen_s),
            p.addresses.join(" ")
        );
    }
    Ok(())
}

/// "12 s ago", "3 min ago", "2 h ago", "4 d ago".
fn ago(seconds: u64) -> String {
    match seconds {
        0..=1 => "now".into(),
        2..=119 => format!("{seconds} s ago"),
        120..=7199 => format!("{} min ago", seconds / 60),
        7200..=172_799 => format!("{} h ago", seconds / 3600),
        _ => format!("{} d ago", seconds / 86_400),
    }
}

/// `share transfers`.
pub(super) fn transfers(data: &serde_json::Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(data);
    }
    let list: TransferList = parse(data)?;
    if list.is_empty() {
        outln!("no transfers");
        return Ok(());
    }
    outln!("ID        DIR  STATE      PEER            FILES  PROGRESS            WHAT");
    for t in list {
        let progress = format!("{} / {}", human_bytes(t.bytes_done), human_bytes(t.bytes));
        outln!(
            "{:8}  {:3}  {:9}  {:14}  {:5}  {:18}  {}{}",
            t.id,
            t.direction.as_str(),
            t.state.as_str(),
            t.peer,
            t.files,
            progress,
            t.names.join(", "),
            t.reason.map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    Ok(())
}

/// Commands that answer with a message.
pub(super) fn ack(data: &serde_json::Value) -> Result<()> {
    let ack: Ack = parse(data)?;
    outln!("{}", ack.message);
    Ok(())
}

/// `share send` result.
pub(super) fn send_result(data: &serde_json::Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(data);
    }
    let r: SendResult = parse(data)?;
    let rate = if r.seconds > 0.0 {
        format!(", {}/s", human_bytes((r.bytes as f64 / r.seconds) as u64))
    } else {
        String::new()
    };
    outln!(
        "sent {} file{} ({}) to {} over {} in {:.2} s{rate}",
        r.files,
        if r.files == 1 { "" } else { "s" },
        human_bytes(r.bytes),
        r.peer,
        r.transport,
        r.seconds
    );
    Ok(())
}

/// `share send --json` when the send failed: one document with `status`
/// `failed`, the peer as given, the message and its kind.
pub(super) fn send_failure(peer: &str, error: &ClientError) -> Result<()> {
    let document = serde_json::json!({
        "status": ResultStatus::Failed,
        "peer": peer,
        "error": error.to_string(),
        "kind": error.kind(),
    });
    json(&document)
}

/// Progress display for `share send` on a terminal.
pub(super) struct SendProgress {
    bar: Option<ProgressBar>,
}

impl SendProgress {
    /// Shows progress only if `enabled` and stderr is a terminal.
    pub(super) fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_message("preparing…");
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Self { bar }
    }

    /// Updates the display for one event.
    pub(super) fn event(&mut self, event: &SendEvent) {
        let Some(bar) = &self.bar else {
            match event {
                SendEvent::Prepared { skipped, .. } => {
                    for s in skipped {
                        eprintln!("warning: skipped {s}");
                    }
                }
                SendEvent::Retrying { in_s, reason, .. } => {
                    eprintln!("interrupted: {reason}; resuming in {in_s} s");
                }
                _ => {}
            }
            return;
        };
        match event {
            SendEvent::Prepared { bytes, skipped, .. } => {
                for s in skipped {
                    bar.println(format!("warning: skipped {s}"));
                }
                bar.set_length(*bytes);
            }
            SendEvent::Connected { peer, transport } => {
                bar.set_message(format!("connected to {peer} over {transport}"));
            }
            SendEvent::Waiting { peer, .. } => {
                bar.set_message(format!("waiting for {peer} to accept…"));
            }
            SendEvent::Retrying { in_s, reason, .. } => {
                bar.println(format!("interrupted: {reason}; resuming in {in_s} s"));
            }
            SendEvent::Progress { bytes_done, bytes } => {
                if bar.length() != Some(*bytes) || bar.position() == 0 && *bytes_done > 0 {
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.set_length(*bytes);
                }
                bar.set_position(*bytes_done);
            }
        }
    }

    /// Removes the bar.
    pub(super) fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
