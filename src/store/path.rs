//! Turning peer-supplied relative paths into names that are safe to create.
//!
//! Every path in an offer comes from the network and is treated as hostile.
//! This module is pure (no I/O) so that the rules can be tested exhaustively:
//!
//! * [`sanitize`] checks one path. It refuses only what is unsafe: anything
//!   that could escape the download directory (`..`, `.`, absolute paths,
//!   empty components), control characters (which act on terminals and
//!   logs instead of being read) and over-long paths. Every other name a
//!   Linux file system can hold is accepted: `meeting 10:30.txt`, `notes.`,
//!   `aux.c`, `con.h`, `a\b`. It NFC-normalises the result, because macOS
//!   peers send NFD and the same name must not turn into two different
//!   files.
//! * A name this receiver will not create as it is gets a **stored name**
//!   instead of a refusal ([`stored_name`]): one holding a bidirectional
//!   override or isolate character (which would disguise an extension in
//!   every file manager), a top-level name starting with the store's own
//!   [`RESERVED_PREFIX`], and a name longer than [`MAX_COMPONENT_BYTES`]
//!   bytes. The mapping is percent-encoding, so it is reversible by
//!   decoding every `%XX`; see [`stored_name`] for the exact rules.
//! * [`plan`] checks a whole manifest. It rejects duplicates, including ones
//!   that only differ in case ([`fold`]: the same name by PROTOCOL.md §6.1;
//!   they would clobber each other on a
//!   case-insensitive file system, or when the user copies them to one), a
//!   file used as a parent directory, and over-deep trees. It also lists
//!   every directory to create (including parents that the manifest only
//!   implies) and the distinct top-level names, which are what the store
//!   finally moves into the download directory.
//! * `numbered_name` derives the `name (1).ext` variants tried when a
//!   top-level name is already taken.
//!
//! The filesystem layer (`store::staging`) still resolves every path with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so these checks are the first of
//! two independent lines of defence, not the only one.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::fmt::Write as _;

use unicode_normalization::UnicodeNormalization;

use crate::protocol::names::fold;

use crate::protocol::{EntryKind, Manifest, heap_block};

/// Longest accepted relative path, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Longest stored path component, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Prefix of the store's own staging directories. A peer's top-level name
/// that starts with it is stored with its first `.` encoded (`%2E`), so
/// that nothing a peer sends can ever be mistaken for leftover staging
/// data.
pub const RESERVED_PREFIX: &str = ".lanshare-";

/// Why a peer-supplied path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path was the empty string.
    #[error("empty path in offer")]
    Empty,
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("path {path:?} is {len} bytes long; the limit is {MAX_PATH_BYTES}")]
    TooLong {
        /// The offending path.
        path: String,
        /// Its length in bytes.
        len: usize,
    },
    /// An empty, `.` or `..` component (this also catches absolute paths,
    /// `a//b` and a trailing `/`).
    #[error(
        "path {path:?} has an empty, \".\" or \"..\" component; only plain relative paths are accepted"
    )]
    BadComponent {
        /// The offending path.
        path: String,
    },
    /// A control character (C0, DEL or C1; NUL included).
    #[error("path {path:?} contains the control character {ch:?}")]
    ForbiddenChar {
        /// The offending path.
        path: String,
        /// The first forbidden character.
        ch: char,
    },
    /// Two entries are the same path by [`fold`] (NFC, case-insensitive).
    #[error(
        "paths {first:?} and {second:?} name the same file (after unicode normalisation and ignoring case)"
    )]
    Duplicate {
        /// The earlier entry (or implied parent directory).
        first: String,
        /// The later entry.
        second: String,
    },
    /// A file entry is also used as a directory.
    #[error("{file:?} is a file in the offer but {path:?} uses it as a directory")]
    FileAsParent {
        /// The file entry.
        file: String,
        /// The entry that needs it to be a directory.
        path: String,
    },
    /// More components than allowed.
    #[error("path {path:?} is {depth} levels deep; the limit is {max}")]
    TooDeep {
        /// The offending path.
        path: String,
        /// Its number of components.
        depth: usize,
        /// The configured limit.
        max: usize,
    },
}

/// A validated relative path: at least one component, each the name this
/// receiver creates ([`stored_name`] of the NFC-normalised name the peer
/// sent), plain and safe to create on Linux. Only [`sanitize`] builds one.
///
/// Kept as one string, the components joined with `/` (which no component
/// contains): a 100 000-entry offer is planned in a few MiB, where a
/// string per component cost over 40 (issue 14 item 2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SafePath {
    joined: Box<str>,
}

impl SafePath {
    /// The components, outermost first. Never empty.
    pub fn components(&self) -> std::str::Split<'_, char> {
        self.joined.split('/')
    }

    /// Number of components.
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// The first component: the name that lands in the download directory.
    pub fn top_level(&self) -> &str {
        self.components().next().unwrap_or_default()
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.joined.rsplit('/').next().unwrap_or_default()
    }

    /// The parent directory, joined with `/` (empty for a top-level name).
    pub fn parent(&self) -> &str {
        self.joined
            .rsplit_once('/')
            .map_or("", |(parent, _)| parent)
    }

    /// The path joined with `/`, for system calls relative to a directory fd.
    pub fn to_rel_string(&self) -> String {
        self.joined.to_string()
    }

    /// Bytes it holds on the heap (with the allocator's overhead).
    pub fn heap_bytes(&self) -> usize {
        heap_block(self.joined.len())
    }
}

impl fmt::Display for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined)
    }
}

/// Validates and NFC-normalises one '/'-separated relative path from a
/// peer, and maps each name to the name stored ([`stored_name`]).
///
/// # Errors
/// A [`PathError`] naming the path and the rule it breaks: only unsafe
/// paths are refused.
pub fn sanitize(rel: &str) -> Result<SafePath, PathError> {
    if rel.is_empty() {
        return Err(PathError::Empty);
    }
    check_len(rel)?;
    let nfc: String = rel.nfc().collect();
    // NFC can lengthen a few rare sequences, so check again.
    check_len(&nfc)?;
    let err_path = || rel.to_owned();
    let mut joined = String::with_capacity(nfc.len());
    for (i, c) in nfc.split('/').enumerate() {
        if c.is_empty() || c == "." || c == ".." {
            return Err(PathError::BadComponent { path: err_path() });
        }
        if let Some(ch) = c.chars().find(|ch| ch.is_control()) {
            return Err(PathError::ForbiddenChar {
                path: err_path(),
                ch,
            });
        }
        if i > 0 {
            joined.push('/');
        }
        joined.push_str(&stored_name(c, i == 0));
    }
    Ok(SafePath {
        joined: joined.into_boxed_str(),
    })
}

fn check_len(p: &str) -> Result<(), PathError> {
    if p.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong {
            path: p.to_owned(),
            len: p.len(),
        });
    }
    Ok(())
}

/// The bidirectional override and isolate characters, used to disguise
/// extensions (`photo\u{202E}gpj.exe` displays as `photoexe.jpg`). Linux
/// can hold them, but the receiver never writes them into a name.
fn is_disguising(ch: char) -> bool {
    ('\u{202A}'..='\u{202E}').contains(&ch) || ('\u{2066}'..='\u{2069}').contains(&ch)
}

/// Whether `name` holds a `%` followed by two hex digits: such a name is
/// encoded too, so that decoding a stored name is always right.
fn has_escape(name: &str) -> bool {
    name.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// The name stored for one (NFC, control-free) name `name` sent by a
/// peer; `top` for the first component of a path.
///
/// A name is stored as it is unless it holds a bidirectional override or
/// isolate character (U+202A–U+202E, U+2066–U+2069), holds a `%` followed
/// by two hex digits, starts with [`RESERVED_PREFIX`] at top level, or is
/// longer than [`MAX_COMPONENT_BYTES`] bytes. Such a name is
/// **percent-encoded**: each byte of the UTF-8 of each bidirectional
/// character, each `%`, and the leading `.` of a reserved top-level name
/// become `%XX` (upper-case hex). Decoding every `%XX` of a stored name
/// gives back the name sent; a name stored as it is holds no `%XX`, so
/// decoding leaves it alone. A result still over the limit is cut at a
/// character boundary and ends in `~` and 16 hex digits of the BLAKE3 hash
/// of the name sent (only this last case loses information; the receiver
/// logs both names).
pub fn stored_name(name: &str, top: bool) -> Cow<'_, str> {
    let reserved = top && name.starts_with(RESERVED_PREFIX);
    if !reserved
        && name.len() <= MAX_COMPONENT_BYTES
        && !has_escape(name)
        && !name.chars().any(is_disguising)
    {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for (i, ch) in name.char_indices() {
        if ch == '%' || is_disguising(ch) || (reserved && i == 0) {
            let mut utf8 = [0u8; 4];
            for b in ch.encode_utf8(&mut utf8).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(ch);
        }
    }
    if out.len() <= MAX_COMPONENT_BYTES {
        return Cow::Owned(out);
    }
    let hash = blake3::hash(name.as_bytes());
    let tail = format!("~{}", &hash.to_hex()[..16]);
    let mut cut = MAX_COMPONENT_BYTES - tail.len();
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    out.truncate(cut);
    out.push_str(&tail);
    Cow::Owned(out)
}

/// One manifest entry after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEntry {
    /// The sanitised path.
    pub path: SafePath,
    /// Directory, or file with size and version tag, as offered.
    pub kind: EntryKind,
}

/// A distinct first component of the offer: what finally appears in the
/// download directory (possibly renamed to `name (1)` on collision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopLevel {
    /// The stored name ([`stored_name`] of the NFC-normalised name).
    pub name: String,
    /// Whether it is a directory (explicit or implied) rather than a file.
    pub is_dir: bool,
}

/// A manifest that passed every check, ready to be staged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    entries: Vec<PlannedEntry>,
    directories: Vec<SafePath>,
    top_level: Vec<TopLevel>,
}

impl Plan {
    /// One item per manifest entry, in manifest order (so indices match).
    pub fn entries(&self) -> &[PlannedEntry] {
        &self.entries
    }

    /// Every directory to create, explicit or implied, parents first.
    pub fn directories(&self) -> &[SafePath] {
        &self.directories
    }

    /// The distinct top-level names, in order of first appearance.
    pub fn top_level(&self) -> &[TopLevel] {
        &self.top_level
    }

    /// Bytes it holds on the heap (with the allocator's overhead).
    pub fn heap_bytes(&self) -> usize {
        let arrays = heap_block(self.entries.capacity() * size_of::<PlannedEntry>())
            + heap_block(self.directories.capacity() * size_of::<SafePath>())
            + heap_block(self.top_level.capacity() * size_of::<TopLevel>());
        let paths: usize = self.entries.iter().map(|e| e.path.heap_bytes()).sum();
        let directories: usize = self.directories.iter().map(SafePath::heap_bytes).sum();
        let names: usize = self
            .top_level
            .iter()
            .map(|t| heap_block(t.name.len()))
            .sum();
        arrays + paths + directories + names
    }
}

/// What the planner knows about one path (explicit or implied).
#[derive(Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    File,
    Dir { explicit: bool },
}

struct Node {
    /// The whole stored path, for error messages.
    path: String,
    kind: NodeKind,
}

/// Validates a whole manifest; see the module docs for the rules.
///
/// Runs in time linear in the total size of the manifest: paths are stored
/// as a tree keyed by (parent node, [`fold`]ed component), so a hostile
/// offer of many deep paths cannot make it quadratic.
///
/// # Errors
/// The first [`PathError`] found, in manifest order.
pub fn plan(manifest: &Manifest, max_depth: usize) -> Result<Plan, PathError> {
    let mut nodes: Vec<Node> = Vec::new();
    // (parent node index or usize::MAX for the root, folded component) -> node index
    let mut index: HashMap<(usize, String), usize> = HashMap::new();
    let mut entries = Vec::with_capacity(manifest.entries.len());
    let mut directories = Vec::new();
    let mut top_level: Vec<TopLevel> = Vec::new();

    for entry in &manifest.entries {
        let path = sanitize(&entry.path)?;
        if path.depth() > max_depth {
            return Err(PathError::TooDeep {
                path: entry.path.clone(),
                depth: path.depth(),
                max: max_depth,
            });
        }
        let full = path.to_rel_string();
        let last = path.depth() - 1;
        let mut parent = usize::MAX;
        let mut prefix_len = 0;
        for (i, c) in path.components().enumerate() {
            prefix_len += if i == 0 { c.len() } else { c.len() + 1 };
            let prefix = &full[..prefix_len];
            let is_last = i == last;
            let wanted = match (&entry.kind, is_last) {
                (EntryKind::File { .. }, true) => NodeKind::File,
                (EntryKind::Directory, true) => NodeKind::Dir { explicit: true },
                (_, false) => NodeKind::Dir { explicit: false },
            };
            let slot = index.entry((parent, fold(c)));
            let id = match slot {
                MapEntry::Vacant(v) => {
                    let id = nodes.len();
                    nodes.push(Node {
                        path: prefix.to_owned(),
                        kind: wanted,
                    });
                    v.insert(id);
                    if matches!(wanted, NodeKind::Dir { .. }) {
                        directories.push(SafePath {
                            joined: prefix.into(),
                        });
                    }
                    if i == 0 {
                        top_level.push(TopLevel {
                            name: c.to_owned(),
                            is_dir: wanted != NodeKind::File,
                        });
                    }
                    id
                }
                MapEntry::Occupied(o) => {
                    let id = *o.get();
                    let node = &mut nodes[id];
                    if node.path != prefix {
                        return Err(PathError::Duplicate {
                            first: node.path.clone(),
                            second: entry.path.clone(),
                        });
                    }
                    match (node.kind, wanted) {
                        (NodeKind::File, NodeKind::Dir { explicit: false }) => {
                            return Err(PathError::FileAsParent {
                                file: node.path.clone(),
                                path: entry.path.clone(),
                            });
                        }
                        (NodeKind::Dir { explicit: false }, NodeKind::File) => {
                            return Err(PathError::FileAsParent {
                                file: entry.path.clone(),
                                path: node.path.clone(),
                            });
                        }
                        (NodeKind::Dir { explicit: false }, NodeKind::Dir { explicit: true }) => {
                            node.kind = wanted;
                        }
                        (NodeKind::Dir { .. }, NodeKind::Dir { explicit: false }) => {}
                        _ => {
                            return Err(PathError::Duplicate {
                                first: node.path.clone(),
                                second: entry.path.clone(),
                            });
                        }
                    }
                    id
                }
            };
            parent = id;
        }
        entries.push(PlannedEntry {
            path,
            kind: entry.kind.clone(),
        });
    }
    Ok(Plan {
        entries,
        directories,
        top_level,
    })
}

/// `name` for `n == 0`, else `name (n)` with the suffix before the last
/// extension of a file (`photo.jpg` -> `photo (1).jpg`, `.bashrc` ->
/// `.bashrc (1)`, `archive.tar.gz` -> `archive.tar (1).gz`), shortening the
/// stem so the result stays within [`MAX_COMPONENT_BYTES`] bytes.
pub fn numbered_name(name: &str, n: u32, is_dir: bool) -> String {
    if n == 0 {
        return name.to_owned();
    }
    let suffix = format!(" ({n})");
    let (stem, ext) = match name.rfind('.') {
        Some(dot)
            if !is_dir && dot > 0 && name.len() - dot + suffix.len() < MAX_COMPONENT_BYTES =>
        {
            name.split_at(dot)
        }
        _ => (name, ""),
    };
    let mut budget = MAX_COMPONENT_BYTES - suffix.len() - ext.len();
    while budget < stem.len() && !stem.is_char_boundary(budget) {
        budget -= 1;
    }
    let stem = &stem[..budget.min(stem.len())];
    format!("{stem}{suffix}{ext}")
}

/// Decodes every `%XX` of a stored name: the inverse of [`stored_name`]
/// (for names it did not have to cut).
#[cfg(test)]
fn decode_stored(stored: &str) -> String {
    let b = stored.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = stored.get(i + 1..i + 3);
        if b[i] == b'%'
            && let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Entry;

    fn file(path: &str) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: EntryKind::File {
                size: 0,
                tag: [0; 32],
            },
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: EntryKind::Directory,
        }
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        Manifest {
            entries,
            ..Manifest::default()
        }
    }

    #[test]
    fn sanitize_accepts_plain_paths() {
        let p = sanitize("docs/report.pdf").unwrap();
        assert_eq!(p.components().collect::<Vec<_>>(), ["docs", "report.pdf"]);
        assert_eq!(p.top_level(), "docs");
        assert_eq!(p.file_name(), "report.pdf");
        assert_eq!(p.parent(), "docs");
        assert_eq!(p.to_string(), "docs/report.pdf");
        assert!(sanitize(".hidden").is_ok());
        assert!(sanitize("a b/c d.txt").is_ok());
        assert!(sanitize("CONSOLE.txt").is_ok());
        assert!(sanitize("COM10").is_ok());
        assert!(sanitize("日本語/ファイル.txt").is_ok());
    }

    /// Ordinary Linux names that Windows rules refused arrive unchanged.
    #[test]
    fn sanitize_keeps_every_name_linux_can_hold() {
        for name in [
            "meeting 10:30.txt",
            "notes.",
            "aux.c",
            "con.h",
            "CON",
            "nul.txt",
            "trailing ",
            "dir./x",
            "back\\slash",
            "C:x",
            "100%.txt",
            "what?*<>|\"",
        ] {
            let p = sanitize(name).unwrap_or_else(|e| panic!("{name:?} refused: {e}"));
            assert_eq!(p.to_rel_string(), name);
        }
        let max = "é".repeat(127) + "x";
        assert_eq!(sanitize(&max).unwrap().file_name(), max);
    }

    #[test]
    fn sanitize_rejects_unsafe_paths() {
        let long_path = format!("{}/{}", "a".repeat(2048), "b".repeat(2048));
        assert_eq!(long_path.len(), 4097);
        let cases = [
            "../x",
            "/etc/x",
            "a/./b",
            "a/../../x",
            "..",
            ".",
            "x\0y",
            "x\ny",
            "x\u{7f}y",
            "x\u{85}y",
            "",
            "a//b",
            "a/",
            long_path.as_str(),
        ];
        for case in cases {
            assert!(sanitize(case).is_err(), "{case:?} was accepted");
        }
        let max_path = vec!["a".repeat(255); 16].join("/");
        assert_eq!(max_path.len(), 4095);
        assert!(sanitize(&max_path).is_ok());
    }

    /// Names the receiver will not create as they are get a stored name
    /// that decodes back to the name sent.
    #[test]
    fn names_the_receiver_will_not_hold_are_mapped_reversibly() {
        let cases = [
            ("photo\u{202E}gpj.exe", "photo%E2%80%AEgpj.exe"),
            ("a\u{2066}b", "a%E2%81%A6b"),
            ("web%20page.html", "web%2520page.html"),
            ("50%25 off\u{202A}", "50%2525 off%E2%80%AA"),
        ];
        for (sent, stored) in cases {
            let p = sanitize(&format!("d/{sent}")).unwrap();
            assert_eq!(p.file_name(), stored);
            assert_eq!(decode_stored(stored), sent);
        }
        // The staging prefix only at top level.
        let p = sanitize(".lanshare-0123.part/x").unwrap();
        assert_eq!(p.top_level(), "%2Elanshare-0123.part");
        assert_eq!(decode_stored(p.top_level()), ".lanshare-0123.part");
        assert_eq!(
            sanitize("d/.lanshare-x").unwrap().file_name(),
            ".lanshare-x"
        );
        // `%` without two hex digits after it needs nothing.
        assert_eq!(sanitize("100%.txt").unwrap().file_name(), "100%.txt");
        assert_eq!(sanitize("%zz").unwrap().file_name(), "%zz");
    }

    /// A name over 255 bytes (from another implementation, from NFC, or
    /// from the encoding itself) is cut to fit with a hash of the name
    /// sent, so two long names stay apart.
    #[test]
    fn names_over_the_limit_are_shortened_apart() {
        let a = "a".repeat(300);
        let b = "a".repeat(301);
        let sa = stored_name(&a, false);
        let sb = stored_name(&b, false);
        assert!(sa.len() <= MAX_COMPONENT_BYTES && sb.len() <= MAX_COMPONENT_BYTES);
        assert_ne!(sa, sb);
        assert!(sa.starts_with(&"a".repeat(200)), "{sa}");
        // 250 bytes, but its bidi character takes 9 once encoded.
        let edge = "é".repeat(123) + "\u{202E}x";
        let s = stored_name(&edge, false);
        assert!(s.len() <= MAX_COMPONENT_BYTES, "{}", s.len());
        assert!(s.is_char_boundary(s.len()));
        // NFC makes U+0958 longer: a 255-byte NFD name can grow past the limit.
        let grows = "\u{0958}".repeat(85);
        assert_eq!(grows.len(), 255);
        let p = sanitize(&grows).unwrap();
        assert!(p.file_name().len() <= MAX_COMPONENT_BYTES);
    }

    #[test]
    fn sanitize_normalises_to_nfc() {
        let p = sanitize("cafe\u{301}.txt").unwrap();
        assert_eq!(p.file_name(), "café.txt");
        assert_eq!(p.file_name(), "caf\u{e9}.txt");
    }

    #[test]
    fn errors_name_the_path_with_escapes() {
        let e = sanitize("x\0y").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(r#""x\0y""#), "{msg}");
        assert!(msg.starts_with("path"), "{msg}");
        assert_eq!(sanitize("").unwrap_err(), PathError::Empty);
    }

    #[test]
    fn plan_lists_entries_directories_and_top_level() {
        let m = manifest(vec![
            file("top.txt"),
            file("photos/2024/a.jpg"),
            dir("photos"),
            dir("empty"),
            file("photos/b.jpg"),
        ]);
        let plan = plan(&m, 8).unwrap();
        assert_eq!(plan.entries().len(), 5);
        assert_eq!(plan.entries()[1].path.to_string(), "photos/2024/a.jpg");
        let dirs: Vec<String> = plan.directories().iter().map(|d| d.to_string()).collect();
        assert_eq!(dirs, ["photos", "photos/2024", "empty"]);
        let top: Vec<(&str, bool)> = plan
            .top_level()
            .iter()
            .map(|t| (t.name.as_str(), t.is_dir))
            .collect();
        assert_eq!(top, [("top.txt", false), ("photos", true), ("empty", true)]);
    }

    #[test]
    fn plan_rejects_duplicates() {
        let dup = plan(&manifest(vec![file("a/x"), file("a/x")]), 8);
        assert!(matches!(dup, Err(PathError::Duplicate { .. })), "{dup:?}");
        let dup = plan(&manifest(vec![dir("a"), dir("a")]), 8);
        assert!(matches!(dup, Err(PathError::Duplicate { .. })), "{dup:?}");
        let case = plan(&manifest(vec![file("A.txt"), file("a.txt")]), 8);
        assert!(matches!(case, Err(PathError::Duplicate { .. })), "{case:?}");
        // Case beyond ASCII, per character (PROTOCOL.md §6.1).
        for (a, b) in [("ÉTÉ", "été"), ("ΣΑΣ", "σασ"), ("\u{212a}", "k")] {
            let case = plan(&manifest(vec![file(a), file(b)]), 8);
            assert!(
                matches!(case, Err(PathError::Duplicate { .. })),
                "{a} {b}: {case:?}"
            );
        }
        // Another letter is another name.
        assert!(plan(&manifest(vec![file("σας"), file("σασ")]), 8).is_ok());
        // Case collision between an implied parent and an explicit directory.
        let case = plan(&manifest(vec![file("Dir/x"), dir("dir")]), 8);
        assert!(matches!(case, Err(PathError::Duplicate { .. })), "{case:?}");
        let case = plan(&manifest(vec![file("Dir/x"), file("dir/y")]), 8);
        assert!(matches!(case, Err(PathError::Duplicate { .. })), "{case:?}");
        let nfd = plan(
            &manifest(vec![file("caf\u{e9}.txt"), file("cafe\u{301}.txt")]),
            8,
        );
        assert!(matches!(nfd, Err(PathError::Duplicate { .. })), "{nfd:?}");
        let msg = nfd.unwrap_err().to_string();
        assert!(msg.contains("café.txt"), "{msg}");
    }

    #[test]
    fn plan_rejects_file_as_parent() {
        for m in [
            vec![file("a"), file("a/b")],
            vec![file("a/b"), file("a")],
            vec![file("a"), dir("a/b")],
            vec![dir("a"), file("a")],
        ] {
            let r = plan(&manifest(m.clone()), 8);
            assert!(
                matches!(
                    r,
                    Err(PathError::FileAsParent { .. } | PathError::Duplicate { .. })
                ),
                "{m:?}: {r:?}"
            );
        }
        let r = plan(&manifest(vec![file("a"), file("a/b")]), 8);
        assert_eq!(
            r.unwrap_err(),
            PathError::FileAsParent {
                file: "a".into(),
                path: "a/b".into()
            }
        );
    }

    #[test]
    fn plan_enforces_depth_limit() {
        assert!(plan(&manifest(vec![file("a/b/c")]), 3).is_ok());
        let r = plan(&manifest(vec![file("a/b/c/d")]), 3);
        assert!(
            matches!(
                r,
                Err(PathError::TooDeep {
                    depth: 4,
                    max: 3,
                    ..
                })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn plan_implies_parents_and_accepts_explicit_after_implied() {
        let plan = plan(&manifest(vec![file("a/b/c.txt"), dir("a/b"), dir("a")]), 8).unwrap();
        let dirs: Vec<String> = plan.directories().iter().map(|d| d.to_string()).collect();
        assert_eq!(dirs, ["a", "a/b"]);
        assert_eq!(plan.top_level().len(), 1);
    }

    #[test]
    fn plan_maps_reserved_prefix_and_rejects_bad_paths() {
        let p = plan(&manifest(vec![dir(".lanshare-0123.part")]), 8).unwrap();
        assert_eq!(p.top_level()[0].name, "%2Elanshare-0123.part");
        // Only at top level.
        let p = plan(&manifest(vec![file("d/.lanshare-x")]), 8).unwrap();
        assert_eq!(p.entries()[0].path.to_string(), "d/.lanshare-x");
        let r = plan(&manifest(vec![file("ok"), file("../x")]), 8);
        assert!(matches!(r, Err(PathError::BadComponent { .. })), "{r:?}");
    }

    #[test]
    fn numbered_names() {
        assert_eq!(numbered_name("photo.jpg", 0, false), "photo.jpg");
        assert_eq!(numbered_name("photo.jpg", 1, false), "photo (1).jpg");
        assert_eq!(
            numbered_name("archive.tar.gz", 2, false),
            "archive.tar (2).gz"
        );
        assert_eq!(numbered_name(".bashrc", 1, false), ".bashrc (1)");
        assert_eq!(numbered_name("noext", 3, false), "noext (3)");
        assert_eq!(numbered_name("my.folder", 1, true), "my.folder (1)");
        let long = format!("{}.txt", "é".repeat(125)); // 254 bytes
        let n = numbered_name(&long, 12, false);
        assert!(
            n.len() <= MAX_COMPONENT_BYTES && n.ends_with(" (12).txt"),
            "{n}"
        );
        let long_ext = format!("a.{}", "x".repeat(252));
        let n = numbered_name(&long_ext, 1, false);
        assert!(n.len() <= MAX_COMPONENT_BYTES && n.ends_with(" (1)"), "{n}");
    }
}

/// Property tests: arbitrary (hostile) manifests through the receiver's
/// checks. Whatever a peer sends, [`Manifest::validate`] and [`plan`] must
/// not panic, and every plan they let through must only name plain,
/// relative, printable paths inside the download directory.
#[cfg(test)]
mod proptests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;
    use crate::protocol::{Entry, ManifestLimits};

    /// Path pieces an attacker (or a strange file system) might send.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            60 => "[a-zA-Z0-9 _.-]{1,12}",
            1 => Just(".".to_owned()),
            1 => Just("..".to_owned()),
            1 => Just(String::new()),
            1 => Just("\0".to_owned()),
            1 => Just("a\0b".to_owned()),
            1 => "[\\x00-\\x1F\\x7F-\\x{9F}]{1,3}",
            1 => Just("\u{202e}gpj.exe".to_owned()),
            1 => Just("\\..\\".to_owned()),
            1 => Just("C:".to_owned()),
            1 => Just("CON".to_owned()),
            1 => Just("nul.txt".to_owned()),
            1 => Just(".lanshare-x.part".to_owned()),
            1 => Just("caf\u{e9}".to_owned()),
            1 => Just("cafe\u{301}".to_owned()),
            1 => Just("CAF\u{c9}".to_owned()),
            1 => Just("日本語 ☀".to_owned()),
            1 => Just("trailing. ".to_owned()),
            1 => "\\PC{1,8}",
            1 => (1usize..300).prop_map(|n| "x".repeat(n)),
        ]
    }

    /// A path: pieces joined by `/`, sometimes absolute or with a stray
    /// separator, sometimes a completely arbitrary string.
    fn path() -> impl Strategy<Value = String> {
        prop_oneof![
            12 => (0u8..20, prop::collection::vec(piece(), 1..5))
                .prop_map(|(odd, pieces)| {
                    let mut p = pieces.join("/");
                    match odd {
                        0 => p.insert(0, '/'),
                        1 => p.push('/'),
                        2 => p.insert_str(0, "../"),
                        _ => {}
                    }
                    p
                }),
            1 => any::<String>(),
            1 => (1usize..80).prop_map(|n| vec!["a"; n].join("/")),
        ]
    }

    fn size() -> impl Strategy<Value = u64> {
        prop_oneof![
            24 => 0u64..3000,
            1 => Just(1u64 << 62),
            1 => Just(u64::MAX),
            1 => any::<u64>(),
        ]
    }

    /// A path an honest sender could send.
    fn clean_path() -> impl Strategy<Value = String> {
        prop::collection::vec("[a-zA-Z0-9_(][a-zA-Z0-9 ._()-]{0,8}[a-zA-Z0-9_)]", 1..4)
            .prop_map(|pieces| pieces.join("/"))
    }

    fn entry(path: impl Strategy<Value = String>) -> impl Strategy<Value = Entry> {
        (path, prop::option::of(size()), any::<[u8; 32]>()).prop_map(|(path, size, tag)| Entry {
            path,
            kind: match size {
                Some(size) => EntryKind::File { size, tag },
                None => EntryKind::Directory,
            },
        })
    }

    /// Honest-looking entries, then (usually) one of them made hostile,
    /// or (sometimes) entirely arbitrary ones.
    fn entries() -> impl Strategy<Value = Vec<Entry>> {
        prop_oneof![
            6 => (
                prop::collection::vec(entry(clean_path()), 1..12),
                prop::option::of((any::<prop::sample::Index>(), path())),
            )
                .prop_map(|(mut entries, twist)| {
                    if let Some((at, path)) = twist {
                        let i = at.index(entries.len());
                        entries[i].path = path;
                    }
                    entries
                }),
            1 => prop::collection::vec(entry(path()), 0..12),
        ]
    }

    fn manifest() -> impl Strategy<Value = Manifest> {
        (
            entries(),
            prop_oneof![4 => Just(1u32 << 16), 4 => Just(1u32 << 20), 1 => any::<u32>()],
        )
            .prop_map(|(entries, block_size)| Manifest {
                entries,
                block_size,
            })
    }

    fn limits() -> impl Strategy<Value = ManifestLimits> {
        prop_oneof![
            3 => Just(ManifestLimits::default()),
            1 => (1usize..30, 0u64..10_000, 1usize..8).prop_map(|(entries, bytes, depth)| {
                ManifestLimits {
                    max_entries: entries,
                    max_total_bytes: bytes,
                    max_depth: depth,
                }
            }),
        ]
    }

    /// A component that is safe to create inside the download directory.
    fn plain(component: &str) -> bool {
        !component.is_empty()
            && component != "."
            && component != ".."
            && component.len() <= MAX_COMPONENT_BYTES
            && !component
                .chars()
                .any(|c| c.is_control() || c == '/' || is_disguising(c))
    }

    proptest! {
        // Never write regression files next to the sources.
        #![proptest_config(ProptestConfig {
            cases: 1024,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn hostile_manifests_never_panic_and_accepted_plans_are_safe(
            m in manifest(),
            limits in limits(),
        ) {
            let valid = m.validate(&limits);
            let planned = plan(&m, limits.max_depth);
            let Ok(planned) = planned else {
                return Ok(());
            };
            prop_assert_eq!(planned.entries().len(), m.entries.len());
            let mut seen = HashSet::new();
            for (entry, original) in planned.entries().iter().zip(&m.entries) {
                prop_assert_eq!(&entry.kind, &original.kind);
                let path = &entry.path;
                prop_assert!(path.depth() >= 1 && path.depth() <= limits.max_depth);
                for c in path.components() {
                    prop_assert!(plain(c), "unsafe component {:?} in {:?}", c, original.path);
                }
                let joined = path.to_rel_string();
                prop_assert!(!joined.starts_with('/') && joined.len() <= MAX_PATH_BYTES);
                prop_assert!(
                    seen.insert(fold(&joined)),
                    "duplicate {:?} in an accepted plan", joined
                );
            }
            for dir in planned.directories() {
                prop_assert!(dir.components().all(plain), "{:?}", dir);
            }
            let mut tops = HashSet::new();
            for top in planned.top_level() {
                prop_assert!(plain(&top.name), "{:?}", top.name);
                prop_assert!(!top.name.starts_with(RESERVED_PREFIX), "{:?}", top.name);
                prop_assert!(tops.insert(fold(&top.name)), "{:?}", top.name);
            }
            // What the receiver actually accepts passed both checks.
            if valid.is_ok() {
                prop_assert!(m.entries.len() <= limits.max_entries);
                prop_assert!(m.total_bytes() <= limits.max_total_bytes);
            }
        }

        #[test]
        fn sanitize_never_panics_and_output_is_plain(p in path()) {
            if let Ok(safe) = sanitize(&p) {
                prop_assert!(safe.components().all(plain), "{:?} -> {:?}", p, safe);
                // Every stored name decodes to the name sent (unless cut to fit).
                let nfc: String = p.nfc().collect();
                for (stored, sent) in safe.components().zip(nfc.split('/')) {
                    let cut = format!("~{}", &blake3::hash(sent.as_bytes()).to_hex()[..16]);
                    if !stored.ends_with(&cut) {
                        prop_assert_eq!(decode_stored(stored), sent);
                    }
                }
            }
        }
    }
}
