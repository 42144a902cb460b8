//! Queued sends: `share send --queue PEER PATH...` for a peer that is not
//! reachable now, sent when it appears (`share queue`, `share queue cancel`).
//!
//! The request returns at once with a queue ID. Each queued send gets a
//! task that waits for the peer: woken by every change of the peer table
//! (mDNS, remembered or manual peers) and, because a `HOST:PORT` peer is
//! not in any table, by a timer backing off from [`RETRY_MIN`] to
//! [`RETRY_MAX`]. When the peer resolves, a cheap probe (connect and
//! `Hello`, no offer) checks that it really answers, so the offer is only
//! prepared when a send can happen; then the send service runs it
//! ([`crate::outgoing`]), with its retries, consent and history. A send
//! that fails before reaching the peer goes back to waiting; one that
//! reached it is over either way.
//!
//! Queued sends survive restarts: `queue.json` in the state directory
//! holds what to send (the absolute paths the user named) and who asked.
//! While the daemon runs it sends through the open files the CLI passed,
//! like any send. After a restart those are gone, so the daemon walks the
//! paths again itself, but only for the user it runs as (or root): the
//! system service never opens a path on behalf of another user, who might
//! not be allowed to read it (see [`crate::transfer::source`]). Those
//! entries fail with a message asking to queue again.

mod deliver;
mod store;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::discovery::PeerTable;
use crate::history::{History, HistoryEntry, now_secs};
use crate::outgoing::SendService;
use crate::peers::{Connector, Resolver};
use crate::registry::{Direction, State, TransferKind};
pub use store::{NewQueued, QueueState, QueuedSend, What};
use store::{QueueStore, Stored};

/// File of the queue inside the state directory.
pub const QUEUE_FILE: &str = "queue.json";
/// Most sends that may be queued at once.
pub const MAX_QUEUED: usize = 64;
/// Most open files all queued sends may hold together: the control
/// socket bounds the descriptors a request holds while it runs
/// (`control::budget`), the queue those it keeps afterwards.
pub const MAX_QUEUED_FILES: usize = crate::protocol::MAX_ENTRIES;
/// First wait before looking for an absent peer again.
pub const RETRY_MIN: Duration = Duration::from_secs(2);
/// Longest wait between looks (peer-table changes wake the task earlier).
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Why a queue command failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No peer named.
    #[error("no peer given")]
    NoPeer,
    /// Nothing to send.
    #[error("nothing to send: give at least one file or directory")]
    Empty,
    /// [`MAX_QUEUED`] sends wait already.
    #[error("the queue is full ({MAX_QUEUED} sends); cancel some with `share queue cancel ID`")]
    Full,
    /// The queued sends hold [`MAX_QUEUED_FILES`] open files already.
    #[error(
        "the queue already holds {0} open files and may hold {MAX_QUEUED_FILES}; send the queued ones first or cancel some with `share queue cancel ID`"
    )]
    TooManyFiles(usize),
    /// `queue.json` could not be written.
    #[error("cannot save the send queue: {0}")]
    Save(std::io::Error),
    /// No queued send has this ID (prefix).
    #[error("no queued send with ID {0}; see `share queue`")]
    NotFound(String),
    /// The prefix matches several.
    #[error("queue ID {0} is ambiguous; type more characters")]
    Ambiguous(String),
    /// No device of that name or ID prefix was ever seen: likely a typo.
    #[error(
        "no device called \"{0}\" has been seen (`share peers` lists those that have); check the name, or queue the send anyway with --wait-for-peer"
    )]
    NeverSeen(String),
    /// What was typed is a usual mistake (an address without a port,
    /// this device's own name).
    #[error(transparent)]
    Mistake(crate::peers::ResolveError),
}

/// The send queue: its table and what delivering needs.
pub struct Queue {
    store: QueueStore,
    history: Arc<History>,
    sends: Arc<SendService>,
    resolver: Resolver,
    connector: Arc<Connector>,
    /// Changes wake waiting items.
    peers: PeerTable,
}

impl Queue {
    /// Loads the queue of `state_dir` (a corrupt file is reported and
    /// replaced by the next change). Item tasks stop when `cancel` fires.
    pub fn open(
        state_dir: &std::path::Path,
        cancel: CancellationToken,
        history: Arc<History>,
        sends: Arc<SendService>,
        resolver: Resolver,
        connector: Arc<Connector>,
        peers: PeerTable,
    ) -> Self {
        Self {
            store: QueueStore::open(state_dir, cancel),
            history,
            sends,
            resolver,
            connector,
            peers,
        }
    }

    /// `share send --queue`.
    ///
    /// # Errors
    /// No peer, nothing to send, the queue is full or cannot be saved.
    pub fn add(&self, new: NewQueued, wait_for_peer: bool) -> Result<QueuedSend, QueueError> {
        if new.peer.trim().is_empty() {
            return Err(QueueError::NoPeer);
        }
        match self.resolver.seen(&new.peer) {
            Ok(true) => {}
            Ok(false) if wait_for_peer => {}
            Ok(false) => return Err(QueueError::NeverSeen(new.peer.trim().to_owned())),
            Err(mistake) => return Err(QueueError::Mistake(mistake)),
        }
        let info = self.store.add(new)?;
        tracing::info!(
            id = info.id,
            "send to {} queued until it is reachable",
            info.peer
        );
        Ok(info)
    }

    /// `share queue`.
    pub fn list(&self) -> Vec<QueuedSend> {
        self.store.list()
    }

    /// `share queue cancel ID`. Returns what was done, in words.
    ///
    /// # Errors
    /// No or several queued sends match.
    pub fn cancel(&self, id: &str) -> Result<String, QueueError> {
        let item = self.store.cancel(id)?;
        if !item.sending {
            self.history.record(&queue_history(
                &item.stored,
                State::Cancelled,
                "removed from the queue by the user",
            ));
        }
        Ok(format!(
            "removed queued send {} to {}",
            item.stored.id, item.stored.peer
        ))
    }

    /// Starts a delivery task for every queued send, now and as they are
    /// added, until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken, tracker: TaskTracker) {
        let Some(mut added) = self.store.take_added() else {
            return;
        };
        loop {
            let id = tokio::select! {
                () = cancel.cancelled() => break,
                id = added.recv() => match id {
                    Some(id) => id,
                    None => break,
                },
            };
            tracker.spawn(self.clone().deliver(id));
        }
    }

    /// Ends queued item `id` without a transfer, recording why.
    fn fail(&self, id: &str, state: State, reason: &str) {
        if let Some(item) = self.store.remove(id) {
            tracing::warn!(id, "queued send to {} failed: {reason}", item.stored.peer);
            self.history
                .record(&queue_history(&item.stored, state, reason));
        }
    }
}

/// A history record for a queued send that ended before any transfer.
fn queue_history(stored: &Stored, outcome: State, reason: &str) -> HistoryEntry {
    let now = now_secs();
    HistoryEntry {
        id: stored.id.clone(),
        time: now,
        started: stored.queued,
        duration_s: now.saturating_sub(stored.queued) as f64,
        direction: Direction::Out,
        kind: TransferKind::Files,
        peer: stored.peer.as_str().into(),
        peer_id: None,
        looks_like: None,
        outcome,
        reason: Some(reason.into()),
        names: stored.names.iter().map(|n| n.as_str().into()).collect(),
        files: stored.files,
        bytes: 0,
        bytes_done: 0,
        bytes_sent: 0,
        transport: None,
    }
}
