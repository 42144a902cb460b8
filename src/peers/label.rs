//! How a device's self-chosen name is shown to people.
//!
//! Every device chooses its own name, so names collide and can be made to
//! look like another device's (`dеsktop` with a Cyrillic `е`). Devices
//! are told apart by ID: wherever a name is shown, its device's ID prefix
//! is shown beside it, and a stranger whose name looks like that of a
//! trusted device ([`TrustStore::look_alike_of`]) is called out as a
//! look-alike.
//!
//! [`TrustStore::look_alike_of`]: crate::identity::trust::TrustStore::look_alike_of

use std::fmt;

use crate::identity::DeviceId;
use crate::safe_text::PeerName;

/// A peer's name as people see it: `laptop (HAQLMLQQ)`, or
/// `dеsktop (D2I64QMJ, look-alike of trusted AXNNA454)`. Pads like a
/// `str`, for tables.
#[derive(Debug, Clone, Copy)]
pub struct PeerLabel<'a> {
    /// The name the device chose.
    pub name: &'a PeerName,
    /// Its device ID, when known (left out where a column shows it).
    pub id: Option<&'a DeviceId>,
    /// The trusted device its name looks like, if it is another device.
    pub looks_like: Option<&'a DeviceId>,
}

impl<'a> PeerLabel<'a> {
    /// The name with the device's ID prefix beside it.
    pub fn new(name: &'a PeerName, id: &'a DeviceId, looks_like: Option<&'a DeviceId>) -> Self {
        Self {
            name,
            id: Some(id),
            looks_like,
        }
    }
}

impl fmt::Display for PeerLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let notes: Vec<String> = self
            .id
            .map(DeviceId::short)
            .into_iter()
            .chain(
                self.looks_like
                    .map(|t| format!("look-alike of trusted {}", t.short())),
            )
            .collect();
        if notes.is_empty() {
            return fmt::Display::fmt(self.name, f);
        }
        f.pad(&format!("{} ({})", self.name, notes.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_show_the_id_and_flag_look_alikes() {
        let name = PeerName::from("d\u{435}sktop");
        let (id, trusted) = (DeviceId::from_cert_der(b"x"), DeviceId::from_cert_der(b"t"));
        assert_eq!(
            PeerLabel::new(&name, &id, None).to_string(),
            format!("d\u{435}sktop ({})", id.short())
        );
        assert_eq!(
            PeerLabel::new(&name, &id, Some(&trusted)).to_string(),
            format!(
                "d\u{435}sktop ({}, look-alike of trusted {})",
                id.short(),
                trusted.short()
            )
        );
        let in_a_column = PeerLabel {
            name: &name,
            id: None,
            looks_like: Some(&trusted),
        };
        assert_eq!(
            in_a_column.to_string(),
            format!("d\u{435}sktop (look-alike of trusted {})", trusted.short())
        );
        let plain = PeerLabel {
            name: &name,
            id: None,
            looks_like: None,
        };
        assert_eq!(format!("{plain:9}|"), "d\u{435}sktop  |");
    }
}
