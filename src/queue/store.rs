//! The queue's table and its file: what is queued, for whom, and
//! `queue.json` in the state directory, rewritten atomically on every
//! change.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{MAX_QUEUED, MAX_QUEUED_FILES, QUEUE_FILE, QueueError};
use crate::history::now_secs;
use crate::ids::{self, PrefixError};
use crate::safe_text::CleanText;
use crate::transfer::source::{SourceFile, WalkOptions};
use crate::transport::dial::Preference;

/// One queued send (`share queue`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedSend {
    /// Short ID for `share queue cancel ID`.
    pub id: String,
    /// The peer as the user gave it (name, ID prefix or `HOST:PORT`).
    pub peer: CleanText,
    /// Top-level names to send.
    pub names: Vec<CleanText>,
    /// Number of files.
    pub files: usize,
    /// Transport choice.
    pub transport: Preference,
    /// When it was queued, seconds since the Unix epoch.
    pub queued: u64,
    /// Waiting for the peer, or sending now.
    pub state: QueueState,
    /// Times the peer seemed back but the send did not happen.
    pub attempts: u32,
    /// Why the last try did not go out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<CleanText>,
}

/// Where a queued send stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueState {
    /// Waiting for the peer to be reachable.
    Waiting,
    /// The peer answered; the send is running.
    Sending,
}

impl QueueState {
    /// The lower-case name (as in JSON), for text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Sending => "sending",
        }
    }
}

/// What is persisted about one queued send.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Stored {
    pub(super) id: String,
    pub(super) peer: String,
    pub(super) transport: Preference,
    /// Absolute paths the user named, for a walk after a restart.
    pub(super) roots: Vec<PathBuf>,
    /// How to walk them (`--strict`, `--exclude`).
    #[serde(default)]
    pub(super) walk: WalkOptions,
    pub(super) names: Vec<String>,
    pub(super) files: usize,
    pub(super) queued: u64,
    /// Who queued it (`SO_PEERCRED`).
    pub(super) uid: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct QueueFile {
    version: u32,
    items: Vec<Stored>,
}

/// The files of a send, as the send path takes them.
pub type What = Vec<(String, Option<SourceFile>)>;

pub(super) struct Item {
    pub(super) stored: Stored,
    /// The open files the CLI passed (`None` after a restart).
    pub(super) what: Option<What>,
    pub(super) skipped: Vec<String>,
    pub(super) sending: bool,
    pub(super) attempts: u32,
    pub(super) last_error: Option<String>,
    /// See [`NewQueued::pin`].
    pub(super) pin: Option<String>,
    /// Fires on `share queue cancel` and on daemon shutdown.
    pub(super) cancel: CancellationToken,
}

/// The queued sends and their persistence.
pub(super) struct QueueStore {
    path: PathBuf,
    items: Mutex<Vec<Item>>,
    /// New item IDs for the delivery loop, which starts their tasks.
    added: mpsc::UnboundedSender<String>,
    added_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Parent of every item's token: the daemon's shutdown.
    cancel: CancellationToken,
}

/// A new queued send: who asked, to whom, what (the open files the CLI
/// passed), and the paths to open again after a restart.
pub struct NewQueued {
    /// Name, device-ID prefix or `HOST:PORT`, as typed.
    pub peer: String,
    /// The entries and their open files.
    pub what: What,
    /// Special files the CLI left out.
    pub skipped: Vec<String>,
    /// Transport choice.
    pub transport: Preference,
    /// The absolute paths the user named.
    pub roots: Vec<PathBuf>,
    /// How to walk them again.
    pub walk: WalkOptions,
    /// Who queued it (`SO_PEERCRED`).
    pub uid: u32,
    /// The PIN a LocalSend receiver asks for. Kept in memory only: a
    /// secret is not written to the state directory (after a restart the
    /// receiver asks again and the send fails with a clear message).
    pub pin: Option<String>,
}

impl QueueStore {
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
                    pin: None,
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
    pub(super) fn add(&self, new: NewQueued) -> Result<QueuedSend, QueueError> {
        if new.what.is_empty() {
            return Err(QueueError::Empty);
        }
        let mut items = self.lock();
        if items.len() >= MAX_QUEUED {
            return Err(QueueError::Full);
        }
        let held: usize = items
            .iter()
            .filter(|i| i.what.is_some())
            .map(|i| i.stored.files)
            .sum();
        let files = new.what.iter().filter(|(_, file)| file.is_some()).count();
        if held + files > MAX_QUEUED_FILES {
            return Err(QueueError::TooManyFiles(held));
        }
        let id = ids::unused_id(|id| items.iter().any(|i| i.stored.id == id));
        let stored = Stored {
            id: id.clone(),
            peer: new.peer,
            transport: new.transport,
            roots: new.roots,
            walk: new.walk,
            names: new
                .what
                .iter()
                .filter(|(path, _)| !path.contains('/'))
                .map(|(path, _)| path.clone())
                .collect(),
            files: new.what.iter().filter(|(_, file)| file.is_some()).count(),
            queued: now_secs(),
            uid: new.uid,
        };
        items.push(Item {
            stored,
            what: Some(new.what),
            skipped: new.skipped,
            sending: false,
            attempts: 0,
            last_error: None,
            pin: new.pin,
            cancel: self.cancel.child_token(),
        });
        if let Err(e) = self.save(&items) {
            items.pop();
            return Err(QueueError::Save(e));
        }
        let info = items.last().map(info).ok_or(QueueError::Empty)?;
        drop(items);
        let _ = self.added.send(id);
        Ok(info)
    }

    /// Every queued send, oldest first.
    pub(super) fn list(&self) -> Vec<QueuedSend> {
        self.lock().iter().map(info).collect()
    }

    /// Removes a queued send (ID or unique prefix) and stops its task.
    pub(super) fn cancel(&self, prefix: &str) -> Result<Item, QueueError> {
        let mut items = self.lock();
        let id = match ids::find_by_prefix(items.iter().map(|i| i.stored.id.as_str()), prefix) {
            Ok(id) => id.to_owned(),
            Err(PrefixError::NotFound(p)) => return Err(QueueError::NotFound(p)),
            Err(PrefixError::Ambiguous(p)) => return Err(QueueError::Ambiguous(p)),
        };
        let index = items
            .iter()
            .position(|i| i.stored.id == id)
            .ok_or(QueueError::NotFound(id))?;
        let item = items.remove(index);
        item.cancel.cancel();
        if let Err(e) = self.save(&items) {
            tracing::warn!("cannot save the send queue: {e}");
        }
        Ok(item)
    }

    /// Takes the receiver of new item IDs (once: the delivery loop's).
    pub(super) fn take_added(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.added_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Removes a finished item; `None` if it is gone already (cancelled).
    pub(super) fn remove(&self, id: &str) -> Option<Item> {
        let mut items = self.lock();
        let index = items.iter().position(|i| i.stored.id == id)?;
        let item = items.remove(index);
        if let Err(e) = self.save(&items) {
            tracing::warn!("cannot save the send queue: {e}");
        }
        Some(item)
    }

    /// Applies `change` to item `id`; `None` if it is gone.
    pub(super) fn with<T>(&self, id: &str, change: impl FnOnce(&mut Item) -> T) -> Option<T> {
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
        peer: item.stored.peer.as_str().into(),
        names: item
            .stored
            .names
            .iter()
            .map(|n| n.as_str().into())
            .collect(),
        files: item.stored.files,
        transport: item.stored.transport,
        queued: item.stored.queued,
        state: if item.sending {
            QueueState::Sending
        } else {
            QueueState::Waiting
        },
        attempts: item.attempts,
        last_error: item.last_error.as_deref().map(CleanText::from),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn new(peer: &str, what: What) -> NewQueued {
        NewQueued {
            peer: peer.into(),
            what,
            skipped: Vec::new(),
            transport: Preference::Auto,
            roots: vec![PathBuf::from("/tmp/docs")],
            walk: WalkOptions::default(),
            uid: 1000,
            pin: None,
        }
    }

    /// `docs/` with one file in it, as the CLI passes it.
    fn docs(dir: &Path) -> What {
        let file = dir.join("a.txt");
        fs::write(&file, "a").unwrap();
        let open = SourceFile {
            path: file.clone(),
            file: Arc::new(fs::File::open(&file).unwrap()),
        };
        vec![("docs".into(), None), ("docs/a.txt".into(), Some(open))]
    }

    #[test]
    fn queue_persists_and_cancels_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let queue = QueueStore::open(dir.path(), cancel.clone());
        let a = queue.add(new("desktop", docs(dir.path()))).unwrap();
        let b = queue.add(new("10.0.0.5:47000", docs(dir.path()))).unwrap();
        assert_eq!((a.names.clone(), a.files), (vec!["docs".into()], 1));
        assert_eq!(a.state, QueueState::Waiting);

        let reloaded = QueueStore::open(dir.path(), CancellationToken::new());
        let listed = reloaded.list();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].peer, "10.0.0.5:47000");
        assert!(reloaded.with(&a.id, |i| i.what.is_none()).unwrap());

        let item = queue.cancel(&b.id[..5]).unwrap();
        assert!(item.cancel.is_cancelled());
        assert_eq!(queue.list().len(), 1);
        assert!(matches!(queue.cancel(&b.id), Err(QueueError::NotFound(_))));
        let reloaded = QueueStore::open(dir.path(), CancellationToken::new());
        assert_eq!(reloaded.list().len(), 1);
        // Daemon shutdown reaches every item.
        cancel.cancel();
        assert!(queue.with(&a.id, |i| i.cancel.is_cancelled()).unwrap());
    }

    /// `--strict` and `--exclude` are kept for the walk after a restart.
    #[test]
    fn walk_options_persist() {
        let dir = tempfile::tempdir().unwrap();
        let queue = QueueStore::open(dir.path(), CancellationToken::new());
        let walk = WalkOptions {
            strict: true,
            exclude: crate::transfer::exclude::Excludes::new(&["*.log".into(), "target/".into()])
                .unwrap(),
        };
        let a = queue
            .add(NewQueued {
                walk: walk.clone(),
                ..new("desktop", docs(dir.path()))
            })
            .unwrap();
        let reloaded = QueueStore::open(dir.path(), CancellationToken::new());
        assert_eq!(reloaded.with(&a.id, |i| i.stored.walk.clone()), Some(walk));
    }

    #[test]
    fn empty_sends_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let queue = QueueStore::open(dir.path(), CancellationToken::new());
        assert!(matches!(
            queue.add(new("x", Vec::new())),
            Err(QueueError::Empty)
        ));
        assert!(!dir.path().join(QUEUE_FILE).exists());
    }

    /// The open files all queued sends hold together are bounded.
    #[test]
    fn queued_open_files_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let queue = QueueStore::open(dir.path(), CancellationToken::new());
        let file = Arc::new(tempfile::tempfile().unwrap());
        let half = MAX_QUEUED_FILES / 2 + 1;
        let send = || {
            let what: What = (0..half)
                .map(|i| {
                    let source = SourceFile {
                        path: PathBuf::from(format!("f{i}")),
                        file: file.clone(),
                    };
                    (format!("f{i}"), Some(source))
                })
                .collect();
            new("desktop", what)
        };
        queue.add(send()).unwrap();
        let err = queue.add(send()).unwrap_err();
        assert!(matches!(err, QueueError::TooManyFiles(_)), "{err}");
        assert!(err.to_string().contains("already holds"), "{err}");
        assert_eq!(queue.list().len(), 1);
    }
}
