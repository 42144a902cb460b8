//! Pairing: two users make their devices trust each other after comparing
//! a 6-digit code (`share pair PEER`, `share pair --confirm ID`).
//!
//! Trusting a device found by name or typed as `HOST:PORT` is trust on
//! first use: whoever answered is pinned, including a man in the middle.
//! Pairing closes that gap with a short authentication string, the way
//! Bluetooth numeric comparison does: both daemons derive the code from
//! their TLS session with the keying-material exporter
//! ([`crate::transport::Link::pairing_code`]). Both ends of one session get
//! the same number; an attacker relaying between two sessions cannot make
//! them agree, so the users see different codes and decline.
//!
//! The exchange is a session of its own after `Hello`: the dialer sends
//! `PairRequest`; then each side sends one `PairConfirm { accepted }` as
//! soon as its user has decided, and reads the peer's. Only when both said
//! yes does each daemon pin the other's device ID in its trust store. The
//! link stays open until then, or until [`PAIRING_TIMEOUT`]. Pairing always
//! needs both users, whatever the consent policy (`--accept all` included).
//!
//! [`Pairings`] is the table `share pair --list` shows and where a user's
//! decision is delivered; it mirrors the transfer registry.

mod session;
mod table;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::identity::DeviceId;
use crate::identity::trust::TrustStore;
use crate::peers::{Connected, Connector, ResolveError, Resolver};
use crate::protocol::{ErrorCode, Message};
use crate::registry::Direction;
use crate::safe_text::{CleanText, PeerName};
use crate::transfer::TransferError;
use crate::transfer::framed::Framed;
use crate::transport::TransportKind;
use crate::transport::dial::{DialError, Preference};
use table::Table;

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
    pub peer: PeerName,
    /// The peer's device ID (proven by TLS).
    pub peer_id: DeviceId,
    /// The trusted device whose name the peer's looks like, if the peer
    /// is another device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub looks_like: Option<DeviceId>,
    /// This device already trusted the peer when the pairing began.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_trusted: bool,
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
    pub reason: Option<CleanText>,
    /// Start time, seconds since the Unix epoch.
    pub started: u64,
}

/// How long both users have to compare the codes and confirm.
pub const PAIRING_TIMEOUT: Duration = Duration::from_secs(120);

/// Incoming pairing requests waiting for the user at once; more are
/// refused as busy, so a peer cannot flood the list.
pub const MAX_WAITING_PAIRINGS: usize = 8;

/// Incoming pairing requests one device may have waiting at once.
pub const MAX_WAITING_PER_PEER: usize = 2;

/// Finished pairings kept for `share pair --list`.
const KEEP_FINISHED: usize = 32;

/// How long `share pair --confirm` waits for the session to pick up the
/// decision before answering (without `--wait`).
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// Why a pairing could not be started, registered or answered.
#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    /// The PEER could not be resolved.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Connecting failed.
    #[error("cannot connect to {label}: {error}")]
    Connect {
        /// What was dialed.
        label: String,
        /// Why.
        error: DialError,
    },
    /// The link offers no keying material to derive a code from.
    #[error("cannot derive a pairing code from this connection")]
    NoCode,
    /// The request did not go out.
    #[error("cannot ask {peer} to pair: {error}")]
    NotAsked {
        /// The peer's name.
        peer: PeerName,
        /// Why.
        error: TransferError,
    },
    /// Too many incoming pairings wait already.
    #[error("too many pairing requests are waiting on this device; retry later")]
    Busy,
    /// No pairing has this ID (prefix).
    #[error("no pairing with ID {0}; see `share pair --list`")]
    NotFound(String),
    /// The prefix matches several pairings.
    #[error("pairing ID {0} is ambiguous; type more characters")]
    Ambiguous(String),
    /// The pairing ended already.
    #[error("pairing {id} with {peer} is already over ({})", state.as_str())]
    Over {
        /// The pairing.
        id: String,
        /// The peer's name.
        peer: PeerName,
        /// How it ended.
        state: PairingState,
    },
    /// This side's answer was given before.
    #[error("pairing {0} was already answered on this device")]
    AlreadyAnswered(String),
}

/// The pairing feature: the table, and what sessions need.
pub struct Pairings {
    table: Arc<Table>,
    trust: TrustStore,
    connector: Arc<Connector>,
    resolver: Resolver,
    /// Where outgoing sessions run, so shutdown waits for them.
    tracker: TaskTracker,
}

/// A code as users read it: six digits, zero-padded.
pub fn format_code(code: u32) -> String {
    format!("{code:06}")
}

impl Pairings {
    /// Pairing for a daemon whose sessions stop when `cancel` fires and
    /// run in `tracker`.
    pub fn new(
        trust: TrustStore,
        connector: Arc<Connector>,
        resolver: Resolver,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        Self {
            table: Arc::new(Table::new(cancel)),
            trust,
            connector,
            resolver,
            tracker,
        }
    }
}

impl Pairings {
    /// `share pair PEER`: connect, ask to pair, and return the code at
    /// once; the session goes on in the background until both users
    /// decided or it expires.
    ///
    /// # Errors
    /// The peer cannot be resolved or reached, or refused.
    pub async fn start(
        &self,
        peer: &str,
        preference: Preference,
    ) -> Result<PairingInfo, PairingError> {
        let resolved = self.resolver.resolve(peer).await?;
        let Connected {
            mut framed,
            hello,
            transport,
        } = self
            .connector
            .open(&resolved.target, preference)
            .await
            .map_err(|error| PairingError::Connect {
                label: resolved.label,
                error,
            })?;
        let peer_id = framed.link().peer;
        let Some(code) = framed.link().pairing_code() else {
            framed.into_link().abort("no pairing code");
            return Err(PairingError::NoCode);
        };
        framed
            .send(&Message::PairRequest)
            .await
            .map_err(|error| PairingError::NotAsked {
                peer: hello.name.clone(),
                error,
            })?;
        let (id, decision) =
            self.table
                .register(Direction::Out, &hello.name, peer_id, code, transport)?;
        self.flag_look_alike(&id, &hello.name, &peer_id);
        self.flag_trusted(&id, &peer_id);
        tracing::info!(
            id,
            peer = %peer_id,
            "pairing with {}: code {}; confirm with share pair --confirm {id} on both devices",
            hello.name,
            format_code(code)
        );
        let table = self.table.clone();
        let trust = self.trust.clone();
        let session_id = id.clone();
        self.tracker.spawn(async move {
            session::run(
                &table,
                &trust,
                &mut framed,
                &session_id,
                decision,
                &hello.name,
            )
            .await;
            // Our last `PairConfirm` or `Error` must be delivered.
            framed.into_link().close(Duration::from_secs(2)).await;
        });
        self.table
            .get(&id)
            .ok_or_else(|| PairingError::NotFound(id.clone()))
    }

    /// An incoming `PairRequest` after `Hello`: list it with its code and
    /// run the session until both users decided or it expires.
    pub async fn serve(&self, framed: &mut Framed, peer_name: &PeerName) {
        let peer_id = framed.link().peer;
        let Some(code) = framed.link().pairing_code() else {
            let message = "this device cannot derive a pairing code for this connection";
            let _ = framed
                .send(&Message::Error {
                    code: ErrorCode::Refused,
                    message: message.into(),
                })
                .await;
            return;
        };
        let (id, decision) = match self.table.register(
            Direction::In,
            peer_name,
            peer_id,
            code,
            framed.link().kind,
        ) {
            Ok(registered) => registered,
            Err(e) => {
                tracing::warn!(peer = %peer_id, "refused pairing request from {peer_name}: {e}");
                let _ = framed
                    .send(&Message::Error {
                        code: ErrorCode::Busy,
                        message: e.to_string().into(),
                    })
                    .await;
                return;
            }
        };
        self.flag_look_alike(&id, peer_name, &peer_id);
        self.flag_trusted(&id, &peer_id);
        tracing::info!(
            id,
            peer = %peer_id,
            "pairing request from {peer_name}: code {}; if the other device shows the same code, run share pair --confirm {id} (or share pair --reject {id})",
            format_code(code)
        );
        session::run(&self.table, &self.trust, framed, &id, decision, peer_name).await;
    }

    /// Flags pairing `id` when the peer's name looks like that of a
    /// trusted device it is not.
    fn flag_look_alike(&self, id: &str, name: &PeerName, peer: &DeviceId) {
        if let Some(trusted) = self.trust.look_alike_of(name, peer) {
            tracing::warn!(
                id,
                %peer,
                trusted = %trusted.id,
                "pairing with {name}, whose name looks like that of the trusted device {} ({})",
                trusted.name,
                trusted.id.short()
            );
            self.table.update(id, |i| i.looks_like = Some(trusted.id));
        }
    }

    /// Marks pairing `id` when this device already trusts the peer.
    fn flag_trusted(&self, id: &str, peer: &DeviceId) {
        if self.trust.is_trusted(peer) {
            self.table.update(id, |i| i.already_trusted = true);
        }
    }

    /// `share pair --list`.
    pub fn list(&self) -> Vec<PairingInfo> {
        self.table.list()
    }

    /// Pairings waiting for this side's confirmation (`share status`).
    pub fn to_confirm(&self) -> usize {
        self.table
            .list()
            .iter()
            .filter(|p| p.state == PairingState::Waiting && p.you_confirmed.is_none())
            .count()
    }

    /// `share pair --confirm ID` / `--reject ID`: deliver the decision,
    /// then report the state once the session took it (`wait`: once the
    /// pairing is over).
    ///
    /// # Errors
    /// No or several pairings match, or it is over or answered already.
    pub async fn decide(
        &self,
        id: &str,
        accept: bool,
        wait: bool,
    ) -> Result<PairingInfo, PairingError> {
        let id = self.table.decide(id, accept)?;
        let info = if wait {
            self.table
                .wait_until(&id, PAIRING_TIMEOUT + SETTLE_LIMIT, |i| i.state.finished())
                .await
        } else {
            self.table
                .wait_until(&id, SETTLE_LIMIT, |i| {
                    i.you_confirmed.is_some() || i.state.finished()
                })
                .await
        };
        info.ok_or(PairingError::NotFound(id))
    }
}
