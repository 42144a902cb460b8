//! Counts per key, for the bounds on what peers may hold at once
//! (handshakes per address, connections per device, waiting offers).

use std::collections::HashMap;
use std::hash::Hash;

/// How many of something each key holds; keys at zero are not stored, so
/// the table never outgrows what is held.
#[derive(Debug)]
pub struct Tally<K> {
    counts: HashMap<K, usize>,
}

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Self {
            counts: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> Tally<K> {
    /// What `key` holds.
    pub fn get(&self, key: &K) -> usize {
        self.counts.get(key).copied().unwrap_or(0)
    }

    /// One more for `key`.
    pub fn add(&mut self, key: K) {
        *self.counts.entry(key).or_default() += 1;
    }

    /// One fewer for `key` (nothing if it holds none).
    pub fn sub(&mut self, key: &K) {
        if let Some(count) = self.counts.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(key);
            }
        }
    }

    /// Whether no key holds anything.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_at_zero_are_forgotten() {
        let mut tally = Tally::default();
        tally.add("a");
        tally.add("a");
        tally.sub(&"a");
        assert_eq!(tally.get(&"a"), 1);
        tally.sub(&"a");
        tally.sub(&"a");
        assert_eq!(tally.get(&"a"), 0);
        assert!(tally.is_empty());
    }
}
