//! LocalSend interoperability: lanshare as a peer of the LocalSend apps
//! (protocol 2.2, apps 1.18; <= 1.17 where noted), under lanshare's own
//! consent, trust and storage rules.
//!
//! LocalSend is the open LAN sharing app of phones, tablets and laptops.
//! With `share daemon --localsend` (or `[localsend] enabled = true`) the
//! daemon also:
//!
//! * has a LocalSend identity of its own ([`tls`]), whose fingerprint it
//!   announces;
//! * announces itself and answers announcements on UDP 53317 ([`discover`]),
//!   listing the devices it finds ([`devices`]) in `share peers`;
//! * serves LocalSend's HTTPS API on TCP 53317 ([`server`], [`http`]),
//!   receiving through lanshare's intake ([`receive`]) behind an optional
//!   PIN ([`pin`]);
//! * sends to LocalSend devices ([`send`]) when `share send` names one.
//!
//! The messages are a pure codec ([`wire`]). `docs/localsend.md` maps the
//! LocalSend concepts onto lanshare's.
//!
//! [`LocalSend`] is the running service: the daemon starts it and hands
//! its parts to the features that use them (the peer list and resolver,
//! the send service, `share status`).

pub mod client;
pub mod devices;
pub mod discover;
pub mod http;
pub mod pin;
pub mod receive;
pub mod send;
pub mod server;
pub mod tls;
pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::discovery::InterfacePolicy;
use crate::identity::trust::TrustStore;
use crate::identity::{DeviceId, Identity, IdentityError};
use crate::intake::Intake;
use crate::safe_text::PeerName;
use devices::Devices;
use discover::{Discoverer, Multicast, RegisterError};
use receive::Receiving;
use send::RemoteCancels;
use server::Server;
use wire::SelfInfo;

/// How the service is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The alias phones show (the device name).
    pub alias: String,
    /// Address the HTTPS server binds (`::` = all, dual-stack).
    pub bind: IpAddr,
    /// HTTPS port (TCP); 0 picks a free one.
    pub port: u16,
    /// Multicast discovery (UDP) port; `None` = no multicast (the
    /// daemon's `--no-mdns`).
    pub multicast_port: Option<u16>,
    /// Interfaces multicast uses (the daemon's mDNS policy).
    pub interfaces: InterfacePolicy,
    /// A PIN senders must give.
    pub pin: Option<String>,
    /// Most files one offer may have.
    pub max_files: usize,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The LocalSend identity could not be loaded or created.
    #[error("LocalSend identity: {0}")]
    Identity(#[from] IdentityError),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The HTTPS port could not be bound.
    #[error(
        "cannot listen for LocalSend on TCP {addr}: {source}; pick another `[localsend] port` or stop the program using it"
    )]
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The running LocalSend service.
pub struct LocalSend {
    identity: Identity,
    me: SelfInfo,
    devices: Devices,
    remote_cancels: Arc<RemoteCancels>,
    /// Set when multicast could not start (shown by `share status`).
    multicast_warning: Option<String>,
}

impl LocalSend {
    /// Loads (or creates) the identity in `state_dir`, binds the HTTPS
    /// port and the multicast port, and serves until `cancel`: offers go
    /// to `intake`, impostors of devices in `trust` are refused.
    ///
    /// # Errors
    /// [`StartError`]; a multicast port that cannot be bound is only a
    /// warning (the HTTPS API still works, devices can be named as
    /// `HOST:PORT`).
    pub async fn start(
        settings: Settings,
        state_dir: &Path,
        intake: Arc<Intake>,
        trust: TrustStore,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Self, StartError> {
        let identity = tls::load_identity(state_dir)?;
        let server_tls = Arc::new(tls::server_config(&identity)?);
        let addr = SocketAddr::new(settings.bind, settings.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartError::Listen { addr, source })?
            .port();
        let me = SelfInfo {
            alias: settings.alias.clone(),
            fingerprint: identity.id(),
            port,
        };
        let devices = Devices::default();
        let remote_cancels = Arc::new(RemoteCancels::default());
        let receiving = Arc::new(Receiving::new(intake, trust, identity.clone(), state_dir));
        let server = Arc::new(Server::new(
            me.clone(),
            devices.clone(),
            receiving,
            settings.pin.as_deref(),
            remote_cancels.clone(),
            settings.max_files,
        ));
        tracker.spawn(http::serve(
            listener,
            server_tls,
            server,
            cancel.clone(),
            tracker.clone(),
        ));
        let mut multicast_warning = None;
        if let Some(udp) = settings.multicast_port {
            match Multicast::bind(udp) {
                Ok(multicast) => {
                    let discoverer = Arc::new(Discoverer {
                        me: me.clone(),
                        identity: identity.clone(),
                        devices: devices.clone(),
                        policy: settings.interfaces.clone(),
                    });
                    tracker.spawn(discoverer.run(multicast, cancel.clone(), tracker.clone()));
                }
                Err(e) => {
                    let w = format!(
                        "LocalSend discovery unavailable (UDP {udp}: {e}); LocalSend devices can still send here and be named as HOST:{port}"
                    );
                    tracing::warn!("{w}");
                    multicast_warning = Some(w);
                }
            }
        }
        tracing::info!(port, fingerprint = %identity.id().to_hex(), pin = settings.pin.is_some(),
            "LocalSend ready");
        Ok(Self {
            identity,
            me,
            devices,
            remote_cancels,
            multicast_warning,
        })
    }

    /// Our LocalSend fingerprint.
    pub fn fingerprint(&self) -> DeviceId {
        self.identity.id()
    }

    /// The bound HTTPS port.
    pub fn port(&self) -> u16 {
        self.me.port
    }

    /// The LocalSend devices found.
    pub fn devices(&self) -> &Devices {
        &self.devices
    }

    /// Why discovery is not running, if it is not.
    pub fn multicast_warning(&self) -> Option<&str> {
        self.multicast_warning.as_deref()
    }

    /// Asks the device at `addr` who it is (a `register`, pinned to
    /// `expected` if given) and lists it. Returns the fingerprint it
    /// proved and its alias.
    ///
    /// # Errors
    /// [`RegisterError`].
    pub async fn identify(
        &self,
        addr: SocketAddr,
        expected: Option<DeviceId>,
    ) -> Result<(DeviceId, PeerName), RegisterError> {
        let (fingerprint, device) =
            discover::register(&self.identity, &self.me, addr, expected).await?;
        self.devices
            .proven(fingerprint, &device, addr, std::time::Instant::now());
        Ok((fingerprint, device.alias))
    }

    /// What a send to a LocalSend device needs from the service.
    pub fn sender(&self) -> Sender<'_> {
        Sender {
            identity: &self.identity,
            me: &self.me,
            remote_cancels: &self.remote_cancels,
        }
    }
}

/// The parts of the service a send uses.
pub struct Sender<'a> {
    /// Our LocalSend identity.
    pub identity: &'a Identity,
    /// How we describe ourselves.
    pub me: &'a SelfInfo,
    /// Where receivers' cancels reach our sends.
    pub remote_cancels: &'a RemoteCancels,
}
