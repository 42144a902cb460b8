//! One accepted offer being received: the hidden staging directory, the
//! per-block verification, resume, and the final commit.
//!
//! Why a staging *directory* rather than a temp file next to each final
//! file: all peer-chosen names are created inside a fresh directory that
//! only we know the name of, so nothing the peer sends can collide with, or
//! be redirected by, what already exists in the download directory (say a
//! symlink `evil -> /etc`). The only operation that touches existing names
//! is the final `renameat2(RENAME_NOREPLACE)` of each top-level entry,
//! which the kernel performs atomically and which never replaces anything.
//! It also makes cleanup a single recursive removal.
//!
//! Files are received block by block: every block is hashed as it lands,
//! and when it is complete the sender's value for it must come next
//! ([`Staging::block_value`]); only blocks whose values match count. An
//! interrupted transfer can keep its staging directory ([`Staging::keep`]);
//! reopening it with the same key ([`DownloadDir::stage`]) and
//! [`Staging::verify_existing`] re-hashes the blocks on disk against the
//! values recorded for them, so [`Staging::missing`] asks the sender only
//! for what is really absent.
//!
//! A staging directory is reopened only if it is what we made: a
//! directory owned by the daemon's user with mode 0700. Otherwise someone
//! else (a user who may write to the download directory) could have put
//! it there, or swapped ours for theirs, and would control the files we
//! verify and then move into place; such a directory is set aside and the
//! transfer starts over, and the log says why. Files are created with
//! `O_EXCL`; one found in a reopened directory is kept only if it is a
//! regular file of ours with no other link.
//!
//! A protocol that carries each file as one stream and checks it as a
//! whole (LocalSend: one HTTP upload per file, with an optional SHA-256)
//! writes through a [`FileWriter`] instead: one per file, each with its own
//! descriptor so uploads can run in parallel. The caller verifies the
//! content its own way and hands the writer back ([`Staging::accept_file`]);
//! a file that never arrives intact is left out of the commit
//! ([`Staging::leave_out`]). Everything else (the private directory, the
//! durable no-replace commit, cleanup) is the same for both.
//!
//! Durability runs alongside: on a disk (not tmpfs) written data starts its
//! way to the disk while more arrives (`write_behind`), every directory is
//! synced once the staging area has created its entries, and complete files
//! (whichever way they arrived) are synced in batches (`syncer`, on parallel
//! threads). The commit syncs
//! and waits for what is left, and only then renames anything into place
//! (see [`Staging::commit`]).

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use rustix::fs::{AtFlags, FallocateFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use tracing::{debug, warn};

use super::flush::Flush;
use super::path::{Plan, SafePath, TopLevel, numbered_name};
use super::syncer::Syncer;
use super::write_behind::WriteBehind;
use super::{DownloadDir, StoreError, sys};
use crate::protocol::hash::{BlockHasher, block_hash, file_hash};
use crate::protocol::{BlockRange, EntryKind, EntryMeta, Manifest, blocks_for};

/// Compares two hashes in constant time (via `blake3::Hash` equality).
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    blake3::Hash::from(*a) == blake3::Hash::from(*b)
}

/// Blocks that may be partly written at the same time, and files held
/// open for writing. The sender sends one block after another, so one is
/// enough; the margin bounds fds and hasher memory against a peer that
/// starts many blocks and finishes none.
pub const MAX_FILES_IN_PROGRESS: usize = 8;

/// How many numbered variants `name (1)` ... `name (N)` commit tries before
/// giving up on a top-level name.
const MAX_NAME_ATTEMPTS: u32 = 10_000;

/// Files smaller than this are not preallocated. Preallocation reserves a
/// big file's space before its data arrives (a full disk shows up at
/// once, and the file is less fragmented); a small file gains neither (the
/// free-space check before staging covers it, and the file system places
/// it in one piece anyway), and reserving and later converting its blocks
/// cost 20-40 ms per 2000 files of 4 KiB.
const PREALLOCATE_FROM: u64 = 64 << 10;

/// Mode of received directories and of the staging directory itself.
const DIR_MODE: u32 = 0o750;
const STAGING_DIR_MODE: u32 = 0o700;
/// Mode of received files.
const FILE_MODE: u32 = 0o640;

/// One file entry.
struct FileState {
    size: u64,
    /// Number of its first block (see [`Manifest::block_starts`]).
    first_block: usize,
    /// Received whole through a [`FileWriter`]: its blocks have no values.
    whole: bool,
    /// How many of its blocks are not verified yet.
    unverified: u64,
    /// Handed to the syncer (once every block is verified).
    syncing: bool,
}

/// A block being filled: its running hash and how many bytes it has.
struct Partial {
    hasher: BlockHasher,
    filled: u64,
}

/// A block whose bytes have all arrived, waiting for the sender's value.
struct Complete {
    file: u32,
    block: u64,
    global: usize,
    len: u64,
    /// Our hash of the bytes that arrived.
    value: [u8; 32],
}

/// Files of one offer being received into a hidden staging directory.
///
/// Created (or reopened, to resume) by [`DownloadDir::stage`]. Feed it the
/// data with [`write`](Self::write), then [`commit`](Self::commit).
/// Dropping it removes everything it holds unless [`keep`](Self::keep) was
/// called.
pub struct Staging {
    download: OwnedFd,
    download_path: PathBuf,
    /// Name of the staging directory inside the download directory.
    name: String,
    /// The staging directory.
    dir: OwnedFd,
    /// Relative path of every manifest entry (for opening and messages).
    paths: Vec<String>,
    /// `Some` for file entries, indexed like the manifest.
    files: Vec<Option<FileState>>,
    block_size: u64,
    /// Value of every verified block (zeros for the others).
    values: Vec<[u8; 32]>,
    /// Which blocks are on disk and verified.
    verified: Vec<bool>,
    partial: HashMap<usize, Partial>,
    /// The block received last, until its value arrives.
    complete: Option<Complete>,
    /// Files open for writing (shared with the write-behind ranges).
    open: HashMap<u32, Arc<File>>,
    top_level: Vec<TopLevel>,
    total: u64,
    /// Bytes in verified blocks.
    present: u64,
    /// Whether the files live on a disk rather than in memory (tmpfs, see
    /// [`sys::is_memory_backed`]): only then are they preallocated.
    on_disk: bool,
    flush: Arc<dyn Flush>,
    /// Starts writeback as data arrives; `None` in memory.
    write_behind: Option<WriteBehind>,
    /// Makes files and directories durable in the background.
    syncer: Syncer,
    /// Set after an I/O error: the data can only be discarded or kept.
    failed: bool,
    /// Committed, or kept for resume: Drop leaves the directory alone.
    done: bool,
    /// Each entry's metadata from the sender ([`Self::set_metadata`]);
    /// empty if it sent none.
    metadata: Vec<EntryMeta>,
}

impl fmt::Debug for Staging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Staging")
            .field("download_path", &self.download_path)
            .field("name", &self.name)
            .field("present", &self.present)
            .field("total", &self.total)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Staging {
    /// See [`DownloadDir::stage`].
    pub(super) fn open(
        download: &DownloadDir,
        plan: &Plan,
        manifest: &Manifest,
        key: &str,
    ) -> Result<Self, StoreError> {
        let matches = plan.entries().len() == manifest.entries.len()
            && plan
                .entries()
                .iter()
                .zip(&manifest.entries)
                .all(|(p, m)| p.kind == m.kind);
        if !matches {
            return Err(StoreError::Protocol(
                "the plan was not built from this manifest".into(),
            ));
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(StoreError::Protocol(format!("invalid staging key {key:?}")));
        }
        let total = manifest.total_bytes();
        let download_fd = download
            .fd()
            .try_clone()
            .map_err(|e| StoreError::io("cannot duplicate download directory fd", e))?;
        let (name, dir, resumed) = open_staging_dir(download, key, total)?;
        let on_disk = !sys::is_memory_backed(download.fd().as_fd());
        let syncer_dir = match dir.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                remove_staging(download.fd().as_fd(), dir.as_fd(), &name, download.path());
                return Err(StoreError::io("cannot duplicate staging directory fd", e));
            }
        };
        let flush = download.flush().clone();
        // From here on, dropping `staging` cleans up whatever exists.
        let mut staging = Self {
            download: download_fd,
            download_path: download.path().to_owned(),
            name,
            dir,
            paths: plan
                .entries()
                .iter()
                .map(|e| e.path.to_rel_string())
                .collect(),
            files: Vec::with_capacity(plan.entries().len()),
            block_size: u64::from(manifest.block_size),
            values: Vec::new(),
            verified: Vec::new(),
            partial: HashMap::new(),
            complete: None,
            open: HashMap::new(),
            top_level: plan.top_level().to_vec(),
            total,
            present: 0,
            on_disk,
            write_behind: on_disk.then(|| WriteBehind::new(flush.clone())),
            syncer: Syncer::new(syncer_dir, flush.clone(), on_disk),
            flush,
            failed: false,
            done: false,
            metadata: Vec::new(),
        };
        for dir in plan.directories() {
            staging.mkdir(dir)?;
        }
        let starts = manifest.block_starts();
        for (i, entry) in plan.entries().iter().enumerate() {
            let state = match entry.kind {
                EntryKind::Directory => None,
                EntryKind::File { size, .. } => {
                    staging.create_file(i, size, resumed)?;
                    Some(FileState {
                        size,
                        first_block: starts[i],
                        whole: false,
                        unverified: blocks_for(size, manifest.block_size),
                        syncing: false,
                    })
                }
            };
            staging.files.push(state);
        }
        let blocks = starts[starts.len() - 1];
        staging.values = vec![[0; 32]; blocks];
        staging.verified = vec![false; blocks];
        // Every entry exists now: the directories can be made durable
        // while the data arrives.
        for dir in plan.directories() {
            staging.syncer.sync_dir(dir.to_rel_string());
        }
        staging.syncer.sync_dir(String::new());
        debug!(dir = %staging.download_path.display(), staging = %staging.name, resumed,
            entries = staging.paths.len(), bytes = total, "staged offer");
        Ok(staging)
    }

    /// Creates directory `path` inside the staging directory (its parent
    /// exists: the plan lists parents first). An existing one is fine: a
    /// resumed staging directory already has it.
    fn mkdir(&self, path: &SafePath) -> Result<(), StoreError> {
        let context = || {
            format!(
                "cannot create directory {:?} for the download",
                path.to_string()
            )
        };
        let parent = path.parent();
        let mode = Mode::from_raw_mode(DIR_MODE);
        let result = if parent.is_empty() {
            rustix::fs::mkdirat(&self.dir, path.file_name(), mode)
        } else {
            sys::open_dir(self.dir.as_fd(), parent)
                .and_then(|p| rustix::fs::mkdirat(&p, path.file_name(), mode))
        };
        match result {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(StoreError::io(context(), e)),
        }
    }

    /// Creates (or, when `resuming`, reopens) and preallocates file `index`.
    fn create_file(&self, index: usize, size: u64, resuming: bool) -> Result<(), StoreError> {
        let path = &self.paths[index];
        let reopened = if resuming {
            self.reopen_file(path)?
        } else {
            None
        };
        let fd = match reopened {
            Some(fd) => fd,
            None => rustix::fs::openat2(
                &self.dir,
                path.as_str(),
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(FILE_MODE),
                sys::RESOLVE,
            )
            .map_err(|e| StoreError::io(format!("cannot create file {path:?}"), e))?,
        };
        if size < PREALLOCATE_FROM || !self.on_disk {
            return Ok(());
        }
        // Reserve the blocks now, so a full disk shows up before any data
        // arrives (and files are less fragmented).
        match rustix::fs::fallocate(&fd, FallocateFlags::empty(), 0, size) {
            Ok(()) | Err(Errno::OPNOTSUPP) => Ok(()),
            Err(Errno::NOSPC | Errno::DQUOT) => Err(self.no_space()),
            Err(e) => Err(StoreError::io(
                format!("cannot preallocate {size} bytes for {path:?}"),
                e,
            )),
        }
    }

    /// File `path` as a previous attempt left it in this (resumed, checked)
    /// staging directory, opened for writing; `None` if there is none, or
    /// if what is there is not a regular file of ours with one link (it is
    /// removed, and the caller creates the file afresh).
    fn reopen_file(&self, path: &str) -> Result<Option<OwnedFd>, StoreError> {
        // O_PATH opens without side effects whatever it is (a FIFO, a
        // device); with O_NOFOLLOW a symlink is opened as itself.
        let found = match rustix::fs::openat2(
            &self.dir,
            path,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            sys::RESOLVE,
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(StoreError::io(format!("cannot reopen {path:?}"), e)),
        };
        let stat = rustix::fs::fstat(&found)
            .map_err(|e| StoreError::io(format!("cannot inspect {path:?}"), e))?;
        let why = if rustix::fs::FileType::from_raw_mode(stat.st_mode)
            != rustix::fs::FileType::RegularFile
        {
            "it is not a regular file".to_owned()
        } else if stat.st_uid != rustix::process::geteuid().as_raw() {
            format!("it belongs to uid {}", stat.st_uid)
        } else if stat.st_nlink != 1 {
            format!("it has {} links", stat.st_nlink)
        } else {
            let fd = rustix::fs::openat2(
                &self.dir,
                path,
                OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
                sys::RESOLVE,
            )
            .map_err(|e| StoreError::io(format!("cannot reopen {path:?}"), e))?;
            return Ok(Some(fd));
        };
        warn!(dir = %self.download_path.display(), staging = %self.name, file = path,
            "not resuming a file of the staging directory: {why}; receiving it again");
        rustix::fs::unlinkat(&self.dir, path, AtFlags::empty())
            .map_err(|e| StoreError::io(format!("cannot remove {path:?}"), e))?;
        Ok(None)
    }

    /// A [`StoreError::NoSpace`] for the bytes not yet stored.
    fn no_space(&self) -> StoreError {
        StoreError::NoSpace {
            needed: self.total - self.present,
            free: sys::free_space(self.download.as_fd()).unwrap_or(0),
        }
    }

    /// Resuming: re-hashes the blocks a previous attempt recorded as
    /// verified, with the values it recorded for them (`claimed`, numbered
    /// like [`verified_map`](Self::verified_map); shorter is fine), and
    /// keeps those that still match. Returns the bytes present.
    ///
    /// # Errors
    /// [`StoreError::Io`] if a file cannot be read.
    pub fn verify_existing(&mut self, claimed: &[Option<[u8; 32]>]) -> Result<u64, StoreError> {
        let mut buf = Vec::new();
        for index in 0..self.files.len() {
            let Some(state) = &self.files[index] else {
                continue;
            };
            let (size, first) = (state.size, state.first_block);
            let blocks = blocks_for(size, self.block_size as u32) as usize;
            let claim = |global: usize| claimed.get(global).copied().flatten();
            if !(first..first + blocks).any(|b| claim(b).is_some()) {
                continue;
            }
            let path = self.paths[index].clone();
            let fd = rustix::fs::openat2(
                &self.dir,
                path.as_str(),
                OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
                sys::RESOLVE,
            )
            .map_err(|e| StoreError::io(format!("cannot reopen {path:?}"), e))?;
            let file = File::from(fd);
            for b in 0..blocks {
                let global = first + b;
                let Some(expected) = claim(global).filter(|_| !self.verified[global]) else {
                    continue;
                };
                let offset = b as u64 * self.block_size;
                let len = self.block_size.min(size - offset);
                buf.resize(len as usize, 0);
                file.read_exact_at(&mut buf, offset)
                    .map_err(|e| StoreError::io(format!("cannot read {path:?}"), e))?;
                let value = block_hash(&buf, size, self.block_size as u32, b as u64);
                if same(&value, &expected) {
                    self.verified[global] = true;
                    self.values[global] = value;
                    self.present += len;
                    self.block_verified(index);
                }
            }
        }
        debug!(staging = %self.name, present = self.present, "verified resumed data");
        Ok(self.present)
    }

    /// Which blocks verification still needs, as ranges in manifest order.
    pub fn missing(&self) -> Vec<BlockRange> {
        let mut ranges: Vec<BlockRange> = Vec::new();
        for (index, state) in self.files.iter().enumerate() {
            let Some(state) = state else { continue };
            let blocks = blocks_for(state.size, self.block_size as u32);
            for b in 0..blocks {
                if self.verified[state.first_block + b as usize] {
                    continue;
                }
                match ranges.last_mut() {
                    Some(r) if r.file == index as u32 && r.first + r.count == b => r.count += 1,
                    _ => ranges.push(BlockRange {
                        file: index as u32,
                        first: b,
                        count: 1,
                    }),
                }
            }
        }
        ranges
    }

    /// The verified-block map (blocks numbered as in
    /// [`Manifest::block_starts`]), for the caller's resume record.
    pub fn verified_map(&self) -> &[bool] {
        &self.verified
    }

    /// Bytes in verified blocks.
    pub fn bytes_present(&self) -> u64 {
        self.present
    }

    /// Whether every block of every file still expected (not
    /// [left out](Self::leave_out)) is verified.
    pub fn is_complete(&self) -> bool {
        self.missing().is_empty()
    }

    /// Writes `data` at `offset` of file entry `index`. The bytes must lie
    /// inside one block that is not verified yet and continue exactly where
    /// that block's previous bytes ended. When the block is full, its value
    /// ([`block_value`](Self::block_value)) must come before any more data.
    ///
    /// # Errors
    /// * [`StoreError::Protocol`] for a bad index, a directory index, data
    ///   outside the file, crossing a block, out of order within a block,
    ///   for an already verified block, before the value of the block
    ///   completed last, or too many blocks in progress at once. These
    ///   leave the staging usable.
    /// * [`StoreError::NoSpace`] / [`StoreError::Io`] if the write fails.
    /// * [`StoreError::Aborted`] after an I/O error.
    pub fn write(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Aborted);
        }
        if let Some(c) = &self.complete {
            return Err(StoreError::Protocol(format!(
                "data before the value of block {} of {:?}",
                c.block, self.paths[c.file as usize]
            )));
        }
        let i = index as usize;
        let entries = self.paths.len();
        let Some(slot) = self.files.get(i) else {
            return Err(StoreError::Protocol(format!(
                "data for entry {index}, but the offer has only {entries} entries"
            )));
        };
        let path = self.paths[i].clone();
        let Some(state) = slot else {
            return Err(StoreError::Protocol(format!(
                "data for entry {index} ({path:?}), which is a directory"
            )));
        };
        let end = offset.saturating_add(data.len() as u64);
        if data.is_empty() || end > state.size {
            return Err(StoreError::Protocol(format!(
                "data for {path:?} at bytes {offset}..{end}, outside its {} bytes",
                state.size
            )));
        }
        let block = offset / self.block_size;
        let block_start = block * self.block_size;
        let block_len = self.block_size.min(state.size - block_start);
        if end > block_start + block_len {
            return Err(StoreError::Protocol(format!(
                "data for {path:?} at bytes {offset}..{end} crosses a block boundary"
            )));
        }
        let global = state.first_block + block as usize;
        if self.verified[global] {
            return Err(StoreError::Protocol(format!(
                "data for {path:?} block {block}, which was not requested"
            )));
        }
        let filled = self.partial.get(&global).map_or(0, |p| p.filled);
        if offset != block_start + filled {
            return Err(StoreError::Protocol(format!(
                "data for {path:?} at offset {offset}, expected {}",
                block_start + filled
            )));
        }
        if filled == 0 && self.partial.len() >= MAX_FILES_IN_PROGRESS {
            return Err(StoreError::Protocol(format!(
                "more than {MAX_FILES_IN_PROGRESS} blocks in progress at once"
            )));
        }
        let (size, block_size) = (state.size, self.block_size as u32);
        if let Err(e) = self.write_at(index, offset, data, size) {
            self.failed = true;
            self.open.clear();
            if let Some(wb) = &mut self.write_behind {
                wb.clear();
            }
            return Err(e);
        }
        let partial = self.partial.entry(global).or_insert_with(|| Partial {
            hasher: BlockHasher::new(size, block_size, block),
            filled: 0,
        });
        partial.hasher.update(data);
        partial.filled += data.len() as u64;
        if partial.filled < block_len {
            return Ok(());
        }
        if let Some(done) = self.partial.remove(&global) {
            self.complete = Some(Complete {
                file: index,
                block,
                global,
                len: block_len,
                value: done.hasher.finalize(),
            });
        }
        Ok(())
    }

    /// The sender's value for block `block` of file entry `index`, which
    /// must be the block whose last bytes [`write`](Self::write) received
    /// last. If it matches our hash of those bytes the block counts as
    /// verified; returns its number in [`verified_map`](Self::verified_map).
    ///
    /// # Errors
    /// * [`StoreError::Protocol`] if no block is waiting for its value, or
    ///   another one is.
    /// * [`StoreError::Integrity`] if the value differs (the block is
    ///   discarded; the rest stays usable for a retry).
    pub fn block_value(
        &mut self,
        index: u32,
        block: u64,
        value: &[u8; 32],
    ) -> Result<usize, StoreError> {
        let Some(done) = self
            .complete
            .take_if(|c| c.file == index && c.block == block)
        else {
            let path = self.paths.get(index as usize);
            return Err(StoreError::Protocol(match &self.complete {
                Some(c) => format!(
                    "value of block {block} of entry {index} ({path:?}), expected that of block {} of {:?}",
                    c.block, self.paths[c.file as usize]
                ),
                None => format!(
                    "value of block {block} of entry {index} ({path:?}) before all of its data"
                ),
            }));
        };
        if !same(&done.value, value) {
            return Err(StoreError::Integrity {
                path: format!("{} (block {block})", self.paths[index as usize]),
            });
        }
        self.verified[done.global] = true;
        self.values[done.global] = done.value;
        self.present += done.len;
        self.block_verified(index as usize);
        Ok(done.global)
    }

    /// Counts a verified block of file entry `index`; once all of them are,
    /// the file goes to the syncer.
    fn block_verified(&mut self, index: usize) {
        if let Some(Some(state)) = self.files.get_mut(index) {
            state.unverified = state.unverified.saturating_sub(1);
            if state.unverified == 0 {
                self.sync_file(index);
            }
        }
    }

    /// Hands file entry `index` to the syncer (once).
    fn sync_file(&mut self, index: usize) {
        let Some(Some(state)) = self.files.get_mut(index) else {
            return;
        };
        if state.syncing {
            return;
        }
        state.syncing = true;
        let size = state.size;
        if let Some(meta) = self.metadata.get(index) {
            self.apply_metadata(index, *meta);
        }
        self.syncer.sync_file(self.paths[index].clone(), size);
    }

    /// Keeps each entry's metadata (one per manifest entry, in order) for
    /// its file: when the file is complete, before it is synced, it gets
    /// the modification time, and execute permission wherever it has read
    /// permission if the sender's file was executable. Ownership and
    /// setuid/setgid bits never come from a peer. Times of directories are
    /// not applied (their entries change them until the commit).
    ///
    /// # Errors
    /// [`StoreError::Protocol`] if `metadata` does not have one item per
    /// manifest entry.
    pub fn set_metadata(&mut self, metadata: Vec<EntryMeta>) -> Result<(), StoreError> {
        if metadata.len() != self.paths.len() {
            return Err(StoreError::Protocol(format!(
                "metadata for {} entries, but the offer has {}",
                metadata.len(),
                self.paths.len()
            )));
        }
        self.metadata = metadata;
        Ok(())
    }

    /// Applies `meta` to complete file `index`. A failure is logged, not
    /// fatal: the content arrived intact.
    fn apply_metadata(&self, index: usize, meta: EntryMeta) {
        let path = self.paths[index].as_str();
        let applied = (|| {
            if meta.executable {
                let stat = rustix::fs::statat(&self.dir, path, AtFlags::SYMLINK_NOFOLLOW)?;
                let mode = stat.st_mode & 0o777;
                let mode = mode | ((mode & 0o444) >> 2);
                rustix::fs::chmodat(&self.dir, path, Mode::from_raw_mode(mode), AtFlags::empty())?;
            }
            if let Some(mtime) = meta.mtime {
                let times = rustix::fs::Timestamps {
                    last_access: rustix::fs::Timespec {
                        tv_sec: 0,
                        tv_nsec: rustix::fs::UTIME_OMIT,
                    },
                    last_modification: rustix::fs::Timespec {
                        tv_sec: mtime.sec,
                        tv_nsec: i64::from(mtime.nsec),
                    },
                };
                rustix::fs::utimensat(&self.dir, path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
            }
            Ok::<_, Errno>(())
        })();
        if let Err(e) = applied {
            warn!(path, error = %e, "cannot set the sender's time or mode; the file keeps the arrival time");
        }
    }

    /// A [`StoreError::Flush`] for `what` (an entry's path, `""` for the
    /// staging directory itself).
    fn flush_failed(&self, what: &str, source: io::Error) -> StoreError {
        let what = if what.is_empty() {
            format!("the received files in {}", self.download_path.display())
        } else {
            format!("{what:?}")
        };
        StoreError::Flush { what, source }
    }

    /// Positional write through a small cache of open files, into file
    /// entry `index` of `size` bytes.
    fn write_at(
        &mut self,
        index: u32,
        offset: u64,
        data: &[u8],
        size: u64,
    ) -> Result<(), StoreError> {
        let path = &self.paths[index as usize];
        if !self.open.contains_key(&index) {
            if self.open.len() >= MAX_FILES_IN_PROGRESS {
                self.open.clear();
            }
            let fd = rustix::fs::openat2(
                &self.dir,
                path.as_str(),
                OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
                sys::RESOLVE,
            )
            .map_err(|e| StoreError::io(format!("cannot open {path:?} for writing"), e))?;
            self.open.insert(index, Arc::new(File::from(fd)));
        }
        let Some(file) = self.open.get(&index).cloned() else {
            return Err(StoreError::Protocol("internal: file not open".into()));
        };
        write_all_at(&file, data, offset, path, || self.no_space())?;
        if let Some(wb) = &mut self.write_behind
            && let Err((i, e)) = wb.wrote(index, &file, offset, data.len() as u64, size)
        {
            return Err(self.flush_failed(&self.paths[i as usize], e));
        }
        Ok(())
    }

    /// A writer for all of file entry `index`, from its first byte: for
    /// protocols that send each file as one stream (see the module docs).
    /// A second writer for the same file starts it over (a retry after the
    /// caller's check failed).
    ///
    /// # Errors
    /// [`StoreError::Protocol`] for a bad index, a directory, or a file
    /// already accepted or left out; [`StoreError::Io`] if it cannot be
    /// opened; [`StoreError::Aborted`] after an I/O error.
    pub fn file_writer(&self, index: u32) -> Result<FileWriter, StoreError> {
        if self.failed {
            return Err(StoreError::Aborted);
        }
        let state = self.whole_file(index)?;
        let path = self.paths[index as usize].clone();
        let fd = rustix::fs::openat2(
            &self.dir,
            path.as_str(),
            OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            sys::RESOLVE,
        )
        .map_err(|e| StoreError::io(format!("cannot open {path:?} for writing"), e))?;
        let download = self
            .download
            .try_clone()
            .map_err(|e| StoreError::io("cannot duplicate download directory fd", e))?;
        Ok(FileWriter {
            file: Arc::new(File::from(fd)),
            write_behind: self.on_disk.then(|| WriteBehind::new(self.flush.clone())),
            download,
            index,
            size: state.size,
            written: 0,
            path,
        })
    }

    /// Takes back a [`FileWriter`] whose content the caller has verified:
    /// the file counts as complete. `modified` becomes its modification
    /// time.
    ///
    /// # Errors
    /// [`StoreError::Protocol`] if fewer bytes than the file's size were
    /// written or the file is no longer expected; [`StoreError::Io`] if the
    /// time cannot be set.
    pub fn accept_file(
        &mut self,
        writer: FileWriter,
        modified: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        let state = self.whole_file(writer.index)?;
        if writer.written != state.size {
            return Err(StoreError::Protocol(format!(
                "{:?} has {} of its {} bytes",
                writer.path, writer.written, state.size
            )));
        }
        if let Some(time) = modified {
            writer
                .file
                .set_times(std::fs::FileTimes::new().set_modified(time))
                .map_err(|e| {
                    StoreError::io(format!("cannot set the time of {:?}", writer.path), e)
                })?;
        }
        let (size, first) = (state.size, state.first_block);
        let blocks = blocks_for(size, self.block_size as u32) as usize;
        self.verified[first..first + blocks].fill(true);
        self.present += size;
        if let Some(Some(state)) = self.files.get_mut(writer.index as usize) {
            state.whole = true;
        }
        self.sync_file(writer.index as usize);
        Ok(())
    }

    /// Leaves file entry `index` out: it will not arrive (the sender gave
    /// up on it, or it never passed the caller's check). Its data is
    /// removed and [`commit`](Self::commit) places the rest without it.
    ///
    /// # Errors
    /// [`StoreError::Protocol`] for a bad index, a directory or an accepted
    /// file; [`StoreError::Io`] if it cannot be removed.
    pub fn leave_out(&mut self, index: u32) -> Result<(), StoreError> {
        self.whole_file(index)?;
        let path = self.paths[index as usize].clone();
        let removed = match path.rsplit_once('/') {
            None => rustix::fs::unlinkat(&self.dir, path.as_str(), AtFlags::empty()),
            Some((parent, name)) => sys::open_dir(self.dir.as_fd(), parent)
                .and_then(|p| rustix::fs::unlinkat(&p, name, AtFlags::empty())),
        };
        match removed {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(StoreError::io(format!("cannot remove {path:?}"), e)),
        }
        self.files[index as usize] = None;
        self.top_level.retain(|top| top.is_dir || top.name != path);
        Ok(())
    }

    /// The state of file entry `index` if it may still be written whole.
    fn whole_file(&self, index: u32) -> Result<&FileState, StoreError> {
        let state = match self.files.get(index as usize) {
            Some(Some(state)) => state,
            Some(None) => {
                return Err(StoreError::Protocol(format!(
                    "entry {index} ({:?}) is not a file that is still expected",
                    self.paths[index as usize]
                )));
            }
            None => {
                return Err(StoreError::Protocol(format!(
                    "entry {index}, but the offer has only {} entries",
                    self.paths.len()
                )));
            }
        };
        let blocks = blocks_for(state.size, self.block_size as u32) as usize;
        let verified = &self.verified[state.first_block..state.first_block + blocks];
        if state.whole || (blocks > 0 && verified.iter().all(|v| *v)) {
            return Err(StoreError::Protocol(format!(
                "{:?} is already complete",
                self.paths[index as usize]
            )));
        }
        Ok(state)
    }

    /// Leaves the staging directory on disk so a later attempt with the
    /// same key can resume from it, holding only what was verified: the
    /// space reserved for every other block is given back (a hole is
    /// punched where it was preallocated or partly written), so a kept
    /// partial transfer never holds a reservation for data that may never
    /// come. Reopening it to resume reserves that space again
    /// ([`DownloadDir::stage`]).
    pub fn keep(mut self) {
        self.open.clear();
        if let Some(wb) = &mut self.write_behind {
            wb.clear();
        }
        let released = self.release_unverified();
        self.done = true;
        debug!(staging = %self.name, present = self.present, released,
            "kept partial transfer for resume");
    }

    /// Deallocates the byte ranges of blocks that are not verified, in
    /// every file that may hold space for them (preallocated, or with a
    /// block partly written). Returns the bytes of those ranges; a file
    /// system that cannot punch holes keeps its reservation (logged).
    fn release_unverified(&self) -> u64 {
        let mut released = 0;
        for (index, state) in self.files.iter().enumerate() {
            let Some(state) = state.as_ref().filter(|s| !s.whole) else {
                continue;
            };
            let first = state.first_block;
            let blocks = blocks_for(state.size, self.block_size as u32) as usize;
            let unverified = |b: &usize| !self.verified[*b];
            let written = |b: &usize| {
                self.partial.contains_key(b)
                    || self.complete.as_ref().is_some_and(|c| c.global == *b)
            };
            let range = first..first + blocks;
            let preallocated = self.on_disk && state.size >= PREALLOCATE_FROM;
            if !range
                .clone()
                .any(|b| unverified(&b) && (preallocated || written(&b)))
            {
                continue;
            }
            let path = &self.paths[index];
            let fd = match rustix::fs::openat2(
                &self.dir,
                path.as_str(),
                OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
                sys::RESOLVE,
            ) {
                Ok(fd) => fd,
                Err(e) => {
                    warn!(staging = %self.name, path, error = %e,
                        "cannot open a kept file to release its unused space");
                    continue;
                }
            };
            let runs: Vec<usize> = range.filter(unverified).collect();
            for run in runs.chunk_by(|a, b| *b == a + 1) {
                let offset = (run[0] - first) as u64 * self.block_size;
                let end =
                    ((run[run.len() - 1] - first + 1) as u64 * self.block_size).min(state.size);
                match rustix::fs::fallocate(
                    &fd,
                    FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                    offset,
                    end - offset,
                ) {
                    Ok(()) => released += end - offset,
                    Err(e) => {
                        warn!(staging = %self.name, path, error = %e,
                            "cannot release the unused space of a kept file; it stays reserved until the transfer resumes or expires");
                        break;
                    }
                }
            }
        }
        released
    }

    /// Checks that every block is verified, makes the data durable, and
    /// moves each top-level entry into the download directory under a name
    /// that did not exist yet (`name`, `name (1).ext`, ...). Returns the
    /// final top-level names, in the plan's order.
    ///
    /// Durability, scoped to the transfer's own files (never `syncfs`,
    /// which would wait for other programs' data too): every file is
    /// `fdatasync`ed and every directory of the staging area `fsync`ed,
    /// part of it already while the data arrived (see the module docs);
    /// the commit does the rest and waits for all of it. Only then are the entries renamed,
    /// so no final name can ever show data that is not on the disk, and
    /// then the download directory is `fsync`ed so that the renames
    /// survive a crash too. When this returns `Ok`, everything is durable.
    ///
    /// # Errors
    /// [`StoreError::Protocol`] if a block is missing (or still waits for
    /// its value), [`StoreError::Aborted`] after an earlier failure,
    /// [`StoreError::Flush`] if the disk failed to store something,
    /// [`StoreError::Io`] / [`StoreError::NoFreeName`] otherwise. Entries
    /// already moved into place when an error happens stay there (they are
    /// complete and verified, and their data is on the disk); the rest is
    /// removed.
    pub fn commit(mut self) -> Result<Vec<String>, StoreError> {
        self.commit_inner()
    }

    fn commit_inner(&mut self) -> Result<Vec<String>, StoreError> {
        if self.failed {
            return Err(StoreError::Aborted);
        }
        if let Some(missing) = self.missing().first() {
            return Err(StoreError::Protocol(format!(
                "commit before {:?} was complete (block {} missing)",
                self.paths[missing.file as usize], missing.first
            )));
        }
        self.open.clear();
        if let Some(wb) = &mut self.write_behind {
            wb.clear();
        }
        self.log_file_hashes();
        // Files not handed over yet: empty ones (no block to verify).
        for index in 0..self.files.len() {
            self.sync_file(index);
        }
        let waiting = std::time::Instant::now();
        if let Err(failure) = self.syncer.finish() {
            return Err(self.flush_failed(failure.job.path(), failure.error));
        }
        debug!(staging = %self.name, waited_ms = waiting.elapsed().as_millis(),
            "every file and directory of the transfer is on the disk");

        let mut placed = Vec::with_capacity(self.top_level.len());
        for top in &self.top_level {
            match self.place(top) {
                Ok(name) => placed.push(name),
                Err(e) => {
                    if !placed.is_empty() {
                        warn!(dir = %self.download_path.display(), ?placed,
                            "commit failed after some entries were moved into place");
                    }
                    return Err(e);
                }
            }
        }
        self.flush
            .sync_dir(self.download.as_fd())
            .map_err(|source| StoreError::Flush {
                what: format!("the new names in {}", self.download_path.display()),
                source,
            })?;
        match rustix::fs::unlinkat(&self.download, self.name.as_str(), AtFlags::REMOVEDIR) {
            // Leave `done` unset so that Drop retries a full removal.
            Err(e) => warn!(staging = %self.name, error = %e,
                "cannot remove staging directory after commit"),
            Ok(()) => self.done = true,
        }
        debug!(dir = %self.download_path.display(), names = ?placed,
            files = self.files.iter().flatten().count(), bytes = self.total,
            "committed transfer");
        Ok(placed)
    }

    /// Logs (at debug level) every file's BLAKE3 hash, derived from its
    /// verified block values (see [`crate::protocol::hash`]) without reading
    /// the data again, for comparison with `b3sum` on the sender.
    fn log_file_hashes(&self) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        for (index, state) in self.files.iter().enumerate() {
            let Some(state) = state.as_ref().filter(|s| !s.whole) else {
                continue;
            };
            let blocks = blocks_for(state.size, self.block_size as u32) as usize;
            let values = &self.values[state.first_block..state.first_block + blocks];
            if let Some(whole) = file_hash(values, state.size, self.block_size as u32) {
                debug!(path = %self.paths[index], blake3 = %blake3::Hash::from(whole),
                    "received file");
            }
        }
    }

    /// Moves top-level entry `top` from the staging directory into the
    /// download directory under the first free candidate name.
    fn place(&self, top: &TopLevel) -> Result<String, StoreError> {
        for n in 0..=MAX_NAME_ATTEMPTS {
            let candidate = numbered_name(&top.name, n, top.is_dir);
            match rustix::fs::renameat_with(
                &self.dir,
                top.name.as_str(),
                &self.download,
                candidate.as_str(),
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => return Ok(candidate),
                Err(Errno::EXIST) => continue,
                Err(e) => {
                    return Err(StoreError::io(
                        format!(
                            "cannot move {:?} into {}",
                            top.name,
                            self.download_path.display()
                        ),
                        e,
                    ));
                }
            }
        }
        Err(StoreError::NoFreeName {
            name: top.name.clone(),
            attempts: MAX_NAME_ATTEMPTS,
        })
    }
}

/// Writes all of `data` at `offset`, turning a full disk into
/// [`StoreError::NoSpace`] (from `no_space`).
fn write_all_at(
    file: &File,
    data: &[u8],
    offset: u64,
    path: &str,
    no_space: impl FnOnce() -> StoreError,
) -> Result<(), StoreError> {
    file.write_all_at(data, offset).map_err(|e| {
        if sys::is_no_space(&e) {
            no_space()
        } else {
            StoreError::io(format!("cannot write to {path:?}"), e)
        }
    })
}

/// Writes one file of a [`Staging`] from its first byte to its last, for
/// protocols that send each file as one stream. Blocking, like the rest of
/// the store. See [`Staging::file_writer`].
pub struct FileWriter {
    file: Arc<File>,
    /// Starts writeback as data arrives (see `write_behind`); `None` in
    /// memory.
    write_behind: Option<WriteBehind>,
    /// For the free space in a [`StoreError::NoSpace`].
    download: OwnedFd,
    index: u32,
    size: u64,
    written: u64,
    path: String,
}

impl fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileWriter")
            .field("path", &self.path)
            .field("written", &self.written)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl FileWriter {
    /// Appends `data`.
    ///
    /// # Errors
    /// [`StoreError::Protocol`] if the file would grow past the size the
    /// offer announced (nothing is written then); [`StoreError::NoSpace`] /
    /// [`StoreError::Io`] if the write fails, [`StoreError::Flush`] if the
    /// disk reports a writeback error.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let end = self.written.saturating_add(data.len() as u64);
        if end > self.size {
            return Err(StoreError::Protocol(format!(
                "more than the {} bytes announced for {:?}",
                self.size, self.path
            )));
        }
        let needed = self.size - self.written;
        write_all_at(&self.file, data, self.written, &self.path, || {
            StoreError::NoSpace {
                needed,
                free: sys::free_space(self.download.as_fd()).unwrap_or(0),
            }
        })?;
        let offset = self.written;
        self.written = end;
        if let Some(wb) = &mut self.write_behind
            && let Err((_, source)) =
                wb.wrote(self.index, &self.file, offset, data.len() as u64, self.size)
        {
            return Err(StoreError::Flush {
                what: format!("{:?}", self.path),
                source,
            });
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The file's entry in the manifest.
    pub fn index(&self) -> u32 {
        self.index
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // No sync thread may still work in the directory being removed.
        self.syncer.stop();
        self.open.clear();
        remove_staging(
            self.download.as_fd(),
            self.dir.as_fd(),
            &self.name,
            &self.download_path,
        );
    }
}

/// Removes a staging directory and everything in it, never following links.
fn remove_staging(
    download: std::os::fd::BorrowedFd<'_>,
    dir: std::os::fd::BorrowedFd<'_>,
    name: &str,
    download_path: &std::path::Path,
) {
    if let Err(e) = sys::remove_tree(dir) {
        warn!(dir = %download_path.display(), staging = %name, error = %e,
            "cannot remove staged files");
    }
    if let Err(e) = rustix::fs::unlinkat(download, name, AtFlags::REMOVEDIR) {
        warn!(dir = %download_path.display(), staging = %name, error = %e,
            "cannot remove staging directory");
    }
}

/// Name of the staging directory for `key`.
pub(super) fn staging_name(key: &str) -> String {
    format!("{}{key}.part", super::path::RESERVED_PREFIX)
}

/// Opens the staging directory for `key`, creating it (mode 0o700) if it
/// does not exist. Returns its name, fd, and whether it already existed.
/// An existing one is reopened only if it is ours ([`check_ours`]);
/// otherwise it is set aside ([`set_aside`]) and a new one is made. A new
/// one must fit `total` bytes in the free space.
fn open_staging_dir(
    download: &DownloadDir,
    key: &str,
    total: u64,
) -> Result<(String, OwnedFd, bool), StoreError> {
    let name = staging_name(key);
    let context = || {
        format!(
            "cannot create a staging directory in {}",
            download.path().display()
        )
    };
    let mkdir = || {
        rustix::fs::mkdirat(
            download.fd(),
            name.as_str(),
            Mode::from_raw_mode(STAGING_DIR_MODE),
        )
    };
    match mkdir() {
        Ok(()) => {}
        Err(Errno::EXIST) => {
            let why = match sys::open_dir(download.fd().as_fd(), &name) {
                Ok(dir) => match check_ours(&dir) {
                    Ok(()) => return Ok((name, dir, true)),
                    Err(why) => why,
                },
                Err(e) => format!("it cannot be opened as a directory ({e})"),
            };
            warn!(dir = %download.path().display(), staging = %name,
                "not resuming from this staging directory: {why}; starting over");
            set_aside(download, &name)?;
            // Whatever takes its place now was not left by us: no retry.
            mkdir().map_err(|e| StoreError::io(context(), e))?;
        }
        Err(e) => return Err(StoreError::io(context(), e)),
    }
    let free = download.free_space()?;
    if total > free {
        let _ = rustix::fs::unlinkat(download.fd(), name.as_str(), AtFlags::REMOVEDIR);
        return Err(StoreError::NoSpace {
            needed: total,
            free,
        });
    }
    match sys::open_dir(download.fd().as_fd(), &name) {
        Ok(fd) => Ok((name, fd, false)),
        Err(e) => {
            let _ = rustix::fs::unlinkat(download.fd(), name.as_str(), AtFlags::REMOVEDIR);
            Err(StoreError::io(context(), e))
        }
    }
}

/// Why the directory `dir` is not one we made for staging: it must be
/// owned by the daemon's user and have mode 0o700 exactly (so nobody else
/// can have created, replaced or changed anything in it).
fn check_ours(dir: &OwnedFd) -> Result<(), String> {
    let stat = rustix::fs::fstat(dir).map_err(|e| format!("it cannot be inspected ({e})"))?;
    let me = rustix::process::geteuid().as_raw();
    let mode = stat.st_mode & 0o7777;
    if stat.st_uid != me {
        Err(format!(
            "it belongs to uid {}, not to this daemon (uid {me})",
            stat.st_uid
        ))
    } else if mode != STAGING_DIR_MODE {
        Err(format!(
            "its mode is {mode:04o}, not {STAGING_DIR_MODE:04o}, so others may have changed it"
        ))
    } else {
        Ok(())
    }
}

/// Moves the untrusted entry `name` out of the way, to
/// `name.refused-RANDOM`; one of ours (a directory with the wrong mode)
/// is then removed, another user's is left alone.
fn set_aside(download: &DownloadDir, name: &str) -> Result<(), StoreError> {
    let aside = format!("{name}.refused-{}", crate::ids::random_id());
    rustix::fs::renameat_with(
        download.fd(),
        name,
        download.fd(),
        aside.as_str(),
        RenameFlags::NOREPLACE,
    )
    .map_err(|e| {
        StoreError::io(
            format!("cannot move the untrusted {name} out of the way; remove it"),
            e,
        )
    })?;
    let ours = rustix::fs::statat(download.fd(), aside.as_str(), AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_uid == rustix::process::geteuid().as_raw());
    if !ours {
        return Ok(());
    }
    match sys::open_dir(download.fd().as_fd(), &aside) {
        Ok(dir) => remove_staging(download.fd().as_fd(), dir.as_fd(), &aside, download.path()),
        Err(_) => {
            let _ = rustix::fs::unlinkat(download.fd(), aside.as_str(), AtFlags::empty());
        }
    }
    Ok(())
}

/// Removes the staging directory for `key` if it exists (a resume record
/// that expired or was discarded). Another user's is left alone.
pub(super) fn discard(download: &DownloadDir, key: &str) -> Result<bool, StoreError> {
    let name = staging_name(key);
    match sys::open_dir(download.fd().as_fd(), &name) {
        Ok(dir) => {
            let owner = rustix::fs::fstat(&dir)
                .map_err(|e| StoreError::io(format!("cannot inspect {name}"), e))?
                .st_uid;
            if owner != rustix::process::geteuid().as_raw() {
                warn!(dir = %download.path().display(), staging = %name,
                    "not removing a staging directory of uid {owner}, which is not this daemon's");
                return Ok(false);
            }
            remove_staging(download.fd().as_fd(), dir.as_fd(), &name, download.path());
            Ok(true)
        }
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(StoreError::io(
            format!("cannot open staging directory {name}"),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;
    use crate::protocol::{DEFAULT_BLOCK_SIZE, Entry};
    use crate::store::plan;

    const DEPTH: usize = 16;

    /// A manifest with the default (1 MiB) blocks.
    fn mk(entries: Vec<Entry>) -> Manifest {
        Manifest {
            entries,
            ..Manifest::default()
        }
    }

    fn file(path: &str, content: &[u8]) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: EntryKind::File {
                size: content.len() as u64,
                tag: [0; 32],
            },
        }
    }

    /// The value of block `block` of `content`, as a sender computes it.
    fn value(content: &[u8], block: usize) -> [u8; 32] {
        let bs = DEFAULT_BLOCK_SIZE as usize;
        let data = &content[block * bs..((block + 1) * bs).min(content.len())];
        block_hash(data, content.len() as u64, DEFAULT_BLOCK_SIZE, block as u64)
    }

    /// Sends block `block` of file entry `index` like a sender: its bytes in
    /// `chunk`-sized pieces, then its value.
    fn send_block(s: &mut Staging, index: u32, content: &[u8], block: usize, chunk: usize) {
        let bs = DEFAULT_BLOCK_SIZE as usize;
        let start = block * bs;
        let data = &content[start..(start + bs).min(content.len())];
        let mut off = start as u64;
        for piece in data.chunks(chunk) {
            s.write(index, off, piece).unwrap();
            off += piece.len() as u64;
        }
        s.block_value(index, block as u64, &value(content, block))
            .unwrap();
    }

    /// [`send_block`] for every block of file entry `index`.
    fn send_file(s: &mut Staging, index: u32, content: &[u8], chunk: usize) {
        let blocks = content.len().div_ceil(DEFAULT_BLOCK_SIZE as usize);
        for block in 0..blocks {
            send_block(s, index, content, block, chunk);
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: EntryKind::Directory,
        }
    }

    /// Sorted names in `dir`, hidden ones included.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn stage(dl: &DownloadDir, m: &Manifest) -> Result<Staging, StoreError> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let key = format!(
            "t{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        dl.stage(&plan(m, DEPTH)?, m, &key)
    }

    /// Stages `m`, writes `contents[i]` for every file entry in `chunk`-sized
    /// pieces, commits.
    fn receive(dl: &DownloadDir, m: &Manifest, contents: &[&[u8]], chunk: usize) -> Vec<String> {
        let mut s = stage(dl, m).unwrap();
        for (i, content) in contents.iter().enumerate() {
            if let EntryKind::File { .. } = m.entries[i].kind {
                send_file(&mut s, i as u32, content, chunk);
            }
        }
        s.commit().unwrap()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trip_nested_empty_utf8_and_big_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(&tmp.path().join("new/downloads")).unwrap();
        let big = pattern(3 << 20);
        let m = mk(vec![
            dir("album"),
            file("album/sub/deep.bin", &big),
            file("album/empty.txt", b""),
            dir("album/nothing"),
            file("Cafe\u{301} 日本.txt", b"bonjour"),
        ]);
        let contents: [&[u8]; 5] = [b"", &big, b"", b"", b"bonjour"];
        let mut s = stage(&dl, &m).unwrap();
        assert_eq!(names(dl.path()).len(), 1, "only the staging dir exists");
        for (i, content) in contents.iter().enumerate() {
            if let EntryKind::File { .. } = m.entries[i].kind {
                // Uneven chunks, like a real sender's frames, never
                // crossing a block.
                send_file(&mut s, i as u32, content, (1 << 20) - 7);
            }
        }
        assert_eq!(s.bytes_present(), big.len() as u64 + 7);
        let placed = s.commit().unwrap();
        assert_eq!(placed, ["album", "Café 日本.txt"]);
        assert_eq!(names(dl.path()), ["Café 日本.txt", "album"]);
        let root = dl.path();
        assert_eq!(fs::read(root.join("album/sub/deep.bin")).unwrap(), big);
        assert_eq!(fs::read(root.join("album/empty.txt")).unwrap(), b"");
        assert!(root.join("album/nothing").is_dir());
        assert_eq!(fs::read(root.join("Café 日本.txt")).unwrap(), b"bonjour");
        assert_eq!(names(&root.join("album")), ["empty.txt", "nothing", "sub"]);
        let mode = fs::metadata(root.join("album/sub/deep.bin"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077 & !0o040, 0, "file mode {mode:o}");
    }

    #[test]
    fn repeated_commits_get_numbered_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let m = mk(vec![
            file("photo.jpg", b"jpeg"),
            file("docs/a.txt", b"a"),
            file("README", b"r"),
        ]);
        let contents: [&[u8]; 3] = [b"jpeg", b"a", b"r"];
        assert_eq!(
            receive(&dl, &m, &contents, 2),
            ["photo.jpg", "docs", "README"]
        );
        assert_eq!(
            receive(&dl, &m, &contents, 2),
            ["photo (1).jpg", "docs (1)", "README (1)"]
        );
        assert_eq!(
            receive(&dl, &m, &contents, 2),
            ["photo (2).jpg", "docs (2)", "README (2)"]
        );
        assert_eq!(fs::read(dl.path().join("docs (2)/a.txt")).unwrap(), b"a");
        assert_eq!(fs::read(dl.path().join("photo (1).jpg")).unwrap(), b"jpeg");
        assert_eq!(names(dl.path()).len(), 9, "no staging dirs left");
    }

    #[test]
    fn wrong_value_is_an_integrity_error_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("keep.txt"), b"mine").unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let m = mk(vec![file("x/evil.bin", b"expected content")]);
        let mut s = stage(&dl, &m).unwrap();
        s.write(0, 0, b"expected").unwrap();
        s.write(0, 8, b" content").unwrap();
        let err = s
            .block_value(0, 0, &value(b"something else!!", 0))
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Integrity { path } if path.starts_with("x/evil.bin")),
            "{err:?}"
        );
        assert!(!s.is_complete(), "a bad block never counts");
        assert_eq!(s.bytes_present(), 0);
        assert_eq!(s.missing().len(), 1, "the bad block is requested again");
        drop(s);
        assert_eq!(names(dl.path()), ["keep.txt"]);
        assert_eq!(fs::read(dl.path().join("keep.txt")).unwrap(), b"mine");
    }

    #[test]
    fn each_block_value_must_follow_its_data() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let two = pattern((1 << 20) + 3);
        let m = mk(vec![file("two", &two), file("b", b"bb")]);
        let mut s = stage(&dl, &m).unwrap();
        let protocol = |r: Result<usize, StoreError>| matches!(r, Err(StoreError::Protocol(_)));
        assert!(
            protocol(s.block_value(0, 0, &value(&two, 0))),
            "before any data"
        );
        s.write(0, 0, &two[..10]).unwrap();
        assert!(
            protocol(s.block_value(0, 0, &value(&two, 0))),
            "before all data"
        );
        s.write(0, 10, &two[10..1 << 20]).unwrap();
        assert!(
            protocol(s.block_value(0, 1, &value(&two, 1))),
            "another block"
        );
        assert!(
            protocol(s.block_value(1, 0, &value(b"bb", 0))),
            "another file"
        );
        assert!(
            matches!(s.write(1, 0, b"bb"), Err(StoreError::Protocol(_))),
            "data before the value"
        );
        assert_eq!(s.block_value(0, 0, &value(&two, 0)).unwrap(), 0);
        assert!(protocol(s.block_value(0, 0, &value(&two, 0))), "twice");
        send_block(&mut s, 0, &two, 1, 1 << 20);
        send_file(&mut s, 1, b"bb", 1);
        assert_eq!(s.verified_map(), [true, true, true]);
        assert_eq!(s.commit().unwrap(), ["two", "b"]);
        assert_eq!(fs::read(dl.path().join("two")).unwrap(), two);
    }

    #[test]
    fn protocol_violations_are_rejected_without_harm() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let m = mk(vec![dir("d"), file("d/f", b"0123456789")]);
        let mut s = stage(&dl, &m).unwrap();
        let protocol = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Protocol(_)));
        assert!(protocol(s.write(5, 0, b"x")), "bad index");
        assert!(protocol(s.write(u32::MAX, 0, b"x")), "huge index");
        assert!(protocol(s.write(0, 0, b"x")), "directory index");
        assert!(protocol(s.write(1, 3, b"345")), "gap");
        assert!(protocol(s.write(1, 0, b"0123456789A")), "too much");
        assert!(protocol(s.write(1, u64::MAX, b"x")), "offset overflow");
        s.write(1, 0, b"01234").unwrap();
        assert!(protocol(s.write(1, 2, b"234")), "overlap");
        assert!(protocol(s.write(1, 5, b"567890")), "past the end");
        assert_eq!(s.bytes_present(), 0, "the block is not complete yet");
        // Still usable after rejected frames, but not committable yet.
        let mut s = match s.commit() {
            Err(StoreError::Protocol(msg)) => {
                assert!(msg.contains("block 0 missing"), "{msg}");
                assert!(names(dl.path()).is_empty(), "failed commit cleans up");
                stage(&dl, &m).unwrap()
            }
            other => panic!("commit of an incomplete file: {other:?}"),
        };
        send_file(&mut s, 1, b"0123456789", 10);
        assert_eq!(s.commit().unwrap(), ["d"]);
        assert_eq!(fs::read(dl.path().join("d/f")).unwrap(), b"0123456789");
    }

    #[test]
    fn files_in_progress_are_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let entries: Vec<Entry> = (0..=MAX_FILES_IN_PROGRESS)
            .map(|i| file(&format!("f{i}"), b"ab"))
            .collect();
        let m = mk(entries);
        let mut s = stage(&dl, &m).unwrap();
        for i in 0..MAX_FILES_IN_PROGRESS {
            s.write(i as u32, 0, b"a").unwrap();
        }
        let last = MAX_FILES_IN_PROGRESS as u32;
        assert!(matches!(
            s.write(last, 0, b"a"),
            Err(StoreError::Protocol(_))
        ));
        s.write(0, 1, b"b").unwrap(); // completes f0, frees a slot
        s.block_value(0, 0, &value(b"ab", 0)).unwrap();
        s.write(last, 0, b"ab").unwrap();
    }

    #[test]
    fn kept_staging_resumes_with_only_missing_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let bs = 1usize << 20;
        let big = pattern(3 * bs + 100);
        let m = mk(vec![file("big.bin", &big), file("small", b"tiny")]);
        let plan = plan(&m, DEPTH).unwrap();
        let mut s = dl.stage(&plan, &m, "resume1").unwrap();
        // Blocks 0 and 2 arrive, block 1 only half; the link drops.
        send_block(&mut s, 0, &big, 0, bs);
        s.write(0, bs as u64, &big[bs..bs + 10]).unwrap();
        send_block(&mut s, 0, &big, 2, bs);
        assert_eq!(s.verified_map(), [true, false, true, false, false]);
        s.keep();
        // What the resume log holds: the values of blocks 0 and 2.
        let claimed = [Some(value(&big, 0)), None, Some(value(&big, 2))];

        // Corrupt block 2 on disk behind our back: it must not count.
        let part = dl.path().join(".lanshare-resume1.part/big.bin");
        let f = fs::OpenOptions::new().write(true).open(&part).unwrap();
        f.write_all_at(b"XX", 2 * bs as u64 + 5).unwrap();

        let mut s = dl.stage(&plan, &m, "resume1").unwrap();
        assert_eq!(s.verify_existing(&claimed).unwrap(), bs as u64);
        assert_eq!(
            s.missing(),
            [
                BlockRange {
                    file: 0,
                    first: 1,
                    count: 3
                },
                BlockRange {
                    file: 1,
                    first: 0,
                    count: 1
                },
            ]
        );
        for b in 1..4 {
            send_block(&mut s, 0, &big, b, bs);
        }
        send_file(&mut s, 1, b"tiny", 4);
        assert!(s.is_complete());
        assert_eq!(s.commit().unwrap(), ["big.bin", "small"]);
        assert_eq!(fs::read(dl.path().join("big.bin")).unwrap(), big);
        assert_eq!(names(dl.path()), ["big.bin", "small"]);
    }

    /// Stages `big.bin` under key `key`, verifies its block 0 and keeps
    /// the staging for a resume; returns the claims a resume would make.
    fn kept_with_block_0(
        dl: &DownloadDir,
        m: &Manifest,
        big: &[u8],
        key: &str,
    ) -> [Option<[u8; 32]>; 1] {
        let mut s = dl.stage(&plan(m, DEPTH).unwrap(), m, key).unwrap();
        send_block(&mut s, 0, big, 0, 1 << 20);
        s.keep();
        [Some(value(big, 0))]
    }

    /// A kept staging directory that is not exactly as we left it (its
    /// mode opened up, or replaced by a symlink to a copy) is not resumed:
    /// it is set aside, and every block is received again.
    #[test]
    fn a_staging_directory_others_could_change_is_not_resumed() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(&tmp.path().join("dl")).unwrap();
        let big = pattern((2 << 20) + 5);
        let m = mk(vec![file("big.bin", &big)]);
        let plan = plan(&m, DEPTH).unwrap();
        let staged = dl.path().join(".lanshare-opened.part");

        let claimed = kept_with_block_0(&dl, &m, &big, "opened");
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = dl.stage(&plan, &m, "opened").unwrap();
        assert_eq!(
            s.verify_existing(&claimed).unwrap(),
            0,
            "resumed from a 0755 directory"
        );
        let mode = fs::metadata(&staged).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700);
        assert_eq!(
            names(dl.path()),
            [".lanshare-opened.part"],
            "ours is removed"
        );
        drop(s);

        let claimed = kept_with_block_0(&dl, &m, &big, "linked");
        let copy = tmp.path().join("copy");
        fs::rename(dl.path().join(".lanshare-linked.part"), &copy).unwrap();
        std::os::unix::fs::symlink(&copy, dl.path().join(".lanshare-linked.part")).unwrap();
        let mut s = dl.stage(&plan, &m, "linked").unwrap();
        assert_eq!(
            s.verify_existing(&claimed).unwrap(),
            0,
            "resumed through a symlink"
        );
        assert_eq!(names(dl.path()), [".lanshare-linked.part"]);
        assert_eq!(
            names(&copy),
            ["big.bin"],
            "the symlink's target is left alone"
        );
    }

    /// Another user's directory under a staging name (made before ours,
    /// or swapped in for it) is neither resumed nor touched: it is moved
    /// aside as it is and the transfer starts over in a new one.
    #[test]
    #[ignore = "needs root: chowns a staging directory to another user"]
    fn another_users_staging_directory_is_set_aside_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(&tmp.path().join("dl")).unwrap();
        let big = pattern((2 << 20) + 5);
        let m = mk(vec![file("big.bin", &big)]);
        let claimed = kept_with_block_0(&dl, &m, &big, "theirs");
        let staged = dl.path().join(".lanshare-theirs.part");
        let nobody = 65534;
        for path in [staged.join("big.bin"), staged.clone()] {
            std::os::unix::fs::chown(&path, Some(nobody), Some(nobody)).unwrap();
        }
        let mut s = dl.stage(&plan(&m, DEPTH).unwrap(), &m, "theirs").unwrap();
        assert_eq!(
            s.verify_existing(&claimed).unwrap(),
            0,
            "resumed from another user's directory"
        );
        let all = names(dl.path());
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all[0], ".lanshare-theirs.part");
        assert!(
            all[1].starts_with(".lanshare-theirs.part.refused-"),
            "{all:?}"
        );
        let aside = dl.path().join(&all[1]);
        assert_eq!(fs::metadata(&aside).unwrap().uid(), nobody);
        assert_eq!(names(&aside), ["big.bin"], "their files are left alone");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(&staged).unwrap().uid(),
            rustix::process::geteuid().as_raw()
        );
        drop(s);
        // Expiring the key does not remove someone else's directory.
        let _ = dl.discard("theirs");
        assert!(aside.join("big.bin").exists());
    }

    /// In a resumed staging directory, a file is reopened only if it is a
    /// regular file of ours with one link: a hard link to a file elsewhere
    /// (which would receive our writes, or hand its content to the commit)
    /// is replaced by a new file, and its blocks are received again.
    #[test]
    fn a_file_with_another_link_is_not_reopened() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(&tmp.path().join("dl")).unwrap();
        let big = pattern((2 << 20) + 5);
        let m = mk(vec![file("big.bin", &big)]);
        let claimed = kept_with_block_0(&dl, &m, &big, "hardlink");
        let part = dl.path().join(".lanshare-hardlink.part/big.bin");
        let elsewhere = tmp.path().join("elsewhere.bin");
        fs::copy(&part, &elsewhere).unwrap();
        fs::remove_file(&part).unwrap();
        fs::hard_link(&elsewhere, &part).unwrap();
        let before = fs::read(&elsewhere).unwrap();

        let mut s = dl.stage(&plan(&m, DEPTH).unwrap(), &m, "hardlink").unwrap();
        assert_eq!(
            s.verify_existing(&claimed).unwrap(),
            0,
            "a hard-linked file was resumed"
        );
        send_file(&mut s, 0, &big, 1 << 20);
        assert_eq!(s.commit().unwrap(), ["big.bin"]);
        assert_eq!(fs::read(dl.path().join("big.bin")).unwrap(), big);
        assert_eq!(
            fs::read(&elsewhere).unwrap(),
            before,
            "written through the link"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&elsewhere).unwrap().nlink(), 1);
    }

    /// Bytes the file system has allocated for `path`.
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().blocks() * 512
    }

    /// Issue 14 item 3: a sender that delivers one block and drops must not
    /// leave the whole file's preallocation behind; resuming takes it again.
    #[test]
    fn kept_staging_holds_only_verified_blocks_and_resume_reserves_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        if !dl.on_disk() {
            eprintln!(
                "skipped: {} is in memory, nothing is preallocated",
                tmp.path().display()
            );
            return;
        }
        let bs = 1usize << 20;
        let big = pattern(8 * bs);
        let m = mk(vec![file("big.bin", &big)]);
        let plan = plan(&m, DEPTH).unwrap();
        let part = dl.path().join(".lanshare-trim1.part/big.bin");
        let mut s = dl.stage(&plan, &m, "trim1").unwrap();
        assert!(allocated(&part) >= 8 * bs as u64, "preallocated in full");
        send_block(&mut s, 0, &big, 0, bs);
        // Block 1 half written when the link drops.
        s.write(0, bs as u64, &big[bs..bs + bs / 2]).unwrap();
        s.keep();
        let kept = allocated(&part);
        assert!(
            kept <= bs as u64 + (64 << 10),
            "a kept partial with one verified block holds {kept} bytes"
        );
        assert_eq!(
            &fs::read(&part).unwrap()[..bs],
            &big[..bs],
            "block 0 intact"
        );

        let mut s = dl.stage(&plan, &m, "trim1").unwrap();
        assert!(allocated(&part) >= 8 * bs as u64, "resume reserves again");
        assert_eq!(
            s.verify_existing(&[Some(value(&big, 0))]).unwrap(),
            bs as u64
        );
        for b in 1..8 {
            send_block(&mut s, 0, &big, b, bs);
        }
        assert_eq!(s.commit().unwrap(), ["big.bin"]);
        assert_eq!(fs::read(dl.path().join("big.bin")).unwrap(), big);
    }

    #[test]
    fn drop_without_commit_removes_staging() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let m = mk(vec![file("a/b/c.txt", b"hello"), file("z", b"zz")]);
        let mut s = stage(&dl, &m).unwrap();
        let staged = names(dl.path());
        assert_eq!(staged.len(), 1);
        assert!(staged[0].starts_with(".lanshare-") && staged[0].ends_with(".part"));
        let mode = fs::metadata(dl.path().join(&staged[0]))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        s.write(0, 0, b"hel").unwrap();
        // A symlink planted inside the staging dir is removed, not followed.
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("precious"), b"p").unwrap();
        std::os::unix::fs::symlink(outside.path(), dl.path().join(&staged[0]).join("a/link"))
            .unwrap();
        drop(s);
        assert!(names(dl.path()).is_empty());
        assert_eq!(names(outside.path()), ["precious"]);
    }

    #[test]
    fn symlink_in_download_dir_is_never_followed() {
        for offer in [file("evil/pwned.txt", b"pwned"), file("evil", b"pwned")] {
            let tmp = tempfile::tempdir().unwrap();
            let outside = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(outside.path(), tmp.path().join("evil")).unwrap();
            let dl = DownloadDir::open(tmp.path()).unwrap();
            let m = mk(vec![offer.clone()]);
            let placed = receive(&dl, &m, &[b"pwned"], 3);
            assert_eq!(placed, ["evil (1)"]);
            assert!(names(outside.path()).is_empty(), "wrote outside: {offer:?}");
            assert!(
                fs::symlink_metadata(tmp.path().join("evil"))
                    .unwrap()
                    .is_symlink()
            );
            assert_eq!(names(tmp.path()), ["evil", "evil (1)"]);
            let landed = tmp.path().join(offer.path.replacen("evil", "evil (1)", 1));
            assert_eq!(fs::read(landed).unwrap(), b"pwned");
        }
    }

    #[test]
    fn not_enough_space_is_detected_up_front() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let m = Manifest {
            entries: vec![Entry {
                path: "huge".into(),
                kind: EntryKind::File {
                    size: u64::MAX / 2,
                    tag: [0; 32],
                },
            }],
            ..Manifest::default()
        };
        let err = stage(&dl, &m).unwrap_err();
        assert!(matches!(err, StoreError::NoSpace { needed, .. } if needed == u64::MAX / 2));
        assert!(err.to_string().contains("not enough disk space"), "{err}");
        assert!(names(dl.path()).is_empty());
        assert!(sys::is_no_space(&std::io::Error::from_raw_os_error(28)));
        assert!(sys::is_no_space(&std::io::Error::from_raw_os_error(122)));
    }

    #[test]
    fn mismatched_plan_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let m1 = mk(vec![file("a", b"1")]);
        let m2 = mk(vec![file("a", b"22")]);
        let p = plan(&m1, DEPTH).unwrap();
        assert!(matches!(
            dl.stage(&p, &m2, "mismatch"),
            Err(StoreError::Protocol(_))
        ));
        assert!(names(dl.path()).is_empty());
    }

    #[test]
    fn many_small_files_keep_fds_bounded() {
        // More files than the usual 1024-fd soft limit.
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let contents: Vec<Vec<u8>> = (0..2000)
            .map(|i| format!("file {i}").into_bytes())
            .collect();
        let entries = contents
            .iter()
            .enumerate()
            .map(|(i, c)| file(&format!("many/{:02}/{i}.txt", i % 50), c))
            .collect();
        let m = mk(entries);
        let refs: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
        assert_eq!(receive(&dl, &m, &refs, 4), ["many"]);
        assert_eq!(
            fs::read(dl.path().join("many/49/1999.txt")).unwrap(),
            b"file 1999"
        );
    }

    #[test]
    fn free_space_is_plausible() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let free = dl.free_space().unwrap();
        assert!(free > 4096, "{free}");
        assert!(free < 1 << 60, "{free}");
    }

    /// Writes `content` through a [`FileWriter`] in `chunk`-sized pieces.
    fn write_whole(s: &Staging, index: u32, content: &[u8], chunk: usize) -> FileWriter {
        let mut w = s.file_writer(index).unwrap();
        for piece in content.chunks(chunk.max(1)) {
            w.write(piece).unwrap();
        }
        w
    }

    #[test]
    fn whole_files_written_in_parallel_commit_like_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let big = pattern((2 << 20) + 5);
        let m = mk(vec![
            file("Photos/big.bin", &big),
            file("Photos/empty", b""),
            file("note.txt", b"hello"),
        ]);
        let mut s = stage(&dl, &m).unwrap();
        // Two writers of different files at once, from two threads.
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| write_whole(&s, 0, &big, 65_536));
            let b = scope.spawn(|| write_whole(&s, 2, b"hello", 2));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert!(!s.is_complete());
        let modified = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        s.accept_file(a, Some(modified)).unwrap();
        s.accept_file(b, None).unwrap();
        let empty = s.file_writer(1).unwrap();
        s.accept_file(empty, None).unwrap();
        assert!(s.is_complete());
        assert_eq!(s.bytes_present(), big.len() as u64 + 5);
        assert_eq!(s.commit().unwrap(), ["Photos", "note.txt"]);
        let root = dl.path();
        assert_eq!(fs::read(root.join("Photos/big.bin")).unwrap(), big);
        assert_eq!(fs::read(root.join("Photos/empty")).unwrap(), b"");
        assert_eq!(fs::read(root.join("note.txt")).unwrap(), b"hello");
        let mtime = fs::metadata(root.join("Photos/big.bin"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(mtime, modified);
        assert_eq!(names(root), ["Photos", "note.txt"], "no staging left");
    }

    #[test]
    fn whole_files_are_held_to_their_announced_size() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let m = mk(vec![dir("d"), file("d/f", b"0123456789")]);
        let mut s = stage(&dl, &m).unwrap();
        let protocol = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Protocol(_)));
        assert!(
            matches!(s.file_writer(0), Err(StoreError::Protocol(_))),
            "a directory"
        );
        assert!(
            matches!(s.file_writer(9), Err(StoreError::Protocol(_))),
            "no such entry"
        );
        let mut w = s.file_writer(1).unwrap();
        w.write(b"01234").unwrap();
        assert!(protocol(w.write(b"56789A")), "longer than announced");
        assert_eq!(w.written(), 5, "nothing of the refused write counts");
        assert!(protocol(s.accept_file(w, None)), "shorter than announced");
        assert!(!s.is_complete());
        // A retry starts over and completes.
        let w = write_whole(&s, 1, b"abcdefghij", 3);
        s.accept_file(w, None).unwrap();
        assert!(
            matches!(s.file_writer(1), Err(StoreError::Protocol(_))),
            "already complete"
        );
        assert_eq!(s.commit().unwrap(), ["d"]);
        assert_eq!(fs::read(dl.path().join("d/f")).unwrap(), b"abcdefghij");
    }

    #[test]
    fn files_left_out_are_neither_placed_nor_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let m = mk(vec![
            file("bad.bin", b"xxxx"),
            file("good.txt", b"ok"),
            file("album/bad.jpg", b"yy"),
            file("album/good.jpg", b"zz"),
        ]);
        let mut s = stage(&dl, &m).unwrap();
        let mut partial = s.file_writer(0).unwrap();
        partial.write(b"xx").unwrap();
        drop(partial);
        s.leave_out(0).unwrap();
        s.leave_out(2).unwrap();
        assert!(
            matches!(s.file_writer(0), Err(StoreError::Protocol(_))),
            "left out"
        );
        assert!(!s.is_complete());
        for (index, content) in [(1, &b"ok"[..]), (3, b"zz")] {
            let w = write_whole(&s, index, content, 1);
            s.accept_file(w, None).unwrap();
        }
        assert!(s.is_complete(), "left-out files are not waited for");
        assert_eq!(s.commit().unwrap(), ["good.txt", "album"]);
        assert_eq!(names(dl.path()), ["album", "good.txt"]);
        assert_eq!(names(&dl.path().join("album")), ["good.jpg"]);
    }
}
