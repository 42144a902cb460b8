//! The sending side's scan: turns the paths a user named into a
//! [`Manifest`] plus the disk path of each file.
//!
//! Rules, and why:
//!
//! * Each argument is a file or a directory. A file becomes one entry named
//!   by its file name; a directory `~/photos/` becomes `photos` plus every
//!   descendant (`photos/sub/x.jpg`), parents before children, siblings
//!   sorted by name so the same tree always gives the same manifest.
//! * A symlink given as an argument is followed: the user named it. Inside a
//!   directory, symlinks, FIFOs, sockets and devices are *skipped* and
//!   reported in [`Source::skipped`]: following links could leave the tree
//!   the user chose (or loop), and opening a FIFO would block forever.
//! * Names must be UTF-8 (the wire format is UTF-8) and must pass the
//!   receiver's path rules ([`crate::store::plan`]), so an unsendable name
//!   is reported here, with the path, rather than as a refused offer.
//! * Each file is hashed with BLAKE3 while scanning, in 1 MiB reads, so the
//!   offer can carry the hash the receiver verifies. The size announced is
//!   the size of the file when it was hashed; if the file grows or shrinks
//!   meanwhile the scan fails. If it changes *after* the scan, the sender's
//!   later read must notice the length difference, and the receiver rejects
//!   any content that does not match the hash.
//!
//! Blocking; call it from a blocking thread.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;

use crate::protocol::{Entry, EntryKind, MAX_ENTRIES, Manifest};
use crate::store::PathError;

/// Read size while hashing.
const HASH_BUF_LEN: usize = 1 << 20;

/// The result of scanning what the user asked to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// What will be offered, in send order.
    pub manifest: Manifest,
    /// Same length as `manifest.entries`: the disk path of each file entry,
    /// `None` for directories.
    pub files: Vec<Option<PathBuf>>,
    /// Entries inside the named directories that cannot be sent and were
    /// left out; the caller should warn about them.
    pub skipped: Vec<Skipped>,
}

/// Something inside a named directory that was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its path on disk.
    pub path: PathBuf,
    /// What it is: `"symlink"`, `"fifo"`, `"socket"`, `"device"` or `"unknown"`.
    pub kind: &'static str,
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
    /// A file changed size while it was being hashed.
    #[error("{} changed while it was being read; send it again once nothing is writing to it", path.display())]
    Changed {
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

/// Scans the files and directories the user named; see the module docs.
///
/// # Errors
/// A [`SourceError`] naming the first path that cannot be sent.
pub fn scan(paths: &[PathBuf]) -> Result<Source, SourceError> {
    if paths.is_empty() {
        return Err(SourceError::Empty);
    }
    let mut scan = Scan {
        source: Source {
            manifest: Manifest {
                entries: Vec::new(),
            },
            files: Vec::new(),
            skipped: Vec::new(),
        },
        buf: vec![0; HASH_BUF_LEN],
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
            scan.walk(arg, &name)?;
        } else if meta.is_file() {
            scan.add_file(arg, name.clone(), false)?;
        } else {
            return Err(SourceError::Unsupported {
                path: arg.clone(),
                kind: special_kind(&meta),
            });
        }
        seen.push((name, arg));
    }
    // Catch names the receiver's rules would refuse (case collisions,
    // reserved names, ...), with the offending path, before offering.
    crate::store::plan(&scan.source.manifest, usize::MAX)?;
    Ok(scan.source)
}

/// Scan state: the growing result and one reusable hashing buffer.
struct Scan {
    source: Source,
    buf: Vec<u8>,
}

impl Scan {
    fn push(
        &mut self,
        path: String,
        kind: EntryKind,
        disk: Option<PathBuf>,
    ) -> Result<(), SourceError> {
        // Per-path rules are checked as we go, before any hashing work;
        // cross-entry ones (case collisions) by `plan` at the end.
        crate::store::sanitize(&path)?;
        let count = self.source.manifest.entries.len() + 1;
        if count > MAX_ENTRIES {
            return Err(SourceError::TooManyEntries {
                count,
                max: MAX_ENTRIES,
            });
        }
        self.source.manifest.entries.push(Entry { path, kind });
        self.source.files.push(disk);
        Ok(())
    }

    /// Adds directory `root` as `rel` and everything below it: pre-order
    /// depth first, siblings sorted by name. Iterative, so a deep tree
    /// cannot overflow the stack.
    fn walk(&mut self, root: &Path, rel: &str) -> Result<(), SourceError> {
        // Children are pushed in reverse so that they pop in name order.
        let mut stack = vec![(root.to_path_buf(), rel.to_owned(), true)];
        while let Some((path, rel, is_dir)) = stack.pop() {
            if !is_dir {
                self.add_file(&path, rel, true)?;
                continue;
            }
            self.push(rel.clone(), EntryKind::Directory, None)?;
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
                    self.source.skipped.push(Skipped {
                        path: child,
                        kind: special_kind(&meta),
                    });
                }
            }
            stack[first_child..].reverse();
        }
        Ok(())
    }

    /// Hashes regular file `path` and adds it as `rel`. Inside a directory
    /// (`nofollow`) a symlink swapped in after the scan saw a regular file
    /// makes the open fail instead of being followed; `O_NONBLOCK` keeps a
    /// FIFO swapped in from blocking the open.
    fn add_file(&mut self, path: &Path, rel: String, nofollow: bool) -> Result<(), SourceError> {
        crate::store::sanitize(&rel)?;
        let mut flags = OFlags::NONBLOCK;
        if nofollow {
            flags |= OFlags::NOFOLLOW;
        }
        let mut file = File::options()
            .read(true)
            .custom_flags(flags.bits() as i32)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        let meta = file.metadata().map_err(|e| io_err(path, e))?;
        if !meta.is_file() {
            return Err(SourceError::Unsupported {
                path: path.to_path_buf(),
                kind: special_kind(&meta),
            });
        }
        let size = meta.len();
        let mut hasher = blake3::Hasher::new();
        let mut hashed: u64 = 0;
        loop {
            let n = match file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(path, e)),
            };
            hasher.update(&self.buf[..n]);
            hashed += n as u64;
            if hashed > size {
                break;
            }
        }
        if hashed != size {
            return Err(SourceError::Changed {
                path: path.to_path_buf(),
            });
        }
        let kind = EntryKind::File {
            size,
            hash: *hasher.finalize().as_bytes(),
        };
        self.push(rel, kind, Some(path.to_path_buf()))
    }
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

    fn hash(b: &[u8]) -> [u8; 32] {
        *blake3::hash(b).as_bytes()
    }

    fn file_kind(b: &[u8]) -> EntryKind {
        EntryKind::File {
            size: b.len() as u64,
            hash: hash(b),
        }
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
        assert_eq!(e[1].kind, file_kind(b"aaa"));
        assert_eq!(e[4].kind, file_kind(&vec![7u8; (1 << 20) + 5]));
        assert_eq!(e[6].kind, file_kind(b""));
        assert_eq!(e[7].kind, EntryKind::Directory);
        assert_eq!(e[8].kind, file_kind(b"one"));
        assert_eq!(src.files.len(), e.len());
        assert_eq!(src.files[0], None);
        assert_eq!(
            src.files[5].as_deref(),
            Some(root.join("b_sub/x.jpg").as_path())
        );
        assert_eq!(src.files[8].as_deref(), Some(single.as_path()));
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
        let mut staging = dl.stage(&plan, &src.manifest).unwrap();
        for (i, disk) in src.files.iter().enumerate() {
            if let Some(disk) = disk {
                let data = fs::read(disk).unwrap();
                let mut offset = 0;
                for chunk in data.chunks(1 << 20) {
                    staging.write(i as u32, offset, chunk).unwrap();
                    offset += chunk.len() as u64;
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
        assert_eq!(src.manifest.entries[0].kind, file_kind(b"real"));
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
    fn dot_argument_uses_the_directory_name() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("named");
        fs::create_dir(&d).unwrap();
        let src = scan(&[d.join(".")]).unwrap();
        assert_eq!(src.manifest.entries[0].path, "named");
    }
}
