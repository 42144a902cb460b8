//! Queued sends: `share send --queue PEER PATH...` for a peer that is not
//! reachable now, sent when it appears (`share queue`, `share queue cancel`).
//!
//! The request returns at once with a queue ID. Each queued send gets a
//! task that waits for the peer: woken by every change of the peer table
//! (mDNS, remembered or manual peers) and, because a `HOST:PORT` peer is
//! not in any table, by a timer backing off from [`RETRY_MIN`] to
//! [`RETRY_MAX`]. When the peer resolves, a cheap probe (connect and
//! `Hello`, no offer) checks that it really answers, so the offer is only
//! prepared when a send can happen; then the ordinary send path runs, with
//! its retries, consent and history. A send that fails before connecting
//! goes back to waiting; one that reached the peer is over either way.
//!
//! Queued sends survive restarts: `queue.json` in the state directory
//! holds what to send (the absolute paths the user named) and who asked.
//! While the daemon runs it sends through the open files the CLI passed,
//! like any send. After a restart those are gone, so the daemon walks the
//! paths again itself, but only for the user it runs as (or root): the
//! system service never opens a path on behalf of another user, who might
//! not be allowed to read it (see [`crate::transfer::source`]). Those
//! entries fail with a message asking to queue again.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Shared;
use super::history::now_secs;
use crate::control::records::{HistoryEntry, QueueState, QueuedSend};
use crate::control::{Ack, CommandError, ErrorKind, SendEntry, SendEvent};
use crate::transfer::registry::{Direction, State, TransferKind};
use crate::transfer::source::{self, SourceFile};
use crate::transport::dial::{DialError, Preference};

/// File of the queue inside the state directory.
pub(super) const QUEUE_FILE: &str = "queue.json";
/// Most sends that may be queued at once.
pub(super) const MAX_QUEUED: usize = 64;
/// Most open files all queued sends may hold together: the control
/// socket bounds the descriptors a request holds while it runs
/// ([`crate::control::budget`]), the queue those it keeps afterwards.
pub(super) const MAX_QUEUED_FILES: usize = crate::protocol::MAX_ENTRIES;
/// First wait before looking for an absent peer again.
pub(super) const RETRY_MIN: Duration = Duration::from_secs(2);
/// Longest wait between looks (peer-table changes wake the task earlier).
pub(super) const RETRY_MAX: Duration = Duration::from_secs(60);

/// What is persisted about one queued send.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    id: String,
    peer: String,
    transport: Preference,
    /// Absolute paths the user named, for a walk after a restart.
    roots: Vec<PathBuf>,
    names: Vec<String>,
    files: usize,
    queued: u64,
    /// Who queued it (`SO_PEERCRED`).
    uid: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct QueueFile {
    version: u32,
    items: Vec<Stored>,
}

/// The files of a send, as the send path takes them.
type What = Vec<(String, Option<SourceFile>)>;

struct Item {
    stored: Stored,
    /// The open files the CLI passed (`None` after a restart).
    what: Option<What>,
    skipped: Vec<String>,
    sending: bool,
    attempts: u32,
    last_error: Option<String>,
    /// Fires on `share queue cancel` and on daemon shutdown.
    cancel: CancellationToken,
}

/// The queued sends and their persistence.
pub(super) struct Queue {
    path: PathBuf,
    items: Mutex<Vec<Item>>,
    /// New item IDs for [`run`], which starts their tasks.
    added: mpsc::UnboundedSender<String>,
    added_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Parent of every item's token: the daemon's shutdown.
    cancel: CancellationToken,
}

/// A new queued send, from the control request.
pub(super) struct NewQueued {
    pub(super) peer: String,
    pub(super) entries: Vec<SendEntry>,
    pub(super) skipped: Vec<String>,
    pub(super) transport: Preference,
    pub(super) roots: Vec<PathBuf>,
    pub(super) uid: u32,
}

/// Whether a look for the peer found it answering.
enum Probe {
    Ready,
    /// Not there (yet); keep waiting.
    Absent(String),
    /// It answered but refused us or is not who we expect: give up.
    Refused(String),
}

impl Queue {
    /// Loads `state_dir/queue.json` (a corrupt file is reported and
    /// replaced by the next change). Item tasks stop when `cancel` fires.
    pub(super) fn open(state_dir: &Path, cancel: CancellationToken) -> Self {
        let path = state_dir.join(QUEUE_FILE);
        let stored = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<QueueFile>(&bytes) {
                Ok(file) => file.items,
                Err(e) => {
                    tracing::warn!(
                        "{} is corrupt ({e}); starting with an empty send queue",
                        path.display()
                    );
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(
                    "cannot read {} ({e}); starting with an empty send queue",
                    path.display()
                );
                Vec::new()
            }
        };
        let (added, added_rx) = mpsc::unbounded_channel();
        let items = stored
            .into_iter()
            .map(|stored| {
                let _ = added.send(stored.id.clone());
                Item {
                    stored,
                    what: None,
                    skipped: Vec::new(),
                    sending: false,
                    attempts: 0,
                    last_error: None,
                    cancel: cancel.child_token(),
                }
            })
            .collect();
        Self {
            path,
            items: Mutex::new(items),
            added,
            added_rx: Mutex::new(Some(added_rx)),
            cancel,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Item>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a send with the open files the CLI passed.
    fn add(&self, new: NewQueued, what: What) -> Result<QueuedSend, CommandError> {
        if what.is_empty() {
            return Err(CommandError::invalid(
                "nothing to send: give at least one file or directory",
            ));
        }
        let mut items = self.lock();
        if items.len() >= MAX_QUEUED {
            return Err(CommandError::new(
                ErrorKind::Busy,
                format!(
                    "the queue is full ({MAX_QUEUED} sends); cancel some with `share queue cancel ID`"
                ),
            ));
        }
        let held: usize = items
            .iter()
            .filter(|i| i.what.is_some())
            .map(|i| i.stored.files)
            .sum();
        let files = what.iter().filter(|(_, file)| file.is_some()).count();
        if held + files > MAX_QUEUED_FILES {
            return Err(CommandError::new(
                ErrorKind::Busy,
                format!(
                    "the queue already holds {held} open files and may hold {MAX_QUEUED_FILES}; send the queued ones first or cancel some with `share queue cancel ID`"
                ),
            ));
        }
        let id = loop {
            let candidate = random_id();
            if !items.iter().any(|i| i.stored.id == candidate) {
                break candidate;
            }
        };
        let stored = Stored {
            id: id.clone(),
            peer: new.peer,
            transport: new.transport,
            roots: new.roots,
            names: new
                .entries
                .iter()
                .filter(|e| !e.path.contains('/'))
                .map(|e| e.path.clone())
                .collect(),
            files: new.entries.iter().filter(|e| !e.dir).count(),
            queued: now_secs(),
            uid: new.uid,
        };
        items.push(Item {
            stored,
            what: Some(what),
            skipped: new.skipped,
            sending: false,
            attempts: 0,
            last_error: None,
            cancel: self.cancel.child_token(),
        });
        if let Err(e) = self.save(&items) {
            items.pop();
            return Err(CommandError::io(format!("cannot save the send queue: {e}")));
        }
        let info = items
            .last()
            .map(info)
            .ok_or_else(|| CommandError::internal("empty queue"))?;
        drop(items);
        let _ = self.added.send(id);
        Ok(info)
    }

    /// Every queued send, oldest first.
    fn list(&self) -> Vec<QueuedSend> {
        self.lock().iter().map(info).collect()
    }

    /// Removes a queued send (ID or unique prefix) and stops its task.
    fn cancel(&self, prefix: &str) -> Result<(Item, Vec<QueuedSend>), CommandError> {
        let prefix = prefix.trim().to_ascii_lowercase();
        let mut items = self.lock();
        let matches: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| !prefix.is_empty() && i.stored.id.starts_with(&prefix))
            .map(|(n, _)| n)
            .collect();
        let index = match matches.as_slice() {
            [] => {
                return Err(CommandError::not_found(format!(
                    "no queued send with ID {prefix}; see `share queue`"
                )));
            }
            [one] => *one,
            _ => {
                return Err(CommandError::new(
                    ErrorKind::Ambiguous,
                    format!("queue ID {prefix} is ambiguous; type more characters"),
                ));
            }
        };
        let item = items.remove(index);
        item.cancel.cancel();
        if let Err(e) = self.save(&items) {
            tracing::warn!("cannot save the send queue: {e}");
        }
        let rest = items.iter().map(info).collect();
        Ok((item, rest))
    }

    /// Removes a finished item; `None` if it is gone already (cancelled).
    fn remove(&self, id: &str) -> Option<Item> {
        let mut items = self.lock();
        let index = items.iter().position(|i| i.stored.id == id)?;
        let item = items.remove(index);
        if let Err(e) = self.save(&items) {
            tracing::warn!("cannot save the send queue: {e}");
        }
        Some(item)
    }

    /// Applies `change` to item `id`; `None` if it is gone.
    fn with<T>(&self, id: &str, change: impl FnOnce(&mut Item) -> T) -> Option<T> {
        self.lock()
            .iter_mut()
            .find(|i| i.stored.id == id)
            .map(change)
    }

    /// Atomically rewrites the queue file (temp, fsync, rename).
    fn save(&self, items: &[Item]) -> std::io::Result<()> {
        let file = QueueFile {
            version: 1,
            items: items.iter().map(|i| i.stored.clone()).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        crate::state_file::replace(&self.path, &bytes)
    }
}

fn info(item: &Item) -> QueuedSend {
    QueuedSend {
        id: item.stored.id.clone(),
        peer: item.stored.peer.clone(),
        names: item.stored.names.clone(),
        files: item.stored.files,
        transport: item.stored.transport,
        queued: item.stored.queued,
        state: if item.sending {
            QueueState::Sending
        } else {
            QueueState::Waiting
        },
        attempts: item.attempts,
        last_error: item.last_error.clone(),
    }
}

/// A short random ID (8 hex digits), as for transfers.
pub(super) fn random_id() -> String {
    let mut bytes = [0u8; 4];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        bytes = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            .to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts a task for every queued send, now and as they are added, until
/// the daemon stops.
pub(super) async fn run(shared: Arc<Shared>, cancel: CancellationToken, tracker: TaskTracker) {
    let Some(mut added) = shared
        .queue
        .added_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
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
        tracker.spawn(deliver(shared.clone(), id));
    }
}

/// Waits for the peer of queued send `id`, then sends; see the module docs.
async fn deliver(shared: Arc<Shared>, id: String) {
    let Some((peer, preference, cancel)) = shared.queue.with(&id, |i| {
        (i.stored.peer.clone(), i.stored.transport, i.cancel.clone())
    }) else {
        return;
    };
    let mut changes = shared.peers.subscribe();
    let mut backoff = RETRY_MIN;
    loop {
        changes.borrow_and_update();
        let probe = tokio::select! {
            p = shared.probe_queued(&peer, preference) => p,
            () = cancel.cancelled() => return,
        };
        match probe {
            Probe::Ready => match shared.send_queued(&id, &peer, preference, &cancel).await {
                Some(error) => {
                    shared.queue.with(&id, |i| {
                        i.attempts += 1;
                        i.last_error = Some(error);
                    });
                }
                None => return,
            },
            Probe::Absent(reason) => {
                tracing::debug!(id, "queued send to {peer} still waiting: {reason}");
                shared.queue.with(&id, |i| i.last_error = Some(reason));
            }
            Probe::Refused(reason) => {
                shared.fail_queued(&id, State::Failed, &reason);
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(RETRY_MAX),
            _ = changes.changed() => backoff = RETRY_MIN,
            () = cancel.cancelled() => return,
        }
    }
}

impl Shared {
    /// `share send --queue`.
    pub(super) fn queue_send(
        &self,
        new: NewQueued,
        files: Vec<fs::File>,
    ) -> Result<QueuedSend, CommandError> {
        if new.peer.trim().is_empty() {
            return Err(CommandError::invalid("no peer given"));
        }
        let what = super::commands::attach_files(new.entries.clone(), files)?;
        let info = self.queue.add(new, what)?;
        tracing::info!(
            id = info.id,
            "send to {} queued until it is reachable",
            info.peer
        );
        Ok(info)
    }

    /// `share queue`.
    pub(super) fn queue_list(&self) -> Vec<QueuedSend> {
        self.queue.list()
    }

    /// `share queue cancel ID`.
    pub(super) fn queue_cancel(&self, id: &str) -> Result<Ack, CommandError> {
        let (item, _) = self.queue.cancel(id)?;
        if !item.sending {
            self.history.record(&queue_history(
                &item.stored,
                State::Cancelled,
                "removed from the queue by the user",
            ));
        }
        let message = format!(
            "removed queued send {} to {}",
            item.stored.id, item.stored.peer
        );
        Ok(Ack { message })
    }

    /// Whether `peer` resolves and answers a `Hello` now.
    async fn probe_queued(&self, peer: &str, preference: Preference) -> Probe {
        let resolved = match self.resolve(peer).await {
            Ok(resolved) => resolved,
            Err(e) => return Probe::Absent(e.to_string()),
        };
        let dial = self
            .dialer
            .dial(&resolved.target, preference, |link| self.authenticate(link))
            .await;
        match dial {
            Ok(((framed, _), _)) => {
                framed
                    .into_link()
                    .abort("queued send: checking that the peer is up");
                Probe::Ready
            }
            Err(DialError::Refused(e)) => Probe::Refused(format!("{}: {e}", resolved.label)),
            Err(e) => Probe::Absent(format!("cannot reach {}: {e}", resolved.label)),
        }
    }

    /// Sends queued item `id` now. `None`: it is over (sent, failed for
    /// good, cancelled, or the daemon stops); `Some(error)`: it did not go
    /// out and keeps waiting.
    async fn send_queued(
        &self,
        id: &str,
        peer: &str,
        preference: Preference,
        cancel: &CancellationToken,
    ) -> Option<String> {
        let (what, skipped) = match self.queued_files(id).await? {
            Ok(files) => files,
            Err(reason) => {
                self.fail_queued(id, State::Failed, &reason.to_string());
                return None;
            }
        };
        self.queue.with(id, |i| i.sending = true);
        tracing::info!(id, "{peer} is reachable; sending queued files");
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let result = self
            .send(
                peer,
                (what, skipped),
                preference,
                None,
                events_tx,
                cancel.clone(),
            )
            .await;
        let (mut prepared, mut connected) = (false, false);
        while let Ok(event) = events.try_recv() {
            match event {
                SendEvent::Prepared { .. } => prepared = true,
                SendEvent::Connected { .. } => connected = true,
                _ => {}
            }
        }
        self.queue.with(id, |i| i.sending = false);
        if cancel.is_cancelled() {
            // Removed by the user (already out of the queue), or the daemon
            // stops (kept in the file for the next start).
            return None;
        }
        match result {
            Ok(_) => {
                tracing::info!(id, "queued send to {peer} delivered");
                self.queue.remove(id);
                None
            }
            // It reached the peer: the transfer is in the history, and
            // whatever ended it (a rejection, a failure after retries) is
            // not cured by waiting for the peer to appear.
            Err(e) if connected => {
                tracing::warn!(id, "queued send to {peer} failed: {e}");
                self.queue.remove(id);
                None
            }
            // The files were fine, the peer went away again in between.
            Err(e) if prepared => Some(e.to_string()),
            Err(e) => {
                self.fail_queued(id, State::Failed, &e.to_string());
                None
            }
        }
    }

    /// The files of item `id`: the ones the CLI passed, or (after a
    /// restart) opened again from the paths. `None` if the item is gone.
    async fn queued_files(&self, id: &str) -> Option<Result<(What, Vec<String>), CommandError>> {
        let (what, skipped, stored) = self.queue.with(id, |i| {
            (i.what.clone(), i.skipped.clone(), i.stored.clone())
        })?;
        if let Some(what) = what {
            return Some(Ok((what, skipped)));
        }
        let own = rustix::process::geteuid().as_raw();
        if stored.uid != own && stored.uid != 0 {
            return Some(Err(CommandError::new(
                ErrorKind::Refused,
                format!(
                    "queued by user {} before the daemon restarted; the daemon does not open other users' files itself, so queue it again",
                    stored.uid
                ),
            )));
        }
        let roots = stored.roots.clone();
        let reopened = tokio::task::spawn_blocking(move || {
            let layout = source::walk(&roots)?;
            let what = layout.open_all()?;
            let skipped = layout.skipped.iter().map(ToString::to_string).collect();
            Ok::<_, source::SourceError>((what, skipped))
        })
        .await;
        Some(match reopened {
            Ok(Ok(files)) => Ok(files),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(CommandError::internal(e)),
        })
    }

    /// Ends queued item `id` without a transfer, recording why.
    fn fail_queued(&self, id: &str, state: State, reason: &str) {
        if let Some(item) = self.queue.remove(id) {
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
        peer: stored.peer.clone(),
        peer_id: None,
        outcome,
        reason: Some(reason.to_owned()),
        names: stored.names.clone(),
        files: stored.files,
        bytes: 0,
        bytes_done: 0,
        bytes_sent: 0,
        transport: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(peer: &str) -> NewQueued {
        NewQueued {
            peer: peer.into(),
            entries: vec![
                SendEntry {
                    path: "docs".into(),
                    dir: true,
                },
                SendEntry {
                    path: "docs/a.txt".into(),
                    dir: false,
                },
            ],
            skipped: Vec::new(),
            transport: Preference::Auto,
            roots: vec![PathBuf::from("/tmp/docs")],
            uid: 1000,
        }
    }

    #[test]
    fn queue_persists_and_cancels_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let queue = Queue::open(dir.path(), cancel.clone());
        let what: What = vec![("docs".into(), None)];
        let a = queue.add(new("desktop"), what.clone()).unwrap();
        let b = queue.add(new("10.0.0.5:47000"), what).unwrap();
        assert_eq!((a.names.clone(), a.files), (vec!["docs".to_owned()], 1));
        assert_eq!(a.state, QueueState::Waiting);

        let reloaded = Queue::open(dir.path(), CancellationToken::new());
        let listed = reloaded.list();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].peer, "10.0.0.5:47000");
        assert!(reloaded.with(&a.id, |i| i.what.is_none()).unwrap());

        let (item, rest) = queue.cancel(&b.id[..5]).unwrap();
        assert!(item.cancel.is_cancelled());
        assert_eq!(rest.len(), 1);
        assert!(queue.cancel(&b.id).is_err());
        let reloaded = Queue::open(dir.path(), CancellationToken::new());
        assert_eq!(reloaded.list().len(), 1);
        // Daemon shutdown reaches every item.
        cancel.cancel();
        assert!(queue.with(&a.id, |i| i.cancel.is_cancelled()).unwrap());
    }

    #[test]
    fn empty_sends_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), CancellationToken::new());
        assert!(queue.add(new("x"), Vec::new()).is_err());
        assert!(!dir.path().join(QUEUE_FILE).exists());
    }

    /// The open files all queued sends hold together are bounded.
    #[test]
    fn queued_open_files_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), CancellationToken::new());
        let file = Arc::new(tempfile::tempfile().unwrap());
        let half = MAX_QUEUED_FILES / 2 + 1;
        let send = || {
            let entries = (0..half)
                .map(|i| SendEntry {
                    path: format!("f{i}"),
                    dir: false,
                })
                .collect();
            let what: What = (0..half)
                .map(|i| {
                    let source = SourceFile {
                        path: PathBuf::from(format!("f{i}")),
                        file: file.clone(),
                    };
                    (format!("f{i}"), Some(source))
                })
                .collect();
            (
                NewQueued {
                    entries,
                    ..new("desktop")
                },
                what,
            )
        };
        let (first, what) = send();
        queue.add(first, what).unwrap();
        let (second, what) = send();
        let err = queue.add(second, what).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Busy);
        assert!(err.message.contains("already holds"), "{err}");
        assert_eq!(queue.list().len(), 1);
    }
}
