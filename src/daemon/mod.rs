//! The daemon: composition root that owns the runtime.
//!
//! [`run`] loads the identity and trust store, binds the transports (QUIC
//! and TCP on one port number), starts discovery and the control socket,
//! and then serves until the injected `shutdown` future resolves (SIGINT or
//! SIGTERM in the binary, a oneshot in tests). Under systemd it reports
//! `READY=1` once everything is up, `STOPPING=1` when the stop begins, and
//! pings the watchdog (`notify`). Shutdown is complete and bounded (well
//! inside the unit's 15 s `TimeoutStopSec`): stop accepting, send mDNS
//! goodbyes, cancel transfers (peers are told), close QUIC and wait for the
//! close frames, wait for tasks, remove the socket.

mod commands;
mod doctor;
mod everyday;
mod history;
mod inbox;
mod notify;
mod pairing;
mod peer_slots;
mod probe;
mod queue;
mod remembered;
mod resolve;
mod session;
mod text;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::control::server::{ControlSocket, SocketAccess};
use crate::discovery::{Advert, Discovery, DiscoveryOptions, PeerTable};
use crate::identity::Identity;
use crate::identity::trust::TrustStore;
use crate::protocol::Message;
use crate::store::DownloadDir;
use crate::transfer::framed::Framed;
use crate::transfer::receive::ReceiveContext;
use crate::transfer::resume::ResumeStore;
use crate::transfer::{handshake, registry::Registry};
use crate::transport::dial::Dialer;
use crate::transport::quic::QuicTransport;
use crate::transport::tcp::TcpTransport;
use crate::transport::{Link, MAX_CONNECTIONS, TransportError};

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
    /// Control socket problem.
    #[error(transparent)]
    Control(#[from] crate::control::server::ControlError),
    /// mDNS could not start.
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
    /// The text inbox in the state directory is unusable.
    #[error(transparent)]
    Inbox(#[from] inbox::InboxError),
}

/// State shared by the daemon's tasks and command handlers.
pub(crate) struct Shared {
    config: Config,
    /// Open incoming connections per device.
    peer_slots: peer_slots::PeerSlots,
    identity: Identity,
    trust: TrustStore,
    peers: PeerTable,
    registry: Registry,
    dialer: Dialer,
    receive: ReceiveContext,
    port: u16,
    started: Instant,
    /// Conditions shown by `share status` (grows if systemd notification
    /// fails later on).
    warnings: std::sync::Mutex<Vec<String>>,
    transports: Vec<crate::transport::TransportKind>,
    /// What mDNS saw per interface (`None` when mDNS is off or failed).
    mdns_health: Option<crate::discovery::MdnsHealth>,
    /// The kernel clamped the QUIC socket buffers (`share doctor`).
    buffer_warning: Option<String>,
    /// Reachability probes (`share doctor PEER`).
    probes: probe::Probes,
    /// Remembered and manual peers (`peers.json`).
    remembered: remembered::Remembered,
    /// Finished transfers, persisted (`share history`).
    history: Arc<history::History>,
    /// Received texts (`share inbox`).
    inbox: inbox::Inbox,
    /// Pairing attempts (`share pair`).
    pairings: Arc<pairing::Pairings>,
    /// Sends waiting for their peer (`share queue`).
    queue: queue::Queue,
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
    let trust = TrustStore::load(&config.state_dir)?;
    let download = Arc::new(DownloadDir::open(&config.download_dir)?);
    let (quic, tcp, port) = bind_transports(&config, &identity).await?;
    let mut warnings: Vec<String> = notify_warning.into_iter().collect();
    let buffer_warning = quic
        .as_ref()
        .and_then(|q| q.buffer_warning())
        .map(str::to_owned);
    if let Some(w) = &buffer_warning {
        tracing::warn!("{w}");
        warnings.push(w.clone());
    }
    let (remembered, w) = remembered::Remembered::load(&config.state_dir);
    if let Some(w) = w {
        tracing::warn!("{w}");
        warnings.push(w);
    }

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let peers = PeerTable::new();
    let history = Arc::new(history::History::open(&config.state_dir));
    let registry = Registry::with_sink(history.clone());
    let inbox = inbox::Inbox::open(&config.state_dir)?;
    let pairings = Arc::new(pairing::Pairings::new(
        cancel.child_token(),
        tracker.clone(),
    ));
    let queue = queue::Queue::open(&config.state_dir, cancel.child_token());
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
        match Discovery::start(advert, peers.clone(), options) {
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
        transports.push(crate::transport::TransportKind::Quic);
    }
    if config.tcp {
        transports.push(crate::transport::TransportKind::Tcp);
    }
    let shared = Arc::new(Shared {
        peer_slots: peer_slots::PeerSlots::default(),
        receive: ReceiveContext {
            download,
            trust: trust.clone(),
            policy: config.accept,
            registry: registry.clone(),
            resume: ResumeStore::new(&config.state_dir),
            offer_timeout: config.offer_timeout,
            limits: config.limits.clone(),
        },
        dialer: Dialer::new(quic.clone(), tcp.clone()),
        config,
        identity,
        trust,
        peers,
        registry,
        port,
        started: Instant::now(),
        warnings: std::sync::Mutex::new(warnings),
        transports,
        mdns_health: discovery.as_ref().map(Discovery::health),
        buffer_warning,
        probes: probe::Probes::default(),
        remembered,
        history,
        inbox,
        pairings,
        queue,
    });

    let (links_tx, links_rx) = mpsc::channel::<Link>(16);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if let Some(q) = &quic {
        tracker.spawn(q.clone().serve(
            links_tx.clone(),
            slots.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
    }
    if let Some(t) = &tcp {
        tracker.spawn(t.clone().serve(
            links_tx.clone(),
            slots.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
    }
    drop(links_tx);
    tracker.spawn(incoming(
        shared.clone(),
        links_rx,
        cancel.clone(),
        tracker.clone(),
    ));
    tracker.spawn(expire_resume_state(shared.clone(), cancel.clone()));
    tracker.spawn(queue::run(shared.clone(), cancel.clone(), tracker.clone()));
    tracker.spawn(remembered::run(shared.clone(), cancel.clone()));
    let socket_path = control.path().to_owned();
    tracker.spawn(control.serve(
        Arc::new(commands::Commands(shared.clone())),
        cancel.clone(),
        tracker.clone(),
    ));

    tracing::info!(
        name = %shared.config.name,
        id = %shared.identity.id(),
        port,
        socket = %socket_path.display(),
        download_dir = %shared.config.download_dir.display(),
        "lanshare daemon ready"
    );
    ready(&ReadyInfo {
        port,
        socket: socket_path,
    });
    let status = format!("ready: {} on port {port}", shared.config.name);
    if let Some(w) = notifier.ready(&status) {
        shared.warn(w);
    }
    if let Some(interval) = notify::watchdog_interval() {
        let shared = shared.clone();
        tracker.spawn(
            notifier
                .clone()
                .watchdog(interval, cancel.clone(), move |w| shared.warn(w)),
        );
    }

    shutdown.await;
    notifier.stopping();
    tracing::info!("shutting down");
    let stop_started = Instant::now();
    cancel.cancel();
    if let Some(d) = discovery {
        d.shutdown().await;
    }
    shared.registry.cancel_all();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
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

impl Shared {
    /// Adds a warning for `share status`.
    fn warn(&self, warning: String) {
        self.warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(warning);
    }

    /// The warnings so far.
    fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
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

/// Handles every authenticated incoming link in its own task.
async fn incoming(
    shared: Arc<Shared>,
    mut links: mpsc::Receiver<Link>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let link = tokio::select! {
            () = cancel.cancelled() => break,
            link = links.recv() => match link {
                Some(link) => link,
                None => break,
            },
        };
        tracker.spawn(serve_link(shared.clone(), link));
    }
}

/// How often forgotten partial transfers are looked for.
const RESUME_GC_INTERVAL: Duration = Duration::from_secs(3600);

/// Removes the partial data and records of interrupted incoming transfers
/// older than [`RESUME_MAX_AGE`](crate::transfer::resume::RESUME_MAX_AGE),
/// at start and then hourly.
async fn expire_resume_state(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(RESUME_GC_INTERVAL);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let ctx = &shared.receive;
        for key in ctx.resume.expired(crate::transfer::resume::RESUME_MAX_AGE) {
            let Some(_claim) = ctx.resume.claim(&key) else {
                continue;
            };
            // Logged only once both the data and the record are gone.
            match ctx.forget(&key).await {
                Ok(removed) => tracing::info!(
                    key,
                    removed,
                    "forgot an interrupted transfer that was never resumed"
                ),
                Err(reason) => tracing::warn!(
                    key,
                    "cannot remove expired partial data (tried again within the hour): {reason}"
                ),
            }
        }
    }
}

/// One incoming connection: hello, then one transfer; then a clean close,
/// waiting (bounded) for the peer so our last message — a refusal, an
/// error, `Done` — is delivered before the connection goes away.
async fn serve_link(shared: Arc<Shared>, link: Link) {
    let (peer, kind, remote) = (link.peer, link.kind, link.remote);
    let mut framed = Framed::new(link);
    let Some(_slot) = shared.peer_slots.acquire(peer) else {
        tracing::warn!(%peer, %remote, "too many connections from this device; refusing");
        let busy = crate::transfer::TransferError::Busy(
            "too many connections from this device; try again later".into(),
        );
        framed.send_error(&busy).await;
        framed
            .into_link()
            .wait_delivered(Duration::from_secs(2))
            .await;
        return;
    };
    match handshake::server(&mut framed, &shared.config.name, &shared.trust).await {
        Ok(hello) => {
            tracing::debug!(%peer, %remote, %kind, name = %hello.name, "peer connected");
            shared.remembered.heard_from(&peer, &shared.peers);
            // The first message after Hello picks the session type.
            match framed.recv().await {
                Ok(Message::Probe { port, nonce }) => {
                    probe::answer(&shared, &mut framed, port, nonce).await;
                }
                Ok(Message::Echo { nonce }) => {
                    if !shared.probes.echoed(&nonce, peer, kind) {
                        tracing::debug!(%peer, %remote, "unexpected probe echo");
                    }
                }
                first => shared.serve_session(&mut framed, &hello.name, first).await,
            }
        }
        Err(e) => tracing::info!(%peer, %remote, %kind, "handshake failed: {e}"),
    }
    framed.into_link().close(Duration::from_secs(5)).await;
}
