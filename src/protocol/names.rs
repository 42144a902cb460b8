//! When two names are the same name (PROTOCOL.md §6.1): two paths in one
//! offer, a file and a directory it would have to be, or a peer's `Hello`
//! name and a trusted device's.
//!
//! Names are compared after [`fold`]: the Unicode NFC form, then each
//! character's lowercase mapping (its `Lowercase_Mapping` property, as
//! `char::to_lowercase` gives it). The mapping is per character, with no
//! context rule (no Final_Sigma), so any implementation gets the same
//! result from a table lookup: `ΣΑΣ` and `σασ` are the same name, `σας`
//! (with a final sigma, another letter) is not. The tables are those of
//! Unicode 16.0 or later (the reference's case mapping is its Rust
//! toolchain's); characters assigned after 16.0 may compare differently
//! between implementations.

use unicode_normalization::UnicodeNormalization;

/// The form two names are compared in: NFC, then lowercase character by
/// character.
pub fn fold(name: &str) -> String {
    name.nfc().flat_map(char::to_lowercase).collect()
}

/// Whether `a` and `b` are the same name (see the module docs).
pub fn same_name(a: &str, b: &str) -> bool {
    fold(a) == fold(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_normalisation_do_not_make_another_name() {
        for (a, b) in [
            ("A.txt", "a.txt"),
            ("ÉTÉ", "été"),
            ("caf\u{e9}", "cafe\u{301}"),
            ("ΣΑΣ", "σασ"),
            ("\u{212a}elvin", "kelvin"), // KELVIN SIGN is K after NFC
            ("STRASSE", "strasse"),
        ] {
            assert!(same_name(a, b), "{a:?} / {b:?}");
        }
    }

    #[test]
    fn other_letters_make_another_name() {
        for (a, b) in [
            ("σας", "σασ"),        // final sigma is a letter of its own
            ("straße", "strasse"), // no case folding beyond lowercase
            ("İ", "i"),            // lowercases to i + combining dot
            ("a", "ａ"),           // full width: compatibility, not canonical
            ("laptop", "laptop "),
        ] {
            assert!(!same_name(a, b), "{a:?} / {b:?}");
        }
    }
}
