//! The order in which a sender delivers what an `Accept` asked for
//! (PROTOCOL.md §6 step 4 and §5.5): the requested blocks in the order the
//! `Accept` lists them, each block's bytes in `Data` frames at consecutive
//! offsets from its first byte, and right after its last byte that block's
//! `BlockValue`. Nothing else.
//!
//! [`BlockOrder`] follows a sender frame by frame, so a receiver can refuse
//! the first frame out of order the moment it arrives: out of order is
//! always a violation, never something to wait out (a receiver that
//! accepted blocks in any order could be left waiting for bytes the sender
//! will never send).

use super::{BlockRange, EntryKind, Manifest};

/// Where a sender must be, and what it may send next.
#[derive(Debug, Clone)]
pub struct BlockOrder {
    spans: Vec<Span>,
    block_size: u64,
    /// Index into `spans` of the current block's range.
    span: usize,
    /// The current block, as an index into its file.
    block: u64,
    /// Bytes of the current block received so far.
    filled: u64,
    /// All of the current block's bytes are in; its value comes next.
    value_due: bool,
}

/// One requested range with the size of its file.
#[derive(Debug, Clone, Copy)]
struct Span {
    file: u32,
    first: u64,
    count: u64,
    size: u64,
}

/// A frame out of the order the `Accept` set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// Data, while the value of the block just completed was due.
    #[error(
        "data for entry {file} at offset {offset} before the value of block {block} of entry {due}"
    )]
    DataBeforeValue {
        /// Entry of the data frame.
        file: u32,
        /// Its offset.
        offset: u64,
        /// Entry whose block's value is due.
        due: u32,
        /// That block.
        block: u64,
    },
    /// Data other than the next expected bytes.
    #[error(
        "data for entry {file} at offset {offset}, expected entry {expected_file} at offset {expected_offset}"
    )]
    OutOfOrder {
        /// Entry of the data frame.
        file: u32,
        /// Its offset.
        offset: u64,
        /// The entry expected.
        expected_file: u32,
        /// The offset expected.
        expected_offset: u64,
    },
    /// Data running past the end of its block.
    #[error(
        "data for entry {file} at offset {offset} ({len} bytes) runs past the end of block {block}"
    )]
    CrossesBlock {
        /// Entry of the data frame.
        file: u32,
        /// Its offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// The block it started in.
        block: u64,
    },
    /// A value other than that of the block just completed.
    #[error(
        "value of block {block} of entry {file}, expected that of block {expected_block} of entry {expected_file}"
    )]
    WrongValue {
        /// Entry of the value.
        file: u32,
        /// Its block.
        block: u64,
        /// The entry expected.
        expected_file: u32,
        /// The block expected.
        expected_block: u64,
    },
    /// A value before its block's last byte.
    #[error("value of block {block} of entry {file} before all of its data")]
    ValueBeforeData {
        /// Entry of the value.
        file: u32,
        /// Its block.
        block: u64,
    },
    /// Anything after the last requested block's value.
    #[error("more than the blocks requested")]
    BeyondRequest,
}

impl BlockOrder {
    /// The order for `need` (an `Accept` the receiver sent for
    /// `manifest`, so every range names a non-empty file and blocks within
    /// it; a range that does not is skipped).
    pub fn new(manifest: &Manifest, need: &[BlockRange]) -> Self {
        let spans = need
            .iter()
            .filter_map(|r| {
                let entry = manifest.entries.get(usize::try_from(r.file).ok()?)?;
                let EntryKind::File { size, .. } = entry.kind else {
                    return None;
                };
                (r.count > 0).then_some(Span {
                    file: r.file,
                    first: r.first,
                    count: r.count,
                    size,
                })
            })
            .collect();
        let mut order = Self {
            spans,
            block_size: u64::from(manifest.block_size),
            span: 0,
            block: 0,
            filled: 0,
            value_due: false,
        };
        if let Some(first) = order.spans.first() {
            order.block = first.first;
        }
        order
    }

    /// Whether every requested block and its value arrived.
    pub fn is_complete(&self) -> bool {
        self.span >= self.spans.len()
    }

    /// The current block's entry, first byte and length.
    fn current(&self) -> Option<(u32, u64, u64)> {
        let span = self.spans.get(self.span)?;
        let start = self.block.saturating_mul(self.block_size);
        let len = self.block_size.min(span.size.saturating_sub(start));
        Some((span.file, start, len))
    }

    /// A `Data` frame of `len` bytes for entry `file` at `offset`.
    ///
    /// # Errors
    /// The frame is not the next thing the sender owes.
    pub fn data(&mut self, file: u32, offset: u64, len: u64) -> Result<(), OrderError> {
        let Some((expected_file, start, block_len)) = self.current() else {
            return Err(OrderError::BeyondRequest);
        };
        if self.value_due {
            return Err(OrderError::DataBeforeValue {
                file,
                offset,
                due: expected_file,
                block: self.block,
            });
        }
        let expected_offset = start + self.filled;
        if (file, offset) != (expected_file, expected_offset) {
            return Err(OrderError::OutOfOrder {
                file,
                offset,
                expected_file,
                expected_offset,
            });
        }
        if len > block_len - self.filled {
            return Err(OrderError::CrossesBlock {
                file,
                offset,
                len,
                block: self.block,
            });
        }
        self.filled += len;
        self.value_due = self.filled == block_len;
        Ok(())
    }

    /// A `BlockValue` for block `block` of entry `file`.
    ///
    /// # Errors
    /// It is not the value of the block whose bytes just completed.
    pub fn value(&mut self, file: u32, block: u64) -> Result<(), OrderError> {
        let Some((expected_file, _, _)) = self.current() else {
            return Err(OrderError::BeyondRequest);
        };
        if (file, block) != (expected_file, self.block) {
            return Err(OrderError::WrongValue {
                file,
                block,
                expected_file,
                expected_block: self.block,
            });
        }
        if !self.value_due {
            return Err(OrderError::ValueBeforeData { file, block });
        }
        self.value_due = false;
        self.filled = 0;
        let span = self.spans[self.span];
        if self.block + 1 < span.first + span.count {
            self.block += 1;
        } else {
            self.span += 1;
            if let Some(next) = self.spans.get(self.span) {
                self.block = next.first;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Entry;

    const BS: u64 = 1 << 16;

    /// Entry 0 a directory, entry 1 a file of 2.5 blocks, entry 2 a file
    /// of 1 block.
    fn manifest() -> Manifest {
        let file = |path: &str, size: u64| Entry {
            path: path.into(),
            kind: EntryKind::File { size, tag: [0; 32] },
        };
        Manifest {
            entries: vec![
                Entry {
                    path: "d".into(),
                    kind: EntryKind::Directory,
                },
                file("d/a", 2 * BS + BS / 2),
                file("d/b", BS),
            ],
            block_size: BS as u32,
        }
    }

    fn all() -> Vec<BlockRange> {
        vec![
            BlockRange {
                file: 1,
                first: 0,
                count: 3,
            },
            BlockRange {
                file: 2,
                first: 0,
                count: 1,
            },
        ]
    }

    /// Sends block `block` of `file` (`len` bytes) in two frames, then its
    /// value.
    fn block(order: &mut BlockOrder, file: u32, block: u64, len: u64) {
        let start = block * BS;
        order.data(file, start, len / 2).unwrap();
        order.data(file, start + len / 2, len - len / 2).unwrap();
        order.value(file, block).unwrap();
    }

    #[test]
    fn the_requested_blocks_in_order_complete_it() {
        let mut order = BlockOrder::new(&manifest(), &all());
        block(&mut order, 1, 0, BS);
        block(&mut order, 1, 1, BS);
        assert!(!order.is_complete());
        block(&mut order, 1, 2, BS / 2);
        block(&mut order, 2, 0, BS);
        assert!(order.is_complete());
        assert_eq!(order.data(2, 0, 1), Err(OrderError::BeyondRequest));
        assert_eq!(order.value(2, 0), Err(OrderError::BeyondRequest));
    }

    #[test]
    fn nothing_requested_is_complete_at_once() {
        assert!(BlockOrder::new(&manifest(), &[]).is_complete());
    }

    #[test]
    fn every_frame_out_of_order_is_refused() {
        let fresh = || BlockOrder::new(&manifest(), &all());
        // Reverse order: the last block first.
        assert!(matches!(
            fresh().data(2, 0, BS),
            Err(OrderError::OutOfOrder {
                expected_file: 1,
                expected_offset: 0,
                ..
            })
        ));
        // Another block that starts on a boundary.
        assert!(matches!(
            fresh().data(1, BS, 10),
            Err(OrderError::OutOfOrder { .. })
        ));
        // Interleaved: the next block before this one is finished.
        let mut order = fresh();
        order.data(1, 0, 10).unwrap();
        assert!(matches!(
            order.data(1, BS, 10),
            Err(OrderError::OutOfOrder { .. })
        ));
        // A gap, or a repeat, inside a block.
        assert!(matches!(
            order.data(1, 11, 10),
            Err(OrderError::OutOfOrder { .. })
        ));
        assert!(matches!(
            order.data(1, 0, 10),
            Err(OrderError::OutOfOrder { .. })
        ));
        // Running past the block.
        assert!(matches!(
            order.data(1, 10, BS),
            Err(OrderError::CrossesBlock { .. })
        ));
        // A value too early, or of another block.
        assert_eq!(
            order.value(1, 0),
            Err(OrderError::ValueBeforeData { file: 1, block: 0 })
        );
        order.data(1, 10, BS - 10).unwrap();
        assert!(matches!(
            order.value(1, 1),
            Err(OrderError::WrongValue { .. })
        ));
        // Data while the value is due.
        assert!(matches!(
            order.data(1, BS, 1),
            Err(OrderError::DataBeforeValue { .. })
        ));
        order.value(1, 0).unwrap();
        // The same value twice.
        assert!(matches!(
            order.value(1, 0),
            Err(OrderError::WrongValue { .. })
        ));
    }

    #[test]
    fn a_resume_request_starts_where_it_says() {
        let need = [BlockRange {
            file: 1,
            first: 2,
            count: 1,
        }];
        let mut order = BlockOrder::new(&manifest(), &need);
        assert!(matches!(
            order.data(1, 0, 10),
            Err(OrderError::OutOfOrder { .. })
        ));
        block(&mut order, 1, 2, BS / 2);
        assert!(order.is_complete());
    }
}
