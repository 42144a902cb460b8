//! Glue between mdns-sd and the peer table: the advertisement, event
//! conversion, and the worker task that drains the browse channel, sends
//! the periodic announcements and checks peers that went silent or that a
//! connection failed to reach (timing in [`liveness`](super::liveness)).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use mdns_sd::{DaemonEvent, Receiver, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::Advert;
use super::health::MdnsHealth;
use super::liveness::{
    Announcer, CHECK_TIMEOUT, CheckCause, Checks, REFUSED_CHECK_TIMEOUT, Silence,
};
use super::peers::{Applied, ApplyPolicy, BrowseEvent, IgnoreReason, PeerTable, ResolvedInstance};
use crate::identity::DeviceId;
use crate::safe_text::clean;

/// The DNS-SD service type.
pub(crate) const SERVICE_TYPE: &str = "_lanshare._udp.local.";

/// Protocol version announced in TXT `v`.
pub(crate) const PROTOCOL_VERSION: u16 = 1;

/// Instance used when the device name is empty after sanitising.
const DEFAULT_INSTANCE: &str = "lanshare";

/// A DNS label is at most 63 bytes.
const MAX_LABEL_BYTES: usize = 63;

/// A TXT string is at most 255 bytes, `name=` included.
const MAX_TXT_NAME_BYTES: usize = 255 - "name=".len();

/// Wait before trying again when a re-browse failed.
const REBROWSE_RETRY: Duration = Duration::from_secs(5);

/// After a re-browse, instances that mdns-sd did not replay within this long
/// are no longer in its cache and are dropped (reconciles any event lost while
/// switching receivers).
const SWEEP_GRACE: Duration = Duration::from_secs(3);

/// Host name: not the machine's (avahi owns that), unique per device.
pub(crate) fn host_name(id: &DeviceId) -> String {
    let canonical = id.to_canonical().to_ascii_lowercase();
    format!("lanshare-{}.local.", &canonical[..12])
}

/// The DNS-SD instance name for a device name: [cleaned](clean), at most
/// 63 bytes, never empty, and no `.` or `\` (replaced by `-`).
///
/// DNS-SD allows dots in instance labels and mdns-sd escapes them when
/// sending, but its decoder does not re-escape them, so a browser's follow-up
/// queries (verification, SRV/TXT resolution, cache refresh) for such an
/// instance are sent for a different name and never answered: the peer would
/// be dropped by every liveness check (measured). The full name is in TXT
/// `name` anyway.
pub(crate) fn instance_name(device_name: &str) -> String {
    let label: String = clean(device_name, MAX_LABEL_BYTES)
        .chars()
        .map(|c| if c == '.' || c == '\\' { '-' } else { c })
        .collect();
    if label.is_empty() {
        DEFAULT_INSTANCE.to_string()
    } else {
        label
    }
}

/// The TXT `name` value: the device name [cleaned](clean), cut to fit one
/// TXT string.
fn txt_name(device_name: &str) -> String {
    clean(device_name, MAX_TXT_NAME_BYTES)
}

/// Builds the advertisement with TXT `beat` (flipped by every periodic
/// announcement, see [`liveness`](super::liveness)). Addresses are left
/// empty and tracked automatically (`enable_addr_auto`).
pub(crate) fn service_info(advert: &Advert, beat: bool) -> Result<ServiceInfo, mdns_sd::Error> {
    let id = advert.id.to_canonical();
    let version = PROTOCOL_VERSION.to_string();
    let name = txt_name(&advert.name);
    let tcp = advert.tcp_port.map(|p| p.to_string());
    let mut txt: Vec<(&str, &str)> = vec![("id", &id), ("v", &version), ("name", &name)];
    if let Some(tcp) = &tcp {
        txt.push(("tcp", tcp));
    }
    txt.push(("beat", if beat { "1" } else { "0" }));
    Ok(ServiceInfo::new(
        SERVICE_TYPE,
        &instance_name(&advert.name),
        &host_name(&advert.id),
        "",
        advert.port,
        &txt[..],
    )?
    .enable_addr_auto())
}

/// Converts an mdns-sd resolution into the table's input type.
pub(crate) fn to_instance(service: &mdns_sd::ResolvedService) -> ResolvedInstance {
    let mut txt = BTreeMap::new();
    for prop in service.txt_properties.iter() {
        txt.entry(prop.key().to_ascii_lowercase())
            .or_insert_with(|| prop.val_str().to_string());
    }
    let mut addrs: Vec<_> = service
        .addresses
        .iter()
        .map(|scoped| match scoped {
            ScopedIp::V6(v6) => ((*v6.addr()).into(), v6.scope_id().index),
            other => (other.to_ip_addr(), 0),
        })
        .collect();
    addrs.sort();
    ResolvedInstance {
        fullname: service.fullname.clone(),
        txt,
        addrs,
        port: service.port,
    }
}

/// Names of the interfaces a resolution's addresses arrived on.
fn seen_on(service: &mdns_sd::ResolvedService) -> Vec<String> {
    let mut names: Vec<String> = service
        .addresses
        .iter()
        .flat_map(|scoped| match scoped {
            ScopedIp::V4(v4) => v4.interface_ids().iter().map(|i| i.name.clone()).collect(),
            ScopedIp::V6(v6) => vec![v6.scope_id().name.clone()],
            _ => Vec::new(),
        })
        .filter(|name| !name.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The interface name in a `DaemonEvent::Announce` detail
/// (`"<host>.local.:<interface>"`); `None` for other formats.
fn announced_interface(detail: &str) -> Option<&str> {
    let (host, interface) = detail.rsplit_once(':')?;
    (host.ends_with(".local.") && !interface.is_empty()).then_some(interface)
}

/// What woke the worker.
enum Wake {
    Cancelled,
    Event(Result<ServiceEvent, mdns_sd::RecvError>),
    Monitor(Result<DaemonEvent, mdns_sd::RecvError>),
    Announce,
    Suspects,
    Silence,
    Rebrowse,
    Sweep,
}

/// Drains the browse channel into the peer table and keeps it live.
pub(crate) struct Worker {
    daemon: ServiceDaemon,
    peers: PeerTable,
    /// Per-interface evidence for `share doctor`.
    health: MdnsHealth,
    policy: ApplyPolicy,
    cancel: CancellationToken,
    /// What we announce, rebuilt with a new `beat` for each announcement.
    advert: Advert,
    announcer: Announcer,
    /// When each peer is due for a check if it stays silent.
    silence: Silence,
    checks: Checks,
    /// The current browse receiver; `None` while a re-browse is pending.
    events: Option<Receiver<ServiceEvent>>,
    monitor: Option<Receiver<DaemonEvent>>,
    /// When to retry a re-browse that failed.
    rebrowse_at: Option<Instant>,
    /// Pending sweep after a re-browse: deadline and the instances replayed so far.
    sweep: Option<(Instant, HashSet<String>)>,
}

/// What the worker is given by [`Discovery::start`](super::Discovery::start).
pub(crate) struct WorkerSetup {
    pub(crate) daemon: ServiceDaemon,
    pub(crate) peers: PeerTable,
    pub(crate) health: MdnsHealth,
    pub(crate) policy: ApplyPolicy,
    pub(crate) cancel: CancellationToken,
    /// What was registered (with `beat` off) just now.
    pub(crate) advert: Advert,
    pub(crate) events: Receiver<ServiceEvent>,
    pub(crate) monitor: Option<Receiver<DaemonEvent>>,
}

impl Worker {
    pub(crate) fn new(setup: WorkerSetup) -> Self {
        Self {
            daemon: setup.daemon,
            peers: setup.peers,
            health: setup.health,
            policy: setup.policy,
            cancel: setup.cancel,
            advert: setup.advert,
            announcer: Announcer::new(Instant::now(), fastrand::f64()),
            silence: Silence::default(),
            checks: Checks::default(),
            events: Some(setup.events),
            monitor: setup.monitor,
            rebrowse_at: None,
            sweep: None,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            let wake = {
                let sweep_at = self.sweep.as_ref().map(|(at, _)| *at);
                tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => Wake::Cancelled,
                    event = recv_opt(self.events.as_ref()) => Wake::Event(event),
                    event = recv_opt(self.monitor.as_ref()) => Wake::Monitor(event),
                    () = self.peers.suspected() => Wake::Suspects,
                    () = tokio::time::sleep_until(self.announcer.due()) => Wake::Announce,
                    () = sleep_opt(self.silence.next_due()) => Wake::Silence,
                    () = sleep_opt(self.rebrowse_at) => Wake::Rebrowse,
                    () = sleep_opt(sweep_at) => Wake::Sweep,
                }
            };
            match wake {
                Wake::Cancelled => break,
                Wake::Event(Ok(event)) => self.on_event(event),
                Wake::Event(Err(_)) => {
                    // mdns-sd drops receivers that fall behind, and closes all
                    // of them on shutdown.
                    if self.cancel.is_cancelled() {
                        break;
                    }
                    warn!("mDNS browse channel closed unexpectedly; browsing again");
                    self.events = None;
                    if !self.rebrowse() {
                        break;
                    }
                }
                Wake::Monitor(Ok(event)) => on_daemon_event(event, &self.health),
                Wake::Monitor(Err(_)) => self.monitor = None,
                Wake::Suspects => self.check_suspects(),
                Wake::Silence => {
                    for fullname in self.silence.overdue(Instant::now(), fastrand::f64) {
                        self.check(&fullname, CheckCause::Silence);
                    }
                }
                Wake::Announce => self.announce(),
                Wake::Rebrowse => {
                    self.rebrowse_at = None;
                    if !self.rebrowse() {
                        break;
                    }
                }
                Wake::Sweep => self.on_sweep(),
            }
        }
        debug!("mDNS worker stopped");
    }

    fn on_event(&mut self, event: ServiceEvent) {
        match event {
            ServiceEvent::ServiceResolved(service) => {
                if service.ty_domain != SERVICE_TYPE {
                    return;
                }
                let instance = to_instance(&service);
                trace!(fullname = %instance.fullname, addrs = ?instance.addrs, "mDNS resolved");
                if let Some((_, replayed)) = &mut self.sweep {
                    replayed.insert(instance.fullname.to_lowercase());
                }
                let now = SystemTime::now();
                let interfaces = seen_on(&service);
                let outcome = self
                    .peers
                    .apply(&self.policy, BrowseEvent::Resolved(instance), now);
                match outcome {
                    Applied::Ignored(IgnoreReason::OwnId) => {
                        trace!(?interfaces, "own announcement received");
                        self.health.own_seen(&interfaces, now);
                    }
                    Applied::PeerAdded(id) | Applied::PeerUpdated(id) | Applied::Unchanged(id) => {
                        self.health.peer_seen(id, &interfaces, now);
                        self.silence
                            .heard(&service.fullname, Instant::now(), fastrand::f64());
                    }
                    Applied::InstanceRemoved(_) | Applied::PeerRemoved(_) => {
                        self.silence.forget(&service.fullname);
                    }
                    Applied::Ignored(_) => {}
                }
                match outcome {
                    Applied::PeerAdded(id) => {
                        if let Some(peer) = self.peers.get(&id) {
                            info!(peer = %peer.name, id = %id.short(), addrs = ?peer.addrs, "peer discovered");
                        }
                    }
                    Applied::PeerUpdated(id) => {
                        if let Some(peer) = self.peers.get(&id) {
                            debug!(peer = %peer.name, id = %id.short(), addrs = ?peer.addrs, "peer updated");
                        }
                    }
                    Applied::Unchanged(_) => {}
                    Applied::Ignored(reason) => {
                        debug!(fullname = %service.fullname, ?reason, "ignoring mDNS record");
                    }
                    Applied::InstanceRemoved(id) | Applied::PeerRemoved(id) => {
                        debug!(id = %id.short(), fullname = %service.fullname, "mDNS instance no longer usable");
                    }
                }
            }
            ServiceEvent::ServiceRemoved(ty, fullname) => {
                if ty != SERVICE_TYPE {
                    return;
                }
                let why = match self.checks.checking(&fullname, Instant::now()) {
                    Some(CheckCause::FailedConnection) => {
                        "no answer to a check after a failed connection"
                    }
                    Some(CheckCause::Refused) => {
                        "no answer to a check after its addresses refused a connection"
                    }
                    Some(CheckCause::Silence) => "not heard for over 80 s, no answer to a check",
                    None => "goodbye, or its records expired",
                };
                self.remove(fullname, why);
            }
            ServiceEvent::SearchStopped(ty) => {
                if ty == SERVICE_TYPE && !self.cancel.is_cancelled() {
                    warn!("mDNS browse stopped unexpectedly; browsing again");
                    self.rebrowse();
                }
            }
            other => trace!(?other, "mDNS event"),
        }
    }

    /// Applies a removal.
    fn remove(&mut self, fullname: String, why: &str) {
        self.silence.forget(&fullname);
        let outcome = self.peers.apply(
            &self.policy,
            BrowseEvent::Removed(fullname.clone()),
            SystemTime::now(),
        );
        match outcome {
            Applied::PeerRemoved(id) => {
                info!(id = %id.short(), %fullname, "peer gone ({why})");
            }
            Applied::InstanceRemoved(id) => {
                debug!(id = %id.short(), %fullname, "peer instance gone ({why})");
            }
            _ => trace!(%fullname, "removal of unknown mDNS instance"),
        }
    }

    /// Re-announces our service with the TXT `beat` flipped (see
    /// [`liveness`](super::liveness)). Registering the service again makes
    /// mdns-sd announce it at once and 1 s later; it probes only records it
    /// has not probed before (the second `beat` value, once).
    fn announce(&mut self) {
        let beat = self.announcer.announced(Instant::now(), fastrand::f64());
        match service_info(&self.advert, beat) {
            Ok(info) => match self.daemon.register(info) {
                Ok(()) => trace!(beat, "mDNS periodic announcement"),
                Err(e) => debug!(error = %e, "mDNS periodic announcement not sent"),
            },
            // Built the same way as the registration that succeeded.
            Err(e) => warn!(error = %e, "cannot rebuild the mDNS advertisement"),
        }
    }

    /// Checks the peers a connection failed to reach.
    fn check_suspects(&mut self) {
        for (id, cause) in self.peers.take_suspects() {
            for fullname in self.peers.mdns_fullnames_of(&id) {
                self.check(&fullname, cause);
            }
        }
    }

    /// Checks whether a peer instance is still there (RFC 6762 §10.4):
    /// mdns-sd queries its SRV, A and AAAA records twice and, if nothing
    /// answers within [`CHECK_TIMEOUT`], flushes them and reports the
    /// instance removed. At most one check per instance per
    /// [`CHECK_INTERVAL`](super::liveness::CHECK_INTERVAL).
    fn check(&mut self, fullname: &str, cause: CheckCause) {
        if !verifiable(fullname) {
            // See `instance_name`: queries for it would go unanswered.
            trace!(%fullname, "not checking an instance whose label contains '.' or '\\'");
            return;
        }
        if !self.checks.admit(fullname, Instant::now(), cause) {
            return;
        }
        let timeout = match cause {
            CheckCause::Refused => REFUSED_CHECK_TIMEOUT,
            CheckCause::Silence | CheckCause::FailedConnection => CHECK_TIMEOUT,
        };
        match self.daemon.verify(fullname.to_owned(), timeout) {
            Ok(()) => debug!(%fullname, ?cause, "checking whether the peer is still there"),
            Err(e) => debug!(%fullname, error = %e, "mDNS check not queued"),
        }
    }

    /// Starts a fresh browse (mdns-sd replaces the previous listener), drains
    /// what the old receiver already holds, and schedules a sweep. Returns
    /// false if the daemon is gone.
    fn rebrowse(&mut self) -> bool {
        match self.daemon.browse(SERVICE_TYPE) {
            Ok(events) => {
                // Older events first, then the replay.
                self.sweep = None;
                if let Some(old) = self.events.replace(events) {
                    while let Ok(event) = old.try_recv() {
                        // Never recurse into another re-browse from here.
                        if !matches!(event, ServiceEvent::SearchStopped(_)) {
                            self.on_event(event);
                        }
                    }
                }
                self.sweep = Some((Instant::now() + SWEEP_GRACE, HashSet::new()));
                trace!("mDNS browse restarted");
                true
            }
            Err(mdns_sd::Error::DaemonShutdown) => false,
            Err(e) => {
                debug!(error = %e, "mDNS re-browse failed; will retry");
                self.rebrowse_at = Some(Instant::now() + REBROWSE_RETRY);
                true
            }
        }
    }

    /// Drops instances that mdns-sd did not replay after a re-browse.
    fn on_sweep(&mut self) {
        let Some((_, replayed)) = self.sweep.take() else {
            return;
        };
        for fullname in self.peers.mdns_fullnames() {
            if !replayed.contains(&fullname.to_lowercase()) {
                self.remove(fullname, "no longer in the mDNS cache");
            }
        }
    }
}

/// Whether mdns-sd can query this instance by name: its label must not
/// contain `.` or `\` (mdns-sd decodes names without re-escaping).
fn verifiable(fullname: &str) -> bool {
    let lower = fullname.to_ascii_lowercase();
    match lower.strip_suffix(SERVICE_TYPE) {
        Some(label) => label
            .strip_suffix('.')
            .is_some_and(|label| !label.is_empty() && !label.contains(['.', '\\'])),
        None => false,
    }
}

fn on_daemon_event(event: DaemonEvent, health: &MdnsHealth) {
    match event {
        DaemonEvent::Error(e) => {
            warn!(
                error = %e,
                "mDNS error; discovery may not work (check that UDP port 5353 is usable, or use --no-mdns and HOST:PORT addressing)"
            );
            health.error(e.to_string());
        }
        DaemonEvent::Announce(fullname, detail) => {
            debug!(%fullname, %detail, "mDNS announced");
            if let Some(interface) = announced_interface(&detail) {
                health.announced(interface, SystemTime::now());
            }
        }
        DaemonEvent::NameChange(change) => info!(
            original = %change.original,
            new = %change.new_name,
            interface = %change.intf_name,
            "mDNS name conflict resolved by renaming"
        ),
        DaemonEvent::IpAdd(ip) => debug!(%ip, "mDNS: interface address added"),
        DaemonEvent::IpDel(ip) => debug!(%ip, "mDNS: interface address removed"),
        other => trace!(?other, "mDNS daemon event"),
    }
}

async fn recv_opt<T>(rx: Option<&Receiver<T>>) -> Result<T, mdns_sd::RecvError> {
    match rx {
        Some(rx) => rx.recv_async().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_dns_safe() {
        assert_eq!(instance_name("Bob's laptop"), "Bob's laptop");
        assert_eq!(instance_name(""), "lanshare");
        assert_eq!(instance_name(" \t\n"), "lanshare");
        assert_eq!(instance_name("a\u{7}b\u{1b}c"), "abc");
        assert_eq!(instance_name("my.box\\x"), "my-box-x");
        let long = "ü".repeat(40); // 80 bytes
        let name = instance_name(&long);
        assert!(name.len() <= 63);
        assert_eq!(name, "ü".repeat(31));
        assert_eq!(instance_name(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn only_plain_labels_are_verified() {
        assert!(verifiable("laptop (2)._lanshare._udp.local."));
        assert!(verifiable("Laptop._LANSHARE._udp.local."));
        assert!(!verifiable("my.box._lanshare._udp.local."));
        assert!(!verifiable("a\\b._lanshare._udp.local."));
        assert!(!verifiable("x._other._udp.local."));
        assert!(!verifiable("._lanshare._udp.local."));
    }

    #[test]
    fn announce_detail_names_the_interface() {
        assert_eq!(
            announced_interface("lanshare-abcdefabcdef.local.:eth0"),
            Some("eth0")
        );
        assert_eq!(announced_interface("[10.0.0.1, fe80::1]"), None);
        assert_eq!(announced_interface("x.local.:"), None);
    }

    #[test]
    fn host_name_uses_id_prefix() {
        let id = DeviceId::from_cert_der(b"abc");
        let host = host_name(&id);
        assert_eq!(
            host,
            format!(
                "lanshare-{}.local.",
                &id.to_canonical()[..12].to_lowercase()
            )
        );
        assert_eq!(host.len(), "lanshare-".len() + 12 + ".local.".len());
    }

    #[test]
    fn advertisement_has_expected_txt() {
        let id = DeviceId::from_cert_der(b"abc");
        let advert = Advert {
            name: "my.box".into(),
            id,
            port: 47000,
            tcp_port: Some(47001),
        };
        let info = service_info(&advert, false).unwrap();
        assert_eq!(info.get_type(), SERVICE_TYPE);
        assert_eq!(info.get_fullname(), "my-box._lanshare._udp.local.");
        assert_eq!(info.get_hostname(), host_name(&id));
        assert_eq!(info.get_port(), 47000);
        assert!(info.is_addr_auto());
        assert_eq!(
            info.get_property_val_str("id"),
            Some(id.to_canonical().as_str())
        );
        assert_eq!(info.get_property_val_str("v"), Some("1"));
        assert_eq!(info.get_property_val_str("name"), Some("my.box"));
        assert_eq!(info.get_property_val_str("tcp"), Some("47001"));
        assert_eq!(info.get_property_val_str("beat"), Some("0"));

        let no_tcp = Advert {
            tcp_port: None,
            name: "x".repeat(400),
            ..advert
        };
        let info = service_info(&no_tcp, true).unwrap();
        assert!(info.get_property("tcp").is_none());
        assert_eq!(info.get_property_val_str("beat"), Some("1"));
        assert_eq!(info.get_property_val_str("name").map(str::len), Some(250));
    }

    #[test]
    fn converts_resolved_service() {
        let id = DeviceId::from_cert_der(b"abc");
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            "box",
            &host_name(&id),
            "10.1.2.3",
            47000,
            &[
                ("ID", id.to_canonical().as_str()),
                ("v", "1"),
                ("id", "second"),
            ][..],
        )
        .unwrap();
        let resolved = info.as_resolved_service();
        let instance = to_instance(&resolved);
        assert_eq!(instance.fullname, "box._lanshare._udp.local.");
        assert_eq!(instance.port, 47000);
        assert_eq!(instance.txt.get("id"), Some(&id.to_canonical()));
        assert_eq!(instance.addrs, vec![("10.1.2.3".parse().unwrap(), 0)]);
    }
}
