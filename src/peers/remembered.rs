//! Finding peers when multicast fails: remembered and manual peers.
//!
//! mDNS is the only automatic way to find peers, and it is the part of a
//! LAN most often broken: Wi-Fi access points with client isolation or
//! IGMP snooping, firewalls that drop UDP 5353, VLANs. Unicast between the
//! same devices usually still works. So the daemon keeps, in `peers.json`
//! in the state directory:
//!
//! - **remembered** peers: the last addresses of every *trusted* device
//!   mDNS has shown (kept up to date while mDNS sees it, dropped when the
//!   device is untrusted);
//! - **manual** peers: `share peers add HOST:PORT` (the daemon connects
//!   once to learn the device ID and name, so the entry is pinned to that
//!   identity like a discovered one).
//!
//! At start and every [`PROBE_INTERVAL`] the daemon re-probes every entry
//! that mDNS does not currently see: connect to its last addresses
//! (pinned to its device ID), exchange `Hello`, close. A peer that answers
//! appears in `share peers` with source `remembered` (or `manual`) and its
//! `last_seen`, and `share send NAME` works as for a discovered peer. A
//! remembered peer that stops answering leaves the table again; a manual
//! one stays listed (the user asked for it) with its old `last_seen`.
//!
//! A remembered peer that connects to us while it is not in the table
//! (it started after us, and found us through its own list) triggers a
//! probe at once, so both sides list each other within a second instead
//! of after the next round.
//!
//! The file is replaced atomically (write temp, fsync, rename, fsync the
//! directory) and written only when something other than `last_seen`
//! changes, or `last_seen` moved by more than [`LAST_SEEN_SLACK`], so a
//! healthy daemon does not rewrite it every few seconds. A corrupt file is
//! moved aside (`peers.json.corrupt`) and the daemon starts without it: the
//! list is a cache, never a reason not to start.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::connect::{Answered, IdentifyError};
use super::{Peers, PeersError};
use crate::discovery::{Peer, PeerSource, PeerTable};
use crate::identity::DeviceId;
use crate::identity::trust::TrustStore;
use crate::safe_text::PeerName;
use crate::transport::dial::{Preference, Target};

/// File name inside the state directory.
pub const PEERS_FILE: &str = "peers.json";

/// How often peers mDNS does not see are probed by unicast.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// How often the list is brought up to date with the peer table.
const SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// A `last_seen` change alone is written only when it moved this much.
pub const LAST_SEEN_SLACK: u64 = 600;

/// Most entries kept (the oldest-seen remembered ones go first).
const MAX_ENTRIES: usize = 256;

/// Most addresses kept per entry.
const MAX_ADDRS: usize = 8;

/// Why the list could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {source}")]
pub struct SaveError {
    action: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

/// One remembered or manual peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) id: DeviceId,
    pub(crate) name: PeerName,
    /// QUIC (UDP) addresses, preferred first.
    pub(crate) addrs: Vec<SocketAddr>,
    /// TCP port on the same IPs.
    pub(crate) tcp_port: Option<u16>,
    /// Added with `share peers add` (kept listed even when offline).
    #[serde(default)]
    pub(crate) manual: bool,
    /// Seconds since the Unix epoch when it last answered or was seen.
    pub(crate) last_seen: u64,
}

impl Entry {
    pub(super) fn target(&self) -> Target {
        Target::device(self.id, &self.addrs, self.tcp_port)
    }

    fn source(&self) -> PeerSource {
        if self.manual {
            PeerSource::Manual
        } else {
            PeerSource::Remembered
        }
    }

    pub(super) fn to_peer(&self) -> Peer {
        Peer {
            id: self.id,
            name: self.name.clone(),
            addrs: self.addrs.clone(),
            tcp_port: self.tcp_port,
            version: crate::protocol::VERSION,
            source: self.source(),
            last_seen: seen_at(self.last_seen).unwrap_or(UNIX_EPOCH),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PeersFile {
    version: u32,
    peers: Vec<Entry>,
}

/// The remembered and manual peers, persisted in `peers.json`.
pub struct Remembered {
    path: PathBuf,
    entries: Mutex<BTreeMap<DeviceId, Entry>>,
    /// Asks the maintenance loop for a probe round now.
    wake: tokio::sync::Notify,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `secs` after the Unix epoch, if that is a time this system can hold
/// and not more than a day ahead of its clock; `None` for a value only a
/// corrupt or hand-edited file has.
fn seen_at(secs: u64) -> Option<SystemTime> {
    let time = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    let latest = SystemTime::now().checked_add(Duration::from_secs(86_400))?;
    (time <= latest).then_some(time)
}

fn to_unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Remembered {
    /// Loads `peers.json` from `state_dir`. A missing file is an empty
    /// list; an unreadable or corrupt one is moved aside and reported in
    /// the returned warning.
    pub fn load(state_dir: &Path) -> (Self, Option<String>) {
        let path = state_dir.join(PEERS_FILE);
        let mut warning = None;
        let entries = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<PeersFile>(&bytes) {
                Ok(file) => {
                    let mut impossible = Vec::new();
                    let entries = file
                        .peers
                        .into_iter()
                        .take(MAX_ENTRIES)
                        .map(|mut e| {
                            e.addrs.truncate(MAX_ADDRS);
                            if seen_at(e.last_seen).is_none() {
                                impossible.push(format!("{:?}", e.name));
                                e.last_seen = 0;
                            }
                            (e.id, e)
                        })
                        .collect();
                    if !impossible.is_empty() {
                        warning = Some(format!(
                            "{} gives an impossible last-seen time for {}; treating {} as never seen (the file may be damaged)",
                            path.display(),
                            impossible.join(", "),
                            if impossible.len() == 1 { "it" } else { "them" }
                        ));
                    }
                    entries
                }
                Err(e) => {
                    let aside = path.with_extension("json.corrupt");
                    let _ = fs::rename(&path, &aside);
                    warning = Some(format!(
                        "{} was corrupt ({e}); moved to {} and starting without remembered peers",
                        path.display(),
                        aside.display()
                    ));
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                warning = Some(format!(
                    "cannot read {}: {e}; starting without remembered peers",
                    path.display()
                ));
                BTreeMap::new()
            }
        };
        (
            Self {
                path,
                entries: Mutex::new(entries),
                wake: tokio::sync::Notify::new(),
            },
            warning,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<DeviceId, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An authenticated connection from `id` arrived: if it is a
    /// remembered or manual peer the table does not list, probe now.
    pub(crate) fn heard_from(&self, id: &DeviceId, peers: &PeerTable) {
        if peers.get(id).is_none() && self.lock().contains_key(id) {
            self.wake.notify_one();
        }
    }

    /// All entries.
    pub(crate) fn list(&self) -> Vec<Entry> {
        self.lock().values().cloned().collect()
    }

    /// Writes the list atomically.
    pub(crate) fn save(&self) -> Result<(), SaveError> {
        let file = PeersFile {
            version: 1,
            peers: self.list(),
        };
        let err = |action, source| SaveError {
            action,
            path: self.path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| err("encode", std::io::Error::other(e)))?;
        crate::state_file::replace(&self.path, &json).map_err(|e| err("write", e))?;
        Ok(())
    }

    /// Adds or replaces an entry. Returns whether anything changed.
    fn upsert(&self, entry: Entry) -> bool {
        let mut entries = self.lock();
        if entries.get(&entry.id) == Some(&entry) {
            return false;
        }
        entries.insert(entry.id, entry);
        if entries.len() > MAX_ENTRIES {
            // Drop the remembered entry seen longest ago.
            if let Some(oldest) = entries
                .values()
                .filter(|e| !e.manual)
                .min_by_key(|e| e.last_seen)
                .map(|e| e.id)
            {
                entries.remove(&oldest);
            }
        }
        true
    }

    fn remove(&self, id: &DeviceId) -> Option<Entry> {
        self.lock().remove(id)
    }

    /// Brings the list up to date with what mDNS shows: trusted (or
    /// manual) devices mDNS sees get their current addresses; remembered
    /// devices that are no longer trusted are forgotten. Returns whether
    /// the file needs writing.
    pub(crate) fn sync(&self, peers: &PeerTable, trust: &TrustStore) -> bool {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|id, e| e.manual || trust.is_trusted(id));
        let mut dirty = entries.len() != before;
        for peer in peers.list() {
            if peer.source != PeerSource::Mdns {
                continue;
            }
            let existing = entries.get(&peer.id);
            let manual = existing.is_some_and(|e| e.manual);
            if !manual && !trust.is_trusted(&peer.id) {
                continue;
            }
            let mut addrs = peer.addrs.clone();
            addrs.truncate(MAX_ADDRS);
            let entry = Entry {
                id: peer.id,
                name: peer.name.clone(),
                addrs,
                tcp_port: peer.tcp_port,
                manual,
                last_seen: to_unix(peer.last_seen),
            };
            let changed = match existing {
                None => true,
                Some(old) => {
                    old.name != entry.name
                        || old.addrs != entry.addrs
                        || old.tcp_port != entry.tcp_port
                        || entry.last_seen.saturating_sub(old.last_seen) > LAST_SEEN_SLACK
                }
            };
            if existing.is_none_or(|old| old.last_seen <= entry.last_seen) {
                entries.insert(peer.id, entry);
            }
            dirty |= changed;
        }
        dirty
    }
}

impl Peers {
    /// Keeps the list in sync and re-probes peers mDNS does not see, until
    /// `cancel`; writes the list one last time on the way out.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut changes = self.table.subscribe();
        let mut sync_tick = tokio::time::interval(SYNC_INTERVAL);
        sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probe_tick = tokio::time::interval(PROBE_INTERVAL);
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = sync_tick.tick() => self.sync(),
                r = changes.changed() => {
                    if r.is_err() {
                        break;
                    }
                    self.sync();
                }
                _ = probe_tick.tick() => {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = self.probe_all() => {}
                    }
                }
                () = self.remembered.wake.notified() => {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = self.probe_all() => {}
                    }
                }
            }
        }
        self.sync();
    }

    fn sync(&self) {
        if self.remembered.sync(&self.table, &self.trust) {
            self.save();
        }
    }

    fn save(&self) {
        if let Err(e) = self.remembered.save() {
            tracing::warn!("{e}");
        }
    }

    /// Probes, concurrently, every entry mDNS does not see.
    async fn probe_all(self: &Arc<Self>) {
        let mut probes = tokio::task::JoinSet::new();
        for entry in self.remembered.list() {
            if self.table.seen_by_mdns(&entry.id) || entry.addrs.is_empty() {
                continue;
            }
            let peers = self.clone();
            probes.spawn(async move {
                let result = peers
                    .connector
                    .identify(&entry.target(), Preference::Auto, super::IDENTIFY_TIMEOUT)
                    .await;
                (entry, result)
            });
        }
        let mut dirty = false;
        while let Some(joined) = probes.join_next().await {
            let Ok((entry, result)) = joined else {
                continue;
            };
            dirty |= self.apply_probe(entry, result);
        }
        if dirty {
            self.save();
        }
    }

    /// Folds a probe of an entry's last addresses (pinned to its ID) into
    /// the list and the peer table. Returns whether the list needs writing.
    fn apply_probe(&self, mut entry: Entry, result: Result<Answered, IdentifyError>) -> bool {
        match result {
            Ok(answered) => {
                let remote = answered.remote;
                tracing::debug!(peer = %entry.name, id = %entry.id.short(), %remote, "remembered peer answered");
                let mut dirty = entry.name != answered.name;
                entry.name = answered.name;
                // The address that answered goes first (QUIC port).
                if let Some(udp) = entry.addrs.iter().find(|a| a.ip() == remote.ip()).copied()
                    && entry.addrs.first() != Some(&udp)
                {
                    entry.addrs.retain(|a| *a != udp);
                    entry.addrs.insert(0, udp);
                    dirty = true;
                }
                let now = unix_now();
                dirty |= now.saturating_sub(entry.last_seen) > LAST_SEEN_SLACK;
                entry.last_seen = now;
                if !self.table.seen_by_mdns(&entry.id) {
                    self.table.upsert_unicast(entry.to_peer());
                }
                self.table
                    .touch_unicast(&entry.id, UNIX_EPOCH + Duration::from_secs(now));
                self.remembered.upsert(entry) && dirty
            }
            Err(e) => {
                tracing::debug!(peer = %entry.name, id = %entry.id.short(), "remembered peer did not answer: {e}");
                if !entry.manual {
                    self.table.remove_manual(&entry.id);
                }
                false
            }
        }
    }

    /// `share peers add HOST:PORT`: learns the device there and keeps it
    /// as a manual peer. Returns what was done, in words.
    ///
    /// # Errors
    /// Not an address, nobody there, this device, an impostor, or the
    /// list could not be saved.
    pub async fn add(&self, text: &str) -> Result<String, PeersError> {
        let addr = parse_addr(text).await?;
        let target = Target {
            expected: None,
            quic: vec![addr],
            tcp: vec![addr],
        };
        let answered = self
            .connector
            .identify(&target, Preference::Auto, super::IDENTIFY_TIMEOUT)
            .await
            .map_err(|error| PeersError::Connect {
                label: addr.to_string(),
                error,
            })?;
        let Answered {
            id,
            name: peer_name,
            transport,
            ..
        } = answered;
        if id == self.own_id {
            return Err(PeersError::IsSelf(addr));
        }
        let mut addrs = vec![addr];
        if let Some(old) = self.remembered.list().into_iter().find(|e| e.id == id) {
            addrs.extend(old.addrs.into_iter().filter(|a| *a != addr));
            addrs.truncate(MAX_ADDRS);
        }
        let entry = Entry {
            id,
            name: peer_name.clone(),
            addrs,
            tcp_port: Some(addr.port()),
            manual: true,
            last_seen: unix_now(),
        };
        self.remembered.upsert(entry.clone());
        self.remembered.save()?;
        self.table.upsert_manual(entry.to_peer());
        tracing::info!(peer = %peer_name, %id, %addr, %transport, "manual peer added");
        Ok(format!(
            "added {peer_name} ({id}) at {addr}; it is kept across restarts and re-checked every {} s",
            PROBE_INTERVAL.as_secs()
        ))
    }

    /// `share peers remove PEER`: forgets a manual or remembered peer.
    /// Returns what was done, in words.
    ///
    /// # Errors
    /// No or several entries match, or the list could not be saved.
    pub fn remove(&self, text: &str) -> Result<String, PeersError> {
        let text = text.trim();
        let by_addr = text.parse::<SocketAddr>().ok();
        let full_id = text.parse::<DeviceId>().ok();
        let found: Vec<Entry> = self
            .remembered
            .list()
            .into_iter()
            .filter(|e| {
                Some(e.id) == full_id
                    || by_addr.is_some_and(|a| {
                        e.addrs
                            .iter()
                            .any(|x| x.ip() == a.ip() && x.port() == a.port())
                    })
                    || e.name.eq_ignore_ascii_case(text)
                    || (text.len() >= 4 && e.id.matches_prefix(text))
            })
            .collect();
        let entry = match <[Entry; 1]>::try_from(found) {
            Ok([one]) => one,
            Err(none) if none.is_empty() => return Err(PeersError::NotListed(text.to_owned())),
            Err(more) => {
                return Err(PeersError::SeveralListed {
                    text: text.to_owned(),
                    ids: more.iter().map(|e| e.id.short()).collect(),
                });
            }
        };
        self.remembered.remove(&entry.id);
        self.remembered.save()?;
        self.table.remove_manual(&entry.id);
        Ok(format!(
            "forgot {} ({}); it is no longer probed (mDNS may still find it)",
            entry.name, entry.id
        ))
    }
}

/// `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`.
async fn parse_addr(text: &str) -> Result<SocketAddr, PeersError> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !text.contains(':') {
        return Err(PeersError::NotAnAddress(text.to_owned()));
    }
    tokio::net::lookup_host(text)
        .await
        .map_err(|e| PeersError::NoSuchHost(format!("cannot resolve {text}: {e}")))?
        .next()
        .ok_or_else(|| PeersError::NoSuchHost(format!("{text} has no address")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn entry(seed: &str, manual: bool) -> Entry {
        Entry {
            id: DeviceId::from_cert_der(seed.as_bytes()),
            name: seed.into(),
            addrs: vec!["10.0.0.2:47000".parse().unwrap()],
            tcp_port: Some(47000),
            manual,
            last_seen: 1_700_000_000,
        }
    }

    #[test]
    fn saves_atomically_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let (store, warning) = Remembered::load(dir.path());
        assert!(warning.is_none());
        assert!(store.list().is_empty());
        assert!(store.upsert(entry("a", true)));
        assert!(!store.upsert(entry("a", true)), "unchanged");
        store.upsert(entry("b", false));
        store.save().unwrap();
        assert!(!dir.path().join("peers.json.tmp").exists());
        let (again, _) = Remembered::load(dir.path());
        assert_eq!(again.list(), store.list());
        let target = entry("a", true).target();
        assert_eq!(target.tcp, target.quic);
        let mut scoped = entry("s", false);
        scoped.addrs = vec![SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            47000,
            0,
            3,
        ))];
        scoped.tcp_port = Some(47001);
        match scoped.target().tcp[..] {
            [SocketAddr::V6(a)] => assert_eq!((a.port(), a.scope_id()), (47001, 3)),
            ref other => panic!("{other:?}"),
        }
        assert_eq!(target.expected, Some(entry("a", true).id));
        assert_eq!(entry("a", true).to_peer().source, PeerSource::Manual);
        assert_eq!(entry("b", false).to_peer().source, PeerSource::Remembered);
    }

    #[test]
    fn corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(PEERS_FILE), b"{nope").unwrap();
        let (store, warning) = Remembered::load(dir.path());
        assert!(warning.unwrap().contains("corrupt"));
        assert!(store.list().is_empty());
        assert!(dir.path().join("peers.json.corrupt").exists());
    }

    /// A last-seen time no clock can hold (a damaged or hand-edited
    /// file) is a warning and "never seen", not a panic when the peer is
    /// listed.
    #[test]
    fn impossible_last_seen_times_are_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let mut far = entry("far", true);
        far.last_seen = u64::MAX;
        let mut future = entry("future", false);
        future.last_seen = unix_now() + 10 * 86_400;
        let fine = entry("fine", false);
        let file = PeersFile {
            version: 1,
            peers: vec![far, future, fine.clone()],
        };
        fs::write(
            dir.path().join(PEERS_FILE),
            serde_json::to_vec(&file).unwrap(),
        )
        .unwrap();
        let (store, warning) = Remembered::load(dir.path());
        let warning = warning.unwrap();
        assert!(
            warning.contains("\"far\"") && warning.contains("\"future\""),
            "{warning}"
        );
        assert!(!warning.contains("\"fine\""), "{warning}");
        for e in store.list() {
            let peer = e.to_peer();
            if e.name == "fine" {
                assert_eq!(to_unix(peer.last_seen), fine.last_seen);
            } else {
                assert_eq!(peer.last_seen, UNIX_EPOCH, "{}", e.name);
            }
        }
    }

    #[test]
    fn sync_remembers_trusted_mdns_peers_only() {
        let dir = tempfile::tempdir().unwrap();
        let trust = TrustStore::load(dir.path()).unwrap();
        let (store, _) = Remembered::load(dir.path());
        let table = PeerTable::new();
        let friend = entry("friend", false);
        let stranger = entry("stranger", false);
        // Discovered by mDNS: simulate with the merged view's source.
        for e in [&friend, &stranger] {
            let mut peer = e.to_peer();
            peer.source = PeerSource::Mdns;
            table.upsert_unicast(peer);
        }
        // upsert_unicast never stores `Mdns`, so nothing is remembered yet.
        assert!(!store.sync(&table, &trust));
        assert!(store.list().is_empty());

        // Entries that are not trusted are forgotten on sync.
        store.upsert(stranger.clone());
        trust.trust(friend.id, &"friend".into()).unwrap();
        store.upsert(friend.clone());
        assert!(store.sync(&table, &trust));
        let ids: Vec<DeviceId> = store.list().iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![friend.id]);
    }

    #[tokio::test]
    async fn addresses_are_parsed() {
        assert_eq!(
            parse_addr(" 10.0.0.5:47000 ").await.unwrap(),
            "10.0.0.5:47000".parse::<SocketAddr>().unwrap()
        );
        assert!(parse_addr("[::1]:5").await.is_ok());
        let err = parse_addr("desktop").await.unwrap_err();
        assert!(matches!(err, PeersError::NotAnAddress(_)), "{err}");
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
    }
}
