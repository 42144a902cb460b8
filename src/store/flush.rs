//! The one seam between the store and the kernel's writeback and sync
//! calls.
//!
//! Everything the store does to get received data from the page cache onto
//! the disk goes through a [`Flush`]: starting and awaiting writeback of a
//! written range (see `write_behind`), and making a file's data or a
//! directory's entries durable (see `syncer` and [`Staging::commit`]).
//! Only these calls decide when a transfer is durable, so they are a trait:
//! tests put a recorder in front of [`SystemFlush`] to check that every file
//! and directory is flushed before the final names appear and before the
//! sender hears `Done`, and inject the errors a failing disk reports
//! (`EIO`, `ENOSPC` at writeback).
//!
//! Durability is scoped to the transfer's own files: `fdatasync` per file,
//! `fsync` per directory. Never `syncfs`: that waits for every dirty page of
//! every program on the file system (a browser's unfinished 1 GiB download
//! made a 1 MiB receive take 6-15 s instead of a fraction of a second).
//!
//! [`Staging::commit`]: super::Staging::commit

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// How the store starts, awaits and completes writeback. See the module
/// docs; [`SystemFlush`] is the real one.
pub trait Flush: Send + Sync + fmt::Debug {
    /// Starts writing `len` bytes at `offset` of `file` back to the disk,
    /// without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`).
    ///
    /// # Errors
    /// The OS error.
    fn start_writeback(&self, file: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()>;

    /// Waits until that range has been written to the disk, starting
    /// whatever of it is not under writeback yet. Reports the writeback
    /// errors of the file (`EIO`, `ENOSPC` on thin-provisioned storage).
    /// Not a durability guarantee: the disk's cache and the file's
    /// metadata are left to [`sync_file`](Self::sync_file).
    ///
    /// # Errors
    /// The OS error, or the writeback error.
    fn wait_writeback(&self, file: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()>;

    /// Makes a file's data, and the metadata needed to read it back (its
    /// size, its allocated blocks), durable (`fdatasync`).
    ///
    /// # Errors
    /// The OS error, or a writeback error of the file.
    fn sync_file(&self, file: BorrowedFd<'_>) -> io::Result<()>;

    /// Makes a directory's entries durable (`fsync`).
    ///
    /// # Errors
    /// The OS error.
    fn sync_dir(&self, dir: BorrowedFd<'_>) -> io::Result<()>;
}

/// The kernel's calls: `sync_file_range`, `fdatasync`, `fsync`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemFlush;

impl Flush for SystemFlush {
    fn start_writeback(&self, file: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        sync_file_range(file, offset, len, libc::SYNC_FILE_RANGE_WRITE)
    }

    fn wait_writeback(&self, file: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        sync_file_range(
            file,
            offset,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    }

    fn sync_file(&self, file: BorrowedFd<'_>) -> io::Result<()> {
        Ok(rustix::fs::fdatasync(file)?)
    }

    fn sync_dir(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        Ok(rustix::fs::fsync(dir)?)
    }
}

/// `sync_file_range(2)`, which rustix does not wrap.
#[allow(unsafe_code)]
fn sync_file_range(
    file: BorrowedFd<'_>,
    offset: u64,
    len: u64,
    flags: libc::c_uint,
) -> io::Result<()> {
    let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let offset = libc::off64_t::try_from(offset).map_err(invalid)?;
    let len = libc::off64_t::try_from(len).map_err(invalid)?;
    // SAFETY: the call takes no pointers, only integers; `file` is borrowed,
    // so the descriptor stays open (and means the same file) until it
    // returns.
    let result = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn system_calls_accept_a_written_file_and_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let file = File::create(&path).unwrap();
        file.write_all_at(&[7; 8192], 0).unwrap();
        let flush = SystemFlush;
        flush.start_writeback(file.as_fd(), 0, 8192).unwrap();
        flush.wait_writeback(file.as_fd(), 0, 8192).unwrap();
        flush.sync_file(file.as_fd()).unwrap();
        let dir = File::open(tmp.path()).unwrap();
        flush.sync_dir(dir.as_fd()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), [7; 8192]);
    }

    #[test]
    fn offsets_beyond_the_kernel_range_are_refused_not_truncated() {
        let tmp = tempfile::tempdir().unwrap();
        let file = File::create(tmp.path().join("f")).unwrap();
        let err = SystemFlush
            .start_writeback(file.as_fd(), u64::MAX, 1)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
