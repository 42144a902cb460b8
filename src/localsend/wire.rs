//! LocalSend's JSON messages, as a pure codec: parse what a peer sent into
//! checked types, and build what we send. No I/O and no clocks (times are
//! passed in), so every rule here is unit- and property-tested.
//!
//! Protocol 2.2 (LocalSend 1.18) is what we speak; what <= 1.17 apps send
//! (protocol 2.1, the `announcement` flag, no `deviceType`) is read too.
//! Peers are hostile: every string is bounded and cleaned of control
//! characters before it can reach a log or a terminal, numbers are checked
//! (a size is a `u64`; a float, a negative or a string is refused), and a
//! `files` object with more than [`MAX_FILES`] members is refused while it
//! is parsed, before it is built.
//!
//! What a field *means* for lanshare (an offer, a text, a device) is
//! decided here too, so the HTTP layer only moves bytes:
//! [`Offer::parse`] turns a `prepare-upload` body into either files (each
//! with its sanitised relative path, size, optional SHA-256 and mtime) or a
//! text message (one `text/*` file carrying its `preview`).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::identity::DeviceId;
use crate::protocol::{MAX_ENTRIES, MAX_PATH_LEN, MAX_TEXT_LEN};
use crate::safe_text::{PeerName, clean};

/// The protocol version we announce and answer with.
pub const PROTOCOL_VERSION: &str = "2.2";

/// LocalSend's port, for HTTPS (TCP) and the multicast group (UDP).
pub const DEFAULT_PORT: u16 = 53317;

/// Most files one `prepare-upload` may offer (the same hard limit as a
/// native offer's entries); the configured limit may be lower.
pub const MAX_FILES: usize = MAX_ENTRIES;

/// Longest alias, model, version or MIME type kept (bytes; longer ones are
/// cut at a character boundary).
pub const MAX_LABEL_LEN: usize = 255;

/// Longest file ID accepted (senders use UUIDs or short strings).
pub const MAX_ID_LEN: usize = 255;

/// The model we announce.
pub const DEVICE_MODEL: &str = "lanshare";

/// What kind of device a peer says it is. Unknown values mean desktop, as
/// the protocol says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    /// A phone or tablet.
    Mobile,
    /// A desktop or laptop app.
    #[default]
    Desktop,
    /// The browser-based sender.
    Web,
    /// A device without a screen (what lanshare's daemon announces).
    Headless,
    /// A server.
    Server,
}

impl DeviceType {
    /// The wire (and JSON) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mobile => "mobile",
            Self::Desktop => "desktop",
            Self::Web => "web",
            Self::Headless => "headless",
            Self::Server => "server",
        }
    }

    fn parse(text: &str) -> Self {
        match text.to_ascii_lowercase().as_str() {
            "mobile" => Self::Mobile,
            "web" => Self::Web,
            "headless" => Self::Headless,
            "server" => Self::Server,
            _ => Self::Desktop,
        }
    }
}

/// Why a message from a peer is refused (the text goes back to the peer in
/// a 400 answer and into our log, cleaned).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not JSON of the expected shape.
    #[error("malformed request body: {0}")]
    Malformed(String),
    /// A device that does not speak HTTPS (LocalSend's "encryption off").
    #[error("plain-HTTP LocalSend devices are not supported; turn encryption on")]
    PlainHttp,
    /// `files` is empty.
    #[error("the request offers no files")]
    NoFiles,
    /// More files than the limit.
    #[error("the request offers more than {max} files")]
    TooManyFiles {
        /// The limit.
        max: usize,
    },
    /// Two files with the same ID, or an ID that does not match its key.
    #[error("file ID {0:?} is used twice or does not match its entry")]
    BadFileId(String),
    /// A file's name is empty or too long.
    #[error("file {id:?} has an empty or over-long name")]
    BadFileName {
        /// The file's ID (cleaned).
        id: String,
    },
    /// A `sha256` that is not 64 hex digits.
    #[error("file {id:?} has an invalid sha256")]
    BadSha256 {
        /// The file's ID (cleaned).
        id: String,
    },
    /// A text message longer than lanshare's text limit.
    #[error("the text message is longer than {MAX_TEXT_LEN} bytes")]
    TextTooLong,
}

/// A peer's self-description: the body of `register`, of a multicast
/// announcement, of `info`, and the `info` of `prepare-upload`. Every text
/// is cleaned; the fingerprint is only a claim (see [`Device::fingerprint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Display name, cleaned and bounded.
    pub alias: PeerName,
    /// Protocol version it speaks (`"2.2"`, `"2.1"`, ...).
    pub version: String,
    /// Device model, if given.
    pub model: Option<String>,
    /// Device type (desktop if absent or unknown).
    pub device_type: DeviceType,
    /// The fingerprint it claims, if it is 64 hex digits. A claim only:
    /// what identifies a peer is the certificate hash proven in a TLS
    /// handshake, which the caller compares with this.
    pub fingerprint: Option<DeviceId>,
    /// Its HTTPS port.
    pub port: u16,
    /// Whether it serves the download API.
    pub download: bool,
    /// A multicast message asking for answers (`announce`, or 1.17's
    /// `announcement`).
    pub announce: bool,
}

/// The lenient wire shape of [`Device`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDevice {
    alias: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    device_model: Option<String>,
    #[serde(default)]
    device_type: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    download: Option<bool>,
    #[serde(default)]
    announce: Option<bool>,
    #[serde(default)]
    announcement: Option<bool>,
}

impl RawDevice {
    fn check(self) -> Result<Device, WireError> {
        // Absent means https (the default since protocol 2.0).
        if let Some(protocol) = &self.protocol
            && !protocol.eq_ignore_ascii_case("https")
        {
            return Err(WireError::PlainHttp);
        }
        let fingerprint = self.fingerprint.as_deref().and_then(DeviceId::from_hex);
        let placeholder = fingerprint.unwrap_or(DeviceId::from_bytes([0; 32]));
        Ok(Device {
            alias: PeerName::new(&self.alias, &placeholder.short()),
            version: self
                .version
                .map(|v| clean_label(&v))
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "1.0".into()),
            model: self
                .device_model
                .map(|m| clean_label(&m))
                .filter(|m| !m.is_empty()),
            device_type: self
                .device_type
                .as_deref()
                .map_or(DeviceType::Desktop, DeviceType::parse),
            fingerprint,
            port: self.port.filter(|p| *p != 0).unwrap_or(DEFAULT_PORT),
            download: self.download.unwrap_or(false),
            announce: self.announce.or(self.announcement).unwrap_or(false),
        })
    }
}

impl Device {
    /// Parses a `register` body, a multicast announcement or an `info`
    /// answer.
    ///
    /// # Errors
    /// [`WireError::Malformed`] or [`WireError::PlainHttp`].
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let raw: RawDevice = serde_json::from_slice(body).map_err(malformed)?;
        raw.check()
    }

    /// A phone called `alias` on the default port, for tests.
    #[cfg(test)]
    pub(crate) fn test_phone(alias: &str) -> Self {
        Self {
            alias: alias.into(),
            version: "2.2".into(),
            model: None,
            device_type: DeviceType::Mobile,
            fingerprint: None,
            port: DEFAULT_PORT,
            download: false,
            announce: false,
        }
    }
}

/// How we describe ourselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfInfo {
    /// Our alias (the device name).
    pub alias: String,
    /// Our LocalSend certificate's fingerprint.
    pub fingerprint: DeviceId,
    /// Our HTTPS port.
    pub port: u16,
}

/// The wire shape of what we send about ourselves.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OutDevice<'a> {
    alias: &'a str,
    version: &'static str,
    device_model: &'static str,
    device_type: DeviceType,
    fingerprint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<&'static str>,
    download: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    announce: Option<bool>,
}

/// The v1 `info` answer (<= 1.17 clients probe it for favourites).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OutInfoV1<'a> {
    alias: &'a str,
    device_model: &'static str,
    device_type: DeviceType,
}

impl SelfInfo {
    fn out(&self, port: bool, announce: Option<bool>) -> OutDevice<'_> {
        OutDevice {
            alias: &self.alias,
            version: PROTOCOL_VERSION,
            device_model: DEVICE_MODEL,
            device_type: DeviceType::Headless,
            fingerprint: self.fingerprint.to_hex(),
            port: port.then_some(self.port),
            protocol: port.then_some("https"),
            download: false,
            announce,
        }
    }

    /// A multicast announcement (`announce: true` asks for answers).
    pub fn announcement(&self) -> Vec<u8> {
        to_json(&self.out(true, Some(true)))
    }

    /// The body of our `register` request (an answer to an announcement).
    pub fn register_body(&self) -> Vec<u8> {
        to_json(&self.out(true, None))
    }

    /// The answer to `register` and to `GET /api/localsend/v2/info`.
    pub fn info(&self) -> Vec<u8> {
        to_json(&self.out(false, None))
    }

    /// The answer to `GET /api/localsend/v1/info`.
    pub fn info_v1(&self) -> Vec<u8> {
        to_json(&OutInfoV1 {
            alias: &self.alias,
            device_model: DEVICE_MODEL,
            device_type: DeviceType::Headless,
        })
    }
}

/// Time of day as LocalSend's metadata carries it: seconds and nanoseconds
/// since the Unix epoch (before 1970 is negative seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds, 0..1e9.
    pub nanos: u32,
}

impl Timestamp {
    /// Parses RFC 3339 (`2026-08-01T10:20:30.456Z`, `...+02:00`); `None`
    /// for anything else, including a missing offset.
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = b.get(range)?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(part).ok()?.parse().ok()
        };
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        if !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let days_in_month = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
            2 => 28,
            _ => return None,
        };
        if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let mut i = 19;
        let mut nanos = 0u32;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            i = start;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let digits = &b[start..i];
            if digits.is_empty() {
                return None;
            }
            for (k, d) in digits.iter().take(9).enumerate() {
                nanos += u32::from(d - b'0') * 10u32.pow(8 - k as u32);
            }
        }
        let offset = match b.get(i..)? {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let digits = [*h1, *h2, *m1, *m2];
                if !digits.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let d = |x: u8| i64::from(x - b'0');
                let minutes = (d(*h1) * 10 + d(*h2)) * 60 + d(*m1) * 10 + d(*m2);
                if *sign == b'-' { -minutes } else { minutes }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset * 60;
        Some(Self { secs, nanos })
    }

    /// RFC 3339 in UTC with milliseconds, as LocalSend apps write it.
    pub fn format(self) -> String {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            self.nanos / 1_000_000
        )
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One offered file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedFile {
    /// The sender's ID for it (echoed in `upload`).
    pub id: String,
    /// Its relative path as the sender named it (`/` separates folders).
    /// Not yet sanitised: the store's planner does that, with the same
    /// rules as for a native offer.
    pub name: String,
    /// Exact size in bytes.
    pub size: u64,
    /// MIME type, cleaned.
    pub mime: String,
    /// The SHA-256 the data must have, if the sender gave one.
    pub sha256: Option<[u8; 32]>,
    /// Last modification time, if given and valid.
    pub modified: Option<Timestamp>,
}

/// What a `prepare-upload` offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offered {
    /// Files (possibly in folders), in the order the sender listed them.
    Files(Vec<OfferedFile>),
    /// A text message: one `text/*` file whose `preview` is the text. The
    /// answer is 204; nothing is uploaded.
    Text(String),
}

/// A checked `prepare-upload` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Who says it sends (its fingerprint is a claim; the handshake's
    /// certificate hash is what counts).
    pub sender: Device,
    /// What it offers.
    pub offered: Offered,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFile {
    id: String,
    file_name: String,
    size: u64,
    #[serde(default)]
    file_type: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    preview: Option<String>,
    #[serde(default)]
    metadata: Option<RawMetadata>,
}

#[derive(Debug, Deserialize)]
struct RawMetadata {
    #[serde(default)]
    modified: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawOffer {
    info: RawDevice,
    files: Files,
}

/// The `files` object, kept in the sender's order, refused as soon as it
/// has more than [`MAX_FILES`] members.
#[derive(Debug)]
struct Files(Vec<(String, RawFile)>);

impl<'de> Deserialize<'de> for Files {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FilesVisitor;
        impl<'de> Visitor<'de> for FilesVisitor {
            type Value = Files;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of files")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Files, A::Error> {
                let mut files = Vec::new();
                while let Some(entry) = map.next_entry::<String, RawFile>()? {
                    if files.len() == MAX_FILES {
                        return Err(de::Error::custom(TOO_MANY_FILES));
                    }
                    files.push(entry);
                }
                Ok(Files(files))
            }
        }
        deserializer.deserialize_map(FilesVisitor)
    }
}

/// Marker in the serde error for [`WireError::TooManyFiles`].
const TOO_MANY_FILES: &str = "too many files";

impl Offer {
    /// Parses and checks a `prepare-upload` body; `max_files` is the
    /// configured limit (at most [`MAX_FILES`]).
    ///
    /// # Errors
    /// What is wrong with it, in words for the sender.
    pub fn parse(body: &[u8], max_files: usize) -> Result<Self, WireError> {
        let max_files = max_files.min(MAX_FILES);
        let raw: RawOffer = serde_json::from_slice(body).map_err(|e| {
            if e.to_string().starts_with(TOO_MANY_FILES) {
                WireError::TooManyFiles { max: max_files }
            } else {
                malformed(e)
            }
        })?;
        let sender = raw.info.check()?;
        let files = raw.files.0;
        if files.is_empty() {
            return Err(WireError::NoFiles);
        }
        if files.len() > max_files {
            return Err(WireError::TooManyFiles { max: max_files });
        }
        let mut ids = HashSet::with_capacity(files.len());
        let mut checked = Vec::with_capacity(files.len());
        for (key, file) in files {
            if key != file.id || key.is_empty() || key.len() > MAX_ID_LEN || !ids.insert(key) {
                return Err(WireError::BadFileId(clean_label(&file.id)));
            }
            checked.push(check_file(file)?);
        }
        let offered = match <[(OfferedFile, Option<String>); 1]>::try_from(checked) {
            Ok([(file, Some(text))]) if file.mime.starts_with("text/") => {
                if text.len() > MAX_TEXT_LEN {
                    return Err(WireError::TextTooLong);
                }
                Offered::Text(text)
            }
            Ok([(file, _)]) => Offered::Files(vec![file]),
            Err(checked) => Offered::Files(checked.into_iter().map(|(f, _)| f).collect()),
        };
        Ok(Self { sender, offered })
    }
}

fn check_file(file: RawFile) -> Result<(OfferedFile, Option<String>), WireError> {
    let id = file.id;
    if file.file_name.is_empty() || file.file_name.len() > MAX_PATH_LEN {
        return Err(WireError::BadFileName {
            id: clean_label(&id),
        });
    }
    let sha256 = match file.sha256.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(hex) => Some(
            DeviceId::from_hex(hex)
                .map(|d| *d.as_bytes())
                .ok_or_else(|| WireError::BadSha256 {
                    id: clean_label(&id),
                })?,
        ),
    };
    let modified = file
        .metadata
        .and_then(|m| m.modified)
        .and_then(|m| Timestamp::parse(&m));
    let mime = file
        .file_type
        .map(|t| clean_label(&t))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "application/octet-stream".into());
    let offered = OfferedFile {
        id,
        name: file.file_name,
        size: file.size,
        mime,
        sha256,
        modified,
    };
    Ok((offered, file.preview))
}

/// The `prepare-upload` answer: the session and one token per accepted file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepareResponse {
    /// The session's ID.
    pub session_id: String,
    /// File ID -> upload token.
    pub files: std::collections::BTreeMap<String, String>,
}

impl PrepareResponse {
    /// Parses a receiver's answer; every ID and token is bounded.
    ///
    /// # Errors
    /// [`WireError::Malformed`].
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let parsed: Self = serde_json::from_slice(body).map_err(malformed)?;
        let bounded = |s: &String| !s.is_empty() && s.len() <= MAX_ID_LEN;
        if !bounded(&parsed.session_id)
            || !parsed.files.iter().all(|(k, v)| bounded(k) && bounded(v))
        {
            return Err(WireError::Malformed("over-long session or token".into()));
        }
        Ok(parsed)
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// One file of an outgoing `prepare-upload`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutFile {
    /// Our ID for it.
    pub id: String,
    /// Relative path (`/` for folders).
    pub file_name: String,
    /// Size in bytes.
    pub size: u64,
    /// MIME type.
    pub file_type: String,
    /// Lower-case hex SHA-256 of the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// For a text message: the text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    /// Modification time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<OutMetadata>,
}

/// `metadata` of an [`OutFile`].
#[derive(Debug, Clone, Serialize)]
pub struct OutMetadata {
    /// RFC 3339 modification time.
    pub modified: String,
}

/// Builds the body of our `prepare-upload`.
pub fn prepare_body(me: &SelfInfo, files: &[OutFile]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        info: OutDevice<'a>,
        files: std::collections::BTreeMap<&'a str, &'a OutFile>,
    }
    to_json(&Body {
        info: me.out(true, None),
        files: files.iter().map(|f| (f.id.as_str(), f)).collect(),
    })
}

/// The body of an error answer, `{"message": ...}` as 1.18 sends it.
pub fn error_body(message: &str) -> Vec<u8> {
    to_json(&serde_json::json!({ "message": message }))
}

/// The `message` of an error answer, cleaned, if the body has one.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    serde_json::from_slice::<Message>(body)
        .ok()
        .map(|m| clean_label(&m.message))
        .filter(|m| !m.is_empty())
}

/// Decodes a URL query (`a=1&b=x%20y`) into pairs; `+` is a space. Pairs
/// that are not valid UTF-8 after decoding are dropped.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// The value of `key` in a decoded query.
pub fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes a query value (everything but unreserved characters).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A peer-supplied label made safe to show ([`clean`]), at most
/// [`MAX_LABEL_LEN`] bytes.
pub fn clean_label(text: &str) -> String {
    clean(text, MAX_LABEL_LEN)
}

fn malformed(e: serde_json::Error) -> WireError {
    WireError::Malformed(clean_label(&e.to_string()))
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fp(byte: u8) -> DeviceId {
        DeviceId::from_bytes([byte; 32])
    }

    #[test]
    fn a_1_18_announcement_is_read_with_its_fingerprint() {
        let hex = fp(0xab).to_hex();
        let body = format!(
            r#"{{"alias":"Pixel 8","version":"2.2","deviceModel":"Google","deviceType":"mobile",
               "fingerprint":"{hex}","port":53317,"protocol":"https","download":false,"announce":true}}"#
        );
        let device = Device::parse(body.as_bytes()).unwrap();
        assert_eq!(device.alias, "Pixel 8");
        assert_eq!(device.model.as_deref(), Some("Google"));
        assert_eq!(device.device_type, DeviceType::Mobile);
        assert_eq!(device.fingerprint, Some(fp(0xab)));
        assert!(device.announce);
        // Lower case is the same fingerprint.
        let lower = body.replace(&hex, &hex.to_lowercase());
        assert_eq!(
            Device::parse(lower.as_bytes()).unwrap().fingerprint,
            Some(fp(0xab))
        );
    }

    #[test]
    fn old_and_odd_devices_get_defaults() {
        let device = Device::parse(
            br#"{"alias":"x\u001b[31mred","deviceType":"fridge","fingerprint":"random","announcement":true}"#,
        )
        .unwrap();
        assert_eq!(device.alias, "x[31mred", "escape removed");
        assert_eq!(device.device_type, DeviceType::Desktop);
        assert_eq!(device.fingerprint, None);
        assert_eq!(device.port, DEFAULT_PORT);
        assert_eq!(device.version, "1.0");
        assert!(device.announce, "1.17's announcement flag");
        assert_eq!(
            Device::parse(br#"{"alias":"a","protocol":"http"}"#),
            Err(WireError::PlainHttp)
        );
        assert!(matches!(
            Device::parse(br#"{"alias":1}"#),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn what_we_send_about_ourselves() {
        let me = SelfInfo {
            alias: "nas".into(),
            fingerprint: fp(1),
            port: 53317,
        };
        let announcement: serde_json::Value = serde_json::from_slice(&me.announcement()).unwrap();
        assert_eq!(
            announcement,
            serde_json::json!({
                "alias": "nas", "version": "2.2", "deviceModel": "lanshare",
                "deviceType": "headless", "fingerprint": fp(1).to_hex(), "port": 53317,
                "protocol": "https", "download": false, "announce": true
            })
        );
        // Our own messages read back as what they say.
        let back = Device::parse(&me.register_body()).unwrap();
        assert_eq!((back.fingerprint, back.announce), (Some(fp(1)), false));
        let info: serde_json::Value = serde_json::from_slice(&me.info()).unwrap();
        assert!(info.get("port").is_none() && info["fingerprint"] == fp(1).to_hex());
        let v1: serde_json::Value = serde_json::from_slice(&me.info_v1()).unwrap();
        assert_eq!(v1["deviceType"], "headless");
    }

    fn offer(files: &str) -> String {
        format!(
            r#"{{"info":{{"alias":"phone","version":"2.2","fingerprint":"{}","port":53317,"protocol":"https"}},"files":{files}}}"#,
            fp(7).to_hex()
        )
    }

    #[test]
    fn files_keep_their_order_names_hashes_and_times() {
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let body = offer(&format!(
            r#"{{"z":{{"id":"z","fileName":"Photos/a.jpg","size":3,"fileType":"image/jpeg","sha256":"{sha}",
                     "metadata":{{"modified":"2026-08-01T10:20:30.456Z"}}}},
                 "a":{{"id":"a","fileName":"b.txt","size":0,"fileType":"text/plain"}}}}"#
        ));
        let parsed = Offer::parse(body.as_bytes(), MAX_FILES).unwrap();
        assert_eq!(parsed.sender.fingerprint, Some(fp(7)));
        let Offered::Files(files) = parsed.offered else {
            panic!("not files")
        };
        assert_eq!(files.len(), 2);
        assert_eq!(
            (files[0].id.as_str(), files[0].name.as_str()),
            ("z", "Photos/a.jpg")
        );
        assert_eq!(files[0].sha256.map(|h| h[0]), Some(0xe3));
        assert_eq!(
            files[0].modified.map(Timestamp::format).as_deref(),
            Some("2026-08-01T10:20:30.456Z")
        );
        assert_eq!((files[1].size, files[1].sha256), (0, None));
    }

    #[test]
    fn one_text_file_with_a_preview_is_a_message() {
        let body = offer(
            r#"{"m":{"id":"m","fileName":"x.txt","size":5,"fileType":"text/plain","preview":"hello"}}"#,
        );
        assert_eq!(
            Offer::parse(body.as_bytes(), MAX_FILES).unwrap().offered,
            Offered::Text("hello".into())
        );
        // A text file without a preview is a file; so is an image with one.
        for files in [
            r#"{"m":{"id":"m","fileName":"x.txt","size":5,"fileType":"text/plain"}}"#,
            r#"{"m":{"id":"m","fileName":"x.png","size":5,"fileType":"image/png","preview":"p"}}"#,
        ] {
            assert!(matches!(
                Offer::parse(offer(files).as_bytes(), MAX_FILES)
                    .unwrap()
                    .offered,
                Offered::Files(_)
            ));
        }
        let long = "x".repeat(MAX_TEXT_LEN + 1);
        let files = format!(
            r#"{{"m":{{"id":"m","fileName":"x.txt","size":1,"fileType":"text/plain","preview":"{long}"}}}}"#
        );
        assert_eq!(
            Offer::parse(offer(&files).as_bytes(), MAX_FILES),
            Err(WireError::TextTooLong)
        );
    }

    #[test]
    fn bad_offers_are_refused_with_a_reason() {
        type Check = fn(&WireError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("{}", |e| *e == WireError::NoFiles),
            (r#"{"a":{"id":"b","fileName":"x","size":1}}"#, |e| {
                matches!(e, WireError::BadFileId(_))
            }),
            (r#"{"a":{"id":"a","fileName":"","size":1}}"#, |e| {
                matches!(e, WireError::BadFileName { .. })
            }),
            (r#"{"a":{"id":"a","fileName":"x","size":-1}}"#, |e| {
                matches!(e, WireError::Malformed(_))
            }),
            (r#"{"a":{"id":"a","fileName":"x","size":1e30}}"#, |e| {
                matches!(e, WireError::Malformed(_))
            }),
            (
                r#"{"a":{"id":"a","fileName":"x","size":18446744073709551616}}"#,
                |e| matches!(e, WireError::Malformed(_)),
            ),
            (
                r#"{"a":{"id":"a","fileName":"x","size":1,"sha256":"abc"}}"#,
                |e| matches!(e, WireError::BadSha256 { .. }),
            ),
            (r#"[]"#, |e| matches!(e, WireError::Malformed(_))),
        ];
        for (files, check) in cases {
            let err = Offer::parse(offer(files).as_bytes(), MAX_FILES).unwrap_err();
            assert!(check(&err), "{files}: {err:?}");
        }
        // Sizes near 2^63 parse; the limits are the store's and the
        // manifest's business.
        let big = offer(r#"{"a":{"id":"a","fileName":"x","size":9223372036854775807}}"#);
        assert!(Offer::parse(big.as_bytes(), MAX_FILES).is_ok());
    }

    #[test]
    fn too_many_files_stop_the_parser() {
        let mut files = String::from("{");
        for i in 0..=MAX_FILES {
            if i > 0 {
                files.push(',');
            }
            files.push_str(&format!(
                r#""{i}":{{"id":"{i}","fileName":"f{i}","size":0}}"#
            ));
        }
        files.push('}');
        assert_eq!(
            Offer::parse(offer(&files).as_bytes(), 10),
            Err(WireError::TooManyFiles { max: 10 })
        );
        let three = offer(
            r#"{"a":{"id":"a","fileName":"a","size":0},"b":{"id":"b","fileName":"b","size":0},"c":{"id":"c","fileName":"c","size":0}}"#,
        );
        assert_eq!(
            Offer::parse(three.as_bytes(), 2),
            Err(WireError::TooManyFiles { max: 2 })
        );
    }

    #[test]
    fn timestamps_parse_as_rfc_3339() {
        let t = |s: &str| Timestamp::parse(s);
        assert_eq!(
            t("1970-01-01T00:00:00Z"),
            Some(Timestamp { secs: 0, nanos: 0 })
        );
        assert_eq!(
            t("2000-01-01T01:00:00+01:00"),
            Some(Timestamp {
                secs: 946_684_800,
                nanos: 0
            })
        );
        assert_eq!(
            t("1970-01-01T00:00:00.5Z"),
            Some(Timestamp {
                secs: 0,
                nanos: 500_000_000
            })
        );
        assert_eq!(t("1969-12-31T23:59:59Z").map(|t| t.secs), Some(-1));
        for bad in [
            "yesterday",
            "2000-01-01T00:00:00",
            "2000-02-30T00:00:00Z",
            "2000-01-01T24:00:00Z",
            "2000-01-01T00:00:00.Z",
            "2000-01-01T00:00:00+0100",
            "２000-01-01T00:00:00Z",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn queries_decode_and_encode() {
        let pairs = parse_query("sessionId=a%20b&fileId=x+y&token=%E2%9C%93&pin=&bad=%ZZ");
        assert_eq!(query_value(&pairs, "sessionId"), Some("a b"));
        assert_eq!(query_value(&pairs, "fileId"), Some("x y"));
        assert_eq!(query_value(&pairs, "token"), Some("✓"));
        assert_eq!(query_value(&pairs, "pin"), Some(""));
        assert_eq!(query_value(&pairs, "bad"), None);
        let value = "a b/✓&=";
        let encoded = percent_encode(value);
        assert_eq!(
            query_value(&parse_query(&format!("k={encoded}")), "k"),
            Some(value)
        );
    }

    #[test]
    fn answers_and_errors_round_trip() {
        let answer = PrepareResponse {
            session_id: "s".into(),
            files: [("a".to_owned(), "t".to_owned())].into(),
        };
        assert_eq!(PrepareResponse::parse(&answer.to_json()), Ok(answer));
        assert!(PrepareResponse::parse(br#"{"sessionId":"","files":{}}"#).is_err());
        assert_eq!(
            error_message(&error_body("PIN\u{7} required")).as_deref(),
            Some("PIN required")
        );
        assert_eq!(error_message(b"<html>"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Arbitrary bytes never panic the parsers.
        #[test]
        fn parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Device::parse(&body);
            let _ = Offer::parse(&body, MAX_FILES);
            let _ = PrepareResponse::parse(&body);
            let _ = error_message(&body);
            if let Ok(text) = std::str::from_utf8(&body) {
                let _ = Timestamp::parse(text);
                let _ = parse_query(text);
            }
        }

        /// Every field of a well-formed offer survives, cleaned.
        #[test]
        fn offers_parse_what_they_say(
            names in proptest::collection::vec("[^/\\x00]{1,40}(/[^/\\x00]{1,20})?", 1..8),
            sizes in proptest::collection::vec(any::<u64>(), 8),
            alias in ".{0,300}",
        ) {
            let files: serde_json::Map<String, serde_json::Value> = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    (i.to_string(), serde_json::json!({
                        "id": i.to_string(), "fileName": name, "size": sizes[i],
                        "fileType": "application/octet-stream",
                    }))
                })
                .collect();
            let body = serde_json::json!({
                "info": {"alias": alias, "fingerprint": fp(3).to_hex()},
                "files": files,
            });
            let parsed = Offer::parse(&serde_json::to_vec(&body).unwrap(), MAX_FILES).unwrap();
            prop_assert!(parsed.sender.alias.len() <= 255);
            prop_assert!(!parsed.sender.alias.chars().any(char::is_control));
            let Offered::Files(files) = parsed.offered else { panic!("not files") };
            prop_assert_eq!(files.len(), names.len());
            for (i, f) in files.iter().enumerate() {
                prop_assert_eq!(&f.name, &names[i]);
                prop_assert_eq!(f.size, sizes[i]);
            }
        }

        /// Formatting and parsing a time gives it back (to the millisecond).
        #[test]
        fn timestamps_round_trip(secs in -62_135_596_800i64..253_402_300_799, millis in 0u32..1000) {
            let t = Timestamp { secs, nanos: millis * 1_000_000 };
            prop_assert_eq!(Timestamp::parse(&t.format()), Some(t));
        }
    }
}
