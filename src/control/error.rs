//! Why a command failed, as the daemon tells the CLI and the CLI tells
//! scripts.
//!
//! A [`CommandError`] is one sentence for a person (what happened and what
//! to do) plus an [`ErrorKind`] for a program. The kind travels in the
//! final `error` reply line as `"kind"`, next to the `"message"` older
//! clients read, and `share ... --json` prints it in its failure document,
//! so a script can tell "no such device" from "the device refused" without
//! parsing English. Kinds are part of the control protocol: new ones may
//! be added, existing ones keep their meaning (and their snake_case name).

use serde::{Deserialize, Serialize};

use crate::history::HistoryError;
use crate::intake::inbox::{InboxError, NextTextError};
use crate::outgoing::SendError;
use crate::outgoing::retry::AttemptError;
use crate::pairing::PairingError;
use crate::peers::{IdentifyError, LookupError, PeersError, ResolveError};
use crate::protocol::ErrorCode;
use crate::queue::QueueError;
use crate::registry::RegistryError;
use crate::transfer::TransferError;
use crate::transfer::source::SourceError;
use crate::transport::dial::DialError;

/// What kind of failure a command met: stable, machine-readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself is unusable: nothing to send, an empty or
    /// over-long text, an address that is not `HOST:PORT`, a file that
    /// cannot be sent.
    Invalid,
    /// Nothing matches: no such device, transfer, pairing or queued send,
    /// or no unread text.
    NotFound,
    /// A name or ID prefix matches several; type more of it.
    Ambiguous,
    /// It exists but is not in a state that allows this (a transfer that
    /// is no longer pending, a pairing already answered, a device that
    /// was not trusted).
    Conflict,
    /// The peer could not be reached over any transport.
    Unreachable,
    /// The peer, or this device's trust rules, refused the connection:
    /// an identity mismatch, an incompatible protocol version.
    Refused,
    /// The receiver (its user, its policy, or the offer's expiry) declined.
    Rejected,
    /// Cancelled by a user, on either side.
    Cancelled,
    /// It started but did not complete (the link failed for good, the
    /// receiver could not store the data, a file changed while sent).
    Failed,
    /// A limit was reached (the send queue is full, too many pairings are
    /// waiting, a rate limit); try again later.
    Busy,
    /// Nothing happened within the time asked for.
    Timeout,
    /// A local file or directory could not be read or written: the
    /// daemon's (state directory, trust store, history) or one to send.
    Io,
    /// A bug, or a failure that should not happen.
    Internal,
    /// No daemon answers on the control socket (set by the CLI).
    NoDaemon,
    /// This user may not use the control socket, or read a file named
    /// to send (set by the CLI).
    Permission,
    /// The connection to the daemon broke or carried something
    /// unreadable (set by the CLI).
    Control,
    /// A kind this client does not know (a newer daemon), or none given
    /// (an older one).
    #[serde(other)]
    Unknown,
}

impl ErrorKind {
    /// The name used in JSON (`not_found`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::NotFound => "not_found",
            Self::Ambiguous => "ambiguous",
            Self::Conflict => "conflict",
            Self::Unreachable => "unreachable",
            Self::Refused => "refused",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
            Self::Busy => "busy",
            Self::Timeout => "timeout",
            Self::Io => "io",
            Self::Internal => "internal",
            Self::NoDaemon => "no_daemon",
            Self::Permission => "permission",
            Self::Control => "control",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command's failure: a kind for programs, a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What happened and what to do, in one line.
    pub message: String,
}

impl CommandError {
    /// A failure of `kind`, explained by `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// [`ErrorKind::Invalid`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }
}

// How the errors of the layers below map onto kinds. They live here, in
// the contract's module, because those layers do not know the control
// protocol.

macro_rules! kind_of {
    ($error:ty, |$e:ident| $kind:expr) => {
        impl From<$error> for CommandError {
            fn from($e: $error) -> Self {
                let kind = $kind;
                Self::new(kind, $e.to_string())
            }
        }
    };
}

/// The kind of a file or directory that cannot be sent: gone, not
/// readable by the user, unreadable for another reason, or not sendable.
pub fn source_kind(e: &SourceError) -> ErrorKind {
    match e {
        SourceError::Io { source, .. } => io_kind(source),
        SourceError::PermissionDenied { .. } => ErrorKind::Permission,
        _ => ErrorKind::Invalid,
    }
}

/// The kind of a failed system call on a local file.
pub fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorKind::Permission,
        _ => ErrorKind::Io,
    }
}

/// The kind of a transfer that ended with `e` once connected.
fn transfer_kind(e: &TransferError) -> ErrorKind {
    match e {
        TransferError::Rejected { .. } => ErrorKind::Rejected,
        TransferError::Cancelled
        | TransferError::Peer {
            code: ErrorCode::Cancelled,
            ..
        } => ErrorKind::Cancelled,
        TransferError::Peer {
            code: ErrorCode::Busy,
            ..
        }
        | TransferError::Busy(_) => ErrorKind::Busy,
        TransferError::Peer {
            code: ErrorCode::Refused,
            ..
        } => ErrorKind::Refused,
        _ => ErrorKind::Failed,
    }
}

/// The kind of a connection that could not be made.
fn dial_kind(e: &DialError) -> ErrorKind {
    match e {
        DialError::Unavailable(_) => ErrorKind::Invalid,
        DialError::Refused(_) => ErrorKind::Refused,
        DialError::Unreachable(_) | DialError::Gone => ErrorKind::Unreachable,
    }
}

/// The kind of a name or ID prefix that names no single device.
fn lookup_kind(e: &LookupError) -> ErrorKind {
    match e {
        LookupError::NotFound(_) => ErrorKind::NotFound,
        LookupError::Ambiguous(..) => ErrorKind::Ambiguous,
    }
}

/// The kind of a PEER that could not be resolved.
fn resolve_kind(e: &ResolveError) -> ErrorKind {
    match e {
        ResolveError::Ambiguous { .. } => ErrorKind::Ambiguous,
        ResolveError::Impostor { .. } => ErrorKind::Refused,
        ResolveError::NoPort { .. } | ResolveError::IsSelf(_) | ResolveError::ShortPrefix(_) => {
            ErrorKind::Invalid
        }
        ResolveError::LocalSendOff(_) => ErrorKind::Invalid,
        _ => ErrorKind::NotFound,
    }
}

kind_of!(RegistryError, |e| match &e {
    RegistryError::NotFound(_) => ErrorKind::NotFound,
    RegistryError::Ambiguous(_) => ErrorKind::Ambiguous,
    RegistryError::NothingTo { .. } => ErrorKind::Conflict,
});

kind_of!(HistoryError, |e| ErrorKind::Io);

kind_of!(InboxError, |e| ErrorKind::Io);

kind_of!(NextTextError, |e| match &e {
    NextTextError::NoneUnread => ErrorKind::NotFound,
    NextTextError::Timeout(_) => ErrorKind::Timeout,
    NextTextError::Cancelled => ErrorKind::Cancelled,
    NextTextError::Inbox(_) => ErrorKind::Io,
});

kind_of!(PeersError, |e| match &e {
    PeersError::Lookup(e) => lookup_kind(e),
    PeersError::Resolve(e) => resolve_kind(e),
    PeersError::Connect {
        error: IdentifyError::Dial(e),
        ..
    } => dial_kind(e),
    PeersError::Connect { .. } | PeersError::LocalSend { .. } => ErrorKind::Unreachable,
    PeersError::NotTrusted { .. } => ErrorKind::Conflict,
    PeersError::NotAnAddress(_) | PeersError::IsSelf(_) => ErrorKind::Invalid,
    PeersError::NoSuchHost(_) | PeersError::NotListed(_) => ErrorKind::NotFound,
    PeersError::SeveralListed { .. } => ErrorKind::Ambiguous,
    PeersError::Save(_) | PeersError::Trust(_) => ErrorKind::Io,
});

kind_of!(PairingError, |e| match &e {
    PairingError::Resolve(e) => resolve_kind(e),
    PairingError::Connect { error, .. } => dial_kind(error),
    PairingError::NoCode => ErrorKind::Internal,
    PairingError::NotAsked { .. } => ErrorKind::Failed,
    PairingError::Busy => ErrorKind::Busy,
    PairingError::NotFound(_) => ErrorKind::NotFound,
    PairingError::Ambiguous(_) => ErrorKind::Ambiguous,
    PairingError::Over { .. } | PairingError::AlreadyAnswered(_) => ErrorKind::Conflict,
});

kind_of!(QueueError, |e| match &e {
    QueueError::NoPeer | QueueError::Empty => ErrorKind::Invalid,
    QueueError::Full | QueueError::TooManyFiles(_) => ErrorKind::Busy,
    QueueError::Save(_) => ErrorKind::Io,
    QueueError::NotFound(_) | QueueError::NeverSeen(_) => ErrorKind::NotFound,
    QueueError::Mistake(e) => resolve_kind(e),
    QueueError::Ambiguous(_) => ErrorKind::Ambiguous,
});

kind_of!(SendError, |e| match &e {
    SendError::Source(e) => source_kind(e),
    SendError::Empty | SendError::Text(_) => ErrorKind::Invalid,
    SendError::Resolve(e) => resolve_kind(e),
    SendError::Connect { error, .. } => dial_kind(error),
    SendError::Cancelled => ErrorKind::Cancelled,
    SendError::Stopping { .. } => ErrorKind::Failed,
    SendError::Transfer(AttemptError::Dial(_, e)) => dial_kind(e),
    SendError::Transfer(AttemptError::Transfer(e)) => transfer_kind(e),
    SendError::Internal(_) => ErrorKind::Internal,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_stable_json_names() {
        for kind in [
            ErrorKind::Invalid,
            ErrorKind::NotFound,
            ErrorKind::Ambiguous,
            ErrorKind::Conflict,
            ErrorKind::Unreachable,
            ErrorKind::Refused,
            ErrorKind::Rejected,
            ErrorKind::Cancelled,
            ErrorKind::Failed,
            ErrorKind::Busy,
            ErrorKind::Timeout,
            ErrorKind::Io,
            ErrorKind::Internal,
            ErrorKind::NoDaemon,
            ErrorKind::Permission,
            ErrorKind::Control,
            ErrorKind::Unknown,
        ] {
            let json = serde_json::to_value(kind).unwrap_or_default();
            assert_eq!(json, kind.as_str(), "{kind:?}");
            let back: ErrorKind = serde_json::from_value(json).unwrap_or(ErrorKind::Internal);
            assert_eq!(back, kind);
        }
        // A kind from a newer daemon is not an error for an older client.
        let newer: ErrorKind =
            serde_json::from_str("\"quota_exceeded\"").unwrap_or(ErrorKind::Internal);
        assert_eq!(newer, ErrorKind::Unknown);
    }
}
