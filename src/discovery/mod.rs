//! LAN discovery over mDNS / DNS-SD (mdns-sd), feeding a live [`PeerTable`].
//!
//! # What we announce
//!
//! One service instance of type `_lanshare._udp.local.` whose SRV port is the
//! QUIC (UDP) port, with TXT `id=<52-char device ID>`, `v=1`,
//! `name=<device name>` and, when TCP is enabled, `tcp=<port>`. The instance
//! name is the device name with control characters removed, `.` and `\`
//! replaced by `-` (mdns-sd cannot re-query dotted instance labels, see
//! `mdns::instance_name`), at most 63 bytes, `lanshare` if empty; the exact
//! name travels in TXT `name`. The host name is `lanshare-<12 ID chars>.local.`,
//! never the machine host name: avahi owns that one, and two responders
//! claiming it would fight. Addresses are left to mdns-sd
//! (`enable_addr_auto`), so they follow the host's interfaces.
//!
//! # Interfaces
//!
//! mDNS runs on every interface except loopback, point-to-point links and
//! container, VM-bridge and VPN interfaces, recognised by name prefix
//! (`docker*`, `veth*`, `br-*`, `virbr*`, `wg*`, `tailscale*`, …), unless
//! [`DiscoveryOptions::interfaces`] names exactly which to use. See
//! [`interfaces`] for why, and [`MdnsHealth`] for the per-interface
//! evidence `share doctor` reads.
//!
//! # Why peers are keyed by the TXT `id`, not the instance name
//!
//! Instance names are for humans and collide: two "laptop"s are normal, and
//! mDNS conflict resolution renames one to `laptop (2)` *per interface*, so
//! one device can appear under two fullnames and two devices can appear under
//! one name on different links. The device ID (SHA-256 of the certificate,
//! later enforced by the TLS pin) is the only stable key. Consequences:
//!
//! - records without a parseable TXT `id` or `v` are ignored;
//! - our own ID is filtered out (we always discover ourselves);
//! - the table remembers fullname -> ID, so `ServiceRemoved(fullname)` removes
//!   the right device, and a device seen under several fullnames disappears
//!   only when the last of them does;
//! - name look-ups ([`PeerTable::find_by_name`]) may return several peers.
//!
//! # Merging
//!
//! mdns-sd emits `ServiceResolved` repeatedly for one instance as more
//! records arrive (IPv4 first, IPv6 a few ms later, or the reverse). Each
//! event is built from mdns-sd's cache and carries the instance's *complete*
//! current address set, so the table keeps the latest set per fullname and a
//! device's addresses are the union over its fullnames. Never act on the
//! first event only. IPv6 link-local addresses carry the interface index as
//! `scope_id` (dialling them without it fails with EINVAL).
//!
//! # Loopback is off
//!
//! mdns-sd enables loopback interfaces by default. On `lo` the name-conflict
//! rename does not happen, so a local browser can merge two different devices
//! under one name; and `127.0.0.1` is never a useful address for a LAN peer.
//! Loopback is therefore disabled (and loopback addresses dropped) unless
//! [`DiscoveryOptions::allow_loopback`] is set, which only tests need.
//!
//! # Traffic and liveness
//!
//! Each daemon announces itself when it starts and again every 60-75 s
//! (random, drawn anew each time), which keeps every browser's copy of its
//! records fresh so that nobody needs to ask for them; there is no
//! periodic polling of peers, so the mDNS traffic of a LAN grows with the
//! number of devices, not its square. A clean stop sends goodbyes (peers
//! drop us about 1 s later). A device that vanishes silently misses its
//! next announcement: each browser checks it once it has gone unheard for
//! 81-88 s and drops it 3 s later if it does not answer, so at most 91 s
//! after its last announcement; a failed connection to it triggers the
//! same check at once. See `liveness.rs` for what is sent when, the
//! record TTLs and the bounds.
//!
//! The browse channel is drained continuously by the worker task (since
//! 0.21.6 mdns-sd silently disconnects receivers that fall behind); if it
//! closes anyway, the worker browses again and drops what mdns-sd no longer
//! has.
//!
//! Liveness for *connections* is the transport's business (QUIC keep-alive
//! and idle timeout); this module only keeps the table honest.
//!
//! # Measured (two network namespaces joined by a veth pair, mdns-sd 0.21.7)
//!
//! | event | time until the other side's table changes |
//! |---|---|
//! | peer starts while we run | 0.81-1.01 s (probing + announcement; 13 runs) |
//! | we start while the peer runs | 13-37 ms |
//! | peer calls [`Discovery::shutdown`] (took 0.15 s) | 1.12 s (5 runs) |
//! | peer `kill -9` | after its silence check: 6-91 s |
//! | peer `kill -9`, then a send to it (failed after 3.0 s) | 3.1 s after the failed send |
//!
//! For a LAN of 2 to 64 devices see `bench/scale.py` and `bench/README.md`.

mod health;
pub mod interfaces;
mod liveness;
mod mdns;
mod peers;

use std::time::Duration;

use mdns_sd::{IfKind, IfPredicate, ServiceDaemon};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::identity::DeviceId;

pub use health::{InterfaceEvidence, MdnsHealth};
pub use interfaces::{InterfaceInfo, InterfacePolicy};
pub use peers::{Peer, PeerSource, PeerTable};

/// The DNS-SD service type we announce and browse.
pub const SERVICE_TYPE: &str = mdns::SERVICE_TYPE;

/// What this daemon announces.
#[derive(Clone, Debug)]
pub struct Advert {
    /// Device name shown to other users (sanitised for DNS-SD).
    pub name: String,
    /// Our device ID.
    pub id: DeviceId,
    /// QUIC (UDP) port.
    pub port: u16,
    /// TCP fallback port; `None` when TCP is disabled.
    pub tcp_port: Option<u16>,
}

/// Discovery settings.
#[derive(Clone, Debug, Default)]
pub struct DiscoveryOptions {
    /// Use loopback interfaces and keep loopback addresses (tests only).
    pub allow_loopback: bool,
    /// Interface names to use; empty means the default policy: every
    /// interface except container, VM-bridge, VPN and point-to-point ones
    /// (see [`interfaces`]).
    pub interfaces: Vec<String>,
}

impl DiscoveryOptions {
    /// The interface policy these options describe.
    pub fn policy(&self) -> InterfacePolicy {
        InterfacePolicy {
            only: self.interfaces.clone(),
            allow_loopback: self.allow_loopback,
        }
    }
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The mDNS daemon could not be created.
    #[error(
        "cannot start mDNS: {cause}; use --no-mdns and HOST:PORT addressing, or check that UDP port 5353 is free"
    )]
    Start {
        /// The underlying mdns-sd error.
        cause: mdns_sd::Error,
    },
    /// The advertisement was rejected.
    #[error(
        "cannot advertise this device over mDNS: {cause}; check the device name and ports, or use --no-mdns"
    )]
    Advertise {
        /// The underlying mdns-sd error.
        cause: mdns_sd::Error,
    },
    /// Browsing or interface selection failed.
    #[error(
        "cannot browse for peers over mDNS: {cause}; use --no-mdns and HOST:PORT addressing, or check that UDP port 5353 is free"
    )]
    Browse {
        /// The underlying mdns-sd error.
        cause: mdns_sd::Error,
    },
    /// `Discovery::start` was called outside a tokio runtime.
    #[error("discovery must be started from within a tokio runtime")]
    NoRuntime,
}

/// A running advertisement + browser. Call [`shutdown`](Self::shutdown) on
/// exit: mdns-sd has no `Drop`, so without it no goodbye is sent and peers
/// keep us until they notice our silence (up to 91 s). (Dropping a `Discovery`
/// stops the daemon as a fallback, without waiting.)
pub struct Discovery {
    daemon: Option<ServiceDaemon>,
    fullname: String,
    peers: PeerTable,
    health: MdnsHealth,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("fullname", &self.fullname)
            .field("running", &self.daemon.is_some())
            .finish_non_exhaustive()
    }
}

/// Overall budget for [`Discovery::shutdown`].
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(2);

/// mdns-sd re-sends the goodbye 120 ms after `unregister`; give it time to
/// go out before the daemon exits.
const GOODBYE_RESEND_WAIT: Duration = Duration::from_millis(150);

impl Discovery {
    /// Starts advertising `advert` and browsing for peers, which are kept in
    /// `peers`. Spawns a tokio task that drains the browse channel; must be
    /// called within a tokio runtime.
    pub fn start(
        advert: Advert,
        peers: PeerTable,
        opts: DiscoveryOptions,
    ) -> Result<Self, DiscoveryError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| DiscoveryError::NoRuntime)?;
        let info = mdns::service_info(&advert, false)
            .map_err(|cause| DiscoveryError::Advertise { cause })?;
        let fullname = info.get_fullname().to_string();
        let daemon = ServiceDaemon::new().map_err(|cause| DiscoveryError::Start { cause })?;

        let setup = || -> Result<_, DiscoveryError> {
            let browse_err = |cause| DiscoveryError::Browse { cause };
            // Later selections override earlier ones for the interfaces they match.
            if opts.interfaces.is_empty() {
                // The default policy, evaluated by mdns-sd on every
                // interface check, so interfaces created later are covered.
                let policy = opts.policy();
                daemon
                    .disable_interface(IfKind::Predicate(IfPredicate::new(move |intf| {
                        policy.ignores_name(&intf.name)
                    })))
                    .map_err(browse_err)?;
            } else {
                daemon.disable_interface(IfKind::All).map_err(browse_err)?;
                let names: Vec<IfKind> = opts
                    .interfaces
                    .iter()
                    .map(|name| IfKind::Name(name.clone()))
                    .collect();
                daemon.enable_interface(names).map_err(browse_err)?;
                for name in &opts.interfaces {
                    if !std::path::Path::new("/sys/class/net").join(name).exists() {
                        warn!(interface = %name, "mDNS: no such network interface (yet)");
                    }
                }
            }
            if !opts.allow_loopback {
                daemon
                    .disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])
                    .map_err(browse_err)?;
            }
            // Subscribe before registering so start-up errors (e.g. binding
            // port 5353) are logged.
            let monitor = daemon.monitor().ok();
            daemon
                .register(info)
                .map_err(|cause| DiscoveryError::Advertise { cause })?;
            let events = daemon.browse(SERVICE_TYPE).map_err(browse_err)?;
            Ok((events, monitor))
        };
        let (events, monitor) = match setup() {
            Ok(ok) => ok,
            Err(e) => {
                if let Err(stop) = daemon.shutdown() {
                    debug!(error = %stop, "mDNS shutdown after failed start");
                }
                return Err(e);
            }
        };

        let cancel = CancellationToken::new();
        let health = MdnsHealth::default();
        info!(
            instance = %fullname,
            port = advert.port,
            tcp_port = ?advert.tcp_port,
            "mDNS discovery started"
        );
        let worker = mdns::Worker::new(mdns::WorkerSetup {
            daemon: daemon.clone(),
            peers: peers.clone(),
            health: health.clone(),
            policy: peers::ApplyPolicy {
                own_id: advert.id,
                allow_loopback: opts.allow_loopback,
            },
            cancel: cancel.clone(),
            advert,
            events,
            monitor,
        });
        let task = runtime.spawn(worker.run());
        Ok(Self {
            daemon: Some(daemon),
            fullname,
            peers,
            health,
            cancel,
            task: Some(task),
        })
    }

    /// What mDNS has shown to work on each interface (`share doctor`).
    pub fn health(&self) -> MdnsHealth {
        self.health.clone()
    }

    /// The fullname we registered (before any conflict renaming).
    pub fn instance_fullname(&self) -> &str {
        &self.fullname
    }

    /// Unregisters (goodbye packets, so peers drop us within ~1-2 s), stops
    /// the mdns-sd daemon and the worker task, and forgets mDNS-discovered
    /// peers. Bounded to about 2 s in total.
    pub async fn shutdown(mut self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
        self.cancel.cancel();
        if let Some(task) = self.task.take()
            && tokio::time::timeout(Duration::from_millis(300), task)
                .await
                .is_err()
        {
            debug!("mDNS worker did not stop in time");
        }
        if let Some(daemon) = self.daemon.take() {
            match daemon.unregister(&self.fullname) {
                Ok(status) => match tokio::time::timeout_at(deadline, status.recv_async()).await {
                    Ok(Ok(status)) => {
                        debug!(?status, "mDNS unregistered");
                        tokio::time::sleep(GOODBYE_RESEND_WAIT).await;
                    }
                    Ok(Err(_)) => debug!("mDNS unregister: no reply"),
                    Err(_) => warn!("mDNS unregister timed out"),
                },
                Err(e) => debug!(error = %e, "mDNS unregister failed"),
            }
            match daemon.shutdown() {
                Ok(status) => match tokio::time::timeout_at(deadline, status.recv_async()).await {
                    Ok(_) => debug!("mDNS daemon stopped"),
                    Err(_) => warn!("mDNS daemon shutdown timed out"),
                },
                Err(e) => debug!(error = %e, "mDNS shutdown failed"),
            }
        }
        self.peers.clear_mdns();
        info!("mDNS discovery stopped");
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(daemon) = self.daemon.take() {
            // Fallback only: shutdown() is the proper path. mdns-sd sends
            // goodbyes for registered services when it exits.
            warn!("Discovery dropped without shutdown(); stopping mDNS without waiting");
            if let Err(e) = daemon.shutdown() {
                debug!(error = %e, "mDNS shutdown from drop failed");
            }
        }
    }
}
