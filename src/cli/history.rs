//! `share history`: finished transfers, newest last; without a daemon,
//! read from the state directory.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::output::{json, local, outln, parse};
use crate::control::Request;
use crate::control::client::{self, ClientError};
use crate::history::{History, HistoryEntry};
use crate::peers::PeerLabel;
use crate::protocol::HumanBytes;
use crate::registry::TransferKind;

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

/// `share history`.
pub(super) async fn history(sockets: &[PathBuf], args: HistoryArgs) -> Result<()> {
    let limit = (args.limit > 0).then_some(args.limit);
    let data = match client::call(sockets, Request::History { limit }, |_| {}).await {
        Ok(data) => data,
        // The history is a file in the state directory: read it there.
        Err(ClientError::NoDaemon { .. }) => {
            let state_dir = super::offline_config()?.state_dir;
            serde_json::to_value(History::open(&state_dir).read(limit)?)?
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        return json(&data);
    }
    let entries: Vec<HistoryEntry> = parse(data)?;
    if entries.is_empty() {
        outln!("no transfers recorded yet");
        return Ok(());
    }
    outln!(
        "ENDED             DIR  OUTCOME    PEER                      SIZE        TIME      VIA   WHAT"
    );
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
            "{:16}  {:3}  {:9}  {:24}  {:10}  {:>7.1} s  {:4}  {}{}",
            local(e.time),
            e.direction.as_str(),
            e.outcome.as_str(),
            PeerLabel {
                name: &e.peer,
                id: e.peer_id.as_ref(),
                looks_like: e.looks_like.as_ref(),
            },
            HumanBytes(e.bytes),
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
