//! Block values of files hashed before, so that sending an unchanged file
//! again (to a second device, after a rejection, as a fresh `share send`
//! after a failure) does not read and hash it again before the offer.
//!
//! An entry is keyed by what the kernel reports for the open file: device,
//! inode, size, modification time and status-change time (`ctime`, in
//! nanoseconds), plus the block size the values were computed for. Every
//! write to a file sets its `ctime`, and no user can set `ctime` back, so a
//! changed file does not match its old entry.
//!
//! One race remains, the one git's index knows as "racy": file timestamps
//! come from a coarse clock, so a write in the same clock tick as the
//! hashing can leave them unchanged. As git does, files whose `ctime` is
//! less than [`SETTLE`] older than the start of the hashing are not
//! cached. Nothing here is trusted beyond speed: the receiver verifies
//! every block against the offer, so a wrong value could only fail a
//! transfer, never corrupt one.
//!
//! Only files of at least [`MIN_CACHED_SIZE`] are worth it: a smaller one
//! is read and hashed in microseconds. Bounded: the values and the
//! bookkeeping of all entries take at most [`MAX_CACHED_BLOCKS`] 32-byte
//! units (2 MiB, enough for about 64 GiB of files at 1 MiB blocks); the
//! oldest entries go first. The cache lives in memory only.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How old a file's last change must be when hashing starts for its
/// values to be kept.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Most 32-byte units (block values plus [`ENTRY_OVERHEAD`] per entry)
/// kept.
pub const MAX_CACHED_BLOCKS: usize = 1 << 16;

/// What one entry costs besides its values (key, map and queue slots), in
/// 32-byte units.
pub const ENTRY_OVERHEAD: usize = 6;

/// Smallest file whose values are cached.
pub const MIN_CACHED_SIZE: u64 = 1 << 20;

/// Identity of one version of one file, for one block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, u64),
    ctime: (i64, u64),
    block_size: u32,
}

impl Version {
    /// The version of the open `file` now, or `None` if it cannot be
    /// inspected (then nothing is cached for it).
    // The `stat` field types differ between architectures.
    #[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
    pub fn of(file: &File, block_size: u32) -> Option<Self> {
        let st = rustix::fs::fstat(file).ok()?;
        Some(Self {
            dev: u64::try_from(st.st_dev).ok()?,
            ino: u64::try_from(st.st_ino).ok()?,
            size: u64::try_from(st.st_size).ok()?,
            mtime: (
                i64::try_from(st.st_mtime).ok()?,
                u64::try_from(st.st_mtime_nsec).ok()?,
            ),
            ctime: (
                i64::try_from(st.st_ctime).ok()?,
                u64::try_from(st.st_ctime_nsec).ok()?,
            ),
            block_size,
        })
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the last change is at least `settle` before `start`.
    fn settled(&self, start: SystemTime, settle: Duration) -> bool {
        let Ok(start) = start.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let Ok(secs) = u64::try_from(self.ctime.0) else {
            return false;
        };
        Duration::from_secs(secs)
            .checked_add(Duration::from_nanos(self.ctime.1))
            .and_then(|ctime| ctime.checked_add(settle))
            .is_some_and(|settled_at| settled_at <= start)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct HashCache {
    settle: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    values: HashMap<Version, Vec<[u8; 32]>>,
    /// Insertion order, for eviction.
    order: VecDeque<Version>,
    /// 32-byte units held in total (see [`MAX_CACHED_BLOCKS`]).
    units: usize,
}

impl Default for HashCache {
    fn default() -> Self {
        Self::with_settle(SETTLE)
    }
}

impl HashCache {
    /// A cache that keeps files last changed `settle` or longer before
    /// their hashing started (tests use zero).
    pub fn with_settle(settle: Duration) -> Self {
        Self {
            settle,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The block values of `version`, if known.
    pub fn get(&self, version: &Version) -> Option<Vec<[u8; 32]>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.values.get(version).cloned()
    }

    /// Remembers `values` for `version`, hashed from `started` on, unless
    /// the file changed too recently for its timestamps to be trusted (see
    /// the module docs) or the values alone exceed the bound.
    pub fn insert(&self, version: Version, values: Vec<[u8; 32]>, started: SystemTime) {
        let cost = values.len() + ENTRY_OVERHEAD;
        if version.size < MIN_CACHED_SIZE
            || !version.settled(started, self.settle)
            || cost > MAX_CACHED_BLOCKS
        {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.values.contains_key(&version) {
            return;
        }
        while inner.units + cost > MAX_CACHED_BLOCKS {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.values.remove(&oldest) {
                inner.units -= old.len() + ENTRY_OVERHEAD;
            }
        }
        inner.units += cost;
        inner.order.push_back(version);
        inner.values.insert(version, values);
    }

    /// Forgets every entry of the file `version` belongs to (after the
    /// receiver refused our values: better re-read it than trust them).
    pub fn forget(&self, version: &Version) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner {
            values,
            order,
            units,
        } = &mut *inner;
        order.retain(|v| {
            let same_file = v.dev == version.dev && v.ino == version.ino;
            if same_file && let Some(old) = values.remove(v) {
                *units -= old.len() + ENTRY_OVERHEAD;
            }
            !same_file
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file_with(content: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f.flush().unwrap();
        let open = File::open(f.path()).unwrap();
        (f, open)
    }

    #[test]
    fn a_write_makes_a_new_version_and_the_old_values_unreachable() {
        let cache = HashCache::with_settle(Duration::ZERO);
        let (tmp, file) = file_with(&[1; MIN_CACHED_SIZE as usize]);
        let before = Version::of(&file, 1 << 20).unwrap();
        cache.insert(before, vec![[1; 32]], SystemTime::now());
        assert_eq!(cache.get(&before), Some(vec![[1; 32]]));
        // Another block size is another key.
        assert_eq!(cache.get(&Version::of(&file, 2 << 20).unwrap()), None);

        // Same size: only the timestamps tell the versions apart.
        std::fs::write(tmp.path(), [2; MIN_CACHED_SIZE as usize]).unwrap();
        tmp.as_file()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1000))
            .unwrap();
        let after = Version::of(&file, 1 << 20).unwrap();
        assert_ne!(before, after);
        assert_eq!(cache.get(&after), None);
    }

    #[test]
    fn recently_changed_files_are_not_cached() {
        let cache = HashCache::default();
        let (_tmp, file) = file_with(&[3; MIN_CACHED_SIZE as usize]);
        let version = Version::of(&file, 1 << 20).unwrap();
        cache.insert(version, vec![[2; 32]], SystemTime::now());
        assert_eq!(cache.get(&version), None);
        // Hashing that started well after the change may be kept.
        cache.insert(version, vec![[2; 32]], SystemTime::now() + SETTLE);
        assert_eq!(cache.get(&version), Some(vec![[2; 32]]));
    }

    #[test]
    fn small_files_are_not_cached() {
        let cache = HashCache::with_settle(Duration::ZERO);
        let (_tmp, file) = file_with(&[4; MIN_CACHED_SIZE as usize - 1]);
        let version = Version::of(&file, 1 << 20).unwrap();
        cache.insert(version, vec![[4; 32]], SystemTime::now());
        assert_eq!(cache.get(&version), None);
    }

    #[test]
    fn bounded_oldest_first_and_forgettable() {
        let cache = HashCache::with_settle(Duration::ZERO);
        let files: Vec<_> = (0..3)
            .map(|i| file_with(&vec![i; MIN_CACHED_SIZE as usize]))
            .collect();
        let versions: Vec<_> = files
            .iter()
            .map(|(_, f)| Version::of(f, 1 << 20).unwrap())
            .collect();
        let half = vec![[0; 32]; MAX_CACHED_BLOCKS / 2 - ENTRY_OVERHEAD];
        for v in &versions {
            cache.insert(*v, half.clone(), SystemTime::now());
        }
        assert_eq!(cache.get(&versions[0]), None, "oldest evicted");
        assert!(cache.get(&versions[1]).is_some());
        assert!(cache.get(&versions[2]).is_some());
        cache.forget(&versions[1]);
        assert_eq!(cache.get(&versions[1]), None);
        assert!(cache.get(&versions[2]).is_some());
        // Room again for another half.
        cache.insert(versions[0], half, SystemTime::now());
        assert!(cache.get(&versions[0]).is_some());
        assert!(cache.get(&versions[2]).is_some());
    }
}
