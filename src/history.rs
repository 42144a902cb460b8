//! The persistent transfer history behind `share history`.
//!
//! The registry forgets everything when the daemon stops, but "what
//! arrived, from whom, and did it work?" is asked days later. So every
//! transfer that reaches a final state (done, failed, rejected, cancelled;
//! in either direction, files or text) is appended as one JSON line to
//! `history.jsonl` in the state directory. The registry calls
//! [`History`] as its [`FinishSink`], so no code path that ends a
//! transfer can forget to record it.
//!
//! Append-only JSON lines keep writing cheap and crash-safe: each record is
//! one `write` on an `O_APPEND` file, so a crash loses at most the record
//! being written, and a torn last line is skipped when reading. The file is
//! bounded: once it holds [`ROTATE_AT`] records it becomes
//! `history.1.jsonl` (replacing the previous one), so between
//! [`ROTATE_AT`] and [`MAX_HISTORY`] of the latest records are kept.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::identity::DeviceId;
use crate::registry::{Direction, FinishSink, State, TransferInfo, TransferKind};
use crate::safe_text::{CleanText, PeerName};
use crate::transport::TransportKind;

/// One finished transfer in the persistent history (`share history`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The transfer's ID on this device (or the queue ID for a queued
    /// send that never connected).
    pub id: String,
    /// When it ended, seconds since the Unix epoch.
    pub time: u64,
    /// When it started, seconds since the Unix epoch.
    pub started: u64,
    /// Wall time from start to end, in seconds.
    pub duration_s: f64,
    /// `in` or `out`.
    pub direction: Direction,
    /// Files or a text.
    pub kind: TransferKind,
    /// The peer's name.
    pub peer: PeerName,
    /// The peer's device ID, if a connection was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<DeviceId>,
    /// The trusted device whose name the peer's looked like, if the peer
    /// was not that device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub looks_like: Option<DeviceId>,
    /// `done`, `failed`, `rejected` or `cancelled`.
    pub outcome: State,
    /// Why it failed, was rejected or cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<CleanText>,
    /// Top-level names offered (a preview for a text).
    pub names: Vec<CleanText>,
    /// Number of files.
    pub files: usize,
    /// Total bytes offered (file content, or the text's length).
    pub bytes: u64,
    /// Bytes known to be at the receiver when it ended.
    pub bytes_done: u64,
    /// Bytes carried over the network, over all attempts.
    pub bytes_sent: u64,
    /// Transport of the last attempt, if a connection was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportKind>,
}

/// The current history file in the state directory.
pub(crate) const HISTORY_FILE: &str = "history.jsonl";
/// The previous, rotated history file.
pub(crate) const HISTORY_OLD_FILE: &str = "history.1.jsonl";
/// Records per file before it is rotated.
pub const ROTATE_AT: usize = 5_000;
/// Most records kept (both files together).
pub const MAX_HISTORY: usize = 2 * ROTATE_AT;

/// Errors reading the history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A history file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The history files of one state directory.
pub struct History {
    dir: PathBuf,
    /// Records in the current file; serialises writers.
    lines: Mutex<usize>,
}

impl History {
    /// Opens the history in `state_dir` (the files are created on the
    /// first record).
    pub fn open(state_dir: &Path) -> Self {
        let dir = state_dir.to_owned();
        let lines = count_lines(&dir.join(HISTORY_FILE));
        Self {
            dir,
            lines: Mutex::new(lines),
        }
    }

    /// Appends one record, rotating first if the file is full. Failures
    /// are logged: losing a history line must not fail a transfer.
    pub fn record(&self, entry: &HistoryEntry) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = self.append(entry, &mut lines) {
            tracing::warn!(
                "cannot record transfer {} in {}: {e}",
                entry.id,
                self.dir.join(HISTORY_FILE).display()
            );
        }
    }

    fn append(&self, entry: &HistoryEntry, lines: &mut usize) -> std::io::Result<()> {
        let current = self.dir.join(HISTORY_FILE);
        if *lines >= ROTATE_AT {
            fs::rename(&current, self.dir.join(HISTORY_OLD_FILE))?;
            *lines = 0;
        }
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&current)?;
        // A record torn by a crash must not swallow this one.
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8];
            file.read_exact_at(&mut last, len - 1)?;
            if last[0] != b'\n' {
                line.insert(0, b'\n');
            }
        }
        // One write of a whole line: with O_APPEND it lands whole at the end.
        file.write_all(&line)?;
        *lines += 1;
        Ok(())
    }

    /// The last `limit` records (all with `None`), oldest first.
    pub fn read(&self, limit: Option<usize>) -> Result<Vec<HistoryEntry>, HistoryError> {
        // Hold the writer lock so a rotation cannot happen between reading
        // the two files.
        let _lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries = read_file(&self.dir.join(HISTORY_OLD_FILE))?;
        entries.extend(read_file(&self.dir.join(HISTORY_FILE))?);
        let limit = limit.unwrap_or(MAX_HISTORY).min(MAX_HISTORY);
        let skip = entries.len().saturating_sub(limit);
        entries.drain(..skip);
        Ok(entries)
    }
}

impl FinishSink for History {
    fn finished(&self, info: &TransferInfo, duration: Duration) {
        self.record(&HistoryEntry {
            id: info.id.clone(),
            time: now_secs(),
            started: info.started,
            duration_s: duration.as_secs_f64(),
            direction: info.direction,
            kind: info.kind,
            peer: info.peer.clone(),
            peer_id: Some(info.peer_id),
            looks_like: info.looks_like,
            outcome: info.state,
            reason: info.reason.clone(),
            names: info.names.clone(),
            files: info.files,
            bytes: info.bytes,
            bytes_done: info.bytes_done,
            bytes_sent: info.bytes_sent,
            transport: Some(info.transport),
        });
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Records in a file; a missing or unreadable file counts as empty (it is
/// replaced on the next write or rotation).
fn count_lines(path: &Path) -> usize {
    match fs::File::open(path) {
        Ok(file) => BufReader::new(file).split(b'\n').count(),
        Err(_) => 0,
    }
}

/// Parses a history file, skipping lines that do not parse (a record torn
/// by a crash, or from a newer version).
fn read_file(path: &Path) -> Result<Vec<HistoryEntry>, HistoryError> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(HistoryError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut entries = Vec::new();
    let mut bad = 0usize;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|source| HistoryError::Read {
            path: path.to_owned(),
            source,
        })?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(&line) {
            Ok(entry) => entries.push(entry),
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        tracing::warn!("skipped {bad} unreadable lines in {}", path.display());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> HistoryEntry {
        HistoryEntry {
            id: format!("{i:08x}"),
            time: 1_700_000_000 + i as u64,
            started: 1_700_000_000,
            duration_s: 0.5,
            direction: Direction::In,
            kind: TransferKind::Files,
            peer: "desktop".into(),
            peer_id: Some(DeviceId::from_cert_der(b"desktop")),
            looks_like: None,
            outcome: State::Done,
            reason: None,
            names: vec!["a.txt".into()],
            files: 1,
            bytes: 3,
            bytes_done: 3,
            bytes_sent: 3,
            transport: Some(TransportKind::Quic),
        }
    }

    #[test]
    fn records_survive_reopening_and_limit_takes_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path());
        assert!(history.read(None).unwrap().is_empty());
        for i in 0..5 {
            history.record(&entry(i));
        }
        let again = History::open(dir.path());
        assert_eq!(
            again.read(None).unwrap(),
            (0..5).map(entry).collect::<Vec<_>>()
        );
        let last = again.read(Some(2)).unwrap();
        assert_eq!(last, vec![entry(3), entry(4)]);
    }

    #[test]
    fn torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path());
        history.record(&entry(1));
        let path = dir.path().join(HISTORY_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"id\":\"torn").unwrap();
        drop(file);
        // The torn line is skipped; the next record still lands whole.
        let history = History::open(dir.path());
        history.record(&entry(2));
        assert_eq!(history.read(None).unwrap(), vec![entry(1), entry(2)]);
    }

    #[test]
    fn rotation_bounds_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path());
        let total = ROTATE_AT * 2 + 10;
        for i in 0..total {
            history.record(&entry(i));
        }
        let all = history.read(None).unwrap();
        assert_eq!(all.len(), ROTATE_AT + 10);
        assert!(all.len() <= MAX_HISTORY);
        assert_eq!(all.last(), Some(&entry(total - 1)));
        assert_eq!(all.first(), Some(&entry(total - 10 - ROTATE_AT)));
    }
}
