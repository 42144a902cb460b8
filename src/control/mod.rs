//! The control channel between the `share` CLI and its daemon.
//!
//! A Unix stream socket carries versioned, line-delimited JSON: the client
//! writes one [`RequestEnvelope`] line; the daemon answers with zero or more
//! [`Reply::Event`] lines (progress of a `send`) and exactly one final
//! [`Reply::Ok`] or [`Reply::Error`] line, then closes. Keeping it JSON
//! makes the socket scriptable with `socat` and keeps the CLI thin.
//!
//! Each request has one reply type ([`Response`] lists them); a failure is
//! a [`CommandError`]: `{"type":"error","message":"...","kind":"not_found"}`,
//! where `kind` ([`ErrorKind`]) is for programs and `message` for people.
//!
//! Access control is the socket file's permissions: mode 0600 inside a 0700
//! directory for a user daemon; mode 0660 group `lanshare` inside the 0750
//! runtime directory for the system service, so root and the members of
//! that group may use every command and nobody else can connect. The server
//! also logs the caller's uid (`SO_PEERCRED`) with each command.
//!
//! Files to send travel as open descriptors, never as paths ([`fds`]).

pub(crate) mod budget;
pub mod client;
mod error;
pub mod events;
pub mod fds;
pub mod ownership;
pub mod server;

pub use crate::outgoing::{ResultStatus, SendEvent};
pub use error::{CommandError, ErrorKind, io_kind, source_kind};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::discovery::InterfaceInfo;
use crate::doctor::report::DoctorReport;
use crate::history::HistoryEntry;
use crate::identity::DeviceId;
use crate::intake::AcceptPolicy;
use crate::intake::inbox::InboxText;
use crate::outgoing::{SendResult, TextResult};
use crate::pairing::PairingInfo;
use crate::peers::PeerInfo;
use crate::queue::QueuedSend;
use crate::registry::TransferInfo;
use crate::safe_text::CleanText;
use crate::transfer::source::WalkOptions;
use crate::transport::TransportKind;
use crate::transport::dial::Preference;

/// Version of the control protocol; bumped on incompatible changes.
pub const CONTROL_VERSION: u32 = 1;

/// Longest request line the daemon reads (a `send` of
/// [`crate::protocol::MAX_ENTRIES`] names fits).
pub const MAX_REQUEST_LEN: usize = 32 << 20;

/// One request line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// [`CONTROL_VERSION`] of the client.
    pub v: u32,
    /// The command.
    #[serde(flatten)]
    pub request: Request,
}

/// Commands the CLI can give the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// This device's name and ID.
    Id,
    /// Daemon status.
    Status,
    /// Visible peers.
    Peers,
    /// Known transfers.
    Transfers,
    /// Send files and directories to a peer. The files themselves follow
    /// the request line as open descriptors ([`fds`]), one per file entry,
    /// in order: the daemon never opens a path a user names.
    Send {
        /// Name, device-ID prefix or `HOST:PORT`.
        peer: String,
        /// What to offer, parents before children, in send order.
        entries: Vec<SendEntry>,
        /// Special files the CLI left out of named directories.
        #[serde(default)]
        skipped: Vec<String>,
        /// Transport choice.
        #[serde(default)]
        transport: Preference,
        /// How long to keep retrying an interrupted transfer (seconds);
        /// `None` = the daemon's default.
        #[serde(default)]
        retry_for_s: Option<u64>,
        /// The PIN a LocalSend receiver asks for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<String>,
    },
    /// Accept a pending offer.
    Accept {
        /// Transfer ID (prefix).
        id: String,
    },
    /// Reject a pending offer.
    Reject {
        /// Transfer ID (prefix).
        id: String,
        /// Reason shown to the sender (cleaned as it is read).
        #[serde(default)]
        reason: Option<CleanText>,
    },
    /// Cancel a pending or active transfer, or drop the partial data an
    /// interrupted incoming one kept.
    Cancel {
        /// Transfer ID (prefix).
        id: String,
    },
    /// Drop the partial data of every interrupted incoming transfer.
    Clean,
    /// Pin a device as trusted.
    Trust {
        /// Name, device-ID (prefix) or `HOST:PORT`.
        peer: String,
    },
    /// Remove a device from the trusted set.
    Untrust {
        /// Name or device-ID (prefix).
        peer: String,
    },
    /// Check and explain discovery and connectivity (`share doctor`).
    Doctor {
        /// Also measure reachability with this peer (name, ID prefix or
        /// `HOST:PORT`) in both directions.
        #[serde(default)]
        peer: Option<String>,
    },
    /// Add a peer by address; kept across restarts (`share peers add`).
    PeersAdd {
        /// `HOST:PORT` of the peer's service port.
        addr: String,
    },
    /// Forget a manual or remembered peer (`share peers remove`).
    PeersRemove {
        /// Name, device-ID prefix or `HOST:PORT`.
        peer: String,
    },
    /// Start pairing with a device; answers at once with the code
    /// ([`PairingInfo`]).
    Pair {
        /// Name, device-ID prefix or `HOST:PORT`.
        peer: String,
        /// Transport choice.
        #[serde(default)]
        transport: Preference,
    },
    /// Pairing attempts, incoming and outgoing.
    Pairings,
    /// This user's answer to a pairing, after comparing the codes.
    PairDecide {
        /// Pairing ID (prefix).
        id: String,
        /// Whether the codes match.
        accept: bool,
        /// Answer only once the pairing is over (both sides decided).
        #[serde(default)]
        wait: bool,
    },
    /// The persistent history of finished transfers, oldest first.
    History {
        /// Only the newest this many; `None` = all.
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Queue a send until the peer is reachable; answers at once. The
    /// files follow as open descriptors, exactly as for [`Request::Send`].
    QueueSend {
        /// Name, device-ID prefix or `HOST:PORT`.
        peer: String,
        /// What to offer, as for `Send`.
        entries: Vec<SendEntry>,
        /// Special files the CLI left out.
        #[serde(default)]
        skipped: Vec<String>,
        /// Transport choice.
        #[serde(default)]
        transport: Preference,
        /// The absolute paths the user named, to open again after a
        /// daemon restart.
        #[serde(default)]
        roots: Vec<PathBuf>,
        /// Queue it even if no device of that name was ever seen.
        #[serde(default)]
        wait_for_peer: bool,
        /// `--strict` and `--exclude`, for that walk.
        #[serde(default)]
        walk: WalkOptions,
        /// The PIN a LocalSend receiver asks for (kept in memory only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<String>,
    },
    /// Queued sends.
    Queue,
    /// Remove a queued send.
    QueueCancel {
        /// Queue ID (prefix).
        id: String,
    },
    /// Send a short text (at most [`crate::protocol::MAX_TEXT_LEN`] bytes).
    SendText {
        /// Name, device-ID prefix or `HOST:PORT`.
        peer: String,
        /// The text.
        text: String,
        /// Transport choice.
        #[serde(default)]
        transport: Preference,
        /// The PIN a LocalSend receiver asks for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<String>,
    },
    /// Received texts.
    Inbox,
    /// The newest unread text, marked read; waits up to `wait_s` seconds
    /// for one if there is none.
    ReceiveText {
        /// How long to wait for a text to arrive.
        #[serde(default)]
        wait_s: Option<u64>,
    },
    /// Keep the connection open and stream [`events::Event`]s about these
    /// topics (all when empty); see [`events`].
    Subscribe {
        /// What to hear about.
        #[serde(default)]
        topics: Vec<events::Topic>,
    },
}

/// One entry of a [`Request::Send`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendEntry {
    /// Name it is offered under (`photos/2024/a.jpg`).
    pub path: String,
    /// A directory; otherwise a regular file whose descriptor is passed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
}

impl Request {
    /// How many open files follow this request on the socket.
    pub fn fd_count(&self) -> usize {
        match self {
            Self::Send { entries, .. } | Self::QueueSend { entries, .. } => {
                entries.iter().filter(|e| !e.dir).count()
            }
            _ => 0,
        }
    }
}

/// One reply line. The daemon sends the result as a [`Response`]; a
/// client reads it back as JSON and parses the type its request expects.
/// Events are a `send`'s progress ([`SendEvent`]) or, on a subscription,
/// [`events::Event`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply<T = serde_json::Value, E = SendEvent> {
    /// Final success, with the command's result.
    Ok {
        /// Command-specific result.
        data: T,
    },
    /// Final failure, with a one-line, actionable message.
    Error {
        /// What happened and what to do.
        message: String,
        /// What kind of failure, for programs (absent from daemons older
        /// than this field: [`ErrorKind::Unknown`]).
        #[serde(default = "unknown_kind")]
        kind: ErrorKind,
    },
    /// Progress of a long command, or a subscription's event.
    Event {
        /// The event.
        event: E,
    },
}

fn unknown_kind() -> ErrorKind {
    ErrorKind::Unknown
}

impl<T, E> Reply<T, E> {
    /// The final line for a command's outcome.
    pub fn outcome(result: Result<T, CommandError>) -> Self {
        match result {
            Ok(data) => Self::Ok { data },
            Err(e) => Self::Error {
                message: e.message,
                kind: e.kind,
            },
        }
    }
}

/// The result of each request, by request; serialised as the bare
/// document (no tag), so each request's `data` is exactly its type.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Response {
    /// [`Request::Id`].
    Id(IdInfo),
    /// [`Request::Status`].
    Status(Box<StatusInfo>),
    /// [`Request::Peers`].
    Peers(Vec<PeerInfo>),
    /// [`Request::Transfers`].
    Transfers(TransferList),
    /// [`Request::Send`].
    Sent(SendResult),
    /// [`Request::Accept`], `Reject`, `Cancel`, `Clean`, `Trust`,
    /// `Untrust`, `PeersAdd`, `PeersRemove`, `QueueCancel`.
    Ack(Ack),
    /// [`Request::Doctor`].
    Doctor(Box<DoctorReport>),
    /// [`Request::Pair`], [`Request::PairDecide`].
    Pairing(PairingInfo),
    /// [`Request::Pairings`].
    Pairings(Vec<PairingInfo>),
    /// [`Request::History`].
    History(Vec<HistoryEntry>),
    /// [`Request::QueueSend`].
    Queued(QueuedSend),
    /// [`Request::Queue`].
    Queue(Vec<QueuedSend>),
    /// [`Request::SendText`].
    TextSent(TextResult),
    /// [`Request::Inbox`].
    Inbox(Vec<InboxText>),
    /// [`Request::ReceiveText`].
    Text(InboxText),
}

/// `share id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdInfo {
    /// Device name.
    pub name: String,
    /// Device ID.
    pub id: DeviceId,
}

/// `share status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Device name.
    pub name: String,
    /// Device ID.
    pub id: DeviceId,
    /// Service port (UDP for QUIC, TCP for the fallback).
    pub port: u16,
    /// lanshare version.
    pub version: String,
    /// Wire protocol version.
    pub protocol: u16,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Transports accepting connections.
    pub transports: Vec<TransportKind>,
    /// Whether mDNS discovery runs.
    pub mdns: bool,
    /// Consent policy.
    pub accept: AcceptPolicy,
    /// Number of visible peers.
    pub peers: usize,
    /// Transfers pending or active.
    pub active_transfers: usize,
    /// Incoming offers waiting for `share accept` or `share reject`.
    #[serde(default)]
    pub offers_to_answer: usize,
    /// Pairings waiting for this side's `share pair --confirm`.
    #[serde(default)]
    pub pairings_to_confirm: usize,
    /// Received texts not read yet (`share receive --text`, `share inbox`).
    #[serde(default)]
    pub unread_texts: usize,
    /// Interrupted incoming transfers that keep partial data for a resume
    /// (`share transfers` lists them).
    #[serde(default)]
    pub partial_transfers: usize,
    /// The bytes of partial data they keep.
    #[serde(default)]
    pub partial_bytes: u64,
    /// Paths remembered as "QUIC broken" (TCP used first).
    pub quic_broken_paths: usize,
    /// Where received files go.
    pub download_dir: PathBuf,
    /// Identity, trust store.
    pub state_dir: PathBuf,
    /// Conditions worth a user's attention.
    pub warnings: Vec<String>,
    /// The host's interfaces, and which of them discovery uses.
    #[serde(default)]
    pub interfaces: Vec<InterfaceInfo>,
    /// LocalSend interoperability.
    #[serde(default)]
    pub localsend: LocalSendStatus,
}

/// `localsend` of `share status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LocalSendStatus {
    /// Whether the daemon talks to LocalSend apps.
    pub enabled: bool,
    /// Its HTTPS port (TCP), when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Its discovery port (UDP), when discovery runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_port: Option<u16>,
    /// Its certificate's fingerprint, upper-case hex as LocalSend shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Whether senders must give a PIN.
    #[serde(default)]
    pub pin: bool,
    /// LocalSend devices found.
    #[serde(default)]
    pub devices: usize,
}

/// Result of `share accept` / `reject` / `cancel` / `trust` / `untrust`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ack {
    /// What was done, in words.
    pub message: String,
}

/// The transfers list.
pub type TransferList = Vec<TransferInfo>;
