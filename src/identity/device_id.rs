//! Device IDs: the SHA-256 of a device's DER certificate.
//!
//! The ID is what every other layer uses to name a device: the peer table is
//! keyed by it, trust is stored by it, and the TLS verifiers compare it. Names
//! are for humans and may collide; IDs may not.
//!
//! The canonical text form is unpadded RFC 4648 base32 (52 characters, upper
//! case). For display it is grouped in blocks of four separated by `-`
//! (`ABCD-EFGH-...`). Parsing accepts either form, case-insensitively, and
//! [`DeviceId::matches_prefix`] lets users type a short unique prefix.

use std::fmt;
use std::str::FromStr;

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Length of the canonical (ungrouped) text form.
pub const DEVICE_ID_TEXT_LEN: usize = 52;

/// A device identity: SHA-256 over the certificate DER.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; 32]);

/// Why a string is not a device ID.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceIdError {
    /// The text has the wrong number of base32 characters.
    #[error("a device ID has {DEVICE_ID_TEXT_LEN} base32 characters, got {0}")]
    Length(usize),
    /// A character outside the base32 alphabet.
    #[error("invalid character {0:?} in device ID")]
    Char(char),
}

impl DeviceId {
    /// The ID of the certificate whose DER encoding is `der`.
    pub fn from_cert_der(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Canonical text: 52 upper-case base32 characters, no separators.
    pub fn to_canonical(&self) -> String {
        let mut out = String::with_capacity(DEVICE_ID_TEXT_LEN);
        let mut acc: u32 = 0;
        let mut bits = 0;
        for &b in &self.0 {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
            }
        }
        if bits > 0 {
            out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
        }
        out
    }

    /// The first `n` canonical characters, for compact tables and logs.
    pub fn short(&self) -> String {
        let mut s = self.to_canonical();
        s.truncate(8);
        s
    }

    /// Whether the user-typed `prefix` (any case, `-` ignored) starts this ID.
    pub fn matches_prefix(&self, prefix: &str) -> bool {
        let wanted = normalize(prefix);
        !wanted.is_empty() && self.to_canonical().starts_with(&wanted)
    }

    /// The same digest as 64 upper-case hex digits: how LocalSend writes a
    /// certificate fingerprint.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02X}")).collect()
    }

    /// Parses 64 hex digits (any case), the LocalSend fingerprint form.
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(text.chunks(2)) {
            let digit = |c: u8| (c as char).to_digit(16);
            *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Some(Self(out))
    }

    /// Whether the user-typed hex `prefix` (any case) starts [`to_hex`](Self::to_hex).
    pub fn matches_hex_prefix(&self, prefix: &str) -> bool {
        let wanted = prefix.trim().to_ascii_uppercase();
        !wanted.is_empty() && self.to_hex().starts_with(&wanted)
    }
}

/// Upper-cases and strips separators so `abcd-efgh` compares as `ABCDEFGH`.
fn normalize(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

impl fmt::Display for DeviceId {
    /// Grouped form: `ABCD-EFGH-...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let canonical = self.to_canonical();
        for (i, chunk) in canonical.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            // Base32 output is ASCII, so every chunk is valid UTF-8.
            f.write_str(std::str::from_utf8(chunk).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}

impl FromStr for DeviceId {
    type Err = DeviceIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = normalize(text);
        if text.len() != DEVICE_ID_TEXT_LEN {
            return Err(DeviceIdError::Length(text.chars().count()));
        }
        let mut out = [0u8; 32];
        let mut acc: u64 = 0;
        let mut bits = 0;
        let mut n = 0;
        for c in text.chars() {
            let v = ALPHABET
                .iter()
                .position(|&a| a as char == c)
                .ok_or(DeviceIdError::Char(c))?;
            acc = (acc << 5) | v as u64;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                if n < 32 {
                    out[n] = (acc >> bits) as u8;
                    n += 1;
                }
            }
        }
        // 52 chars carry 260 bits; the last 4 must be zero for a canonical ID.
        if acc & ((1 << bits) - 1) != 0 {
            return Err(DeviceIdError::Length(DEVICE_ID_TEXT_LEN));
        }
        Ok(Self(out))
    }
}

impl serde::Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md §2's example, read from the document.
    #[test]
    fn the_device_id_vector_of_the_spec() {
        let mut lines = crate::protocol::spec::vector("device-id").lines();
        let mut value = |label: &str| {
            let line = lines.next().expect("a line per form");
            let rest = line
                .strip_prefix(label)
                .expect("in order: bytes, canonical, display");
            rest.trim()
        };
        let (bytes, _) = crate::protocol::spec::leading_bytes(value("bytes"));
        let id = DeviceId::from_bytes(bytes.try_into().expect("32 bytes"));
        assert_eq!(id.to_canonical(), value("canonical"));
        assert_eq!(id.to_string(), value("display"));
        assert_eq!(
            id,
            (0..32)
                .collect::<Vec<u8>>()
                .try_into()
                .map(DeviceId::from_bytes)
                .unwrap()
        );
    }

    #[test]
    fn text_round_trip_both_forms() {
        let id = DeviceId::from_cert_der(b"some certificate");
        let canonical = id.to_canonical();
        assert_eq!(canonical.len(), DEVICE_ID_TEXT_LEN);
        assert_eq!(canonical.parse::<DeviceId>(), Ok(id));
        assert_eq!(id.to_string().parse::<DeviceId>(), Ok(id));
        assert_eq!(id.to_string().to_lowercase().parse::<DeviceId>(), Ok(id));
        assert_eq!(id.to_string().len(), 52 + 12);
    }

    #[test]
    fn matches_sha256_of_der() {
        // sha256("abc") = ba7816bf...
        let id = DeviceId::from_cert_der(b"abc");
        assert_eq!(id.as_bytes()[..4], [0xba, 0x78, 0x16, 0xbf]);
    }

    #[test]
    fn rejects_bad_text() {
        assert!(matches!(
            "ABC".parse::<DeviceId>(),
            Err(DeviceIdError::Length(3))
        ));
        let mut s = DeviceId::from_cert_der(b"x").to_canonical();
        s.replace_range(0..1, "1");
        assert_eq!(s.parse::<DeviceId>(), Err(DeviceIdError::Char('1')));
    }

    #[test]
    fn hex_form_round_trips_in_either_case() {
        let id = DeviceId::from_cert_der(b"abc");
        let hex = id.to_hex();
        assert!(hex.starts_with("BA7816BF"), "{hex}");
        assert_eq!(DeviceId::from_hex(&hex), Some(id));
        assert_eq!(DeviceId::from_hex(&hex.to_lowercase()), Some(id));
        assert_eq!(DeviceId::from_hex(&hex[..63]), None);
        assert_eq!(DeviceId::from_hex(&format!("{}G", &hex[..63])), None);
        assert!(id.matches_hex_prefix("ba78"));
        assert!(!id.matches_hex_prefix("ba79"));
        assert!(!id.matches_hex_prefix(" "));
    }

    #[test]
    fn prefix_matching() {
        let id = DeviceId::from_cert_der(b"y");
        let grouped = id.to_string();
        assert!(id.matches_prefix(&grouped[..6].to_lowercase()));
        assert!(!id.matches_prefix(""));
        assert!(!id.matches_prefix("-"));
    }
}
