//! Thin helpers over the `*at` system calls the store uses.
//!
//! Every path handed to the kernel here is relative to a directory fd and is
//! resolved with [`RESOLVE`], so a symlink (or `..`, or an absolute path)
//! anywhere in it makes the call fail instead of leaving the tree.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Dir, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How every path below the download directory is resolved: stay beneath
/// the starting directory, follow no symlinks and no `/proc` magic links.
pub(super) const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Deepest directory nesting [`remove_tree`] descends into. The staging
/// tree's depth is bounded by the planner's limit; this only guards the
/// recursion against a tree modified behind our back.
const MAX_REMOVE_DEPTH: usize = 512;

/// Opens directory `rel` (one or more components) beneath `dir`.
pub(super) fn open_dir(dir: BorrowedFd<'_>, rel: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        dir,
        rel,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        RESOLVE,
    )
}

/// `f_bavail * f_frsize` of the file system holding `fd`.
pub(super) fn free_space(fd: BorrowedFd<'_>) -> rustix::io::Result<u64> {
    let st = rustix::fs::fstatvfs(fd)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether the file system holding `fd` keeps its files in memory (tmpfs).
///
/// Preallocating there buys nothing: there is no fragmentation to avoid,
/// and `fallocate` zero-fills every page of RAM up front (about a quarter
/// of a second per GiB, before the first byte can arrive) only for the
/// data to overwrite it. The free-space check before staging still refuses
/// what cannot fit; a write that later meets a full tmpfs fails cleanly.
pub(super) fn is_memory_backed(fd: BorrowedFd<'_>) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    // `f_type` is `i64` here but narrower on some architectures.
    #[allow(clippy::useless_conversion)]
    rustix::fs::fstatfs(fd).is_ok_and(|st| i64::from(st.f_type) == TMPFS_MAGIC)
}

/// Whether an OS error means "disk or quota full".
pub(super) fn is_no_space(err: &std::io::Error) -> bool {
    matches!(
        Errno::from_io_error(err),
        Some(Errno::NOSPC) | Some(Errno::DQUOT)
    )
}

/// Removes everything inside `dir` (not `dir` itself), never following
/// symlinks: entries are unlinked by name, and only real directories
/// (opened with [`RESOLVE`] and `O_NOFOLLOW`) are descended into.
///
/// Best effort: keeps going after an error and returns the first one.
pub(super) fn remove_tree(dir: BorrowedFd<'_>) -> rustix::io::Result<()> {
    remove_tree_at(dir, 0)
}

fn remove_tree_at(dir: BorrowedFd<'_>, depth: usize) -> rustix::io::Result<()> {
    if depth > MAX_REMOVE_DEPTH {
        return Err(Errno::LOOP);
    }
    // Collect names first, so that no directory stream is open while we
    // unlink or recurse (bounded fds, no readdir-while-modifying questions).
    let mut names: Vec<CString> = Vec::new();
    let mut first_err = None;
    {
        let mut stream = Dir::read_from(dir)?;
        while let Some(entry) = stream.read() {
            match entry {
                Ok(entry) => {
                    let name = entry.file_name();
                    if name.to_bytes() != b"." && name.to_bytes() != b".." {
                        names.push(name.to_owned());
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                    break;
                }
            }
        }
    }
    for name in names {
        // Linux unlink(2) refuses directories with EISDIR, which tells us to
        // recurse without trusting d_type.
        let result = match rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty()) {
            Err(Errno::ISDIR) => rustix::fs::openat2(
                dir,
                name.as_c_str(),
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
                RESOLVE,
            )
            .and_then(|sub| remove_tree_at(sub.as_fd(), depth + 1))
            .and_then(|()| rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::REMOVEDIR)),
            other => other,
        };
        if let Err(e) = result {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}
