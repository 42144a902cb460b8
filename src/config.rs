//! Daemon configuration: TOML file, then command-line flags, then defaults.
//!
//! Most keys of the file are also `share daemon` flags (`max_offer_bytes`,
//! `retry_s`, the `*_partial_*` and the `peer_memory` keys exist only in the file); a flag wins over the file. Defaults follow the XDG base directories for a user daemon and
//! the systemd-provided directories (`STATE_DIRECTORY`,
//! `RUNTIME_DIRECTORY`) for the system service, so the same binary does the
//! right thing in both places without configuration.
//!
//! ```toml
//! # ~/.config/lanshare/config.toml or /etc/lanshare/config.toml
//! name = "laptop"
//! port = 47000
//! bind = "::"
//! download_dir = "/home/me/Downloads"
//! accept = "ask"          # ask | trusted | all
//! mdns = true
//! quic = true
//! tcp = true
//! offer_timeout_s = 120
//! max_offer_bytes = 1099511627776
//! retry_s = 600           # how long an interrupted send retries and resumes
//! keep_partial_s = 86400  # partial data of interrupted incoming transfers: trusted senders
//! keep_partial_untrusted_s = 3600  # other senders
//! max_partial_bytes = 17179869184  # all kept partial data together
//! peer_memory_mib = 256   # memory all peers' frames and offers may hold
//! peer_memory_per_device_mib = 64
//! interfaces = ["eth0"]   # mDNS on exactly these; default: all but container/VM/VPN ones
//!
//! [localsend]             # talk to LocalSend apps (off by default)
//! enabled = true
//! port = 53317            # HTTPS (TCP)
//! multicast_port = 53317  # discovery (UDP)
//! pin = "4711"            # senders must give it (optional)
//! ```

use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::intake::AcceptPolicy;
use crate::protocol::ManifestLimits;
use crate::transfer::kept::{self, KeepPolicy};
use crate::transfer::memory::{self, MemoryLimits};

/// The service port used when none is configured (UDP for QUIC and TCP
/// for the fallback share the number).
pub const DEFAULT_PORT: u16 = 47000;

/// Default time an interrupted send keeps retrying: 10 minutes.
pub const DEFAULT_RETRY_S: u64 = 600;

/// Longest retry window: a receiver keeps a trusted sender's partial
/// data for a day by default ([`kept::DEFAULT_KEEP_TRUSTED`]), so
/// retrying longer would mostly start over.
pub const MAX_RETRY_S: u64 = kept::DEFAULT_KEEP_TRUSTED.as_secs();

/// Longest time partial data may be kept: 30 days.
pub const MAX_KEEP_PARTIAL_S: u64 = 30 * 24 * 3600;

/// Longest time an offer may wait for `share accept`.
pub const MAX_OFFER_TIMEOUT_S: u64 = 24 * 3600;

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message (includes the line).
        reason: String,
    },
    /// A value makes no sense.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// No home directory to derive defaults from.
    #[error(
        "cannot work out default directories: set HOME, or pass --state-dir, --download-dir and --socket"
    )]
    NoHome,
}

/// Keys of the TOML file; all optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Device name shown to peers.
    pub name: Option<String>,
    /// Service port.
    pub port: Option<u16>,
    /// Address to bind (default `::`, dual-stack).
    pub bind: Option<IpAddr>,
    /// Identity and trust store directory.
    pub state_dir: Option<PathBuf>,
    /// Where received files go.
    pub download_dir: Option<PathBuf>,
    /// Control socket path.
    pub socket: Option<PathBuf>,
    /// Consent policy.
    pub accept: Option<AcceptPolicy>,
    /// mDNS discovery on/off.
    pub mdns: Option<bool>,
    /// QUIC listener on/off.
    pub quic: Option<bool>,
    /// TCP fallback listener on/off.
    pub tcp: Option<bool>,
    /// Seconds a pending offer waits for a decision.
    pub offer_timeout_s: Option<u64>,
    /// Largest offer accepted, in bytes.
    pub max_offer_bytes: Option<u64>,
    /// Seconds an interrupted send keeps retrying.
    pub retry_s: Option<u64>,
    /// Seconds a trusted sender's partial data is kept after its
    /// transfer was interrupted.
    pub keep_partial_s: Option<u64>,
    /// The same for every other sender.
    pub keep_partial_untrusted_s: Option<u64>,
    /// All kept partial data together, in bytes.
    pub max_partial_bytes: Option<u64>,
    /// MiB all peers' frames and pending offers may hold.
    pub peer_memory_mib: Option<usize>,
    /// MiB any one device's frames and offers may hold.
    pub peer_memory_per_device_mib: Option<usize>,
    /// Interfaces mDNS uses, exactly; unset or empty = the default policy
    /// (all but container, VM-bridge, VPN and point-to-point interfaces).
    pub interfaces: Option<Vec<String>>,
    /// The `[localsend]` table.
    pub localsend: Option<LocalSendFile>,
}

/// The `[localsend]` table of the config file: LocalSend
/// interoperability (see [`crate::localsend`]).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSendFile {
    /// Serve and discover LocalSend devices (off by default).
    pub enabled: Option<bool>,
    /// HTTPS port (TCP).
    pub port: Option<u16>,
    /// Multicast discovery port (UDP).
    pub multicast_port: Option<u16>,
    /// A PIN LocalSend senders must give.
    pub pin: Option<String>,
}

impl LocalSendFile {
    fn or(self, lower: Self) -> Self {
        Self {
            enabled: self.enabled.or(lower.enabled),
            port: self.port.or(lower.port),
            multicast_port: self.multicast_port.or(lower.multicast_port),
            pin: self.pin.or(lower.pin),
        }
    }
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Fills every unset key of `self` from `lower`.
    pub fn or(self, lower: Self) -> Self {
        Self {
            name: self.name.or(lower.name),
            port: self.port.or(lower.port),
            bind: self.bind.or(lower.bind),
            state_dir: self.state_dir.or(lower.state_dir),
            download_dir: self.download_dir.or(lower.download_dir),
            socket: self.socket.or(lower.socket),
            accept: self.accept.or(lower.accept),
            mdns: self.mdns.or(lower.mdns),
            quic: self.quic.or(lower.quic),
            tcp: self.tcp.or(lower.tcp),
            offer_timeout_s: self.offer_timeout_s.or(lower.offer_timeout_s),
            max_offer_bytes: self.max_offer_bytes.or(lower.max_offer_bytes),
            retry_s: self.retry_s.or(lower.retry_s),
            keep_partial_s: self.keep_partial_s.or(lower.keep_partial_s),
            keep_partial_untrusted_s: self
                .keep_partial_untrusted_s
                .or(lower.keep_partial_untrusted_s),
            max_partial_bytes: self.max_partial_bytes.or(lower.max_partial_bytes),
            peer_memory_mib: self.peer_memory_mib.or(lower.peer_memory_mib),
            peer_memory_per_device_mib: self
                .peer_memory_per_device_mib
                .or(lower.peer_memory_per_device_mib),
            interfaces: self.interfaces.or(lower.interfaces),
            localsend: match (self.localsend, lower.localsend) {
                (Some(upper), Some(lower)) => Some(upper.or(lower)),
                (upper, lower) => upper.or(lower),
            },
        }
    }
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Device name shown to peers.
    pub name: String,
    /// Address to bind.
    pub bind: IpAddr,
    /// Service port (0 = pick a free one).
    pub port: u16,
    /// Identity and trust store.
    pub state_dir: PathBuf,
    /// Where received files go.
    pub download_dir: PathBuf,
    /// Control socket path.
    pub socket: PathBuf,
    /// Consent policy.
    pub accept: AcceptPolicy,
    /// mDNS discovery.
    pub mdns: bool,
    /// QUIC listener.
    pub quic: bool,
    /// TCP fallback listener.
    pub tcp: bool,
    /// How long a pending offer waits.
    pub offer_timeout: Duration,
    /// Limits on incoming offers.
    pub limits: ManifestLimits,
    /// How long an interrupted send keeps retrying (and resuming).
    pub retry_window: Duration,
    /// How long and how much partial data of interrupted incoming
    /// transfers is kept.
    pub keep_partial: KeepPolicy,
    /// What peers' frames and offers may hold in memory.
    pub peer_memory: MemoryLimits,
    /// Interfaces mDNS uses; empty = the default policy
    /// ([`crate::discovery::interfaces`]).
    pub interfaces: Vec<String>,
    /// LocalSend interoperability, when enabled.
    pub localsend: Option<LocalSendConfig>,
}

/// LocalSend settings of a daemon that has it enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSendConfig {
    /// HTTPS port (TCP); 0 picks a free one.
    pub port: u16,
    /// Multicast discovery port (UDP).
    pub multicast_port: u16,
    /// A PIN LocalSend senders must give.
    pub pin: Option<String>,
}

/// Longest LocalSend PIN accepted.
pub const MAX_PIN_LEN: usize = 64;

/// Process environment the defaults depend on (injected for tests).
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$XDG_STATE_HOME`.
    pub xdg_state_home: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
    /// `$XDG_DOWNLOAD_DIR`.
    pub xdg_download_dir: Option<PathBuf>,
    /// `$STATE_DIRECTORY` (set by systemd `StateDirectory=`): its first
    /// entry.
    pub state_directory: Option<PathBuf>,
    /// The second entry of `$STATE_DIRECTORY`, if any: the system unit
    /// lists `lanshare/state lanshare/incoming`, so downloads get their own
    /// group-readable directory while the state stays private.
    pub state_directory_downloads: Option<PathBuf>,
    /// `$RUNTIME_DIRECTORY` (set by systemd `RuntimeDirectory=`).
    pub runtime_directory: Option<PathBuf>,
    /// `/run/user/UID` when it exists, belongs to the user and is private
    /// (logind's runtime directory, which `XDG_RUNTIME_DIR` names in a
    /// session): found even where the variable is unset (cron, `su`).
    pub user_runtime_dir: Option<PathBuf>,
    /// Effective user ID.
    pub uid: u32,
}

impl Env {
    /// Reads the real process environment.
    pub fn from_process() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        // systemd may pass several colon-separated directories; take the first.
        let first = |p: Option<PathBuf>| {
            p.map(|p| {
                PathBuf::from(
                    p.to_string_lossy()
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
        };
        let state_dirs = split_state_directory(var("STATE_DIRECTORY"));
        let uid = rustix::process::geteuid().as_raw();
        Self {
            home: var("HOME"),
            xdg_state_home: var("XDG_STATE_HOME"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            xdg_download_dir: var("XDG_DOWNLOAD_DIR"),
            state_directory: state_dirs.0,
            state_directory_downloads: state_dirs.1,
            runtime_directory: first(var("RUNTIME_DIRECTORY")),
            user_runtime_dir: private_user_runtime_dir(uid),
            uid,
        }
    }

    /// Whether we run as the system service (systemd gave us directories).
    fn is_system_service(&self) -> bool {
        self.state_directory.is_some()
    }

    /// The default config file: system or user.
    pub fn default_config_file(&self) -> Option<PathBuf> {
        if self.is_system_service() {
            return Some(PathBuf::from("/etc/lanshare/config.toml"));
        }
        self.xdg_config_home
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".config")))
            .map(|d| d.join("lanshare/config.toml"))
    }

    /// The default control socket of a daemon started by this user, in a
    /// directory no other user can create first:
    ///
    /// 1. `$RUNTIME_DIRECTORY/share.sock` (a systemd unit's own directory);
    /// 2. `$XDG_RUNTIME_DIR/lanshare/share.sock`;
    /// 3. for root, the system service's socket;
    /// 4. `/run/user/UID/lanshare/share.sock` if that directory is there;
    /// 5. `lanshare/share.sock` in the state home (`$XDG_STATE_HOME`, or
    ///    `~/.local/state`);
    /// 6. only without a home: `$TMPDIR/lanshare-UID/share.sock`, which
    ///    both the daemon and the CLI refuse if someone else made it.
    pub fn user_socket(&self) -> PathBuf {
        if let Some(dir) = &self.runtime_directory {
            return dir.join("share.sock");
        }
        if let Some(dir) = &self.xdg_runtime_dir {
            return dir.join("lanshare/share.sock");
        }
        if self.uid == 0 {
            return PathBuf::from(SYSTEM_SOCKET);
        }
        if let Some(dir) = &self.user_runtime_dir {
            return dir.join("lanshare/share.sock");
        }
        match self.state_home_socket() {
            Some(socket) => socket,
            None => std::env::temp_dir().join(format!("lanshare-{}/share.sock", self.uid)),
        }
    }

    /// `lanshare/share.sock` in the state home, if there is a home.
    fn state_home_socket(&self) -> Option<PathBuf> {
        let state_home = self
            .xdg_state_home
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".local/state")))?;
        Some(state_home.join("lanshare/share.sock"))
    }

    /// The sockets the CLI tries, in order: [`Env::user_socket`], the
    /// state-home socket (where a daemon started without a session put
    /// it), then the system service's.
    pub fn socket_candidates(&self) -> Vec<PathBuf> {
        let mut sockets = vec![self.user_socket()];
        sockets.extend(self.state_home_socket());
        sockets.push(PathBuf::from(SYSTEM_SOCKET));
        let mut seen = std::collections::HashSet::new();
        sockets.retain(|s| seen.insert(s.clone()));
        sockets
    }
}

/// `/run/user/UID`, if it is a directory of `uid`'s that nobody else may
/// enter.
fn private_user_runtime_dir(uid: u32) -> Option<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = PathBuf::from(format!("/run/user/{uid}"));
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid && meta.permissions().mode() & 0o077 == 0).then_some(dir)
}

/// Splits `$STATE_DIRECTORY` into (state, downloads). systemd lists the
/// unit's `StateDirectory=` entries colon-separated but not necessarily in
/// unit order, so the download directory is recognised by its name: an
/// entry called `incoming` (the system unit has `lanshare/state
/// lanshare/incoming`). With a single entry, downloads go under it.
fn split_state_directory(value: Option<PathBuf>) -> (Option<PathBuf>, Option<PathBuf>) {
    let Some(value) = value else {
        return (None, None);
    };
    let entries: Vec<PathBuf> = value
        .to_string_lossy()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    let is_incoming = |p: &&PathBuf| p.file_name().is_some_and(|n| n == "incoming");
    if entries.len() < 2 {
        return (entries.into_iter().next(), None);
    }
    let downloads = entries.iter().find(is_incoming).cloned();
    let state = entries
        .iter()
        .find(|p| !is_incoming(p))
        .or(entries.first())
        .cloned();
    (state, downloads)
}

/// Control socket of the system service.
pub const SYSTEM_SOCKET: &str = "/run/lanshare/share.sock";

impl Config {
    /// Resolves the configuration: `given` (flags over file) over defaults.
    pub fn resolve(given: FileConfig, env: &Env) -> Result<Self, ConfigError> {
        let home = env.home.clone();
        let peer_memory = peer_memory(&given)?;
        let state_dir = match given.state_dir {
            Some(d) => d,
            None => match (&env.state_directory, &env.xdg_state_home, &home) {
                (Some(d), _, _) => d.clone(),
                (None, Some(x), _) => x.join("lanshare"),
                (None, None, Some(h)) => h.join(".local/state/lanshare"),
                (None, None, None) => return Err(ConfigError::NoHome),
            },
        };
        let download_dir = match given.download_dir {
            Some(d) => d,
            None => match (&env.state_directory, &env.xdg_download_dir, &home) {
                (Some(d), _, _) => env
                    .state_directory_downloads
                    .clone()
                    .unwrap_or_else(|| d.join("incoming")),
                (None, Some(x), _) => x.clone(),
                (None, None, Some(h)) => h.join("Downloads"),
                (None, None, None) => return Err(ConfigError::NoHome),
            },
        };
        let name = match given.name {
            Some(n) => n,
            None => hostname(),
        };
        let name = name.trim().to_owned();
        if name.is_empty() || name.len() > 63 || name.chars().any(char::is_control) {
            return Err(ConfigError::Invalid(format!(
                "device name {name:?} must be 1-63 bytes without control characters"
            )));
        }
        let quic = given.quic.unwrap_or(true);
        let tcp = given.tcp.unwrap_or(true);
        if !quic && !tcp {
            return Err(ConfigError::Invalid(
                "QUIC and TCP cannot both be disabled".into(),
            ));
        }
        let offer_timeout_s = given
            .offer_timeout_s
            .unwrap_or(crate::transfer::DEFAULT_OFFER_TIMEOUT.as_secs());
        if !(1..=MAX_OFFER_TIMEOUT_S).contains(&offer_timeout_s) {
            return Err(ConfigError::Invalid(format!(
                "offer_timeout_s = {offer_timeout_s} is out of range: 1 to {MAX_OFFER_TIMEOUT_S} seconds"
            )));
        }
        let retry_s = given.retry_s.unwrap_or(DEFAULT_RETRY_S);
        if retry_s > MAX_RETRY_S {
            return Err(ConfigError::Invalid(format!(
                "retry_s = {retry_s} is out of range: at most {MAX_RETRY_S} seconds (interrupted transfers are forgotten after a day)"
            )));
        }
        let keep_s = |key: &str, value: Option<u64>, default: Duration| {
            let s = value.unwrap_or(default.as_secs());
            if s > MAX_KEEP_PARTIAL_S {
                return Err(ConfigError::Invalid(format!(
                    "{key} = {s} is out of range: at most {MAX_KEEP_PARTIAL_S} seconds (30 days)"
                )));
            }
            Ok(Duration::from_secs(s))
        };
        let keep_partial = KeepPolicy {
            trusted_for: keep_s(
                "keep_partial_s",
                given.keep_partial_s,
                kept::DEFAULT_KEEP_TRUSTED,
            )?,
            untrusted_for: keep_s(
                "keep_partial_untrusted_s",
                given.keep_partial_untrusted_s,
                kept::DEFAULT_KEEP_UNTRUSTED,
            )?,
            max_bytes: given.max_partial_bytes.unwrap_or(kept::DEFAULT_MAX_BYTES),
        };
        let localsend = given.localsend.unwrap_or_default();
        let localsend = match localsend.enabled {
            Some(true) => Some(LocalSendConfig {
                port: localsend
                    .port
                    .unwrap_or(crate::localsend::wire::DEFAULT_PORT),
                multicast_port: localsend
                    .multicast_port
                    .unwrap_or(crate::localsend::wire::DEFAULT_PORT),
                pin: match localsend.pin {
                    Some(pin)
                        if pin.is_empty()
                            || pin.len() > MAX_PIN_LEN
                            || pin.chars().any(char::is_control) =>
                    {
                        return Err(ConfigError::Invalid(format!(
                            "the LocalSend pin must be 1-{MAX_PIN_LEN} bytes without control characters"
                        )));
                    }
                    pin => pin,
                },
            }),
            _ => None,
        };
        let mut limits = ManifestLimits::default();
        if let Some(max) = given.max_offer_bytes {
            limits.max_total_bytes = max;
        }
        Ok(Self {
            name,
            bind: given.bind.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            port: given.port.unwrap_or(DEFAULT_PORT),
            state_dir,
            download_dir,
            socket: given.socket.unwrap_or_else(|| env.user_socket()),
            accept: given.accept.unwrap_or_default(),
            mdns: given.mdns.unwrap_or(true),
            quic,
            tcp,
            offer_timeout: Duration::from_secs(offer_timeout_s),
            limits,
            retry_window: Duration::from_secs(retry_s),
            keep_partial,
            peer_memory,
            interfaces: given.interfaces.unwrap_or_default(),
            localsend,
        })
    }
}

/// The peer memory budget of the file's `peer_memory_mib` and
/// `peer_memory_per_device_mib` (defaults 256 and 64). One device must have
/// room for the largest frame and the largest offer's manifest (16 MiB),
/// and strangers (half of the total) for one such device.
fn peer_memory(given: &FileConfig) -> Result<MemoryLimits, ConfigError> {
    const MIN_PER_DEVICE: usize = 16;
    let total = given.peer_memory_mib.unwrap_or(memory::DEFAULT_TOTAL_MIB);
    let per_device = given
        .peer_memory_per_device_mib
        .unwrap_or(memory::DEFAULT_PER_DEVICE_MIB.min(total / 2));
    if !(MIN_PER_DEVICE..=1 << 20).contains(&per_device) {
        return Err(ConfigError::Invalid(format!(
            "peer_memory_per_device_mib = {per_device} is out of range: {MIN_PER_DEVICE} to {} MiB",
            1 << 20
        )));
    }
    if total < 2 * per_device || total > 1 << 20 {
        return Err(ConfigError::Invalid(format!(
            "peer_memory_mib = {total} is out of range: at least twice peer_memory_per_device_mib ({}), at most {} MiB",
            2 * per_device,
            1 << 20
        )));
    }
    Ok(MemoryLimits::from_mib(total, per_device))
}

/// The machine's host name, or "lanshare" if it cannot be read.
pub fn hostname() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "lanshare".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_env() -> Env {
        Env {
            home: Some("/home/u".into()),
            xdg_runtime_dir: Some("/run/user/1000".into()),
            uid: 1000,
            ..Env::default()
        }
    }

    /// Without `XDG_RUNTIME_DIR` the socket goes where other users cannot
    /// create it first; a shared temporary directory only without a home.
    #[test]
    fn socket_without_a_session_avoids_shared_directories() {
        let env = Env {
            home: Some("/home/u".into()),
            uid: 1000,
            ..Env::default()
        };
        assert_eq!(
            env.user_socket(),
            Path::new("/home/u/.local/state/lanshare/share.sock")
        );
        assert_eq!(
            env.socket_candidates(),
            [
                Path::new("/home/u/.local/state/lanshare/share.sock"),
                Path::new(SYSTEM_SOCKET)
            ]
        );
        let logind = Env {
            user_runtime_dir: Some("/run/user/1000".into()),
            ..env.clone()
        };
        assert_eq!(
            logind.user_socket(),
            Path::new("/run/user/1000/lanshare/share.sock")
        );
        let session = Env {
            xdg_runtime_dir: Some("/run/user/1000".into()),
            ..env.clone()
        };
        assert_eq!(
            session.socket_candidates(),
            [
                Path::new("/run/user/1000/lanshare/share.sock"),
                Path::new("/home/u/.local/state/lanshare/share.sock"),
                Path::new(SYSTEM_SOCKET)
            ]
        );
        let homeless = Env {
            uid: 1000,
            ..Env::default()
        };
        assert!(homeless.user_socket().ends_with("lanshare-1000/share.sock"));
        let root = Env {
            home: Some("/root".into()),
            ..Env::default()
        };
        assert_eq!(root.user_socket(), Path::new(SYSTEM_SOCKET));
    }

    #[test]
    fn user_defaults_follow_xdg() {
        let c = Config::resolve(FileConfig::default(), &user_env()).unwrap();
        assert_eq!(c.state_dir, Path::new("/home/u/.local/state/lanshare"));
        assert_eq!(c.download_dir, Path::new("/home/u/Downloads"));
        assert_eq!(c.socket, Path::new("/run/user/1000/lanshare/share.sock"));
        assert_eq!(c.port, DEFAULT_PORT);
        assert_eq!(c.accept, AcceptPolicy::Ask);
        assert!(c.mdns && c.quic && c.tcp);
    }

    /// Durations the daemon adds to clocks are range-checked, so a
    /// configuration cannot make them overflow (a panic).
    #[test]
    fn durations_out_of_range_are_refused() {
        for given in [
            FileConfig {
                retry_s: Some(u64::MAX),
                ..FileConfig::default()
            },
            FileConfig {
                offer_timeout_s: Some(u64::MAX),
                ..FileConfig::default()
            },
            FileConfig {
                offer_timeout_s: Some(0),
                ..FileConfig::default()
            },
            FileConfig {
                keep_partial_s: Some(MAX_KEEP_PARTIAL_S + 1),
                ..FileConfig::default()
            },
            FileConfig {
                keep_partial_untrusted_s: Some(u64::MAX),
                ..FileConfig::default()
            },
        ] {
            let err = Config::resolve(given, &user_env()).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{err}");
            assert!(err.to_string().contains("out of range"), "{err}");
        }
        let given = FileConfig {
            retry_s: Some(MAX_RETRY_S),
            offer_timeout_s: Some(MAX_OFFER_TIMEOUT_S),
            ..FileConfig::default()
        };
        let c = Config::resolve(given, &user_env()).unwrap();
        assert_eq!(c.retry_window, Duration::from_secs(MAX_RETRY_S));
        assert_eq!(c.keep_partial, KeepPolicy::default());
        let given = FileConfig {
            keep_partial_s: Some(MAX_KEEP_PARTIAL_S),
            keep_partial_untrusted_s: Some(0),
            max_partial_bytes: Some(1 << 30),
            ..FileConfig::default()
        };
        let c = Config::resolve(given, &user_env()).unwrap();
        assert_eq!(
            c.keep_partial,
            KeepPolicy {
                trusted_for: Duration::from_secs(MAX_KEEP_PARTIAL_S),
                untrusted_for: Duration::ZERO,
                max_bytes: 1 << 30,
            }
        );
    }

    #[test]
    fn peer_memory_budget_from_the_file() {
        let parse = |text: &str| {
            let given: FileConfig = toml::from_str(text).unwrap();
            Config::resolve(given, &user_env()).map(|c| c.peer_memory)
        };
        assert_eq!(parse("").unwrap(), MemoryLimits::from_mib(256, 64));
        let small = parse("peer_memory_mib = 64").unwrap();
        assert_eq!(small, MemoryLimits::from_mib(64, 32));
        assert_eq!(small.strangers, 32 << 20);
        assert_eq!(
            parse("peer_memory_mib = 1024\npeer_memory_per_device_mib = 100").unwrap(),
            MemoryLimits::from_mib(1024, 100)
        );
        for bad in [
            "peer_memory_mib = 16",
            "peer_memory_per_device_mib = 8",
            "peer_memory_mib = 100\npeer_memory_per_device_mib = 64",
            "peer_memory_mib = 18446744073709551615",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains("out of range"), "{bad}: {err}");
        }
    }

    #[test]
    fn system_service_uses_systemd_directories() {
        let env = Env {
            state_directory: Some("/var/lib/lanshare".into()),
            runtime_directory: Some("/run/lanshare".into()),
            ..Env::default()
        };
        let c = Config::resolve(FileConfig::default(), &env).unwrap();
        assert_eq!(c.download_dir, Path::new("/var/lib/lanshare/incoming"));
        assert_eq!(c.socket, Path::new("/run/lanshare/share.sock"));

        // systemd/lanshare.service: StateDirectory=lanshare/state lanshare/incoming
        let env = Env {
            state_directory: Some("/var/lib/lanshare/state".into()),
            state_directory_downloads: Some("/var/lib/lanshare/incoming".into()),
            runtime_directory: Some("/run/lanshare".into()),
            ..Env::default()
        };
        let c = Config::resolve(FileConfig::default(), &env).unwrap();
        assert_eq!(c.state_dir, Path::new("/var/lib/lanshare/state"));
        assert_eq!(c.download_dir, Path::new("/var/lib/lanshare/incoming"));

        // systemd passes the entries in its own order.
        for value in [
            "/var/lib/lanshare/incoming:/var/lib/lanshare/state",
            "/var/lib/lanshare/state:/var/lib/lanshare/incoming",
        ] {
            let (state, downloads) = split_state_directory(Some(value.into()));
            assert_eq!(state.as_deref(), Some(Path::new("/var/lib/lanshare/state")));
            assert_eq!(
                downloads.as_deref(),
                Some(Path::new("/var/lib/lanshare/incoming"))
            );
        }
        let (state, downloads) = split_state_directory(Some("/var/lib/x".into()));
        assert_eq!(state.as_deref(), Some(Path::new("/var/lib/x")));
        assert_eq!(downloads, None);
    }

    #[test]
    fn localsend_is_off_unless_enabled_and_flags_win_per_key() {
        let off = Config::resolve(FileConfig::default(), &user_env()).unwrap();
        assert_eq!(off.localsend, None);
        let file: FileConfig =
            toml::from_str("[localsend]\nenabled = true\nport = 4000\npin = \"4711\"").unwrap();
        let flags = FileConfig {
            localsend: Some(LocalSendFile {
                port: Some(5000),
                ..LocalSendFile::default()
            }),
            ..FileConfig::default()
        };
        let on = Config::resolve(flags.or(file), &user_env()).unwrap();
        assert_eq!(
            on.localsend,
            Some(LocalSendConfig {
                port: 5000,
                multicast_port: 53317,
                pin: Some("4711".into()),
            })
        );
        let disabled: FileConfig = toml::from_str("[localsend]\nport = 4000").unwrap();
        assert_eq!(
            Config::resolve(disabled, &user_env()).unwrap().localsend,
            None
        );
        let bad: FileConfig = toml::from_str("[localsend]\nenabled = true\npin = \"\"").unwrap();
        assert!(Config::resolve(bad, &user_env()).is_err());
    }

    #[test]
    fn flags_override_file_and_bad_values_are_refused() {
        let file: FileConfig =
            toml::from_str("name = \"file\"\nport = 1\naccept = \"all\"").unwrap();
        let flags = FileConfig {
            name: Some("flag".into()),
            ..FileConfig::default()
        };
        let c = Config::resolve(flags.or(file), &user_env()).unwrap();
        assert_eq!(
            (c.name.as_str(), c.port, c.accept),
            ("flag", 1, AcceptPolicy::All)
        );

        assert!(toml::from_str::<FileConfig>("nmae = \"typo\"").is_err());
        assert!(toml::from_str::<FileConfig>("[localsend]\nenable = true").is_err());
        let both_off = FileConfig {
            quic: Some(false),
            tcp: Some(false),
            ..FileConfig::default()
        };
        assert!(Config::resolve(both_off, &user_env()).is_err());
    }
}
