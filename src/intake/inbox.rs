//! The text inbox: short texts received from peers (`share inbox`,
//! `share receive --text`).
//!
//! Texts are kept in `inbox/` in the state directory, one JSON file per
//! text, named `<milliseconds>-<id>.json` so that names sort by arrival.
//! One file per text keeps writes atomic (temp file, fsync, rename) and
//! marking a text read a rewrite of one small file; the inbox keeps the
//! newest [`MAX_INBOX`] texts and removes older ones. A watch channel
//! wakes `share receive --text --wait` when a text arrives.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::identity::DeviceId;
use crate::safe_text::PeerName;

/// One received text (`share inbox`, `share receive --text`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxText {
    /// Short ID.
    pub id: String,
    /// The sender's name.
    pub peer: PeerName,
    /// The sender's device ID.
    pub peer_id: DeviceId,
    /// The trusted device whose name the sender's looked like, if the
    /// sender was another device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub looks_like: Option<DeviceId>,
    /// When it arrived, seconds since the Unix epoch.
    pub received: u64,
    /// The text, exactly as sent.
    pub text: String,
    /// Whether `share receive --text` has printed it.
    pub read: bool,
}

/// Directory of the inbox inside the state directory.
pub const INBOX_DIR: &str = "inbox";
/// Most texts kept; older ones are deleted as new ones arrive.
pub const MAX_INBOX: usize = 1000;
/// Longest wait of `share receive --text --wait`.
pub const MAX_TEXT_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Errors of the inbox.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// A file or the directory could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why [`Inbox::next_unread`] has no text.
#[derive(Debug, thiserror::Error)]
pub enum NextTextError {
    /// None unread, and no wait was asked for.
    #[error("no unread text; `share inbox` lists earlier ones, `--wait SECS` waits for the next")]
    NoneUnread,
    /// None arrived within the wait.
    #[error("no text arrived within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The caller went away.
    #[error("cancelled")]
    Cancelled,
    /// The inbox could not be read.
    #[error(transparent)]
    Inbox(#[from] InboxError),
}

/// The texts of one state directory.
pub struct Inbox {
    dir: PathBuf,
    /// Serialises changes (store, mark read, prune).
    lock: Mutex<()>,
    arrived: watch::Sender<u64>,
}

impl Inbox {
    /// Opens (creating, mode 0700) `state_dir/inbox`.
    pub fn open(state_dir: &Path) -> Result<Self, InboxError> {
        let dir = state_dir.join(INBOX_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| InboxError::Io {
                action: "create",
                path: dir.clone(),
                source,
            })?;
        let (arrived, _) = watch::channel(0);
        Ok(Self {
            dir,
            lock: Mutex::new(()),
            arrived,
        })
    }

    /// Saves a new, unread text (from `peer`, flagged when its name looks
    /// like that of the trusted device `looks_like`) and wakes waiting
    /// readers.
    pub fn store(
        &self,
        id: &str,
        peer: &PeerName,
        peer_id: DeviceId,
        looks_like: Option<DeviceId>,
        text: &str,
    ) -> Result<InboxText, InboxError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let entry = InboxText {
            id: id.to_owned(),
            peer: peer.clone(),
            peer_id,
            looks_like,
            received: now.as_secs(),
            text: text.to_owned(),
            read: false,
        };
        {
            let _guard = self.lock();
            let name = format!("{:013}-{id}.json", now.as_millis());
            self.write(&name, &entry)?;
            self.prune();
        }
        self.arrived.send_modify(|n| *n = n.wrapping_add(1));
        Ok(entry)
    }

    /// Every text, oldest first.
    pub fn list(&self) -> Result<Vec<InboxText>, InboxError> {
        let _guard = self.lock();
        Ok(self
            .files()?
            .into_iter()
            .filter_map(|(_, text)| text)
            .collect())
    }

    /// How many texts are unread.
    pub fn unread(&self) -> Result<usize, InboxError> {
        Ok(self.list()?.iter().filter(|t| !t.read).count())
    }

    /// The newest unread text, now marked read.
    pub fn take_unread(&self) -> Result<Option<InboxText>, InboxError> {
        let _guard = self.lock();
        let newest = self
            .files()?
            .into_iter()
            .rev()
            .find_map(|(name, text)| text.filter(|t| !t.read).map(|t| (name, t)));
        let Some((name, mut text)) = newest else {
            return Ok(None);
        };
        text.read = true;
        self.write(&name, &text)?;
        Ok(Some(text))
    }

    /// Changes whenever a text arrives; subscribe before checking.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.arrived.subscribe()
    }

    /// The newest unread text, marked read; if there is none, waits up to
    /// `wait` (at most [`MAX_TEXT_WAIT`]) for one to arrive, or until
    /// `cancel`.
    ///
    /// # Errors
    /// No text (now, or within the wait), cancelled, or the inbox is
    /// unreadable.
    pub async fn next_unread(
        &self,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<InboxText, NextTextError> {
        let wait = wait.min(MAX_TEXT_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut arrived = self.subscribe();
        loop {
            arrived.borrow_and_update();
            if let Some(text) = self.take_unread()? {
                return Ok(text);
            }
            if wait.is_zero() {
                return Err(NextTextError::NoneUnread);
            }
            tokio::select! {
                changed = tokio::time::timeout_at(deadline, arrived.changed()) => {
                    if changed.is_err() {
                        return Err(NextTextError::Timeout(wait));
                    }
                }
                () = cancel.cancelled() => return Err(NextTextError::Cancelled),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `(file name, parsed text)` of every `.json` file, sorted by name
    /// (arrival). A file that does not parse is listed as `None`.
    fn files(&self) -> Result<Vec<(String, Option<InboxText>)>, InboxError> {
        let io = |action, source| InboxError::Io {
            action,
            path: self.dir.clone(),
            source,
        };
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .map_err(|e| io("read", e))?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|name| {
                let text = fs::read(self.dir.join(&name))
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
                (name, text)
            })
            .collect())
    }

    /// Atomically writes `name`: temp file (0600), fsync, rename.
    fn write(&self, name: &str, text: &InboxText) -> Result<(), InboxError> {
        let path = self.dir.join(name);
        let io = |action, source| InboxError::Io {
            action,
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(text).map_err(|e| io("encode", e.into()))?;
        crate::state_file::replace(&path, &bytes).map_err(|e| io("write", e))
    }

    /// Deletes the oldest texts beyond [`MAX_INBOX`] (best effort).
    fn prune(&self) {
        let Ok(files) = self.files() else {
            return;
        };
        let excess = files.len().saturating_sub(MAX_INBOX);
        for (name, _) in files.into_iter().take(excess) {
            let _ = fs::remove_file(self.dir.join(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_unread_first_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        let id = DeviceId::from_cert_der(b"p");
        assert_eq!(inbox.take_unread().unwrap(), None);
        inbox
            .store("00000001", &"laptop".into(), id, None, "first")
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        inbox
            .store("00000002", &"laptop".into(), id, None, "zweite — ✓")
            .unwrap();
        let got = inbox.take_unread().unwrap().unwrap();
        assert_eq!((got.text.as_str(), got.read), ("zweite — ✓", true));
        assert_eq!(inbox.take_unread().unwrap().unwrap().text, "first");
        assert_eq!(inbox.take_unread().unwrap(), None);
        // Persistent, and read marks too.
        let again = Inbox::open(dir.path()).unwrap();
        let list = again.list().unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|t| t.read));
        assert_eq!(list[0].text, "first");
    }

    #[tokio::test(start_paused = true)]
    async fn next_unread_waits_for_a_text_or_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = std::sync::Arc::new(Inbox::open(dir.path()).unwrap());
        let cancel = CancellationToken::new();
        assert!(matches!(
            inbox.next_unread(Duration::ZERO, &cancel).await,
            Err(NextTextError::NoneUnread)
        ));
        // Paused clock: the wait runs out without real time passing.
        assert!(matches!(
            inbox.next_unread(Duration::from_secs(60), &cancel).await,
            Err(NextTextError::Timeout(_))
        ));
        let writer = inbox.clone();
        let arrives = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            writer
                .store(
                    "00000004",
                    &"p".into(),
                    DeviceId::from_cert_der(b"p"),
                    None,
                    "hello",
                )
                .unwrap();
        });
        let got = inbox
            .next_unread(Duration::from_secs(60), &cancel)
            .await
            .unwrap();
        assert_eq!((got.text.as_str(), got.read), ("hello", true));
        arrives.await.unwrap();
        cancel.cancel();
        assert!(matches!(
            inbox.next_unread(Duration::from_secs(60), &cancel).await,
            Err(NextTextError::Cancelled)
        ));
    }

    #[test]
    fn store_wakes_subscribers() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        let rx = inbox.subscribe();
        assert!(!rx.has_changed().unwrap());
        inbox
            .store(
                "00000003",
                &"p".into(),
                DeviceId::from_cert_der(b"p"),
                None,
                "x",
            )
            .unwrap();
        assert!(rx.has_changed().unwrap());
    }
}
