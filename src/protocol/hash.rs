//! Block hashes as BLAKE3 subtree chaining values.
//!
//! BLAKE3 is a Merkle tree over 1 KiB chunks. A block of a power-of-two
//! size starting at a multiple of that size is a complete subtree, and its
//! *chaining value* (a non-root hash) can be computed on its own. The
//! sender sends exactly these values, each right after its block's data
//! (`BlockValue`), so:
//!
//! * each block is verified the moment it lands, independently of the
//!   others (what resume needs), and
//! * the whole-file hash — plain `blake3::hash(file)` — follows from the
//!   block values by merging them up the tree, without reading the file a
//!   second time.
//!
//! A file that fits in one block has no parent nodes; its single block
//! value is the root hash itself, i.e. the file hash.

use blake3::hazmat::{ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root};

/// Incremental hash of one block of a file.
#[derive(Debug, Clone)]
pub struct BlockHasher {
    hasher: blake3::Hasher,
    /// The file is a single block: its value is the root hash.
    root: bool,
}

impl BlockHasher {
    /// A hasher for block `block` of a `file_size`-byte file cut into
    /// `block_size` blocks (a power of two of at least 1 KiB).
    pub fn new(file_size: u64, block_size: u32, block: u64) -> Self {
        let block_size = u64::from(block_size);
        let root = file_size <= block_size;
        let mut hasher = blake3::Hasher::new();
        if !root {
            hasher.set_input_offset(block * block_size);
        }
        Self { hasher, root }
    }

    /// Feeds the next bytes of the block.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    /// The block's value for the offer's block list.
    pub fn finalize(&self) -> [u8; 32] {
        if self.root {
            *self.hasher.finalize().as_bytes()
        } else {
            self.hasher.finalize_non_root()
        }
    }
}

/// The value of one whole block (see [`BlockHasher`]).
pub fn block_hash(data: &[u8], file_size: u64, block_size: u32, block: u64) -> [u8; 32] {
    let mut hasher = BlockHasher::new(file_size, block_size, block);
    hasher.update(data);
    hasher.finalize()
}

/// The BLAKE3 hash of a whole file, from its block values. `None` if the
/// number of values does not fit `file_size` and `block_size`.
pub fn file_hash(blocks: &[[u8; 32]], file_size: u64, block_size: u32) -> Option<[u8; 32]> {
    let bs = u64::from(block_size);
    if bs < 1024 || !bs.is_power_of_two() || blocks.len() as u64 != file_size.div_ceil(bs) {
        return None;
    }
    match blocks {
        [] => Some(*blake3::hash(b"").as_bytes()),
        [only] => Some(*only),
        _ => {
            let left_len = left_subtree_len(file_size);
            let split = usize::try_from(left_len / bs).ok()?;
            let (left, right) = blocks.split_at(split);
            let left = subtree(left, left_len, bs);
            let right = subtree(right, file_size - left_len, bs);
            Some(*blake3::hazmat::merge_subtrees_root(&left, &right, Mode::Hash).as_bytes())
        }
    }
}

/// Chaining value of the subtree over `len` bytes made of `blocks`.
/// BLAKE3 splits a subtree at the largest power of two below its length,
/// which is a whole number of blocks once the subtree exceeds one block.
fn subtree(blocks: &[[u8; 32]], len: u64, bs: u64) -> ChainingValue {
    if len <= bs || blocks.len() < 2 {
        return blocks[0];
    }
    let left_len = left_subtree_len(len);
    let split = (left_len / bs) as usize;
    let (left, right) = blocks.split_at(split);
    merge_subtrees_non_root(
        &subtree(left, left_len, bs),
        &subtree(right, len - left_len, bs),
        Mode::Hash,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    fn blocks_of(data: &[u8], bs: u32) -> Vec<[u8; 32]> {
        data.chunks(bs as usize)
            .enumerate()
            .map(|(i, b)| block_hash(b, data.len() as u64, bs, i as u64))
            .collect()
    }

    #[test]
    fn file_hash_from_blocks_equals_plain_blake3() {
        let bs = 1 << 16;
        let b = bs as usize;
        for len in [
            0,
            1,
            1000,
            b - 1,
            b,
            b + 1,
            2 * b,
            3 * b + 100,
            5 * b,
            8 * b,
            9 * b - 3,
        ] {
            let d = data(len);
            let blocks = blocks_of(&d, bs);
            assert_eq!(
                file_hash(&blocks, len as u64, bs),
                Some(*blake3::hash(&d).as_bytes()),
                "length {len}"
            );
        }
    }

    #[test]
    fn single_block_value_is_the_file_hash_and_blocks_are_position_bound() {
        let d = data(5000);
        assert_eq!(
            block_hash(&d, 5000, 1 << 16, 0),
            *blake3::hash(&d).as_bytes()
        );
        // The same bytes at another position have another value.
        let two = data(1 << 17);
        let first = &two[..1 << 16];
        assert_ne!(
            block_hash(first, 1 << 17, 1 << 16, 0),
            block_hash(first, 1 << 17, 1 << 16, 1)
        );
    }

    #[test]
    fn inconsistent_block_counts_are_refused() {
        assert_eq!(file_hash(&[[0; 32]], 0, 1 << 16), None);
        assert_eq!(file_hash(&[[0; 32]], (1 << 16) + 1, 1 << 16), None);
        assert_eq!(file_hash(&[], 1, 1 << 16), None);
        assert_eq!(file_hash(&[[0; 32]], 1, 1000), None);
    }
}
