//! The registry of transfers, in both directions and whatever protocol
//! carries them: what `share transfers` lists, where `share accept` /
//! `share reject` deliver their decision, and where progress counters and
//! cancellation live.
//!
//! Each transfer gets a short ID ([`crate::ids`]) that users type;
//! prefixes are accepted when unique. Finished transfers stay listed (the
//! most recent [`KEEP_FINISHED`]) so scripts can inspect outcomes.
//!
//! Every transfer reaches a final state exactly once, here, whoever ends
//! it (sender, receiver, user, expiry); so this is where a [`FinishSink`]
//! (the daemon's persistent history) hears about each one.
//!
//! For the same reason every change is published here:
//! [`Registry::subscribe`] hands out a receiver of transfer snapshots (new
//! transfer, state change, final state) for the control socket's
//! subscriptions. A transfer is announced at its first definite state: an
//! outgoing one at once, an incoming one when consent has made it pending
//! or active (so nobody mistakes an offer about to wait for the user for
//! an accepted one). It is a bounded broadcast channel: publishing never
//! waits, and a subscriber that falls more than [`CHANGES_BUFFERED`]
//! changes behind learns that it lagged and resynchronises from
//! [`Registry::list`]. Byte counters change too often to publish;
//! subscribers sample them ([`Registry::progress`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;

use crate::identity::DeviceId;
use crate::ids::{self, PrefixError};
use crate::safe_text::{CleanText, PeerName};
use crate::transport::TransportKind;

/// How many finished transfers are remembered.
pub const KEEP_FINISHED: usize = 200;

/// Changes kept for subscribers that have not read them yet (shared by
/// all subscribers; older ones are dropped and the slow subscriber told).
pub const CHANGES_BUFFERED: usize = 256;

/// Direction seen from this daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Receiving.
    In,
    /// Sending.
    Out,
}

/// Life cycle of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for the receiver's consent.
    Pending,
    /// Moving bytes.
    Active,
    /// Every file verified and in place.
    Done,
    /// Stopped by an error.
    Failed,
    /// Declined (by a user, policy, or expiry).
    Rejected,
    /// Cancelled by a user.
    Cancelled,
}

impl State {
    fn finished(self) -> bool {
        !matches!(self, Self::Pending | Self::Active)
    }

    /// The lower-case name (as in JSON), for text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }
}

impl Direction {
    /// The lower-case name (as in JSON), for text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// Why a transfer's cancel signal ([`Handle::cancelled`]) fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// A user cancelled it (`share cancel`, or the client that started
    /// the send went away): it ends, and partial data is dropped.
    Cancel,
    /// The daemon is stopping ([`Registry::stop_all`]): the transfer is
    /// paused, its resume state kept, and the peer told to retry.
    Shutdown,
}

/// What a transfer carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferKind {
    /// Files and directories (an `Offer`).
    #[default]
    Files,
    /// A short text (a `Text` message); `names` holds a preview.
    Text,
}

/// Told about every transfer once, when it reaches a final state.
pub trait FinishSink: Send + Sync {
    /// `info` is the final snapshot (counters included); `duration` is the
    /// time since the transfer was registered.
    fn finished(&self, info: &TransferInfo, duration: Duration);
}

/// A snapshot of one transfer, as shown by `share transfers --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferInfo {
    /// Short ID for `share accept` etc.
    pub id: String,
    /// `in` or `out`.
    pub direction: Direction,
    /// The peer's name.
    pub peer: PeerName,
    /// The peer's device ID.
    pub peer_id: DeviceId,
    /// The trusted device whose name the peer's looks like, if the peer
    /// is not that device ([`crate::identity::trust::TrustStore::look_alike_of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub looks_like: Option<DeviceId>,
    /// Current state.
    pub state: State,
    /// Number of files.
    pub files: usize,
    /// Total bytes of all files.
    pub bytes: u64,
    /// Bytes of the content known to be at the receiver: verified there,
    /// or sent in this attempt.
    pub bytes_done: u64,
    /// Bytes of file data actually carried over the network, over all
    /// attempts (less than `bytes` after a resume).
    pub bytes_sent: u64,
    /// Transport used.
    pub transport: TransportKind,
    /// Top-level names in the offer (a preview for a text).
    pub names: Vec<CleanText>,
    /// Why it failed or was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<CleanText>,
    /// Start time, seconds since the Unix epoch.
    pub started: u64,
    /// Files or a text.
    #[serde(default)]
    pub kind: TransferKind,
    /// Bytes of partial data this incoming transfer left on this device's
    /// disk for a resume (it was interrupted); `share cancel ID` drops
    /// them. Absent when it left none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_bytes: Option<u64>,
    /// For an offer waiting for this user's decision: seconds left before
    /// it expires as rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
    /// Where a received transfer's top-level entries were put (absolute
    /// paths, in offer order); only once it is done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saved: Vec<PathBuf>,
}

/// The byte counters of one transfer ([`Registry::progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Transfer ID.
    pub id: String,
    /// As [`TransferInfo::bytes_done`].
    pub bytes_done: u64,
    /// As [`TransferInfo::bytes_sent`].
    pub bytes_sent: u64,
    /// As [`TransferInfo::bytes`].
    pub bytes: u64,
}

/// The receiving user's answer to an offer.
#[derive(Debug)]
pub enum Decision {
    /// Go ahead.
    Accept,
    /// Decline with a reason.
    Reject(CleanText),
}

/// Errors from `accept` / `reject` / `cancel`.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No transfer has this ID (prefix).
    #[error("no transfer with ID {0}; see `share transfers`")]
    NotFound(String),
    /// The prefix matches several transfers.
    #[error("ID {0} is ambiguous; type more characters")]
    Ambiguous(String),
    /// The transfer is not in a state where `action` means anything.
    #[error("{}", nothing_to(*action, info))]
    NothingTo {
        /// What the user asked for.
        action: Action,
        /// The transfer as it is.
        info: Box<TransferInfo>,
    },
}

/// What a user asked to do with a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `share accept`.
    Accept,
    /// `share reject`.
    Reject,
    /// `share cancel`.
    Cancel,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Cancel => "cancel",
        }
    }
}

/// Why `action` does nothing to the transfer `info`, and what would.
fn nothing_to(action: Action, info: &TransferInfo) -> String {
    let (id, verb, peer) = (&info.id, action.verb(), &info.peer);
    let reason = info
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    match info.state {
        State::Done => format!("transfer {id} is already done; there is nothing to {verb}"),
        State::Failed => {
            format!("transfer {id} already failed{reason}; there is nothing to {verb}")
        }
        State::Rejected => {
            format!("transfer {id} was rejected{reason}; there is nothing to {verb}")
        }
        State::Cancelled => {
            format!("transfer {id} was already cancelled; there is nothing to {verb}")
        }
        State::Active => format!(
            "transfer {id} was already accepted and is running; there is nothing to {verb} (`share cancel {id}` stops it)"
        ),
        State::Pending if info.direction == Direction::Out => format!(
            "transfer {id} is this device's offer to {peer}, waiting for {peer} to answer; only {peer} can {verb} it (`share cancel {id}` withdraws it)"
        ),
        State::Pending => {
            format!("transfer {id} was already answered; there is nothing to {verb}")
        }
    }
}

struct Slot {
    info: TransferInfo,
    /// Subscribers have heard of it.
    announced: bool,
    /// For the duration reported to the [`FinishSink`].
    started_at: Instant,
    seq: u64,
    bytes_done: Arc<AtomicU64>,
    bytes_sent: Arc<AtomicU64>,
    decision: Option<oneshot::Sender<Decision>>,
    /// When a pending offer expires.
    decide_by: Option<Instant>,
    cancel: CancellationToken,
    /// Set once, by whoever fires `cancel` first.
    cause: Arc<OnceLock<StopCause>>,
}

impl Slot {
    /// Fires the cancel signal for `cause`, unless it fired already.
    fn stop(&self, cause: StopCause) {
        let _ = self.cause.set(cause);
        self.cancel.cancel();
    }
}

#[derive(Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    seq: u64,
    sink: Option<Arc<dyn FinishSink>>,
    /// Set by [`Registry::stop_all`]: transfers registered later are
    /// stopped at once.
    stopping: bool,
}

/// Shared table of transfers.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
    changes: broadcast::Sender<TransferInfo>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changes: broadcast::Sender::new(CHANGES_BUFFERED),
        }
    }
}

/// What a new transfer is about.
pub struct NewTransfer {
    /// Direction.
    pub direction: Direction,
    /// Peer name.
    pub peer: PeerName,
    /// Peer device ID.
    pub peer_id: DeviceId,
    /// Number of files.
    pub files: usize,
    /// Total bytes.
    pub bytes: u64,
    /// Transport.
    pub transport: TransportKind,
    /// Top-level names.
    pub names: Vec<CleanText>,
}

/// The owner's handle on one registered transfer.
pub struct Handle {
    id: String,
    registry: Registry,
    bytes_done: Arc<AtomicU64>,
    bytes_sent: Arc<AtomicU64>,
    cancel: CancellationToken,
    cause: Arc<OnceLock<StopCause>>,
}

impl Registry {
    /// A registry that reports every finished transfer to `sink`.
    pub fn with_sink(sink: Arc<dyn FinishSink>) -> Self {
        let registry = Self::default();
        registry.lock().sink = Some(sink);
        registry
    }

    /// Registers a transfer in state `Active` (or `Pending` via [`Handle::pending`]).
    pub fn start(&self, new: NewTransfer) -> Handle {
        let mut inner = self.lock();
        let id = ids::unused_id(|id| inner.slots.contains_key(id));
        inner.seq += 1;
        let seq = inner.seq;
        let bytes_done = Arc::new(AtomicU64::new(0));
        let bytes_sent = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let info = TransferInfo {
            id: id.clone(),
            direction: new.direction,
            peer: new.peer,
            peer_id: new.peer_id,
            looks_like: None,
            state: State::Active,
            files: new.files,
            bytes: new.bytes,
            bytes_done: 0,
            bytes_sent: 0,
            transport: new.transport,
            names: new.names,
            reason: None,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            kind: TransferKind::Files,
            partial_bytes: None,
            expires_in_s: None,
            saved: Vec::new(),
        };
        let cause = Arc::new(OnceLock::new());
        let mut slot = Slot {
            announced: false,
            info,
            started_at: Instant::now(),
            seq,
            bytes_done: bytes_done.clone(),
            bytes_sent: bytes_sent.clone(),
            decision: None,
            decide_by: None,
            cancel: cancel.clone(),
            cause: cause.clone(),
        };
        if inner.stopping {
            slot.stop(StopCause::Shutdown);
        }
        if slot.info.direction == Direction::Out {
            self.publish(&mut slot);
        }
        inner.slots.insert(id.clone(), slot);
        Handle {
            id,
            registry: self.clone(),
            bytes_done,
            bytes_sent,
            cancel,
            cause,
        }
    }

    /// All transfers, oldest first, with live byte counters.
    pub fn list(&self) -> Vec<TransferInfo> {
        let inner = self.lock();
        let mut slots: Vec<&Slot> = inner.slots.values().collect();
        slots.sort_by_key(|s| s.seq);
        slots.into_iter().map(Slot::snapshot).collect()
    }

    /// The live counters of the transfers that are not finished.
    pub fn progress(&self) -> Vec<Progress> {
        self.lock()
            .slots
            .values()
            .filter(|s| !s.info.state.finished())
            .map(|s| Progress {
                id: s.info.id.clone(),
                bytes_done: s.bytes_done.load(Ordering::Relaxed),
                bytes_sent: s.bytes_sent.load(Ordering::Relaxed),
                bytes: s.info.bytes,
            })
            .collect()
    }

    /// Every change from now on (see the module documentation). To start
    /// from a consistent state, subscribe first and then [`list`](Self::list).
    pub fn subscribe(&self) -> broadcast::Receiver<TransferInfo> {
        self.changes.subscribe()
    }

    /// Tells subscribers about `slot`'s new snapshot. Called with the lock
    /// held, so they see changes in the order they happened.
    fn publish(&self, slot: &mut Slot) {
        slot.announced = true;
        if self.changes.receiver_count() > 0 {
            // An error only means nobody listens.
            let _ = self.changes.send(slot.snapshot());
        }
    }

    /// Delivers the user's decision to a pending offer.
    pub fn decide(&self, id_prefix: &str, decision: Decision) -> Result<String, RegistryError> {
        let mut inner = self.lock();
        let id = resolve(&inner, id_prefix)?;
        let slot = inner
            .slots
            .get_mut(&id)
            .ok_or_else(|| RegistryError::NotFound(id_prefix.to_owned()))?;
        let action = match decision {
            Decision::Accept => Action::Accept,
            Decision::Reject(_) => Action::Reject,
        };
        match slot.decision.take() {
            Some(tx) if slot.info.state == State::Pending => {
                let _ = tx.send(decision);
                Ok(id)
            }
            _ => Err(RegistryError::NothingTo {
                action,
                info: Box::new(slot.info.clone()),
            }),
        }
    }

    /// Cancels a pending or active transfer.
    pub fn cancel(&self, id_prefix: &str) -> Result<String, RegistryError> {
        let inner = self.lock();
        let id = resolve(&inner, id_prefix)?;
        match inner.slots.get(&id) {
            Some(slot) if !slot.info.state.finished() => {
                slot.stop(StopCause::Cancel);
                Ok(id)
            }
            Some(slot) => Err(RegistryError::NothingTo {
                action: Action::Cancel,
                info: Box::new(slot.info.clone()),
            }),
            None => Err(RegistryError::NotFound(id_prefix.to_owned())),
        }
    }

    /// The daemon stops: pauses everything still running, and whatever
    /// registers from now on, with [`StopCause::Shutdown`] (a transfer a
    /// user cancelled just before stays cancelled).
    pub fn stop_all(&self) {
        let mut inner = self.lock();
        inner.stopping = true;
        for slot in inner.slots.values() {
            slot.stop(StopCause::Shutdown);
        }
    }

    /// Whether [`Registry::stop_all`] was called: the daemon stops.
    pub fn is_stopping(&self) -> bool {
        self.lock().stopping
    }

    fn set_state(&self, id: &str, state: State, reason: Option<String>) {
        let mut inner = self.lock();
        let mut newly_finished = None;
        if let Some(slot) = inner.slots.get_mut(id) {
            let was_finished = slot.info.state.finished();
            slot.info.state = state;
            slot.info.reason = reason.as_deref().map(CleanText::from);
            if state.finished() {
                slot.decision = None;
                if !was_finished {
                    newly_finished = Some((slot.snapshot(), slot.started_at.elapsed()));
                }
            }
            self.publish(slot);
        }
        // Told outside the lock: the sink may do I/O.
        let report = inner.sink.clone().zip(newly_finished);
        let finished = inner
            .slots
            .values()
            .filter(|s| s.info.state.finished())
            .count();
        if finished > KEEP_FINISHED
            && let Some(oldest) = inner
                .slots
                .values()
                .filter(|s| s.info.state.finished())
                .min_by_key(|s| s.seq)
                .map(|s| s.info.id.clone())
        {
            inner.slots.remove(&oldest);
        }
        drop(inner);
        if let Some((sink, (info, duration))) = report {
            sink.finished(&info, duration);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
impl TransferInfo {
    /// For tests: an incoming transfer of one 100-byte file `a.txt` from
    /// "laptop", in `state`.
    pub(crate) fn example(id: &str, state: State) -> Self {
        Self {
            id: id.into(),
            direction: Direction::In,
            peer: "laptop".into(),
            peer_id: DeviceId::from_cert_der(b"laptop"),
            looks_like: None,
            state,
            files: 1,
            bytes: 100,
            bytes_done: 0,
            bytes_sent: 0,
            transport: TransportKind::Quic,
            names: vec!["a.txt".into()],
            reason: None,
            started: 0,
            kind: TransferKind::Files,
            partial_bytes: None,
            expires_in_s: None,
            saved: Vec::new(),
        }
    }
}

impl Slot {
    /// The transfer's info with the live byte counters.
    fn snapshot(&self) -> TransferInfo {
        let mut info = self.info.clone();
        info.bytes_done = self.bytes_done.load(Ordering::Relaxed);
        info.bytes_sent = self.bytes_sent.load(Ordering::Relaxed);
        info.expires_in_s = self
            .decide_by
            .filter(|_| self.decision.is_some() && info.state == State::Pending)
            .map(|by| by.saturating_duration_since(Instant::now()).as_secs());
        info
    }
}

fn resolve(inner: &Inner, prefix: &str) -> Result<String, RegistryError> {
    match ids::find_by_prefix(inner.slots.keys().map(String::as_str), prefix) {
        Ok(id) => Ok(id.to_owned()),
        Err(PrefixError::NotFound(p)) => Err(RegistryError::NotFound(p)),
        Err(PrefixError::Ambiguous(p)) => Err(RegistryError::Ambiguous(p)),
    }
}

impl Handle {
    /// The transfer's ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Cancellation signal for this transfer; [`Handle::stop_cause`]
    /// says why it fired.
    pub fn cancelled(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Why the cancel signal fired, if it did.
    pub fn stop_cause(&self) -> Option<StopCause> {
        self.cause.get().copied()
    }

    /// Cancels the transfer on behalf of a user (the client that started
    /// it went away), unless it was stopped already.
    pub fn cancel(&self) {
        let _ = self.cause.set(StopCause::Cancel);
        self.cancel.cancel();
    }

    /// Counts `n` more bytes carried over the network (and now done).
    pub fn add_sent(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
        self.bytes_sent.fetch_add(n, Ordering::Relaxed);
    }

    /// At the start of an attempt: `n` bytes are already at the receiver.
    pub fn set_resumed(&self, n: u64) {
        self.bytes_done.store(n, Ordering::Relaxed);
    }

    /// Bytes carried over the network so far, over all attempts.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }

    /// The shared counters (done, sent), for a blocking worker to update.
    pub fn counters(&self) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
        (self.bytes_done.clone(), self.bytes_sent.clone())
    }

    /// Bytes done so far.
    pub fn bytes_done(&self) -> u64 {
        self.bytes_done.load(Ordering::Relaxed)
    }

    /// Marks the transfer pending, to be decided within `timeout`, and
    /// returns where the decision arrives.
    pub fn pending(&self, timeout: Duration) -> oneshot::Receiver<Decision> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.registry.lock();
        if let Some(slot) = inner.slots.get_mut(&self.id) {
            slot.info.state = State::Pending;
            slot.decision = Some(tx);
            slot.decide_by = Some(Instant::now() + timeout);
            self.registry.publish(slot);
        }
        rx
    }

    /// Marks what the transfer carries (files by default).
    pub fn set_kind(&self, kind: TransferKind) {
        let mut inner = self.registry.lock();
        if let Some(slot) = inner.slots.get_mut(&self.id) {
            slot.info.kind = kind;
            if slot.announced {
                self.registry.publish(slot);
            }
        }
    }

    /// Records where a received transfer's entries were put, before it
    /// is marked done (which publishes them).
    pub fn set_saved(&self, paths: Vec<PathBuf>) {
        let mut inner = self.registry.lock();
        if let Some(slot) = inner.slots.get_mut(&self.id) {
            slot.info.saved = paths;
        }
    }

    /// Flags the peer as a stranger whose name looks like that of the
    /// trusted device `trusted`.
    pub fn set_looks_like(&self, trusted: DeviceId) {
        let mut inner = self.registry.lock();
        if let Some(slot) = inner.slots.get_mut(&self.id) {
            slot.info.looks_like = Some(trusted);
        }
    }

    /// Records the transport of the current attempt.
    pub fn set_transport(&self, transport: TransportKind) {
        let mut inner = self.registry.lock();
        if let Some(slot) = inner.slots.get_mut(&self.id) {
            slot.info.transport = transport;
        }
    }

    /// Marks an outgoing transfer as waiting for the peer's consent.
    pub fn waiting(&self) {
        self.registry.set_state(&self.id, State::Pending, None);
    }

    /// Moves to `Active`.
    pub fn active(&self) {
        self.registry.set_state(&self.id, State::Active, None);
    }

    /// Records the final state.
    pub fn finish(&self, state: State, reason: Option<String>) {
        self.registry.set_state(&self.id, state, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new() -> NewTransfer {
        NewTransfer {
            direction: Direction::In,
            peer: "p".into(),
            peer_id: DeviceId::from_cert_der(b"p"),
            files: 1,
            bytes: 10,
            transport: TransportKind::Quic,
            names: vec!["a".into()],
        }
    }

    /// Accepting, rejecting or cancelling a transfer that is past that
    /// point says what state it is in and that there is nothing to do, in
    /// words (not a Rust enum name), with what would work instead.
    #[test]
    fn nothing_to_do_says_the_state_and_the_verb() {
        let registry = Registry::default();
        let done = registry.start(new());
        done.finish(State::Done, None);
        let failed = registry.start(new());
        failed.finish(State::Failed, Some("the source file changed".into()));
        for (handle, says) in [
            (&done, "already done"),
            (&failed, "already failed (the source file changed)"),
        ] {
            for (action, message) in [
                (
                    Action::Accept,
                    registry.decide(handle.id(), Decision::Accept),
                ),
                (
                    Action::Reject,
                    registry.decide(handle.id(), Decision::Reject("no".into())),
                ),
                (Action::Cancel, registry.cancel(handle.id())),
            ] {
                let message = message.unwrap_err().to_string();
                assert!(message.contains(says), "{message}");
                assert!(
                    message.ends_with(&format!("nothing to {}", action.verb())),
                    "{message}"
                );
            }
        }
        let running = registry.start(new());
        running.active();
        let message = registry
            .decide(running.id(), Decision::Accept)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("already accepted and is running"),
            "{message}"
        );
        assert!(
            message.contains(&format!("`share cancel {}`", running.id())),
            "{message}"
        );
        let mut outgoing = new();
        outgoing.direction = Direction::Out;
        let offered = registry.start(outgoing);
        offered.waiting();
        let message = registry
            .decide(offered.id(), Decision::Accept)
            .unwrap_err()
            .to_string();
        assert!(message.contains("only p can accept it"), "{message}");
    }

    #[tokio::test]
    async fn decision_reaches_pending_offer_by_prefix() {
        let registry = Registry::default();
        let handle = registry.start(new());
        let rx = handle.pending(Duration::from_secs(120));
        let listed = &registry.list()[0];
        assert_eq!(listed.state, State::Pending);
        assert!(
            (119..=120).contains(&listed.expires_in_s.unwrap()),
            "{listed:?}"
        );
        let id = registry
            .decide(&handle.id()[..4], Decision::Accept)
            .unwrap();
        assert_eq!(id, handle.id());
        assert!(matches!(rx.await, Ok(Decision::Accept)));
        handle.active();
        assert!(matches!(
            registry.decide(handle.id(), Decision::Accept),
            Err(RegistryError::NothingTo { .. })
        ));
        assert!(matches!(
            registry.decide("zzzz", Decision::Accept),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn progress_and_final_state_are_listed() {
        let registry = Registry::default();
        let handle = registry.start(new());
        handle.add_sent(7);
        handle.finish(State::Failed, Some("disk full".into()));
        let info = &registry.list()[0];
        assert_eq!((info.bytes_done, info.state), (7, State::Failed));
        assert_eq!(info.reason.as_deref(), Some("disk full"));
    }

    #[test]
    fn changes_are_published_in_order_incoming_ones_after_consent() {
        let registry = Registry::default();
        let mut changes = registry.subscribe();
        let incoming = registry.start(new());
        assert!(changes.try_recv().is_err(), "announced before consent");
        let _decision = incoming.pending(Duration::from_secs(120));
        let outgoing = registry.start(NewTransfer {
            direction: Direction::Out,
            ..new()
        });
        outgoing.waiting();
        incoming.active();
        incoming.set_saved(vec![PathBuf::from("/dl/a")]);
        incoming.add_sent(10);
        incoming.finish(State::Done, None);
        let seen: Vec<(String, State)> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|t| (t.id, t.state))
            .collect();
        let (i, o) = (incoming.id().to_owned(), outgoing.id().to_owned());
        assert_eq!(
            seen,
            [
                (i.clone(), State::Pending),
                (o.clone(), State::Active),
                (o, State::Pending),
                (i.clone(), State::Active),
                (i, State::Done),
            ]
        );
        let done = registry.list().into_iter().find(|t| t.state == State::Done);
        let done = done.unwrap();
        assert_eq!((done.bytes_done, done.saved.len()), (10, 1));
    }

    #[test]
    fn a_slow_subscriber_lags_and_publishing_never_waits() {
        let registry = Registry::default();
        let mut slow = registry.subscribe();
        let handle = registry.start(new());
        for _ in 0..CHANGES_BUFFERED + 10 {
            handle.active();
        }
        assert!(matches!(
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
        assert_eq!(
            std::iter::from_fn(|| slow.try_recv().ok()).count(),
            CHANGES_BUFFERED
        );
    }

    #[derive(Default)]
    struct Collect(Mutex<Vec<TransferInfo>>);

    impl FinishSink for Collect {
        fn finished(&self, info: &TransferInfo, _: Duration) {
            self.0.lock().unwrap().push(info.clone());
        }
    }

    #[test]
    fn sink_hears_each_final_state_once() {
        let sink = Arc::new(Collect::default());
        let registry = Registry::with_sink(sink.clone());
        let a = registry.start(new());
        let b = registry.start(new());
        b.set_kind(TransferKind::Text);
        a.waiting();
        a.active();
        a.add_sent(10);
        assert!(sink.0.lock().unwrap().is_empty());
        a.finish(State::Done, None);
        a.finish(State::Failed, Some("late".into()));
        b.finish(State::Rejected, Some("no".into()));
        let seen = sink.0.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].state, seen[0].bytes_done), (State::Done, 10));
        assert_eq!(
            (seen[1].state, seen[1].kind, seen[1].reason.as_deref()),
            (State::Rejected, TransferKind::Text, Some("no"))
        );
    }

    /// A stop pauses what runs and whatever registers afterwards; a user's
    /// cancel that came first stays a cancel.
    #[test]
    fn a_stop_is_told_apart_from_a_cancel() {
        let registry = Registry::default();
        let running = registry.start(new());
        let cancelled = registry.start(new());
        let by_caller = registry.start(new());
        assert_eq!(running.stop_cause(), None);
        registry.cancel(cancelled.id()).unwrap();
        by_caller.cancel();
        registry.stop_all();
        assert!(registry.is_stopping());
        assert!(running.cancelled().is_cancelled());
        assert_eq!(running.stop_cause(), Some(StopCause::Shutdown));
        assert_eq!(cancelled.stop_cause(), Some(StopCause::Cancel));
        assert_eq!(by_caller.stop_cause(), Some(StopCause::Cancel));
        let late = registry.start(new());
        assert!(late.cancelled().is_cancelled());
        assert_eq!(late.stop_cause(), Some(StopCause::Shutdown));
        // A cancel after the stop does not change why it stopped.
        late.cancel();
        assert_eq!(late.stop_cause(), Some(StopCause::Shutdown));
    }
}
