//! Control commands of the everyday features: pairing, history, queued
//! sends and texts. [`super::commands`] hands these requests here, so the
//! features live in their own modules ([`super::pairing`],
//! [`super::history`], [`super::queue`], [`super::text`],
//! [`super::inbox`]) and the shared dispatcher stays small.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::queue::NewQueued;
use crate::control::server::Caller;
use crate::control::{Request, SendEvent};

/// Longest `share receive --text --wait`.
pub(super) const MAX_TEXT_WAIT: Duration = Duration::from_secs(24 * 3600);

impl Shared {
    /// Runs one of the requests listed in [`super::commands`] for this module.
    pub(super) async fn everyday(
        &self,
        request: Request,
        caller: Caller,
        files: Vec<std::fs::File>,
        events: mpsc::UnboundedSender<SendEvent>,
        cancel: CancellationToken,
    ) -> Result<serde_json::Value, String> {
        match request {
            Request::Pair { peer, transport } => self.pair(&peer, transport).await,
            Request::Pairings => self.pairing_list(),
            Request::PairDecide { id, accept, wait } => self.pair_decide(&id, accept, wait).await,
            Request::History { limit } => {
                let entries = self.history.read(limit).map_err(|e| e.to_string())?;
                to_json(&entries)
            }
            Request::QueueSend {
                peer,
                entries,
                skipped,
                transport,
                roots,
            } => self.queue_send(
                NewQueued {
                    peer,
                    entries,
                    skipped,
                    transport,
                    roots,
                    uid: caller.uid,
                },
                files,
            ),
            Request::Queue => self.queue_list(),
            Request::QueueCancel { id } => self.queue_cancel(&id),
            Request::SendText {
                peer,
                text,
                transport,
            } => self.send_text(&peer, text, transport, events, cancel).await,
            Request::Inbox => to_json(&self.inbox.list().map_err(|e| e.to_string())?),
            Request::ReceiveText { wait_s } => self.next_text(wait_s, cancel).await,
            other => Err(format!(
                "internal error: {other:?} is not an everyday request"
            )),
        }
    }

    /// `share receive --text [--wait SECS]`.
    async fn next_text(
        &self,
        wait_s: Option<u64>,
        cancel: CancellationToken,
    ) -> Result<serde_json::Value, String> {
        let wait = Duration::from_secs(wait_s.unwrap_or(0)).min(MAX_TEXT_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut arrived = self.inbox.subscribe();
        loop {
            arrived.borrow_and_update();
            if let Some(text) = self.inbox.take_unread().map_err(|e| e.to_string())? {
                return to_json(&text);
            }
            if wait.is_zero() {
                return Err(
                    "no unread text; `share inbox` lists earlier ones, `--wait SECS` waits for the next"
                        .into(),
                );
            }
            tokio::select! {
                changed = tokio::time::timeout_at(deadline, arrived.changed()) => {
                    if changed.is_err() {
                        return Err(format!("no text arrived within {} s", wait.as_secs()));
                    }
                }
                () = cancel.cancelled() => return Err("cancelled".into()),
            }
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| format!("internal error: {e}"))
}
