//! One attempt of a send over the lanshare protocol: dial and `Hello`
//! ([`Connector`]), register the transfer on the first connection, run the
//! files session ([`transfer::send`]) or the text exchange
//! ([`transfer::text`]), and meanwhile forward progress to the caller and
//! turn the caller's cancel into the transfer's.

use std::time::Duration;

use tokio::sync::mpsc;

use super::retry::AttemptError;
use super::{Common, Delivered, Prepared};
use crate::peers::{Connected, Connector, Resolved};
use crate::registry::Handle;
use crate::transfer::{self, STOP_GRACE, TransferError};
use crate::transport::dial::Preference;

/// How long the end of a link waits for the peer to take our last frame.
const LINGER: Duration = Duration::from_secs(2);

/// What one attempt needs.
pub(super) struct Attempt<'a> {
    pub(super) common: Common<'a>,
    pub(super) connector: &'a Connector,
    pub(super) target: &'a Resolved,
    pub(super) preference: Preference,
}

/// One connection: dial, hello, then the session. `handle` is the
/// transfer's registration, made on the first attempt that connects and
/// kept across attempts.
pub(super) async fn attempt(
    a: Attempt<'_>,
    handle: &mut Option<Handle>,
) -> Result<Delivered, AttemptError> {
    let Attempt {
        common,
        connector,
        target,
        preference,
    } = a;
    let Connected {
        mut framed,
        hello,
        transport,
    } = common
        .connect(handle, connector.open(&target.target, preference))
        .await?
        .map_err(|e| AttemptError::Dial(target.label.clone(), e))?;
    let peer_name = hello.name;
    let peer_id = framed.link().peer;
    let handle = common.connected(handle, &peer_name, peer_id, transport);
    let bytes = common.payload.bytes();

    let (session_tx, session_rx) = mpsc::unbounded_channel();
    let result = {
        let session = async {
            match common.payload {
                Prepared::Files { source, .. } => {
                    transfer::send::send(
                        &mut framed,
                        &peer_name,
                        source,
                        handle,
                        common.consent_timeout,
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
                        common.consent_timeout,
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
        common.follow(session, session_rx, handle, &peer_name).await
    };
    let mut link = framed.into_link();
    if matches!(result, Err(TransferError::Stopping)) {
        // This daemon stops: deliver the `Error(Paused)`, not the data
        // queued before it.
        link.interrupt(STOP_GRACE).await;
    } else {
        let _ = link.finish().await;
        if result.is_err() || matches!(common.payload, Prepared::Text(_)) {
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
