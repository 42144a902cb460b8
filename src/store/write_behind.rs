//! Write-behind: received data starts its way to the disk while the rest
//! of the transfer is still arriving.
//!
//! Without it, every received byte would sit in the page cache until the
//! final `fdatasync`, which then has to write the whole transfer: a 512 MiB
//! file over a 1 Gbit/s link onto a 100 MiB/s disk took link time *plus*
//! disk time (9.7-10.5 s instead of 5.1). Here, every [`STEP`] bytes written
//! in a row to one file, and the last run of a file once it is
//! [`MIN_RUN`] or more, are handed to the disk at once
//! (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), and once
//! more than [`WINDOW`] bytes are under writeback, the writer waits for the
//! oldest range. The disk therefore always has work queued while the
//! network fills the next range, the page cache holds at most about
//! `WINDOW + STEP` bytes of this transfer that are not on the disk yet
//! (plus small files, see below), and a disk slower than the network slows
//! the writer down (and, through the bounded pipeline in front of it, the
//! sender) instead of piling up dirty memory. The final `fdatasync` of each
//! file only has the tail left.
//!
//! Files smaller than [`MIN_RUN`] are left to their `fdatasync` (see
//! `syncer`, which syncs them in batches on parallel threads): a
//! `sync_file_range` for each would cost the writer's thread more than the
//! whole write of such a file.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::flush::Flush;

/// How many bytes written in a row to one file are handed to the disk at
/// once.
pub(super) const STEP: u64 = 2 << 20;

/// The last run of a file is handed to the disk at once if it has at least
/// this many bytes; smaller files wait for their `fdatasync`.
pub(super) const MIN_RUN: u64 = 256 << 10;

/// How many bytes may be under writeback before the writer waits for the
/// oldest range: enough to keep a disk busy for the time the network takes
/// to fill the next [`STEP`], small enough to bound dirty memory.
pub(super) const WINDOW: u64 = 8 << 20;

/// A range of a file: written and not yet started, or under writeback.
struct Range {
    /// Which file entry it belongs to.
    index: u32,
    file: Arc<File>,
    offset: u64,
    len: u64,
}

/// The write-behind state of one staging area (see the module docs).
pub(super) struct WriteBehind {
    flush: Arc<dyn Flush>,
    /// The bytes written in a row to the file being received, not started
    /// yet. One run is enough: the sender sends one block after another,
    /// and a write elsewhere just leaves the run to the final sync.
    run: Option<Range>,
    /// Ranges under writeback, oldest first.
    started: VecDeque<Range>,
    /// Bytes in `started`.
    started_bytes: u64,
}

impl WriteBehind {
    pub(super) fn new(flush: Arc<dyn Flush>) -> Self {
        Self {
            flush,
            run: None,
            started: VecDeque::new(),
            started_bytes: 0,
        }
    }

    /// Records that `len` bytes were written at `offset` of file entry
    /// `index`, which has `size` bytes; starts writeback of the run once it
    /// reaches [`STEP`] or the end of the file (if [`MIN_RUN`] or more),
    /// and waits for the oldest ranges while more than [`WINDOW`] bytes are
    /// under writeback.
    ///
    /// # Errors
    /// A failed `sync_file_range`, with the entry it was for: for a wait,
    /// this is how a failing disk (`EIO`, `ENOSPC` at writeback) shows up
    /// while data is still arriving.
    pub(super) fn wrote(
        &mut self,
        index: u32,
        file: &Arc<File>,
        offset: u64,
        len: u64,
        size: u64,
    ) -> Result<(), (u32, io::Error)> {
        let run = match &mut self.run {
            Some(run) if run.index == index && run.offset + run.len == offset => run,
            _ => self.run.insert(Range {
                index,
                file: file.clone(),
                offset,
                len: 0,
            }),
        };
        run.len += len;
        let file_done = offset + len == size;
        if run.len < STEP && !(file_done && run.len >= MIN_RUN) {
            return Ok(());
        }
        let range = Range {
            index,
            file: run.file.clone(),
            offset: run.offset,
            len: run.len,
        };
        run.offset += run.len;
        run.len = 0;
        self.flush
            .start_writeback(range.file.as_fd(), range.offset, range.len)
            .map_err(|e| (index, e))?;
        self.started_bytes += range.len;
        self.started.push_back(range);
        while self.started_bytes > WINDOW {
            let Some(oldest) = self.started.pop_front() else {
                break;
            };
            self.started_bytes -= oldest.len;
            self.flush
                .wait_writeback(oldest.file.as_fd(), oldest.offset, oldest.len)
                .map_err(|e| (oldest.index, e))?;
        }
        Ok(())
    }

    /// Forgets every range (closing the files it held open). What was
    /// started keeps going; the final `fdatasync` of each file waits for it
    /// and reports its errors.
    pub(super) fn clear(&mut self) {
        self.run = None;
        self.started.clear();
        self.started_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::BorrowedFd;
    use std::sync::Mutex;

    use super::*;

    /// Records the calls as (what, offset, len).
    #[derive(Debug, Default)]
    struct Calls(Mutex<Vec<(&'static str, u64, u64)>>);

    impl Flush for Calls {
        fn start_writeback(&self, _: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
            self.0.lock().unwrap().push(("start", offset, len));
            Ok(())
        }
        fn wait_writeback(&self, _: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
            self.0.lock().unwrap().push(("wait", offset, len));
            if offset == 6 * STEP {
                return Err(io::Error::from_raw_os_error(5));
            }
            Ok(())
        }
        fn sync_file(&self, _: BorrowedFd<'_>) -> io::Result<()> {
            unreachable!()
        }
        fn sync_dir(&self, _: BorrowedFd<'_>) -> io::Result<()> {
            unreachable!()
        }
    }

    #[test]
    fn starts_every_step_and_waits_a_window_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(tmp.path().join("f")).unwrap());
        let calls = Arc::new(Calls::default());
        let mut wb = WriteBehind::new(calls.clone());
        let chunk = 256 << 10;
        let mut offset = 0;
        while offset < 7 * STEP {
            wb.wrote(0, &file, offset, chunk, 100 * STEP).unwrap();
            offset += chunk;
        }
        let windows = (WINDOW / STEP) as usize;
        let calls = calls.0.lock().unwrap().clone();
        let mut expected = Vec::new();
        for i in 0..7 {
            expected.push(("start", i * STEP, STEP));
            if i as usize >= windows {
                expected.push(("wait", (i - windows as u64) * STEP, STEP));
            }
        }
        assert_eq!(calls, expected);
    }

    #[test]
    fn a_gap_or_another_file_starts_a_new_run() {
        let tmp = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(tmp.path().join("f")).unwrap());
        let calls = Arc::new(Calls::default());
        let mut wb = WriteBehind::new(calls.clone());
        let size = 100 * STEP;
        wb.wrote(0, &file, 0, STEP - 1, size).unwrap();
        // Not contiguous: the first run is left to the final sync.
        wb.wrote(0, &file, STEP, STEP - 1, size).unwrap();
        wb.wrote(1, &file, 2 * STEP - 1, 1, size).unwrap();
        assert!(calls.0.lock().unwrap().is_empty());
        wb.wrote(1, &file, 2 * STEP, STEP - 1, size).unwrap();
        assert_eq!(
            *calls.0.lock().unwrap(),
            [("start", 2 * STEP - 1, STEP)],
            "one step of file 1"
        );
    }

    #[test]
    fn the_end_of_a_file_starts_its_run_unless_it_is_small() {
        let tmp = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(tmp.path().join("f")).unwrap());
        let calls = Arc::new(Calls::default());
        let mut wb = WriteBehind::new(calls.clone());
        // A small file: left to its fdatasync.
        wb.wrote(0, &file, 0, MIN_RUN - 1, MIN_RUN - 1).unwrap();
        // A file of one and a half steps: one step, then the rest at its end.
        let size = STEP + STEP / 2;
        wb.wrote(1, &file, 0, STEP / 2, size).unwrap();
        wb.wrote(1, &file, STEP / 2, STEP / 2, size).unwrap();
        wb.wrote(1, &file, STEP, STEP / 2, size).unwrap();
        assert_eq!(
            *calls.0.lock().unwrap(),
            [("start", 0, STEP), ("start", STEP, STEP / 2)]
        );
    }

    #[test]
    fn a_writeback_error_names_the_entry_it_belongs_to() {
        let tmp = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(tmp.path().join("f")).unwrap());
        let mut wb = WriteBehind::new(Arc::new(Calls::default()));
        let steps = 6 + WINDOW / STEP;
        let mut result = Ok(());
        for i in 0..=steps {
            let index = if i < 6 { 3 } else { 4 };
            result = wb.wrote(index, &file, i * STEP, STEP, 100 * STEP);
            if result.is_err() {
                break;
            }
        }
        let (index, e) = result.unwrap_err();
        assert_eq!((index, e.raw_os_error()), (4, Some(5)));
    }
}
