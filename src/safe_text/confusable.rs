//! Names that look alike: `dеsktop` with a Cyrillic `е`, `ｄｅｓｋｔｏｐ` in
//! full-width letters, `deskt0p`, `Iaptop` with a capital I.
//!
//! Cleaning already removes what is invisible (a trailing space, a
//! zero-width character), so `desktop\u{200b}` *is* `desktop` and meets
//! the impostor check. What stays are printable characters that merely
//! look like others; they are real text (a Russian user's device is
//! called in Cyrillic), so they are not removed but compared by their
//! [`skeleton`]: two names are confusable when their skeletons are
//! equal. A stranger whose name is confusable with a trusted device's is
//! flagged wherever it is shown.
//!
//! The skeleton is Unicode's (UTS #39, "Confusable Detection", with its
//! confusables table) of the NFKC form (which folds full-width and other
//! compatibility forms), taken both before and after lower-casing, since
//! names compare case-insensitively: `DЕSKTOP` (Cyrillic `Е`) and `Desktop`
//! fold to the same key, and so do `Iaptop` and `laptop`.

use unicode_normalization::UnicodeNormalization;

/// The key two names share when they look alike: NFKC, then the UTS #39
/// skeleton, lower-cased, then the skeleton again (so a letter whose
/// lower-case form has a prototype of its own folds too).
pub fn skeleton(name: &str) -> String {
    let compatible: String = name.nfkc().collect();
    let first: String = unicode_security::skeleton(&compatible).collect();
    unicode_security::skeleton(&first.to_lowercase()).collect()
}

/// Whether `a` and `b` could pass for each other on a screen (equal names
/// included, in any case).
pub fn confusable(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase() || skeleton(a) == skeleton(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safe_text::clean;

    #[test]
    fn look_alikes_share_a_skeleton() {
        let trusted = "desktop";
        for alike in [
            "desktop",
            "Desktop",
            "d\u{435}sktop",                                            // Cyrillic е
            "D\u{415}SKTOP",                                            // Cyrillic Е, upper case
            "\u{ff44}\u{ff45}\u{ff53}\u{ff4b}\u{ff54}\u{ff4f}\u{ff50}", // full-width
            "deskt0p",                                                  // zero for o
            "d\u{0435}skt\u{043e}p",                                    // Cyrillic е and о
            "\u{1d41d}esktop",                                          // mathematical bold d
        ] {
            assert!(confusable(alike, trusted), "{alike:?} vs {trusted:?}");
        }
        assert!(confusable("Iaptop", "laptop"), "capital I for l");
        assert!(confusable("rnacbook", "macbook"), "rn for m");
        assert!(
            confusable("\u{3a1}\u{397}\u{39f}\u{39d}\u{395}", "phone"),
            "Greek"
        );
    }

    #[test]
    fn invisible_differences_are_cleaned_before_any_comparison() {
        for raw in [
            "desktop ",
            " desktop",
            "desk\u{200b}top",
            "desktop\u{feff}",
            "desk\u{2060}top",
        ] {
            assert_eq!(clean(raw, 255), "desktop", "{raw:?}");
        }
    }

    #[test]
    fn different_names_are_not_confusable() {
        for other in [
            "desktop 2",
            "laptop",
            "desk",
            "nas",
            "d\u{e9}sktop",
            "Рабочий стол",
        ] {
            assert!(!confusable(other, "desktop"), "{other:?}");
        }
        assert!(!confusable("Anna's phone", "Anne's phone"));
    }
}
