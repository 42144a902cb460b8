//! Pairing: two users make their devices trust each other after comparing
//! a 6-digit code (`share pair PEER`, `share pair --confirm ID`).
//!
//! Trusting a device found by name or typed as `HOST:PORT` is trust on
//! first use: whoever answered is pinned, including a man in the middle.
//! Pairing closes that gap with a short authentication string, the way
//! Bluetooth numeric comparison does: both daemons derive the code from
//! their TLS session with the keying-material exporter
//! ([`crate::transport::Link::pairing_code`]). Both ends of one session get
//! the same number; an attacker relaying between two sessions cannot make
//! them agree, so the users see different codes and decline.
//!
//! The exchange is a session of its own after `Hello`: the dialer sends
//! `PairRequest`; then each side sends one `PairConfirm { accepted }` as
//! soon as its user has decided, and reads the peer's. Only when both said
//! yes does each daemon pin the other's device ID in its trust store. The
//! link stays open until then, or until [`PAIRING_TIMEOUT`]. Pairing always
//! needs both users, whatever the consent policy (`--accept all` included).
//!
//! [`Pairings`] is the table `share pair --list` shows and where a user's
//! decision is delivered; it mirrors the transfer registry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Shared;
use super::history::now_secs;
use crate::control::records::{PairingInfo, PairingState};
use crate::control::{CommandError, ErrorKind};
use crate::identity::DeviceId;
use crate::identity::trust::TrustStore;
use crate::protocol::{ErrorCode, Message};
use crate::transfer::framed::{Framed, RecvError};
use crate::transfer::handshake::kind;
use crate::transfer::registry::Direction;
use crate::transport::TransportKind;
use crate::transport::dial::Preference;

/// How long both users have to compare the codes and confirm.
pub(super) const PAIRING_TIMEOUT: Duration = Duration::from_secs(120);

/// Incoming pairing requests waiting for the user at once; more are
/// refused as busy, so a peer cannot flood the list.
pub(super) const MAX_WAITING_PAIRINGS: usize = 8;

/// Incoming pairing requests one device may have waiting at once.
pub(super) const MAX_WAITING_PER_PEER: usize = 2;

/// Finished pairings kept for `share pair --list`.
const KEEP_FINISHED: usize = 32;

/// How long `share pair --confirm` waits for the session to pick up the
/// decision before answering (without `--wait`).
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// Why a pairing could not be registered or answered.
#[derive(Debug, thiserror::Error)]
pub(super) enum PairingError {
    /// Too many incoming pairings wait already.
    #[error("too many pairing requests are waiting on this device; retry later")]
    Busy,
    /// No pairing has this ID (prefix).
    #[error("no pairing with ID {0}; see `share pair --list`")]
    NotFound(String),
    /// The prefix matches several pairings.
    #[error("pairing ID {0} is ambiguous; type more characters")]
    Ambiguous(String),
    /// The pairing ended already.
    #[error("pairing {id} with {peer} is already over ({})", state.as_str())]
    Over {
        /// The pairing.
        id: String,
        /// The peer's name.
        peer: String,
        /// How it ended.
        state: PairingState,
    },
    /// This side's answer was given before.
    #[error("pairing {0} was already answered on this device")]
    AlreadyAnswered(String),
}

impl From<PairingError> for CommandError {
    fn from(e: PairingError) -> Self {
        let kind = match e {
            PairingError::Busy => ErrorKind::Busy,
            PairingError::NotFound(_) => ErrorKind::NotFound,
            PairingError::Ambiguous(_) => ErrorKind::Ambiguous,
            PairingError::Over { .. } | PairingError::AlreadyAnswered(_) => ErrorKind::Conflict,
        };
        Self::new(kind, e.to_string())
    }
}

struct Entry {
    info: PairingInfo,
    deadline: Instant,
    seq: u64,
    decision: Option<oneshot::Sender<bool>>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    seq: u64,
}

/// The table of pairing attempts.
pub(super) struct Pairings {
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
    /// Stops the sessions at daemon shutdown.
    cancel: CancellationToken,
    /// Where outgoing sessions run, so shutdown waits for them.
    tracker: TaskTracker,
}

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

impl Pairings {
    /// An empty table whose sessions stop when `cancel` fires.
    pub(super) fn new(cancel: CancellationToken, tracker: TaskTracker) -> Self {
        let (changes, _) = watch::channel(0);
        Self {
            inner: Mutex::new(Inner::default()),
            changes,
            cancel,
            tracker,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every pairing, oldest first.
    pub(super) fn list(&self) -> Vec<PairingInfo> {
        let inner = self.lock();
        let mut entries: Vec<&Entry> = inner.entries.values().collect();
        entries.sort_by_key(|e| e.seq);
        entries.into_iter().map(snapshot).collect()
    }

    fn get(&self, id: &str) -> Option<PairingInfo> {
        self.lock().entries.get(id).map(snapshot)
    }

    /// Adds a waiting pairing; refuses an incoming one beyond the limits.
    fn register(
        &self,
        direction: Direction,
        peer: &str,
        peer_id: DeviceId,
        code: u32,
        transport: TransportKind,
    ) -> Result<(String, oneshot::Receiver<bool>), PairingError> {
        let mut inner = self.lock();
        if direction == Direction::In {
            let waiting: Vec<&Entry> = inner
                .entries
                .values()
                .filter(|e| e.info.direction == Direction::In && !e.info.state.finished())
                .collect();
            if waiting.len() >= MAX_WAITING_PAIRINGS
                || waiting.iter().filter(|e| e.info.peer_id == peer_id).count()
                    >= MAX_WAITING_PER_PEER
            {
                return Err(PairingError::Busy);
            }
        }
        let id = loop {
            let candidate = super::queue::random_id();
            if !inner.entries.contains_key(&candidate) {
                break candidate;
            }
        };
        let (tx, rx) = oneshot::channel();
        inner.seq += 1;
        let seq = inner.seq;
        inner.entries.insert(
            id.clone(),
            Entry {
                info: PairingInfo {
                    id: id.clone(),
                    direction,
                    peer: peer.to_owned(),
                    peer_id,
                    code: format_code(code),
                    state: PairingState::Waiting,
                    you_confirmed: None,
                    peer_confirmed: None,
                    transport,
                    expires_in_s: PAIRING_TIMEOUT.as_secs(),
                    reason: None,
                    started: now_secs(),
                },
                deadline: Instant::now() + PAIRING_TIMEOUT,
                seq,
                decision: Some(tx),
            },
        );
        drop(inner);
        self.notify();
        Ok((id, rx))
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut PairingInfo)) {
        if let Some(entry) = self.lock().entries.get_mut(id) {
            change(&mut entry.info);
        }
        self.notify();
    }

    fn finish(&self, id: &str, state: PairingState, reason: Option<String>) {
        {
            let mut inner = self.lock();
            if let Some(entry) = inner.entries.get_mut(id) {
                entry.info.state = state;
                entry.info.reason = reason;
                entry.decision = None;
            }
            let finished: Vec<(u64, String)> = inner
                .entries
                .values()
                .filter(|e| e.info.state.finished())
                .map(|e| (e.seq, e.info.id.clone()))
                .collect();
            if finished.len() > KEEP_FINISHED
                && let Some((_, oldest)) = finished.iter().min()
            {
                inner.entries.remove(oldest);
            }
        }
        self.notify();
    }

    fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Delivers this user's decision to a waiting pairing (ID or unique prefix).
    fn decide(&self, prefix: &str, accept: bool) -> Result<String, PairingError> {
        let mut inner = self.lock();
        let prefix = prefix.trim().to_ascii_lowercase();
        let mut matches: Vec<String> = inner
            .entries
            .keys()
            .filter(|k| !prefix.is_empty() && k.starts_with(&prefix))
            .cloned()
            .collect();
        let id = match matches.len() {
            0 => return Err(PairingError::NotFound(prefix)),
            1 => matches.remove(0),
            _ if inner.entries.contains_key(&prefix) => prefix,
            _ => return Err(PairingError::Ambiguous(prefix)),
        };
        let entry = inner
            .entries
            .get_mut(&id)
            .ok_or_else(|| PairingError::NotFound(id.clone()))?;
        if entry.info.state.finished() {
            return Err(PairingError::Over {
                id,
                peer: entry.info.peer.clone(),
                state: entry.info.state,
            });
        }
        match entry.decision.take() {
            Some(tx) => {
                let _ = tx.send(accept);
                Ok(id)
            }
            None => Err(PairingError::AlreadyAnswered(id)),
        }
    }

    /// Waits (at most `limit`) until `done` holds for pairing `id`, and
    /// returns its latest state either way.
    async fn wait_until(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&PairingInfo) -> bool,
    ) -> Option<PairingInfo> {
        let mut changes = self.changes.subscribe();
        let deadline = Instant::now() + limit;
        loop {
            changes.borrow_and_update();
            let info = self.get(id)?;
            if done(&info) {
                return Some(info);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return self.get(id);
            }
        }
    }
}

fn snapshot(entry: &Entry) -> PairingInfo {
    let mut info = entry.info.clone();
    info.expires_in_s = if info.state.finished() {
        0
    } else {
        entry
            .deadline
            .saturating_duration_since(Instant::now())
            .as_secs()
    };
    info
}

/// A code as users read it: six digits, zero-padded.
pub(super) fn format_code(code: u32) -> String {
    format!("{code:06}")
}

impl Shared {
    /// `share pair PEER`: connect, ask to pair, and return the code at
    /// once; the session goes on in the background until both users
    /// decided or it expires.
    pub(super) async fn pair(
        &self,
        peer: &str,
        preference: Preference,
    ) -> Result<PairingInfo, CommandError> {
        let resolved = self.resolve(peer).await?;
        let ((mut framed, hello), transport) = self
            .dialer
            .dial(&resolved.target, preference, |link| self.authenticate(link))
            .await
            .map_err(|e| CommandError::dial(&resolved.label, &e))?;
        let peer_id = framed.link().peer;
        let Some(code) = framed.link().pairing_code() else {
            framed.into_link().abort("no pairing code");
            return Err(CommandError::internal(
                "cannot derive a pairing code from this connection",
            ));
        };
        framed.send(&Message::PairRequest).await.map_err(|e| {
            CommandError::new(
                ErrorKind::Failed,
                format!("cannot ask {} to pair: {e}", hello.name),
            )
        })?;
        let (id, decision) =
            self.pairings
                .register(Direction::Out, &hello.name, peer_id, code, transport)?;
        tracing::info!(
            id,
            peer = %peer_id,
            "pairing with {}: code {}; confirm with share pair --confirm {id} on both devices",
            hello.name,
            format_code(code)
        );
        let pairings = self.pairings.clone();
        let trust = self.trust.clone();
        let session_id = id.clone();
        self.pairings.tracker.spawn(async move {
            session(
                &pairings,
                &trust,
                &mut framed,
                &session_id,
                decision,
                &hello.name,
            )
            .await;
            // Our last `PairConfirm` or `Error` must be delivered.
            framed.into_link().close(Duration::from_secs(2)).await;
        });
        self.pairings
            .get(&id)
            .ok_or_else(|| CommandError::internal("pairing vanished"))
    }

    /// An incoming `PairRequest` after `Hello`: list it with its code and
    /// run the session until both users decided or it expires.
    pub(super) async fn serve_pairing(&self, framed: &mut Framed, peer_name: &str) {
        let peer_id = framed.link().peer;
        let Some(code) = framed.link().pairing_code() else {
            let message = "this device cannot derive a pairing code for this connection";
            let _ = framed
                .send(&Message::Error {
                    code: ErrorCode::Refused,
                    message: message.into(),
                })
                .await;
            return;
        };
        let (id, decision) = match self.pairings.register(
            Direction::In,
            peer_name,
            peer_id,
            code,
            framed.link().kind,
        ) {
            Ok(registered) => registered,
            Err(e) => {
                tracing::warn!(peer = %peer_id, "refused pairing request from {peer_name}: {e}");
                let _ = framed
                    .send(&Message::Error {
                        code: ErrorCode::Busy,
                        message: e.to_string(),
                    })
                    .await;
                return;
            }
        };
        tracing::info!(
            id,
            peer = %peer_id,
            "pairing request from {peer_name}: code {}; if the other device shows the same code, run share pair --confirm {id} (or share pair --reject {id})",
            format_code(code)
        );
        session(
            &self.pairings,
            &self.trust,
            framed,
            &id,
            decision,
            peer_name,
        )
        .await;
    }

    /// `share pair --confirm ID` / `--reject ID`: deliver the decision,
    /// then report the state once the session took it (`wait`: once the
    /// pairing is over).
    pub(super) async fn pair_decide(
        &self,
        id: &str,
        accept: bool,
        wait: bool,
    ) -> Result<PairingInfo, CommandError> {
        let id = self.pairings.decide(id, accept)?;
        let info = if wait {
            self.pairings
                .wait_until(&id, PAIRING_TIMEOUT + SETTLE_LIMIT, |i| i.state.finished())
                .await
        } else {
            self.pairings
                .wait_until(&id, SETTLE_LIMIT, |i| {
                    i.you_confirmed.is_some() || i.state.finished()
                })
                .await
        };
        info.ok_or_else(|| CommandError::not_found(format!("pairing {id} is no longer listed")))
    }
}

/// Runs one pairing session on either side: send our decision when the
/// user makes it, read the peer's, pin the peer if both said yes.
async fn session(
    pairings: &Pairings,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Pairings {
        Pairings::new(CancellationToken::new(), TaskTracker::new())
    }

    #[tokio::test]
    async fn decisions_reach_the_session_once() {
        let pairings = table();
        let peer = DeviceId::from_cert_der(b"peer");
        let (id, rx) = pairings
            .register(Direction::In, "laptop", peer, 42, TransportKind::Quic)
            .unwrap();
        let listed = pairings.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].code, "000042");
        assert_eq!(listed[0].state, PairingState::Waiting);
        assert!(listed[0].expires_in_s > 100);
        assert!(pairings.decide("zzzz", true).is_err());
        assert_eq!(pairings.decide(&id[..3], true).unwrap(), id);
        assert!(rx.await.unwrap());
        let again = pairings.decide(&id, false).unwrap_err().to_string();
        assert!(again.contains("already answered"), "{again}");
        pairings.finish(&id, PairingState::Paired, None);
        let over = pairings.decide(&id, true).unwrap_err().to_string();
        assert!(over.contains("already over"), "{over}");
        assert_eq!(pairings.list()[0].expires_in_s, 0);
    }

    #[test]
    fn incoming_requests_are_bounded() {
        let pairings = table();
        let a = DeviceId::from_cert_der(b"a");
        for _ in 0..MAX_WAITING_PER_PEER {
            pairings
                .register(Direction::In, "a", a, 1, TransportKind::Tcp)
                .unwrap();
        }
        assert!(
            pairings
                .register(Direction::In, "a", a, 1, TransportKind::Tcp)
                .is_err()
        );
        // Outgoing ones are the user's own doing and not limited.
        assert!(
            pairings
                .register(Direction::Out, "a", a, 1, TransportKind::Tcp)
                .is_ok()
        );
    }
}
