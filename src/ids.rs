//! The short IDs users type: transfers, pairings and queued sends each get
//! eight random hex digits (`9cbf54a5`), and any unique prefix of one
//! names it (`share accept 9cb`).
//!
//! Eight digits are plenty for the few hundred entries a table holds; a
//! new ID is drawn again in the rare case it is taken. Lookup is one rule
//! for every table: case and surrounding spaces do not matter, an exact ID
//! always wins, an empty prefix matches nothing, and a prefix shared by
//! several IDs is an error that says to type more.

use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh random ID (8 lower-case hex digits).
pub fn random_id() -> String {
    let mut bytes = [0u8; 4];
    // The system RNG does not fail on Linux; if it ever did, IDs would
    // still be unique enough for a table of this size.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        bytes = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            .to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random ID for which `taken` is false.
pub fn unused_id(taken: impl Fn(&str) -> bool) -> String {
    loop {
        let id = random_id();
        if !taken(&id) {
            return id;
        }
    }
}

/// Why a prefix names no single ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// No ID starts with it (or it is empty). Holds the prefix as typed
    /// (trimmed, lower-case).
    #[error("no ID starts with {0}")]
    NotFound(String),
    /// Several IDs start with it.
    #[error("{0} matches several IDs")]
    Ambiguous(String),
}

/// The one ID among `ids` that `prefix` names.
pub fn find_by_prefix<'a>(
    ids: impl IntoIterator<Item = &'a str>,
    prefix: &str,
) -> Result<&'a str, PrefixError> {
    let prefix = prefix.trim().to_ascii_lowercase();
    let mut found = None;
    let mut several = false;
    for id in ids {
        if id == prefix {
            return Ok(id);
        }
        if !prefix.is_empty() && id.starts_with(&prefix) {
            several |= found.is_some();
            found = Some(id);
        }
    }
    match found {
        Some(_) if several => Err(PrefixError::Ambiguous(prefix)),
        Some(id) => Ok(id),
        None => Err(PrefixError::NotFound(prefix)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_eight_hex_digits_and_differ() {
        let a = random_id();
        assert_eq!(a.len(), 8);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, random_id());
        assert_ne!(unused_id(|id| id == a), a);
    }

    #[test]
    fn prefixes_name_one_id() {
        let ids = ["9cbf54a5", "9cb00000", "12345678"];
        assert_eq!(find_by_prefix(ids, "1"), Ok("12345678"));
        assert_eq!(find_by_prefix(ids, " 9CBF "), Ok("9cbf54a5"));
        assert_eq!(
            find_by_prefix(ids, "9cb"),
            Err(PrefixError::Ambiguous("9cb".into()))
        );
        assert_eq!(
            find_by_prefix(ids, "ff"),
            Err(PrefixError::NotFound("ff".into()))
        );
        assert_eq!(
            find_by_prefix(ids, "  "),
            Err(PrefixError::NotFound(String::new()))
        );
        // An exact ID wins even when it is also a prefix of another.
        assert_eq!(find_by_prefix(["abc", "abcd"], "abc"), Ok("abc"));
    }
}
