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
use crate::safe_text::PeerName;
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
    peer_name: &PeerName,
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
                Ok(Message::Error { code, message }) => {
                    break Err(Failure::new(
                        PairingState::Failed,
                        format!("{peer_name} stopped the pairing: {}", code.report(&message.clean())),
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
                // Not a valid frame (e.g. PairConfirm(2)): answered like
                // a wrong message.
                Err(RecvError::Decode(d)) => {
                    let message = d.to_string();
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
                    framed.send(&Message::Error {
                        code,
                        message: message.into(),
                    }),
                )
                .await;
            }
            pairings.finish(id, failure.state, Some(failure.reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::identity::DeviceId;
    use crate::registry::Direction;
    use crate::transport::{Link, TransportKind};

    /// One device's side of a pairing: its table, trust store, and the
    /// pairing it registered.
    struct Side {
        table: Table,
        trust: TrustStore,
        id: String,
        _dir: tempfile::TempDir,
    }

    fn side(link: &Link, direction: Direction, peer: &str) -> (Side, oneshot::Receiver<bool>) {
        let dir = tempfile::tempdir().unwrap();
        let table = Table::new(CancellationToken::new());
        let code = link.pairing_code().unwrap();
        let (id, decision) = table
            .register(direction, &peer.into(), link.peer, code, link.kind)
            .unwrap();
        let trust = TrustStore::load(dir.path()).unwrap();
        let side = Side {
            table,
            trust,
            id,
            _dir: dir,
        };
        (side, decision)
    }

    /// Runs both sides' sessions over one in-memory link while each user
    /// answers as `answers` says (`None`: never); returns both sides.
    async fn pair(answers: (Option<bool>, Option<bool>)) -> (Side, Side) {
        let (alice_id, bob_id) = (DeviceId::from_cert_der(b"a"), DeviceId::from_cert_der(b"b"));
        let (to_bob, to_alice) = Link::pipe(alice_id, bob_id, TransportKind::Tcp, [3; 8]);
        let (alice, alice_decision) = side(&to_bob, Direction::Out, "bob");
        let (bob, bob_decision) = side(&to_alice, Direction::In, "alice");
        let (mut to_bob, mut to_alice) = (Framed::new(to_bob), Framed::new(to_alice));
        for (side, answer) in [(&alice, answers.0), (&bob, answers.1)] {
            if let Some(accept) = answer {
                side.table.decide(&side.id, accept).unwrap();
            }
        }
        let (bob_name, alice_name) = (PeerName::from("bob"), PeerName::from("alice"));
        tokio::join!(
            run(
                &alice.table,
                &alice.trust,
                &mut to_bob,
                &alice.id,
                alice_decision,
                &bob_name
            ),
            run(
                &bob.table,
                &bob.trust,
                &mut to_alice,
                &bob.id,
                bob_decision,
                &alice_name
            ),
        );
        (alice, bob)
    }

    fn state(side: &Side) -> PairingState {
        side.table.get(&side.id).unwrap().state
    }

    #[tokio::test(start_paused = true)]
    async fn both_confirm_and_each_trusts_the_other() {
        let (alice, bob) = pair((Some(true), Some(true))).await;
        assert_eq!(
            (state(&alice), state(&bob)),
            (PairingState::Paired, PairingState::Paired)
        );
        assert!(alice.trust.is_trusted(&DeviceId::from_cert_der(b"b")));
        assert!(bob.trust.is_trusted(&DeviceId::from_cert_der(b"a")));
        let listed = bob.table.get(&bob.id).unwrap();
        assert_eq!(
            (listed.you_confirmed, listed.peer_confirmed),
            (Some(true), Some(true))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_decline_pairs_nobody() {
        let (alice, bob) = pair((Some(true), Some(false))).await;
        assert_eq!(
            (state(&alice), state(&bob)),
            (PairingState::Rejected, PairingState::Rejected)
        );
        assert!(alice.trust.list().is_empty() && bob.trust.list().is_empty());
        let reason = alice.table.get(&alice.id).unwrap().reason.unwrap();
        assert!(reason.contains("declined on bob"), "{reason}");
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_pairings_expire_on_both_sides() {
        let started = tokio::time::Instant::now();
        let (alice, bob) = pair((Some(true), None)).await;
        assert!(started.elapsed() >= PAIRING_TIMEOUT);
        // Whichever side's deadline fires first expires and tells the
        // other, which ends with the peer's word for it.
        for side in [&alice, &bob] {
            let info = side.table.get(&side.id).unwrap();
            assert!(
                matches!(info.state, PairingState::Expired | PairingState::Failed),
                "{info:?}"
            );
            assert!(
                info.reason.unwrap().contains("not confirmed"),
                "{:?}",
                side.id
            );
        }
        assert!([state(&alice), state(&bob)].contains(&PairingState::Expired));
        assert!(alice.trust.list().is_empty() && bob.trust.list().is_empty());
    }

    /// `PairConfirm` carries 0 or 1; any other value is a protocol error,
    /// answered with `Error(Protocol)` like any wrong message, and pairs
    /// nobody.
    #[tokio::test(start_paused = true)]
    async fn a_confirm_other_than_0_or_1_is_answered_with_a_protocol_error() {
        use tokio::io::AsyncWriteExt;

        use crate::protocol::Message;

        let (alice_id, bob_id) = (DeviceId::from_cert_der(b"a"), DeviceId::from_cert_der(b"b"));
        let (mut to_bob, to_alice) = Link::pipe(alice_id, bob_id, TransportKind::Tcp, [3; 8]);
        let (bob, bob_decision) = side(&to_alice, Direction::In, "alice");
        let mut to_alice = Framed::new(to_alice);
        // Alice's side: a raw PairConfirm(2).
        to_bob
            .writer
            .write_all(&[0, 0, 0, 2, 0x0c, 2])
            .await
            .unwrap();
        run(
            &bob.table,
            &bob.trust,
            &mut to_alice,
            &bob.id,
            bob_decision,
            &PeerName::from("alice"),
        )
        .await;
        assert_eq!(state(&bob), PairingState::Failed);
        assert!(bob.trust.list().is_empty());
        let mut from_bob = Framed::new(to_bob);
        let answer = from_bob.recv().await.unwrap();
        assert!(
            matches!(
                answer,
                Message::Error {
                    code: ErrorCode::Protocol,
                    ..
                }
            ),
            "{answer:?}"
        );
    }

    #[test]
    fn the_code_comes_from_the_session_keys() {
        let (a, b) = (DeviceId::from_cert_der(b"a"), DeviceId::from_cert_der(b"b"));
        let (one, other) = Link::pipe(a, b, TransportKind::Quic, [5; 8]);
        assert_eq!(one.pairing_code(), other.pairing_code());
        // A relay holds two sessions with different keys: the codes differ.
        let (relayed, _) = Link::pipe(a, b, TransportKind::Quic, [6; 8]);
        assert_ne!(one.pairing_code(), relayed.pairing_code());
    }
}
