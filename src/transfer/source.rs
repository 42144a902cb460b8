//! The sending side's scan: turns the paths a user named into a
//! [`Manifest`] plus an open file for each file entry.
//!
//! It happens in two halves, because the daemon that sends may not be
//! allowed to open the user's files at all (the system service runs as
//! user `lanshare` with `ProtectHome=yes`):
//!
//! 1. [`walk`] runs in the CLI, as the user: it lists what would be sent
//!    ([`Layout`]), and [`LayoutEntry::open`] opens each file with the
//!    user's own permissions. The open descriptors go to the daemon over
//!    the control socket ([`crate::control::fds`]).
//! 2. [`prepare`] runs in the daemon on those open files: it checks that
//!    each one is a readable regular file and builds the offer, without
//!    reading any data. The daemon never opens a path a user gave it, so a
//!    user can never make it send a file that user could not read.
//!
//! [`scan`] does both in one process (tests, tools).
//!
//! Rules, and why:
//!
//! * Each argument is a file or a directory. A file becomes one entry named
//!   by its file name; a directory `~/photos/` becomes `photos` plus every
//!   descendant (`photos/sub/x.jpg`), parents before children, siblings
//!   sorted by name so the same tree always gives the same manifest.
//! * A symlink given as an argument is followed: the user named it. Inside a
//!   directory, symlinks, FIFOs, sockets and devices are *skipped* and
//!   reported in [`Layout::skipped`]: following links could leave the tree
//!   the user chose (or loop), and opening a FIFO would block forever.
//! * Names must be UTF-8 (the wire format is UTF-8) and must pass the
//!   receiver's path rules ([`crate::store::plan`]), so an unsendable name
//!   is reported here, with the path, rather than as a refused offer.
//! * No file is read before the offer: the data is hashed as it is sent
//!   (see [`super::send`]), so the first byte moves at once. The offer
//!   names each file's version instead ([`Version`]: device, inode, size,
//!   modification and change times), which lets a receiver resume a later
//!   offer of the same unchanged file; the sender checks the version again
//!   before and after reading each part, so a file that changes while it is
//!   being sent fails the send instead of arriving torn.
//!
//! Blocking; call it from a blocking thread.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::fs::OFlags;

use crate::protocol::{Entry, EntryKind, MAX_ENTRIES, Manifest, choose_block_size};
use crate::store::PathError;

/// Files changed less than this long before their offer get a version tag
/// of their own (see [`Version::tag`]).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The result of preparing what the user asked to send.
#[derive(Debug, Clone)]
pub struct Source {
    /// What will be offered, in send order.
    pub manifest: Manifest,
    /// Same length as `manifest.entries`: each file entry's open file and
    /// version, `None` for directories.
    pub files: Vec<Option<OfferedFile>>,
    /// Entries inside the named directories that cannot be sent and were
    /// left out; the caller should warn about them.
    pub skipped: Vec<Skipped>,
}

/// One file to send, open for reading.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// For messages: the disk path when this process opened the file,
    /// otherwise the name it is offered under.
    pub path: PathBuf,
    /// The open file; read it with positional reads (`FileExt::read_at`),
    /// never through its shared offset.
    pub file: Arc<File>,
}

/// A file entry of an offer: the open file and its version when offered.
#[derive(Debug, Clone)]
pub struct OfferedFile {
    /// The open file.
    pub source: SourceFile,
    /// Its version when the offer was made.
    pub version: Version,
}

/// What the user named, listed but not yet read.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Directories and files, parents before children, in send order.
    pub entries: Vec<LayoutEntry>,
    /// Entries inside the named directories that cannot be sent.
    pub skipped: Vec<Skipped>,
}

/// One entry of a [`Layout`].
#[derive(Debug, Clone)]
pub struct LayoutEntry {
    /// The name it is offered under (`photos/sub/x.jpg`).
    pub path: String,
    /// Where it is on disk.
    pub disk: PathBuf,
    /// A directory (otherwise a regular file).
    pub dir: bool,
    /// Found inside a named directory: never follow a symlink there.
    nofollow: bool,
}

impl Layout {
    /// Opens every file of the layout (this process's permissions),
    /// giving each entry's offered name and, for files, the open file —
    /// what [`prepare`] takes.
    ///
    /// # Errors
    /// A [`SourceError`] naming the first file that cannot be opened.
    pub fn open_all(&self) -> Result<Vec<(String, Option<SourceFile>)>, SourceError> {
        self.entries
            .iter()
            .map(|entry| {
                let file = if entry.dir {
                    None
                } else {
                    Some(SourceFile {
                        path: entry.disk.clone(),
                        file: Arc::new(entry.open()?),
                    })
                };
                Ok((entry.path.clone(), file))
            })
            .collect()
    }
}

/// Something inside a named directory that was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its path on disk.
    pub path: PathBuf,
    /// What it is: `"symlink"`, `"fifo"`, `"socket"`, `"device"` or `"unknown"`.
    pub kind: &'static str,
}

impl std::fmt::Display for Skipped {
    /// `path (kind)`, as warnings show it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.kind)
    }
}

/// Why a scan failed. Every message names the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Nothing to send.
    #[error("no files or directories given to send")]
    Empty,
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}; check that it exists and is readable, or leave it out", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The user may not read a file or directory they named.
    #[error("permission denied: you cannot read {}; ask its owner, or leave it out", path.display())]
    PermissionDenied {
        /// The path.
        path: PathBuf,
    },
    /// A name is not valid UTF-8, which the protocol requires.
    #[error("the name of {} is not valid UTF-8; rename it to send it", path.display())]
    NonUtf8 {
        /// The offending path.
        path: PathBuf,
    },
    /// An argument has no final component (`/`, `..`).
    #[error("cannot send {}: it has no file name; name the directory itself instead", path.display())]
    NoName {
        /// The argument.
        path: PathBuf,
    },
    /// Two arguments would arrive under the same name.
    #[error("{} and {} would both arrive as {name:?}; rename one, or send their parent directories instead", first.display(), second.display())]
    DuplicateName {
        /// The shared final name.
        name: String,
        /// The first argument with it.
        first: PathBuf,
        /// The second argument with it.
        second: PathBuf,
    },
    /// An argument is neither a regular file nor a directory.
    #[error("cannot send {}: it is a {kind}, not a regular file or directory", path.display())]
    Unsupported {
        /// The argument.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// An open file that cannot be read through (opened write-only or
    /// with `O_PATH`).
    #[error("cannot send {}: it was not opened for reading", path.display())]
    NotReadable {
        /// The file.
        path: PathBuf,
    },
    /// A name the receiver would refuse (see [`crate::store::sanitize`]).
    #[error("cannot send this selection: {source}; rename the file or leave it out")]
    Unsendable {
        /// The rule it breaks, naming the path inside the offer.
        #[from]
        source: PathError,
    },
    /// More entries than one offer may carry.
    #[error(
        "too many entries ({count}); one transfer may hold at most {max}; send fewer files at once"
    )]
    TooManyEntries {
        /// Entries found so far.
        count: usize,
        /// [`MAX_ENTRIES`].
        max: usize,
    },
}

/// Walks, opens and prepares in one process; see the module docs.
///
/// # Errors
/// A [`SourceError`] naming the first path that cannot be sent.
pub fn scan(paths: &[PathBuf]) -> Result<Source, SourceError> {
    let layout = walk(paths)?;
    let mut source = prepare(layout.open_all()?)?;
    source.skipped = layout.skipped;
    Ok(source)
}

/// Lists the files and directories the user named, without reading any
/// file (the CLI's half); see the module docs.
///
/// # Errors
/// A [`SourceError`] naming the first path that cannot be sent.
pub fn walk(paths: &[PathBuf]) -> Result<Layout, SourceError> {
    if paths.is_empty() {
        return Err(SourceError::Empty);
    }
    let mut layout = Layout::default();
    let mut seen: Vec<(String, &Path)> = Vec::new();
    for arg in paths {
        let name = top_level_name(arg)?;
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
            return Err(SourceError::DuplicateName {
                name,
                first: first.to_path_buf(),
                second: arg.clone(),
            });
        }
        // Follows a symlink given as an argument: the user named it.
        let meta = std::fs::metadata(arg).map_err(|e| io_err(arg, e))?;
        if meta.is_dir() {
            layout.walk_dir(arg, &name)?;
        } else if meta.is_file() {
            layout.push(name.clone(), arg.clone(), false, false)?;
        } else {
            return Err(SourceError::Unsupported {
                path: arg.clone(),
                kind: special_kind(&meta),
            });
        }
        seen.push((name, arg));
    }
    // Catch names the receiver's rules would refuse (case collisions,
    // reserved names, ...), with the offending path, before reading.
    crate::store::plan(&layout.manifest_shape(), usize::MAX)?;
    Ok(layout)
}

impl Layout {
    fn push(
        &mut self,
        path: String,
        disk: PathBuf,
        dir: bool,
        nofollow: bool,
    ) -> Result<(), SourceError> {
        // Per-path rules are checked as we go; cross-entry ones (case
        // collisions) by `plan` at the end.
        crate::store::sanitize(&path)?;
        let count = self.entries.len() + 1;
        if count > MAX_ENTRIES {
            return Err(SourceError::TooManyEntries {
                count,
                max: MAX_ENTRIES,
            });
        }
        self.entries.push(LayoutEntry {
            path,
            disk,
            dir,
            nofollow,
        });
        Ok(())
    }

    /// Adds directory `root` as `rel` and everything below it: pre-order
    /// depth first, siblings sorted by name. Iterative, so a deep tree
    /// cannot overflow the stack.
    fn walk_dir(&mut self, root: &Path, rel: &str) -> Result<(), SourceError> {
        // Children are pushed in reverse so that they pop in name order.
        let mut stack = vec![(root.to_path_buf(), rel.to_owned(), true)];
        while let Some((path, rel, is_dir)) = stack.pop() {
            if !is_dir {
                self.push(rel, path, false, true)?;
                continue;
            }
            self.push(rel.clone(), path.clone(), true, true)?;
            let mut children: Vec<(OsString, PathBuf)> = std::fs::read_dir(&path)
                .map_err(|e| io_err(&path, e))?
                .map(|e| e.map(|e| (e.file_name(), e.path())))
                .collect::<Result<_, _>>()
                .map_err(|e| io_err(&path, e))?;
            children.sort();
            let first_child = stack.len();
            for (name, child) in children {
                let name = utf8(&name, &child)?;
                // `symlink_metadata`: never follow links inside the tree.
                let meta = std::fs::symlink_metadata(&child).map_err(|e| io_err(&child, e))?;
                let ft = meta.file_type();
                if ft.is_dir() || ft.is_file() {
                    stack.push((child, format!("{rel}/{name}"), ft.is_dir()));
                } else {
                    self.skipped.push(Skipped {
                        path: child,
                        kind: special_kind(&meta),
                    });
                }
            }
            stack[first_child..].reverse();
        }
        Ok(())
    }

    /// The entries as a manifest with placeholder sizes, for the path
    /// checks of [`crate::store::plan`].
    fn manifest_shape(&self) -> Manifest {
        Manifest {
            entries: self
                .entries
                .iter()
                .map(|e| Entry {
                    path: e.path.clone(),
                    kind: if e.dir {
                        EntryKind::Directory
                    } else {
                        EntryKind::File {
                            size: 0,
                            tag: [0; 32],
                        }
                    },
                })
                .collect(),
            ..Manifest::default()
        }
    }
}

impl LayoutEntry {
    /// Opens this regular file for reading, with the permissions of the
    /// calling process. Inside a named directory a symlink swapped in after
    /// the walk saw a regular file makes the open fail instead of being
    /// followed; `O_NONBLOCK` keeps a FIFO swapped in from blocking.
    pub fn open(&self) -> Result<File, SourceError> {
        let mut flags = OFlags::NONBLOCK;
        if self.nofollow {
            flags |= OFlags::NOFOLLOW;
        }
        let file = File::options()
            .read(true)
            .custom_flags(flags.bits() as i32)
            .open(&self.disk)
            .map_err(|e| io_err(&self.disk, e))?;
        let meta = file.metadata().map_err(|e| io_err(&self.disk, e))?;
        if !meta.is_file() {
            return Err(SourceError::Unsupported {
                path: self.disk.clone(),
                kind: special_kind(&meta),
            });
        }
        Ok(file)
    }
}

/// The daemon's half: checks that every entry's name is sendable and every
/// file is a regular file open for reading, and builds the offer from the
/// files' sizes and versions. No data is read. `skipped` of the result is
/// empty.
///
/// # Errors
/// A [`SourceError`] naming the first entry that cannot be sent.
pub fn prepare(entries: Vec<(String, Option<SourceFile>)>) -> Result<Source, SourceError> {
    if entries.is_empty() {
        return Err(SourceError::Empty);
    }
    if entries.len() > MAX_ENTRIES {
        return Err(SourceError::TooManyEntries {
            count: entries.len(),
            max: MAX_ENTRIES,
        });
    }
    let now = SystemTime::now();
    let mut manifest = Manifest::default();
    let mut files = Vec::with_capacity(entries.len());
    let mut sizes = Vec::with_capacity(entries.len());
    for (path, file) in entries {
        crate::store::sanitize(&path)?;
        let (kind, offered) = match file {
            None => (EntryKind::Directory, None),
            Some(source) => {
                let version = readable_version(&source)?;
                let size = version.size;
                sizes.push(size);
                let tag = version.tag(now);
                (
                    EntryKind::File { size, tag },
                    Some(OfferedFile { source, version }),
                )
            }
        };
        manifest.entries.push(Entry { path, kind });
        files.push(offered);
    }
    crate::store::plan(&manifest, usize::MAX)?;
    manifest.block_size = choose_block_size(&sizes);
    Ok(Source {
        manifest,
        files,
        skipped: Vec::new(),
    })
}

/// One version of one file: what changes whenever its content may have.
/// `ctime` changes with every write and cannot be set by users, so equal
/// versions mean unchanged content (up to the kernel's timestamp
/// granularity, which [`Version::tag`] guards against).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    dev: u64,
    ino: u64,
    size: u64,
    /// Seconds and nanoseconds.
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Version {
    /// The version of the open `file` now.
    ///
    /// # Errors
    /// If the file cannot be inspected.
    pub fn of(file: &File) -> io::Result<Self> {
        file.metadata().map(|meta| Self::from_metadata(&meta))
    }

    fn from_metadata(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The offer's version tag: a hash of this version, so that offering
    /// the same unchanged file again gives the same tag (and the receiver
    /// resumes). A file changed less than 2 s before `now` may
    /// change again within the same timestamp tick without its version
    /// changing, so its tag also includes `now`: unique to this offer.
    pub fn tag(&self, now: SystemTime) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("lanshare 2026-11 file version tag");
        for n in [self.dev, self.ino, self.size] {
            h.update(&n.to_le_bytes());
        }
        // Nanoseconds are below 10^9: as i64 they have the bytes of the u64
        // that PROTOCOL.md names.
        for n in [self.mtime.1, self.ctime.1, self.mtime.0, self.ctime.0] {
            h.update(&n.to_le_bytes());
        }
        let nanos = u32::try_from(self.ctime.1).unwrap_or(0).min(999_999_999);
        let settled_at = u64::try_from(self.ctime.0)
            .ok()
            .map(|s| Duration::new(s, nanos))
            .and_then(|changed| SystemTime::UNIX_EPOCH.checked_add(changed))
            .and_then(|changed| changed.checked_add(RACY_WINDOW));
        let settled = settled_at.is_some_and(|at| at <= now);
        if !settled {
            let nanos = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            h.update(&nanos.to_le_bytes());
        }
        *h.finalize().as_bytes()
    }
}

/// The version of a regular file that can be read through `f`.
fn readable_version(f: &SourceFile) -> Result<Version, SourceError> {
    let meta = f.file.metadata().map_err(|e| io_err(&f.path, e))?;
    if !meta.is_file() {
        return Err(SourceError::Unsupported {
            path: f.path.clone(),
            kind: special_kind(&meta),
        });
    }
    let flags = rustix::fs::fcntl_getfl(&*f.file).map_err(|e| io_err(&f.path, e.into()))?;
    let mode = flags & OFlags::RWMODE;
    if flags.contains(OFlags::PATH) || !(mode == OFlags::RDONLY || mode == OFlags::RDWR) {
        return Err(SourceError::NotReadable {
            path: f.path.clone(),
        });
    }
    Ok(Version::from_metadata(&meta))
}

/// The name an argument arrives under: its last component, or for `.`-like
/// arguments the last component of the canonical path.
fn top_level_name(arg: &Path) -> Result<String, SourceError> {
    let name = match arg.file_name() {
        Some(n) => n.to_owned(),
        None => {
            let canonical = arg.canonicalize().map_err(|e| io_err(arg, e))?;
            canonical
                .file_name()
                .ok_or_else(|| SourceError::NoName {
                    path: arg.to_path_buf(),
                })?
                .to_owned()
        }
    };
    utf8(&name, arg)
}

fn utf8(name: &OsStr, path: &Path) -> Result<String, SourceError> {
    name.to_str()
        .map(str::to_owned)
        .ok_or_else(|| SourceError::NonUtf8 {
            path: path.to_path_buf(),
        })
}

fn io_err(path: &Path, source: io::Error) -> SourceError {
    if source.kind() == io::ErrorKind::PermissionDenied {
        return SourceError::PermissionDenied {
            path: path.to_path_buf(),
        };
    }
    SourceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Describes a non-regular, non-directory file type (as seen by
/// `symlink_metadata` or `metadata`).
fn special_kind(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// The size of a file entry (tags are opaque).
    fn file_size(kind: &EntryKind) -> Option<u64> {
        match kind {
            EntryKind::File { size, .. } => Some(*size),
            EntryKind::Directory => None,
        }
    }

    /// Paths and sizes: a manifest without its (time-dependent) tags.
    fn shape(m: &Manifest) -> Vec<(String, Option<u64>)> {
        m.entries
            .iter()
            .map(|e| (e.path.clone(), file_size(&e.kind)))
            .collect()
    }

    #[test]
    fn scans_nested_tree_in_order_and_skips_specials() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("photos");
        fs::create_dir_all(root.join("b_sub/deeper")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(root.join("a.jpg"), b"aaa").unwrap();
        fs::write(root.join("c.txt"), b"").unwrap();
        fs::write(root.join("b_sub/x.jpg"), b"xx").unwrap();
        fs::write(root.join("b_sub/deeper/y"), vec![7u8; (1 << 20) + 5]).unwrap();
        let outside = tmp.path().join("outside.txt");
        fs::write(&outside, b"secret").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("pipe"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        let single = tmp.path().join("single.bin");
        fs::write(&single, b"one").unwrap();

        let src = scan(&[root.clone(), single.clone()]).unwrap();
        let paths: Vec<&str> = src
            .manifest
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "photos",
                "photos/a.jpg",
                "photos/b_sub",
                "photos/b_sub/deeper",
                "photos/b_sub/deeper/y",
                "photos/b_sub/x.jpg",
                "photos/c.txt",
                "photos/empty",
                "single.bin",
            ]
        );
        let e = &src.manifest.entries;
        assert_eq!(e[0].kind, EntryKind::Directory);
        assert_eq!(file_size(&e[1].kind), Some(3));
        assert_eq!(file_size(&e[4].kind), Some((1 << 20) + 5));
        assert_eq!(file_size(&e[6].kind), Some(0));
        assert_eq!(e[7].kind, EntryKind::Directory);
        assert_eq!(file_size(&e[8].kind), Some(3));
        assert_eq!(src.files.len(), e.len());
        assert!(src.files[0].is_none() && src.files[1].is_some());
        assert_eq!(
            src.files[5].as_ref().map(|f| f.source.path.as_path()),
            Some(root.join("b_sub/x.jpg").as_path())
        );
        assert_eq!(
            src.files[8].as_ref().map(|f| f.source.path.as_path()),
            Some(single.as_path())
        );
        let mut skipped: Vec<(String, &str)> = src
            .skipped
            .iter()
            .map(|s| {
                (
                    s.path.file_name().unwrap().to_str().unwrap().to_owned(),
                    s.kind,
                )
            })
            .collect();
        skipped.sort();
        assert_eq!(
            skipped,
            [
                ("link".to_owned(), "symlink"),
                ("pipe".to_owned(), "fifo"),
                ("sock".to_owned(), "socket"),
            ]
        );
        assert_eq!(src.manifest.file_count(), 5);
    }

    #[test]
    fn scanned_tree_round_trips_through_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        fs::create_dir_all(root.join("sub/empty")).unwrap();
        fs::write(root.join("sub/big"), vec![3u8; (2 << 20) + 17]).unwrap();
        fs::write(root.join("small"), b"small").unwrap();
        let src = scan(std::slice::from_ref(&root)).unwrap();

        let dl = crate::store::DownloadDir::open(&tmp.path().join("dl")).unwrap();
        let plan = crate::store::plan(&src.manifest, 64).unwrap();
        let mut staging = dl.stage(&plan, &src.manifest, "test").unwrap();
        let bs = src.manifest.block_size;
        for (i, disk) in src.files.iter().enumerate() {
            if let Some(disk) = disk {
                let data = fs::read(&disk.source.path).unwrap();
                for (b, block) in data.chunks(bs as usize).enumerate() {
                    let offset = b as u64 * u64::from(bs);
                    staging.write(i as u32, offset, block).unwrap();
                    let value =
                        crate::protocol::hash::block_hash(block, data.len() as u64, bs, b as u64);
                    staging.block_value(i as u32, b as u64, &value).unwrap();
                }
            }
        }
        assert_eq!(staging.commit().unwrap(), ["tree"]);
        let got = tmp.path().join("dl/tree");
        assert_eq!(
            fs::read(got.join("sub/big")).unwrap(),
            fs::read(root.join("sub/big")).unwrap()
        );
        assert_eq!(fs::read(got.join("small")).unwrap(), b"small");
        assert!(got.join("sub/empty").is_dir());
    }

    #[test]
    fn top_level_symlink_is_followed() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("real.txt"), b"real").unwrap();
        let link = tmp.path().join("alias.txt");
        std::os::unix::fs::symlink(tmp.path().join("real.txt"), &link).unwrap();
        let src = scan(&[link]).unwrap();
        assert_eq!(src.manifest.entries[0].path, "alias.txt");
        assert_eq!(file_size(&src.manifest.entries[0].kind), Some(4));
    }

    #[test]
    fn duplicate_top_level_names_are_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["a", "b"] {
            fs::create_dir(tmp.path().join(d)).unwrap();
            fs::write(tmp.path().join(d).join("report.pdf"), d).unwrap();
        }
        let err = scan(&[
            tmp.path().join("a/report.pdf"),
            tmp.path().join("b/report.pdf"),
        ])
        .unwrap_err();
        assert!(matches!(err, SourceError::DuplicateName { ref name, .. } if name == "report.pdf"));
        assert!(err.to_string().contains("rename one"), "{err}");
        // Same name differing only in case: the receiver would refuse it.
        fs::write(tmp.path().join("b/REPORT.pdf"), b"x").unwrap();
        let err = scan(&[
            tmp.path().join("a/report.pdf"),
            tmp.path().join("b/REPORT.pdf"),
        ])
        .unwrap_err();
        assert!(matches!(err, SourceError::Unsendable { .. }), "{err:?}");
    }

    #[test]
    fn unsendable_and_missing_paths_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("bad:name"), b"x").unwrap();
        let err = scan(std::slice::from_ref(&d)).unwrap_err();
        assert!(err.to_string().contains("d/bad:name"), "{err}");

        let missing = tmp.path().join("missing");
        let err = scan(&[missing]).unwrap_err();
        assert!(matches!(err, SourceError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("missing"), "{err}");

        let bad = tmp
            .path()
            .join(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                b"bad\xff",
            ));
        fs::write(&bad, b"x").unwrap();
        let err = scan(&[bad]).unwrap_err();
        assert!(matches!(err, SourceError::NonUtf8 { .. }), "{err:?}");

        let pipe = tmp.path().join("pipe");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &pipe,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = scan(&[pipe]).unwrap_err();
        assert!(
            matches!(err, SourceError::Unsupported { kind: "fifo", .. }),
            "{err:?}"
        );
        assert!(matches!(scan(&[]), Err(SourceError::Empty)));
    }

    #[test]
    fn version_tags_name_unchanged_files_and_recent_changes_get_their_own() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        fs::write(&path, b"one").unwrap();
        let file = File::open(&path).unwrap();
        let version = Version::of(&file).unwrap();
        let settled = SystemTime::now() + RACY_WINDOW + Duration::from_secs(1);
        assert_eq!(
            Version::of(&file).unwrap().tag(settled),
            version.tag(settled),
            "an unchanged file keeps its tag"
        );
        // Just changed: another change in the same timestamp tick would go
        // unseen, so each offer gets a tag of its own.
        let now = SystemTime::now();
        assert_ne!(version.tag(now), version.tag(now + Duration::from_nanos(1)));
        // Any change is a new version (here only the modification time).
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1000))
            .unwrap();
        let changed = Version::of(&file).unwrap();
        assert_ne!(changed, version);
        assert_ne!(changed.tag(settled), version.tag(settled));
    }

    /// The daemon's half: the same offer from descriptors as from paths,
    /// and descriptors that cannot be read through are refused.
    #[test]
    fn prepare_from_open_files_matches_scan_and_checks_them() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/big"), vec![9u8; (3 << 20) + 1]).unwrap();
        fs::write(root.join("a"), b"a").unwrap();
        let scanned = scan(std::slice::from_ref(&root)).unwrap();

        let layout = walk(std::slice::from_ref(&root)).unwrap();
        let entries: Vec<(String, Option<SourceFile>)> = layout
            .entries
            .iter()
            .map(|e| {
                let file = (!e.dir).then(|| SourceFile {
                    path: PathBuf::from(&e.path),
                    file: Arc::new(e.open().unwrap()),
                });
                (e.path.clone(), file)
            })
            .collect();
        let prepared = prepare(entries).unwrap();
        assert_eq!(shape(&prepared.manifest), shape(&scanned.manifest));
        assert_eq!(prepared.manifest.block_size, 1 << 20);

        let file = |f: File| {
            Some(SourceFile {
                path: PathBuf::from("x"),
                file: Arc::new(f),
            })
        };
        let write_only = File::options().write(true).open(root.join("a")).unwrap();
        let err = prepare(vec![("x".into(), file(write_only))]).unwrap_err();
        assert!(matches!(err, SourceError::NotReadable { .. }), "{err:?}");
        let dir = File::open(&root).unwrap();
        let err = prepare(vec![("x".into(), file(dir))]).unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::Unsupported {
                    kind: "directory",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = prepare(vec![("../x".into(), None)]).unwrap_err();
        assert!(matches!(err, SourceError::Unsendable { .. }), "{err:?}");
        assert!(matches!(prepare(Vec::new()), Err(SourceError::Empty)));
    }

    #[test]
    fn unreadable_file_is_named_as_permission_denied() {
        let err = io_err(
            Path::new("/home/a/secret"),
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(
            err.to_string(),
            "permission denied: you cannot read /home/a/secret; ask its owner, or leave it out"
        );
    }

    #[test]
    fn dot_argument_uses_the_directory_name() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("named");
        fs::create_dir(&d).unwrap();
        let src = scan(&[d.join(".")]).unwrap();
        assert_eq!(src.manifest.entries[0].path, "named");
    }
}
