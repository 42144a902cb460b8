//! The framing codec: [`Message`] <-> bytes.
//!
//! Every message travels as one length-prefixed frame (`len: u32` big-endian,
//! then `len` bytes of body = `type: u8` + payload; see `PROTOCOL.md`). The
//! codec is written for a hostile peer:
//!
//! * A length prefix of zero or above [`MAX_FRAME_LEN`] is rejected as soon as
//!   its four bytes are buffered, so a peer cannot make us buffer gigabytes;
//!   an unknown type, or a length above what the frame's type can hold (a
//!   1 MiB `Hello`), as soon as the type byte is in; a `Text` whose length
//!   field is over its limit or disagrees with the frame's, as soon as that
//!   field is in. So only an `Offer` or `Accept` (up to 8 and 2.5 MiB), a
//!   `Data` (1 MiB) or a `Text` (64 KiB) makes us buffer more than about
//!   1 KiB, and only once its type byte has said so.
//! * Every count and length read from the wire is checked against both its
//!   protocol limit and the bytes actually left in the frame before anything is
//!   allocated, and all reads go through bounds-checked helpers: no input can
//!   make [`decode`] panic, overflow or over-allocate.
//! * [`encode`] enforces the very same limits, so we never send a frame the
//!   peer is obliged to reject; anything [`decode`] returns re-encodes to the
//!   exact bytes it was decoded from.
//!
//! Bulk data is the hot path, so `Data` payloads are split off the receive
//! buffer as [`Bytes`](bytes::Bytes) without copying, and senders can use
//! [`encode_data_header`] to write only the 17-byte header in front of a
//! payload they already own.

use bytes::{Buf, BufMut, BytesMut};

use super::{
    BlockRange, Entry, EntryKind, EntryMeta, ErrorCode, MAX_BLOCKS, MAX_DATA_CHUNK, MAX_ENTRIES,
    MAX_FRAME_LEN, MAX_NAME_LEN, MAX_PATH_LEN, MAX_REASON_LEN, MAX_TEXT_LEN, Manifest, Message,
    Mtime, PROBE_NONCE_LEN,
};

/// Bytes in front of a `Data` payload: length prefix (4) + type (1) + file
/// index (4) + offset (8).
pub const DATA_HEADER_LEN: usize = LEN_PREFIX + 1 + 4 + 8;

/// Bytes of a whole `BlockValue` frame: length prefix, type, file index,
/// block index, value.
pub const BLOCK_VALUE_FRAME_LEN: usize = LEN_PREFIX + 1 + 4 + 8 + 32;

/// Size of the frame length prefix.
const LEN_PREFIX: usize = 4;

/// Most spare capacity [`decode`] reserves for a partially received frame.
const RESERVE_AHEAD: usize = 64 << 10;

const TYPE_HELLO: u8 = 0x01;
const TYPE_OFFER: u8 = 0x02;
const TYPE_ACCEPT: u8 = 0x03;
const TYPE_REJECT: u8 = 0x04;
const TYPE_DATA: u8 = 0x05;
const TYPE_DONE: u8 = 0x06;
const TYPE_ERROR: u8 = 0x07;
const TYPE_PROBE: u8 = 0x08;
const TYPE_ECHO: u8 = 0x09;
const TYPE_PROBE_RESULT: u8 = 0x0a;
const TYPE_PAIR_REQUEST: u8 = 0x0b;
const TYPE_PAIR_CONFIRM: u8 = 0x0c;
const TYPE_TEXT: u8 = 0x0d;
const TYPE_BLOCK_VALUE: u8 = 0x0e;
const TYPE_METADATA: u8 = 0x0f;

/// Encoded size of one [`EntryMeta`]: seconds, nanoseconds, flags.
const META_LEN: usize = 8 + 4 + 1;
/// Flags of an [`EntryMeta`]: executable, and a modification time follows.
const META_EXECUTABLE: u8 = 1;
const META_MTIME: u8 = 2;
/// Nanoseconds in a second: `mtime_nsec` must be below.
const NANOS: u32 = 1_000_000_000;

const KIND_DIRECTORY: u8 = 0;
const KIND_FILE: u8 = 1;

/// Smallest possible encoded entry: kind byte + empty path string. Used to
/// bound an untrusted entry count by the bytes left in the frame.
const MIN_ENTRY_LEN: usize = 1 + 2;

/// Extra bytes a file entry carries after its path: size + BLAKE3 hash.
const FILE_ENTRY_EXTRA: usize = 8 + 32;

/// Encoded size of one [`BlockRange`]: file + first + count.
const RANGE_LEN: usize = 4 + 8 + 8;

// The casts in `put_str` and `encode` rely on these.
const _: () = assert!(MAX_NAME_LEN <= u16::MAX as usize);
const _: () = assert!(MAX_REASON_LEN <= u16::MAX as usize);
const _: () = assert!(MAX_PATH_LEN <= u16::MAX as usize);
const _: () = assert!(MAX_ENTRIES <= u32::MAX as usize);
const _: () = assert!(MAX_FRAME_LEN <= u32::MAX as usize);
const _: () = assert!(MAX_DATA_CHUNK + DATA_HEADER_LEN - LEN_PREFIX <= MAX_FRAME_LEN);
const _: () = assert!(MAX_TEXT_LEN + 1 + 4 <= MAX_FRAME_LEN);

/// Field names used in error messages.
const DEVICE_NAME: &str = "device name";
const PATH: &str = "path";
const REJECT_REASON: &str = "reject reason";
const ERROR_MESSAGE: &str = "error message";
const TEXT: &str = "text";

/// Why a received byte stream is not a valid frame sequence.
///
/// Any of these is a protocol violation: the connection cannot be resynchronised
/// and must be closed (after sending `Error` with code `Protocol`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix was zero; every frame carries at least a type byte.
    #[error("frame length of 0 bytes; every frame carries at least a type byte")]
    EmptyFrame,
    /// The length prefix announced more than [`MAX_FRAME_LEN`] bytes.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// Announced body length.
        len: u32,
        /// The limit, [`MAX_FRAME_LEN`].
        max: usize,
    },
    /// The length prefix announced more than a frame of this type can
    /// hold (e.g. a 1 MiB `Hello`).
    #[error("{frame} frame of {len} bytes exceeds the {max} bytes such a frame can have")]
    TooLargeForType {
        /// Which frame type.
        frame: &'static str,
        /// Announced body length.
        len: usize,
        /// The most a valid frame of this type has.
        max: usize,
    },
    /// The type byte is not one this protocol version defines.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// A field extends past the end of its frame.
    #[error("truncated {frame} frame: the {field} runs past the end of the frame")]
    Truncated {
        /// Which frame type.
        frame: &'static str,
        /// Which field was cut short.
        field: &'static str,
    },
    /// A string is longer than its kind allows.
    #[error("{field} of {len} bytes exceeds the {max}-byte limit")]
    StringTooLong {
        /// Which string.
        field: &'static str,
        /// Announced byte length.
        len: usize,
        /// The limit for this kind of string.
        max: usize,
    },
    /// A string is not valid UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        field: &'static str,
    },
    /// An offer announces more than [`MAX_ENTRIES`] entries.
    #[error("offer of {count} entries exceeds the {max}-entry limit")]
    TooManyEntries {
        /// Announced entry count.
        count: u32,
        /// The limit, [`MAX_ENTRIES`].
        max: usize,
    },
    /// An offer announces more entries than its remaining bytes could hold.
    #[error(
        "offer announces {count} entries but only {remaining} bytes follow, too few to hold them"
    )]
    EntryCountExceedsFrame {
        /// Announced entry count.
        count: u32,
        /// Bytes left in the frame after the count.
        remaining: usize,
    },
    /// An entry kind byte other than 0 (directory) or 1 (file).
    #[error("unknown entry kind {0} (expected 0 = directory or 1 = file)")]
    BadEntryKind(u8),
    /// Bytes left over after a complete payload.
    #[error("{count} unexpected bytes after the {frame} payload")]
    TrailingBytes {
        /// Which frame type.
        frame: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// More block ranges than [`MAX_BLOCKS`], or more than the remaining
    /// bytes could hold.
    #[error("{what}: {count} items do not fit (limit {max}, or too few bytes follow)")]
    TooManyBlocks {
        /// What was counted (block ranges).
        what: &'static str,
        /// Announced count.
        count: u32,
        /// The limit, [`MAX_BLOCKS`].
        max: usize,
    },
    /// A `Data` frame with no payload.
    #[error("data frame carries no payload")]
    EmptyData,
    /// A `Data` payload above [`MAX_DATA_CHUNK`].
    #[error("data chunk of {len} bytes exceeds the {max}-byte limit")]
    DataTooLarge {
        /// Payload length.
        len: usize,
        /// The limit, [`MAX_DATA_CHUNK`].
        max: usize,
    },
    /// A boolean byte other than 0 or 1.
    #[error("{field} is {value}, expected 0 or 1")]
    BadBool {
        /// Which field.
        field: &'static str,
        /// The byte received.
        value: u8,
    },
    /// A modification time's nanoseconds at or above 10^9.
    #[error("modification time with {0} nanoseconds (must be below 1000000000)")]
    BadNanoseconds(u32),
    /// Metadata flags with a bit other than executable (1) and
    /// modification time (2) set.
    #[error("metadata flags {0:#04x} set bits other than executable (0x01) and time (0x02)")]
    BadMetadataFlags(u8),
    /// A modification time other than zero without the time flag.
    #[error("metadata carries a modification time but its flag says there is none")]
    TimeWithoutFlag,
}

/// Why a message cannot be sent: it breaks a limit the peer would enforce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string is longer than its kind allows.
    #[error("{field} of {len} bytes exceeds the {max}-byte limit")]
    StringTooLong {
        /// Which string.
        field: &'static str,
        /// Its byte length.
        len: usize,
        /// The limit for this kind of string.
        max: usize,
    },
    /// An offer has more than [`MAX_ENTRIES`] entries.
    #[error("offer of {count} entries exceeds the {max}-entry limit")]
    TooManyEntries {
        /// Number of entries.
        count: usize,
        /// The limit, [`MAX_ENTRIES`].
        max: usize,
    },
    /// More block ranges than [`MAX_BLOCKS`].
    #[error("{count} {what} exceed the {max} limit; send fewer or larger files at once")]
    TooManyBlocks {
        /// What was counted (block ranges).
        what: &'static str,
        /// Number of items.
        count: usize,
        /// The limit, [`MAX_BLOCKS`].
        max: usize,
    },
    /// A `Data` message with an empty payload.
    #[error("data chunk is empty; every data frame must carry at least 1 byte")]
    EmptyData,
    /// A modification time's nanoseconds at or above 10^9.
    #[error("modification time with {0} nanoseconds (must be below 1000000000)")]
    BadNanoseconds(u32),
    /// A `Data` payload above [`MAX_DATA_CHUNK`].
    #[error("data chunk of {len} bytes exceeds the {max}-byte limit")]
    DataTooLarge {
        /// Payload length.
        len: usize,
        /// The limit, [`MAX_DATA_CHUNK`].
        max: usize,
    },
    /// The whole frame body would exceed [`MAX_FRAME_LEN`] (a huge offer).
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// Body length the frame would have.
        len: usize,
        /// The limit, [`MAX_FRAME_LEN`].
        max: usize,
    },
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Appends one frame carrying `msg` to `dst`.
///
/// Refuses (and leaves `dst` untouched) any message a conforming peer would
/// reject: over-long strings, more than [`MAX_ENTRIES`] entries, an empty or
/// over-[`MAX_DATA_CHUNK`] data chunk, or a frame body above
/// [`MAX_FRAME_LEN`]. Semantic checks (paths, versions, ordering) are not the
/// codec's business.
///
/// # Errors
///
/// An [`EncodeError`] naming the first limit `msg` breaks.
pub fn encode(msg: &Message, dst: &mut BytesMut) -> Result<(), EncodeError> {
    let body_len = body_len(msg)?;
    dst.reserve(LEN_PREFIX + body_len);
    let start = dst.len();
    match msg {
        Message::Hello { version, name } => {
            put_header(dst, body_len, TYPE_HELLO);
            dst.put_u16(*version);
            put_str(dst, name.as_wire());
        }
        Message::Offer(manifest) => {
            put_header(dst, body_len, TYPE_OFFER);
            dst.put_u32(manifest.block_size);
            // Checked against MAX_ENTRIES (<= u32::MAX) by `body_len`.
            dst.put_u32(manifest.entries.len() as u32);
            for entry in &manifest.entries {
                match &entry.kind {
                    EntryKind::Directory => {
                        dst.put_u8(KIND_DIRECTORY);
                        put_str(dst, &entry.path);
                    }
                    EntryKind::File { size, tag } => {
                        dst.put_u8(KIND_FILE);
                        put_str(dst, &entry.path);
                        dst.put_u64(*size);
                        dst.put_slice(tag);
                    }
                }
            }
        }
        Message::Accept { need } => {
            put_header(dst, body_len, TYPE_ACCEPT);
            // Checked against MAX_BLOCKS by `body_len`.
            dst.put_u32(need.len() as u32);
            for range in need {
                dst.put_u32(range.file);
                dst.put_u64(range.first);
                dst.put_u64(range.count);
            }
        }
        Message::Reject { reason } => {
            put_header(dst, body_len, TYPE_REJECT);
            put_str(dst, reason.as_wire());
        }
        Message::Data { file, offset, data } => {
            encode_data_header(*file, *offset, data.len(), dst);
            dst.put_slice(data);
        }
        Message::BlockValue { file, block, value } => {
            put_header(dst, body_len, TYPE_BLOCK_VALUE);
            dst.put_u32(*file);
            dst.put_u64(*block);
            dst.put_slice(value);
        }
        Message::Done => put_header(dst, body_len, TYPE_DONE),
        Message::Error { code, message } => {
            put_header(dst, body_len, TYPE_ERROR);
            dst.put_u16(code.to_u16());
            put_str(dst, message.as_wire());
        }
        Message::Probe { port, nonce } => {
            put_header(dst, body_len, TYPE_PROBE);
            dst.put_u16(*port);
            dst.put_slice(nonce);
        }
        Message::Echo { nonce } => {
            put_header(dst, body_len, TYPE_ECHO);
            dst.put_slice(nonce);
        }
        Message::ProbeResult { quic, tcp } => {
            put_header(dst, body_len, TYPE_PROBE_RESULT);
            dst.put_u8(u8::from(*quic));
            dst.put_u8(u8::from(*tcp));
        }
        Message::PairRequest => put_header(dst, body_len, TYPE_PAIR_REQUEST),
        Message::PairConfirm { accepted } => {
            put_header(dst, body_len, TYPE_PAIR_CONFIRM);
            dst.put_u8(u8::from(*accepted));
        }
        Message::Metadata(metas) => {
            put_header(dst, body_len, TYPE_METADATA);
            // Checked against MAX_ENTRIES by `body_len`.
            dst.put_u32(metas.len() as u32);
            for meta in metas {
                let mtime = meta.mtime.unwrap_or_default();
                dst.put_i64(mtime.sec);
                dst.put_u32(mtime.nsec);
                let mut flags = 0;
                if meta.executable {
                    flags |= META_EXECUTABLE;
                }
                if meta.mtime.is_some() {
                    flags |= META_MTIME;
                }
                dst.put_u8(flags);
            }
        }
        Message::Text { text } => {
            put_header(dst, body_len, TYPE_TEXT);
            // Checked against MAX_TEXT_LEN (< u32::MAX) by `body_len`.
            dst.put_u32(text.len() as u32);
            dst.put_slice(text.as_bytes());
        }
    }
    debug_assert_eq!(dst.len() - start, LEN_PREFIX + body_len, "{msg:?}");
    Ok(())
}

/// Appends the [`DATA_HEADER_LEN`]-byte header of a `Data` frame whose
/// `len`-byte payload the caller appends (or writes to the stream) right
/// after it.
///
/// This is the zero-copy path for bulk data: the payload never passes through
/// a [`BytesMut`]. `len` must be in `1..=MAX_DATA_CHUNK`; this is only
/// `debug_assert`ed, and a header announcing any other length makes the peer
/// abort the transfer.
pub fn encode_data_header(file: u32, offset: u64, len: usize, dst: &mut BytesMut) {
    debug_assert!(
        (1..=MAX_DATA_CHUNK).contains(&len),
        "data chunk of {len} bytes outside 1..={MAX_DATA_CHUNK}"
    );
    let body_len = (DATA_HEADER_LEN - LEN_PREFIX).saturating_add(len);
    dst.reserve(DATA_HEADER_LEN);
    put_header(dst, body_len, TYPE_DATA);
    dst.put_u32(file);
    dst.put_u64(offset);
}

/// Checks every limit of `msg` and returns its frame body length.
fn body_len(msg: &Message) -> Result<usize, EncodeError> {
    let len = match msg {
        Message::Hello { name, .. } => 1 + 2 + str_len(name.as_wire(), DEVICE_NAME, MAX_NAME_LEN)?,
        Message::Offer(manifest) => {
            let count = manifest.entries.len();
            if count > MAX_ENTRIES {
                return Err(EncodeError::TooManyEntries {
                    count,
                    max: MAX_ENTRIES,
                });
            }
            let mut len: usize = 1 + 4 + 4;
            for entry in &manifest.entries {
                let extra = match entry.kind {
                    EntryKind::Directory => 0,
                    EntryKind::File { .. } => FILE_ENTRY_EXTRA,
                };
                let path = str_len(&entry.path, PATH, MAX_PATH_LEN)?;
                len = len.saturating_add(1 + path + extra);
            }
            len
        }
        Message::Accept { need } => {
            if need.len() > MAX_BLOCKS {
                return Err(EncodeError::TooManyBlocks {
                    what: "block ranges",
                    count: need.len(),
                    max: MAX_BLOCKS,
                });
            }
            1 + 4 + need.len() * RANGE_LEN
        }
        Message::Done => 1,
        Message::BlockValue { .. } => BLOCK_VALUE_FRAME_LEN - LEN_PREFIX,
        Message::Reject { reason } => 1 + str_len(reason.as_wire(), REJECT_REASON, MAX_REASON_LEN)?,
        Message::Data { data, .. } => {
            if data.is_empty() {
                return Err(EncodeError::EmptyData);
            }
            if data.len() > MAX_DATA_CHUNK {
                return Err(EncodeError::DataTooLarge {
                    len: data.len(),
                    max: MAX_DATA_CHUNK,
                });
            }
            DATA_HEADER_LEN - LEN_PREFIX + data.len()
        }
        Message::Error { message, .. } => {
            1 + 2 + str_len(message.as_wire(), ERROR_MESSAGE, MAX_REASON_LEN)?
        }
        Message::Probe { .. } => 1 + 2 + PROBE_NONCE_LEN,
        Message::Echo { .. } => 1 + PROBE_NONCE_LEN,
        Message::ProbeResult { .. } => 1 + 1 + 1,
        Message::Metadata(metas) => {
            if metas.len() > MAX_ENTRIES {
                return Err(EncodeError::TooManyEntries {
                    count: metas.len(),
                    max: MAX_ENTRIES,
                });
            }
            if let Some(bad) = metas
                .iter()
                .filter_map(|m| m.mtime)
                .find(|t| t.nsec >= NANOS)
            {
                return Err(EncodeError::BadNanoseconds(bad.nsec));
            }
            1 + 4 + metas.len() * META_LEN
        }
        Message::PairRequest => 1,
        Message::PairConfirm { .. } => 1 + 1,
        Message::Text { text } => {
            if text.len() > MAX_TEXT_LEN {
                return Err(EncodeError::StringTooLong {
                    field: TEXT,
                    len: text.len(),
                    max: MAX_TEXT_LEN,
                });
            }
            1 + 4 + text.len()
        }
    };
    if len > MAX_FRAME_LEN {
        return Err(EncodeError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len)
}

/// Encoded size of string `s` (length prefix included), if within `max`.
fn str_len(s: &str, field: &'static str, max: usize) -> Result<usize, EncodeError> {
    if s.len() > max {
        return Err(EncodeError::StringTooLong {
            field,
            len: s.len(),
            max,
        });
    }
    Ok(2 + s.len())
}

/// Writes the length prefix and type byte. `body_len` was checked against
/// [`MAX_FRAME_LEN`] (<= `u32::MAX`), except for a misused
/// [`encode_data_header`], where saturating keeps it a frame the peer rejects.
fn put_header(dst: &mut BytesMut, body_len: usize, ty: u8) {
    dst.put_u32(u32::try_from(body_len).unwrap_or(u32::MAX));
    dst.put_u8(ty);
}

/// Writes a string whose length was already checked by [`str_len`]; every
/// string limit is <= `u16::MAX` (asserted at compile time above).
fn put_str(dst: &mut BytesMut, s: &str) {
    dst.put_u16(s.len() as u16);
    dst.put_slice(s.as_bytes());
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// The whole length (prefix included) of the frame starting at `src[0]`,
/// once its length prefix is there, at most the longest valid frame; the
/// prefix itself is checked by [`decode`].
#[must_use]
pub fn frame_len(src: &[u8]) -> Option<usize> {
    let prefix = src.first_chunk::<LEN_PREFIX>()?;
    let body = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
    Some(LEN_PREFIX + body.min(MAX_FRAME_LEN))
}

/// Removes one complete frame from the front of `src` and decodes it.
///
/// * `Ok(Some(msg))`: a frame was consumed.
/// * `Ok(None)`: `src` does not hold a whole frame yet; nothing was consumed.
///   Some spare capacity (at most 64 KiB) is reserved for the rest, so a
///   `read_buf` into `src` makes progress; the full length is never reserved
///   up front on the peer's word alone.
/// * `Err(_)`: protocol violation; nothing was consumed and the connection
///   must be closed. A zero or oversized length prefix is reported as soon as
///   its 4 bytes are present, without waiting for the body.
///
/// A `Data` payload is split off `src` without copying.
///
/// # Errors
///
/// A [`DecodeError`] when the buffered bytes are not a valid frame.
pub fn decode(src: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
    let Some((prefix, rest)) = src.split_first_chunk::<LEN_PREFIX>() else {
        return Ok(None);
    };
    let body_len = check_frame_len(u32::from_be_bytes(*prefix))?;
    check_head(rest, body_len)?;
    let Some(body) = rest.get(..body_len) else {
        // Make room for (part of) the rest, but never let 4 bytes from the
        // peer make us allocate megabytes ahead of the data itself.
        let missing = (LEN_PREFIX + body_len).saturating_sub(src.len());
        src.reserve(missing.min(RESERVE_AHEAD));
        return Ok(None);
    };
    match parse_body(body)? {
        Parsed::Message(msg) => {
            src.advance(LEN_PREFIX + body_len);
            Ok(Some(msg))
        }
        Parsed::Data { file, offset, len } => {
            // parse_body checked body_len == DATA_HEADER_LEN - LEN_PREFIX + len,
            // and src holds LEN_PREFIX + body_len bytes, so neither can panic.
            src.advance(DATA_HEADER_LEN);
            let data = src.split_to(len).freeze();
            Ok(Some(Message::Data { file, offset, data }))
        }
    }
}

/// The header of the `Data` frame `src` starts with, once its
/// [`DATA_HEADER_LEN`] bytes are there: lets a receiver read the payload
/// straight into a buffer of its own rather than through [`decode`]'s.
///
/// * `Ok(Some(header))`: a `Data` frame whose `header.len`-byte payload
///   follows the header (some of it may already be in `src`). It passed
///   exactly the checks [`decode`] makes.
/// * `Ok(None)`: fewer than [`DATA_HEADER_LEN`] bytes, or another kind of
///   frame (or a `Data` frame too short to hold a header, which [`decode`]
///   refuses once its body is complete): use [`decode`].
///
/// # Errors
///
/// The [`DecodeError`] [`decode`] would report for this frame.
pub fn decode_data_header(src: &[u8]) -> Result<Option<DataHeader>, DecodeError> {
    let Some(header) = src.first_chunk::<DATA_HEADER_LEN>() else {
        return Ok(None);
    };
    let prefix = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let body_len = check_frame_len(prefix)?;
    let Some(len) = body_len.checked_sub(DATA_HEADER_LEN - LEN_PREFIX) else {
        return Ok(None);
    };
    let mut r = Reader::new(&header[LEN_PREFIX..], frame_name(TYPE_DATA));
    if r.u8("type")? != TYPE_DATA {
        return Ok(None);
    }
    let file = r.u32("file index")?;
    let offset = r.u64("offset")?;
    check_data_len(len)?;
    Ok(Some(DataHeader { file, offset, len }))
}

/// A `Data` payload carries 1 to [`MAX_DATA_CHUNK`] bytes.
fn check_data_len(len: usize) -> Result<(), DecodeError> {
    if len == 0 {
        return Err(DecodeError::EmptyData);
    }
    if len > MAX_DATA_CHUNK {
        return Err(DecodeError::DataTooLarge {
            len,
            max: MAX_DATA_CHUNK,
        });
    }
    Ok(())
}

/// The largest body a frame of type `ty` can have, or `None` for an
/// unknown type. Every valid frame fits: the limits follow from the
/// payloads' own (`MAX_NAME_LEN`, `MAX_TEXT_LEN`, ...).
fn max_body_len(ty: u8) -> Option<usize> {
    let string = |max: usize| 2 + max;
    Some(
        1 + match ty {
            TYPE_HELLO => 2 + string(MAX_NAME_LEN),
            TYPE_OFFER => MAX_FRAME_LEN - 1,
            TYPE_ACCEPT => 4 + RANGE_LEN * MAX_BLOCKS,
            TYPE_REJECT => string(MAX_REASON_LEN),
            TYPE_DATA => DATA_HEADER_LEN - LEN_PREFIX - 1 + MAX_DATA_CHUNK,
            TYPE_ERROR => 2 + string(MAX_REASON_LEN),
            TYPE_PROBE => 2 + PROBE_NONCE_LEN,
            TYPE_ECHO => PROBE_NONCE_LEN,
            TYPE_PROBE_RESULT => 2,
            TYPE_PAIR_CONFIRM => 1,
            TYPE_TEXT => 4 + MAX_TEXT_LEN,
            TYPE_BLOCK_VALUE => BLOCK_VALUE_FRAME_LEN - LEN_PREFIX - 1,
            TYPE_METADATA => 4 + META_LEN * MAX_ENTRIES,
            TYPE_DONE | TYPE_PAIR_REQUEST => 0,
            _ => return None,
        },
    )
}

/// Checks what the first bytes of a frame body (`head`, possibly all of
/// it) already decide, so that a frame that cannot be valid is refused
/// before its body is buffered: an unknown type, a body longer than its
/// type allows, and a `Text` whose length field is over [`MAX_TEXT_LEN`]
/// or disagrees with the frame's.
fn check_head(head: &[u8], body_len: usize) -> Result<(), DecodeError> {
    let Some(&ty) = head.first() else {
        return Ok(());
    };
    let max = max_body_len(ty).ok_or(DecodeError::UnknownType(ty))?;
    if body_len > max {
        return Err(match ty {
            // Said as what it means for the payload.
            TYPE_DATA => DecodeError::DataTooLarge {
                len: body_len - (DATA_HEADER_LEN - LEN_PREFIX),
                max: MAX_DATA_CHUNK,
            },
            TYPE_TEXT => DecodeError::StringTooLong {
                field: TEXT,
                len: body_len - 1 - 4,
                max: MAX_TEXT_LEN,
            },
            _ => DecodeError::TooLargeForType {
                frame: frame_name(ty),
                len: body_len,
                max,
            },
        });
    }
    if ty == TYPE_TEXT
        && let Some(len) = head.get(1..5)
    {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > MAX_TEXT_LEN {
            return Err(DecodeError::StringTooLong {
                field: TEXT,
                len,
                max: MAX_TEXT_LEN,
            });
        }
        let expected = 1 + 4 + len;
        if expected > body_len {
            return Err(DecodeError::Truncated {
                frame: frame_name(TYPE_TEXT),
                field: TEXT,
            });
        }
        if expected < body_len {
            return Err(DecodeError::TrailingBytes {
                frame: frame_name(TYPE_TEXT),
                count: body_len - expected,
            });
        }
    }
    Ok(())
}

/// The name of a frame type, for error messages.
fn frame_name(ty: u8) -> &'static str {
    match ty {
        TYPE_HELLO => "hello",
        TYPE_OFFER => "offer",
        TYPE_ACCEPT => "accept",
        TYPE_REJECT => "reject",
        TYPE_DATA => "data",
        TYPE_DONE => "done",
        TYPE_ERROR => "error",
        TYPE_PROBE => "probe",
        TYPE_ECHO => "echo",
        TYPE_PROBE_RESULT => "probe result",
        TYPE_PAIR_REQUEST => "pair request",
        TYPE_PAIR_CONFIRM => "pair confirm",
        TYPE_TEXT => "text",
        TYPE_BLOCK_VALUE => "block value",
        TYPE_METADATA => "metadata",
        _ => "unknown",
    }
}

/// What [`decode_data_header`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Manifest entry index.
    pub file: u32,
    /// Byte offset in that file.
    pub offset: u64,
    /// Payload length, `1..=MAX_DATA_CHUNK`.
    pub len: usize,
}

/// Validates a length prefix and converts it to a body length.
fn check_frame_len(len: u32) -> Result<usize, DecodeError> {
    if len == 0 {
        return Err(DecodeError::EmptyFrame);
    }
    match usize::try_from(len) {
        Ok(n) if n <= MAX_FRAME_LEN => Ok(n),
        _ => Err(DecodeError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        }),
    }
}

/// Result of parsing a frame body. `Data` is returned as a description so the
/// caller can split the payload off the buffer without copying.
enum Parsed {
    Message(Message),
    Data { file: u32, offset: u64, len: usize },
}

/// Parses a complete frame body (type byte + payload).
fn parse_body(body: &[u8]) -> Result<Parsed, DecodeError> {
    let Some((&ty, payload)) = body.split_first() else {
        return Err(DecodeError::EmptyFrame);
    };
    let msg = match ty {
        TYPE_HELLO => {
            let mut r = Reader::new(payload, frame_name(TYPE_HELLO));
            let version = r.u16("protocol version")?;
            let name = r.string(DEVICE_NAME, MAX_NAME_LEN)?.into();
            r.finish()?;
            Message::Hello { version, name }
        }
        TYPE_OFFER => Message::Offer(parse_offer(payload)?),
        TYPE_METADATA => Message::Metadata(parse_metadata(payload)?),
        TYPE_ACCEPT => Message::Accept {
            need: parse_accept(payload)?,
        },
        TYPE_REJECT => {
            let mut r = Reader::new(payload, frame_name(TYPE_REJECT));
            let reason = r.string(REJECT_REASON, MAX_REASON_LEN)?.into();
            r.finish()?;
            Message::Reject { reason }
        }
        TYPE_DATA => {
            let mut r = Reader::new(payload, frame_name(TYPE_DATA));
            let file = r.u32("file index")?;
            let offset = r.u64("offset")?;
            let len = r.remaining();
            check_data_len(len)?;
            return Ok(Parsed::Data { file, offset, len });
        }
        TYPE_DONE => {
            Reader::new(payload, frame_name(TYPE_DONE)).finish()?;
            Message::Done
        }
        TYPE_BLOCK_VALUE => {
            let mut r = Reader::new(payload, frame_name(TYPE_BLOCK_VALUE));
            let file = r.u32("file index")?;
            let block = r.u64("block index")?;
            let value = *r.array::<32>("block value")?;
            r.finish()?;
            Message::BlockValue { file, block, value }
        }
        TYPE_ERROR => {
            let mut r = Reader::new(payload, frame_name(TYPE_ERROR));
            let code = ErrorCode::from_u16(r.u16("error code")?);
            let message = r.string(ERROR_MESSAGE, MAX_REASON_LEN)?.into();
            r.finish()?;
            Message::Error { code, message }
        }
        TYPE_PAIR_REQUEST => {
            Reader::new(payload, frame_name(TYPE_PAIR_REQUEST)).finish()?;
            Message::PairRequest
        }
        TYPE_PROBE => {
            let mut r = Reader::new(payload, frame_name(TYPE_PROBE));
            let port = r.u16("port")?;
            let nonce = *r.array::<PROBE_NONCE_LEN>("nonce")?;
            r.finish()?;
            Message::Probe { port, nonce }
        }
        TYPE_ECHO => {
            let mut r = Reader::new(payload, frame_name(TYPE_ECHO));
            let nonce = *r.array::<PROBE_NONCE_LEN>("nonce")?;
            r.finish()?;
            Message::Echo { nonce }
        }
        TYPE_PROBE_RESULT => {
            let mut r = Reader::new(payload, frame_name(TYPE_PROBE_RESULT));
            let quic = flag(r.u8("quic")?, "quic")?;
            let tcp = flag(r.u8("tcp")?, "tcp")?;
            r.finish()?;
            Message::ProbeResult { quic, tcp }
        }
        TYPE_PAIR_CONFIRM => {
            let mut r = Reader::new(payload, frame_name(TYPE_PAIR_CONFIRM));
            let accepted = match r.u8("accepted")? {
                0 => false,
                1 => true,
                value => {
                    return Err(DecodeError::BadBool {
                        field: "accepted",
                        value,
                    });
                }
            };
            r.finish()?;
            Message::PairConfirm { accepted }
        }
        TYPE_TEXT => {
            let mut r = Reader::new(payload, frame_name(TYPE_TEXT));
            let len = usize::try_from(r.u32(TEXT)?).unwrap_or(usize::MAX);
            if len > MAX_TEXT_LEN {
                return Err(DecodeError::StringTooLong {
                    field: TEXT,
                    len,
                    max: MAX_TEXT_LEN,
                });
            }
            let bytes = r.take(len, TEXT)?;
            let text = std::str::from_utf8(bytes)
                .map_err(|_| DecodeError::InvalidUtf8 { field: TEXT })?
                .to_owned();
            r.finish()?;
            Message::Text { text }
        }
        other => return Err(DecodeError::UnknownType(other)),
    };
    Ok(Parsed::Message(msg))
}

/// A boolean byte: exactly 0 or 1.
fn flag(value: u8, field: &'static str) -> Result<bool, DecodeError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(DecodeError::BadBool { field, value }),
    }
}

/// Parses an `Offer` payload, never allocating more than the payload could
/// describe.
fn parse_offer(payload: &[u8]) -> Result<Manifest, DecodeError> {
    let mut r = Reader::new(payload, frame_name(TYPE_OFFER));
    let block_size = r.u32("block size")?;
    let count = r.u32("entry count")?;
    let too_many = || DecodeError::TooManyEntries {
        count,
        max: MAX_ENTRIES,
    };
    let n = usize::try_from(count).map_err(|_| too_many())?;
    if n > MAX_ENTRIES {
        return Err(too_many());
    }
    if n > r.remaining() / MIN_ENTRY_LEN {
        return Err(DecodeError::EntryCountExceedsFrame {
            count,
            remaining: r.remaining(),
        });
    }
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = r.u8("entry kind")?;
        if kind != KIND_DIRECTORY && kind != KIND_FILE {
            return Err(DecodeError::BadEntryKind(kind));
        }
        let path = r.string(PATH, MAX_PATH_LEN)?;
        let kind = if kind == KIND_FILE {
            let size = r.u64("file size")?;
            let tag = *r.array::<32>("version tag")?;
            EntryKind::File { size, tag }
        } else {
            EntryKind::Directory
        };
        entries.push(Entry { path, kind });
    }
    r.finish()?;
    Ok(Manifest {
        entries,
        block_size,
    })
}

/// Parses a `Metadata` payload, never allocating more than the payload
/// could describe.
fn parse_metadata(payload: &[u8]) -> Result<Vec<EntryMeta>, DecodeError> {
    let mut r = Reader::new(payload, frame_name(TYPE_METADATA));
    let count = r.u32("entry count")?;
    let n = usize::try_from(count).unwrap_or(usize::MAX);
    if n > MAX_ENTRIES {
        return Err(DecodeError::TooManyEntries {
            count,
            max: MAX_ENTRIES,
        });
    }
    if n > r.remaining() / META_LEN {
        return Err(DecodeError::EntryCountExceedsFrame {
            count,
            remaining: r.remaining(),
        });
    }
    let mut metas = Vec::with_capacity(n);
    for _ in 0..n {
        let sec = i64::from_be_bytes(*r.array::<8>("modification time")?);
        let nsec = r.u32("modification time nanoseconds")?;
        if nsec >= NANOS {
            return Err(DecodeError::BadNanoseconds(nsec));
        }
        let flags = r.u8("metadata flags")?;
        if flags & !(META_EXECUTABLE | META_MTIME) != 0 {
            return Err(DecodeError::BadMetadataFlags(flags));
        }
        let mtime = if flags & META_MTIME != 0 {
            Some(Mtime { sec, nsec })
        } else if sec != 0 || nsec != 0 {
            return Err(DecodeError::TimeWithoutFlag);
        } else {
            None
        };
        metas.push(EntryMeta {
            mtime,
            executable: flags & META_EXECUTABLE != 0,
        });
    }
    r.finish()?;
    Ok(metas)
}

/// Parses an `Accept` payload: the block ranges the receiver needs.
fn parse_accept(payload: &[u8]) -> Result<Vec<BlockRange>, DecodeError> {
    let mut r = Reader::new(payload, frame_name(TYPE_ACCEPT));
    let count = r.u32("range count")?;
    let n = bounded_count(count, "block ranges", r.remaining(), RANGE_LEN)?;
    let mut need = Vec::with_capacity(n);
    for _ in 0..n {
        need.push(BlockRange {
            file: r.u32("range file")?,
            first: r.u64("range first block")?,
            count: r.u64("range block count")?,
        });
    }
    r.finish()?;
    Ok(need)
}

/// Checks an untrusted item count against [`MAX_BLOCKS`] and against what
/// the remaining bytes could hold, before anything is allocated.
fn bounded_count(
    count: u32,
    what: &'static str,
    remaining: usize,
    item_len: usize,
) -> Result<usize, DecodeError> {
    let n = usize::try_from(count).unwrap_or(usize::MAX);
    if n > MAX_BLOCKS || n > remaining / item_len {
        return Err(DecodeError::TooManyBlocks {
            what,
            count,
            max: MAX_BLOCKS,
        });
    }
    Ok(n)
}

/// Bounds-checked big-endian reader over one frame's payload.
struct Reader<'a> {
    buf: &'a [u8],
    frame: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], frame: &'static str) -> Self {
        Self { buf, frame }
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn truncated(&self, field: &'static str) -> DecodeError {
        DecodeError::Truncated {
            frame: self.frame,
            field,
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<&'a [u8; N], DecodeError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or_else(|| self.truncated(field))?;
        self.buf = tail;
        Ok(head)
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self
            .buf
            .split_at_checked(n)
            .ok_or_else(|| self.truncated(field))?;
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.array(field).map(|b| u8::from_be_bytes(*b))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(|b| u16::from_be_bytes(*b))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(|b| u32::from_be_bytes(*b))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(|b| u64::from_be_bytes(*b))
    }

    /// Reads a `u16`-length-prefixed UTF-8 string of at most `max` bytes.
    /// The limit is checked before the bytes, so an over-long string is
    /// reported as such even when the frame is also truncated.
    fn string(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(DecodeError::StringTooLong { field, len, max });
        }
        let bytes = self.take(len, field)?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { field })?;
        Ok(s.to_owned())
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                frame: self.frame,
                count: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::WireText;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn enc(msg: &Message) -> BytesMut {
        let mut buf = BytesMut::new();
        encode(msg, &mut buf).unwrap();
        buf
    }

    fn roundtrip(msg: Message) {
        let mut buf = enc(&msg);
        assert_eq!(decode(&mut buf).unwrap(), Some(msg));
        assert!(buf.is_empty());
    }

    /// A frame with the given type and payload, length prefix computed.
    fn frame(ty: u8, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u32(u32::try_from(payload.len() + 1).unwrap());
        buf.put_u8(ty);
        buf.put_slice(payload);
        buf
    }

    /// An `Offer` frame: 1 MiB block size, then `payload`.
    fn offer(payload: &[u8]) -> BytesMut {
        let mut p = (1u32 << 20).to_be_bytes().to_vec();
        p.extend_from_slice(payload);
        frame(TYPE_OFFER, &p)
    }

    fn decode_err(mut buf: BytesMut) -> DecodeError {
        let before = buf.clone();
        let err = decode(&mut buf).unwrap_err();
        assert_eq!(buf, before, "an error must not consume anything");
        err
    }

    fn file(path: &str, size: u64, fill: u8) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                size,
                tag: [fill; 32],
            },
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Directory,
        }
    }

    fn sample_messages() -> Vec<Message> {
        vec![
            Message::Hello {
                version: super::super::VERSION,
                name: "Küchen-PC 🖥".into(),
            },
            Message::Offer(Manifest {
                entries: vec![
                    dir("photos"),
                    file("photos/a.jpg", 12345, 7),
                    file("e", 0, 0),
                ],
                block_size: 1 << 16,
            }),
            Message::Metadata(vec![
                EntryMeta::default(),
                EntryMeta {
                    mtime: Some(Mtime {
                        sec: -1,
                        nsec: 999_999_999,
                    }),
                    executable: true,
                },
                EntryMeta {
                    mtime: Some(Mtime {
                        sec: i64::MAX,
                        nsec: 0,
                    }),
                    executable: false,
                },
            ]),
            Message::BlockValue {
                file: 1,
                block: u64::MAX,
                value: [9; 32],
            },
            Message::Accept { need: vec![] },
            Message::Accept {
                need: vec![BlockRange {
                    file: 1,
                    first: 2,
                    count: 3,
                }],
            },
            Message::Reject {
                reason: "not now".into(),
            },
            Message::Data {
                file: 1,
                offset: 1 << 40,
                data: Bytes::from_static(b"hello world"),
            },
            Message::Done,
            Message::Error {
                code: ErrorCode::Integrity,
                message: "hash mismatch in photos/a.jpg".into(),
            },
            Message::Probe {
                port: 47000,
                nonce: [0x5a; PROBE_NONCE_LEN],
            },
            Message::Echo {
                nonce: [0xa5; PROBE_NONCE_LEN],
            },
            Message::ProbeResult {
                quic: false,
                tcp: true,
            },
            Message::PairRequest,
            Message::PairConfirm { accepted: true },
            Message::PairConfirm { accepted: false },
            Message::Text {
                text: "Grüße aus der Küche 🍰\nzweite Zeile".into(),
            },
            Message::Text {
                text: String::new(),
            },
        ]
    }

    #[test]
    fn data_header_is_read_from_the_first_bytes_alone() {
        let mut buf = BytesMut::new();
        let data = Bytes::from(vec![7u8; 1000]);
        encode(
            &Message::Data {
                file: 3,
                offset: 1 << 40,
                data,
            },
            &mut buf,
        )
        .unwrap();
        let expected = DataHeader {
            file: 3,
            offset: 1 << 40,
            len: 1000,
        };
        assert_eq!(
            decode_data_header(&buf[..DATA_HEADER_LEN]),
            Ok(Some(expected))
        );
        assert_eq!(decode_data_header(&buf), Ok(Some(expected)));
        assert_eq!(decode_data_header(&buf[..DATA_HEADER_LEN - 1]), Ok(None));
        let mut done = BytesMut::new();
        encode(&Message::Done, &mut done).unwrap();
        done.extend_from_slice(&[0; DATA_HEADER_LEN]);
        assert_eq!(decode_data_header(&done), Ok(None));
        let mut huge = frame(TYPE_DATA, &[0; 12]).to_vec();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_data_header(&huge),
            Err(DecodeError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn roundtrip_every_message_type() {
        for msg in sample_messages() {
            roundtrip(msg);
        }
        roundtrip(Message::Offer(Manifest::default()));
        roundtrip(Message::Hello {
            version: u16::MAX,
            name: WireText::default(),
        });
        for code in 0..=9 {
            roundtrip(Message::Error {
                code: ErrorCode::from_u16(code),
                message: WireText::default(),
            });
        }
        roundtrip(Message::Error {
            code: ErrorCode::Other(u16::MAX),
            message: "x".into(),
        });
    }

    /// The table of PROTOCOL.md §5.6.
    #[test]
    fn error_codes_are_numbered_as_specified() {
        let table = [
            (1, ErrorCode::Protocol),
            (2, ErrorCode::Integrity),
            (3, ErrorCode::Io),
            (4, ErrorCode::Cancelled),
            (5, ErrorCode::NoSpace),
            (6, ErrorCode::Busy),
            (7, ErrorCode::Refused),
            (8, ErrorCode::Paused),
        ];
        for (n, code) in table {
            assert_eq!(code.to_u16(), n, "{code:?}");
            assert_eq!(ErrorCode::from_u16(n), code);
        }
        assert_eq!(ErrorCode::from_u16(9), ErrorCode::Other(9));
    }

    #[test]
    fn roundtrip_max_sizes() {
        // "é" is 2 bytes: max-length strings of multi-byte characters.
        roundtrip(Message::Hello {
            version: 1,
            name: "n".repeat(MAX_NAME_LEN).into(),
        });
        roundtrip(Message::Reject {
            reason: "é".repeat(MAX_REASON_LEN / 2).into(),
        });
        roundtrip(Message::Error {
            code: ErrorCode::Busy,
            message: "r".repeat(MAX_REASON_LEN).into(),
        });
        // 4-byte characters: exactly the limit.
        roundtrip(Message::Text {
            text: "🍰".repeat(MAX_TEXT_LEN / 4),
        });
        roundtrip(Message::Offer(Manifest {
            entries: vec![file(&"p".repeat(MAX_PATH_LEN), u64::MAX, 0xff)],
            ..Manifest::default()
        }));
        let chunk = Bytes::from(vec![0xa5; MAX_DATA_CHUNK]);
        let msg = Message::Data {
            file: u32::MAX,
            offset: u64::MAX,
            data: chunk,
        };
        let buf = enc(&msg);
        assert_eq!(buf.len(), DATA_HEADER_LEN + MAX_DATA_CHUNK);
        roundtrip(msg);
        let value = Message::BlockValue {
            file: u32::MAX,
            block: u64::MAX,
            value: [0xff; 32],
        };
        assert_eq!(enc(&value).len(), BLOCK_VALUE_FRAME_LEN);
        roundtrip(value);
    }

    #[test]
    fn max_entries_offer_roundtrips() {
        let entries = (0..MAX_ENTRIES).map(|i| dir(&format!("{i}"))).collect();
        roundtrip(Message::Offer(Manifest {
            entries,
            ..Manifest::default()
        }));
    }

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// The zero-copy header path writes the same bytes as `encode` (the
    /// examples of PROTOCOL.md are checked in `super::super::spec`).
    #[test]
    fn data_header_matches_encode() {
        let mut buf = BytesMut::new();
        encode_data_header(1, 0, 5, &mut buf);
        assert_eq!(buf.len(), DATA_HEADER_LEN);
        assert_eq!(
            buf.to_vec(),
            hex("00 00 00 12 05 00 00 00 01 00 00 00 00 00 00 00 00")
        );
        let mut buf = BytesMut::new();
        encode_data_header(2, 0x10000, MAX_DATA_CHUNK, &mut buf);
        buf.put_slice(&vec![9; MAX_DATA_CHUNK]);
        let Some(Message::Data { file, offset, data }) = decode(&mut buf).unwrap() else {
            panic!("expected data");
        };
        assert_eq!((file, offset, data.len()), (2, 0x10000, MAX_DATA_CHUNK));
    }

    #[test]
    fn data_payload_is_not_copied() {
        let mut buf = enc(&Message::Data {
            file: 0,
            offset: 0,
            data: Bytes::from_static(&[1, 2, 3, 4]),
        });
        let payload_ptr = buf[DATA_HEADER_LEN..].as_ptr();
        let Some(Message::Data { data, .. }) = decode(&mut buf).unwrap() else {
            panic!("expected data");
        };
        assert_eq!(data.as_ptr(), payload_ptr);
    }

    #[test]
    fn byte_by_byte() {
        for msg in sample_messages() {
            let whole = enc(&msg);
            let mut buf = BytesMut::new();
            for (i, &b) in whole.iter().enumerate() {
                buf.put_u8(b);
                let got = decode(&mut buf).unwrap();
                if i + 1 < whole.len() {
                    assert_eq!(got, None, "early message after {} bytes", i + 1);
                    assert_eq!(buf.len(), i + 1);
                } else {
                    assert_eq!(got, Some(msg.clone()));
                }
            }
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn back_to_back_frames() {
        let msgs = sample_messages();
        let mut buf = BytesMut::new();
        for m in &msgs {
            encode(m, &mut buf).unwrap();
        }
        for m in msgs {
            assert_eq!(decode(&mut buf).unwrap(), Some(m));
        }
        assert_eq!(decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn every_truncation_needs_more() {
        for msg in sample_messages() {
            let whole = enc(&msg);
            for cut in 0..whole.len() {
                let mut buf = BytesMut::from(&whole[..cut]);
                assert_eq!(decode(&mut buf).unwrap(), None);
                assert_eq!(&buf[..], &whole[..cut], "consumed bytes at cut {cut}");
            }
        }
    }

    #[test]
    fn zero_length_frame() {
        let err = decode_err(BytesMut::from(&[0u8, 0, 0, 0][..]));
        assert_eq!(err, DecodeError::EmptyFrame);
    }

    #[test]
    fn oversized_length_detected_from_prefix_alone() {
        let len = u32::try_from(MAX_FRAME_LEN + 1).unwrap();
        let err = decode_err(BytesMut::from(&len.to_be_bytes()[..]));
        assert_eq!(
            err,
            DecodeError::FrameTooLarge {
                len,
                max: MAX_FRAME_LEN
            }
        );
        assert_eq!(
            err.to_string(),
            "frame of 8388609 bytes exceeds the 8388608-byte limit"
        );
        let err = decode_err(BytesMut::from(&u32::MAX.to_be_bytes()[..]));
        assert!(matches!(err, DecodeError::FrameTooLarge { .. }));
        // Exactly the limit is fine: wait for the body, without reserving
        // megabytes on the strength of a 4-byte prefix.
        let len = u32::try_from(MAX_FRAME_LEN).unwrap();
        let mut buf = BytesMut::from(&len.to_be_bytes()[..]);
        assert_eq!(decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 4);
        assert!(buf.capacity() <= 4 + RESERVE_AHEAD);
        assert!(buf.capacity() > 4);
    }

    #[test]
    fn text_limit_is_enforced_both_ways() {
        let over = "x".repeat(MAX_TEXT_LEN + 1);
        let mut buf = BytesMut::new();
        assert_eq!(
            encode(&Message::Text { text: over.clone() }, &mut buf),
            Err(EncodeError::StringTooLong {
                field: "text",
                len: MAX_TEXT_LEN + 1,
                max: MAX_TEXT_LEN
            })
        );
        assert!(buf.is_empty());
        // A peer that sends one anyway is stopped at the length field,
        // even before the bytes arrive.
        let mut payload = u32::try_from(MAX_TEXT_LEN + 1)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        assert_eq!(
            decode_err(frame(TYPE_TEXT, &payload)),
            DecodeError::StringTooLong {
                field: "text",
                len: MAX_TEXT_LEN + 1,
                max: MAX_TEXT_LEN
            }
        );
        payload.extend_from_slice(over.as_bytes());
        assert!(matches!(
            decode_err(frame(TYPE_TEXT, &payload)),
            DecodeError::StringTooLong { .. }
        ));
        let huge = u32::MAX.to_be_bytes();
        assert!(matches!(
            decode_err(frame(TYPE_TEXT, &huge)),
            DecodeError::StringTooLong { .. }
        ));
    }

    /// What the first bytes of a body decide is refused before the rest
    /// arrives: only these bytes are buffered, and more are announced.
    #[test]
    fn frames_that_cannot_be_valid_are_refused_from_their_first_bytes() {
        let head = |len: usize, bytes: &[u8]| {
            let mut buf = BytesMut::new();
            buf.put_u32(u32::try_from(len).unwrap());
            buf.put_slice(bytes);
            buf
        };
        // A 1 MiB Hello, an 8 MiB frame of an unknown type, a Data frame
        // over 1 MiB of payload.
        assert_eq!(
            decode_err(head(1 << 20, &[TYPE_HELLO])),
            DecodeError::TooLargeForType {
                frame: "hello",
                len: 1 << 20,
                max: 1 + 2 + 2 + MAX_NAME_LEN
            }
        );
        assert_eq!(
            decode_err(head(MAX_FRAME_LEN, &[0x42])),
            DecodeError::UnknownType(0x42)
        );
        assert!(matches!(
            decode_err(head(13 + MAX_DATA_CHUNK + 1, &[TYPE_DATA])),
            DecodeError::DataTooLarge { .. }
        ));
        // A Text announcing more than 64 KiB, or a length other than the
        // frame's.
        let text = |frame_len: usize, text_len: u32| {
            let mut bytes = vec![TYPE_TEXT];
            bytes.extend_from_slice(&text_len.to_be_bytes());
            head(frame_len, &bytes)
        };
        let over = u32::try_from(MAX_TEXT_LEN + 1).unwrap();
        assert_eq!(
            decode_err(head(5 + MAX_TEXT_LEN + 1, &[TYPE_TEXT])),
            DecodeError::StringTooLong {
                field: TEXT,
                len: MAX_TEXT_LEN + 1,
                max: MAX_TEXT_LEN
            }
        );
        assert!(matches!(
            decode_err(text(5 + 10, over)),
            DecodeError::StringTooLong { .. }
        ));
        assert!(matches!(
            decode_err(text(5 + 10, 20)),
            DecodeError::Truncated { .. }
        ));
        assert!(matches!(
            decode_err(text(5 + 10, 5)),
            DecodeError::TrailingBytes { .. }
        ));
        // Every frame type's largest valid frame still decodes.
        let mut buf = BytesMut::new();
        let texts = [
            Message::Hello {
                version: 1,
                name: "n".repeat(MAX_NAME_LEN).into(),
            },
            Message::Error {
                code: ErrorCode::Io,
                message: "m".repeat(MAX_REASON_LEN).into(),
            },
            Message::Text {
                text: "t".repeat(MAX_TEXT_LEN),
            },
        ];
        for m in &texts {
            encode(m, &mut buf).unwrap();
        }
        for m in texts {
            assert_eq!(decode(&mut buf).unwrap(), Some(m));
        }
    }

    #[test]
    fn malformed_text_and_pairing_frames() {
        // Length runs past the frame.
        assert_eq!(
            decode_err(frame(TYPE_TEXT, &[0, 0, 0, 5, b'a'])),
            DecodeError::Truncated {
                frame: "text",
                field: "text"
            }
        );
        assert_eq!(
            decode_err(frame(TYPE_TEXT, &[0, 0, 0, 2, 0xc3, 0x28])),
            DecodeError::InvalidUtf8 { field: "text" }
        );
        assert_eq!(
            decode_err(frame(TYPE_TEXT, &[0, 0, 0, 1, b'a', b'b'])),
            DecodeError::TrailingBytes {
                frame: "text",
                count: 1
            }
        );
        assert_eq!(
            decode_err(frame(TYPE_PAIR_CONFIRM, &[2])),
            DecodeError::BadBool {
                field: "accepted",
                value: 2
            }
        );
        assert_eq!(
            decode_err(frame(TYPE_PAIR_CONFIRM, &[])),
            DecodeError::Truncated {
                frame: "pair confirm",
                field: "accepted"
            }
        );
        assert_eq!(
            decode_err(frame(TYPE_PAIR_REQUEST, &[0])),
            DecodeError::TooLargeForType {
                frame: "pair request",
                len: 2,
                max: 1
            }
        );
    }

    #[test]
    fn pairing_code_has_six_digits_and_uses_all_bytes() {
        assert_eq!(crate::protocol::pairing_code([0; 8]), 0);
        assert_eq!(
            crate::protocol::pairing_code([0, 0, 0, 0, 0, 0x0f, 0x42, 0x3f]),
            999_999
        );
        assert_eq!(crate::protocol::pairing_code([0xff; 8]), 551_615);
        let a = crate::protocol::pairing_code([1, 2, 3, 4, 5, 6, 7, 8]);
        let b = crate::protocol::pairing_code([1, 2, 3, 4, 5, 6, 7, 9]);
        assert_ne!(a, b);
        assert!(a < 1_000_000 && b < 1_000_000);
    }

    #[test]
    fn probe_messages_are_exact() {
        // Short, long and non-boolean payloads are protocol errors.
        assert!(matches!(
            decode_err(frame(TYPE_PROBE, &[0xb7, 0x98, 1, 2, 3])),
            DecodeError::Truncated { frame: "probe", .. }
        ));
        let mut long = vec![0xb7, 0x98];
        long.extend_from_slice(&[0; PROBE_NONCE_LEN + 1]);
        assert!(matches!(
            decode_err(frame(TYPE_PROBE, &long)),
            DecodeError::TooLargeForType { frame: "probe", .. }
        ));
        assert!(matches!(
            decode_err(frame(TYPE_ECHO, &[0; PROBE_NONCE_LEN - 1])),
            DecodeError::Truncated { frame: "echo", .. }
        ));
        assert_eq!(
            decode_err(frame(TYPE_PROBE_RESULT, &[1, 2])),
            DecodeError::BadBool {
                field: "tcp",
                value: 2
            }
        );
        assert!(matches!(
            decode_err(frame(TYPE_PROBE_RESULT, &[1])),
            DecodeError::Truncated { .. }
        ));
        assert!(matches!(
            decode_err(frame(TYPE_PROBE_RESULT, &[1, 1, 0])),
            DecodeError::TooLargeForType { .. }
        ));
        for (quic, tcp) in [(false, false), (true, false), (false, true), (true, true)] {
            roundtrip(Message::ProbeResult { quic, tcp });
        }
    }

    #[test]
    fn unknown_type() {
        for ty in [0x00, 0x10, 0xff] {
            assert_eq!(decode_err(frame(ty, b"")), DecodeError::UnknownType(ty));
        }
    }

    #[test]
    fn string_over_limit() {
        let mut p = vec![0, 1];
        let n = u16::try_from(MAX_NAME_LEN + 1).unwrap();
        p.extend_from_slice(&n.to_be_bytes());
        p.extend(std::iter::repeat_n(b'a', MAX_NAME_LEN + 1));
        // Over the limit, a Hello is longer than any valid one.
        assert!(matches!(
            decode_err(frame(TYPE_HELLO, &p)),
            DecodeError::TooLargeForType { frame: "hello", .. }
        ));
        // Its length field alone says so too.
        let p = [0, 1, 1, 0];
        assert_eq!(
            decode_err(frame(TYPE_HELLO, &p)),
            DecodeError::StringTooLong {
                field: DEVICE_NAME,
                len: 256,
                max: MAX_NAME_LEN
            }
        );
        // Reject reason: limit checked before the (absent) bytes.
        let p = u16::try_from(MAX_REASON_LEN + 1).unwrap().to_be_bytes();
        assert!(matches!(
            decode_err(frame(TYPE_REJECT, &p)),
            DecodeError::StringTooLong {
                field: REJECT_REASON,
                ..
            }
        ));
        // Path.
        let mut p = vec![0, 0, 0, 1, KIND_DIRECTORY];
        p.extend_from_slice(&u16::MAX.to_be_bytes());
        p.extend(std::iter::repeat_n(b'a', usize::from(u16::MAX)));
        assert!(matches!(
            decode_err(offer(&p)),
            DecodeError::StringTooLong {
                field: PATH,
                len: 65535,
                ..
            }
        ));
    }

    #[test]
    fn invalid_utf8() {
        let p = [0, 1, 0, 2, 0xc3, 0x28];
        assert_eq!(
            decode_err(frame(TYPE_HELLO, &p)),
            DecodeError::InvalidUtf8 { field: DEVICE_NAME }
        );
        let p = [0, 3, 0, 1, 0xff];
        assert_eq!(
            decode_err(frame(TYPE_ERROR, &p)),
            DecodeError::InvalidUtf8 {
                field: ERROR_MESSAGE
            }
        );
    }

    #[test]
    fn truncated_fields() {
        // Hello whose name length points past the end of the frame.
        let p = [0, 1, 0, 10, b'a'];
        assert_eq!(
            decode_err(frame(TYPE_HELLO, &p)),
            DecodeError::Truncated {
                frame: "hello",
                field: DEVICE_NAME
            }
        );
        assert!(matches!(
            decode_err(frame(TYPE_DATA, &[0, 0, 0, 0, 0])),
            DecodeError::Truncated {
                frame: "data",
                field: "offset"
            }
        ));
        assert!(matches!(
            decode_err(frame(TYPE_ERROR, &[0])),
            DecodeError::Truncated {
                field: "error code",
                ..
            }
        ));
        // File entry missing a byte of its tag.
        let mut p = vec![0, 0, 0, 1, KIND_FILE, 0, 1, b'f'];
        p.extend_from_slice(&5u64.to_be_bytes());
        p.extend_from_slice(&[0; 31]);
        assert!(matches!(
            decode_err(offer(&p)),
            DecodeError::Truncated {
                field: "version tag",
                ..
            }
        ));
        assert!(matches!(
            decode_err(frame(TYPE_BLOCK_VALUE, &[0; 4 + 8 + 31])),
            DecodeError::Truncated {
                frame: "block value",
                field: "block value"
            }
        ));
    }

    #[test]
    fn entry_count_beyond_remaining_bytes() {
        // 10 entries need at least 30 bytes; 6 follow.
        let p = [0, 0, 0, 10, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            decode_err(offer(&p)),
            DecodeError::EntryCountExceedsFrame {
                count: 10,
                remaining: 6
            }
        );
        let p = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_err(offer(&p)),
            DecodeError::TooManyEntries {
                count: u32::MAX,
                ..
            }
        ));
    }

    #[test]
    fn entry_count_over_max_entries() {
        let count = u32::try_from(MAX_ENTRIES + 1).unwrap();
        let mut p = count.to_be_bytes().to_vec();
        // Enough bytes for that many empty directory entries.
        p.extend(std::iter::repeat_n(0u8, (MAX_ENTRIES + 1) * MIN_ENTRY_LEN));
        assert_eq!(
            decode_err(offer(&p)),
            DecodeError::TooManyEntries {
                count,
                max: MAX_ENTRIES
            }
        );
    }

    /// One record: seconds, nanoseconds, flags.
    fn meta_record(sec: i64, nsec: u32, flags: u8) -> Vec<u8> {
        let mut r = sec.to_be_bytes().to_vec();
        r.extend_from_slice(&nsec.to_be_bytes());
        r.push(flags);
        r
    }

    fn metadata_frame(records: &[Vec<u8>]) -> BytesMut {
        let mut payload = u32::try_from(records.len()).unwrap().to_be_bytes().to_vec();
        for r in records {
            payload.extend_from_slice(r);
        }
        frame(TYPE_METADATA, &payload)
    }

    #[test]
    fn metadata_records_decode_exactly() {
        let mut buf = metadata_frame(&[meta_record(0, 0, 0), meta_record(-5, 7, 3)]);
        assert_eq!(
            decode(&mut buf).unwrap(),
            Some(Message::Metadata(vec![
                EntryMeta::default(),
                EntryMeta {
                    mtime: Some(Mtime { sec: -5, nsec: 7 }),
                    executable: true,
                },
            ]))
        );
        roundtrip(Message::Metadata(Vec::new()));
    }

    #[test]
    fn bad_metadata_is_refused() {
        assert_eq!(
            decode_err(metadata_frame(&[meta_record(1, 1_000_000_000, 2)])),
            DecodeError::BadNanoseconds(1_000_000_000)
        );
        assert_eq!(
            decode_err(metadata_frame(&[meta_record(1, 0, 4)])),
            DecodeError::BadMetadataFlags(4)
        );
        assert_eq!(
            decode_err(metadata_frame(&[meta_record(1, 0, 1)])),
            DecodeError::TimeWithoutFlag
        );
        // A count the frame cannot hold, and one over the limit.
        let mut short = metadata_frame(&[meta_record(0, 0, 0)]);
        short[8] = 2;
        assert!(matches!(
            decode_err(short),
            DecodeError::EntryCountExceedsFrame { count: 2, .. }
        ));
        let mut over = (u32::try_from(MAX_ENTRIES).unwrap() + 1)
            .to_be_bytes()
            .to_vec();
        over.extend(meta_record(0, 0, 0));
        assert!(matches!(
            decode_err(frame(TYPE_METADATA, &over)),
            DecodeError::TooManyEntries { .. }
        ));
        // Not encoded either: the peer would refuse it.
        let bad = Message::Metadata(vec![EntryMeta {
            mtime: Some(Mtime {
                sec: 0,
                nsec: 1_000_000_000,
            }),
            executable: false,
        }]);
        assert_eq!(
            encode(&bad, &mut BytesMut::new()),
            Err(EncodeError::BadNanoseconds(1_000_000_000))
        );
    }

    #[test]
    fn bad_entry_kind() {
        let p = [0, 0, 0, 1, 2, 0, 0];
        assert_eq!(decode_err(offer(&p)), DecodeError::BadEntryKind(2));
    }

    #[test]
    fn trailing_garbage() {
        assert_eq!(
            decode_err(frame(TYPE_ACCEPT, &[0, 0, 0, 0, 0])),
            DecodeError::TrailingBytes {
                frame: "accept",
                count: 1
            }
        );
        // A fixed-size frame with more is over the size of its type.
        assert!(matches!(
            decode_err(frame(TYPE_DONE, &[1, 2])),
            DecodeError::TooLargeForType { frame: "done", .. }
        ));
        for msg in sample_messages() {
            if matches!(msg, Message::Data { .. }) {
                continue;
            }
            let whole = enc(&msg);
            let mut p = whole[LEN_PREFIX + 1..].to_vec();
            p.push(0);
            let ty = whole[LEN_PREFIX];
            assert!(
                matches!(
                    decode_err(frame(ty, &p)),
                    DecodeError::TrailingBytes { count: 1, .. }
                        | DecodeError::TooLargeForType { .. }
                ),
                "{msg:?}"
            );
        }
    }

    #[test]
    fn data_chunk_bounds() {
        let header = [0u8; 12];
        assert_eq!(
            decode_err(frame(TYPE_DATA, &header)),
            DecodeError::EmptyData
        );
        let mut p = header.to_vec();
        p.resize(12 + MAX_DATA_CHUNK + 1, 0);
        assert_eq!(
            decode_err(frame(TYPE_DATA, &p)),
            DecodeError::DataTooLarge {
                len: MAX_DATA_CHUNK + 1,
                max: MAX_DATA_CHUNK
            }
        );
    }

    #[test]
    fn encode_refuses_over_limit_messages() {
        let cases = [
            (
                Message::Hello {
                    version: 1,
                    name: "n".repeat(MAX_NAME_LEN + 1).into(),
                },
                EncodeError::StringTooLong {
                    field: DEVICE_NAME,
                    len: MAX_NAME_LEN + 1,
                    max: MAX_NAME_LEN,
                },
            ),
            (
                Message::Reject {
                    reason: "r".repeat(MAX_REASON_LEN + 1).into(),
                },
                EncodeError::StringTooLong {
                    field: REJECT_REASON,
                    len: MAX_REASON_LEN + 1,
                    max: MAX_REASON_LEN,
                },
            ),
            (
                Message::Error {
                    code: ErrorCode::Io,
                    message: "m".repeat(MAX_REASON_LEN + 1).into(),
                },
                EncodeError::StringTooLong {
                    field: ERROR_MESSAGE,
                    len: MAX_REASON_LEN + 1,
                    max: MAX_REASON_LEN,
                },
            ),
            (
                Message::Offer(Manifest {
                    entries: vec![dir("ok"), dir(&"p".repeat(MAX_PATH_LEN + 1))],
                    ..Manifest::default()
                }),
                EncodeError::StringTooLong {
                    field: PATH,
                    len: MAX_PATH_LEN + 1,
                    max: MAX_PATH_LEN,
                },
            ),
            (
                Message::Offer(Manifest {
                    entries: vec![dir("d"); MAX_ENTRIES + 1],
                    ..Manifest::default()
                }),
                EncodeError::TooManyEntries {
                    count: MAX_ENTRIES + 1,
                    max: MAX_ENTRIES,
                },
            ),
            (
                Message::Data {
                    file: 0,
                    offset: 0,
                    data: Bytes::new(),
                },
                EncodeError::EmptyData,
            ),
            (
                Message::Data {
                    file: 0,
                    offset: 0,
                    data: Bytes::from(vec![0; MAX_DATA_CHUNK + 1]),
                },
                EncodeError::DataTooLarge {
                    len: MAX_DATA_CHUNK + 1,
                    max: MAX_DATA_CHUNK,
                },
            ),
        ];
        for (msg, want) in cases {
            let mut buf = BytesMut::from(&b"keep"[..]);
            assert_eq!(encode(&msg, &mut buf), Err(want));
            assert_eq!(&buf[..], b"keep", "a refused message must not write");
        }
        // Within every per-field limit, but the frame as a whole is too big.
        let big = "p".repeat(MAX_PATH_LEN);
        let msg = Message::Offer(Manifest {
            entries: vec![dir(&big); MAX_FRAME_LEN / MAX_PATH_LEN],
            ..Manifest::default()
        });
        let mut buf = BytesMut::new();
        assert!(matches!(
            encode(&msg, &mut buf),
            Err(EncodeError::FrameTooLarge {
                max: MAX_FRAME_LEN,
                ..
            })
        ));
        assert!(buf.is_empty());
    }

    // ---- property tests -------------------------------------------------

    /// A string of at most `max_bytes` UTF-8 bytes, any Unicode.
    fn text(max_chars: usize, max_bytes: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(any::<char>(), 0..=max_chars).prop_map(move |chars| {
            let mut s = String::new();
            for c in chars {
                if s.len() + c.len_utf8() > max_bytes {
                    break;
                }
                s.push(c);
            }
            s
        })
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let kind = prop_oneof![
            Just(EntryKind::Directory),
            (any::<u64>(), any::<[u8; 32]>()).prop_map(|(size, tag)| EntryKind::File { size, tag }),
        ];
        (text(40, MAX_PATH_LEN), kind).prop_map(|(path, kind)| Entry { path, kind })
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u16>(), text(80, MAX_NAME_LEN)).prop_map(|(version, name)| Message::Hello {
                version,
                name: name.into()
            }),
            prop::collection::vec(entry(), 0..12).prop_map(|entries| Message::Offer(Manifest {
                entries,
                ..Manifest::default()
            })),
            prop::collection::vec((any::<u32>(), any::<u64>(), any::<u64>()), 0..4).prop_map(|r| {
                Message::Accept {
                    need: r
                        .into_iter()
                        .map(|(file, first, count)| BlockRange { file, first, count })
                        .collect(),
                }
            }),
            text(80, MAX_REASON_LEN).prop_map(|reason| Message::Reject {
                reason: reason.into()
            }),
            (
                any::<u32>(),
                any::<u64>(),
                prop::collection::vec(any::<u8>(), 1..2048)
            )
                .prop_map(|(file, offset, data)| Message::Data {
                    file,
                    offset,
                    data: data.into(),
                }),
            Just(Message::Done),
            (any::<u16>(), text(80, MAX_REASON_LEN)).prop_map(|(code, message)| {
                Message::Error {
                    code: ErrorCode::from_u16(code),
                    message: message.into(),
                }
            }),
            (any::<u16>(), any::<[u8; PROBE_NONCE_LEN]>())
                .prop_map(|(port, nonce)| Message::Probe { port, nonce }),
            any::<[u8; PROBE_NONCE_LEN]>().prop_map(|nonce| Message::Echo { nonce }),
            (any::<bool>(), any::<bool>())
                .prop_map(|(quic, tcp)| Message::ProbeResult { quic, tcp }),
            Just(Message::PairRequest),
            any::<bool>().prop_map(|accepted| Message::PairConfirm { accepted }),
            text(200, MAX_TEXT_LEN).prop_map(|text| Message::Text { text }),
            prop::collection::vec(
                (
                    prop::option::of((any::<i64>(), 0u32..1_000_000_000)),
                    any::<bool>()
                ),
                0..12
            )
            .prop_map(|records| Message::Metadata(
                records
                    .into_iter()
                    .map(|(mtime, executable)| EntryMeta {
                        mtime: mtime.map(|(sec, nsec)| Mtime { sec, nsec }),
                        executable,
                    })
                    .collect()
            )),
        ]
    }

    /// Inputs worth feeding the decoder: pure noise, a valid length prefix in
    /// front of noise, and valid frames with a few bytes overwritten.
    fn hostile_input() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..512))
                .prop_map(|(ty, body)| { frame(ty % 0x0e, &body).to_vec() }),
            (
                prop::collection::vec(message(), 1..4),
                prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            )
                .prop_map(|(msgs, edits)| {
                    let mut buf = BytesMut::new();
                    for m in &msgs {
                        encode(m, &mut buf).unwrap();
                    }
                    let mut bytes = buf.to_vec();
                    for (at, b) in edits {
                        let i = at.index(bytes.len());
                        bytes[i] = b;
                    }
                    bytes
                }),
        ]
    }

    proptest! {
        // Never write regression files next to the sources.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn data_header_agrees_with_decode(input in hostile_input()) {
            let header = decode_data_header(&input);
            let mut buf = BytesMut::from(&input[..]);
            match (header, decode(&mut buf)) {
                (Ok(Some(h)), Ok(Some(Message::Data { file, offset, data }))) => {
                    prop_assert_eq!((h.file, h.offset, h.len), (file, offset, data.len()));
                }
                (Ok(Some(h)), Ok(None)) => prop_assert!(input.len() < DATA_HEADER_LEN + h.len),
                (Ok(Some(h)), other) => prop_assert!(false, "header {:?} but decode gave {:?}", h, other),
                // decode reports a bad payload length once the body is in.
                (Err(e), other) => prop_assert!(other == Err(e.clone()) || other == Ok(None), "{:?} vs {:?}", e, other),
                (Ok(None), Ok(Some(Message::Data { .. }))) => {
                    prop_assert!(false, "decode found data the header check missed");
                }
                (Ok(None), _) => {}
            }
        }

        #[test]
        fn decode_never_panics_and_output_reencodes(
            input in hostile_input(),
            chunks in prop::collection::vec(1usize..64, 1..64),
        ) {
            let mut buf = BytesMut::new();
            let mut fed = 0;
            let mut chunk_sizes = chunks.iter().cycle();
            'feed: while fed < input.len() {
                let n = (*chunk_sizes.next().unwrap()).min(input.len() - fed);
                buf.put_slice(&input[fed..fed + n]);
                fed += n;
                loop {
                    let start = fed - buf.len();
                    match decode(&mut buf) {
                        Ok(Some(msg)) => {
                            let end = fed - buf.len();
                            let mut re = BytesMut::new();
                            prop_assert_eq!(encode(&msg, &mut re), Ok(()));
                            prop_assert_eq!(&re[..], &input[start..end]);
                        }
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
        }

        #[test]
        fn valid_messages_roundtrip(
            msgs in prop::collection::vec(message(), 1..5),
            split in any::<prop::sample::Index>(),
        ) {
            let mut all = BytesMut::new();
            for m in &msgs {
                encode(m, &mut all).unwrap();
            }
            // Deliver in two arbitrary pieces.
            let cut = split.index(all.len() + 1);
            let mut buf = BytesMut::from(&all[..cut]);
            let mut got = Vec::new();
            while let Some(m) = decode(&mut buf).unwrap() {
                got.push(m);
            }
            buf.put_slice(&all[cut..]);
            while let Some(m) = decode(&mut buf).unwrap() {
                got.push(m);
            }
            prop_assert_eq!(got, msgs);
            prop_assert!(buf.is_empty());
        }
    }
}
