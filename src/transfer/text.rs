//! Short texts between devices, both sides of the exchange on the wire.
//!
//! A text is a `Text` message sent instead of an `Offer` after `Hello`,
//! answered with `Done` (stored in the inbox) or `Reject`. It goes through
//! the same intake as files (consent, `share transfers`, `share accept` /
//! `share reject`, history, kind `text`). The size limit
//! ([`crate::protocol::MAX_TEXT_LEN`]) is enforced by the sending CLI, by
//! the sending daemon ([`check_text`]), and by the receiver's codec, which
//! refuses an over-long `Text` frame before reading it.

use std::time::Duration;

use tokio::sync::mpsc;

use super::framed::Framed;
use super::handshake::kind;
use super::receive::sender_gone;
use super::{SessionEvent, TransferError};
use crate::intake::text::check_text;
use crate::intake::{Intake, Offer, Sender};
use crate::protocol::{ErrorCode, Message};
use crate::registry::{Handle, State};
use crate::safe_text::PeerName;

/// Receiving side: a `Text` arrived instead of an `Offer`. Checks it,
/// asks the intake for consent, stores it, answers `Done` (or the
/// refusal).
pub async fn receive(framed: &mut Framed, intake: &Intake, sender: &Sender, text: String) {
    if let Err(reason) = check_text(&text) {
        tracing::warn!(peer = %sender.id, name = %sender.name, "refused text: {reason}");
        let _ = framed
            .send(&Message::Reject {
                reason: reason.to_string().into(),
            })
            .await;
        return;
    }
    let offer = Offer::Text(&text);
    let handle = intake.register(sender, offer);
    let consent = {
        let (mut from_peer, _) = framed.halves();
        let gone = async move { sender_gone(from_peer.recv().await, &sender.name) };
        intake.consent(sender, offer, &handle, gone).await
    };
    if let Err(declined) = consent {
        super::receive::answer_declined(framed, &declined, "text").await;
        return;
    }
    handle.active();
    match intake.deliver_text(&handle, sender, &text) {
        Ok(_) => match framed.send(&Message::Done).await {
            Ok(()) => handle.finish(State::Done, None),
            Err(e) => handle.finish(State::Failed, Some(e.to_string())),
        },
        Err(e) => {
            tracing::warn!(
                id = handle.id(),
                "cannot store text from {}: {e}",
                sender.name
            );
            let e = TransferError::Storage {
                code: ErrorCode::Io,
                message: format!("the receiver cannot store the text: {e}"),
            };
            framed.send_error(&e).await;
            handle.finish(State::Failed, Some(e.to_string()));
        }
    }
}

/// Sending side on an authenticated link: sends `Text`, reports
/// [`SessionEvent::Waiting`], and waits (at most `consent_timeout`) for the
/// receiver's `Done`. The transfer's cancel token stops the wait; the
/// receiver is told.
///
/// # Errors
/// Rejected, cancelled, or the link or the peer failed.
pub async fn send(
    framed: &mut Framed,
    peer_name: &PeerName,
    text: &str,
    handle: &Handle,
    consent_timeout: Duration,
    events: &mpsc::UnboundedSender<SessionEvent>,
) -> Result<(), TransferError> {
    framed
        .send(&Message::Text {
            text: text.to_owned(),
        })
        .await?;
    let _ = events.send(SessionEvent::Waiting);
    let transfer_cancel = handle.cancelled();
    let reply = tokio::select! {
        r = framed.recv_within(consent_timeout) => match r {
            Ok(reply) => reply,
            Err(e) => {
                let e = super::send::no_answer(e, peer_name);
                if matches!(e, TransferError::NoAnswer { .. }) {
                    framed.send_error(&e).await;
                }
                return Err(e);
            }
        },
        () = transfer_cancel.cancelled() => return Err(cancelled(framed).await),
    };
    match reply {
        Message::Done => Ok(()),
        Message::Reject { reason } => Err(TransferError::Rejected {
            peer: peer_name.clone(),
            reason: reason.clean(),
        }),
        Message::Error { code, message } => Err(TransferError::Peer {
            peer: peer_name.clone(),
            code,
            message: message.clean(),
        }),
        other => {
            let e =
                TransferError::Protocol(format!("expected Done or Reject, got {}", kind(&other)));
            framed.send_error(&e).await;
            Err(e)
        }
    }
}

/// Tells the receiver we gave up.
async fn cancelled(framed: &mut Framed) -> TransferError {
    framed.send_error(&TransferError::Cancelled).await;
    TransferError::Cancelled
}
