//! Making the files and directories of one transfer durable, in parallel.
//!
//! Each `fdatasync` waits for the file's last data, a journal commit and a
//! flush of the disk's cache: a few milliseconds each on the disks measured
//! here, so 2000 small files synced one after another took 5-7 s, where
//! copying them took a tenth of a second. Issued from many threads at once
//! they share journal commits and cache flushes (the kernel merges
//! concurrent ones), and the same 2000 files took 0.06-0.1 s.
//!
//! When to sync: a directory as soon as the staging area has created
//! everything in it ([`Syncer::sync_dir`]); a file once it is complete, but
//! in batches of at least [`BATCH_BYTES`] ([`Syncer::sync_file`]) and the
//! rest at the commit ([`Syncer::finish`]). Syncing every small file the
//! moment it was complete made the transfer slower, not faster: each sync
//! forces a journal commit, and while one runs the writer's own file
//! updates wait for it (2000 files of 4 KiB: data phase 110-300 ms instead
//! of 90-120 ms, more than the syncs saved at the end). A batch shares one
//! commit, big files form a batch of their own, and what is held back is
//! bounded, while the data of big files is already on its way to the disk
//! (see `write_behind`), so the final syncs have little left to wait for.
//! The batch size is a trade between the two: with 16 MiB, 2000 files of
//! 4 KiB (8 MB) were all synced after the last one arrived; with 1 MiB
//! (eight batches of 256 files while the data still arrives) the same
//! transfer over a 1 Gbit/s link onto a 100 MiB/s ext4 disk took 0.151 and
//! 0.156 s over TCP instead of 0.179 and 0.176 s, and 0.204 and 0.178 s over
//! QUIC instead of 0.227 and 0.185 s (medians of 7, two alternating rounds,
//! `bench/run.sh --disk`); 256 KiB was no better than 1 MiB.
//!
//! The workers are threads started as jobs queue up (at most
//! [`MAX_WORKERS`] in the whole process); they end when the syncer is
//! finished or dropped. A job names its file by path below the staging
//! directory and is opened only while it is synced, so a long queue holds
//! no descriptors.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rustix::fs::{Mode, OFlags};

use super::flush::Flush;
use super::sys;

/// Most sync threads in the process, all staging areas together.
/// Concurrent syncs share the disk's journal commits and cache flushes, so
/// more threads finish many small files sooner; past about this many, 2000
/// files of 4 KiB got no faster.
pub(super) const MAX_WORKERS: usize = 128;

/// Completed files are held back until they add up to this many bytes
/// (see the module docs).
pub(super) const BATCH_BYTES: u64 = 1 << 20;

/// Stack of a worker: it only opens and syncs.
const WORKER_STACK: usize = 128 << 10;

/// What to make durable: a path below the staging directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Job {
    /// A file's data (`fdatasync`).
    File(String),
    /// A directory's entries (`fsync`); `""` is the staging directory.
    Dir(String),
}

impl Job {
    /// The path below the staging directory.
    pub(super) fn path(&self) -> &str {
        match self {
            Self::File(p) | Self::Dir(p) => p,
        }
    }
}

/// A job that failed, and why.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) job: Job,
    pub(super) error: io::Error,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Jobs taken by a worker and not finished yet.
    running: usize,
    /// Worker threads of this syncer, and how many of them wait for a job.
    workers: usize,
    idle: usize,
    failure: Option<Failure>,
    /// No more jobs will come: workers exit when the queue is empty.
    closed: bool,
}

struct Shared {
    dir: OwnedFd,
    flush: Arc<dyn Flush>,
    queue: Mutex<Queue>,
    /// Signalled when a job is queued or the queue is closed.
    work: Condvar,
    /// Signalled when a job finishes.
    done: Condvar,
    /// Worker threads running, counted against [`MAX_WORKERS`]: the
    /// process-wide [`WORKERS`] (a test may give its syncer its own).
    budget: &'static AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A worker never panics while holding the lock; if one did, the
        // queue is still consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self, job: &Job) -> io::Result<()> {
        match job {
            Job::File(path) => {
                let fd = rustix::fs::openat2(
                    &self.dir,
                    path.as_str(),
                    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::empty(),
                    sys::RESOLVE,
                )?;
                self.flush.sync_file(fd.as_fd())
            }
            Job::Dir(path) if path.is_empty() => self.flush.sync_dir(self.dir.as_fd()),
            Job::Dir(path) => self
                .flush
                .sync_dir(sys::open_dir(self.dir.as_fd(), path)?.as_fd()),
        }
    }

    /// Runs the next job, if any, and records the first failure. After a
    /// failure the remaining jobs are dropped: the transfer fails anyway.
    fn work<'a>(&'a self, mut queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        let Some(job) = queue.jobs.pop_front() else {
            return queue;
        };
        queue.running += 1;
        drop(queue);
        let result = self.run(&job);
        let mut queue = self.lock();
        queue.running -= 1;
        if let Err(error) = result
            && queue.failure.is_none()
        {
            queue.failure = Some(Failure { job, error });
            queue.jobs.clear();
        }
        self.done.notify_all();
        queue
    }

    /// A worker thread: runs jobs until the queue is closed and empty.
    fn worker(&self) {
        let mut queue = self.lock();
        loop {
            if !queue.jobs.is_empty() {
                queue = self.work(queue);
            } else if queue.closed {
                break;
            } else {
                queue.idle += 1;
                queue = self
                    .work
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                queue.idle -= 1;
            }
        }
        queue.workers -= 1;
        self.budget.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sync worker threads of all staging areas together (see [`MAX_WORKERS`]).
static WORKERS: AtomicUsize = AtomicUsize::new(0);

/// Takes a place in `budget` for one more worker thread, if fewer than
/// [`MAX_WORKERS`] run.
fn reserve_worker(budget: &AtomicUsize) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < MAX_WORKERS).then_some(n + 1)
        })
        .is_ok()
}

/// The sync workers of one staging area (see the module docs).
pub(super) struct Syncer {
    shared: Arc<Shared>,
    /// Whether to start worker threads (see [`Syncer::new`]).
    threads: bool,
    /// Complete files not handed to the workers yet, and their bytes.
    held: Vec<Job>,
    held_bytes: u64,
}

impl Syncer {
    /// A syncer for the files below `dir` (the staging directory). Without
    /// `threads`, every job waits for [`finish`](Self::finish) and runs on
    /// its caller's thread: for files in memory (tmpfs), where a sync has
    /// nothing to wait for and a thread would only cost its start.
    pub(super) fn new(dir: OwnedFd, flush: Arc<dyn Flush>, threads: bool) -> Self {
        Self::with_budget(dir, flush, threads, &WORKERS)
    }

    /// [`Syncer::new`] with its worker threads counted in `budget`.
    fn with_budget(
        dir: OwnedFd,
        flush: Arc<dyn Flush>,
        threads: bool,
        budget: &'static AtomicUsize,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                dir,
                flush,
                queue: Mutex::new(Queue::default()),
                work: Condvar::new(),
                done: Condvar::new(),
                budget,
            }),
            threads,
            held: Vec::new(),
            held_bytes: 0,
        }
    }

    /// Makes directory `path` (`""`: the staging directory) durable, now.
    pub(super) fn sync_dir(&mut self, path: String) {
        self.submit(Job::Dir(path));
    }

    /// Makes file `path` of `size` bytes durable: with the next batch, at
    /// the latest in [`finish`](Self::finish).
    pub(super) fn sync_file(&mut self, path: String, size: u64) {
        self.held.push(Job::File(path));
        self.held_bytes += size;
        if self.held_bytes >= BATCH_BYTES {
            self.release();
        }
    }

    /// Hands the held files to the workers.
    fn release(&mut self) {
        self.held_bytes = 0;
        for job in std::mem::take(&mut self.held) {
            self.submit(job);
        }
    }

    /// Queues `job`, starting another worker if none is idle.
    fn submit(&mut self, job: Job) {
        let mut queue = self.shared.lock();
        if queue.failure.is_some() || queue.closed {
            return;
        }
        queue.jobs.push_back(job);
        if queue.idle >= queue.jobs.len() {
            drop(queue);
            self.shared.work.notify_one();
            return;
        }
        if !self.threads || !reserve_worker(self.shared.budget) {
            // Every worker place is taken: the workers this syncer has, or
            // finally `finish` on the committing thread, do the job.
            return;
        }
        let shared = self.shared.clone();
        let started = std::thread::Builder::new()
            .name("lanshare-sync".into())
            .stack_size(WORKER_STACK)
            .spawn(move || shared.worker());
        if started.is_ok() {
            queue.workers += 1;
        } else {
            self.shared.budget.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Waits until every submitted job is done, helping with the queue on
    /// this thread, then lets the workers go. Returns the first failure.
    ///
    /// # Errors
    /// The first job that failed, and its error.
    pub(super) fn finish(&mut self) -> Result<(), Failure> {
        self.release();
        let mut queue = self.shared.lock();
        loop {
            if !queue.jobs.is_empty() {
                queue = self.shared.work(queue);
            } else if queue.running > 0 {
                queue = self
                    .shared
                    .done
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            } else {
                queue.closed = true;
                self.shared.work.notify_all();
                return queue.failure.take().map_or(Ok(()), Err);
            }
        }
    }

    /// Drops the jobs not started yet and waits for the running ones, so
    /// that nothing works on the staging area any more (its files are about
    /// to be removed). The idle workers exit on their own.
    pub(super) fn stop(&mut self) {
        self.held.clear();
        let mut queue = self.shared.lock();
        queue.jobs.clear();
        queue.closed = true;
        self.shared.work.notify_all();
        while queue.running > 0 {
            queue = self
                .shared
                .done
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::fd::BorrowedFd;
    use std::sync::Barrier;

    use super::*;
    use crate::store::flush::SystemFlush;

    /// Records which inodes were synced; fails for one; optionally holds
    /// every sync at a barrier to prove they run at once.
    #[derive(Debug, Default)]
    struct Recorder {
        synced: Mutex<BTreeSet<(char, u64)>>,
        fail_inode: Option<u64>,
        barrier: Option<Barrier>,
    }

    fn inode(fd: BorrowedFd<'_>) -> u64 {
        rustix::fs::fstat(fd).unwrap().st_ino
    }

    impl Flush for Recorder {
        fn start_writeback(&self, _: BorrowedFd<'_>, _: u64, _: u64) -> io::Result<()> {
            unreachable!()
        }
        fn wait_writeback(&self, _: BorrowedFd<'_>, _: u64, _: u64) -> io::Result<()> {
            unreachable!()
        }
        fn sync_file(&self, file: BorrowedFd<'_>) -> io::Result<()> {
            if let Some(b) = &self.barrier {
                b.wait();
            }
            if Some(inode(file)) == self.fail_inode {
                return Err(io::Error::from_raw_os_error(5));
            }
            self.synced.lock().unwrap().insert(('f', inode(file)));
            SystemFlush.sync_file(file)
        }
        fn sync_dir(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
            self.synced.lock().unwrap().insert(('d', inode(dir)));
            SystemFlush.sync_dir(dir)
        }
    }

    fn tree(files: usize) -> (tempfile::TempDir, Vec<u64>) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        let inodes = (0..files)
            .map(|i| {
                let p = tmp.path().join(format!("sub/{i}"));
                std::fs::write(&p, [i as u8; 100]).unwrap();
                std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap())
            })
            .collect();
        (tmp, inodes)
    }

    fn open(dir: &std::path::Path) -> OwnedFd {
        std::fs::File::open(dir).unwrap().into()
    }

    #[test]
    fn every_job_is_done_by_the_time_finish_returns() {
        let (tmp, inodes) = tree(100);
        let recorder = Arc::new(Recorder::default());
        let mut syncer = Syncer::new(open(tmp.path()), recorder.clone(), true);
        syncer.sync_dir(String::new());
        syncer.sync_dir("sub".into());
        for i in 0..100 {
            syncer.sync_file(format!("sub/{i}"), 100);
        }
        syncer.finish().unwrap();
        let synced = recorder.synced.lock().unwrap().clone();
        let meta = |p: &std::path::Path| {
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap())
        };
        let mut expected: BTreeSet<_> = inodes.iter().map(|i| ('f', *i)).collect();
        expected.insert(('d', meta(tmp.path())));
        expected.insert(('d', meta(&tmp.path().join("sub"))));
        assert_eq!(synced, expected);
        assert!(syncer.shared.lock().workers <= MAX_WORKERS);
    }

    #[test]
    fn syncs_run_in_parallel() {
        let (tmp, _) = tree(4);
        let recorder = Arc::new(Recorder {
            barrier: Some(Barrier::new(4)),
            ..Recorder::default()
        });
        // Its own budget: other tests' syncers may hold every place of the
        // process-wide one (2000 files on disk), and then fewer than 4
        // syncs could run at once and the barrier would never open.
        static BUDGET: AtomicUsize = AtomicUsize::new(0);
        let mut syncer = Syncer::with_budget(open(tmp.path()), recorder.clone(), true, &BUDGET);
        for i in 0..4 {
            syncer.sync_file(format!("sub/{i}"), 100);
        }
        // With fewer than 4 syncs at once the barrier never opens.
        syncer.finish().unwrap();
        assert_eq!(recorder.synced.lock().unwrap().len(), 4);
    }

    #[test]
    fn the_first_failure_is_reported_with_its_path() {
        let (tmp, inodes) = tree(10);
        let recorder = Arc::new(Recorder {
            fail_inode: Some(inodes[7]),
            ..Recorder::default()
        });
        let mut syncer = Syncer::new(open(tmp.path()), recorder, true);
        for i in 0..10 {
            syncer.sync_file(format!("sub/{i}"), 100);
        }
        let failure = syncer.finish().unwrap_err();
        assert_eq!(failure.job, Job::File("sub/7".into()));
        assert_eq!(failure.error.raw_os_error(), Some(5));
    }

    #[test]
    fn a_missing_file_is_a_failure_not_a_hang() {
        let (tmp, _) = tree(1);
        let mut syncer = Syncer::new(open(tmp.path()), Arc::new(SystemFlush), false);
        syncer.sync_file("sub/nope".into(), 1);
        let failure = syncer.finish().unwrap_err();
        assert_eq!(failure.error.kind(), io::ErrorKind::NotFound);
    }
}
