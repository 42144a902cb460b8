//! Output of the read-only commands and of those that answer with a
//! message: `share id`, `status`, `peers`, `transfers`, `accept`, ...
//!
//! JSON goes to stdout as exactly one document; human output is aligned
//! text.

use std::io::Write;

use anyhow::Result;

use super::output::{ago, json, outln, parse};
use crate::control::{Ack, IdInfo, StatusInfo, TransferList};
use crate::peers::{PeerInfo, PeerLabel};
use crate::protocol::HumanBytes;
use crate::registry::TransferInfo;

/// `share id`.
pub(super) fn id(data: serde_json::Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(&data);
    }
    let info: IdInfo = parse(data)?;
    outln!("{}", info.name);
    outln!("{}", info.id);
    Ok(())
}

/// `share status`.
pub(super) fn status(data: serde_json::Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(&data);
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
    let ls = &s.localsend;
    match (&ls.fingerprint, ls.port) {
        (Some(fingerprint), Some(port)) => {
            let discovery = match ls.multicast_port {
                Some(udp) => format!("discovery on UDP {udp}"),
                None => "no discovery".to_owned(),
            };
            let pin = if ls.pin { ", PIN required" } else { "" };
            outln!(
                "localsend:    on, HTTPS on TCP {port}, {discovery}{pin}, {} device{}",
                ls.devices,
                if ls.devices == 1 { "" } else { "s" }
            );
            outln!("fingerprint:  {fingerprint}");
        }
        _ => outln!("localsend:    off (share daemon --localsend)"),
    }
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
    if s.partial_transfers > 0 {
        outln!(
            "partial data: {} kept by {} interrupted transfer{} (share transfers; share clean drops it)",
            HumanBytes(s.partial_bytes),
            s.partial_transfers,
            if s.partial_transfers == 1 { "" } else { "s" }
        );
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
pub(super) fn peers(data: serde_json::Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(&data);
    }
    let peers: Vec<PeerInfo> = parse(data)?;
    for line in peer_table(&peers) {
        outln!("{line}");
    }
    Ok(())
}

/// The `share peers` table (or the line saying there is nobody).
pub(super) fn peer_table(peers: &[PeerInfo]) -> Vec<String> {
    if peers.is_empty() {
        return vec![
            "no peers found (is another daemon running on the LAN? see `share status`)".into(),
        ];
    }
    let labels: Vec<String> = peers
        .iter()
        .map(|p| {
            PeerLabel {
                name: &p.name,
                id: None,
                looks_like: p.looks_like.as_ref(),
            }
            .to_string()
        })
        .collect();
    let width = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut lines = vec![format!(
        "{:width$}  {:9}  {:9}  {:9}  {:10}  {:10}  ADDRESSES",
        "NAME", "ID", "PROTOCOL", "TRUSTED", "FOUND BY", "LAST HEARD"
    )];
    for (p, label) in peers.iter().zip(labels) {
        // A LocalSend device is shown as LocalSend shows it (its
        // fingerprint in hex, its type and model); its trust is trust on
        // first use, with no pairing code.
        let (id, trusted, about) = match &p.localsend {
            Some(ls) => (
                ls.fingerprint.chars().take(8).collect(),
                if p.trusted { "tofu" } else { "no" },
                format!(
                    "  ({}{})",
                    ls.device_type.as_str(),
                    ls.model
                        .as_deref()
                        .map(|m| format!(", {m}"))
                        .unwrap_or_default()
                ),
            ),
            None => (
                p.id.short(),
                if p.trusted { "yes" } else { "no" },
                String::new(),
            ),
        };
        lines.push(format!(
            "{:width$}  {:9}  {:9}  {:9}  {:10}  {:10}  {}{about}",
            label,
            id,
            p.protocol.as_str(),
            trusted,
            p.source.as_str(),
            ago(p.last_seen_s),
            p.addresses.join(" ")
        ));
    }
    lines
}

/// `share transfers`.
pub(super) fn transfers(data: serde_json::Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(&data);
    }
    let list: TransferList = parse(data)?;
    for line in transfer_table(&list) {
        outln!("{line}");
    }
    Ok(())
}

/// The `share transfers` table (or the line saying there is none), and
/// what partial data is kept.
pub(super) fn transfer_table(list: &[TransferInfo]) -> Vec<String> {
    if list.is_empty() {
        return vec!["no transfers".into()];
    }
    let rows: Vec<Vec<String>> = list.iter().map(transfer_cells).collect();
    let mut lines = super::output::table(&TRANSFER_HEADER, &rows, &[4]);
    let partial: Vec<u64> = list.iter().filter_map(|t| t.partial_bytes).collect();
    if !partial.is_empty() {
        lines.push(format!(
            "{} of partial data kept for a resume (when the sender sends the same files again); `share cancel ID` drops one transfer's, `share clean` all",
            HumanBytes(partial.iter().sum())
        ));
    }
    lines
}

/// One row of [`transfer_table`] on its own (columns as wide as its cells).
pub(super) fn transfer_row(t: &TransferInfo) -> String {
    let mut lines = super::output::table(&TRANSFER_HEADER, &[transfer_cells(t)], &[4]);
    lines.pop().unwrap_or_default()
}

/// The columns of `share transfers`.
const TRANSFER_HEADER: [&str; 7] = ["ID", "DIR", "STATE", "PEER", "FILES", "PROGRESS", "WHAT"];

/// The cells of one transfer's row.
fn transfer_cells(t: &TransferInfo) -> Vec<String> {
    let state = match t.expires_in_s {
        Some(left) => format!("{} ({left} s left)", t.state.as_str()),
        None => t.state.as_str().to_owned(),
    };
    vec![
        t.id.clone(),
        t.direction.as_str().to_owned(),
        state,
        PeerLabel::new(&t.peer, &t.peer_id, t.looks_like.as_ref()).to_string(),
        t.files.to_string(),
        format!("{} / {}", HumanBytes(t.bytes_done), HumanBytes(t.bytes)),
        format!(
            "{}{}{}",
            t.names.join(", "),
            t.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            t.partial_bytes
                .map(|b| format!("; {} of partial data kept", HumanBytes(b)))
                .unwrap_or_default()
        ),
    ]
}

/// Commands that answer with a message.
pub(super) fn ack(data: serde_json::Value) -> Result<()> {
    let ack: Ack = parse(data)?;
    outln!("{}", ack.message);
    Ok(())
}
