//! The lanshare protocol's transfer sessions on top of a [`Link`]: the
//! offer/consent/data/done exchange for files, and the text exchange.
//!
//! * [`framed`] turns a link's byte streams into protocol messages (the one
//!   framing seam shared by QUIC, TCP and, in tests, in-memory pipes).
//! * [`handshake`] exchanges `Hello` in both directions; only after the
//!   peer's `Hello` is a link considered authenticated.
//! * [`send`] streams files read by [`source`] to a peer, hashing them as
//!   they go.
//! * [`receive`] reads an offer, hands it to the [`crate::intake`]
//!   (checks, consent), and writes through [`crate::store`], keeping
//!   [`resume`] records for interrupted transfers, whose partial data
//!   [`kept`] lists and bounds.
//! * [`text`] carries a short text either way.
//!
//! Everything here runs over any [`Link`], so the sessions are tested
//! against each other over in-memory pipes with a paused clock (the
//! `tests` module beside this one).
//!
//! [`Link`]: crate::transport::Link

#[cfg(test)]
mod conformance;
pub mod exclude;
pub mod framed;
pub mod handshake;
pub mod kept;
pub mod memory;
pub mod receive;
pub mod resume;
pub mod send;
pub mod source;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
pub mod text;

use std::time::Duration;

use crate::protocol::ErrorCode;
use crate::registry::{Handle, StopCause};
use crate::safe_text::{CleanText, PeerName};

/// How long an offer waits for `share accept` before it expires as rejected.
pub const DEFAULT_OFFER_TIMEOUT: Duration = Duration::from_secs(120);

/// How long either side waits for the next message during a transfer
/// before declaring the peer dead (TCP has no transport idle timeout).
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping daemon gives each link to deliver its last
/// message (`Error(Paused)`) before it closes it: the whole stop stays
/// well under a second, however much the peer still has in flight.
pub const STOP_GRACE: Duration = Duration::from_millis(200);

/// What a sending session reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// The offer is out; the receiver's user has to accept it.
    Waiting,
    /// Accepted; data is flowing.
    Accepted,
}

/// Why a transfer did not complete.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The receiver (or its user) declined the offer.
    #[error("{peer} rejected the transfer: {reason}")]
    Rejected {
        /// Peer name.
        peer: PeerName,
        /// The receiver's reason.
        reason: CleanText,
    },
    /// The peer stopped the transfer with an `Error` message.
    #[error("{}", peer_error(peer, *code, message))]
    Peer {
        /// Peer name.
        peer: PeerName,
        /// Machine-readable cause.
        code: ErrorCode,
        /// The peer's explanation.
        message: CleanText,
    },
    /// The peer broke the protocol; we told it so and hung up.
    #[error("protocol violation by the peer: {0}")]
    Protocol(String),
    /// The link failed (connection lost, reset).
    #[error("connection failed: {0}")]
    Link(String),
    /// The peer sent nothing for `0` seconds while it owed a message (sent
    /// as `Error(Io)`, so the sender retries, PROTOCOL.md §6.6).
    #[error("no message from the peer for {0} s")]
    Timeout(u64),
    /// The receiver answered neither yes nor no within the consent wait:
    /// the offer is withdrawn (sent as `Error(Cancelled)`) and not tried
    /// again, since its user has been asked once (PROTOCOL.md §6.6).
    #[error("{peer} did not answer within {waited} s; nothing was sent")]
    NoAnswer {
        /// Peer name.
        peer: PeerName,
        /// Seconds waited.
        waited: u64,
    },
    /// A local file problem on this side.
    #[error("{0}")]
    Local(String),
    /// Writing to the download directory failed (full disk, bad hash, ...).
    #[error("{message}")]
    Storage {
        /// What the peer is told.
        code: ErrorCode,
        /// Details.
        message: String,
    },
    /// Cancelled on this side.
    #[error("cancelled")]
    Cancelled,
    /// This side cannot take the transfer now (sent as `Error(Busy)`; the
    /// sender retries).
    #[error("{0}")]
    Busy(String),
    /// This daemon is stopping (a service stop or restart): the transfer
    /// is paused, not ended; the receiver keeps what it verified (sent as
    /// `Error(Paused)`, which the sender retries).
    #[error("the lanshare service is stopping (stop or restart)")]
    Stopping,
}

/// Wording for an `Error` frame from the peer (with the number of a code
/// this side does not know).
fn peer_error(peer: &PeerName, code: ErrorCode, message: &CleanText) -> String {
    match code {
        ErrorCode::Cancelled => format!("cancelled by peer ({peer})"),
        ErrorCode::Paused => format!("{peer} paused the transfer: {message}"),
        _ => format!("{peer} stopped the transfer: {}", code.report(message)),
    }
}

impl TransferError {
    /// The code to send to the peer when this error ends a transfer.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Rejected { .. } => ErrorCode::Refused,
            Self::Peer { code, .. } | Self::Storage { code, .. } => *code,
            Self::Protocol(_) => ErrorCode::Protocol,
            Self::Link(_) | Self::Local(_) | Self::Timeout(_) => ErrorCode::Io,
            Self::Cancelled | Self::NoAnswer { .. } => ErrorCode::Cancelled,
            Self::Busy(_) => ErrorCode::Busy,
            Self::Stopping => ErrorCode::Paused,
        }
    }

    /// What ends a transfer whose cancel signal fired: the daemon
    /// stopping pauses it, anything else is a user's cancel.
    pub fn interrupted(handle: &Handle) -> Self {
        match handle.stop_cause() {
            Some(StopCause::Shutdown) => Self::Stopping,
            Some(StopCause::Cancel) | None => Self::Cancelled,
        }
    }
}
