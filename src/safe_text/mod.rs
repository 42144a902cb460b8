//! Text from peers and users, made safe to log and to show.
//!
//! A peer chooses its device name and the words of its `Reject` and
//! `Error` messages; a user of the system service chooses the reason of
//! `share reject --reason`. Such text can hold characters that act
//! instead of being read: a line feed forges a log line (followed by
//! `<0>`, a journal entry at priority emerg), an ANSI or OSC escape
//! rewrites the terminal that prints it, a bidirectional override makes
//! `gpj.exe` read as `exe.jpg`, and zero-width or other invisible
//! characters make two different names look the same. Two rules keep it
//! harmless:
//!
//! * **Cleaned once, where it enters.** The codec decodes names, reasons
//!   and messages into [`CleanText`], the handshake and discovery turn a
//!   device name into a [`PeerName`], and the control socket and the
//!   state files read them back through the same cleaner (their
//!   `Deserialize` cleans). Both types have a private field that only
//!   [`clean`] fills, so holding one proves the text was cleaned, and
//!   their `Display` is safe by construction. What cleaning does is
//!   documented at [`clean`] and [`is_hidden`]: line breaks and
//!   Unicode spaces become one space, control characters (C0, DEL, C1),
//!   default-ignorable characters (zero-width, bidirectional controls,
//!   variation selectors, tags, fillers) and interlinear annotations are
//!   removed, and the text is NFC with at most a few combining marks per
//!   character.
//! * **Escaped where it leaves.** Whatever else is written out (a local
//!   file name, an error that quotes input) passes [`printable`] on its
//!   way: every log field ([`log_fields`]) and every line the CLI prints
//!   for people. Escaping (`\n`, `\u{1b}`) rather than removing shows
//!   that something odd was there. JSON output needs neither: serde
//!   escapes control characters in strings.
//!
//! Printable characters that merely look alike (Cyrillic `е` for Latin
//! `e`) stay: they are real text. [`confusable`] tells when a name could
//! pass for another, so that a stranger named like a trusted device is
//! flagged wherever its name is shown.

mod chars;
pub mod confusable;
mod log;

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use chars::{MAX_MARKS, clean, is_hidden, printable, printable_lines};
pub use log::log_fields;

/// Longest [`CleanText`] made without an explicit bound, in bytes: the
/// protocol's limit for reasons and messages, and plenty for anything
/// shown on one line.
pub const MAX_TEXT_BYTES: usize = 1024;

/// Longest [`PeerName`], in bytes (the protocol's limit for a device
/// name in `Hello`).
pub const MAX_NAME_BYTES: usize = 255;

/// Text from a peer or a user, [cleaned](clean): one line, nothing
/// hidden, nothing a terminal or log would act on.
///
/// Made by [`CleanText::new`] (at most [`MAX_TEXT_BYTES`]),
/// [`CleanText::bounded`], `From<&str>`/`From<String>` (both clean), or
/// by deserialising a string (which cleans it).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CleanText(String);

impl CleanText {
    /// `raw` cleaned, at most [`MAX_TEXT_BYTES`].
    pub fn new(raw: &str) -> Self {
        Self::bounded(raw, MAX_TEXT_BYTES)
    }

    /// `raw` cleaned, at most `max_bytes`.
    pub fn bounded(raw: &str, max_bytes: usize) -> Self {
        Self(clean(raw, max_bytes))
    }

    /// The cleaned text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for CleanText {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// Hashes and compares like the `str` it holds, so `[CleanText]` can be
/// `join`ed and looked up by `&str`.
impl std::borrow::Borrow<str> for CleanText {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for CleanText {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CleanText {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<&str> for CleanText {
    fn from(raw: &str) -> Self {
        Self::new(raw)
    }
}

impl From<String> for CleanText {
    fn from(raw: String) -> Self {
        Self::new(&raw)
    }
}

impl fmt::Display for CleanText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for CleanText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for CleanText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CleanText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Ok(Self::new(&raw))
    }
}

/// A device name chosen by its device (its `Hello`, its mDNS instance,
/// its LocalSend alias), [cleaned](clean) and never empty: one that
/// cleans to nothing is replaced by a stand-in (the device's short ID
/// where it is known). Names are labels; devices are told apart by ID,
/// so wherever a name is shown its ID prefix is shown beside it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerName(CleanText);

impl PeerName {
    /// Stand-in for a stored name that cleans to nothing.
    const UNNAMED: &str = "(unnamed)";

    /// `raw` cleaned, at most [`MAX_NAME_BYTES`]; `fallback` (cleaned
    /// too) if nothing is left.
    pub fn new(raw: &str, fallback: &str) -> Self {
        let name = CleanText::bounded(raw, MAX_NAME_BYTES);
        if !name.is_empty() {
            return Self(name);
        }
        let fallback = CleanText::bounded(fallback, MAX_NAME_BYTES);
        if fallback.is_empty() {
            Self(CleanText(Self::UNNAMED.to_owned()))
        } else {
            Self(fallback)
        }
    }

    /// The cleaned name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as clean text.
    pub fn as_text(&self) -> &CleanText {
        &self.0
    }
}

impl From<&str> for PeerName {
    /// Cleans `raw`; a stand-in if nothing is left.
    fn from(raw: &str) -> Self {
        Self::new(raw, Self::UNNAMED)
    }
}

impl PartialEq<str> for PeerName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for PeerName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Deref for PeerName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for PeerName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PeerName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Ok(Self::new(&raw, Self::UNNAMED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cleaner_fills_the_types() {
        let reason = CleanText::from("no\n<0>forged\u{1b}[2J");
        assert_eq!(reason.as_str(), "no <0>forged[2J");
        assert_eq!(reason.to_string(), "no <0>forged[2J");
        let long = CleanText::from("x".repeat(5000));
        assert_eq!(long.len(), MAX_TEXT_BYTES);

        let name = PeerName::new("\u{1b}]0;evil\u{7}laptop ", "AXNNA454");
        assert_eq!(name.as_str(), "]0;evillaptop");
        assert_eq!(
            PeerName::new("\u{200b} \u{7}", "AXNNA454").as_str(),
            "AXNNA454"
        );
        assert_eq!(PeerName::new("", "\n").as_str(), "(unnamed)");
        assert_eq!(PeerName::new(&"n".repeat(300), "x").len(), MAX_NAME_BYTES);
    }

    #[test]
    fn deserialising_cleans() {
        let text: CleanText = serde_json::from_str(r#""a\nb\u001b[31m\u202e""#).unwrap();
        assert_eq!(text.as_str(), "a b[31m");
        let name: PeerName = serde_json::from_str(r#""\u200b""#).unwrap();
        assert_eq!(name.as_str(), "(unnamed)");
        let name: PeerName = serde_json::from_str(r#""desk\ttop""#).unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), r#""desk top""#);
    }

    #[test]
    fn display_pads_like_a_str() {
        let name = PeerName::new("ab", "x");
        assert_eq!(format!("[{name:5}]"), "[ab   ]");
    }
}
