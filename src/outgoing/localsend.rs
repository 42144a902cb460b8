//! One attempt of a send to a LocalSend app: connect with its fingerprint
//! pinned, register the transfer on the first connection, run LocalSend's
//! `prepare-upload` / `upload` exchange ([`crate::localsend::send`]), and
//! meanwhile forward progress to the caller and turn the caller's cancel
//! into the transfer's (the receiver gets LocalSend's `cancel`).

use tokio::sync::mpsc;

use super::retry::AttemptError;
use super::{Common, Delivered, Prepared};
use crate::localsend::http::ClientError;
use crate::localsend::send::{self, Context, What};
use crate::localsend::{Sender, client};
use crate::peers::LocalSendTarget;
use crate::registry::Handle;
use crate::transport::TransportKind;
use crate::transport::dial::DialError;

/// What one attempt needs.
pub(super) struct Attempt<'a> {
    pub(super) common: Common<'a>,
    pub(super) service: Sender<'a>,
    pub(super) target: &'a LocalSendTarget,
    pub(super) pin: Option<&'a str>,
}

/// One connection: connect, then the exchange. `handle` is the transfer's
/// registration, made on the first attempt that connects and kept across
/// attempts.
pub(super) async fn attempt(
    a: Attempt<'_>,
    handle: &mut Option<Handle>,
) -> Result<Delivered, AttemptError> {
    let Attempt {
        common,
        service,
        target,
        pin,
    } = a;
    let label = &target.label;
    let mut connection = common
        .connect(
            handle,
            client::connect(service.identity, target.addr, target.fingerprint),
        )
        .await?
        .map_err(|e| AttemptError::Dial(label.to_string(), dial_error(e)))?;
    let peer_id = connection.fingerprint;
    let transport = TransportKind::LocalSend;
    let handle = common.connected(handle, label, peer_id, transport);
    let what = match common.payload {
        Prepared::Files { source, .. } => What::Files(source),
        Prepared::Text(text) => What::Text(text),
    };
    let ctx = Context {
        identity: service.identity,
        me: service.me,
        peer: label,
        pin,
        consent_timeout: common.consent_timeout,
        remote_cancels: service.remote_cancels,
    };
    let (session_tx, session_rx) = mpsc::unbounded_channel();
    let session = async {
        let sent = send::send(&ctx, &mut connection, what, handle, &session_tx).await;
        if sent.is_ok() && matches!(common.payload, Prepared::Text(_)) {
            handle.add_sent(common.payload.bytes());
        }
        drop(session_tx);
        sent
    };
    common
        .follow(session, session_rx, handle, label)
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
