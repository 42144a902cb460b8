//! The `share` command line: argument definitions and dispatch.
//!
//! `share daemon` runs the daemon in-process; every other subcommand is a
//! thin client of the control socket ([`crate::control::client`]) and
//! renders the result for humans (`render`) or as one JSON document on
//! stdout (`--json`). Exit codes: 0 success, 2 usage error (clap), 1 any
//! other failure with a one-line reason on stderr.

mod docs;
mod doctor;
mod everyday;
mod render;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, Env, FileConfig};
use crate::control::client::{self, ClientError};
use crate::control::{IdInfo, Request, SendEntry};
use crate::transfer::receive::AcceptPolicy;
use crate::transfer::source;
use crate::transport::dial::Preference;

/// Peer-to-peer file sharing on your LAN.
#[derive(Debug, Parser)]
#[command(name = "share", version, about, propagate_version = true)]
pub struct Cli {
    /// Control socket of the daemon (default: the user daemon's, then the system service's).
    #[arg(long, global = true, env = "SHARE_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (normally started by systemd).
    Daemon(DaemonArgs),
    /// Show this device's name and ID.
    Id(JsonFlag),
    /// Show the daemon's status.
    Status(JsonFlag),
    /// List known devices, or add/remove one by address.
    Peers(PeersArgs),
    /// Check discovery and connectivity and explain what to fix.
    Doctor(DoctorArgs),
    /// Send files and directories to a device.
    Send(SendArgs),
    /// List incoming and outgoing transfers.
    Transfers(JsonFlag),
    /// Accept a pending incoming offer.
    Accept {
        /// Transfer ID (or a unique prefix) from `share transfers`.
        id: String,
    },
    /// Reject a pending incoming offer.
    Reject {
        /// Transfer ID (or a unique prefix).
        id: String,
        /// Reason shown to the sender.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Cancel a pending or running transfer.
    Cancel {
        /// Transfer ID (or a unique prefix).
        id: String,
    },
    /// Trust a device: its offers are accepted without asking.
    Trust {
        /// Device name, device-ID prefix, or HOST:PORT.
        peer: String,
    },
    /// Stop trusting a device.
    Untrust {
        /// Device name or device-ID prefix.
        peer: String,
    },
    /// Pair with a device: both show a 6-digit code; if the codes match and
    /// both users confirm, each device trusts the other.
    Pair(everyday::PairArgs),
    /// Show finished transfers (kept across restarts).
    History(everyday::HistoryArgs),
    /// List sends queued with `share send --queue`, or cancel one.
    Queue(everyday::QueueArgs),
    /// List texts received with `share send --text`.
    Inbox(JsonFlag),
    /// Print the newest unread text (`share receive --text`).
    Receive(everyday::ReceiveArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) covering every command.
    Man,
}

/// `share peers [add|remove]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PeersArgs {
    /// Add or remove a peer; without one, list the known peers (how each
    /// was found: mdns, remembered or manual, and when it was last seen).
    #[command(subcommand)]
    pub action: Option<PeersAction>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `share peers` actions.
#[derive(Debug, Subcommand)]
pub enum PeersAction {
    /// Add the device at HOST:PORT (its service port) for when mDNS cannot
    /// find it; kept across restarts and re-checked every 30 s.
    Add {
        /// HOST:PORT, e.g. 192.168.1.20:47000.
        addr: String,
    },
    /// Forget a manual or remembered device.
    Remove {
        /// Device name, device-ID prefix, or HOST:PORT.
        peer: String,
    },
}

/// `share doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also test connections with this device in both directions, over UDP
    /// and TCP (name, device-ID prefix, or HOST:PORT).
    pub peer: Option<String>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--json` for read-only commands.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `share send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Device name, device-ID prefix, or HOST:PORT.
    pub peer: String,
    /// Files and directories to send.
    #[arg(required_unless_present = "text")]
    pub paths: Vec<PathBuf>,
    /// Send this short text instead of files (at most 64 KiB; `-` reads
    /// it from stdin).
    #[arg(long, value_name = "TEXT", conflicts_with = "paths")]
    pub text: Option<String>,
    /// Queue the send and return at once; it goes out when the peer is
    /// reachable, even after a daemon restart (`share queue` lists it).
    #[arg(long, conflicts_with = "text")]
    pub queue: bool,
    /// Transport: race QUIC and TCP (auto), or force one.
    #[arg(long, value_enum, default_value_t = TransportArg::Auto)]
    pub transport: TransportArg,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--transport` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TransportArg {
    /// QUIC with TCP fallback.
    Auto,
    /// QUIC only.
    Quic,
    /// TCP+TLS only.
    Tcp,
}

impl From<TransportArg> for Preference {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Auto => Self::Auto,
            TransportArg::Quic => Self::Quic,
            TransportArg::Tcp => Self::Tcp,
        }
    }
}

/// `share daemon` flags; each overrides the config file.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Device name shown to peers (default: host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Service port for QUIC (UDP) and the TCP fallback; 0 picks a free one.
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on (default `::`, all interfaces).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<std::net::IpAddr>,
    /// Identity and trust store directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where received files go.
    #[arg(long, value_name = "DIR")]
    pub download_dir: Option<PathBuf>,
    /// Config file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Which offers are accepted without asking.
    #[arg(long, value_enum)]
    pub accept: Option<AcceptPolicy>,
    /// Disable mDNS discovery (peers then need HOST:PORT).
    #[arg(long)]
    pub no_mdns: bool,
    /// Do not listen for QUIC (UDP).
    #[arg(long)]
    pub no_quic: bool,
    /// Do not listen for TCP+TLS.
    #[arg(long)]
    pub no_tcp: bool,
    /// Seconds a pending offer waits for `share accept`.
    #[arg(long, value_name = "SECS")]
    pub offer_timeout: Option<u64>,
    /// Use mDNS on exactly this interface (repeatable); default: every
    /// interface except container, VM-bridge, VPN and point-to-point ones.
    #[arg(long = "interface", value_name = "NAME")]
    pub interfaces: Vec<String>,
}

impl DaemonArgs {
    /// Flags as a config layer.
    fn as_file_config(&self, socket: Option<PathBuf>) -> FileConfig {
        FileConfig {
            name: self.name.clone(),
            port: self.port,
            bind: self.bind,
            state_dir: self.state_dir.clone(),
            download_dir: self.download_dir.clone(),
            socket,
            accept: self.accept,
            mdns: self.no_mdns.then_some(false),
            quic: self.no_quic.then_some(false),
            tcp: self.no_tcp.then_some(false),
            offer_timeout_s: self.offer_timeout,
            max_offer_bytes: None,
            retry_s: None,
            interfaces: (!self.interfaces.is_empty()).then(|| self.interfaces.clone()),
        }
    }

    /// Flags over the config file over defaults.
    pub fn resolve(&self, socket: Option<PathBuf>) -> Result<Config> {
        let env = Env::from_process();
        let file = match (&self.config, env.default_config_file()) {
            (Some(path), _) => FileConfig::load(path)?,
            (None, Some(path)) if path.exists() => FileConfig::load(&path)?,
            _ => FileConfig::default(),
        };
        Ok(Config::resolve(self.as_file_config(socket).or(file), &env)?)
    }
}

/// Sockets the CLI tries, in order.
fn socket_candidates(explicit: Option<PathBuf>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path];
    }
    let user = Env::from_process().user_socket();
    let system = PathBuf::from(config::SYSTEM_SOCKET);
    if user == system {
        vec![user]
    } else {
        vec![user, system]
    }
}

/// Runs a client subcommand.
pub async fn run_client(socket: Option<PathBuf>, command: Command) -> Result<()> {
    let sockets = socket_candidates(socket);
    let call = |request| client::call(&sockets, request, |_| {});
    match command {
        Command::Daemon(_) => bail!("internal error: daemon is not a client command"),
        Command::Id(flag) => {
            let data = match call(Request::Id).await {
                Ok(data) => data,
                Err(ClientError::NoDaemon { .. }) => offline_id()?,
                Err(e) => return Err(e.into()),
            };
            render::id(&data, flag.json)
        }
        Command::Status(flag) => render::status(&call(Request::Status).await?, flag.json),
        Command::Peers(args) => match args.action {
            None => render::peers(&call(Request::Peers).await?, args.json),
            Some(PeersAction::Add { addr }) => {
                render::ack(&call(Request::PeersAdd { addr }).await?)
            }
            Some(PeersAction::Remove { peer }) => {
                render::ack(&call(Request::PeersRemove { peer }).await?)
            }
        },
        Command::Doctor(args) => doctor::run(&sockets, args.peer, args.json).await,
        Command::Transfers(flag) => render::transfers(&call(Request::Transfers).await?, flag.json),
        Command::Send(args) => send(&sockets, args).await,
        Command::Accept { id } => render::ack(&call(Request::Accept { id }).await?),
        Command::Reject { id, reason } => render::ack(&call(Request::Reject { id, reason }).await?),
        Command::Cancel { id } => render::ack(&call(Request::Cancel { id }).await?),
        Command::Trust { peer } => render::ack(&call(Request::Trust { peer }).await?),
        Command::Untrust { peer } => render::ack(&call(Request::Untrust { peer }).await?),
        Command::Pair(args) => everyday::pair(&sockets, args).await,
        Command::History(args) => everyday::history(&sockets, args).await,
        Command::Queue(args) => everyday::queue(&sockets, args).await,
        Command::Inbox(flag) => everyday::inbox(&sockets, flag.json).await,
        Command::Receive(args) => everyday::receive(&sockets, args).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man => docs::man(),
    }
}

/// `share id` without a daemon: read the identity from the default state dir.
fn offline_id() -> Result<serde_json::Value> {
    let config = DaemonArgs {
        name: None,
        port: None,
        bind: None,
        state_dir: None,
        download_dir: None,
        config: None,
        accept: None,
        no_mdns: false,
        no_quic: false,
        no_tcp: false,
        offer_timeout: None,
        interfaces: Vec::new(),
    }
    .resolve(None)?;
    let identity = crate::identity::Identity::load_existing(&config.state_dir)?
        .with_context(|| {
            format!(
                "no daemon is running and no identity exists yet in {}; start one with `share daemon`",
                config.state_dir.display()
            )
        })?;
    Ok(serde_json::to_value(IdInfo {
        name: config.name,
        id: identity.id(),
    })?)
}

async fn send(sockets: &[PathBuf], args: SendArgs) -> Result<()> {
    if let Some(text) = &args.text {
        return everyday::send_text(sockets, &args, text).await;
    }
    // Walk the tree and open every file here, with the user's own
    // permissions; the daemon gets open files, never paths (the system
    // service cannot read home directories, and must never read a file
    // for a user who could not). A file the user cannot read fails here,
    // named, before anything is sent. (`main` raised the open-file limit
    // for `share send` before any thread started.)
    let paths = args.paths.clone();
    let (layout, files) = tokio::task::spawn_blocking(move || {
        let layout = source::walk(&paths)?;
        let files = layout
            .entries
            .iter()
            .filter(|e| !e.dir)
            .map(source::LayoutEntry::open)
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, source::SourceError>((layout, files))
    })
    .await
    .context("internal error: the file scan stopped")??;
    if args.queue {
        return everyday::queue_send(sockets, &args, &layout, &files).await;
    }
    let (entries, skipped) = request_layout(&layout);
    let request = Request::Send {
        peer: args.peer.clone(),
        entries,
        skipped,
        transport: args.transport.into(),
        retry_for_s: None,
    };
    let fds = crate::control::fds::borrow_all(&files);
    let mut progress = render::SendProgress::new(!args.json);
    let result =
        client::call_with_files(sockets, request, &fds, |event| progress.event(&event)).await;
    progress.finish();
    match result {
        Ok(data) => render::send_result(&data, args.json),
        Err(e) => {
            if args.json {
                render::send_failure(&args.peer, &e)?;
            }
            Err(e.into())
        }
    }
}

/// The layout as the control request carries it: entries (matched in
/// order by the passed files) and the skipped specials as text.
fn request_layout(layout: &source::Layout) -> (Vec<SendEntry>, Vec<String>) {
    let entries = layout
        .entries
        .iter()
        .map(|e| SendEntry {
            path: e.path.clone(),
            dir: e.dir,
        })
        .collect();
    let skipped = layout.skipped.iter().map(ToString::to_string).collect();
    (entries, skipped)
}
