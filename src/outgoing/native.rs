//! One attempt of a send over the lanshare protocol: dial and `Hello`
//! ([`Connector`]), register the transfer on the first connection, run the
//! files session ([`transfer::send`]) or the text exchange
//! ([`transfer::text`]), and meanwhile forward progress to the caller and
//! turn the caller's cancel into the transfer's.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::retry::AttemptError;
use super::{Delivered, Prepared, SendEvent};
use crate::peers::{Connected, Connector, Resolved};
use crate::registry::{Handle, Registry};
use crate::transfer::{self, STOP_GRACE, TransferError};
use crate::transport::dial::Preference;

/// How long the end of a link waits for the peer to take our last frame.
const LINGER: Duration = Duration::from_secs(2);

/// What one attempt needs.
pub(super) struct Attempt<'a> {
    pub(super) connector: &'a Connector,
    pub(super) registry: &'a Registry,
    pub(super) target: &'a Resolved,
    pub(super) preference: Preference,
    pub(super) payload: &'a Prepared,
    /// How long the receiver's user may take to answer.
    pub(super) consent_timeout: Duration,
    /// Set when the receiver first accepts (file data starts to flow).
    pub(super) accepted: &'a OnceLock<Instant>,
    pub(super) events: &'a mpsc::UnboundedSender<SendEvent>,
    /// The caller's cancel (the CLI went away, the queue item was removed).
    pub(super) cancel: &'a CancellationToken,
}

/// One connection: dial, hello, then the session. `handle` is the
/// transfer's registration, made on the first attempt that connects and
/// kept across attempts.
pub(super) async fn attempt(
    a: Attempt<'_>,
    handle: &mut Option<Handle>,
) -> Result<Delivered, AttemptError> {
    let transfer_cancel = handle.as_ref().map(Handle::cancelled).unwrap_or_default();
    let dial = a.connector.open(&a.target.target, a.preference);
    let Connected {
        mut framed,
        hello,
        transport,
    } = tokio::select! {
        r = dial => r.map_err(|e| AttemptError::Dial(a.target.label.clone(), e))?,
        () = a.cancel.cancelled() => return Err(AttemptError::Transfer(TransferError::Cancelled)),
        () = transfer_cancel.cancelled() => return Err(AttemptError::Transfer(TransferError::Cancelled)),
    };
    let peer_name = hello.name;
    let peer_id = framed.link().peer;
    let _ = a.events.send(SendEvent::Connected {
        peer: peer_name.clone(),
        transport,
    });
    let handle = handle.get_or_insert_with(|| {
        a.payload
            .register(a.registry, peer_name.clone(), peer_id, transport)
    });
    handle.set_transport(transport);
    let bytes = a.payload.bytes();

    let (session_tx, session_rx) = mpsc::unbounded_channel();
    let result = {
        let session = async {
            match a.payload {
                Prepared::Files { source, .. } => {
                    transfer::send::send(
                        &mut framed,
                        &peer_name,
                        source,
                        handle,
                        a.consent_timeout,
                        session_tx,
                    )
                    .await
                }
                Prepared::Text(text) => {
                    let sent = transfer::text::send(
                        &mut framed,
                        &peer_name,
                        text,
                        handle,
                        a.consent_timeout,
                        &session_tx,
                    )
                    .await;
                    if sent.is_ok() {
                        handle.add_sent(bytes);
                    }
                    sent
                }
            }
        };
        super::follow(
            session,
            session_rx,
            super::Followed {
                handle,
                peer: &peer_name,
                total: a.payload.progress_total(),
                events: a.events,
                accepted: a.accepted,
                cancel: a.cancel,
            },
        )
        .await
    };
    let mut link = framed.into_link();
    if matches!(result, Err(TransferError::Stopping)) {
        // This daemon stops: deliver the `Error(Paused)`, not the data
        // queued before it.
        link.interrupt(STOP_GRACE).await;
    } else {
        let _ = link.finish().await;
        if result.is_err() || matches!(a.payload, Prepared::Text(_)) {
            // Let our last frame reach the receiver before closing.
            link.wait_peer_closed(LINGER).await;
        }
    }
    result
        .map(|()| Delivered {
            peer: peer_name,
            peer_id,
            transport,
        })
        .map_err(AttemptError::Transfer)
}
