//! `share queue` and `share queue cancel`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::output::{json, local, outln, parse};
use crate::control::{Ack, Request, client};
use crate::queue::QueuedSend;

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
    outln!("ID        STATE    PEER                  QUEUED            FILES  WHAT");
    for q in list {
        outln!(
            "{:8}  {:7}  {:20}  {:16}  {:5}  {}{}",
            q.id,
            q.state.as_str(),
            q.peer,
            local(q.queued),
            q.files,
            q.names.join(", "),
            q.last_error
                .map(|r| format!(" (last try: {r})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
