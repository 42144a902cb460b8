//! Resume records: what a receiver remembers about interrupted transfers.
//!
//! The partial data itself stays in a hidden staging directory inside the
//! download directory (the same file system as the final location, so the
//! last step is still an atomic rename). This module keeps, in the state
//! directory, one small record per interrupted transfer (who sent it, when,
//! and the map of verified blocks) and a value log: the value of every
//! verified block, 32 bytes at `32 × block number`. The key is a hash of the
//! sender's device ID and the offer's manifest, whose version tags change
//! whenever a file may have changed; so the same unchanged files from the
//! same device — a retry after a dropped link, a restarted daemon, or a new
//! `share send` of the same files — find their partial data again, while no
//! other device can claim it.
//!
//! The map is a hint, not a promise: on resume the store re-hashes every
//! block the map claims and compares it with the logged value before
//! trusting it, so a record written just before a crash (or a power loss)
//! can never make a corrupt block count. Nothing here is synced for the
//! same reason.
//!
//! How long kept data stays, and how much of it, is [`super::kept`]'s
//! business.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use crate::identity::DeviceId;
use crate::protocol::{Manifest, Message, encode};
use crate::safe_text::{CleanText, PeerName};
use crate::transport::TransportKind;

/// Directory (inside the state directory) holding the records.
const RESUME_DIR: &str = "resume";

/// What is remembered about one interrupted transfer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The sender.
    pub peer: DeviceId,
    /// The sender's name, for messages.
    pub peer_name: PeerName,
    /// When the transfer was first accepted (seconds since the epoch).
    pub created: u64,
    /// Verified blocks, one char per block (`1` verified, `0` not), in
    /// manifest order.
    pub verified: String,
    /// Bytes in those blocks: what the partial data holds on disk (a kept
    /// transfer gives back the space of every other block).
    #[serde(default)]
    pub present: u64,
    /// When the map was last saved (milliseconds since the epoch): the
    /// last sign of the transfer, from which its kept data expires.
    #[serde(default)]
    pub updated_ms: u64,
    /// The ID of the transfer's latest attempt in `share transfers`.
    #[serde(default)]
    pub transfer: String,
    /// What the offer holds, to list it after a restart: files, bytes,
    /// top-level names, and the transport it came over.
    #[serde(default)]
    pub files: usize,
    /// See [`files`](Self::files).
    #[serde(default)]
    pub bytes: u64,
    /// See [`files`](Self::files).
    #[serde(default)]
    pub names: Vec<CleanText>,
    /// See [`files`](Self::files).
    #[serde(default = "quic")]
    pub transport: TransportKind,
}

fn quic() -> TransportKind {
    TransportKind::Quic
}

impl Record {
    /// A record for a transfer accepted now, with nothing verified yet.
    pub fn new(peer: DeviceId, peer_name: &PeerName) -> Self {
        Self {
            peer,
            peer_name: peer_name.clone(),
            created: now(),
            verified: String::new(),
            present: 0,
            updated_ms: 0,
            transfer: String::new(),
            files: 0,
            bytes: 0,
            names: Vec::new(),
            transport: TransportKind::Quic,
        }
    }

    /// Notes the attempt that receives it now: its ID in the transfer
    /// table and what it offers.
    pub fn attempt(
        &mut self,
        transfer: &str,
        manifest: &Manifest,
        names: Vec<CleanText>,
        transport: TransportKind,
    ) {
        self.transfer = transfer.to_owned();
        self.files = manifest.file_count();
        self.bytes = manifest.total_bytes();
        self.names = names;
        self.transport = transport;
    }

    /// When the transfer was last heard of (milliseconds since the
    /// epoch).
    pub fn since_ms(&self) -> u64 {
        self.created.saturating_mul(1000).max(self.updated_ms)
    }

    /// The verified map as booleans.
    pub fn verified_map(&self) -> Vec<bool> {
        self.verified.bytes().map(|b| b == b'1').collect()
    }

    /// Replaces the verified map, whose blocks hold `present` bytes.
    pub fn set_verified(&mut self, map: &[bool], present: u64) {
        self.verified = map.iter().map(|v| if *v { '1' } else { '0' }).collect();
        self.present = present;
        self.updated_ms = now_ms();
    }
}

/// The set of resume records, plus which keys are being received right now.
#[derive(Debug, Clone)]
pub struct ResumeStore {
    dir: PathBuf,
    busy: Arc<Mutex<HashSet<String>>>,
}

/// Marks a key as in use until dropped.
#[derive(Debug)]
pub struct Claim {
    key: String,
    busy: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// The values of one transfer's verified blocks. Values are collected in
/// memory and written by [`flush`](Self::flush), which the receiver calls
/// before each save of the verified map: one write per run of consecutive
/// blocks, not one per block (thousands of small files are thousands of
/// blocks).
#[derive(Debug)]
pub struct ValueLog {
    file: File,
    pending: Vec<(usize, [u8; 32])>,
}

impl ValueLog {
    /// Notes the value of block number `block` (numbered as in
    /// [`Manifest::block_starts`]).
    pub fn put(&mut self, block: usize, value: [u8; 32]) {
        self.pending.push((block, value));
    }

    /// Writes the values noted since the last flush.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.pending.sort_unstable_by_key(|(block, _)| *block);
        for run in self.pending.chunk_by(|a, b| b.0 == a.0 + 1) {
            let bytes: Vec<u8> = run.iter().flat_map(|(_, value)| *value).collect();
            let at = (run[0].0 as u64).saturating_mul(VALUE_LEN);
            self.file.write_all_at(&bytes, at)?;
        }
        self.pending.clear();
        Ok(())
    }
}

/// Bytes per block in a value log.
const VALUE_LEN: u64 = 32;

/// The key of a transfer: hash of sender ID and manifest, 32 hex digits.
pub fn key(peer: &DeviceId, manifest: &Manifest) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"lanshare resume v2");
    hasher.update(peer.as_bytes());
    let mut encoded = BytesMut::new();
    // A manifest that was decoded from the wire always re-encodes.
    if encode(&Message::Offer(manifest.clone()), &mut encoded).is_ok() {
        hasher.update(&encoded);
    }
    hasher.finalize().to_hex()[..32].to_owned()
}

impl ResumeStore {
    /// Records live in `state_dir/resume`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join(RESUME_DIR),
            busy: Arc::default(),
        }
    }

    /// Whether a receive holds `key` now.
    pub fn is_busy(&self, key: &str) -> bool {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    /// Claims `key` for one receive; `None` if another receive holds it.
    pub fn claim(&self, key: &str) -> Option<Claim> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.insert(key.to_owned()).then(|| Claim {
            key: key.to_owned(),
            busy: self.busy.clone(),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn values_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.values"))
    }

    /// Creates the records' directory if needed, mode 0700 like the rest
    /// of the state (an older version made it 0755: narrowed here).
    fn ensure_dir(&self) -> std::io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let mode = fs::metadata(&self.dir)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// The value log of `key` (mode 0600), created if missing (existing
    /// values stay).
    pub fn value_log(&self, key: &str) -> std::io::Result<ValueLog> {
        self.ensure_dir()?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.values_path(key))?;
        Ok(ValueLog {
            file,
            pending: Vec::new(),
        })
    }

    /// What a resume of `key` may keep: for each block the verified `map`
    /// claims, its logged value; `None` where the map claims nothing or no
    /// value was logged (that block is fetched again).
    pub fn claims(&self, key: &str, map: &[bool]) -> Vec<Option<[u8; 32]>> {
        let values = self.load_values(key, map.len());
        map.iter()
            .zip(values.iter().chain(std::iter::repeat(&[0; 32])))
            .map(|(verified, value)| (*verified && *value != [0; 32]).then_some(*value))
            .collect()
    }

    /// The logged block values of `key` (all zeros where none was logged),
    /// at most `blocks` of them; empty without a log.
    fn load_values(&self, key: &str, blocks: usize) -> Vec<[u8; 32]> {
        let Ok(bytes) = fs::read(self.values_path(key)) else {
            return Vec::new();
        };
        bytes
            .chunks_exact(VALUE_LEN as usize)
            .take(blocks)
            .map(|c| c.try_into().unwrap_or([0; 32]))
            .collect()
    }

    /// The record for `key`, if any (an unreadable record counts as none).
    pub fn load(&self, key: &str) -> Option<Record> {
        let bytes = fs::read(self.path(key)).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(key, "ignoring unreadable resume record: {e}");
                None
            }
        }
    }

    /// Writes the record for `key` atomically (not synced: the map is a
    /// hint that resume re-verifies, and it is rewritten often).
    pub fn save(&self, key: &str, record: &Record) -> std::io::Result<()> {
        self.ensure_dir()?;
        let json = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        crate::state_file::replace_unsynced(&self.path(key), &json)
    }

    /// Forgets `key`: its record and its value log.
    pub fn remove(&self, key: &str) {
        for path in [self.path(key), self.values_path(key)] {
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(key, "cannot remove {}: {e}", path.display());
            }
        }
    }

    /// Every key with a record or a value log, in order.
    pub fn keys(&self) -> BTreeSet<String> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return BTreeSet::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let key = name
                    .strip_suffix(".json")
                    .or_else(|| name.strip_suffix(".values"))?;
                Some(key.to_owned())
            })
            .collect()
    }

    /// Every readable record, by key.
    pub fn records(&self) -> Vec<(String, Record)> {
        self.keys()
            .into_iter()
            .filter_map(|key| self.load(&key).map(|record| (key, record)))
            .collect()
    }
}

/// Seconds since the epoch.
fn now() -> u64 {
    now_ms() / 1000
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Entry, EntryKind};

    fn manifest(size: u64) -> Manifest {
        Manifest {
            entries: vec![Entry {
                path: "a".into(),
                kind: EntryKind::File { size, tag: [1; 32] },
            }],
            ..Manifest::default()
        }
    }

    #[test]
    fn key_depends_on_peer_and_content() {
        let (a, b) = (DeviceId::from_cert_der(b"a"), DeviceId::from_cert_der(b"b"));
        assert_eq!(key(&a, &manifest(1)), key(&a, &manifest(1)));
        assert_ne!(key(&a, &manifest(1)), key(&b, &manifest(1)));
        assert_ne!(key(&a, &manifest(1)), key(&a, &manifest(2)));
        assert_eq!(key(&a, &manifest(1)).len(), 32);
    }

    /// The records' directory is private like the rest of the state
    /// (an older version made it 0755, which is narrowed), and so are the
    /// files in it.
    #[test]
    fn records_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let store = ResumeStore::new(tmp.path());
        let dir = tmp.path().join(RESUME_DIR);
        drop(store.value_log("k").unwrap());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("k.values")), 0o600);

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        store
            .save(
                "k",
                &Record::new(DeviceId::from_cert_der(b"a"), &"a".into()),
            )
            .unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("k.json")), 0o600);
    }

    #[test]
    fn records_round_trip_and_claims_are_exclusive() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ResumeStore::new(tmp.path());
        let mut record = Record::new(DeviceId::from_cert_der(b"a"), &PeerName::new("alice", "a"));
        record.set_verified(&[true, false, true], 2);
        store.save("k1", &record).unwrap();
        assert_eq!(
            store.load("k1").unwrap().verified_map(),
            [true, false, true]
        );

        let claim = store.claim("k1").unwrap();
        assert!(store.claim("k1").is_none());
        drop(claim);
        assert!(store.claim("k1").is_some());

        assert_eq!(store.records()[0].0, "k1");
        assert!(record.since_ms() >= record.created * 1000);
        store.remove("k1");
        assert!(store.keys().is_empty());
        assert!(store.load("k1").is_none());
    }

    #[test]
    fn value_logs_keep_values_by_block_and_go_with_the_record() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ResumeStore::new(tmp.path());
        assert!(store.load_values("k", 4).is_empty());
        let mut log = store.value_log("k").unwrap();
        log.put(2, [7; 32]);
        log.put(0, [5; 32]);
        assert!(store.load_values("k", 4).is_empty(), "nothing written yet");
        log.flush().unwrap();
        log.flush().unwrap(); // nothing new: writes nothing
        drop(log);
        // Reopening keeps what is there; a run of blocks in one write.
        let mut log = store.value_log("k").unwrap();
        log.put(4, [1; 32]);
        log.put(3, [9; 32]);
        log.flush().unwrap();
        assert_eq!(
            store.load_values("k", 5),
            [[5; 32], [0; 32], [7; 32], [9; 32], [1; 32]]
        );
        assert_eq!(
            store.load_values("k", 4),
            [[5; 32], [0; 32], [7; 32], [9; 32]]
        );
        assert_eq!(store.load_values("k", 2), [[5; 32], [0; 32]]);
        // Claimed by the map and logged: kept; otherwise fetched again
        // (block 1 has no value, block 2 is not claimed, block 5 is past
        // the log).
        assert_eq!(
            store.claims("k", &[true, true, false, true, true, true]),
            [
                Some([5; 32]),
                None,
                None,
                Some([9; 32]),
                Some([1; 32]),
                None
            ]
        );
        store
            .save(
                "k",
                &Record::new(DeviceId::from_cert_der(b"a"), &PeerName::new("a", "a")),
            )
            .unwrap();
        store.remove("k");
        assert!(store.load_values("k", 4).is_empty());
        assert!(store.load("k").is_none());
    }
}
