//! The receiving side's storage: everything that touches the download
//! directory.
//!
//! The security model is that every byte from a peer is hostile, so the store
//! guarantees:
//!
//! * **Nothing outside the download directory** is ever created, written or
//!   touched. Paths are validated twice: by [`path::sanitize`] / [`plan`]
//!   (pure string rules) and by the kernel, because every file and directory
//!   is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` relative
//!   to a directory fd. A symlink planted in the download directory is never
//!   followed.
//! * **Nothing partial is visible under a final name.** An accepted offer is
//!   written into a private hidden directory `.lanshare-<random>.part`
//!   ([`Staging`]). Only when every file is complete, hash-verified and
//!   durable is each top-level entry moved into the download directory with
//!   one `renameat2(RENAME_NOREPLACE)`.
//! * **Nothing is ever overwritten.** `RENAME_NOREPLACE` makes the kernel
//!   refuse existing names; the store then tries `name (1).ext`,
//!   `name (2).ext`, ... .
//! * **No temporary data is left behind** on failure: dropping an
//!   uncommitted [`Staging`] removes its directory, without following
//!   symlinks.
//! * **Committed means on the disk**: when [`Staging::commit`] returns, every
//!   file's data and every directory entry of the transfer, the final names
//!   included, has been flushed. The flushing is scoped to the transfer's
//!   own files, so another program's unwritten data never delays it, and
//!   runs while the data is still arriving, so that little is left to wait
//!   for at the end (`write_behind`, `syncer`). All of it goes through one
//!   seam, [`Flush`], which tests use to check the order and to inject the
//!   errors of a failing disk.
//!
//! The API is blocking; the async transfer layer calls it from a blocking
//! thread (`tokio::task::spawn_blocking`).

mod flush;
pub mod path;
mod staging;
mod syncer;
mod sys;
mod write_behind;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};

pub use flush::{Flush, SystemFlush};
pub use path::{PathError, Plan, PlannedEntry, SafePath, TopLevel, numbered_name, plan, sanitize};
pub use staging::{FileWriter, MAX_FILES_IN_PROGRESS, Staging};

use crate::protocol::Manifest;

/// Mode of the download directory (and its parents) when the store creates
/// it; the process umask still applies.
const DOWNLOAD_DIR_MODE: u32 = 0o750;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A system call failed; `context` says what the store was doing.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, including the path where useful.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The disk (or the user's quota) is full, detected up front from
    /// `statvfs`, by `fallocate`, or by a write (`ENOSPC` / `EDQUOT`).
    #[error(
        "not enough disk space: {needed} more bytes are needed but only {free} are available; free up space or choose another download directory"
    )]
    NoSpace {
        /// Bytes still to be stored.
        needed: u64,
        /// Bytes available to this user when the error was detected.
        free: u64,
    },
    /// A received block does not match the value the sender sent for it.
    #[error(
        "received data for {path:?} does not match the BLAKE3 value the sender sent for it; the block was discarded"
    )]
    Integrity {
        /// The file's path inside the offer.
        path: String,
    },
    /// The peer (or the caller) broke the rules of the data phase: unknown or
    /// non-file index, wrong offset, more data than announced, commit before
    /// every file was complete.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The offer contains a path that is unsafe or conflicting.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The disk failed to store received data: a writeback or sync
    /// reported an error (`EIO` from a failing disk, `ENOSPC` from
    /// thin-provisioned or network storage that ran out of space after
    /// accepting the writes). Nothing was placed under a final name.
    #[error(
        "the disk failed to store {what}: {source}; nothing was saved under its final name. Check the disk and its free space (the kernel log, `dmesg`, may say more), then send again"
    )]
    Flush {
        /// What was being flushed: an entry's path, or the new names.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An earlier write failed, so the staged data can only be discarded.
    #[error("the transfer already failed and can only be discarded")]
    Aborted,
    /// Every candidate name from `name` to `name (N)` already exists.
    #[error(
        "no free name for {name:?} in the download directory (tried up to {attempts} numbered variants); tidy up the download directory"
    )]
    NoFreeName {
        /// The top-level name that was to be placed.
        name: String,
        /// How many numbered variants were tried.
        attempts: u32,
    },
}

impl StoreError {
    /// Whether the file system or the user's quota is full: [`Self::NoSpace`],
    /// or any call that failed with `ENOSPC` / `EDQUOT`: a flush, and also
    /// creating a file or directory when no inode is left (PROTOCOL.md
    /// §5.6: `NoSpace`, which senders do not retry, not `Io`).
    pub fn is_no_space(&self) -> bool {
        match self {
            Self::NoSpace { .. } => true,
            Self::Flush { source, .. } | Self::Io { source, .. } => sys::is_no_space(source),
            _ => false,
        }
    }

    /// Wraps an OS error with what the store was doing.
    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Self::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// The directory received files are placed in, held open as an
/// `O_DIRECTORY` fd so that later operations are relative to the directory
/// that was opened, even if its path is renamed or replaced meanwhile.
pub struct DownloadDir {
    path: PathBuf,
    fd: OwnedFd,
    flush: Arc<dyn Flush>,
}

impl fmt::Debug for DownloadDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DownloadDir")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DownloadDir {
    /// Opens the download directory, creating it and any missing parents
    /// with mode 0o750 first. The configured path itself may be or contain
    /// a symlink (the user chose it); nothing below it is ever followed.
    ///
    /// # Errors
    /// [`StoreError::Io`] if it cannot be created or opened as a directory.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, Arc::new(SystemFlush))
    }

    /// [`open`](Self::open), with every writeback and sync of received data
    /// going through `flush` instead of straight to the kernel (tests
    /// record the order of flushes or make them fail).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(path: &Path, flush: Arc<dyn Flush>) -> Result<Self, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DOWNLOAD_DIR_MODE)
            .create(path)
            .map_err(|e| {
                StoreError::io(
                    format!("cannot create download directory {}", path.display()),
                    e,
                )
            })?;
        let fd = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            StoreError::io(
                format!("cannot open download directory {}", path.display()),
                e,
            )
        })?;
        Ok(Self {
            path: path.to_owned(),
            fd,
            flush,
        })
    }

    /// The path the directory was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes available to an unprivileged user on the directory's file
    /// system (`f_bavail * f_frsize`).
    ///
    /// # Errors
    /// [`StoreError::Io`] if `fstatvfs` fails.
    pub fn free_space(&self) -> Result<u64, StoreError> {
        sys::free_space(self.fd.as_fd()).map_err(|e| {
            StoreError::io(
                format!("cannot query free space of {}", self.path.display()),
                e,
            )
        })
    }

    /// Whether the directory is on a disk rather than in memory (tmpfs):
    /// only then are received files preallocated.
    pub fn on_disk(&self) -> bool {
        !sys::is_memory_backed(self.fd.as_fd())
    }

    /// Creates — or, if one with the same `key` exists, reopens to resume —
    /// the hidden staging directory `.lanshare-<key>.part` for one accepted
    /// offer, with every directory and (preallocated) file of `plan` inside
    /// it. `key` must be ASCII alphanumeric; callers derive it from the
    /// sender's identity and the manifest, so that the same content from the
    /// same device finds its partial data again.
    ///
    /// `plan` must have been built from `manifest` with [`plan()`].
    ///
    /// # Errors
    /// [`StoreError::NoSpace`] if the offer does not fit, [`StoreError::Protocol`]
    /// if `plan` does not match `manifest`, [`StoreError::Integrity`] if an
    /// empty file announces a non-empty hash, [`StoreError::Io`] otherwise.
    /// On error nothing is left behind.
    pub fn stage(
        &self,
        plan: &Plan,
        manifest: &Manifest,
        key: &str,
    ) -> Result<Staging, StoreError> {
        Staging::open(self, plan, manifest, key)
    }

    /// Removes the staging directory of `key`, if any. Returns whether one
    /// existed.
    ///
    /// # Errors
    /// [`StoreError::Io`] if it exists but cannot be opened.
    pub fn discard(&self, key: &str) -> Result<bool, StoreError> {
        staging::discard(self, key)
    }

    /// The directory fd, for the staging code.
    fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// How received data is flushed, for the staging code.
    fn flush(&self) -> &Arc<dyn Flush> {
        &self.flush
    }
}
