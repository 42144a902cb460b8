//! One pairing session on the wire, either side: each sends one
//! `PairConfirm { accepted }` as soon as its user has decided and reads the
//! peer's; when both said yes, each pins the other in its trust store.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::table::Table;
use super::{PAIRING_TIMEOUT, PairingState};
use crate::identity::trust::TrustStore;
use crate::protocol::{ErrorCode, Message};
use crate::transfer::framed::{Framed, RecvError};
use crate::transfer::handshake::kind;

/// How a session ended without pairing.
struct Failure {
    state: PairingState,
    reason: String,
    /// An `Error` to send the peer, if it does not know yet.
    tell: Option<(ErrorCode, String)>,
}

impl Failure {
    fn new(state: PairingState, reason: impl Into<String>) -> Self {
        Self {
            state,
            reason: reason.into(),
            tell: None,
        }
    }

    fn telling(mut self, code: ErrorCode, message: &str) -> Self {
        self.tell = Some((code, message.to_owned()));
        self
    }
}

/// Runs one pairing session on either side: send our decision when the
/// user makes it, read the peer's, pin the peer if both said yes.
pub(super) async fn run(
    pairings: &Table,
    trust: &TrustStore,
    framed: &mut Framed,
    id: &str,
    mut decision: oneshot::Receiver<bool>,
    peer_name: &str,
) {
    let peer_id = framed.link().peer;
    let deadline = Instant::now() + PAIRING_TIMEOUT;
    let mut local: Option<bool> = None;
    let mut remote: Option<bool> = None;
    let outcome: Result<(), Failure> = loop {
        match (local, remote) {
            (Some(true), Some(true)) => break Ok(()),
            (Some(false), _) => {
                break Err(Failure::new(
                    PairingState::Rejected,
                    "declined on this device",
                ));
            }
            (_, Some(false)) => {
                break Err(Failure::new(
                    PairingState::Rejected,
                    format!("declined on {peer_name}"),
                ));
            }
            _ => {}
        }
        let (mut reader, mut writer) = framed.halves();
        tokio::select! {
            d = &mut decision, if local.is_none() => {
                let Ok(accepted) = d else {
                    break Err(Failure::new(PairingState::Failed, "the decision was lost"));
                };
                local = Some(accepted);
                pairings.update(id, |i| i.you_confirmed = Some(accepted));
                if let Err(e) = writer.send(&Message::PairConfirm { accepted }).await {
                    break Err(Failure::new(
                        PairingState::Failed,
                        format!("cannot tell {peer_name}: {e}"),
                    ));
                }
            }
            m = reader.recv(), if remote.is_none() => match m {
                Ok(Message::PairConfirm { accepted }) => {
                    remote = Some(accepted);
                    pairings.update(id, |i| i.peer_confirmed = Some(accepted));
                }
                Ok(Message::Error { message, .. }) => {
                    break Err(Failure::new(
                        PairingState::Failed,
                        format!("{peer_name} stopped the pairing: {message}"),
                    ));
                }
                Ok(other) => {
                    let message = format!("expected PairConfirm, got {}", kind(&other));
                    break Err(Failure::new(
                        PairingState::Failed,
                        format!("protocol violation by {peer_name}: {message}"),
                    )
                    .telling(ErrorCode::Protocol, &message));
                }
                Err(RecvError::Closed) => {
                    break Err(Failure::new(
                        PairingState::Failed,
                        format!("{peer_name} closed the connection before both confirmed"),
                    ));
                }
                Err(e) => {
                    break Err(Failure::new(
                        PairingState::Failed,
                        format!("the connection to {peer_name} failed: {e}"),
                    ));
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                let reason = format!(
                    "not confirmed on both devices within {} s",
                    PAIRING_TIMEOUT.as_secs()
                );
                break Err(Failure::new(PairingState::Expired, reason.clone())
                    .telling(ErrorCode::Cancelled, &format!("pairing expired: {reason}")));
            }
            () = pairings.cancel.cancelled() => {
                break Err(Failure::new(PairingState::Failed, "the daemon is shutting down")
                    .telling(ErrorCode::Cancelled, "the other device's daemon is shutting down"));
            }
        }
    };
    match outcome {
        Ok(()) => match trust.trust(peer_id, peer_name) {
            Ok(_) => {
                tracing::info!(id, peer = %peer_id, "paired with {peer_name}: it is now trusted");
                pairings.finish(id, PairingState::Paired, None);
            }
            Err(e) => {
                tracing::warn!(id, "pairing with {peer_name} confirmed but not saved: {e}");
                pairings.finish(
                    id,
                    PairingState::Failed,
                    Some(format!("cannot save the trust store: {e}")),
                );
            }
        },
        Err(failure) => {
            tracing::info!(id, peer = %peer_id, "pairing with {peer_name} ended: {}", failure.reason);
            if let Some((code, message)) = failure.tell {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    framed.send(&Message::Error { code, message }),
                )
                .await;
            }
            pairings.finish(id, failure.state, Some(failure.reason));
        }
    }
}
