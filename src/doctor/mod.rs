//! `share doctor`: the daemon's half of the checks.
//!
//! Every check turns evidence the daemon already has — its identity, the
//! interface policy, what mDNS saw on each interface
//! ([`crate::discovery::MdnsHealth`]), the peer table, the socket buffer
//! sizes it got, the download directory — into one verdict and one
//! sentence of advice. With a peer, [`probe`] measures reachability
//! in both directions over both transports, so "UDP blocked, TCP works"
//! and "it can reach me but I cannot reach it" are named as such instead
//! of "the transfer was slow" or "it failed".
//!
//! The wording matters more than the mechanics: each message says what was
//! observed, and each fix is a command or a concrete setting.

pub mod probe;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::discovery::{InterfaceInfo, MdnsHealth, PeerSource, PeerTable, interfaces};
use crate::identity::DeviceId;
use crate::localsend::LocalSend;
use crate::peers::{Connector, Resolver};
use crate::protocol::HumanBytes;
use crate::transfer::kept::KeptPartials;
use crate::transport::UDP_BUFFER_SIZE;
use probe::Probes;
use report::{Check, DoctorReport, Reach, Verdict, check_download_dir, check_partial_data};
pub use report::{ReadOnly, SharedDownloads};

/// How long after start mDNS gets before a silent interface counts.
const MDNS_SETTLE: Duration = Duration::from_secs(3);

/// What to allow for mDNS, in one sentence.
const ALLOW_MDNS: &str = "allow mDNS (UDP port 5353, multicast 224.0.0.251 / ff02::fb) in and out: \
     `sudo firewall-cmd --add-service=mdns --permanent && sudo firewall-cmd --reload` or `sudo ufw allow 5353/udp`";

/// What the daemon knows about itself, for the checks.
#[derive(Debug, Clone)]
pub struct Facts {
    /// This device's name.
    pub name: String,
    /// This device's ID.
    pub id: DeviceId,
    /// The service port.
    pub port: u16,
    /// QUIC accepts connections.
    pub quic: bool,
    /// TCP accepts connections.
    pub tcp: bool,
    /// mDNS discovery is on.
    pub mdns: bool,
    /// The interfaces mDNS was limited to (`--interface`), if any.
    pub interfaces: Vec<String>,
    /// The control socket.
    pub socket: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The download directory.
    pub download_dir: PathBuf,
    /// When the daemon started.
    pub started: Instant,
    /// What mDNS saw per interface (`None`: off or failed to start).
    pub mdns_health: Option<MdnsHealth>,
    /// The kernel clamped the QUIC socket buffers.
    pub buffer_warning: Option<String>,
    /// A peer found only by unicast counts as answering if it did within
    /// this long (twice the remembered peers' probe interval).
    pub unicast_fresh: Duration,
    /// The partial data of interrupted incoming transfers.
    pub kept: KeptPartials,
}

/// `share doctor`: the daemon's checks, and the reachability probes in
/// both directions.
pub struct Doctor {
    facts: Facts,
    peers: PeerTable,
    connector: Arc<Connector>,
    resolver: Resolver,
    probes: Probes,
    /// The LocalSend service, when it is on.
    localsend: Option<Arc<LocalSend>>,
}

/// The host's interfaces and what discovery does with each (also shown
/// by `share status`).
pub fn interface_report(only: &[String], mdns: bool) -> Vec<InterfaceInfo> {
    let policy = interfaces::InterfacePolicy {
        only: only.to_vec(),
        allow_loopback: false,
    };
    let mut list = interfaces::report(&policy);
    if !mdns {
        for intf in &mut list {
            intf.used = false;
            intf.reason = Some("mDNS is off (--no-mdns)".into());
        }
    }
    list
}

impl Doctor {
    /// The doctor of a daemon described by `facts`.
    pub fn new(
        facts: Facts,
        peers: PeerTable,
        connector: Arc<Connector>,
        resolver: Resolver,
    ) -> Self {
        Self {
            facts,
            peers,
            connector,
            resolver,
            probes: Probes::default(),
            localsend: None,
        }
    }

    /// Also checks the LocalSend service.
    #[must_use]
    pub fn with_localsend(mut self, localsend: Arc<LocalSend>) -> Self {
        self.localsend = Some(localsend);
        self
    }

    /// Runs every check (and, with `peer`, the reachability probe).
    pub async fn run(&self, peer: Option<&str>) -> DoctorReport {
        let mut checks = vec![
            self.check_daemon(),
            self.check_identity(),
            self.check_listening(),
        ];
        let interfaces = self.interface_report();
        checks.push(self.check_interfaces(&interfaces));
        checks.extend(self.check_multicast(&interfaces));
        checks.push(self.check_discovery());
        let mut reach = None;
        if let Some(peer) = peer {
            let measured = self.reach(peer).await;
            checks.extend(self.check_reach(&measured));
            reach = Some(measured);
        }
        checks.push(self.check_localsend());
        checks.push(self.check_buffers());
        checks.push(check_download_dir(&self.facts.download_dir));
        checks.push(check_partial_data(&self.facts.kept.summary()));
        let mut report = DoctorReport {
            ok: false,
            checks,
            reach,
        };
        report.settle();
        report
    }

    fn interface_report(&self) -> Vec<InterfaceInfo> {
        interface_report(&self.facts.interfaces, self.facts.mdns)
    }

    fn check_daemon(&self) -> Check {
        Check::new(
            "daemon",
            Verdict::Ok,
            format!(
                "running for {} s at {} (lanshare {}, protocol {})",
                self.facts.started.elapsed().as_secs(),
                self.facts.socket.display(),
                env!("CARGO_PKG_VERSION"),
                crate::protocol::VERSION
            ),
        )
    }

    fn check_identity(&self) -> Check {
        Check::new(
            "identity",
            Verdict::Ok,
            format!(
                "\"{}\" with device ID {} (kept in {})",
                self.facts.name,
                self.facts.id,
                self.facts.state_dir.display()
            ),
        )
    }

    fn check_listening(&self) -> Check {
        let mut what = Vec::new();
        if self.facts.quic {
            what.push(format!("UDP {} (QUIC)", self.facts.port));
        }
        if self.facts.tcp {
            what.push(format!("TCP {} (fallback)", self.facts.port));
        }
        let check = Check::new(
            "listening",
            Verdict::Ok,
            format!("accepting connections on {}", what.join(" and ")),
        );
        if self.facts.quic && self.facts.tcp {
            check
        } else {
            Check {
                verdict: Verdict::Warn,
                ..check
            }
            .fix("run with both QUIC and TCP (drop --no-quic / --no-tcp) so peers can use either")
        }
    }

    /// Whether LocalSend apps can reach this device, and how to let them.
    fn check_localsend(&self) -> Check {
        const OPEN: &str = "open TCP and UDP 53317 (or the ports you set): \
            `sudo firewall-cmd --permanent --add-service=lanshare-localsend && sudo firewall-cmd --reload` \
            or `sudo ufw allow lanshare-localsend`";
        let Some(ls) = &self.localsend else {
            return Check::new(
                "localsend",
                Verdict::Ok,
                "off: LocalSend apps (phones, laptops) neither see this device nor can send to it",
            )
            .fix(format!(
                "to talk to them, run `share daemon --localsend` (or set `[localsend] enabled = true`) and {OPEN}"
            ));
        };
        let devices = ls.devices().list().len();
        let message = format!(
            "HTTPS on TCP {}, fingerprint {}, {devices} LocalSend device{} found",
            ls.port(),
            ls.fingerprint().to_hex(),
            if devices == 1 { "" } else { "s" }
        );
        match ls.multicast_warning() {
            Some(warning) => {
                Check::new("localsend", Verdict::Warn, format!("{message}; {warning}"))
                    .fix(format!("free UDP 53317 for discovery and {OPEN}"))
            }
            None if !self.facts.mdns => Check::new(
                "localsend",
                Verdict::Warn,
                format!(
                    "{message}; discovery is off (--no-mdns), so phones do not see this device"
                ),
            )
            .fix(format!("run without --no-mdns, and {OPEN}")),
            None => Check::new("localsend", Verdict::Ok, message)
                .fix(format!("if phones do not list this device, {OPEN}")),
        }
    }

    fn check_interfaces(&self, list: &[InterfaceInfo]) -> Check {
        let ignored: Vec<String> = list
            .iter()
            .filter(|i| !i.used)
            .map(|i| format!("{} ({})", i.name, i.reason.as_deref().unwrap_or("ignored")))
            .collect();
        let ignored_text = if ignored.is_empty() {
            String::new()
        } else {
            format!("; ignores {}", ignored.join(", "))
        };
        if !self.facts.mdns {
            return Check::new(
                "interfaces",
                Verdict::Warn,
                "mDNS is off (--no-mdns): no interface is used for discovery",
            )
            .fix("peers must be added with `share peers add HOST:PORT`, or run the daemon without --no-mdns");
        }
        if self.facts.mdns_health.is_none() {
            return Check::new(
                "interfaces",
                Verdict::Fail,
                format!("mDNS could not start{ignored_text}"),
            )
            .fix("see the warning in `share status`; check that UDP port 5353 is free, or add peers with `share peers add HOST:PORT`");
        }
        let used: Vec<String> = list
            .iter()
            .filter(|i| i.used)
            .map(|i| format!("{} ({})", i.name, i.addresses.join(", ")))
            .collect();
        if used.is_empty() {
            let fix = if self.facts.interfaces.is_empty() {
                "connect to a network, or choose an interface with `share daemon --interface NAME`"
                    .to_owned()
            } else {
                format!(
                    "none of the selected interfaces ({}) is up with an address; check the names with `ip link`",
                    self.facts.interfaces.join(", ")
                )
            };
            return Check::new(
                "interfaces",
                Verdict::Fail,
                format!("no interface is usable for discovery{ignored_text}"),
            )
            .fix(fix);
        }
        Check::new(
            "interfaces",
            Verdict::Ok,
            format!("discovery uses {}{ignored_text}", used.join(", ")),
        )
    }

    /// One check per interface discovery uses: did our own announcement
    /// come back, and did peers answer?
    fn check_multicast(&self, list: &[InterfaceInfo]) -> Vec<Check> {
        let Some(health) = &self.facts.mdns_health else {
            return Vec::new();
        };
        let evidence = health.interfaces();
        let settling = self.facts.started.elapsed() < MDNS_SETTLE;
        let mdns_peers: Vec<_> = self
            .peers
            .list()
            .into_iter()
            .filter(|p| p.source == PeerSource::Mdns)
            .collect();
        let mut checks = Vec::new();
        for intf in list.iter().filter(|i| i.used) {
            let name = format!("multicast {}", intf.name);
            let seen = evidence.get(&intf.name);
            let answering: Vec<String> = mdns_peers
                .iter()
                .filter(|p| seen.is_some_and(|e| e.peers.iter().any(|(id, _)| *id == p.id)))
                .map(|p| p.name.to_string())
                .collect();
            let own = seen.and_then(|e| e.own_seen);
            let check = match own {
                None if settling => Check::new(
                    name,
                    Verdict::Warn,
                    "the daemon started a moment ago; mDNS has not settled yet",
                )
                .fix("run `share doctor` again in a few seconds"),
                None if answering.is_empty() => Check::new(
                    name,
                    Verdict::Fail,
                    format!(
                        "discovery is blocked: this device's own mDNS announcement never came back on {}, so multicast (UDP 5353) is blocked on this device",
                        intf.name
                    ),
                )
                .fix(format!(
                    "{ALLOW_MDNS}; meanwhile add peers by address with `share peers add HOST:PORT`"
                )),
                _ if !answering.is_empty() => Check::new(
                    name,
                    Verdict::Ok,
                    format!(
                        "mDNS sends and receives; {} ({})",
                        if answering.len() == 1 {
                            "1 peer answers".to_owned()
                        } else {
                            format!("{} peers answer", answering.len())
                        },
                        answering.join(", ")
                    ),
                ),
                _ => Check::new(
                    name,
                    Verdict::Warn,
                    format!(
                        "mDNS works on this device (its own announcement comes back on {}), but no other lanshare device answers there",
                        intf.name
                    ),
                )
                .fix(
                    "if another device runs lanshare on this network, multicast is filtered between you \
                     (Wi-Fi client isolation, IGMP snooping, a firewall on the path): add it with `share peers add HOST:PORT`",
                ),
            };
            checks.push(check);
        }
        if let Some(error) = health.errors().last() {
            checks.push(
                Check::new(
                    "mdns errors",
                    Verdict::Warn,
                    format!("mDNS reported: {error}"),
                )
                .fix(format!(
                    "{ALLOW_MDNS}; see `journalctl` or the daemon log for details"
                )),
            );
        }
        checks
    }

    /// Is discovery finding anyone, and are there peers only unicast finds?
    fn check_discovery(&self) -> Check {
        let peers = self.peers.list();
        let by_mdns = peers
            .iter()
            .filter(|p| p.source == PeerSource::Mdns)
            .count();
        let unicast_only: Vec<String> = peers
            .iter()
            .filter(|p| p.source != PeerSource::Mdns)
            .filter(|p| {
                // Only ones that answered recently prove the path works.
                SystemTime::now()
                    .duration_since(p.last_seen)
                    .is_ok_and(|age| age < self.facts.unicast_fresh)
            })
            .map(|p| p.name.to_string())
            .collect();
        if !self.facts.mdns {
            return Check::new(
                "discovery",
                Verdict::Warn,
                format!("mDNS is off; {} peer(s) known by address", peers.len()),
            )
            .fix("add peers with `share peers add HOST:PORT`");
        }
        if !unicast_only.is_empty() {
            return Check::new(
                "discovery",
                Verdict::Fail,
                format!(
                    "discovery is not working: {} answer{} by unicast but mDNS does not see {}",
                    unicast_only.join(", "),
                    if unicast_only.len() == 1 { "s" } else { "" },
                    if unicast_only.len() == 1 { "it" } else { "them" }
                ),
            )
            .fix(format!(
                "multicast is blocked between the devices: {ALLOW_MDNS}, or check the Wi-Fi access point for client isolation; \
                 meanwhile they stay usable as remembered or manual peers, and others can be added with `share peers add HOST:PORT`"
            ));
        }
        if by_mdns == 0 {
            return Check::new(
                "discovery",
                Verdict::Warn,
                "no other lanshare device found over mDNS",
            )
            .fix(
                "start lanshare on another device on this network; if one is running, multicast is blocked between you: \
                 add it with `share peers add HOST:PORT` and run `share doctor HOST:PORT`",
            );
        }
        Check::new(
            "discovery",
            Verdict::Ok,
            format!("{by_mdns} peer(s) found over mDNS"),
        )
    }

    /// The `reach` and per-peer discovery checks from a measurement.
    fn check_reach(&self, r: &Reach) -> Vec<Check> {
        let who = r
            .name
            .as_ref()
            .map_or_else(|| r.peer.clone(), ToString::to_string);
        let name = format!("reach {}", r.peer);
        let port = self.facts.port;
        let errors = if r.errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.errors.join("; "))
        };
        if let Some(why) = &r.unresolved {
            // Not a network problem: no port to open, nothing to connect.
            return vec![Check::new(name, Verdict::Fail, why.clone())];
        }
        let Some(_) = r.id else {
            return vec![Check::new(
                name,
                Verdict::Fail,
                format!("cannot connect to {} over UDP or TCP{errors}", r.peer),
            )
            .fix("check that lanshare runs there (`share status` on that device) and that its service port is open for UDP and TCP; run `share doctor` there too")];
        };
        let out_ok = r.udp_out == Some(true) || r.tcp_out == Some(true);
        let in_tested = r.udp_in.is_some() || r.tcp_in.is_some();
        let in_ok = r.udp_in == Some(true) || r.tcp_in == Some(true);
        let works = |v: Option<bool>| v != Some(false);
        let udp_ok =
            works(r.udp_out) && works(r.udp_in) && (r.udp_out.is_some() || r.udp_in.is_some());
        let tcp_ok =
            works(r.tcp_out) && works(r.tcp_in) && (r.tcp_out.is_some() || r.tcp_in.is_some());
        let blocked =
            |out: Option<bool>, inn: Option<bool>| match (out == Some(false), inn == Some(false)) {
                (true, true) => "in both directions".to_owned(),
                (true, false) => format!("from this device to {who}"),
                (false, true) => format!("from {who} to this device"),
                (false, false) => "not tested".to_owned(),
            };
        let firewall_here = format!(
            "open port {port} on this device (`sudo firewall-cmd --add-port={port}/udp --add-port={port}/tcp` or `sudo ufw allow {port}`)"
        );
        let mut checks = Vec::new();
        let check = if out_ok && in_tested && !in_ok {
            Check::new(
                name,
                Verdict::Fail,
                format!(
                    "asymmetric: this device reaches {who}, but {who} cannot connect back over UDP or TCP port {port}, so {who} cannot send here"
                ),
            )
            .fix(firewall_here)
        } else if !in_tested {
            Check::new(
                name,
                Verdict::Warn,
                format!(
                    "this device reaches {who} (UDP: {}, TCP: {}), but the connect-back test did not run{errors}",
                    yes_no(r.udp_out),
                    yes_no(r.tcp_out)
                ),
            )
            .fix("run `share doctor` again in a few seconds, or `share doctor` on that device")
        } else if udp_ok && tcp_ok {
            Check::new(
                name,
                Verdict::Ok,
                format!("UDP (QUIC) and TCP work in both directions between this device and {who}"),
            )
        } else if tcp_ok && !udp_ok {
            Check::new(
                name,
                Verdict::Fail,
                format!(
                    "UDP blocked, TCP works: QUIC to port {port} is blocked {}; transfers fall back to TCP",
                    blocked(r.udp_out, r.udp_in)
                ),
            )
            .fix(format!(
                "allow UDP on the service port on both devices (here: `sudo firewall-cmd --add-port={port}/udp` or `sudo ufw allow {port}/udp`), \
                 and check routers or VPNs on the path that drop UDP"
            ))
        } else if udp_ok && !tcp_ok {
            Check::new(
                name,
                Verdict::Warn,
                format!(
                    "TCP blocked, UDP works: QUIC transfers work, but the TCP fallback is blocked {}",
                    blocked(r.tcp_out, r.tcp_in)
                ),
            )
            .fix(format!(
                "allow TCP on the service port on both devices (here: `sudo firewall-cmd --add-port={port}/tcp` or `sudo ufw allow {port}/tcp`)"
            ))
        } else if in_ok && !out_ok {
            Check::new(
                name,
                Verdict::Fail,
                format!(
                    "asymmetric: {who} can connect here, but this device cannot reach {who}{errors}"
                ),
            )
            .fix("open the service port (UDP and TCP) on that device's firewall")
        } else {
            Check::new(
                name,
                Verdict::Fail,
                format!(
                    "partly blocked: UDP {}, TCP {}{errors}",
                    if udp_ok {
                        "works".to_owned()
                    } else {
                        format!("blocked {}", blocked(r.udp_out, r.udp_in))
                    },
                    if tcp_ok {
                        "works".to_owned()
                    } else {
                        format!("blocked {}", blocked(r.tcp_out, r.tcp_in))
                    },
                ),
            )
            .fix(firewall_here)
        };
        checks.push(check);
        if self.facts.mdns {
            let where_ = r.address.clone().unwrap_or_else(|| r.peer.clone());
            checks.push(if r.mdns {
                Check::new(
                    format!("discovery {}", r.peer),
                    Verdict::Ok,
                    format!("mDNS sees {who}"),
                )
            } else {
                Check::new(
                    format!("discovery {}", r.peer),
                    Verdict::Fail,
                    format!(
                        "discovery is not working between the devices: {who} answers at {where_} but mDNS does not see it (multicast is blocked on the path)"
                    ),
                )
                .fix(format!(
                    "`share peers add {where_}` keeps it usable by name without mDNS; to fix discovery, {ALLOW_MDNS} on both devices and check the Wi-Fi access point for client isolation"
                ))
            });
        }
        checks
    }

    fn check_buffers(&self) -> Check {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let (rmem, wmem) = (read("rmem_max"), read("wmem_max"));
        let show =
            |v: Option<u64>| v.map_or_else(|| "unknown".to_owned(), |v| HumanBytes(v).to_string());
        let limits = format!("net.core.rmem_max {}, wmem_max {}", show(rmem), show(wmem));
        let fix = "sudo sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000 \
                   (the lanshare package installs this as /usr/lib/sysctl.d/60-lanshare.conf)";
        if let Some(warning) = &self.facts.buffer_warning {
            return Check::new(
                "udp buffers",
                Verdict::Warn,
                format!("{warning} ({limits})"),
            )
            .fix(fix);
        }
        let wanted = UDP_BUFFER_SIZE as u64;
        if rmem.is_some_and(|v| v < wanted) || wmem.is_some_and(|v| v < wanted) {
            return Check::new(
                "udp buffers",
                Verdict::Warn,
                format!("{limits}: below the {} QUIC asks for", HumanBytes(wanted)),
            )
            .fix(fix);
        }
        Check::new(
            "udp buffers",
            Verdict::Ok,
            format!(
                "the QUIC socket got its {} buffers ({limits})",
                HumanBytes(wanted)
            ),
        )
    }
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not tested",
    }
}
