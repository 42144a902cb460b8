//! The table of pairing attempts: what `share pair --list` shows, where a
//! user's decision is delivered, and the limits on incoming requests. It
//! mirrors the transfer registry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    KEEP_FINISHED, MAX_WAITING_PAIRINGS, MAX_WAITING_PER_PEER, PAIRING_TIMEOUT, PairingError,
    PairingInfo, PairingState, format_code,
};
use crate::history::now_secs;
use crate::identity::DeviceId;
use crate::ids::{self, PrefixError};
use crate::registry::Direction;
use crate::safe_text::{CleanText, PeerName};
use crate::transport::TransportKind;

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
pub(super) struct Table {
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
    /// Stops the sessions at daemon shutdown.
    pub(super) cancel: CancellationToken,
}

impl Table {
    /// An empty table whose sessions stop when `cancel` fires.
    pub(super) fn new(cancel: CancellationToken) -> Self {
        let (changes, _) = watch::channel(0);
        Self {
            inner: Mutex::new(Inner::default()),
            changes,
            cancel,
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

    pub(super) fn get(&self, id: &str) -> Option<PairingInfo> {
        self.lock().entries.get(id).map(snapshot)
    }

    /// Adds a waiting pairing; refuses an incoming one beyond the limits.
    pub(super) fn register(
        &self,
        direction: Direction,
        peer: &PeerName,
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
        let id = ids::unused_id(|id| inner.entries.contains_key(id));
        let (tx, rx) = oneshot::channel();
        inner.seq += 1;
        let seq = inner.seq;
        inner.entries.insert(
            id.clone(),
            Entry {
                info: PairingInfo {
                    id: id.clone(),
                    direction,
                    peer: peer.clone(),
                    peer_id,
                    looks_like: None,
                    already_trusted: false,
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

    pub(super) fn update(&self, id: &str, change: impl FnOnce(&mut PairingInfo)) {
        if let Some(entry) = self.lock().entries.get_mut(id) {
            change(&mut entry.info);
        }
        self.notify();
    }

    pub(super) fn finish(&self, id: &str, state: PairingState, reason: Option<String>) {
        {
            let mut inner = self.lock();
            if let Some(entry) = inner.entries.get_mut(id) {
                entry.info.state = state;
                entry.info.reason = reason.as_deref().map(CleanText::from);
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
    pub(super) fn decide(&self, prefix: &str, accept: bool) -> Result<String, PairingError> {
        let mut inner = self.lock();
        let id = match ids::find_by_prefix(inner.entries.keys().map(String::as_str), prefix) {
            Ok(id) => id.to_owned(),
            Err(PrefixError::NotFound(p)) => return Err(PairingError::NotFound(p)),
            Err(PrefixError::Ambiguous(p)) => return Err(PairingError::Ambiguous(p)),
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
    pub(super) async fn wait_until(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table::new(CancellationToken::new())
    }

    #[tokio::test]
    async fn decisions_reach_the_session_once() {
        let pairings = table();
        let peer = DeviceId::from_cert_der(b"peer");
        let (id, rx) = pairings
            .register(
                Direction::In,
                &"laptop".into(),
                peer,
                42,
                TransportKind::Quic,
            )
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
                .register(Direction::In, &"a".into(), a, 1, TransportKind::Tcp)
                .unwrap();
        }
        assert!(
            pairings
                .register(Direction::In, &"a".into(), a, 1, TransportKind::Tcp)
                .is_err()
        );
        // Outgoing ones are the user's own doing and not limited.
        assert!(
            pairings
                .register(Direction::Out, &"a".into(), a, 1, TransportKind::Tcp)
                .is_ok()
        );
    }
}
