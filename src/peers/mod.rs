//! Peers as the user names them: `share peers` (and `add` / `remove`),
//! `share trust` / `share untrust`, and turning a typed PEER into a
//! device to dial.
//!
//! - [`resolve`]: a name, device-ID prefix or `HOST:PORT` to a dial target,
//!   refusing an impostor ([`Resolver`]);
//! - [`connect`]: dialing with `Hello` and the impostor check, for every
//!   outgoing session ([`Connector`]);
//! - [`remembered`]: the peers kept in `peers.json` for when multicast
//!   fails, and the loop that probes them;
//! - [`label`]: how a peer's name is shown to people (with its ID prefix,
//!   and flagged when it looks like a trusted device's).
//!
//! [`Peers`] holds what these commands need: the live peer table
//! (discovery's), the trust store, the remembered list and a connector.

pub mod connect;
pub mod label;
pub mod remembered;
pub mod resolve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use connect::{Answered, Connected, Connector, IdentifyError};
pub use label::PeerLabel;
pub use remembered::{PROBE_INTERVAL, Remembered, SaveError};
pub use resolve::{
    LOCALSEND_SCHEME, LocalSendTarget, LookupError, ResolveError, Resolved, Resolver, Route,
};

use crate::discovery::{PeerSource, PeerTable};
use crate::identity::DeviceId;
use crate::identity::trust::{TrustError, TrustStore};
use crate::localsend::LocalSend;
use crate::localsend::wire::DeviceType;
use crate::safe_text::PeerName;
use crate::transport::dial::Preference;

/// Budget for learning who answers at an address (`share peers add`,
/// `share trust HOST:PORT`, the remembered-peer probes, the queue's check
/// that a peer is up): both transports, all addresses.
pub const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(8);

/// One line of `share peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Device name.
    pub name: PeerName,
    /// Device ID.
    pub id: DeviceId,
    /// Dialable `ip:port` addresses.
    pub addresses: Vec<String>,
    /// TCP fallback port, if advertised.
    pub tcp_port: Option<u16>,
    /// Whether the device is trusted.
    pub trusted: bool,
    /// The trusted device whose name this one's looks like, if this is
    /// another device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub looks_like: Option<DeviceId>,
    /// How it was found.
    pub source: PeerSource,
    /// Seconds since it was last heard from (its latest mDNS announcement
    /// or answer; about once a minute while it is there).
    pub last_seen_s: u64,
    /// When it was last heard from (seconds since the Unix epoch).
    #[serde(default)]
    pub last_seen: u64,
    /// Which protocol it speaks.
    #[serde(default)]
    pub protocol: Protocol,
    /// What a LocalSend device says about itself (`protocol` `localsend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localsend: Option<LocalSendInfo>,
}

/// The protocol a peer speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// lanshare's own (QUIC, TCP fallback).
    #[default]
    Lanshare,
    /// LocalSend's HTTPS API.
    #[serde(rename = "localsend")]
    LocalSend,
}

impl Protocol {
    /// The lower-case name (as in JSON), for text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lanshare => "lanshare",
            Self::LocalSend => "localsend",
        }
    }
}

/// A LocalSend device's own description in `share peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalSendInfo {
    /// Its certificate fingerprint, upper-case hex (as LocalSend shows it).
    pub fingerprint: String,
    /// Its model, if it gave one.
    pub model: Option<String>,
    /// Its type (`mobile`, `desktop`, `web`, `headless`, `server`).
    pub device_type: DeviceType,
    /// The LocalSend protocol version it speaks.
    pub version: String,
}

/// Why a peers command failed.
#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    /// No single device matches a name or ID prefix.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// A PEER could not be resolved to a device.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Connecting to learn who is there failed.
    #[error("cannot connect to {label}: {error}")]
    Connect {
        /// What was dialed.
        label: String,
        /// Why.
        error: IdentifyError,
    },
    /// A LocalSend device did not answer who it is.
    #[error("cannot ask {label} who it is: {reason}")]
    LocalSend {
        /// What was asked.
        label: String,
        /// Why it failed.
        reason: String,
    },
    /// `share untrust` of a device that was not trusted.
    #[error("{name} ({id}) was not trusted")]
    NotTrusted {
        /// Its name.
        name: PeerName,
        /// Its ID.
        id: DeviceId,
    },
    /// Not `HOST:PORT`.
    #[error(
        "\"{0}\" is not HOST:PORT (the port is the peer's service port, {port} by default)",
        port = crate::config::DEFAULT_PORT
    )]
    NotAnAddress(String),
    /// A host name that does not resolve.
    #[error("{0}")]
    NoSuchHost(String),
    /// The address is this device's.
    #[error("{0} is this device")]
    IsSelf(SocketAddr),
    /// No manual or remembered peer matches.
    #[error(
        "no manual or remembered peer matches \"{0}\"; `share peers` lists them (source manual or remembered)"
    )]
    NotListed(String),
    /// Several manual or remembered peers match.
    #[error("{} peers match \"{text}\" ({}); use a device-ID prefix", ids.len(), ids.join(", "))]
    SeveralListed {
        /// What the user typed.
        text: String,
        /// Short IDs of the matches.
        ids: Vec<String>,
    },
    /// The remembered list could not be saved.
    #[error(transparent)]
    Save(#[from] SaveError),
    /// The trust store could not be saved.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// The peers feature: the table, the trust store, the remembered list.
pub struct Peers {
    table: PeerTable,
    /// The LocalSend service, when LocalSend is on.
    localsend: Option<Arc<LocalSend>>,
    trust: TrustStore,
    remembered: Remembered,
    connector: Arc<Connector>,
    resolver: Resolver,
    /// This device, which `share peers add` must not add.
    own_id: DeviceId,
}

impl Peers {
    /// The peers of a daemon whose identity is `own_id`. Manual peers are
    /// listed in `table` from now on, online or not.
    pub fn new(
        table: PeerTable,
        trust: TrustStore,
        remembered: Remembered,
        connector: Arc<Connector>,
        resolver: Resolver,
        own_id: DeviceId,
    ) -> Self {
        for entry in remembered.list() {
            if entry.manual {
                table.upsert_unicast(entry.to_peer());
            }
        }
        Self {
            table,
            localsend: None,
            trust,
            remembered,
            connector,
            resolver,
            own_id,
        }
    }

    /// Also lists (and trusts) the devices of the LocalSend service.
    #[must_use]
    pub fn with_localsend(mut self, localsend: Arc<LocalSend>) -> Self {
        self.localsend = Some(localsend);
        self
    }

    /// `share peers`: every known peer, lanshare daemons first.
    pub fn list(&self) -> Vec<PeerInfo> {
        let now = SystemTime::now();
        let seen = |at: SystemTime| {
            let ago = now.duration_since(at).map(|d| d.as_secs()).unwrap_or(0);
            let epoch = at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            (ago, epoch)
        };
        let native = self.table.list().into_iter().map(|p| {
            let (last_seen_s, last_seen) = seen(p.last_seen);
            PeerInfo {
                trusted: self.trust.is_trusted(&p.id),
                looks_like: self.trust.look_alike_of(&p.name, &p.id).map(|t| t.id),
                addresses: p.addrs.iter().map(ToString::to_string).collect(),
                tcp_port: p.tcp_port,
                source: p.source,
                last_seen_s,
                last_seen,
                name: p.name,
                id: p.id,
                protocol: Protocol::Lanshare,
                localsend: None,
            }
        });
        let devices = self.localsend.iter().flat_map(|ls| ls.devices().list());
        let localsend = devices.map(|d| {
            let (last_seen_s, last_seen) = seen(d.last_seen);
            PeerInfo {
                trusted: self.trust.is_trusted(&d.fingerprint),
                addresses: vec![d.addr.to_string()],
                tcp_port: None,
                source: PeerSource::LocalSend,
                last_seen_s,
                last_seen,
                looks_like: self
                    .trust
                    .look_alike_of(&d.alias, &d.fingerprint)
                    .map(|t| t.id),
                name: d.alias,
                id: d.fingerprint,
                protocol: Protocol::LocalSend,
                localsend: Some(LocalSendInfo {
                    fingerprint: d.fingerprint.to_hex(),
                    model: d.model,
                    device_type: d.device_type,
                    version: d.version,
                }),
            }
        });
        native.chain(localsend).collect()
    }

    /// Changes of the table's devices or their addresses (not of when
    /// each was last seen, nor of trust).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.table.subscribe()
    }

    /// Whether `id` is a trusted device.
    pub fn is_trusted(&self, id: &DeviceId) -> bool {
        self.trust.is_trusted(id)
    }

    /// An authenticated connection from `id` arrived: a remembered peer
    /// the table does not list is probed now, so both sides list each
    /// other within a second.
    pub fn heard_from(&self, id: &DeviceId) {
        self.remembered.heard_from(id, &self.table);
    }

    /// `share trust PEER`: pins a device found by name or ID, or the one
    /// that answers at `HOST:PORT`. Returns what was done, in words.
    ///
    /// # Errors
    /// Nothing or several match, nobody answers, or the trust store could
    /// not be saved.
    pub async fn trust(&self, text: &str) -> Result<String, PeersError> {
        let (id, name) = match self.resolver.find_device(text) {
            Ok(found) => found,
            Err(not_visible) => {
                // `share trust HOST:PORT`: learn the identity by connecting.
                if let (Some(ls), Ok(Route::LocalSend(target))) =
                    (&self.localsend, self.resolver.route(text).await)
                {
                    let (id, name) =
                        ls.identify(target.addr, target.fingerprint)
                            .await
                            .map_err(|e| PeersError::LocalSend {
                                label: target.label.to_string(),
                                reason: e.to_string(),
                            })?;
                    return self.pin(id, &name);
                }
                let Ok(resolved) = self.resolver.resolve(text).await else {
                    return Err(not_visible.into());
                };
                let answered = self
                    .connector
                    .identify(&resolved.target, Preference::Auto, IDENTIFY_TIMEOUT)
                    .await
                    .map_err(|error| PeersError::Connect {
                        label: resolved.label,
                        error,
                    })?;
                (answered.id, answered.name)
            }
        };
        self.pin(id, &name)
    }

    /// Trusts `id` under `name`.
    fn pin(&self, id: DeviceId, name: &PeerName) -> Result<String, PeersError> {
        if let Some(other) = self.trust.name_conflict(name, &id) {
            tracing::warn!(%name, new = %id, trusted = %other.id, "trusting a second device under an existing name");
        }
        Ok(if self.trust.trust(id, name)? {
            format!("trusted {name} ({id})")
        } else {
            format!("{name} ({id}) was already trusted")
        })
    }

    /// `share untrust PEER`. Returns what was done, in words.
    ///
    /// # Errors
    /// Nothing or several match, it was not trusted, or the trust store
    /// could not be saved.
    pub fn untrust(&self, text: &str) -> Result<String, PeersError> {
        let (id, name) = self.resolver.find_device(text)?;
        if !self.trust.untrust(&id)? {
            return Err(PeersError::NotTrusted { name, id });
        }
        Ok(format!("{name} ({id}) is no longer trusted"))
    }
}
