//! The `share` command line: argument definitions and dispatch.
//!
//! `share daemon` runs the daemon in-process; every other subcommand is a
//! thin client of the control socket ([`crate::control::client`]) and
//! renders the result for humans (`render`) or as one JSON document on
//! stdout (`--json`). Exit codes: 0 success, 2 usage error (clap), 1 any
//! other failure with a one-line reason on stderr.

mod choose;
mod docs;
mod doctor;
mod history;
mod output;
mod pair;
mod queue;
mod receive;
mod render;
mod send;
mod texts;
mod watch;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, Env, FileConfig};
use crate::control::client::{self, ClientError};
use crate::control::{IdInfo, Request};
use crate::intake::AcceptPolicy;
use crate::safe_text::CleanText;
pub use output::error_line;
pub use send::{SendArgs, TransportArg};

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
    #[command(override_usage = "share send [OPTIONS] <PEER> <PATHS>...
       share send [OPTIONS] <PEER> --text <TEXT>
       share send --choose <FILES>...")]
    Send(SendArgs),
    /// List incoming and outgoing transfers.
    Transfers(TransfersArgs),
    /// Accept a pending incoming offer.
    Accept {
        /// Transfer ID (or a unique prefix) from `share transfers`; without
        /// it, the one offer waiting (refused when several wait).
        id: Option<String>,
    },
    /// Reject a pending incoming offer.
    Reject {
        /// Transfer ID (or a unique prefix).
        id: String,
        /// Reason shown to the sender.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Cancel a pending or running transfer, or drop the partial data an
    /// interrupted incoming transfer kept for a resume.
    Cancel {
        /// Transfer ID (or a unique prefix).
        id: String,
    },
    /// Drop the partial data of every interrupted incoming transfer
    /// (`share transfers` lists it).
    Clean,
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
    Pair(pair::PairArgs),
    /// Show finished transfers (kept across restarts).
    History(history::HistoryArgs),
    /// List sends queued with `share send --queue`, or cancel one.
    Queue(queue::QueueArgs),
    /// List texts received with `share send --text`.
    Inbox(JsonFlag),
    /// Wait for the next incoming offer, accept it and wait until the
    /// files are in place (or, with --text, print the newest unread text).
    Receive(receive::ReceiveArgs),
    /// Show desktop notifications for incoming offers, with Accept and
    /// Reject (run in your graphical session; the package's user unit
    /// starts it there).
    Notify,
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
    /// Keep the list on screen, updated as devices come and go (with
    /// --json: one JSON document per change).
    #[arg(long)]
    pub watch: bool,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `share transfers`.
#[derive(Debug, Args)]
pub struct TransfersArgs {
    /// Keep the list on screen, updated as transfers start, progress and
    /// end (with --json: one JSON document per event).
    #[arg(long)]
    pub watch: bool,
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
    /// Also talk to LocalSend apps (phones, laptops): HTTPS on TCP 53317
    /// and discovery on UDP 53317.
    #[arg(long)]
    pub localsend: bool,
    /// LocalSend's HTTPS port (TCP); 0 picks a free one.
    #[arg(long, value_name = "PORT")]
    pub localsend_port: Option<u16>,
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
            keep_partial_s: None,
            keep_partial_untrusted_s: None,
            max_partial_bytes: None,
            peer_memory_mib: None,
            peer_memory_per_device_mib: None,
            interfaces: (!self.interfaces.is_empty()).then(|| self.interfaces.clone()),
            localsend: (self.localsend || self.localsend_port.is_some()).then(|| {
                config::LocalSendFile {
                    enabled: self.localsend.then_some(true),
                    port: self.localsend_port,
                    ..config::LocalSendFile::default()
                }
            }),
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
    Env::from_process().socket_candidates()
}

/// Runs a client subcommand.
pub async fn run_client(socket: Option<PathBuf>, command: Command) -> Result<()> {
    let json = command.json();
    let peer = match &command {
        Command::Send(args) => args.peer.clone(),
        _ => None,
    };
    let result = run_command(socket, command).await;
    if let Err(e) = &result
        && json
    {
        output::json_failure(e, peer.as_deref())?;
    }
    result
}

impl Command {
    /// Whether the command was asked for `--json` output.
    fn json(&self) -> bool {
        match self {
            Self::Id(flag) | Self::Status(flag) | Self::Inbox(flag) => flag.json,
            Self::Transfers(args) => args.json,
            Self::Peers(args) => args.json,
            Self::Doctor(args) => args.json,
            Self::Send(args) => args.json,
            Self::Pair(args) => args.json,
            Self::History(args) => args.json,
            Self::Queue(args) => args.json,
            Self::Receive(args) => args.json,
            Self::Daemon(_)
            | Self::Accept { .. }
            | Self::Reject { .. }
            | Self::Cancel { .. }
            | Self::Clean
            | Self::Trust { .. }
            | Self::Untrust { .. }
            | Self::Notify
            | Self::Completions { .. }
            | Self::Man => false,
        }
    }
}

/// Runs one client command.
async fn run_command(socket: Option<PathBuf>, command: Command) -> Result<()> {
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
            render::id(data, flag.json)
        }
        Command::Status(flag) => render::status(call(Request::Status).await?, flag.json),
        Command::Peers(args) => match args.action {
            None if args.watch => watch::peers(&sockets, args.json).await,
            None => render::peers(call(Request::Peers).await?, args.json),
            Some(PeersAction::Add { addr }) => render::ack(call(Request::PeersAdd { addr }).await?),
            Some(PeersAction::Remove { peer }) => {
                render::ack(call(Request::PeersRemove { peer }).await?)
            }
        },
        Command::Doctor(args) => doctor::run(&sockets, args.peer, args.json).await,
        Command::Transfers(args) if args.watch => watch::transfers(&sockets, args.json).await,
        Command::Transfers(args) => render::transfers(call(Request::Transfers).await?, args.json),
        Command::Send(args) => send::send(&sockets, args).await,
        Command::Accept { id: Some(id) } => render::ack(call(Request::Accept { id }).await?),
        Command::Accept { id: None } => receive::accept_only(&sockets).await,
        Command::Reject { id, reason } => {
            let reason = reason.as_deref().map(CleanText::from);
            render::ack(call(Request::Reject { id, reason }).await?)
        }
        Command::Cancel { id } => render::ack(call(Request::Cancel { id }).await?),
        Command::Clean => render::ack(call(Request::Clean).await?),
        Command::Trust { peer } => render::ack(call(Request::Trust { peer }).await?),
        Command::Untrust { peer } => render::ack(call(Request::Untrust { peer }).await?),
        Command::Pair(args) => pair::pair(&sockets, args).await,
        Command::History(args) => history::history(&sockets, args).await,
        Command::Queue(args) => queue::queue(&sockets, args).await,
        Command::Inbox(flag) => texts::inbox(&sockets, flag.json).await,
        Command::Receive(args) => receive::receive(&sockets, args).await,
        Command::Notify => notify(sockets).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man => docs::man(),
    }
}

/// `share notify`: the desktop agent, until SIGTERM or Ctrl-C. Without a
/// session bus, or with another agent in the session, there is nothing to
/// do: it says so and exits with success (the user unit is not restarted).
async fn notify(sockets: Vec<PathBuf>) -> Result<()> {
    use crate::desktop::bus::BusError;
    match crate::desktop::run(sockets, crate::shutdown::signal()).await {
        Err(e @ (BusError::NoSession(_) | BusError::AlreadyRunning)) => {
            eprintln!("share notify: {e}; exiting");
            Ok(())
        }
        other => Ok(other?),
    }
}

/// The configuration a `share daemon` started now would have (config
/// file and defaults), for commands that work without a daemon by
/// reading its files.
fn offline_config() -> Result<Config> {
    DaemonArgs {
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
        localsend: false,
        localsend_port: None,
    }
    .resolve(None)
}

/// `share id` without a daemon: the identity in the default state dir, and
/// the name the daemon last announced (recorded there; it may have come
/// from `--name`), else the configured one.
fn offline_id() -> Result<serde_json::Value> {
    let config = offline_config()?;
    let identity = crate::identity::Identity::load_existing(&config.state_dir)?
        .with_context(|| {
            format!(
                "no daemon is running and no identity exists yet in {}; start one with `share daemon`",
                config.state_dir.display()
            )
        })?;
    Ok(serde_json::to_value(IdInfo {
        name: crate::identity::recorded_name(&config.state_dir).unwrap_or(config.name),
        id: identity.id(),
    })?)
}
