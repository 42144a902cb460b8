//! Wire protocol v1: message types, limits and the framing codec.
//!
//! This module is pure: it never touches sockets, files or clocks, so it can
//! be unit-tested, property-tested and fuzzed in isolation. The transfer layer
//! drives it over whatever byte stream the transport hands out (a QUIC
//! bidirectional stream or a TLS-over-TCP stream), which is why QUIC and TCP
//! share every layer above `transport`.
//!
//! See `PROTOCOL.md` at the repository root for the byte-level specification.

pub mod hash;
mod manifest;
pub mod names;
pub mod order;
#[cfg(test)]
pub(crate) mod spec;
mod wire;

pub use manifest::{
    DEFAULT_BLOCK_SIZE, Entry, EntryKind, EntryMeta, HumanBytes, MAX_BLOCK_SIZE, MAX_BLOCKS,
    MIN_BLOCK_SIZE, Manifest, ManifestError, ManifestLimits, Mtime, blocks_for, choose_block_size,
    heap_block,
};
pub use wire::{
    BLOCK_VALUE_FRAME_LEN, DATA_HEADER_LEN, DataHeader, DecodeError, EncodeError, decode,
    decode_data_header, encode, encode_data_header, frame_len,
};

use bytes::Bytes;

use crate::safe_text::{CleanText, PeerName};

/// Protocol version carried in `Hello` and in the mDNS TXT `v` key.
pub const VERSION: u16 = 1;

/// TLS ALPN identifier of protocol version 1; both transports require it
/// or [`ALPN_METADATA`].
pub const ALPN: &[u8] = b"lanshare/1";

/// TLS ALPN identifier of version 1 with entry metadata: on a connection
/// that negotiated it, an `Offer` is followed by one [`Message::Metadata`].
/// Clients offer it first, then [`ALPN`]; a server that knows it picks it,
/// an older one picks [`ALPN`] (see `PROTOCOL.md` §3).
pub const ALPN_METADATA: &[u8] = b"lanshare/1.1";

/// Every ALPN identifier this implementation speaks, preferred first.
pub const ALPNS: [&[u8]; 2] = [ALPN_METADATA, ALPN];

/// Largest frame body (type byte + payload) a peer may send. Anything larger
/// is a protocol violation detected from the 4-byte length prefix alone,
/// before any of it is buffered.
pub const MAX_FRAME_LEN: usize = 8 << 20;

/// Largest payload of one `Data` frame.
pub const MAX_DATA_CHUNK: usize = 1 << 20;

/// Longest device name in `Hello`, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Longest human-readable reason in `Reject` / `Error`, in bytes.
pub const MAX_REASON_LEN: usize = 1024;

/// Longest relative path in a manifest entry, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// Hard ceiling on manifest entries the codec will even decode.
pub const MAX_ENTRIES: usize = 100_000;

/// Longest text in a `Text` message, in bytes of UTF-8 (64 KiB): enough
/// for a note, a link or a snippet; anything longer is a file.
pub const MAX_TEXT_LEN: usize = 64 << 10;

/// Bytes of the random nonce that ties a `Probe` to its `Echo`es.
pub const PROBE_NONCE_LEN: usize = 16;

/// TLS exporter label both sides feed into the keying-material exporter
/// (RFC 8446 §7.5) to derive the pairing code shown to users.
pub const PAIRING_EXPORTER_LABEL: &[u8] = b"EXPORTER-lanshare-pairing";

/// Number of decimal digits in a pairing code.
pub const PAIRING_CODE_DIGITS: u32 = 6;

/// The pairing code for 8 bytes of TLS exporter output: a number below
/// 10^[`PAIRING_CODE_DIGITS`], shown zero-padded. Both ends of one TLS
/// session derive the same bytes; a man in the middle runs two sessions
/// with different secrets, so the two users see different codes. (The
/// modulo bias of 2^64 mod 10^6 is below 10^-13.)
pub fn pairing_code(exporter: [u8; 8]) -> u32 {
    let modulus = 10u64.pow(PAIRING_CODE_DIGITS);
    // The remainder is below 10^6, so it fits.
    (u64::from_be_bytes(exporter) % modulus) as u32
}

/// Why a transfer was stopped, sent in an `Error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The peer broke the protocol (unexpected frame, bad offset, ...).
    Protocol,
    /// A block's content did not match its `BlockValue`.
    Integrity,
    /// A local I/O error (other than a full disk) on the side sending this.
    Io,
    /// The user cancelled the transfer.
    Cancelled,
    /// The receiver ran out of space.
    NoSpace,
    /// The receiver is busy (too many transfers or offers).
    Busy,
    /// The sender's identity or the offer was refused.
    Refused,
    /// The side sending this is stopping (its service stops or restarts)
    /// and pauses the transfer: the receiver keeps its verified blocks and
    /// the sender's retry resumes from them.
    Paused,
    /// A code this implementation does not know; kept for logging.
    Other(u16),
}

impl ErrorCode {
    /// The numeric value on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Protocol => 1,
            Self::Integrity => 2,
            Self::Io => 3,
            Self::Cancelled => 4,
            Self::NoSpace => 5,
            Self::Busy => 6,
            Self::Refused => 7,
            Self::Paused => 8,
            Self::Other(n) => n,
        }
    }

    /// The peer's `message` as this side reports it: as it is for a known
    /// code, after the number for an unknown one, so that whoever reads
    /// the log learns the code that was sent (PROTOCOL.md §5.6).
    pub fn report(self, message: &str) -> String {
        match self {
            Self::Other(n) => format!("error code {n}: {message}"),
            _ => message.to_owned(),
        }
    }

    /// Parses a wire value; unknown values are preserved as `Other`.
    pub fn from_u16(n: u16) -> Self {
        match n {
            1 => Self::Protocol,
            2 => Self::Integrity,
            3 => Self::Io,
            4 => Self::Cancelled,
            5 => Self::NoSpace,
            6 => Self::Busy,
            7 => Self::Refused,
            8 => Self::Paused,
            n => Self::Other(n),
        }
    }
}

/// A device name, reason or message as it travels: any UTF-8 within its
/// limit, exactly as the sending side wrote it (so the codec re-encodes
/// what it decoded byte for byte). Text from a peer may hold anything, so
/// it can be read only [cleaned](crate::safe_text::clean): no code path
/// can show or log it raw. (`Debug` shows it escaped, for tests.)
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WireText(String);

impl WireText {
    /// The text, cleaned (at most [`crate::safe_text::MAX_TEXT_BYTES`]).
    pub fn clean(&self) -> CleanText {
        CleanText::new(&self.0)
    }

    /// The text as a device name, cleaned; `fallback` if nothing is left.
    pub fn clean_name(&self, fallback: &str) -> PeerName {
        PeerName::new(&self.0, fallback)
    }

    /// Its length on the wire, in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes to encode (only the codec sees them).
    fn as_wire(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WireText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl From<String> for WireText {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for WireText {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl From<&CleanText> for WireText {
    fn from(text: &CleanText) -> Self {
        Self(text.as_str().to_owned())
    }
}

impl From<&PeerName> for WireText {
    fn from(name: &PeerName) -> Self {
        Self(name.as_str().to_owned())
    }
}

/// A run of consecutive blocks of one file, requested in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRange {
    /// Index into [`Manifest::entries`]; must name a non-empty file.
    pub file: u32,
    /// First block (block `i` covers bytes `i * block_size ..`).
    pub first: u64,
    /// Number of blocks, at least 1.
    pub count: u64,
}

/// One protocol message. Frame type numbers are given in `PROTOCOL.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First message in each direction: protocol version and device name.
    Hello {
        /// Sender's protocol version ([`VERSION`]).
        version: u16,
        /// Human-readable device name.
        name: WireText,
    },
    /// Sender -> receiver: what it wants to send.
    Offer(Manifest),
    /// Receiver -> sender: go ahead, sending exactly these blocks (all of
    /// them for a fresh transfer; only the missing ones when resuming).
    Accept {
        /// Block ranges to send, in manifest order, non-overlapping.
        need: Vec<BlockRange>,
    },
    /// Receiver -> sender: not wanted, with a reason for the user.
    Reject {
        /// Why, in words a user understands.
        reason: WireText,
    },
    /// Sender -> receiver: bytes of file number `file` (an index into the
    /// offer's entries) starting at `offset`.
    Data {
        /// Index into [`Manifest::entries`]; must name a file entry.
        file: u32,
        /// Byte offset inside that file.
        offset: u64,
        /// At most [`MAX_DATA_CHUNK`] bytes.
        data: Bytes,
    },
    /// Sender -> receiver, right after the last `Data` frame of every block
    /// it sends: the block's BLAKE3 value (see [`hash`]), which the
    /// receiver compares with its own hash of the bytes that arrived.
    BlockValue {
        /// Index into [`Manifest::entries`]; the file the block belongs to.
        file: u32,
        /// Block index inside that file.
        block: u64,
        /// The block value.
        value: [u8; 32],
    },
    /// Receiver -> sender: every block's value matched, was synced to disk
    /// and renamed into place.
    Done,
    /// Either direction: the transfer is over because of `code`.
    Error {
        /// Machine-readable cause.
        code: ErrorCode,
        /// Human-readable detail.
        message: WireText,
    },
    /// Dialer -> acceptor, instead of `Offer`: asks both users to compare
    /// the pairing code of this TLS session and, if they match, to trust
    /// each other.
    PairRequest,
    /// Either direction, once per side, during pairing: this side's user
    /// compared the codes and accepted (or declined) the pairing.
    PairConfirm {
        /// Whether the user confirmed that both codes match.
        accepted: bool,
    },
    /// Dialer -> acceptor, instead of `Offer`: a short text for the
    /// receiver's inbox, answered with `Done` or `Reject`.
    Text {
        /// At most [`MAX_TEXT_LEN`] bytes of UTF-8.
        text: String,
    },
    /// Dialer -> acceptor, instead of `Offer` (`share doctor PEER`):
    /// "connect back to me". The acceptor dials the *observed source
    /// address* of this connection at `port`, once over QUIC and once over
    /// TCP, and sends `Echo { nonce }` on each connection that
    /// authenticates; then it answers `ProbeResult`.
    Probe {
        /// The dialer's service port (UDP and TCP).
        port: u16,
        /// Random; echoed back so the dialer can match the connections.
        nonce: [u8; PROBE_NONCE_LEN],
    },
    /// First and only message after `Hello` on a dial-back connection.
    Echo {
        /// The nonce of the `Probe` being answered.
        nonce: [u8; PROBE_NONCE_LEN],
    },
    /// Sender -> receiver, right after `Offer`, only on a connection that
    /// negotiated [`ALPN_METADATA`]: each entry's modification time and
    /// executable bit, one per entry in manifest order.
    Metadata(Vec<EntryMeta>),
    /// Acceptor -> dialer of a `Probe`: which dial-backs authenticated
    /// and delivered their `Echo`.
    ProbeResult {
        /// The QUIC (UDP) dial-back worked.
        quic: bool,
        /// The TCP dial-back worked.
        tcp: bool,
    },
}
