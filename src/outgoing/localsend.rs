//! One attempt of a send to a LocalSend app: connect with its fingerprint
//! pinned, register the transfer on the first connection, run LocalSend's
//! `prepare-upload` / `upload` exchange ([`crate::localsend::send`]), and
//! meanwhile forward progress to the caller and turn the caller's cancel
//! into the transfer's (the receiver gets LocalSend's `cancel`).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::retry::AttemptError;
use super::{Delivered, Prepared, SendEvent};
use crate::localsend::http::ClientError;
use crate::localsend::send::{self, Context, What};
use crate::localsend::{Sender, client};
use crate::peers::LocalSendTarget;
use crate::registry::{Handle, Registry};
use crate::transfer::TransferError;
use crate::transport::TransportKind;
use crate::transport::dial::DialError;

/// What one attempt needs.
pub(super) struct Attempt<'a> {
    pub(super) service: Sender<'a>,
    pub(super) registry: &'a Registry,
    pub(super) target: &'a LocalSendTarget,
    pub(super) pin: Option<&'a str>,
    pub(super) payload: &'a Prepared,
    /// How long the receiver's user may take to answer.
    pub(super) consent_timeout: Duration,
    /// Set when the receiver first accepts (file data starts to flow).
    pub(super) accepted: &'a OnceLock<Instant>,
    pub(super) events: &'a mpsc::UnboundedSender<SendEvent>,
    /// The caller's cancel (the CLI went away, the queue item was removed).
    pub(super) cancel: &'a CancellationToken,
}

/// One connection: connect, then the exchange. `handle` is the transfer's
/// registration, made on the first attempt that connects and kept across
/// attempts.
pub(super) async fn attempt(
    a: Attempt<'_>,
    handle: &mut Option<Handle>,
) -> Result<Delivered, AttemptError> {
    let label = a.target.label.clone();
    let transfer_cancel = handle.as_ref().map(Handle::cancelled).unwrap_or_default();
    let connect = client::connect(a.service.identity, a.target.addr, a.target.fingerprint);
    let mut connection = tokio::select! {
        r = connect => r.map_err(|e| AttemptError::Dial(label.to_string(), dial_error(e)))?,
        () = a.cancel.cancelled() => return Err(AttemptError::Transfer(TransferError::Cancelled)),
        () = transfer_cancel.cancelled() => return Err(AttemptError::Transfer(TransferError::Cancelled)),
    };
    let peer_id = connection.fingerprint;
    let transport = TransportKind::LocalSend;
    let _ = a.events.send(SendEvent::Connected {
        peer: label.clone(),
        transport,
    });
    let handle = handle.get_or_insert_with(|| {
        a.payload
            .register(a.registry, label.clone(), peer_id, transport)
    });
    let what = match a.payload {
        Prepared::Files { source, .. } => What::Files(source),
        Prepared::Text(text) => What::Text(text),
    };
    let ctx = Context {
        identity: a.service.identity,
        me: a.service.me,
        peer: &label,
        pin: a.pin,
        consent_timeout: a.consent_timeout,
        remote_cancels: a.service.remote_cancels,
    };
    let (session_tx, session_rx) = mpsc::unbounded_channel();
    let session = async {
        let sent = send::send(&ctx, &mut connection, what, handle, &session_tx).await;
        if sent.is_ok() && matches!(a.payload, Prepared::Text(_)) {
            handle.add_sent(a.payload.bytes());
        }
        drop(session_tx);
        sent
    };
    let followed = super::Followed {
        handle,
        peer: &label,
        total: a.payload.progress_total(),
        events: a.events,
        accepted: a.accepted,
        cancel: a.cancel,
    };
    super::follow(session, session_rx, followed)
        .await
        .map(|()| Delivered {
            peer: label.clone(),
            peer_id,
            transport,
        })
        .map_err(AttemptError::Transfer)
}

/// A failed connection as the retry rules see it: an identity problem is
/// never retried, an unreachable device is.
fn dial_error(e: ClientError) -> DialError {
    match e {
        ClientError::Identity { .. } => DialError::Refused(e.to_string()),
        _ => DialError::Unreachable(vec![e.to_string()]),
    }
}
