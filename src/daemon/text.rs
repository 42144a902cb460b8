//! Short texts between devices: `share send PEER --text ...` and its
//! receiving side.
//!
//! A text is a `Text` message sent instead of an `Offer` after `Hello`,
//! answered with `Done` (stored in the inbox) or `Reject`. It is subject to
//! the same consent policy as files, and goes through the same transfer
//! registry, so `share transfers`, `share accept` / `share reject` and the
//! history treat it like any other transfer (kind `text`). The size limit
//! ([`crate::protocol::MAX_TEXT_LEN`]) is enforced by the sending CLI, by
//! the sending daemon, and by the receiver's codec, which refuses an
//! over-long `Text` frame before reading it.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::control::records::{TextResult, check_text};
use crate::control::{CommandError, ResultStatus, SendEvent};
use crate::protocol::{ErrorCode, Message};
use crate::transfer::TransferError;
use crate::transfer::framed::Framed;
use crate::transfer::handshake::kind;
use crate::transfer::receive::{Subject, consent, refused};
use crate::transfer::registry::{Direction, Handle, NewTransfer, State, TransferKind};
use crate::transport::dial::Preference;

/// Characters of a text shown in `share transfers` and the history.
const PREVIEW_CHARS: usize = 40;

/// The first line of `text`, shortened, for listings.
pub(super) fn preview(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut out: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(PREVIEW_CHARS)
        .collect();
    if line.chars().count() > PREVIEW_CHARS || text.lines().nth(1).is_some() {
        out.push('…');
    }
    format!("text: {out}")
}

impl Shared {
    /// Handles a `Text` that arrived instead of an `Offer`.
    pub(super) async fn receive_text(&self, framed: &mut Framed, peer_name: &str, text: String) {
        let peer_id = framed.link().peer;
        if let Err(reason) = check_text(&text) {
            tracing::warn!(peer = %peer_id, name = peer_name, "refused text: {reason}");
            let _ = framed
                .send(&Message::Reject {
                    reason: reason.to_string(),
                })
                .await;
            return;
        }
        let handle = self.registry.start(NewTransfer {
            direction: Direction::In,
            peer: peer_name.to_owned(),
            peer_id,
            files: 0,
            bytes: text.len() as u64,
            transport: framed.link().kind,
            names: vec![preview(&text)],
        });
        handle.set_kind(TransferKind::Text);
        if let Err((state, reason)) =
            consent(framed, Subject::Text, peer_name, &self.receive, &handle).await
        {
            tracing::info!(
                id = handle.id(),
                "text from {peer_name} not accepted: {reason}"
            );
            refused(framed, &handle, state, reason).await;
            return;
        }
        handle.active();
        match self.inbox.store(handle.id(), peer_name, peer_id, &text) {
            Ok(_) => {
                handle.add_sent(text.len() as u64);
                tracing::info!(
                    id = handle.id(),
                    bytes = text.len(),
                    "text from {peer_name} in the inbox (share receive --text)"
                );
                match framed.send(&Message::Done).await {
                    Ok(()) => handle.finish(State::Done, None),
                    Err(e) => handle.finish(State::Failed, Some(e.to_string())),
                }
            }
            Err(e) => {
                tracing::warn!(id = handle.id(), "cannot store text from {peer_name}: {e}");
                let e = TransferError::Storage {
                    code: ErrorCode::Io,
                    message: format!("the receiver cannot store the text: {e}"),
                };
                framed.send_error(&e).await;
                handle.finish(State::Failed, Some(e.to_string()));
            }
        }
    }

    /// `share send PEER --text`: connect, send the text, wait for the
    /// receiver's `Done`.
    pub(super) async fn send_text(
        &self,
        peer: &str,
        text: String,
        preference: Preference,
        events: mpsc::UnboundedSender<SendEvent>,
        cancel: CancellationToken,
    ) -> Result<TextResult, CommandError> {
        let started = Instant::now();
        check_text(&text)?;
        let resolved = self.resolve(peer).await?;
        let dial = self
            .dialer
            .dial(&resolved.target, preference, |link| self.authenticate(link));
        let ((mut framed, hello), transport) = tokio::select! {
            r = dial => r.map_err(|e| CommandError::dial(&resolved.label, &e))?,
            () = cancel.cancelled() => return Err(TransferError::Cancelled.into()),
        };
        let peer_id = framed.link().peer;
        let _ = events.send(SendEvent::Connected {
            peer: hello.name.clone(),
            transport,
        });
        let handle = self.registry.start(NewTransfer {
            direction: Direction::Out,
            peer: hello.name.clone(),
            peer_id,
            files: 0,
            bytes: text.len() as u64,
            transport,
            names: vec![preview(&text)],
        });
        handle.set_kind(TransferKind::Text);
        let result = self
            .text_exchange(&mut framed, &hello.name, &text, &handle, &events, &cancel)
            .await;
        let mut link = framed.into_link();
        let _ = link.finish().await;
        match result {
            Ok(()) => {
                handle.add_sent(text.len() as u64);
                handle.finish(State::Done, None);
                link.wait_peer_closed(Duration::from_secs(2)).await;
                Ok(TextResult {
                    status: ResultStatus::Done,
                    peer: hello.name,
                    peer_id,
                    id: handle.id().to_owned(),
                    transport,
                    bytes: text.len() as u64,
                    seconds: started.elapsed().as_secs_f64(),
                })
            }
            Err(e) => {
                let state = match &e {
                    TransferError::Rejected { .. } => State::Rejected,
                    TransferError::Cancelled
                    | TransferError::Peer {
                        code: ErrorCode::Cancelled,
                        ..
                    } => State::Cancelled,
                    _ => State::Failed,
                };
                handle.finish(state, Some(e.to_string()));
                link.wait_peer_closed(Duration::from_secs(2)).await;
                Err(e.into())
            }
        }
    }

    /// Sends `Text` and waits for the answer.
    async fn text_exchange(
        &self,
        framed: &mut Framed,
        peer_name: &str,
        text: &str,
        handle: &Handle,
        events: &mpsc::UnboundedSender<SendEvent>,
        cancel: &CancellationToken,
    ) -> Result<(), TransferError> {
        framed
            .send(&Message::Text {
                text: text.to_owned(),
            })
            .await?;
        handle.waiting();
        let _ = events.send(SendEvent::Waiting {
            peer: peer_name.to_owned(),
            id: handle.id().to_owned(),
        });
        let transfer_cancel = handle.cancelled();
        let limit = self.config.offer_timeout + Duration::from_secs(30);
        let reply = tokio::select! {
            r = framed.recv_within(limit) => r?,
            () = cancel.cancelled() => return Err(self.cancel_text(framed).await),
            () = transfer_cancel.cancelled() => return Err(self.cancel_text(framed).await),
        };
        match reply {
            Message::Done => Ok(()),
            Message::Reject { reason } => Err(TransferError::Rejected {
                peer: peer_name.to_owned(),
                reason,
            }),
            Message::Error { code, message } => Err(TransferError::Peer {
                peer: peer_name.to_owned(),
                code,
                message,
            }),
            other => {
                let e = TransferError::Protocol(format!(
                    "expected Done or Reject, got {}",
                    kind(&other)
                ));
                framed.send_error(&e).await;
                Err(e)
            }
        }
    }

    /// Tells the receiver we gave up.
    async fn cancel_text(&self, framed: &mut Framed) -> TransferError {
        framed.send_error(&TransferError::Cancelled).await;
        TransferError::Cancelled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MAX_TEXT_LEN;

    #[test]
    fn limits_and_previews() {
        assert!(check_text("").is_err());
        assert!(check_text(&"é".repeat(MAX_TEXT_LEN / 2)).is_ok());
        let err = check_text(&"x".repeat(MAX_TEXT_LEN + 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("65537 bytes"), "{err}");
        assert_eq!(preview("hello"), "text: hello");
        assert_eq!(preview("one\ntwo"), "text: one…");
        assert_eq!(
            preview(&"ü".repeat(50)),
            format!("text: {}…", "ü".repeat(40))
        );
        assert_eq!(preview("a\tb\u{1b}[31m"), "text: ab[31m");
    }
}
