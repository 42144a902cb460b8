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
//! * Inside a directory, what cannot be sent is skipped too, and reported
//!   the same way, so that one bad entry does not fail a whole tree: a file
//!   or directory that cannot be read (permissions, removed meanwhile), and
//!   a name that cannot be sent (not UTF-8, which the wire format requires,
//!   holding a control character, or the same name to a receiver as an
//!   earlier sibling's: `xt_DSCP.h` and `xt_dscp.h`, PROTOCOL.md §6.1). [`WalkOptions::strict`]
//!   (`share send --strict`) fails the send on the first one instead.
//!   Entries matching [`WalkOptions::exclude`] (`--exclude`, see
//!   [`super::exclude`]) are left out silently: the user asked for that.
//!   What the user named as an argument must be readable and sendable.
//! * Any name Linux can hold is sent as it is (`meeting 10:30.txt`,
//!   `notes.`, `aux.c`); only what the receiver must refuse as unsafe
//!   ([`crate::store::sanitize`]: control characters, and names that are
//!   not plain relative paths) is not. A receiver that cannot store a name
//!   maps it ([`crate::store::path::stored_name`]) instead of refusing.
//! * Each file's modification time and executable bit go with the offer
//!   ([`Source::metadata`]) for receivers that negotiated them; nothing
//!   else about a file (owner, other mode bits) is ever sent.
//! * No file is read before the offer: the data is hashed as it is sent
//!   (see [`super::send`]), so the first byte moves at once. The offer
//!   names each file's version instead ([`Version`]: device, inode, size,
//!   modification and change times), which lets a receiver resume a later
//!   offer of the same unchanged file; the sender checks the version again
//!   before and after reading each part, so a file that changes while it is
//!   being sent fails the send instead of arriving torn.
//!
//! Blocking; call it from a blocking thread.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::fs::OFlags;
use unicode_normalization::UnicodeNormalization;

use serde::{Deserialize, Serialize};

use super::exclude::Excludes;
use crate::protocol::{
    Entry, EntryKind, EntryMeta, MAX_ENTRIES, Manifest, Mtime, choose_block_size,
};
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
    /// Same length as `manifest.entries`: what a receiver that takes it
    /// keeps besides the content (a file's modification time and
    /// executable bit; nothing for directories).
    pub metadata: Vec<EntryMeta>,
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

/// How [`walk`] treats the inside of the directories it is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkOptions {
    /// Fail on the first entry that cannot be read or named
    /// (`share send --strict`) instead of skipping it with a warning.
    #[serde(default)]
    pub strict: bool,
    /// Entries to leave out (`share send --exclude`).
    #[serde(default)]
    pub exclude: Excludes,
}

/// What the user named, listed but not yet read.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Directories and files, parents before children, in send order.
    pub entries: Vec<LayoutEntry>,
    /// Entries inside the named directories that cannot be sent.
    pub skipped: Vec<Skipped>,
    /// Whether an entry that cannot be opened fails the send.
    strict: bool,
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
    /// Opens every file of the layout (this process's permissions), in
    /// entry order. A file found inside a named directory that cannot be
    /// opened is dropped from the layout and listed in
    /// [`skipped`](Self::skipped), unless the walk was strict.
    ///
    /// # Errors
    /// A [`SourceError`] naming the first file that cannot be opened and
    /// may not be skipped.
    pub fn open_files(&mut self) -> Result<Vec<File>, SourceError> {
        let mut files = Vec::new();
        let mut kept = Vec::with_capacity(self.entries.len());
        for entry in std::mem::take(&mut self.entries) {
            if !entry.dir {
                match entry.open() {
                    Ok(file) => files.push(file),
                    Err(e) if entry.nofollow && !self.strict => {
                        self.skipped.push(Skipped::unreadable(entry.disk, &e));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            kept.push(entry);
        }
        self.entries = kept;
        Ok(files)
    }

    /// [`open_files`](Self::open_files), giving each entry's offered name
    /// and, for files, the open file: what [`prepare`] takes.
    ///
    /// # Errors
    /// As [`open_files`](Self::open_files).
    pub fn open_all(&mut self) -> Result<Vec<(String, Option<SourceFile>)>, SourceError> {
        let mut files = self.open_files()?.into_iter();
        self.entries
            .iter()
            .map(|entry| {
                let file = if entry.dir {
                    None
                } else {
                    let file = files.next().ok_or(SourceError::Empty)?;
                    Some(SourceFile {
                        path: entry.disk.clone(),
                        file: Arc::new(file),
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
    /// Why it was left out.
    pub why: SkipReason,
}

/// Why an entry inside a named directory was left out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// Not a regular file or directory: `"symlink"`, `"fifo"`,
    /// `"socket"`, `"device"` or `"unknown"`.
    Special(&'static str),
    /// It could not be read; the cause.
    Unreadable(String),
    /// Its name cannot be sent; why.
    Unsendable(&'static str),
    /// A receiver would take its name for that of this earlier sibling
    /// (they differ only in case or Unicode normalisation).
    SameName(String),
}

impl Skipped {
    fn unreadable(path: PathBuf, error: &SourceError) -> Self {
        let cause = match error {
            SourceError::Io { source, .. } => source.to_string(),
            SourceError::PermissionDenied { .. } => "permission denied".to_owned(),
            SourceError::Unsupported { kind, .. } => format!("it became a {kind}"),
            other => other.to_string(),
        };
        Self {
            path,
            why: SkipReason::Unreadable(cause),
        }
    }
}

impl std::fmt::Display for Skipped {
    /// `path (why)`, as warnings show it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        match &self.why {
            SkipReason::Special(kind) => write!(f, "{path} ({kind})"),
            SkipReason::Unreadable(cause) => write!(f, "{path} (cannot read: {cause})"),
            SkipReason::Unsendable(why) => write!(f, "{path} ({why})"),
            SkipReason::SameName(first) => write!(
                f,
                "{path} (a receiver takes it for {first:?}: they differ only in case or Unicode form)"
            ),
        }
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
    /// A name holds a control character, which no receiver accepts.
    #[error("the name of {} holds a control character; rename it to send it", path.display())]
    ControlChar {
        /// The offending path (shown escaped).
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
pub fn scan(paths: &[PathBuf], options: &WalkOptions) -> Result<Source, SourceError> {
    let mut layout = walk(paths, options)?;
    let mut source = prepare(layout.open_all()?)?;
    source.skipped = layout.skipped;
    Ok(source)
}

/// Lists the files and directories the user named, without reading any
/// file (the CLI's half); see the module docs.
///
/// # Errors
/// A [`SourceError`] naming the first path that cannot be sent.
pub fn walk(paths: &[PathBuf], options: &WalkOptions) -> Result<Layout, SourceError> {
    if paths.is_empty() {
        return Err(SourceError::Empty);
    }
    let mut layout = Layout {
        strict: options.strict,
        ..Layout::default()
    };
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
            layout.walk_dir(arg, &name, &options.exclude)?;
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
    // Catch names the receiver's rules would refuse (two that are the same
    // name ignoring case), with the offending path, before reading.
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
    /// depth first, siblings sorted by name, leaving out what `exclude`
    /// matches and (unless strict) skipping what cannot be read or named.
    /// Iterative, so a deep tree cannot overflow the stack.
    fn walk_dir(&mut self, root: &Path, rel: &str, exclude: &Excludes) -> Result<(), SourceError> {
        // Children are pushed in reverse so that they pop in name order.
        let mut stack = vec![(root.to_path_buf(), rel.to_owned(), true)];
        while let Some((path, rel, is_dir)) = stack.pop() {
            let inside = path != root;
            if !is_dir {
                self.push(rel, path, false, true)?;
                continue;
            }
            let listed = std::fs::read_dir(&path).and_then(|entries| {
                entries
                    .map(|e| e.map(|e| (e.file_name(), e.path())))
                    .collect::<Result<Vec<(OsString, PathBuf)>, _>>()
            });
            let mut children = match listed {
                Ok(children) => children,
                Err(e) if inside && !self.strict => {
                    let error = io_err(&path, e);
                    self.skipped.push(Skipped::unreadable(path, &error));
                    continue;
                }
                Err(e) => return Err(io_err(&path, e)),
            };
            self.push(rel.clone(), path.clone(), true, true)?;
            children.sort();
            let first_child = stack.len();
            // Names a receiver takes for one (PROTOCOL.md §6.1: case, Unicode
            // normalisation) and which of them came first.
            let mut seen: HashMap<String, String> = HashMap::new();
            for (name, child) in children {
                let name = match self.sendable_name(&name, &child)? {
                    Some(name) => name,
                    None => continue,
                };
                if !self.strict {
                    match seen.entry(same_name_key(&name)) {
                        MapEntry::Occupied(first) => {
                            self.skipped.push(Skipped {
                                path: child,
                                why: SkipReason::SameName(first.get().clone()),
                            });
                            continue;
                        }
                        MapEntry::Vacant(slot) => {
                            slot.insert(name.clone());
                        }
                    }
                }
                let child_rel = format!("{rel}/{name}");
                // `symlink_metadata`: never follow links inside the tree.
                let meta = match std::fs::symlink_metadata(&child) {
                    Ok(meta) => meta,
                    Err(e) if !self.strict => {
                        let error = io_err(&child, e);
                        self.skipped.push(Skipped::unreadable(child, &error));
                        continue;
                    }
                    Err(e) => return Err(io_err(&child, e)),
                };
                let ft = meta.file_type();
                let below = child_rel.split_once('/').map_or("", |(_, below)| below);
                if exclude.excludes(below, ft.is_dir()) {
                    continue;
                }
                if ft.is_dir() || ft.is_file() {
                    stack.push((child, child_rel, ft.is_dir()));
                } else {
                    self.skipped.push(Skipped {
                        path: child,
                        why: SkipReason::Special(special_kind(&meta)),
                    });
                }
            }
            stack[first_child..].reverse();
        }
        Ok(())
    }

    /// The name of an entry found inside a named directory, if it can be
    /// sent; otherwise `None` after listing it as skipped, or (strict) the
    /// error.
    fn sendable_name(&mut self, name: &OsStr, path: &Path) -> Result<Option<String>, SourceError> {
        let why = match name.to_str() {
            None => "its name is not UTF-8",
            Some(name) if name.chars().any(char::is_control) => {
                "its name holds a control character"
            }
            Some(name) => return Ok(Some(name.to_owned())),
        };
        if self.strict {
            return Err(match name.to_str() {
                None => SourceError::NonUtf8 {
                    path: path.to_path_buf(),
                },
                Some(_) => SourceError::ControlChar {
                    path: path.to_path_buf(),
                },
            });
        }
        self.skipped.push(Skipped {
            path: path.to_path_buf(),
            why: SkipReason::Unsendable(why),
        });
        Ok(None)
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
    let mut metadata = Vec::with_capacity(entries.len());
    let mut sizes = Vec::with_capacity(entries.len());
    for (path, file) in entries {
        crate::store::sanitize(&path)?;
        let (kind, offered, meta) = match file {
            None => (EntryKind::Directory, None, EntryMeta::default()),
            Some(source) => {
                let version = readable_version(&source)?;
                let size = version.size;
                sizes.push(size);
                let tag = version.tag(now);
                (
                    EntryKind::File { size, tag },
                    Some(OfferedFile { source, version }),
                    version.metadata(),
                )
            }
        };
        manifest.entries.push(Entry { path, kind });
        files.push(offered);
        metadata.push(meta);
    }
    crate::store::plan(&manifest, usize::MAX)?;
    manifest.block_size = choose_block_size(&sizes);
    Ok(Source {
        manifest,
        files,
        metadata,
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
    /// Any execute bit is set.
    executable: bool,
}

impl Version {
    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's modification time (seconds and nanoseconds since the
    /// Unix epoch), if the kernel gave a valid one.
    pub fn modified(&self) -> Option<(i64, u32)> {
        let nanos = u32::try_from(self.mtime.1)
            .ok()
            .filter(|n| *n < 1_000_000_000)?;
        Some((self.mtime.0, nanos))
    }

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
            executable: meta.mode() & 0o111 != 0,
        }
    }

    /// What a receiver keeps of this version besides its content.
    pub fn metadata(&self) -> EntryMeta {
        EntryMeta {
            // The kernel keeps nanoseconds below 10^9.
            mtime: u32::try_from(self.mtime.1).ok().map(|nsec| Mtime {
                sec: self.mtime.0,
                nsec,
            }),
            executable: self.executable,
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

/// What two sibling names have in common if a receiver takes them for one
/// name: [`fold`](crate::protocol::names::fold) of the name it stores.
fn same_name_key(name: &str) -> String {
    let nfc: String = name.nfc().collect();
    crate::protocol::names::fold(&crate::store::path::stored_name(&nfc, false))
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

        let src = scan(&[root.clone(), single.clone()], &WalkOptions::default()).unwrap();
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
        let mut skipped: Vec<(String, SkipReason)> = src
            .skipped
            .iter()
            .map(|s| {
                (
                    s.path.file_name().unwrap().to_str().unwrap().to_owned(),
                    s.why.clone(),
                )
            })
            .collect();
        skipped.sort();
        assert_eq!(
            skipped,
            [
                ("link".to_owned(), SkipReason::Special("symlink")),
                ("pipe".to_owned(), SkipReason::Special("fifo")),
                ("sock".to_owned(), SkipReason::Special("socket")),
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
        let src = scan(std::slice::from_ref(&root), &WalkOptions::default()).unwrap();

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
        let src = scan(&[link], &WalkOptions::default()).unwrap();
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
        let err = scan(
            &[
                tmp.path().join("a/report.pdf"),
                tmp.path().join("b/report.pdf"),
            ],
            &WalkOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, SourceError::DuplicateName { ref name, .. } if name == "report.pdf"));
        assert!(err.to_string().contains("rename one"), "{err}");
        // Same name differing only in case: the receiver would refuse it.
        fs::write(tmp.path().join("b/REPORT.pdf"), b"x").unwrap();
        let err = scan(
            &[
                tmp.path().join("a/report.pdf"),
                tmp.path().join("b/REPORT.pdf"),
            ],
            &WalkOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, SourceError::Unsendable { .. }), "{err:?}");
    }

    fn paths(src: &Source) -> Vec<&str> {
        src.manifest
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .collect()
    }

    fn strict() -> WalkOptions {
        WalkOptions {
            strict: true,
            ..WalkOptions::default()
        }
    }

    /// Names Windows refuses but Linux holds are sent as they are, also
    /// in strict mode.
    #[test]
    fn every_name_linux_can_hold_is_sent() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        fs::create_dir(&d).unwrap();
        let names = [
            "a\\b",
            "aux.c",
            "con.h",
            "meeting 10:30.txt",
            "notes.",
            "photo\u{202E}gpj.exe",
            "what?",
        ];
        for name in names {
            fs::write(d.join(name), name).unwrap();
        }
        for options in [WalkOptions::default(), strict()] {
            let src = scan(std::slice::from_ref(&d), &options).unwrap();
            let mut want = vec!["d".to_owned()];
            want.extend(names.iter().map(|n| format!("d/{n}")));
            assert_eq!(paths(&src), want);
            assert!(src.skipped.is_empty(), "{:?}", src.skipped);
        }
        // The one argument with such a name too.
        let src = scan(&[d.join("meeting 10:30.txt")], &strict()).unwrap();
        assert_eq!(paths(&src), ["meeting 10:30.txt"]);
    }

    /// One file that cannot be opened, a name that is not UTF-8 and one
    /// with a control character are skipped and listed; `strict` fails on
    /// them instead.
    #[test]
    fn what_cannot_be_read_or_named_inside_a_directory_is_skipped_unless_strict() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("good"), b"good").unwrap();
        fs::write(d.join("gone"), b"gone").unwrap();
        let non_utf8 = d.join(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
            b"bad\xff",
        ));
        fs::write(&non_utf8, b"x").unwrap();
        fs::write(d.join("bell\x07"), b"x").unwrap();

        let mut layout = walk(std::slice::from_ref(&d), &WalkOptions::default()).unwrap();
        // Removed after the walk saw it: opening it fails.
        fs::remove_file(d.join("gone")).unwrap();
        let files = layout.open_files().unwrap();
        assert_eq!(files.len(), 1);
        let names: Vec<&str> = layout.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["d", "d/good"]);
        let mut skipped: Vec<String> = layout.skipped.iter().map(ToString::to_string).collect();
        skipped.sort();
        let base = d.display();
        assert_eq!(
            skipped,
            [
                format!("{base}/bad\u{fffd} (its name is not UTF-8)"),
                format!("{base}/bell\x07 (its name holds a control character)"),
                format!("{base}/gone (cannot read: No such file or directory (os error 2))"),
            ]
        );

        let err = walk(std::slice::from_ref(&d), &strict()).unwrap_err();
        assert!(matches!(err, SourceError::NonUtf8 { .. }), "{err:?}");
        fs::remove_file(&non_utf8).unwrap();
        let err = walk(std::slice::from_ref(&d), &strict()).unwrap_err();
        assert!(matches!(err, SourceError::ControlChar { .. }), "{err:?}");
        fs::remove_file(d.join("bell\x07")).unwrap();
        fs::write(d.join("gone"), b"back").unwrap();
        let mut layout = walk(std::slice::from_ref(&d), &strict()).unwrap();
        fs::remove_file(d.join("gone")).unwrap();
        let err = layout.open_files().unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
    }

    /// Siblings that differ only in case (a kernel tree has `xt_DSCP.h`
    /// and `xt_dscp.h`) are one name to a receiver: the first is sent, the
    /// other skipped and listed; `strict` refuses the tree as before.
    #[test]
    fn names_differing_only_in_case_send_the_first_and_skip_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("netfilter");
        fs::create_dir(&d).unwrap();
        for name in [
            "xt_DSCP.h",
            "xt_dscp.h",
            "caf\u{e9}",
            "cafe\u{301}",
            "other.h",
        ] {
            fs::write(d.join(name), name).unwrap();
        }
        let src = scan(std::slice::from_ref(&d), &WalkOptions::default()).unwrap();
        assert_eq!(
            paths(&src),
            [
                "netfilter",
                "netfilter/cafe\u{301}",
                "netfilter/other.h",
                "netfilter/xt_DSCP.h"
            ]
        );
        let skipped: Vec<String> = src.skipped.iter().map(ToString::to_string).collect();
        let base = d.display();
        assert_eq!(
            skipped,
            [
                format!(
                    "{base}/caf\u{e9} (a receiver takes it for \"cafe\\u{{301}}\": they differ only in case or Unicode form)"
                ),
                format!(
                    "{base}/xt_dscp.h (a receiver takes it for \"xt_DSCP.h\": they differ only in case or Unicode form)"
                ),
            ]
        );
        let err = scan(std::slice::from_ref(&d), &strict()).unwrap_err();
        assert!(matches!(err, SourceError::Unsendable { .. }), "{err:?}");
    }

    #[test]
    fn excluded_entries_are_left_out_and_not_entered() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("proj");
        fs::create_dir_all(d.join("target/debug")).unwrap();
        fs::create_dir_all(d.join("src/target")).unwrap();
        fs::create_dir_all(d.join("build")).unwrap();
        for f in [
            "a.log",
            "keep.txt",
            "src/b.log",
            "src/main.rs",
            "target/debug/x",
            "build/out",
        ] {
            fs::write(d.join(f), f).unwrap();
        }
        // A file named like the directory pattern stays.
        fs::write(d.join("src/target/target"), b"t").unwrap();
        let options = WalkOptions {
            strict: true,
            exclude: Excludes::new(&["*.log".into(), "target/".into(), "/build".into()]).unwrap(),
        };
        let src = scan(std::slice::from_ref(&d), &options).unwrap();
        assert_eq!(
            paths(&src),
            ["proj", "proj/keep.txt", "proj/src", "proj/src/main.rs"]
        );
        assert!(src.skipped.is_empty());
        // A file named as an argument is never excluded.
        let src = scan(&[d.join("a.log")], &options).unwrap();
        assert_eq!(paths(&src), ["a.log"]);
    }

    #[test]
    fn missing_and_unsupported_arguments_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing");
        let err = scan(&[missing], &WalkOptions::default()).unwrap_err();
        assert!(matches!(err, SourceError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("missing"), "{err}");

        let bad = tmp
            .path()
            .join(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                b"bad\xff",
            ));
        fs::write(&bad, b"x").unwrap();
        let err = scan(&[bad], &WalkOptions::default()).unwrap_err();
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
        let err = scan(&[pipe], &WalkOptions::default()).unwrap_err();
        assert!(
            matches!(err, SourceError::Unsupported { kind: "fifo", .. }),
            "{err:?}"
        );
        assert!(matches!(
            scan(&[], &WalkOptions::default()),
            Err(SourceError::Empty)
        ));
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
        let scanned = scan(std::slice::from_ref(&root), &WalkOptions::default()).unwrap();

        let layout = walk(std::slice::from_ref(&root), &WalkOptions::default()).unwrap();
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
        let src = scan(&[d.join(".")], &WalkOptions::default()).unwrap();
        assert_eq!(src.manifest.entries[0].path, "named");
    }
}
