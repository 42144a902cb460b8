//! `share id` and `share status`: what the daemon is, and a summary of
//! what it is doing, gathered from each feature.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::control::{IdInfo, LocalSendStatus, StatusInfo};
use crate::discovery::PeerTable;
use crate::doctor::interface_report;
use crate::identity::DeviceId;
use crate::intake::AcceptPolicy;
use crate::intake::inbox::Inbox;
use crate::localsend::LocalSend;
use crate::pairing::Pairings;
use crate::peers::Connector;
use crate::registry::{Direction, Registry, State};
use crate::transfer::kept::KeptPartials;
use crate::transport::TransportKind;

/// What `share status` reports about the daemon's set-up.
#[derive(Debug, Clone)]
pub(super) struct Setup {
    pub(super) name: String,
    pub(super) id: DeviceId,
    pub(super) port: u16,
    pub(super) transports: Vec<TransportKind>,
    pub(super) mdns: bool,
    pub(super) interfaces: Vec<String>,
    pub(super) accept: AcceptPolicy,
    pub(super) download_dir: PathBuf,
    pub(super) state_dir: PathBuf,
    pub(super) started: Instant,
    /// LocalSend's discovery port, when its discovery runs.
    pub(super) localsend_multicast: Option<u16>,
    /// Whether LocalSend senders must give a PIN.
    pub(super) localsend_pin: bool,
}

/// The sources of `share status`.
pub(super) struct Status {
    pub(super) setup: Setup,
    /// Conditions worth a user's attention; grows if systemd notification
    /// fails later on.
    pub(super) warnings: Mutex<Vec<String>>,
    pub(super) peers: PeerTable,
    pub(super) registry: Registry,
    pub(super) pairings: Arc<Pairings>,
    pub(super) inbox: Arc<Inbox>,
    pub(super) connector: Arc<Connector>,
    pub(super) kept: KeptPartials,
    pub(super) localsend: Option<Arc<LocalSend>>,
}

impl Status {
    /// Adds a warning for `share status`.
    pub(super) fn warn(&self, warning: String) {
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(warning);
    }

    /// `share id`.
    pub(super) fn id(&self) -> IdInfo {
        IdInfo {
            name: self.setup.name.clone(),
            id: self.setup.id,
        }
    }

    /// `share status`.
    pub(super) fn report(&self) -> StatusInfo {
        let transfers = self.registry.list();
        let active = transfers
            .iter()
            .filter(|t| matches!(t.state, State::Pending | State::Active))
            .count();
        let offers_to_answer = transfers
            .iter()
            .filter(|t| t.direction == Direction::In && t.state == State::Pending)
            .count();
        let setup = &self.setup;
        let kept = self.kept.summary();
        StatusInfo {
            name: setup.name.clone(),
            id: setup.id,
            port: setup.port,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: crate::protocol::VERSION,
            uptime_s: setup.started.elapsed().as_secs(),
            transports: setup.transports.clone(),
            mdns: setup.mdns,
            accept: setup.accept,
            peers: self.peers.list().len(),
            active_transfers: active,
            offers_to_answer,
            pairings_to_confirm: self.pairings.to_confirm(),
            unread_texts: self.inbox.unread().unwrap_or(0),
            partial_transfers: kept.transfers,
            partial_bytes: kept.bytes,
            quic_broken_paths: self.connector.broken_paths(),
            download_dir: setup.download_dir.clone(),
            state_dir: setup.state_dir.clone(),
            warnings: self
                .warnings
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            interfaces: interface_report(&setup.interfaces, setup.mdns),
            localsend: match &self.localsend {
                None => LocalSendStatus::default(),
                Some(ls) => LocalSendStatus {
                    enabled: true,
                    port: Some(ls.port()),
                    multicast_port: setup
                        .localsend_multicast
                        .filter(|_| ls.multicast_warning().is_none()),
                    fingerprint: Some(ls.fingerprint().to_hex()),
                    pin: setup.localsend_pin,
                    devices: ls.devices().list().len(),
                },
            },
        }
    }
}
