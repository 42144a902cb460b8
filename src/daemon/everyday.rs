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
use crate::control::records::InboxText;
use crate::control::server::Caller;
use crate::control::{CommandError, ErrorKind, Request, Response, SendEvent};

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
    ) -> Result<Response, CommandError> {
        Ok(match request {
            Request::Pair { peer, transport } => {
                Response::Pairing(self.pair(&peer, transport).await?)
            }
            Request::Pairings => Response::Pairings(self.pairings.list()),
            Request::PairDecide { id, accept, wait } => {
                Response::Pairing(self.pair_decide(&id, accept, wait).await?)
            }
            Request::History { limit } => Response::History(
                self.history
                    .read(limit)
                    .map_err(|e| CommandError::io(e.to_string()))?,
            ),
            Request::QueueSend {
                peer,
                entries,
                skipped,
                transport,
                roots,
            } => Response::Queued(self.queue_send(
                NewQueued {
                    peer,
                    entries,
                    skipped,
                    transport,
                    roots,
                    uid: caller.uid,
                },
                files,
            )?),
            Request::Queue => Response::Queue(self.queue_list()),
            Request::QueueCancel { id } => Response::Ack(self.queue_cancel(&id)?),
            Request::SendText {
                peer,
                text,
                transport,
            } => Response::TextSent(
                self.send_text(&peer, text, transport, events, cancel)
                    .await?,
            ),
            Request::Inbox => Response::Inbox(
                self.inbox
                    .list()
                    .map_err(|e| CommandError::io(e.to_string()))?,
            ),
            Request::ReceiveText { wait_s } => {
                Response::Text(self.next_text(wait_s, cancel).await?)
            }
            other => {
                return Err(CommandError::internal(format!(
                    "{other:?} is not an everyday request"
                )));
            }
        })
    }

    /// `share receive --text [--wait SECS]`.
    async fn next_text(
        &self,
        wait_s: Option<u64>,
        cancel: CancellationToken,
    ) -> Result<InboxText, CommandError> {
        let wait = Duration::from_secs(wait_s.unwrap_or(0)).min(MAX_TEXT_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut arrived = self.inbox.subscribe();
        loop {
            arrived.borrow_and_update();
            if let Some(text) = self
                .inbox
                .take_unread()
                .map_err(|e| CommandError::io(e.to_string()))?
            {
                return Ok(text);
            }
            if wait.is_zero() {
                return Err(CommandError::not_found(
                    "no unread text; `share inbox` lists earlier ones, `--wait SECS` waits for the next",
                ));
            }
            tokio::select! {
                changed = tokio::time::timeout_at(deadline, arrived.changed()) => {
                    if changed.is_err() {
                        return Err(CommandError::new(
                            ErrorKind::Timeout,
                            format!("no text arrived within {} s", wait.as_secs()),
                        ));
                    }
                }
                () = cancel.cancelled() => {
                    return Err(CommandError::new(ErrorKind::Cancelled, "cancelled"));
                }
            }
        }
    }
}
