//! One accepted offer being received: the hidden staging directory, the
//! per-file write cursors and hashers, and the final commit.
//!
//! Why a staging *directory* rather than a temp file next to each final
//! file: all peer-chosen names are created inside a fresh directory that
//! only we know the (random) name of, so nothing the peer sends can collide
//! with, or be redirected by, what already exists in the download directory
//! (say a symlink `evil -> /etc`). The only operation that touches existing
//! names is the final `renameat2(RENAME_NOREPLACE)` of each top-level entry,
//! which the kernel performs atomically and which never replaces anything.
//! It also makes cleanup a single recursive removal and lets one `syncfs`
//! make thousands of small files durable at once.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use rustix::fs::{AtFlags, FallocateFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use tracing::{debug, warn};

use super::path::{Plan, SafePath, TopLevel, numbered_name};
use super::{DownloadDir, StoreError, sys};
use crate::protocol::{EntryKind, Manifest};

/// Files that may be partly written at the same time. The sender sends one
/// file after another, so one is enough; the small margin tolerates a
/// pipelined sender, while bounding open fds and hasher memory (~2 KiB
/// each) against a peer that starts many files and finishes none.
pub const MAX_FILES_IN_PROGRESS: usize = 8;

/// How many numbered variants `name (1)` ... `name (N)` commit tries before
/// giving up on a top-level name.
const MAX_NAME_ATTEMPTS: u32 = 10_000;

/// Mode of received directories and of the staging directory itself.
const DIR_MODE: u32 = 0o750;
const STAGING_DIR_MODE: u32 = 0o700;
/// Mode of received files.
const FILE_MODE: u32 = 0o640;

/// Progress of one file entry.
struct FileState {
    size: u64,
    hash: blake3::Hash,
    written: u64,
    verified: bool,
}

/// A file currently being written: its fd and running hash.
struct Active {
    file: File,
    hasher: blake3::Hasher,
}

/// Files of one offer being received into a hidden staging directory.
///
/// Created by [`DownloadDir::stage`]. Feed it the data with
/// [`write`](Self::write), then [`commit`](Self::commit). Dropping it
/// without committing removes everything it created.
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
    active: HashMap<u32, Active>,
    top_level: Vec<TopLevel>,
    total: u64,
    written: u64,
    /// Set after an I/O or integrity error: the data can only be discarded.
    failed: bool,
    committed: bool,
}

impl fmt::Debug for Staging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Staging")
            .field("download_path", &self.download_path)
            .field("name", &self.name)
            .field("written", &self.written)
            .field("total", &self.total)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Staging {
    /// See [`DownloadDir::stage`].
    pub(super) fn create(
        download: &DownloadDir,
        plan: &Plan,
        manifest: &Manifest,
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
        let total = manifest.total_bytes();
        let free = download.free_space()?;
        if total > free {
            return Err(StoreError::NoSpace {
                needed: total,
                free,
            });
        }
        let download_fd = download
            .fd()
            .try_clone()
            .map_err(|e| StoreError::io("cannot duplicate download directory fd", e))?;
        let (name, dir) = make_staging_dir(download)?;
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
            active: HashMap::new(),
            top_level: plan.top_level().to_vec(),
            total,
            written: 0,
            failed: false,
            committed: false,
        };
        for dir in plan.directories() {
            staging.mkdir(dir)?;
        }
        for (i, entry) in plan.entries().iter().enumerate() {
            let state = match entry.kind {
                EntryKind::Directory => None,
                EntryKind::File { size, hash } => {
                    Some(staging.create_file(i, size, blake3::Hash::from(hash))?)
                }
            };
            staging.files.push(state);
        }
        debug!(dir = %staging.download_path.display(), staging = %staging.name,
            entries = staging.paths.len(), bytes = total, "staged offer");
        Ok(staging)
    }

    /// Creates directory `path` inside the staging directory; its parent was
    /// created before it (the plan lists parents first).
    fn mkdir(&self, path: &SafePath) -> Result<(), StoreError> {
        let context = || {
            format!(
                "cannot create directory {:?} for the download",
                path.to_string()
            )
        };
        let parent = path.parent();
        let result = if parent.is_empty() {
            rustix::fs::mkdirat(&self.dir, path.file_name(), Mode::from_raw_mode(DIR_MODE))
        } else {
            sys::open_dir(self.dir.as_fd(), &parent.join("/")).and_then(|p| {
                rustix::fs::mkdirat(&p, path.file_name(), Mode::from_raw_mode(DIR_MODE))
            })
        };
        result.map_err(|e| StoreError::io(context(), e))
    }

    /// Creates (exclusively) and preallocates file entry `index`.
    fn create_file(
        &self,
        index: usize,
        size: u64,
        hash: blake3::Hash,
    ) -> Result<FileState, StoreError> {
        let path = &self.paths[index];
        let fd = rustix::fs::openat2(
            &self.dir,
            path.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(FILE_MODE),
            sys::RESOLVE,
        )
        .map_err(|e| StoreError::io(format!("cannot create file {path:?}"), e))?;
        if size == 0 {
            // Complete already; its announced hash must still be right.
            if hash != blake3::hash(b"") {
                return Err(StoreError::Integrity { path: path.clone() });
            }
            return Ok(FileState {
                size,
                hash,
                written: 0,
                verified: true,
            });
        }
        // Reserve the blocks now, so a full disk shows up before any data
        // arrives (and files are less fragmented).
        match rustix::fs::fallocate(&fd, FallocateFlags::empty(), 0, size) {
            Ok(()) | Err(Errno::OPNOTSUPP) => {}
            Err(Errno::NOSPC | Errno::DQUOT) => return Err(self.no_space()),
            Err(e) => {
                return Err(StoreError::io(
                    format!("cannot preallocate {size} bytes for {path:?}"),
                    e,
                ));
            }
        }
        Ok(FileState {
            size,
            hash,
            written: 0,
            verified: false,
        })
    }

    /// A [`StoreError::NoSpace`] for the bytes not yet stored.
    fn no_space(&self) -> StoreError {
        StoreError::NoSpace {
            needed: self.total - self.written,
            free: sys::free_space(self.download.as_fd()).unwrap_or(0),
        }
    }

    /// Appends `data` to file entry `index` (an index into the manifest's
    /// entries). `offset` must equal the number of bytes already written to
    /// that file, and `offset + data.len()` must not exceed its size. When
    /// the file reaches its size its BLAKE3 hash is checked and its fd
    /// closed.
    ///
    /// # Errors
    /// * [`StoreError::Protocol`] for a bad index, a directory index, an
    ///   offset gap or overlap, data past the announced size, or too many
    ///   files in progress at once ([`MAX_FILES_IN_PROGRESS`]). These leave
    ///   the staging usable.
    /// * [`StoreError::Integrity`] when a completed file's hash differs.
    /// * [`StoreError::NoSpace`] / [`StoreError::Io`] if the write fails.
    /// * [`StoreError::Aborted`] after any of the previous two.
    pub fn write(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Aborted);
        }
        let i = index as usize;
        let entries = self.paths.len();
        let Some(slot) = self.files.get(i) else {
            return Err(StoreError::Protocol(format!(
                "data for entry {index}, but the offer has only {entries} entries"
            )));
        };
        let path = &self.paths[i];
        let Some(state) = slot else {
            return Err(StoreError::Protocol(format!(
                "data for entry {index} ({path:?}), which is a directory"
            )));
        };
        if offset != state.written {
            return Err(StoreError::Protocol(format!(
                "data for {path:?} at offset {offset}, but {} bytes were written so far",
                state.written
            )));
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > state.size {
            return Err(StoreError::Protocol(format!(
                "data for {path:?} runs to byte {end}, past its announced size of {} bytes",
                state.size
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        if !self.active.contains_key(&index) && self.active.len() >= MAX_FILES_IN_PROGRESS {
            return Err(StoreError::Protocol(format!(
                "more than {MAX_FILES_IN_PROGRESS} files in progress at once"
            )));
        }
        let result = self.append(index, offset, data);
        if result.is_err() {
            self.failed = true;
            self.active.clear();
        }
        result
    }

    /// The I/O half of [`write`](Self::write), after validation.
    fn append(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        let i = index as usize;
        let path = &self.paths[i];
        let active = match self.active.entry(index) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                // First bytes of this file (a file is only closed once it
                // is complete), so a fresh hasher is right.
                let fd = rustix::fs::openat2(
                    &self.dir,
                    path.as_str(),
                    OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::empty(),
                    sys::RESOLVE,
                )
                .map_err(|e| StoreError::io(format!("cannot open {path:?} for writing"), e))?;
                v.insert(Active {
                    file: File::from(fd),
                    hasher: blake3::Hasher::new(),
                })
            }
        };
        if let Err(e) = active.file.write_all_at(data, offset) {
            return Err(if sys::is_no_space(&e) {
                self.no_space()
            } else {
                StoreError::io(format!("cannot write to {path:?}"), e)
            });
        }
        active.hasher.update(data);
        self.written += data.len() as u64;
        let Some(state) = self.files[i].as_mut() else {
            return Err(StoreError::Protocol("internal: not a file".into()));
        };
        state.written += data.len() as u64;
        if state.written == state.size {
            let Some(done) = self.active.remove(&index) else {
                return Err(StoreError::Protocol("internal: no active file".into()));
            };
            // `blake3::Hash` equality is constant-time.
            if done.hasher.finalize() != state.hash {
                return Err(StoreError::Integrity { path: path.clone() });
            }
            state.verified = true;
        }
        Ok(())
    }

    /// Bytes written so far over all files.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Checks that every file is complete and verified, makes the data
    /// durable, and moves each top-level entry into the download directory
    /// under a name that did not exist yet (`name`, `name (1).ext`, ...).
    /// Returns the final top-level names, in the plan's order.
    ///
    /// Durability: one `syncfs` on the staging directory flushes every file
    /// and directory of the offer (much cheaper than an `fsync` per file for
    /// thousands of small files), then the staging directory is fsynced,
    /// the entries renamed, and the download directory fsynced so that the
    /// renames survive a crash.
    ///
    /// # Errors
    /// [`StoreError::Protocol`] if a file is incomplete, [`StoreError::Aborted`]
    /// after an earlier failure, [`StoreError::Io`] / [`StoreError::NoFreeName`]
    /// otherwise. Entries already moved into place when an error happens stay
    /// there (they are complete and verified); the rest is removed.
    pub fn commit(mut self) -> Result<Vec<String>, StoreError> {
        self.commit_inner()
    }

    fn commit_inner(&mut self) -> Result<Vec<String>, StoreError> {
        if self.failed {
            return Err(StoreError::Aborted);
        }
        for (path, state) in self.paths.iter().zip(&self.files) {
            if let Some(s) = state
                && !s.verified
            {
                return Err(StoreError::Protocol(format!(
                    "commit before {path:?} was complete ({} of {} bytes)",
                    s.written, s.size
                )));
            }
        }
        self.active.clear();
        rustix::fs::syncfs(&self.dir)
            .and_then(|()| rustix::fs::fsync(&self.dir))
            .map_err(|e| StoreError::io("cannot flush received files to disk", e))?;

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
        rustix::fs::fsync(&self.download).map_err(|e| {
            StoreError::io(
                format!("cannot flush {} to disk", self.download_path.display()),
                e,
            )
        })?;
        match rustix::fs::unlinkat(&self.download, self.name.as_str(), AtFlags::REMOVEDIR) {
            // Leave `committed` unset so that Drop retries a full removal.
            Err(e) => warn!(staging = %self.name, error = %e,
                "cannot remove staging directory after commit"),
            Ok(()) => self.committed = true,
        }
        debug!(dir = %self.download_path.display(), names = ?placed,
            files = self.files.iter().flatten().count(), bytes = self.written,
            "committed transfer");
        Ok(placed)
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

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        self.active.clear();
        if let Err(e) = sys::remove_tree(self.dir.as_fd()) {
            warn!(dir = %self.download_path.display(), staging = %self.name, error = %e,
                "cannot remove staged files");
        }
        if let Err(e) = rustix::fs::unlinkat(&self.download, self.name.as_str(), AtFlags::REMOVEDIR)
        {
            warn!(dir = %self.download_path.display(), staging = %self.name, error = %e,
                "cannot remove staging directory");
        }
    }
}

/// Creates `.lanshare-<16 random hex>.part` (mode 0o700) in the download
/// directory and opens it.
fn make_staging_dir(download: &DownloadDir) -> Result<(String, OwnedFd), StoreError> {
    let context = || {
        format!(
            "cannot create a staging directory in {}",
            download.path().display()
        )
    };
    let mut attempts = 0;
    let name = loop {
        let name = format!("{}{}.part", super::path::RESERVED_PREFIX, sys::random_hex());
        match rustix::fs::mkdirat(
            download.fd(),
            name.as_str(),
            Mode::from_raw_mode(STAGING_DIR_MODE),
        ) {
            Ok(()) => break name,
            Err(Errno::EXIST) if attempts < 8 => attempts += 1,
            Err(e) => return Err(StoreError::io(context(), e)),
        }
    };
    match sys::open_dir(download.fd().as_fd(), &name) {
        Ok(fd) => Ok((name, fd)),
        Err(e) => {
            let _ = rustix::fs::unlinkat(download.fd(), name.as_str(), AtFlags::REMOVEDIR);
            Err(StoreError::io(context(), e))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;
    use crate::protocol::Entry;
    use crate::store::plan;

    const DEPTH: usize = 16;

    fn file(path: &str, content: &[u8]) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: EntryKind::File {
                size: content.len() as u64,
                hash: *blake3::hash(content).as_bytes(),
            },
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
        dl.stage(&plan(m, DEPTH)?, m)
    }

    /// Stages `m`, writes `contents[i]` for every file entry in `chunk`-sized
    /// pieces, commits.
    fn receive(dl: &DownloadDir, m: &Manifest, contents: &[&[u8]], chunk: usize) -> Vec<String> {
        let mut s = stage(dl, m).unwrap();
        for (i, content) in contents.iter().enumerate() {
            if let EntryKind::File { .. } = m.entries[i].kind {
                let mut off = 0;
                for piece in content.chunks(chunk) {
                    s.write(i as u32, off, piece).unwrap();
                    off += piece.len() as u64;
                }
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
        let m = Manifest {
            entries: vec![
                dir("album"),
                file("album/sub/deep.bin", &big),
                file("album/empty.txt", b""),
                dir("album/nothing"),
                file("Cafe\u{301} 日本.txt", b"bonjour"),
            ],
        };
        let contents: [&[u8]; 5] = [b"", &big, b"", b"", b"bonjour"];
        let mut s = stage(&dl, &m).unwrap();
        assert_eq!(names(dl.path()).len(), 1, "only the staging dir exists");
        for (i, content) in contents.iter().enumerate() {
            if let EntryKind::File { .. } = m.entries[i].kind {
                let mut off = 0;
                // Uneven chunks, like a real sender's frames.
                for piece in content.chunks((1 << 20) - 7) {
                    s.write(i as u32, off, piece).unwrap();
                    off += piece.len() as u64;
                }
            }
        }
        assert_eq!(s.bytes_written(), big.len() as u64 + 7);
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
        let m = Manifest {
            entries: vec![
                file("photo.jpg", b"jpeg"),
                file("docs/a.txt", b"a"),
                file("README", b"r"),
            ],
        };
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
    fn wrong_hash_is_an_integrity_error_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("keep.txt"), b"mine").unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let mut bad = file("x/evil.bin", b"expected content");
        bad.kind = EntryKind::File {
            size: 16,
            hash: *blake3::hash(b"something else!!").as_bytes(),
        };
        let m = Manifest { entries: vec![bad] };
        let mut s = stage(&dl, &m).unwrap();
        s.write(0, 0, b"expected").unwrap();
        let err = s.write(0, 8, b" content").unwrap_err();
        assert!(
            matches!(&err, StoreError::Integrity { path } if path == "x/evil.bin"),
            "{err:?}"
        );
        assert!(matches!(s.write(0, 16, b""), Err(StoreError::Aborted)));
        drop(s);
        assert_eq!(names(dl.path()), ["keep.txt"]);
        assert_eq!(fs::read(dl.path().join("keep.txt")).unwrap(), b"mine");
    }

    #[test]
    fn empty_file_with_wrong_hash_fails_at_stage() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let mut e = file("empty", b"");
        e.kind = EntryKind::File {
            size: 0,
            hash: [7; 32],
        };
        let m = Manifest { entries: vec![e] };
        assert!(matches!(stage(&dl, &m), Err(StoreError::Integrity { .. })));
        assert!(names(dl.path()).is_empty());
    }

    #[test]
    fn protocol_violations_are_rejected_without_harm() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let m = Manifest {
            entries: vec![dir("d"), file("d/f", b"0123456789")],
        };
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
        assert_eq!(s.bytes_written(), 5);
        // Still usable after rejected frames, but not committable yet.
        let mut s = match s.commit() {
            Err(StoreError::Protocol(msg)) => {
                assert!(msg.contains("5 of 10"), "{msg}");
                assert!(names(dl.path()).is_empty(), "failed commit cleans up");
                stage(&dl, &m).unwrap()
            }
            other => panic!("commit of an incomplete file: {other:?}"),
        };
        s.write(1, 0, b"0123456789").unwrap();
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
        let m = Manifest { entries };
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
        s.write(last, 0, b"ab").unwrap();
    }

    #[test]
    fn drop_without_commit_removes_staging() {
        let tmp = tempfile::tempdir().unwrap();
        let dl = DownloadDir::open(tmp.path()).unwrap();
        let m = Manifest {
            entries: vec![file("a/b/c.txt", b"hello"), file("z", b"zz")],
        };
        let mut s = stage(&dl, &m).unwrap();
        let staged = names(dl.path());
        assert_eq!(staged.len(), 1);
        assert!(staged[0].starts_with(".lanshare-") && staged[0].ends_with(".part"));
        assert_eq!(staged[0].len(), ".lanshare-.part".len() + 16);
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
            let m = Manifest {
                entries: vec![offer.clone()],
            };
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
                    hash: [0; 32],
                },
            }],
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
        let m1 = Manifest {
            entries: vec![file("a", b"1")],
        };
        let m2 = Manifest {
            entries: vec![file("a", b"22")],
        };
        let p = plan(&m1, DEPTH).unwrap();
        assert!(matches!(dl.stage(&p, &m2), Err(StoreError::Protocol(_))));
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
        let m = Manifest { entries };
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
}
