//! The live peer table and the pure logic that folds mDNS browse events into it.
//!
//! Everything here is synchronous and free of I/O so it can be unit-tested
//! without starting an mDNS daemon; `mdns.rs` converts mdns-sd events into
//! [`BrowseEvent`]s and calls [`PeerTable::apply`].

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use tokio::sync::{Notify, watch};

use super::SERVICE_TYPE;
use super::liveness::CheckCause;
use crate::identity::DeviceId;
use crate::safe_text::PeerName;

/// Where a peer entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerSource {
    /// Discovered via mDNS / DNS-SD.
    Mdns,
    /// Added by hand (`share peers add HOST:PORT`).
    Manual,
    /// A trusted device mDNS does not see (any more), found again at its
    /// last known address by a unicast probe.
    Remembered,
    /// A LocalSend app, found by LocalSend's discovery (its announcement
    /// or its `register`; see [`crate::localsend`]).
    #[serde(rename = "localsend")]
    LocalSend,
}

impl PeerSource {
    /// The lower-case name (as in JSON), for text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mdns => "mdns",
            Self::Manual => "manual",
            Self::Remembered => "remembered",
            Self::LocalSend => "localsend",
        }
    }
}

/// A known peer.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The peer's device ID (from the TXT `id`; authenticated later by the TLS pin).
    pub id: DeviceId,
    /// Human-readable device name. Not unique: several peers may share it.
    pub name: PeerName,
    /// Dialable UDP (QUIC) addresses, preferred first: IPv4, routable IPv6,
    /// IPv4 link-local, IPv6 link-local (which carry their `scope_id`).
    pub addrs: Vec<SocketAddr>,
    /// TCP fallback port on the same IPs, if the peer has TCP enabled.
    pub tcp_port: Option<u16>,
    /// Protocol version from the TXT `v`.
    pub version: u16,
    /// How we learnt about the peer.
    pub source: PeerSource,
    /// When the peer was last heard from: its latest mDNS announcement or
    /// answer (every periodic announcement changes its TXT `beat`, so each
    /// one is seen), or for a peer found without mDNS its latest answer to
    /// a unicast probe. Updates of this field alone do not notify
    /// subscribers.
    pub last_seen: SystemTime,
}

impl Peer {
    /// Whether everything except `last_seen` is equal.
    fn same_info(&self, other: &Peer) -> bool {
        self.id == other.id
            && self.name == other.name
            && self.addrs == other.addrs
            && self.tcp_port == other.tcp_port
            && self.version == other.version
            && self.source == other.source
    }
}

/// Live peer table keyed by device ID, shared by discovery, the daemon and
/// the dialer. Cloning is cheap (shared state).
///
/// The lock is a `std::sync::RwLock` held only for short, non-async sections;
/// all methods return owned copies.
#[derive(Clone)]
pub struct PeerTable {
    shared: Arc<Shared>,
}

struct Shared {
    state: RwLock<State>,
    /// Incremented on every change of the peer set or a peer's dialable info.
    changes: watch::Sender<u64>,
    /// mDNS peers a connection failed to reach, waiting for discovery to
    /// check them (bounded by the number of peers).
    suspects: Mutex<HashMap<DeviceId, CheckCause>>,
    /// Signalled when `suspects` gains an entry.
    suspected: Notify,
}

#[derive(Default)]
struct State {
    /// mDNS service instances keyed by lower-cased fullname. One device may
    /// have several (e.g. renamed `laptop (2)` on one interface only).
    instances: HashMap<String, Instance>,
    /// Manually added peers.
    manual: HashMap<DeviceId, Peer>,
    /// The merged view that readers see.
    merged: HashMap<DeviceId, Peer>,
}

/// One resolved DNS-SD instance, i.e. the latest data for one fullname.
struct Instance {
    /// As received (original case), for `ServiceDaemon::verify`.
    fullname: String,
    id: DeviceId,
    name: PeerName,
    addrs: Vec<SocketAddr>,
    tcp_port: Option<u16>,
    version: u16,
    /// When this instance's data last arrived; the newest instance of a
    /// device provides its name, version and TCP port.
    updated: SystemTime,
    last_seen: SystemTime,
}

impl Default for PeerTable {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PeerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTable")
            .field("peers", &self.read().merged.len())
            .finish()
    }
}

/// A resolved service instance, reduced to what discovery needs.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResolvedInstance {
    /// DNS-SD fullname, e.g. `laptop._lanshare._udp.local.`.
    pub(crate) fullname: String,
    /// TXT properties; keys lower-cased, first occurrence wins (RFC 6763 §6.4).
    pub(crate) txt: BTreeMap<String, String>,
    /// Resolved addresses with the interface index they were seen on
    /// (0 when unknown; only meaningful for IPv6 link-local).
    pub(crate) addrs: Vec<(IpAddr, u32)>,
    /// SRV port.
    pub(crate) port: u16,
}

/// A browse event, independent of mdns-sd types.
#[derive(Clone, Debug)]
pub(crate) enum BrowseEvent {
    /// The full current state of one instance (mdns-sd builds each
    /// `ServiceResolved` from its cache, so later events supersede earlier ones).
    Resolved(ResolvedInstance),
    /// The instance with this fullname is gone (goodbye, TTL expiry or failed
    /// verification).
    Removed(String),
}

/// Filtering rules for [`PeerTable::apply`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ApplyPolicy {
    /// Our own device ID: we always discover ourselves and must skip it.
    pub(crate) own_id: DeviceId,
    /// Keep loopback addresses (tests on one host); off on real LANs.
    pub(crate) allow_loopback: bool,
}

/// What [`PeerTable::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// A new device appeared.
    PeerAdded(DeviceId),
    /// A known device's name, addresses, ports or version changed.
    PeerUpdated(DeviceId),
    /// Nothing visible changed (re-emitted data).
    Unchanged(DeviceId),
    /// One instance went away; the device is still known via another.
    InstanceRemoved(DeviceId),
    /// The device is gone from the table.
    PeerRemoved(DeviceId),
    /// The event was ignored.
    Ignored(IgnoreReason),
}

/// Why an event was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IgnoreReason {
    /// No TXT `id`.
    MissingId,
    /// TXT `id` is not a device ID.
    InvalidId,
    /// Our own advertisement.
    OwnId,
    /// No TXT `v`.
    MissingVersion,
    /// TXT `v` is not a number.
    InvalidVersion,
    /// SRV port 0.
    NoPort,
    /// No address survived filtering (e.g. loopback only).
    NoUsableAddress,
    /// Removal of a fullname we never accepted.
    UnknownInstance,
}

impl PeerTable {
    /// An empty table.
    pub fn new() -> Self {
        let (changes, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                state: RwLock::new(State::default()),
                changes,
                suspects: Mutex::new(HashMap::new()),
                suspected: Notify::new(),
            }),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        self.shared.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// All peers, sorted by name (case-insensitive), then ID.
    pub fn list(&self) -> Vec<Peer> {
        let mut peers: Vec<Peer> = self.read().merged.values().cloned().collect();
        peers.sort_by_cached_key(|p| (p.name.to_lowercase(), p.name.clone(), p.id));
        peers
    }

    /// The peer with this ID.
    pub fn get(&self, id: &DeviceId) -> Option<Peer> {
        self.read().merged.get(id).cloned()
    }

    /// Peers whose name equals `name`, case-insensitively. Names are not
    /// unique, so this may return several peers (sorted like [`list`](Self::list)).
    pub fn find_by_name(&self, name: &str) -> Vec<Peer> {
        let wanted = name.to_lowercase();
        let mut found = self.list();
        found.retain(|p| p.name.to_lowercase() == wanted);
        found
    }

    /// Peers whose ID starts with `prefix` (see [`DeviceId::matches_prefix`]).
    pub fn find_by_id_prefix(&self, prefix: &str) -> Vec<Peer> {
        let mut found = self.list();
        found.retain(|p| p.id.matches_prefix(prefix));
        found
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.read().merged.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.read().merged.is_empty()
    }

    /// A receiver whose value changes whenever a peer appears, disappears,
    /// or changes name, addresses, ports or version (not for `last_seen`
    /// alone). Subscribe *before* checking the table so no change is missed,
    /// or use [`wait_for`](Self::wait_for).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// Waits until `check` returns `Some`, re-evaluating it after every
    /// change. Wrap in `tokio::time::timeout` to bound the wait.
    pub async fn wait_for<T>(&self, mut check: impl FnMut(&PeerTable) -> Option<T>) -> T {
        let mut changes = self.subscribe();
        loop {
            changes.borrow_and_update();
            if let Some(found) = check(self) {
                return found;
            }
            if changes.changed().await.is_err() {
                // Unreachable while `self` holds the sender; wait forever
                // rather than spin.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Adds or replaces a manually configured peer (its `source` is forced to
    /// [`PeerSource::Manual`]). If mDNS also knows the device, the entry is
    /// merged: mDNS data wins for name/ports, addresses are combined.
    pub fn upsert_manual(&self, mut peer: Peer) {
        peer.source = PeerSource::Manual;
        self.upsert_unicast(peer);
    }

    /// Adds or replaces a peer found without mDNS, keeping its `source`
    /// ([`PeerSource::Manual`] or [`PeerSource::Remembered`]; `Mdns` is
    /// stored as `Manual`). Merged with mDNS like [`upsert_manual`](Self::upsert_manual);
    /// removed with [`remove_manual`](Self::remove_manual).
    pub fn upsert_unicast(&self, mut peer: Peer) {
        if peer.source == PeerSource::Mdns {
            peer.source = PeerSource::Manual;
        }
        let id = peer.id;
        let changed = {
            let mut state = self.write();
            state.manual.insert(id, peer);
            state.rebuild(id)
        };
        if changed {
            self.notify();
        }
    }

    /// Whether mDNS currently sees the device (at least one instance).
    pub fn seen_by_mdns(&self, id: &DeviceId) -> bool {
        self.read().instances.values().any(|i| i.id == *id)
    }

    /// Records that a peer found without mDNS answered at `at`. Does not
    /// notify subscribers (like liveness checks).
    pub fn touch_unicast(&self, id: &DeviceId, at: SystemTime) {
        let mut state = self.write();
        if let Some(peer) = state.manual.get_mut(id) {
            peer.last_seen = peer.last_seen.max(at);
        }
        if let Some(peer) = state.merged.get_mut(id) {
            peer.last_seen = peer.last_seen.max(at);
        }
    }

    /// Removes a manually configured (or remembered) peer. Returns whether it existed.
    pub fn remove_manual(&self, id: &DeviceId) -> bool {
        let (existed, changed) = {
            let mut state = self.write();
            let existed = state.manual.remove(id).is_some();
            (existed, existed && state.rebuild(*id))
        };
        if changed {
            self.notify();
        }
        existed
    }

    /// Folds one browse event into the table.
    pub(crate) fn apply(
        &self,
        policy: &ApplyPolicy,
        event: BrowseEvent,
        now: SystemTime,
    ) -> Applied {
        let outcome = {
            let mut state = self.write();
            match event {
                BrowseEvent::Resolved(resolved) => state.apply_resolved(policy, resolved, now),
                BrowseEvent::Removed(fullname) => state.remove_instance(&fullname),
            }
        };
        match outcome {
            Applied::PeerAdded(_)
            | Applied::PeerUpdated(_)
            | Applied::InstanceRemoved(_)
            | Applied::PeerRemoved(_) => self.notify(),
            Applied::Unchanged(_) | Applied::Ignored(_) => {}
        }
        outcome
    }

    /// Fullnames (original case) of all mDNS instances in the table.
    pub(crate) fn mdns_fullnames(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .read()
            .instances
            .values()
            .map(|i| i.fullname.clone())
            .collect();
        names.sort();
        names
    }

    /// Fullnames (original case) of the mDNS instances of device `id`.
    pub(crate) fn mdns_fullnames_of(&self, id: &DeviceId) -> Vec<String> {
        let mut names: Vec<String> = self
            .read()
            .instances
            .values()
            .filter(|i| i.id == *id)
            .map(|i| i.fullname.clone())
            .collect();
        names.sort();
        names
    }

    /// A connection to `id` failed: if mDNS lists the device, discovery
    /// checks at once whether it is still there (and drops it if it does not
    /// answer) instead of waiting for its records to expire.
    pub fn report_unreachable(&self, id: &DeviceId) {
        self.suspect(id, CheckCause::FailedConnection);
    }

    /// Every TCP address of `id` refused the connection: its host is up
    /// but nothing listens, so the device has most likely gone. If mDNS
    /// lists it, discovery checks at once, with a shorter timeout (0.5 s)
    /// than for other failed connections.
    pub fn report_refused(&self, id: &DeviceId) {
        self.suspect(id, CheckCause::Refused);
    }

    fn suspect(&self, id: &DeviceId, cause: CheckCause) {
        if !self.seen_by_mdns(id) {
            return;
        }
        let mut suspects = self
            .shared
            .suspects
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A refusal is the stronger evidence; keep it.
        if suspects.get(id) != Some(&CheckCause::Refused) {
            suspects.insert(*id, cause);
        }
        drop(suspects);
        self.shared.suspected.notify_one();
    }

    /// Completes when mDNS no longer lists `id` (at once if it does not
    /// now). Never for a manually added peer that mDNS does not list:
    /// discovery cannot say whether it is gone.
    pub async fn departed(&self, id: &DeviceId) {
        if !self.seen_by_mdns(id) && self.read().manual.contains_key(id) {
            return std::future::pending().await;
        }
        self.wait_for(|table| (!table.seen_by_mdns(id)).then_some(()))
            .await;
    }

    /// Resolves when [`report_unreachable`](Self::report_unreachable) has
    /// reported a device since the last [`take_suspects`](Self::take_suspects).
    pub(crate) async fn suspected(&self) {
        self.shared.suspected.notified().await;
    }

    /// The devices reported unreachable since the last call, and why.
    pub(crate) fn take_suspects(&self) -> Vec<(DeviceId, CheckCause)> {
        let mut suspects = self
            .shared
            .suspects
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        suspects.drain().collect()
    }

    /// Forgets every mDNS instance (discovery stopped); manual peers stay.
    pub(crate) fn clear_mdns(&self) {
        let changed = {
            let mut state = self.write();
            let ids: Vec<DeviceId> = state.instances.values().map(|i| i.id).collect();
            state.instances.clear();
            let mut changed = false;
            for id in ids {
                changed |= state.rebuild(id);
            }
            changed
        };
        if changed {
            self.notify();
        }
    }
}

impl State {
    fn apply_resolved(
        &mut self,
        policy: &ApplyPolicy,
        resolved: ResolvedInstance,
        now: SystemTime,
    ) -> Applied {
        let key = resolved.fullname.to_lowercase();
        let id = match resolved.txt.get("id") {
            None => return Applied::Ignored(IgnoreReason::MissingId),
            Some(text) => match text.parse::<DeviceId>() {
                Ok(id) => id,
                Err(_) => return Applied::Ignored(IgnoreReason::InvalidId),
            },
        };
        if id == policy.own_id {
            return Applied::Ignored(IgnoreReason::OwnId);
        }
        let version = match resolved.txt.get("v") {
            None => return Applied::Ignored(IgnoreReason::MissingVersion),
            Some(text) => match text.trim().parse::<u16>() {
                Ok(v) => v,
                Err(_) => return Applied::Ignored(IgnoreReason::InvalidVersion),
            },
        };
        if resolved.port == 0 {
            return Applied::Ignored(IgnoreReason::NoPort);
        }
        let addrs = socket_addrs(&resolved.addrs, resolved.port, policy.allow_loopback);
        if addrs.is_empty() {
            // The instance is not reachable from here any more (e.g. only a
            // loopback address is left): treat it as absent.
            return match self.remove_instance(&key) {
                Applied::Ignored(_) => Applied::Ignored(IgnoreReason::NoUsableAddress),
                removed => removed,
            };
        }
        let tcp_port = resolved
            .txt
            .get("tcp")
            .and_then(|t| t.trim().parse::<u16>().ok())
            .filter(|p| *p != 0);
        let label = PeerName::new(&instance_label(&resolved.fullname), &id.short());
        let name = match resolved.txt.get("name") {
            Some(name) => PeerName::new(name, &label),
            None => label,
        };

        let existed = self.merged.contains_key(&id);
        let last_seen = now;
        let previous = self.instances.insert(
            key,
            Instance {
                fullname: resolved.fullname,
                id,
                name,
                addrs,
                tcp_port,
                version,
                updated: now,
                last_seen,
            },
        );
        let mut changed = self.rebuild(id);
        if let Some(previous) = previous
            && previous.id != id
        {
            // The fullname now belongs to another device.
            changed |= self.rebuild(previous.id);
        }
        if !existed {
            Applied::PeerAdded(id)
        } else if changed {
            Applied::PeerUpdated(id)
        } else {
            Applied::Unchanged(id)
        }
    }

    fn remove_instance(&mut self, fullname: &str) -> Applied {
        let Some(instance) = self.instances.remove(&fullname.to_lowercase()) else {
            return Applied::Ignored(IgnoreReason::UnknownInstance);
        };
        let id = instance.id;
        self.rebuild(id);
        if self.merged.contains_key(&id) {
            Applied::InstanceRemoved(id)
        } else {
            Applied::PeerRemoved(id)
        }
    }

    /// Recomputes the merged entry for `id`. Returns whether readers see a
    /// difference (other than `last_seen`).
    fn rebuild(&mut self, id: DeviceId) -> bool {
        let mut instances: Vec<&Instance> =
            self.instances.values().filter(|i| i.id == id).collect();
        // Newest first; fullname as a deterministic tie-break.
        instances.sort_by(|a, b| {
            b.updated
                .cmp(&a.updated)
                .then_with(|| a.fullname.cmp(&b.fullname))
        });
        let manual = self.manual.get(&id);

        let merged = match (instances.first(), manual) {
            (None, None) => None,
            (None, Some(manual)) => {
                let mut peer = manual.clone();
                sort_addrs(&mut peer.addrs);
                Some(peer)
            }
            (Some(newest), _) => {
                let mut addrs: Vec<SocketAddr> = instances
                    .iter()
                    .flat_map(|i| i.addrs.iter().copied())
                    .chain(manual.into_iter().flat_map(|m| m.addrs.iter().copied()))
                    .collect();
                sort_addrs(&mut addrs);
                let last_seen = instances
                    .iter()
                    .map(|i| i.last_seen)
                    .chain(manual.map(|m| m.last_seen))
                    .max()
                    .unwrap_or(newest.last_seen);
                Some(Peer {
                    id,
                    name: newest.name.clone(),
                    addrs,
                    tcp_port: newest.tcp_port.or(manual.and_then(|m| m.tcp_port)),
                    version: newest.version,
                    source: PeerSource::Mdns,
                    last_seen,
                })
            }
        };

        match merged {
            None => self.merged.remove(&id).is_some(),
            Some(peer) => match self.merged.insert(id, peer) {
                None => true,
                Some(old) => self.merged.get(&id).is_none_or(|new| !new.same_info(&old)),
            },
        }
    }
}

/// Turns resolved IPs into dialable socket addresses.
///
/// IPv4 as is; IPv6 link-local gets the interface index as `scope_id` (and is
/// dropped without one: it would fail with EINVAL); loopback is dropped unless
/// allowed; unspecified and multicast addresses are dropped.
fn socket_addrs(ips: &[(IpAddr, u32)], port: u16, allow_loopback: bool) -> Vec<SocketAddr> {
    let mut out = Vec::with_capacity(ips.len());
    for &(ip, scope) in ips {
        let ip = ip.to_canonical();
        if ip.is_unspecified() || ip.is_multicast() || (ip.is_loopback() && !allow_loopback) {
            continue;
        }
        let addr = match ip {
            IpAddr::V4(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
            IpAddr::V6(v6) if v6.is_unicast_link_local() => {
                if scope == 0 {
                    continue;
                }
                SocketAddr::V6(SocketAddrV6::new(v6, port, 0, scope))
            }
            IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
        };
        out.push(addr);
    }
    sort_addrs(&mut out);
    out
}

/// Sorts by dialing preference and removes duplicates.
fn sort_addrs(addrs: &mut Vec<SocketAddr>) {
    fn rank(addr: &SocketAddr) -> u8 {
        match addr.ip() {
            ip if ip.is_loopback() => 4,
            IpAddr::V4(v4) if v4.is_link_local() => 2,
            IpAddr::V4(_) => 0,
            IpAddr::V6(v6) if v6.is_unicast_link_local() => 3,
            IpAddr::V6(_) => 1,
        }
    }
    addrs.sort_by_key(|a| (rank(a), *a));
    addrs.dedup();
}

/// The instance label of a fullname: everything before `._lanshare._udp.local.`
/// (mdns-sd delivers labels unescaped, so a label may contain dots), or up to
/// the first dot for other types.
fn instance_label(fullname: &str) -> String {
    let suffix = format!(".{SERVICE_TYPE}");
    let cut = fullname.len().saturating_sub(suffix.len());
    if fullname.is_char_boundary(cut) && fullname[cut..].eq_ignore_ascii_case(&suffix) {
        return fullname[..cut].to_string();
    }
    fullname.split('.').next().unwrap_or_default().to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    const T: &str = "._lanshare._udp.local.";

    fn id(seed: &str) -> DeviceId {
        DeviceId::from_cert_der(seed.as_bytes())
    }

    fn policy() -> ApplyPolicy {
        ApplyPolicy {
            own_id: id("me"),
            allow_loopback: false,
        }
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    fn resolved(instance: &str, dev: DeviceId, name: &str, ips: &[(IpAddr, u32)]) -> BrowseEvent {
        let mut txt = BTreeMap::new();
        txt.insert("id".to_string(), dev.to_canonical());
        txt.insert("v".to_string(), "1".to_string());
        txt.insert("name".to_string(), name.to_string());
        txt.insert("tcp".to_string(), "47001".to_string());
        BrowseEvent::Resolved(ResolvedInstance {
            fullname: format!("{instance}{T}"),
            txt,
            addrs: ips.to_vec(),
            port: 47000,
        })
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> (IpAddr, u32) {
        (IpAddr::V4(Ipv4Addr::new(a, b, c, d)), 2)
    }

    fn ll6() -> (IpAddr, u32) {
        (
            IpAddr::V6("fe80::1:2".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
            5,
        )
    }

    fn removed(instance: &str) -> BrowseEvent {
        BrowseEvent::Removed(format!("{instance}{T}"))
    }

    #[test]
    fn own_id_is_filtered() {
        let table = PeerTable::new();
        let me = policy().own_id;
        let out = table.apply(
            &policy(),
            resolved("me", me, "me", &[v4(10, 0, 0, 1)]),
            t0(),
        );
        assert_eq!(out, Applied::Ignored(IgnoreReason::OwnId));
        assert!(table.is_empty());
    }

    #[test]
    fn resolve_adds_peer_with_txt_fields() {
        let table = PeerTable::new();
        let bob = id("bob");
        let mut rx = table.subscribe();
        let out = table.apply(
            &policy(),
            resolved("bob", bob, "Bob's laptop", &[v4(10, 0, 0, 2)]),
            t0(),
        );
        assert_eq!(out, Applied::PeerAdded(bob));
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        let peer = table.get(&bob).unwrap();
        assert_eq!(peer.name, "Bob's laptop");
        assert_eq!(
            peer.addrs,
            vec!["10.0.0.2:47000".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(peer.tcp_port, Some(47001));
        assert_eq!(peer.version, 1);
        assert_eq!(peer.source, PeerSource::Mdns);
        assert_eq!(peer.last_seen, t0());

        // Identical re-emission: no notification.
        let out = table.apply(
            &policy(),
            resolved("bob", bob, "Bob's laptop", &[v4(10, 0, 0, 2)]),
            t0(),
        );
        assert_eq!(out, Applied::Unchanged(bob));
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn repeated_resolves_merge_addresses() {
        // mdns-sd re-emits ServiceResolved as more addresses arrive; each event
        // is the full cached set for that instance.
        let table = PeerTable::new();
        let bob = id("bob");
        table.apply(
            &policy(),
            resolved("bob", bob, "bob", &[v4(10, 0, 0, 2)]),
            t0(),
        );
        let out = table.apply(
            &policy(),
            resolved("bob", bob, "bob", &[ll6(), v4(10, 0, 0, 2)]),
            t0(),
        );
        assert_eq!(out, Applied::PeerUpdated(bob));
        let addrs = table.get(&bob).unwrap().addrs;
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[0], "10.0.0.2:47000".parse::<SocketAddr>().unwrap());
        assert!(addrs[1].is_ipv6());
    }

    #[test]
    fn addresses_of_different_instances_accumulate() {
        // One device seen under two fullnames with different addresses.
        let table = PeerTable::new();
        let bob = id("bob");
        table.apply(
            &policy(),
            resolved("bob", bob, "bob", &[v4(10, 0, 0, 2)]),
            t0(),
        );
        let out = table.apply(&policy(), resolved("bob (2)", bob, "bob", &[ll6()]), t0());
        assert_eq!(out, Applied::PeerUpdated(bob));
        assert_eq!(table.get(&bob).unwrap().addrs.len(), 2);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn later_snapshot_of_same_instance_drops_vanished_address() {
        let table = PeerTable::new();
        let bob = id("bob");
        table.apply(
            &policy(),
            resolved("bob", bob, "bob", &[v4(10, 0, 0, 2), v4(192, 168, 1, 9)]),
            t0(),
        );
        table.apply(
            &policy(),
            resolved("bob", bob, "bob", &[v4(192, 168, 1, 9)]),
            t0(),
        );
        assert_eq!(
            table.get(&bob).unwrap().addrs,
            vec!["192.168.1.9:47000".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn missing_or_invalid_id_or_version_is_ignored() {
        let table = PeerTable::new();
        let base = match resolved("x", id("x"), "x", &[v4(10, 0, 0, 3)]) {
            BrowseEvent::Resolved(r) => r,
            BrowseEvent::Removed(_) => unreachable!(),
        };

        let mut r = base.clone();
        r.txt.remove("id");
        assert_eq!(
            table.apply(&policy(), BrowseEvent::Resolved(r), t0()),
            Applied::Ignored(IgnoreReason::MissingId)
        );

        let mut r = base.clone();
        r.txt.insert("id".into(), "not-an-id".into());
        assert_eq!(
            table.apply(&policy(), BrowseEvent::Resolved(r), t0()),
            Applied::Ignored(IgnoreReason::InvalidId)
        );

        let mut r = base.clone();
        r.txt.insert("v".into(), "one".into());
        assert_eq!(
            table.apply(&policy(), BrowseEvent::Resolved(r), t0()),
            Applied::Ignored(IgnoreReason::InvalidVersion)
        );

        let mut r = base.clone();
        r.txt.remove("v");
        assert_eq!(
            table.apply(&policy(), BrowseEvent::Resolved(r), t0()),
            Applied::Ignored(IgnoreReason::MissingVersion)
        );

        let mut r = base.clone();
        r.port = 0;
        assert_eq!(
            table.apply(&policy(), BrowseEvent::Resolved(r), t0()),
            Applied::Ignored(IgnoreReason::NoPort)
        );
        assert!(table.is_empty());

        // Grouped, lower-case IDs parse too; a future version is kept.
        let mut r = base;
        r.txt
            .insert("id".into(), id("x").to_string().to_lowercase());
        r.txt.insert("v".into(), "2".into());
        assert_eq!(
            table.apply(&policy(), BrowseEvent::Resolved(r), t0()),
            Applied::PeerAdded(id("x"))
        );
        assert_eq!(table.get(&id("x")).unwrap().version, 2);
    }

    #[test]
    fn removal_by_fullname() {
        let table = PeerTable::new();
        let bob = id("bob");
        let eve = id("eve");
        table.apply(
            &policy(),
            resolved("bob", bob, "bob", &[v4(10, 0, 0, 2)]),
            t0(),
        );
        table.apply(
            &policy(),
            resolved("eve", eve, "eve", &[v4(10, 0, 0, 5)]),
            t0(),
        );
        let rx = table.subscribe();
        // Fullnames compare case-insensitively, like DNS names.
        assert_eq!(
            table.apply(&policy(), BrowseEvent::Removed(format!("BOB{T}")), t0()),
            Applied::PeerRemoved(bob)
        );
        assert!(rx.has_changed().unwrap());
        assert!(table.get(&bob).is_none());
        assert!(table.get(&eve).is_some());
        assert_eq!(
            table.apply(&policy(), removed("nobody"), t0()),
            Applied::Ignored(IgnoreReason::UnknownInstance)
        );
    }

    #[test]
    fn two_fullnames_for_one_id_removed_only_when_both_go() {
        let table = PeerTable::new();
        let lap = id("laptop");
        table.apply(
            &policy(),
            resolved("laptop", lap, "laptop", &[v4(10, 0, 0, 7)]),
            t0(),
        );
        table.apply(
            &policy(),
            resolved("laptop (2)", lap, "laptop", &[ll6()]),
            t0(),
        );
        assert_eq!(table.len(), 1);
        assert_eq!(table.mdns_fullnames().len(), 2);

        assert_eq!(
            table.apply(&policy(), removed("laptop"), t0()),
            Applied::InstanceRemoved(lap)
        );
        let peer = table.get(&lap).unwrap();
        assert_eq!(peer.addrs.len(), 1, "addresses of the removed instance go");
        assert!(peer.addrs[0].is_ipv6());

        assert_eq!(
            table.apply(&policy(), removed("laptop (2)"), t0()),
            Applied::PeerRemoved(lap)
        );
        assert!(table.is_empty());
    }

    #[test]
    fn link_local_v6_gets_scope_id_and_unscoped_is_dropped() {
        let table = PeerTable::new();
        let bob = id("bob");
        let global: IpAddr = "2001:db8::7".parse().unwrap();
        let ll: IpAddr = "fe80::abcd".parse().unwrap();
        table.apply(
            &policy(),
            resolved(
                "bob",
                bob,
                "bob",
                &[(ll, 7), (global, 7), (ll, 0), v4(10, 0, 0, 2)],
            ),
            t0(),
        );
        let addrs = table.get(&bob).unwrap().addrs;
        assert_eq!(addrs.len(), 3);
        assert_eq!(addrs[0], "10.0.0.2:47000".parse::<SocketAddr>().unwrap());
        match addrs[1] {
            SocketAddr::V6(a) => {
                assert_eq!(a.ip(), &"2001:db8::7".parse::<Ipv6Addr>().unwrap());
                assert_eq!(a.scope_id(), 0);
            }
            SocketAddr::V4(_) => panic!("expected v6"),
        }
        match addrs[2] {
            SocketAddr::V6(a) => {
                assert_eq!(a.ip(), &"fe80::abcd".parse::<Ipv6Addr>().unwrap());
                assert_eq!(a.scope_id(), 7);
                assert_eq!(a.port(), 47000);
            }
            SocketAddr::V4(_) => panic!("expected v6"),
        }
    }

    #[test]
    fn loopback_skipped_unless_allowed() {
        let table = PeerTable::new();
        let bob = id("bob");
        let lo4 = (IpAddr::V4(Ipv4Addr::LOCALHOST), 1);
        let lo6 = (IpAddr::V6(Ipv6Addr::LOCALHOST), 1);
        let mapped = (IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), 1);

        table.apply(
            &policy(),
            resolved("bob", bob, "bob", &[lo4, lo6, v4(10, 0, 0, 2)]),
            t0(),
        );
        assert_eq!(
            table.get(&bob).unwrap().addrs,
            vec!["10.0.0.2:47000".parse::<SocketAddr>().unwrap()]
        );

        // Only loopback left: the instance is unusable and goes away.
        assert_eq!(
            table.apply(&policy(), resolved("bob", bob, "bob", &[lo4, mapped]), t0()),
            Applied::PeerRemoved(bob)
        );
        assert_eq!(
            table.apply(&policy(), resolved("bob", bob, "bob", &[lo4]), t0()),
            Applied::Ignored(IgnoreReason::NoUsableAddress)
        );

        let allow = ApplyPolicy {
            allow_loopback: true,
            ..policy()
        };
        table.apply(
            &allow,
            resolved("bob", bob, "bob", &[lo4, v4(10, 0, 0, 2)]),
            t0(),
        );
        assert_eq!(
            table.get(&bob).unwrap().addrs,
            vec![
                "10.0.0.2:47000".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:47000".parse::<SocketAddr>().unwrap(),
            ]
        );
    }

    #[test]
    fn name_collisions_keep_both_peers() {
        let table = PeerTable::new();
        let a = id("a");
        let b = id("b");
        table.apply(
            &policy(),
            resolved("laptop", a, "laptop", &[v4(10, 0, 0, 2)]),
            t0(),
        );
        table.apply(
            &policy(),
            resolved("laptop (2)", b, "Laptop", &[v4(10, 0, 0, 3)]),
            t0(),
        );
        assert_eq!(table.len(), 2);
        let found = table.find_by_name("LAPTOP");
        assert_eq!(found.len(), 2);
        assert!(found.iter().any(|p| p.id == a));
        assert!(found.iter().any(|p| p.id == b));
        assert!(table.find_by_name("lap").is_empty());

        let prefix = &a.to_canonical()[..6].to_lowercase();
        let by_prefix = table.find_by_id_prefix(prefix);
        assert!(by_prefix.iter().any(|p| p.id == a));
        assert_eq!(table.find_by_id_prefix(&a.to_string()).len(), 1);
    }

    #[test]
    fn fullname_taken_over_by_another_device() {
        let table = PeerTable::new();
        let old = id("old");
        let new = id("new");
        table.apply(
            &policy(),
            resolved("box", old, "box", &[v4(10, 0, 0, 2)]),
            t0(),
        );
        assert_eq!(
            table.apply(
                &policy(),
                resolved("box", new, "box", &[v4(10, 0, 0, 3)]),
                t0()
            ),
            Applied::PeerAdded(new)
        );
        assert!(table.get(&old).is_none());
        assert!(table.get(&new).is_some());
    }

    #[test]
    fn list_is_sorted_by_name_then_id() {
        let table = PeerTable::new();
        for (seed, name) in [("1", "zeta"), ("2", "Alpha"), ("3", "beta"), ("4", "alpha")] {
            table.apply(
                &policy(),
                resolved(seed, id(seed), name, &[v4(10, 0, 0, 9)]),
                t0(),
            );
        }
        let names: Vec<String> = table
            .list()
            .into_iter()
            .map(|p| p.name.to_string())
            .collect();
        assert_eq!(names[0].to_lowercase(), "alpha");
        assert_eq!(names[1].to_lowercase(), "alpha");
        assert_eq!(names[2..], ["beta".to_string(), "zeta".to_string()]);
    }

    #[test]
    fn names_are_sanitised_and_fall_back_to_instance_label() {
        let table = PeerTable::new();
        let a = id("a");
        table.apply(
            &policy(),
            resolved("x", a, " evil\u{1b}[2Jname\n ", &[v4(10, 0, 0, 2)]),
            t0(),
        );
        assert_eq!(table.get(&a).unwrap().name, "evil[2Jname");

        let b = id("b");
        let mut event = resolved("my.box", b, "", &[v4(10, 0, 0, 3)]);
        if let BrowseEvent::Resolved(r) = &mut event {
            r.txt.remove("name");
        }
        table.apply(&policy(), event, t0());
        assert_eq!(table.get(&b).unwrap().name, "my.box");

        let long = "é".repeat(300);
        let c = id("c");
        table.apply(&policy(), resolved("c", c, &long, &[v4(10, 0, 0, 4)]), t0());
        let name = table.get(&c).unwrap().name;
        assert!(name.len() <= crate::safe_text::MAX_NAME_BYTES && name.chars().all(|ch| ch == 'é'));
    }

    #[test]
    fn tcp_port_optional() {
        let table = PeerTable::new();
        let a = id("a");
        let mut event = resolved("a", a, "a", &[v4(10, 0, 0, 2)]);
        if let BrowseEvent::Resolved(r) = &mut event {
            r.txt.remove("tcp");
        }
        table.apply(&policy(), event, t0());
        assert_eq!(table.get(&a).unwrap().tcp_port, None);
    }

    #[test]
    fn each_announcement_updates_last_seen_without_notifying() {
        let table = PeerTable::new();
        let a = id("a");
        table.apply(&policy(), resolved("a", a, "a", &[v4(10, 0, 0, 2)]), t0());
        let mut rx = table.subscribe();
        rx.borrow_and_update();
        // The next periodic announcement flips TXT `beat`: mdns-sd reports
        // it, nothing a reader sees has changed but when it was heard.
        let mut beat = resolved("a", a, "a", &[v4(10, 0, 0, 2)]);
        if let BrowseEvent::Resolved(r) = &mut beat {
            r.txt.insert("beat".into(), "1".into());
        }
        let later = t0() + Duration::from_secs(69);
        assert_eq!(table.apply(&policy(), beat, later), Applied::Unchanged(a));
        assert_eq!(table.get(&a).unwrap().last_seen, later);
        assert!(!rx.has_changed().unwrap());
    }

    /// A manually added peer with ID `id`.
    fn manual_peer(id: DeviceId) -> Peer {
        Peer {
            id,
            name: "m".into(),
            addrs: vec!["192.0.2.1:5000".parse().unwrap()],
            tcp_port: None,
            version: 1,
            source: PeerSource::Manual,
            last_seen: t0(),
        }
    }

    #[tokio::test]
    async fn unreachable_mdns_peers_are_handed_to_discovery() {
        let table = PeerTable::new();
        let a = id("a");
        let manual = id("manual");
        table.apply(&policy(), resolved("a", a, "a", &[v4(10, 0, 0, 2)]), t0());
        table.apply(&policy(), resolved("a (2)", a, "a", &[ll6()]), t0());
        table.upsert_manual(manual_peer(manual));
        // A peer mDNS does not list has nothing to check.
        table.report_unreachable(&manual);
        assert!(table.take_suspects().is_empty());
        table.report_unreachable(&a);
        table.report_unreachable(&a);
        tokio::time::timeout(Duration::from_secs(5), table.suspected())
            .await
            .expect("discovery is woken");
        assert_eq!(
            table.take_suspects(),
            vec![(a, CheckCause::FailedConnection)]
        );
        assert!(table.take_suspects().is_empty());
        // A refusal is the stronger evidence (a quicker check), whichever
        // report comes first.
        table.report_refused(&a);
        table.report_unreachable(&a);
        assert_eq!(table.take_suspects(), vec![(a, CheckCause::Refused)]);
        assert_eq!(
            table.mdns_fullnames_of(&a),
            vec![format!("a (2){T}"), format!("a{T}")]
        );
        assert!(table.mdns_fullnames_of(&manual).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn departed_completes_when_mdns_no_longer_lists_the_device() {
        let table = PeerTable::new();
        let (a, manual) = (id("a"), id("manual"));
        table.apply(&policy(), resolved("a", a, "a", &[v4(10, 0, 0, 2)]), t0());
        table.upsert_manual(manual_peer(manual));
        let long = Duration::from_secs(3600);
        // Never listed (or already dropped): at once.
        tokio::time::timeout(Duration::ZERO, table.departed(&id("gone")))
            .await
            .expect("a device mDNS does not list has departed");
        // A manual peer: discovery cannot tell.
        assert!(
            tokio::time::timeout(long, table.departed(&manual))
                .await
                .is_err()
        );
        // Listed: when mDNS drops it.
        let departed = table.departed(&a);
        tokio::pin!(departed);
        assert!(
            tokio::time::timeout(long, &mut departed).await.is_err(),
            "still listed"
        );
        table.apply(&policy(), BrowseEvent::Removed(format!("a{T}")), t0());
        tokio::time::timeout(Duration::ZERO, departed)
            .await
            .expect("departed once mDNS dropped it");
    }

    #[test]
    fn manual_peers_merge_with_mdns_and_survive_clear() {
        let table = PeerTable::new();
        let a = id("a");
        let manual_addr: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        table.upsert_manual(Peer {
            id: a,
            name: "typed".into(),
            addrs: vec![manual_addr],
            tcp_port: None,
            version: 1,
            source: PeerSource::Mdns,
            last_seen: t0(),
        });
        assert_eq!(table.get(&a).unwrap().source, PeerSource::Manual);

        table.apply(
            &policy(),
            resolved("a", a, "found", &[v4(10, 0, 0, 2)]),
            t0(),
        );
        let peer = table.get(&a).unwrap();
        assert_eq!(peer.source, PeerSource::Mdns);
        assert_eq!(peer.name, "found");
        assert_eq!(peer.addrs.len(), 2);

        table.clear_mdns();
        let peer = table.get(&a).unwrap();
        assert_eq!(peer.source, PeerSource::Manual);
        assert_eq!(peer.addrs, vec![manual_addr]);
        assert!(table.mdns_fullnames().is_empty());

        assert!(table.remove_manual(&a));
        assert!(!table.remove_manual(&a));
        assert!(table.is_empty());
    }

    #[test]
    fn remembered_peers_keep_their_source_until_mdns_sees_them() {
        let table = PeerTable::new();
        let a = id("a");
        let addr: SocketAddr = "10.0.0.2:47000".parse().unwrap();
        table.upsert_unicast(Peer {
            id: a,
            name: "a".into(),
            addrs: vec![addr],
            tcp_port: Some(47000),
            version: 1,
            source: PeerSource::Remembered,
            last_seen: t0(),
        });
        assert_eq!(table.get(&a).unwrap().source, PeerSource::Remembered);
        assert!(!table.seen_by_mdns(&a));
        let later = t0() + Duration::from_secs(30);
        let mut rx = table.subscribe();
        rx.borrow_and_update();
        table.touch_unicast(&a, later);
        assert_eq!(table.get(&a).unwrap().last_seen, later);
        assert!(!rx.has_changed().unwrap());

        // mDNS finds it: one entry, source mdns, addresses merged.
        table.apply(&policy(), resolved("a", a, "a", &[v4(10, 0, 0, 2)]), t0());
        assert!(table.seen_by_mdns(&a));
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(&a).unwrap().source, PeerSource::Mdns);
        assert_eq!(table.get(&a).unwrap().addrs, vec![addr]);
        table.clear_mdns();
        assert_eq!(table.get(&a).unwrap().source, PeerSource::Remembered);

        // `Mdns` is never stored for a unicast entry.
        let b = id("b");
        table.upsert_unicast(Peer {
            id: b,
            name: "b".into(),
            addrs: vec![addr],
            tcp_port: None,
            version: 1,
            source: PeerSource::Mdns,
            last_seen: t0(),
        });
        assert_eq!(table.get(&b).unwrap().source, PeerSource::Manual);
        assert!(table.remove_manual(&a) && table.remove_manual(&b));
        assert!(table.is_empty());
    }

    #[tokio::test]
    async fn wait_for_wakes_on_change() {
        let table = PeerTable::new();
        let a = id("a");
        let waiter = {
            let table = table.clone();
            tokio::spawn(async move { table.wait_for(|t| t.get(&a)).await })
        };
        tokio::task::yield_now().await;
        table.apply(&policy(), resolved("a", a, "a", &[v4(10, 0, 0, 2)]), t0());
        let peer = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(peer.id, a);
    }

    #[test]
    fn instance_label_strips_service_type() {
        assert_eq!(instance_label("a.b._lanshare._UDP.local."), "a.b");
        assert_eq!(
            instance_label("laptop (2)._lanshare._udp.local."),
            "laptop (2)"
        );
        assert_eq!(instance_label("x._other._udp.local."), "x");
    }
}
