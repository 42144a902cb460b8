//! How transfers are described to people, on a terminal (`share
//! receive`, `--watch`) or in a desktop notification: who offers, what,
//! and the first names.
//!
//! Names and reasons from peers arrive [cleaned](crate::safe_text); these
//! helpers also pass what they quote through
//! [`printable`], because they quote local
//! file names too (where a received entry was saved), so what they return
//! is always safe to print.

use std::borrow::{Borrow, Cow};
use std::fmt::Write as _;

use crate::identity::DeviceId;
use crate::protocol::HumanBytes;
use crate::registry::{TransferInfo, TransferKind};
use crate::safe_text::printable;

/// How many names [`names_preview`] lists before "and N more".
const PREVIEW_NAMES: usize = 3;

/// What a transfer carries, in a few words: `report.pdf (1.1 MiB)`,
/// `3 files (3.0 MiB)`, `a text`.
pub fn what(info: &TransferInfo) -> String {
    match (info.kind, info.files, info.names.as_slice()) {
        (TransferKind::Text, ..) => "a text".to_owned(),
        (TransferKind::Files, 1, [name]) => {
            format!("{} ({})", printable(name), HumanBytes(info.bytes))
        }
        (TransferKind::Files, n, _) => format!(
            "{n} file{} ({})",
            if n == 1 { "" } else { "s" },
            HumanBytes(info.bytes)
        ),
    }
}

/// The first top-level names: `photos, report.pdf and 4 more`.
pub fn names_preview<S: Borrow<str>>(names: &[S]) -> String {
    let shown: Vec<Cow<'_, str>> = names
        .iter()
        .take(PREVIEW_NAMES)
        .map(|n| printable(n.borrow()))
        .collect();
    let mut out = shown.join(", ");
    if names.len() > PREVIEW_NAMES {
        let _ = write!(out, " and {} more", names.len() - PREVIEW_NAMES);
    }
    out
}

/// Who offers: `laptop (HAQLMLQQ, trusted)`, or for a stranger named like
/// a trusted device `dеsktop (D2I64QMJ, not trusted, look-alike of trusted
/// AXNNA454)` (see [`crate::peers::PeerLabel`]).
pub fn who(info: &TransferInfo, trusted: bool) -> String {
    device(&info.peer, &info.peer_id, trusted, info.looks_like.as_ref())
}

/// A device as [`who`] shows it, for lists of devices too.
pub fn device(name: &str, id: &DeviceId, trusted: bool, looks_like: Option<&DeviceId>) -> String {
    let mut notes = vec![
        id.short(),
        if trusted { "trusted" } else { "not trusted" }.to_owned(),
    ];
    notes.extend(looks_like.map(|t| format!("look-alike of trusted {}", t.short())));
    format!("{} ({})", printable(name), notes.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::State;

    fn offer(names: &[&str], files: usize, bytes: u64) -> TransferInfo {
        TransferInfo {
            peer: "lap\x1btop".into(),
            files,
            bytes,
            names: names.iter().map(|n| (*n).into()).collect(),
            ..TransferInfo::example("9cbf54a5", State::Pending)
        }
    }

    #[test]
    fn offers_are_summarised_printably() {
        // Peer text arrives cleaned (an override or escape is gone)...
        let one = offer(&["report\u{202e}fdp.exe"], 1, 1_153_434);
        assert_eq!(what(&one), "reportfdp.exe (1.1 MiB)");
        let many = offer(&["photos", "a", "b", "c", "d"], 12, 3 << 20);
        assert_eq!(what(&many), "12 files (3.0 MiB)");
        assert_eq!(names_preview(&many.names), "photos, a, b and 2 more");
        let dir = offer(&["photos"], 1, 10);
        assert_eq!(what(&dir), "photos (10 B)");
        let text = TransferInfo {
            kind: TransferKind::Text,
            ..offer(&["text: hi"], 0, 2)
        };
        assert_eq!(what(&text), "a text");
        let id = many.peer_id.short();
        assert_eq!(who(&many, false), format!("laptop ({id}, not trusted)"));
        let twin = DeviceId::from_cert_der(b"desktop");
        let look_alike = TransferInfo {
            looks_like: Some(twin),
            ..many
        };
        assert_eq!(
            who(&look_alike, false),
            format!(
                "laptop ({id}, not trusted, look-alike of trusted {})",
                twin.short()
            )
        );
        // ...and local names are escaped.
        assert_eq!(names_preview(&["a\nb"]), "a\\nb");
    }
}
