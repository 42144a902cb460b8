//! The daemon: the composition root that owns the runtime.
//!
//! [`run`] loads the identity and trust store, binds the transports (QUIC
//! and TCP on one port number), starts discovery, builds the features —
//! each given exactly what it uses — and the control socket, and then
//! serves until the injected `shutdown` future resolves (SIGINT or SIGTERM
//! in the binary, a oneshot in tests). Besides composition it keeps two
//! switchboards: `commands` (every control request, one exhaustive
//! match) and `incoming` (every incoming session, by its first message).
//!
//! Under systemd it reports `READY=1` once everything is up, `STOPPING=1`
//! when the stop begins, and pings the watchdog (`notify`). Shutdown is
//! complete and bounded (well inside the unit's 15 s `TimeoutStopSec`,
//! under a second in practice): pause transfers (each keeps its resume
//! state and tells its peer `Error(Paused)`, so a sender retries and
//! resumes once the service is back), stop accepting, send mDNS goodbyes
//! meanwhile, close links without draining what peers still have in
//! flight, close QUIC and wait for the close frames, wait for tasks,
//! remove the socket.

mod commands;
mod incoming;
mod notify;
mod peer_slots;
mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::control::server::{ControlSocket, SocketAccess};
use crate::discovery::{Advert, Discovery, DiscoveryOptions, InterfacePolicy, PeerTable};
use crate::doctor::{self, Doctor};
use crate::history::History;
use crate::identity::Identity;
use crate::identity::trust::TrustStore;
use crate::intake::inbox::{Inbox, InboxError};
use crate::intake::{self, Intake};
use crate::localsend::{self, LocalSend};
use crate::outgoing::{self, SendService};
use crate::pairing::Pairings;
use crate::peers::{self, Connector, Peers, Remembered, Resolver};
use crate::queue::Queue;
use crate::registry::Registry;
use crate::store::DownloadDir;
use crate::subscriptions::Subscriptions;
use crate::transfer::memory::{self, MemoryBudget};
use crate::transfer::receive::Receiver;
use crate::transfer::resume::ResumeStore;
use crate::transport::admission::{HandshakeLimits, Handshakes};
use crate::transport::dial::Dialer;
use crate::transport::quic::QuicTransport;
use crate::transport::tcp::TcpTransport;
use crate::transport::{Link, TransportError, TransportKind};
use commands::Commands;
use incoming::Incoming;
use status::{Setup, Status};

/// How long shutdown waits for tasks before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Identity could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// Trust store unreadable.
    #[error(transparent)]
    Trust(#[from] crate::identity::trust::TrustError),
    /// Download directory unusable.
    #[error("download directory unusable")]
    Store(#[from] crate::store::StoreError),
    /// A listener could not be bound.
    #[error("cannot listen (pick another --port or stop the program using it)")]
    Transport(#[from] TransportError),
    /// The service port is taken by another lanshare daemon, found at
    /// one of the control sockets a CLI would try.
    #[error(
        "another lanshare daemon is already running (control socket {socket}) and holds port {port}; stop it first (`systemctl --user stop lanshare`, or `sudo systemctl stop lanshare` for the service), or give this one another --port"
    )]
    PortHeldByDaemon {
        /// The service port.
        port: u16,
        /// The other daemon's control socket.
        socket: PathBuf,
    },
    /// Control socket problem.
    #[error(transparent)]
    Control(#[from] crate::control::server::ControlError),
    /// mDNS could not start.
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
    /// The download directory does not exist and cannot be created: its
    /// file system is read-only for the daemon.
    #[error("{}; {}", .0.problem(), .0.fix())]
    ReadOnlyDownloads(crate::doctor::ReadOnly),
    /// The text inbox in the state directory is unusable.
    #[error(transparent)]
    Inbox(#[from] InboxError),
    /// LocalSend is enabled but could not start.
    #[error(transparent)]
    LocalSend(#[from] localsend::StartError),
}

impl DaemonError {
    /// Whether only a change of the configuration or of the daemon's files
    /// can fix this (a corrupt identity or trust store, an unusable
    /// download, state or socket directory), so restarting is pointless;
    /// a busy port or a network without multicast may pass.
    pub fn needs_admin(&self) -> bool {
        use crate::control::server::ControlError;
        match self {
            Self::Identity(_)
            | Self::Trust(_)
            | Self::Store(_)
            | Self::ReadOnlyDownloads(_)
            | Self::Inbox(_) => true,
            Self::Control(e) => matches!(
                e,
                ControlError::UnsafeDirectory { .. } | ControlError::NotASocket(_)
            ),
            // A busy LocalSend port may pass; a broken LocalSend identity
            // is as fatal as the device identity.
            Self::LocalSend(e) => matches!(e, localsend::StartError::Identity(_)),
            Self::Transport(_) | Self::PortHeldByDaemon { .. } | Self::Discovery(_) => false,
        }
    }
}

/// Runs the daemon until `shutdown` resolves. `ready` is called once
/// every listener is up (for sd_notify and tests).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(&ReadyInfo),
) -> Result<(), DaemonError> {
    // First, while descriptors are plentiful (see `Notifier`).
    let (notifier, notify_warning) = notify::Notifier::from_env();
    crate::identity::ensure_private_dir(&config.state_dir)?;
    let identity = Identity::load_or_create(&config.state_dir)?;
    if let Err(e) = crate::identity::record_name(&config.state_dir, &config.name) {
        tracing::warn!(error = %e, "cannot record the device name for `share id` without a daemon");
    }
    let trust = TrustStore::load(&config.state_dir)?;
    let read_only = crate::doctor::ReadOnly::check(&config.download_dir);
    if let Some(read_only) = &read_only
        && !config.download_dir.exists()
    {
        return Err(DaemonError::ReadOnlyDownloads(read_only.clone()));
    }
    let download = Arc::new(DownloadDir::open(&config.download_dir)?);
    let (quic, tcp, port) = match bind_transports(&config, &identity).await {
        Ok(bound) => bound,
        Err(e) => return Err(port_taken(&config, e).await),
    };
    let mut warnings: Vec<String> = notify_warning.into_iter().collect();
    let buffer_warning = quic
        .as_ref()
        .and_then(|q| q.buffer_warning())
        .map(str::to_owned);
    if let Some(w) = &buffer_warning {
        tracing::warn!("{w}");
        warnings.push(w.clone());
    }
    if let Some(read_only) = read_only {
        let w = format!("{}; {}", read_only.problem(), read_only.fix());
        tracing::warn!("{w}");
        warnings.push(w);
    }
    if let Some(shared) = crate::doctor::SharedDownloads::check(&config.download_dir) {
        let w = format!("{}; {}", shared.problem(), shared.fix());
        tracing::warn!("{w}");
        warnings.push(w);
    }
    let (remembered, w) = Remembered::load(&config.state_dir);
    if let Some(w) = w {
        tracing::warn!("{w}");
        warnings.push(w);
    }

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let table = PeerTable::new();
    let history = Arc::new(History::open(&config.state_dir));
    let registry = Registry::with_sink(history.clone());
    let inbox = Arc::new(Inbox::open(&config.state_dir)?);
    let access = SocketAccess::for_socket(
        &config.socket,
        std::env::var_os("RUNTIME_DIRECTORY")
            .map(std::path::PathBuf::from)
            .as_deref(),
    );
    let control = ControlSocket::bind_with(&config.socket, access).await?;

    let discovery = if config.mdns {
        let advert = Advert {
            name: config.name.clone(),
            id: identity.id(),
            port,
            tcp_port: config.tcp.then_some(port),
        };
        let options = DiscoveryOptions {
            interfaces: config.interfaces.clone(),
            ..DiscoveryOptions::default()
        };
        match Discovery::start(advert, table.clone(), options) {
            Ok(d) => Some(d),
            Err(e) => {
                let w = format!("mDNS discovery unavailable: {e}");
                tracing::warn!("{w}");
                warnings.push(w);
                None
            }
        }
    } else {
        None
    };

    let mut transports = Vec::new();
    if config.quic {
        transports.push(TransportKind::Quic);
    }
    if config.tcp {
        transports.push(TransportKind::Tcp);
    }
    let started = Instant::now();

    // The features, each given what it uses.
    let connector = Arc::new(Connector::new(
        // A device no transport reached is checked by discovery at once.
        // A device no transport reached is checked by discovery at once;
        // one whose every TCP address refused, sooner still, and the dial
        // ends when discovery drops it.
        Dialer::new(quic.clone(), tcp.clone())
            .on_unreachable({
                let table = table.clone();
                move |id| table.report_unreachable(id)
            })
            .on_refused({
                let table = table.clone();
                move |id| {
                    table.report_refused(id);
                    let (table, id) = (table.clone(), *id);
                    Box::pin(async move { table.departed(&id).await })
                }
            }),
        config.name.clone(),
        trust.clone(),
    ));
    let intake = Arc::new(Intake::new(
        intake::Settings {
            policy: config.accept,
            offer_timeout: config.offer_timeout,
            limits: config.limits.clone(),
        },
        download,
        trust.clone(),
        registry.clone(),
        inbox.clone(),
    ));
    let localsend = match &config.localsend {
        None => None,
        Some(ls) => Some(Arc::new(
            LocalSend::start(
                localsend::Settings {
                    alias: config.name.clone(),
                    bind: config.bind,
                    port: ls.port,
                    multicast_port: config.mdns.then_some(ls.multicast_port),
                    interfaces: InterfacePolicy {
                        only: config.interfaces.clone(),
                        allow_loopback: false,
                    },
                    pin: ls.pin.clone(),
                    max_files: config.limits.max_entries,
                },
                &config.state_dir,
                intake.clone(),
                trust.clone(),
                cancel.clone(),
                tracker.clone(),
            )
            .await?,
        )),
    };
    if let Some(w) = localsend.as_ref().and_then(|ls| ls.multicast_warning()) {
        warnings.push(w.to_owned());
    }
    let mut resolver = Resolver::new(table.clone(), trust.clone(), config.mdns, &config.name);
    if let Some(ls) = &localsend {
        resolver = resolver.with_localsend(ls.devices().clone());
    }
    let receiver = Arc::new(
        Receiver::new(intake, ResumeStore::new(&config.state_dir)).with_policy(config.keep_partial),
    );
    let mut sends = SendService::new(
        connector.clone(),
        resolver.clone(),
        registry.clone(),
        outgoing::Settings::new(config.retry_window, config.offer_timeout),
    );
    let mut peers = Peers::new(
        table.clone(),
        trust.clone(),
        remembered,
        connector.clone(),
        resolver.clone(),
        identity.id(),
    );
    if let Some(ls) = &localsend {
        sends = sends.with_localsend(ls.clone());
        peers = peers.with_localsend(ls.clone());
    }
    let (sends, peers) = (Arc::new(sends), Arc::new(peers));
    let pairings = Arc::new(Pairings::new(
        trust.clone(),
        connector.clone(),
        resolver.clone(),
        cancel.child_token(),
        tracker.clone(),
    ));
    let queue = Arc::new(Queue::open(
        &config.state_dir,
        cancel.child_token(),
        history.clone(),
        sends.clone(),
        resolver.clone(),
        connector.clone(),
        table.clone(),
    ));
    let mut doctor = Doctor::new(
        doctor::Facts {
            name: config.name.clone(),
            id: identity.id(),
            port,
            quic: config.quic,
            tcp: config.tcp,
            mdns: config.mdns,
            interfaces: config.interfaces.clone(),
            socket: config.socket.clone(),
            state_dir: config.state_dir.clone(),
            download_dir: config.download_dir.clone(),
            started,
            mdns_health: discovery.as_ref().map(Discovery::health),
            buffer_warning,
            unicast_fresh: 2 * peers::PROBE_INTERVAL,
            kept: receiver.kept(),
        },
        table.clone(),
        connector.clone(),
        resolver,
    );
    if let Some(ls) = &localsend {
        doctor = doctor.with_localsend(ls.clone());
    }
    let doctor = Arc::new(doctor);
    let status = Arc::new(Status {
        setup: Setup {
            name: config.name.clone(),
            id: identity.id(),
            port,
            transports,
            mdns: config.mdns,
            interfaces: config.interfaces.clone(),
            accept: config.accept,
            download_dir: config.download_dir.clone(),
            state_dir: config.state_dir.clone(),
            started,
            localsend_multicast: config
                .localsend
                .as_ref()
                .filter(|_| config.mdns)
                .map(|ls| ls.multicast_port),
            localsend_pin: config.localsend.as_ref().is_some_and(|ls| ls.pin.is_some()),
        },
        warnings: Mutex::new(warnings),
        peers: table,
        registry: registry.clone(),
        pairings: pairings.clone(),
        inbox: inbox.clone(),
        connector,
        kept: receiver.kept(),
        localsend,
    });
    let commands = Arc::new(Commands {
        status: status.clone(),
        registry: registry.clone(),
        peers: peers.clone(),
        sends,
        queue: queue.clone(),
        pairings: pairings.clone(),
        inbox,
        history,
        doctor: doctor.clone(),
        receiver: receiver.clone(),
        subscriptions: Subscriptions::new(registry.clone(), peers.clone()),
    });

    let (links_tx, links_rx) = mpsc::channel::<Link>(16);
    let handshakes = Handshakes::new(HandshakeLimits::default());
    if let Some(q) = &quic {
        tracker.spawn(q.clone().serve(
            links_tx.clone(),
            handshakes.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
    }
    if let Some(t) = &tcp {
        tracker.spawn(t.clone().serve(
            links_tx.clone(),
            handshakes.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
    }
    drop(links_tx);
    let memory = MemoryBudget::new(config.peer_memory);
    tracker.spawn(memory::release_free_memory(memory.clone(), cancel.clone()));
    let incoming = Arc::new(Incoming {
        name: config.name.clone(),
        trust,
        peer_slots: peer_slots::PeerSlots::default(),
        memory,
        receiver: receiver.clone(),
        pairings,
        peers: peers.clone(),
        doctor,
    });
    tracker.spawn(
        incoming
            .clone()
            .run(links_rx, cancel.clone(), tracker.clone()),
    );
    tracker.spawn(expire_partial(receiver, cancel.clone()));
    tracker.spawn(queue.run(cancel.clone(), tracker.clone()));
    tracker.spawn(peers.run(cancel.clone()));
    let socket_path = control.path().to_owned();
    tracker.spawn(control.serve(commands, cancel.clone(), tracker.clone()));

    tracing::info!(
        name = %config.name,
        id = %identity.id(),
        port,
        socket = %socket_path.display(),
        download_dir = %config.download_dir.display(),
        "lanshare daemon ready"
    );
    ready(&ReadyInfo {
        port,
        socket: socket_path,
    });
    let status_line = format!("ready: {} on port {port}", config.name);
    if let Some(w) = notifier.ready(&status_line) {
        status.warn(w);
    }
    if let Some(interval) = notify::watchdog_interval() {
        let status = status.clone();
        tracker.spawn(
            notifier
                .clone()
                .watchdog(interval, cancel.clone(), move |w| status.warn(w)),
        );
    }

    shutdown.await;
    notifier.stopping();
    tracing::info!("shutting down");
    let stop_started = Instant::now();
    // Transfers first, so each learns that it is paused by the stop, not
    // cancelled by the cancels that follow (a send's client request, a
    // queued send).
    registry.stop_all();
    cancel.cancel();
    tracker.close();
    let goodbye = async {
        if let Some(d) = discovery {
            d.shutdown().await;
        }
    };
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait());
    if tokio::join!(goodbye, drained).1.is_err() {
        tracing::warn!(
            "some tasks did not finish within {} s",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    if let Some(q) = &quic {
        q.shutdown().await;
    }
    tracing::info!(
        seconds = format!("{:.2}", stop_started.elapsed().as_secs_f64()),
        "stopped"
    );
    Ok(())
}

/// Drops the partial data of interrupted incoming transfers kept too long
/// or over the cap: at start, then every
/// [`KeepPolicy::sweep_interval`](crate::transfer::kept::KeepPolicy::sweep_interval).
async fn expire_partial(receiver: Arc<Receiver>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(receiver.kept().policy().sweep_interval());
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => receiver.expire().await,
        }
    }
}

/// What [`run`] reports once it is ready.
#[derive(Debug, Clone)]
pub struct ReadyInfo {
    /// The bound service port.
    pub port: u16,
    /// The control socket.
    pub socket: std::path::PathBuf,
}

type Bound = (Option<Arc<QuicTransport>>, Option<Arc<TcpTransport>>, u16);

/// Why the service port could not be bound, when a daemon answers on
/// this daemon's control socket or one a CLI would try: a second daemon
/// on the same host is said to be one, not sent to pick another port.
async fn port_taken(config: &Config, error: TransportError) -> DaemonError {
    if config.port == 0 {
        return error.into();
    }
    let mut sockets = vec![config.socket.clone()];
    sockets.extend(crate::config::Env::from_process().socket_candidates());
    for socket in sockets {
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            return if socket == config.socket {
                crate::control::server::ControlError::InUse(socket).into()
            } else {
                DaemonError::PortHeldByDaemon {
                    port: config.port,
                    socket,
                }
            };
        }
    }
    error.into()
}

/// Binds QUIC and TCP on the same port number. With port 0 the UDP port
/// is chosen first and TCP must get the same number; if that number is
/// taken on TCP, try again a few times.
async fn bind_transports(config: &Config, identity: &Identity) -> Result<Bound, TransportError> {
    let attempts = if config.port == 0 { 8 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let addr = SocketAddr::new(config.bind, config.port);
        let quic = if config.quic {
            Some(Arc::new(QuicTransport::bind(addr, identity, true)?))
        } else {
            // Still needed to dial out over QUIC; any port will do.
            Some(Arc::new(QuicTransport::bind(
                SocketAddr::new(config.bind, 0),
                identity,
                false,
            )?))
        };
        let port = match (&quic, config.quic) {
            (Some(q), true) => q.local_addr()?.port(),
            _ => config.port,
        };
        let tcp =
            TcpTransport::bind(SocketAddr::new(config.bind, port), identity, config.tcp).await;
        match tcp {
            Ok(tcp) => {
                let port = if config.quic {
                    port
                } else {
                    tcp.local_addr().map(|a| a.port()).unwrap_or(port)
                };
                let tcp = Some(Arc::new(tcp));
                return Ok((quic, tcp, port));
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| TransportError::Setup("cannot bind".into())))
}
