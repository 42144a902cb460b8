//! Manifest types: what an `Offer` proposes to send.
//!
//! A manifest is an ordered list of entries; `Data` frames refer to file
//! entries by their index in this list, and the receiver writes files in this
//! order. The codec ([`super::wire`]) only enforces what it must to decode
//! safely (per-string and per-frame limits, at most [`MAX_ENTRIES`] entries).
//! [`Manifest::validate`] adds the *structural* checks a receiver applies
//! before even asking the user: non-empty, within the configured entry, size
//! and depth limits, with overflow-free size arithmetic. Whether each path is
//! safe to create on disk (no `..`, no control characters, no duplicates, NFC
//! normalisation, ...) is the store module's job, not this one's.

use std::fmt;

use super::{MAX_ENTRIES, MAX_PATH_LEN};

/// Block size a sender uses unless the offer is so large that more than
/// [`MAX_BLOCKS`] blocks would be needed.
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;
/// Smallest block size a receiver accepts.
pub const MIN_BLOCK_SIZE: u32 = 1 << 16;
/// Largest block size a receiver accepts.
pub const MAX_BLOCK_SIZE: u32 = 1 << 30;
/// Most blocks one offer may be cut into (and so most ranges in an
/// `Accept`).
pub const MAX_BLOCKS: usize = 1 << 17;

/// What a manifest entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory to create (possibly empty).
    Directory,
    /// A regular file.
    File {
        /// Exact length in bytes; the sender sends exactly this many.
        size: u64,
        /// Version tag: names this version of the file's content, so that
        /// a repeat offer of unchanged files resumes (see `PROTOCOL.md`).
        /// Opaque to the receiver; the content itself is verified block by
        /// block as it arrives.
        tag: [u8; 32],
    },
}

/// What a receiver keeps of an entry besides its content: the
/// modification time and, for files, whether it is executable. Never
/// ownership, never setuid/setgid/sticky or other permission bits: the
/// receiver's own defaults decide those (see `PROTOCOL.md` §5.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EntryMeta {
    /// The modification time, if the sender sends one.
    pub mtime: Option<Mtime>,
    /// Any execute bit was set on the sender (files only; false for
    /// directories).
    pub executable: bool,
}

/// A modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mtime {
    /// Seconds since the Unix epoch (negative before it).
    pub sec: i64,
    /// Nanoseconds, below 10^9.
    pub nsec: u32,
}

/// One entry of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative, `/`-separated UTF-8 path (see `PROTOCOL.md` for the rules
    /// receivers enforce).
    pub path: String,
    /// Directory or file.
    pub kind: EntryKind,
}

/// The list of entries an `Offer` proposes, in transfer order.
///
/// Files are cut into blocks of `block_size` bytes (the last block of a
/// file may be shorter). The sender follows each block's data with the
/// block's BLAKE3 value, which the receiver checks against its own hash of
/// what arrived; after an interruption it asks only for the blocks it does
/// not have yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Entries in transfer order; `Data::file` indexes into this.
    pub entries: Vec<Entry>,
    /// Block size in bytes: a power of two in
    /// [`MIN_BLOCK_SIZE`]`..=`[`MAX_BLOCK_SIZE`].
    pub block_size: u32,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

/// Heap bytes one allocation of `len` bytes takes in glibc's allocator: an
/// 8-byte header, 16-byte granules, 32 bytes at least (none for an empty
/// string, which does not allocate). An estimate for memory budgets.
#[must_use]
pub fn heap_block(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (len.saturating_add(8).div_ceil(16) * 16).max(32)
    }
}

/// Number of blocks of a `size`-byte file.
#[must_use]
pub fn blocks_for(size: u64, block_size: u32) -> u64 {
    size.div_ceil(u64::from(block_size.max(1)))
}

/// The smallest power-of-two block size of at least [`DEFAULT_BLOCK_SIZE`]
/// for which files of these `sizes` need at most [`MAX_BLOCKS`] blocks.
#[must_use]
pub fn choose_block_size(sizes: &[u64]) -> u32 {
    let mut block_size = DEFAULT_BLOCK_SIZE;
    while block_size < MAX_BLOCK_SIZE {
        let needed = sizes.iter().fold(0u64, |acc, &s| {
            acc.saturating_add(blocks_for(s, block_size))
        });
        if needed <= MAX_BLOCKS as u64 {
            break;
        }
        block_size *= 2;
    }
    block_size
}

/// Receiver-side limits applied by [`Manifest::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestLimits {
    /// Most entries (files + directories) accepted in one offer.
    pub max_entries: usize,
    /// Most bytes (sum of file sizes) accepted in one offer.
    pub max_total_bytes: u64,
    /// Most `/`-separated components in one path.
    pub max_depth: usize,
}

impl Default for ManifestLimits {
    /// [`MAX_ENTRIES`] entries, 1 TiB, 64 path components.
    fn default() -> Self {
        Self {
            max_entries: MAX_ENTRIES,
            max_total_bytes: 1 << 40,
            max_depth: 64,
        }
    }
}

/// Why an offer's manifest was refused by [`Manifest::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The manifest has no entries at all.
    #[error("offer contains no files or directories")]
    Empty,
    /// More entries than [`ManifestLimits::max_entries`].
    #[error("offer of {count} entries exceeds the {max}-entry limit")]
    TooManyEntries {
        /// Number of entries offered.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// The sum of file sizes does not fit in 64 bits.
    #[error("offer's total size overflows a 64-bit byte count")]
    TotalOverflow,
    /// The sum of file sizes exceeds [`ManifestLimits::max_total_bytes`].
    #[error(
        "offer of {} ({total} bytes) exceeds the {} limit ({max} bytes)",
        HumanBytes(*total),
        HumanBytes(*max)
    )]
    TooLarge {
        /// Sum of file sizes.
        total: u64,
        /// The configured limit.
        max: u64,
    },
    /// The block size is not a power of two within the accepted range.
    #[error("block size {0} is not a power of two between 64 KiB and 1 GiB")]
    BadBlockSize(u32),
    /// The files would be cut into more than [`MAX_BLOCKS`] blocks.
    #[error("offer needs {blocks} blocks of {block_size} bytes, over the limit of {max}")]
    TooManyBlocks {
        /// Blocks the file sizes imply.
        blocks: u64,
        /// The offer's block size.
        block_size: u32,
        /// The limit, [`MAX_BLOCKS`].
        max: usize,
    },
    /// An entry's path is the empty string.
    #[error("entry {index} has an empty path")]
    EmptyPath {
        /// Index of the entry in the manifest.
        index: usize,
    },
    /// An entry's path is longer than [`MAX_PATH_LEN`] bytes.
    #[error("entry {index} has a path of {len} bytes, over the {max}-byte limit")]
    PathTooLong {
        /// Index of the entry in the manifest.
        index: usize,
        /// Path length in bytes.
        len: usize,
        /// The limit, [`MAX_PATH_LEN`].
        max: usize,
    },
    /// An entry's path has more components than [`ManifestLimits::max_depth`].
    #[error("path {path:?} is {depth} levels deep, over the limit of {max}")]
    TooDeep {
        /// The offending path (printed escaped: it is untrusted input).
        path: String,
        /// Number of `/`-separated components.
        depth: usize,
        /// The configured limit.
        max: usize,
    },
}

impl Manifest {
    /// Bytes it holds on the heap: the entry array and every path, with
    /// the allocator's overhead ([`heap_block`]).
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        let paths: usize = self.entries.iter().map(|e| heap_block(e.path.len())).sum();
        heap_block(self.entries.capacity() * std::mem::size_of::<Entry>()) + paths
    }

    /// Number of file entries (directories excluded).
    #[must_use]
    pub fn file_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::File { .. }))
            .count()
    }

    /// For each entry, the number of its first block when the blocks of all
    /// files are numbered consecutively in entry order; one extra element
    /// at the end holds the total. Only meaningful for a
    /// [validated](Self::validate) manifest.
    #[must_use]
    pub fn block_starts(&self) -> Vec<usize> {
        let mut starts = Vec::with_capacity(self.entries.len() + 1);
        let mut next = 0usize;
        for entry in &self.entries {
            starts.push(next);
            let n = blocks_for(entry_size(entry), self.block_size);
            next = next.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
        }
        starts.push(next);
        starts
    }

    /// Sum of all file sizes, saturating at `u64::MAX`. Use
    /// [`validate`](Self::validate) to reject overflowing manifests.
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |acc, e| acc.saturating_add(entry_size(e)))
    }

    /// Structural checks a receiver runs on an incoming offer: at least one
    /// entry, at most `limits.max_entries`, a total size that neither
    /// overflows nor exceeds `limits.max_total_bytes`, and paths that are
    /// non-empty, at most [`MAX_PATH_LEN`] bytes and at most
    /// `limits.max_depth` components deep.
    ///
    /// Path *semantics* (`..`, control characters, duplicates, ...) are
    /// checked by the store module, not here.
    ///
    /// # Errors
    ///
    /// The first [`ManifestError`] found, checking the entry count first and
    /// then the entries in order.
    pub fn validate(&self, limits: &ManifestLimits) -> Result<(), ManifestError> {
        let count = self.entries.len();
        if count == 0 {
            return Err(ManifestError::Empty);
        }
        if count > limits.max_entries {
            return Err(ManifestError::TooManyEntries {
                count,
                max: limits.max_entries,
            });
        }
        let mut total: u64 = 0;
        for (index, entry) in self.entries.iter().enumerate() {
            total = total
                .checked_add(entry_size(entry))
                .ok_or(ManifestError::TotalOverflow)?;
            check_path(index, &entry.path, limits.max_depth)?;
        }
        if total > limits.max_total_bytes {
            return Err(ManifestError::TooLarge {
                total,
                max: limits.max_total_bytes,
            });
        }
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
            return Err(ManifestError::BadBlockSize(bs));
        }
        // Cannot overflow: total fits in u64 and blocks <= total.
        let blocks = self
            .entries
            .iter()
            .map(|e| blocks_for(entry_size(e), bs))
            .sum::<u64>();
        if blocks > MAX_BLOCKS as u64 {
            return Err(ManifestError::TooManyBlocks {
                blocks,
                block_size: bs,
                max: MAX_BLOCKS,
            });
        }
        Ok(())
    }
}

/// Size contributed by one entry (0 for directories).
fn entry_size(entry: &Entry) -> u64 {
    match entry.kind {
        EntryKind::Directory => 0,
        EntryKind::File { size, .. } => size,
    }
}

/// Length and depth checks for one path.
fn check_path(index: usize, path: &str, max_depth: usize) -> Result<(), ManifestError> {
    if path.is_empty() {
        return Err(ManifestError::EmptyPath { index });
    }
    if path.len() > MAX_PATH_LEN {
        return Err(ManifestError::PathTooLong {
            index,
            len: path.len(),
            max: MAX_PATH_LEN,
        });
    }
    // Components = separators + 1; bounded by MAX_PATH_LEN, cannot overflow.
    let depth = path.bytes().filter(|&b| b == b'/').count() + 1;
    if depth > max_depth {
        return Err(ManifestError::TooDeep {
            path: path.to_owned(),
            depth,
            max: max_depth,
        });
    }
    Ok(())
}

/// A byte count with binary units, for people ("1.5 MiB", "2.0 TiB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanBytes(pub u64);

impl fmt::Display for HumanBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        // Display only: the precision lost converting to f64 is irrelevant.
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = UNITS[0];
        for next in &UNITS[1..] {
            if value < 1024.0 {
                break;
            }
            value /= 1024.0;
            unit = next;
        }
        write!(f, "{value:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File { size, tag: [0; 32] },
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Directory,
        }
    }

    /// A manifest with the block size a sender would choose.
    fn manifest(entries: Vec<Entry>) -> Manifest {
        let sizes: Vec<u64> = entries.iter().map(entry_size).collect();
        let block_size = choose_block_size(&sizes);
        Manifest {
            entries,
            block_size,
        }
    }

    fn check(entries: Vec<Entry>) -> Result<(), ManifestError> {
        manifest(entries).validate(&ManifestLimits::default())
    }

    #[test]
    fn defaults() {
        let limits = ManifestLimits::default();
        assert_eq!(limits.max_entries, MAX_ENTRIES);
        assert_eq!(limits.max_total_bytes, 1 << 40);
        assert_eq!(limits.max_depth, 64);
        assert_eq!(Manifest::default().entries, vec![]);
    }

    #[test]
    fn valid_manifest() {
        let m = manifest(vec![
            dir("photos"),
            dir("photos/2024"),
            file("photos/2024/a.jpg", 100),
            file("photos/empty", 0),
            file("ünïcødé 📷.raw", 5),
        ]);
        assert_eq!(m.validate(&ManifestLimits::default()), Ok(()));
        assert_eq!(m.file_count(), 3);
        assert_eq!(m.total_bytes(), 105);
        // Exactly at every limit is fine.
        let limits = ManifestLimits {
            max_entries: 2,
            max_total_bytes: 10,
            max_depth: 3,
        };
        let m = manifest(vec![file("a/b/c", 4), file(&"x".repeat(MAX_PATH_LEN), 6)]);
        assert_eq!(m.validate(&limits), Ok(()));
    }

    #[test]
    fn empty() {
        assert_eq!(check(vec![]), Err(ManifestError::Empty));
    }

    #[test]
    fn too_many_entries() {
        let limits = ManifestLimits {
            max_entries: 2,
            ..ManifestLimits::default()
        };
        let m = manifest(vec![dir("a"), dir("b"), dir("c")]);
        let err = m.validate(&limits).unwrap_err();
        assert_eq!(err, ManifestError::TooManyEntries { count: 3, max: 2 });
        assert_eq!(
            err.to_string(),
            "offer of 3 entries exceeds the 2-entry limit"
        );
    }

    #[test]
    fn total_overflow() {
        let half = u64::MAX / 2 + 1;
        let m = manifest(vec![file("a", half), file("b", half)]);
        assert_eq!(m.total_bytes(), u64::MAX);
        let unlimited = ManifestLimits {
            max_total_bytes: u64::MAX,
            ..ManifestLimits::default()
        };
        assert_eq!(m.validate(&unlimited), Err(ManifestError::TotalOverflow));
    }

    #[test]
    fn too_large() {
        let err = check(vec![file("a", 1 << 40), file("b", 1 << 40)]).unwrap_err();
        assert_eq!(
            err,
            ManifestError::TooLarge {
                total: 2 << 40,
                max: 1 << 40
            }
        );
        assert_eq!(
            err.to_string(),
            "offer of 2.0 TiB (2199023255552 bytes) exceeds the 1.0 TiB limit (1099511627776 bytes)"
        );
        assert_eq!(check(vec![file("a", 1 << 40)]), Ok(()));
    }

    #[test]
    fn too_deep() {
        let deep = vec!["d"; 65].join("/");
        let err = check(vec![dir("ok"), dir(&deep)]).unwrap_err();
        assert_eq!(
            err,
            ManifestError::TooDeep {
                path: deep,
                depth: 65,
                max: 64
            }
        );
        assert_eq!(check(vec![dir(&vec!["d"; 64].join("/"))]), Ok(()));
        // Untrusted paths are printed escaped.
        let err = ManifestError::TooDeep {
            path: "a\x1b[2J/b".into(),
            depth: 2,
            max: 1,
        };
        assert!(!err.to_string().contains('\x1b'));
    }

    #[test]
    fn path_too_long_or_empty() {
        let long = "x".repeat(MAX_PATH_LEN + 1);
        assert_eq!(
            check(vec![dir("a"), file(&long, 1)]),
            Err(ManifestError::PathTooLong {
                index: 1,
                len: MAX_PATH_LEN + 1,
                max: MAX_PATH_LEN
            })
        );
        assert_eq!(
            check(vec![file("", 1)]),
            Err(ManifestError::EmptyPath { index: 0 })
        );
    }

    #[test]
    fn human_bytes() {
        assert_eq!(HumanBytes(0).to_string(), "0 B");
        assert_eq!(HumanBytes(1023).to_string(), "1023 B");
        assert_eq!(HumanBytes(1536).to_string(), "1.5 KiB");
        assert_eq!(HumanBytes(5 << 20).to_string(), "5.0 MiB");
        assert_eq!(HumanBytes(u64::MAX).to_string(), "16.0 EiB");
    }
}
