//! Replies of the pairing, history, queue and text commands.
//!
//! These are the JSON documents `share pair`, `share history`, `share
//! queue`, `share inbox` and `share receive --text` print with `--json`,
//! shared by the daemon (which builds them) and the CLI (which renders
//! them), like the other reply types in [`super`].

use serde::{Deserialize, Serialize};

use crate::identity::DeviceId;
use crate::protocol::MAX_TEXT_LEN;
use crate::transfer::registry::{Direction, State, TransferKind};
use crate::transport::TransportKind;
use crate::transport::dial::Preference;

/// Where a pairing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PairingState {
    /// Waiting for one or both users to compare the codes.
    Waiting,
    /// Both users confirmed: each device now trusts the other.
    Paired,
    /// A user declined (on either side).
    Rejected,
    /// The link or the peer failed before both confirmed.
    Failed,
    /// Nobody decided before the timeout.
    Expired,
}

impl PairingState {
    /// The lower-case name (as in JSON), for text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Paired => "paired",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    /// Whether the pairing is over.
    pub fn finished(self) -> bool {
        self != Self::Waiting
    }
}

/// One pairing attempt, as listed by `share pair --list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairingInfo {
    /// Short ID for `share pair --confirm ID`.
    pub id: String,
    /// `out`: this device asked; `in`: the peer asked.
    pub direction: Direction,
    /// The peer's name (from its `Hello`).
    pub peer: String,
    /// The peer's device ID (proven by TLS).
    pub peer_id: DeviceId,
    /// The 6-digit code both devices show, zero-padded.
    pub code: String,
    /// Where it stands.
    pub state: PairingState,
    /// This side's answer, once given.
    pub you_confirmed: Option<bool>,
    /// The peer's answer, once received.
    pub peer_confirmed: Option<bool>,
    /// Transport of the pairing link.
    pub transport: TransportKind,
    /// Seconds left to decide (0 once finished).
    pub expires_in_s: u64,
    /// Why it failed, was rejected or expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Start time, seconds since the Unix epoch.
    pub started: u64,
}

/// One finished transfer in the persistent history (`share history`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The transfer's ID on this device (or the queue ID for a queued
    /// send that never connected).
    pub id: String,
    /// When it ended, seconds since the Unix epoch.
    pub time: u64,
    /// When it started, seconds since the Unix epoch.
    pub started: u64,
    /// Wall time from start to end, in seconds.
    pub duration_s: f64,
    /// `in` or `out`.
    pub direction: Direction,
    /// Files or a text.
    pub kind: TransferKind,
    /// The peer's name.
    pub peer: String,
    /// The peer's device ID, if a connection was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<DeviceId>,
    /// `done`, `failed`, `rejected` or `cancelled`.
    pub outcome: State,
    /// Why it failed, was rejected or cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Top-level names offered (a preview for a text).
    pub names: Vec<String>,
    /// Number of files.
    pub files: usize,
    /// Total bytes offered (file content, or the text's length).
    pub bytes: u64,
    /// Bytes known to be at the receiver when it ended.
    pub bytes_done: u64,
    /// Bytes carried over the network, over all attempts.
    pub bytes_sent: u64,
    /// Transport of the last attempt, if a connection was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportKind>,
}

/// One queued send (`share queue`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedSend {
    /// Short ID for `share queue cancel ID`.
    pub id: String,
    /// The peer as the user gave it (name, ID prefix or `HOST:PORT`).
    pub peer: String,
    /// Top-level names to send.
    pub names: Vec<String>,
    /// Number of files.
    pub files: usize,
    /// Transport choice.
    pub transport: Preference,
    /// When it was queued, seconds since the Unix epoch.
    pub queued: u64,
    /// Waiting for the peer, or sending now.
    pub state: QueueState,
    /// Times the peer seemed back but the send did not happen.
    pub attempts: u32,
    /// Why the last try did not go out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Where a queued send stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueState {
    /// Waiting for the peer to be reachable.
    Waiting,
    /// The peer answered; the send is running.
    Sending,
}

impl QueueState {
    /// The lower-case name (as in JSON), for text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Sending => "sending",
        }
    }
}

/// One received text (`share inbox`, `share receive --text`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxText {
    /// Short ID.
    pub id: String,
    /// The sender's name.
    pub peer: String,
    /// The sender's device ID.
    pub peer_id: DeviceId,
    /// When it arrived, seconds since the Unix epoch.
    pub received: u64,
    /// The text, exactly as sent.
    pub text: String,
    /// Whether `share receive --text` has printed it.
    pub read: bool,
}

/// Result of `share send --text`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextResult {
    /// Always `done` (failures are errors).
    pub status: super::ResultStatus,
    /// Peer name.
    pub peer: String,
    /// Peer device ID.
    pub peer_id: DeviceId,
    /// Transfer ID on this side.
    pub id: String,
    /// Transport used.
    pub transport: TransportKind,
    /// Length of the text in bytes.
    pub bytes: u64,
    /// Wall time from request to the receiver's confirmation.
    pub seconds: f64,
}

/// Why a text cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Nothing to send.
    #[error("the text is empty; nothing to send")]
    Empty,
    /// More than [`MAX_TEXT_LEN`] bytes.
    #[error(
        "the text is {0} bytes, more than the limit of {MAX_TEXT_LEN} bytes (64 KiB); send it as a file instead"
    )]
    TooLong(usize),
}

/// Checks a text before it is sent (by the CLI, and again by the daemon):
/// not empty, at most [`MAX_TEXT_LEN`] bytes.
pub fn check_text(text: &str) -> Result<(), TextError> {
    if text.is_empty() {
        return Err(TextError::Empty);
    }
    if text.len() > MAX_TEXT_LEN {
        return Err(TextError::TooLong(text.len()));
    }
    Ok(())
}
