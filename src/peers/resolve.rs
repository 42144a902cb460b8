//! Turning what a user typed (`desktop`, `ABCD12`, `10.0.0.5:47000`) into
//! a dial target.
//!
//! Names are for humans and can collide, so a name that matches several
//! devices is an error listing their IDs, unless exactly one of them is
//! trusted. A name that belongs to a trusted device but is now announced by
//! a different ID is refused loudly: that is what an impostor looks like.
//!
//! The [`Resolver`] reads the live peer table and the trust store; every
//! command that takes a PEER goes through it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::discovery::{Peer, PeerTable};
use crate::identity::DeviceId;
use crate::identity::trust::TrustStore;
use crate::localsend::devices::{Devices, LocalSendDevice};
use crate::safe_text::PeerName;
use crate::transport::dial::Target;

/// How long `share send NAME` waits for a peer that discovery has not
/// seen yet (a daemon that just started needs ~1-2 s to hear everyone).
const DISCOVERY_GRACE: Duration = Duration::from_secs(3);

/// Why what the user typed does not name one reachable device.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Several devices match a name or ID prefix.
    #[error("{} devices match \"{text}\" ({}); use a device-ID prefix instead", ids.len(), ids.join(", "))]
    Ambiguous {
        /// What the user typed.
        text: String,
        /// Short IDs of the matches.
        ids: Vec<String>,
    },
    /// A device announces a trusted device's name with another identity.
    #[error(
        "identity mismatch: \"{name}\" is trusted with ID {} but the device on the network has ID {}; \
         if it was reinstalled, run `share untrust {}` and trust it again",
        trusted.short(), announced.short(), trusted.short()
    )]
    Impostor {
        /// The name.
        name: PeerName,
        /// The trusted device of that name.
        trusted: DeviceId,
        /// The device announcing it.
        announced: DeviceId,
    },
    /// A trusted device that discovery does not see.
    #[error(
        "\"{0}\" is trusted but not visible on the network; check that its daemon runs and that UDP 5353 (mDNS) is allowed, or use HOST:PORT"
    )]
    TrustedNotVisible(String),
    /// Nothing of that name or ID prefix.
    #[error("no peer called \"{0}\"; `share peers` lists visible devices, or use HOST:PORT")]
    NotFound(String),
    /// An IP address without the port.
    #[error(
        "\"{text}\" is an address without a port; add the peer's service port ({port} unless it was changed): {example}",
        port = crate::config::DEFAULT_PORT,
        example = with_default_port(text)
    )]
    NoPort {
        /// What the user typed.
        text: String,
    },
    /// This device's own name.
    #[error("\"{0}\" is this device's own name; name another device (`share peers` lists them)")]
    IsSelf(String),
    /// Too short to be taken as a device-ID prefix, though IDs start so.
    #[error(
        "\"{0}\" is too short for a device-ID prefix: type at least {MIN_ID_PREFIX} characters (`share peers` shows the IDs)"
    )]
    ShortPrefix(String),
    /// A name given while discovery is off.
    #[error("mDNS is off (--no-mdns), so peers must be given as HOST:PORT, not \"{0}\"")]
    MdnsOff(String),
    /// A LocalSend address while LocalSend is off.
    #[error(
        "\"{0}\" is a LocalSend device, and LocalSend is off; start the daemon with --localsend"
    )]
    LocalSendOff(String),
}

/// The shortest device-ID prefix accepted: shorter ones too often match
/// several devices, or a name.
pub const MIN_ID_PREFIX: usize = 4;

/// `text` (an IP address) with the default service port, as typed.
fn with_default_port(text: &str) -> String {
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("{ip}:{}", crate::config::DEFAULT_PORT).replacen(
            &ip.to_string(),
            &format!("[{ip}]"),
            1,
        ),
        _ => format!("{text}:{}", crate::config::DEFAULT_PORT),
    }
}

/// The usual mistake `text` is, if it names no device: an IP address
/// without the port, or this device's own name. Pure, so that the hints
/// are tested without a network.
pub fn typing_mistake(text: &str, own_name: &str) -> Option<ResolveError> {
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Some(ResolveError::NoPort {
            text: bare.to_owned(),
        });
    }
    // The comparison names are looked up with (`PeerTable::find_by_name`).
    (text.to_lowercase() == own_name.to_lowercase()).then(|| ResolveError::IsSelf(text.to_owned()))
}

/// The prefix that makes `HOST:PORT` a LocalSend device whatever its port.
pub const LOCALSEND_SCHEME: &str = "localsend://";

/// Why a device name or ID prefix names no single device.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// Nothing matches.
    #[error("no device matches \"{0}\"; see `share peers`")]
    NotFound(String),
    /// Several match.
    #[error("{1} devices match \"{0}\"; use a longer device-ID prefix")]
    Ambiguous(String, usize),
}

/// A resolved peer: where to dial and what to call it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Where to dial, and the identity to require when known.
    pub target: Target,
    /// What to call it in messages.
    pub label: String,
}

/// Where a send goes: a lanshare daemon, or a LocalSend app.
#[derive(Debug, Clone)]
pub enum Route {
    /// A lanshare daemon (the native protocol).
    Native(Resolved),
    /// A LocalSend app.
    LocalSend(LocalSendTarget),
}

/// A LocalSend device to send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSendTarget {
    /// Its HTTPS server.
    pub addr: SocketAddr,
    /// The fingerprint to pin: from discovery or the trust store. `None`
    /// only for a `HOST:PORT` nobody announced (first contact: the
    /// fingerprint is read off the handshake).
    pub fingerprint: Option<DeviceId>,
    /// What to call it in messages.
    pub label: PeerName,
}

/// Resolves what users type against the peer table and the trust store.
#[derive(Clone)]
pub struct Resolver {
    peers: PeerTable,
    trust: TrustStore,
    /// Whether discovery runs (names can appear) or only addresses work.
    mdns: bool,
    /// This device's name, which a user may type by mistake.
    own_name: String,
    /// The LocalSend devices, when LocalSend is on.
    localsend: Option<Devices>,
}

impl Resolver {
    /// A resolver over `peers` and `trust`; `mdns` says whether discovery
    /// runs (otherwise only addresses can be resolved); `own_name` is this
    /// device's.
    pub fn new(peers: PeerTable, trust: TrustStore, mdns: bool, own_name: &str) -> Self {
        Self {
            peers,
            trust,
            mdns,
            own_name: own_name.to_owned(),
            localsend: None,
        }
    }

    /// Also resolves the LocalSend devices in `devices` (for sends).
    #[must_use]
    pub fn with_localsend(mut self, devices: Devices) -> Self {
        self.localsend = Some(devices);
        self
    }

    /// Where a send to `text` goes: a LocalSend device named by its alias,
    /// a fingerprint prefix (hex), its `HOST:PORT`, `HOST:53317` (LocalSend's
    /// port) or `localsend://HOST:PORT`; otherwise as
    /// [`resolve`](Self::resolve). Waits briefly for discovery if nothing
    /// matches yet.
    ///
    /// # Errors
    /// Nothing or several match, the match is an impostor, or a LocalSend
    /// address is given while LocalSend is off.
    pub async fn route(&self, text: &str) -> Result<Route, ResolveError> {
        let text = text.trim();
        let explicit = text.strip_prefix(LOCALSEND_SCHEME);
        let Some(devices) = &self.localsend else {
            if explicit.is_some() {
                return Err(ResolveError::LocalSendOff(text.to_owned()));
            }
            return self.resolve(text).await.map(Route::Native);
        };
        let text = explicit.unwrap_or(text);
        let addr = match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => resolve_host_port(text).await.ok(),
        };
        if let Some(addr) = addr {
            let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
            if let Some(device) = devices.list().into_iter().find(|d| d.addr == addr) {
                return Ok(Route::LocalSend(LocalSendTarget {
                    addr,
                    fingerprint: Some(device.fingerprint),
                    label: device.alias,
                }));
            }
            if explicit.is_some() || addr.port() == crate::localsend::wire::DEFAULT_PORT {
                return Ok(Route::LocalSend(LocalSendTarget {
                    addr,
                    fingerprint: None,
                    label: PeerName::from(addr.to_string().as_str()),
                }));
            }
            return Ok(Route::Native(self.resolve_addr(addr)));
        }
        if let Some(mistake) = typing_mistake(text, &self.own_name)
            && matches!(self.resolve_known(text), Ok(None))
            && self.localsend_known(text, devices).is_empty()
        {
            return Err(mistake);
        }
        let deadline = tokio::time::Instant::now() + DISCOVERY_GRACE;
        let mut native_changes = self.peers.subscribe();
        let mut localsend_changes = devices.subscribe();
        loop {
            let native = self.resolve_known(text)?;
            let found = self.localsend_known(text, devices);
            // A lanshare daemon with LocalSend on is listed under both
            // protocols; the native one is the better way to reach it.
            if let Some(resolved) = native {
                return Ok(Route::Native(resolved));
            }
            if !found.is_empty() {
                return self.localsend_one(text, found);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.not_found(text));
            }
            let changed = async {
                tokio::select! {
                    r = native_changes.changed() => r.is_ok(),
                    r = localsend_changes.changed() => r.is_ok(),
                }
            };
            if !matches!(tokio::time::timeout_at(deadline, changed).await, Ok(true)) {
                return Err(self.not_found(text));
            }
        }
    }

    /// The LocalSend devices `text` names: by alias, else by a fingerprint
    /// (hex) or device-ID prefix of at least 4 characters.
    fn localsend_known(&self, text: &str, devices: &Devices) -> Vec<LocalSendDevice> {
        let all = devices.list();
        let by_alias: Vec<LocalSendDevice> = all
            .iter()
            .filter(|d| d.alias.eq_ignore_ascii_case(text))
            .cloned()
            .collect();
        if !by_alias.is_empty() || text.len() < 4 {
            return by_alias;
        }
        all.into_iter()
            .filter(|d| {
                d.fingerprint.matches_hex_prefix(text) || d.fingerprint.matches_prefix(text)
            })
            .collect()
    }

    /// The one LocalSend device of `found` that `text` means: the only
    /// one, or the only trusted one.
    fn localsend_one(
        &self,
        text: &str,
        found: Vec<LocalSendDevice>,
    ) -> Result<Route, ResolveError> {
        let ids = found
            .iter()
            .map(|d| d.fingerprint.to_hex()[..8].to_owned())
            .collect();
        let trusted: Vec<LocalSendDevice> = found
            .iter()
            .filter(|d| self.trust.is_trusted(&d.fingerprint))
            .cloned()
            .collect();
        match (
            <[LocalSendDevice; 1]>::try_from(found),
            <[LocalSendDevice; 1]>::try_from(trusted),
        ) {
            (Ok([one]), _) | (_, Ok([one])) => self.localsend_route(one),
            _ => Err(ResolveError::Ambiguous {
                text: text.to_owned(),
                ids,
            }),
        }
    }

    fn localsend_route(&self, device: LocalSendDevice) -> Result<Route, ResolveError> {
        if let Some(trusted) = self.trust.impostor_of(&device.alias, &device.fingerprint) {
            tracing::warn!(name = %device.alias, announced = %device.fingerprint.to_hex(), trusted = %trusted.id,
                "a LocalSend device uses the name of a trusted device with a different certificate");
            return Err(ResolveError::Impostor {
                name: device.alias,
                trusted: trusted.id,
                announced: device.fingerprint,
            });
        }
        Ok(Route::LocalSend(LocalSendTarget {
            addr: device.addr,
            fingerprint: Some(device.fingerprint),
            label: device.alias,
        }))
    }

    /// Resolves `text`, waiting briefly for discovery if needed.
    ///
    /// # Errors
    /// Nothing or several match, or the match is an impostor.
    pub async fn resolve(&self, text: &str) -> Result<Resolved, ResolveError> {
        let text = text.trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(self.resolve_addr(addr));
        }
        if let Ok(addr) = resolve_host_port(text).await {
            return Ok(self.resolve_addr(addr));
        }
        if let Some(mistake) = typing_mistake(text, &self.own_name)
            && matches!(self.resolve_known(text), Ok(None))
        {
            return Err(mistake);
        }
        let deadline = tokio::time::Instant::now() + DISCOVERY_GRACE;
        let mut changes = self.peers.subscribe();
        loop {
            match self.resolve_known(text) {
                Ok(Some(resolved)) => return Ok(resolved),
                Err(e) => return Err(e),
                Ok(None) => {}
            }
            if !self.mdns || tokio::time::Instant::now() >= deadline {
                return Err(self.not_found(text));
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(self.not_found(text));
            }
        }
    }

    fn resolve_addr(&self, addr: SocketAddr) -> Resolved {
        // If discovery knows who lives there, pin that identity.
        let known = self.peers.list().into_iter().find(|p| {
            p.addrs
                .iter()
                .any(|a| a.ip() == addr.ip() && a.port() == addr.port())
        });
        Resolved {
            target: Target {
                expected: known.as_ref().map(|p| p.id),
                quic: vec![addr],
                tcp: vec![addr],
            },
            label: known.map_or_else(|| addr.to_string(), |p| p.name.to_string()),
        }
    }

    /// Whether `text` names a device that was ever seen: an address
    /// (whoever answers there), a visible device or a trusted one. For
    /// `share send --queue`, where a typo would otherwise wait forever.
    ///
    /// # Errors
    /// `text` is a usual mistake ([`typing_mistake`]).
    pub fn seen(&self, text: &str) -> Result<bool, ResolveError> {
        let text = text.trim();
        let host_port = text
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        let bare_ip = text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok();
        if text.parse::<SocketAddr>().is_ok() || (host_port && !bare_ip) {
            return Ok(true);
        }
        let known = !matches!(self.resolve_known(text), Ok(None)) || self.find_device(text).is_ok();
        match typing_mistake(text, &self.own_name) {
            Some(mistake) if !known => Err(mistake),
            _ if !known && self.short_prefix(text) => {
                Err(ResolveError::ShortPrefix(text.to_owned()))
            }
            _ => Ok(known),
        }
    }

    /// `Ok(None)`: nothing matches (yet).
    fn resolve_known(&self, text: &str) -> Result<Option<Resolved>, ResolveError> {
        let mut matches = self.peers.find_by_name(text);
        if matches.is_empty() && text.len() >= MIN_ID_PREFIX {
            matches = self.peers.find_by_id_prefix(text);
        }
        let peer = match matches.len() {
            0 => return Ok(None),
            1 => matches.remove(0),
            _ => {
                let trusted: Vec<Peer> = matches
                    .iter()
                    .filter(|p| self.trust.is_trusted(&p.id))
                    .cloned()
                    .collect();
                match <[Peer; 1]>::try_from(trusted) {
                    Ok([one]) => one,
                    Err(_) => {
                        return Err(ResolveError::Ambiguous {
                            text: text.to_owned(),
                            ids: matches.iter().map(|p| p.id.short()).collect(),
                        });
                    }
                }
            }
        };
        if let Some(trusted) = self.trust.impostor_of(&peer.name, &peer.id) {
            tracing::warn!(name = %peer.name, announced = %peer.id, trusted = %trusted.id, "a device announces the name of a trusted device with a different identity");
            return Err(ResolveError::Impostor {
                name: peer.name,
                trusted: trusted.id,
                announced: peer.id,
            });
        }
        Ok(Some(Resolved {
            label: peer.name.to_string(),
            target: Target::device(peer.id, &peer.addrs, peer.tcp_port),
        }))
    }

    /// Whether `text` is the start of a visible device's ID, too short to
    /// be taken as one.
    fn short_prefix(&self, text: &str) -> bool {
        text.len() < MIN_ID_PREFIX && self.peers.list().iter().any(|p| p.id.matches_prefix(text))
    }

    fn not_found(&self, text: &str) -> ResolveError {
        if self.short_prefix(text) {
            return ResolveError::ShortPrefix(text.to_owned());
        }
        let text = text.to_owned();
        if !self.trust.find_by_name(&text).is_empty() {
            ResolveError::TrustedNotVisible(text)
        } else if self.mdns {
            ResolveError::NotFound(text)
        } else {
            ResolveError::MdnsOff(text)
        }
    }

    /// Finds a device by name, ID prefix or full ID among visible peers
    /// and the trust store (for `share trust` / `untrust`).
    ///
    /// # Errors
    /// Nothing or several match.
    pub fn find_device(&self, text: &str) -> Result<(DeviceId, PeerName), LookupError> {
        if let Ok(id) = text
            .parse::<DeviceId>()
            .or_else(|e| DeviceId::from_hex(text).ok_or(e))
        {
            let name = self
                .peers
                .get(&id)
                .map(|p| p.name)
                .or_else(|| {
                    let devices = self.localsend.as_ref()?;
                    devices.get(&id).map(|d| d.alias)
                })
                .or_else(|| {
                    self.trust
                        .list()
                        .into_iter()
                        .find(|t| t.id == id)
                        .map(|t| t.name)
                })
                .unwrap_or_else(|| PeerName::new("", &id.short()));
            return Ok((id, name));
        }
        let mut found: Vec<(DeviceId, PeerName)> = self
            .peers
            .find_by_name(text)
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect();
        if found.is_empty() && text.len() >= MIN_ID_PREFIX {
            found = self
                .peers
                .find_by_id_prefix(text)
                .into_iter()
                .map(|p| (p.id, p.name))
                .collect();
        }
        if found.is_empty()
            && let Some(devices) = &self.localsend
        {
            found = self
                .localsend_known(text, devices)
                .into_iter()
                .map(|d| (d.fingerprint, d.alias))
                .collect();
        }
        if found.is_empty() {
            found = self
                .trust
                .list()
                .into_iter()
                .filter(|t| {
                    t.name.eq_ignore_ascii_case(text)
                        || (text.len() >= MIN_ID_PREFIX && t.id.matches_prefix(text))
                })
                .map(|t| (t.id, t.name))
                .collect();
        }
        match <[(DeviceId, PeerName); 1]>::try_from(found) {
            Ok([one]) => Ok(one),
            Err(found) if found.is_empty() => Err(LookupError::NotFound(text.to_owned())),
            Err(found) => Err(LookupError::Ambiguous(text.to_owned(), found.len())),
        }
    }
}

/// `host:port` with a DNS name (e.g. `desktop.lan:47000`).
async fn resolve_host_port(text: &str) -> std::io::Result<SocketAddr> {
    if !text.contains(':') {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    tokio::net::lookup_host(text)
        .await?
        .next()
        .ok_or_else(|| std::io::ErrorKind::NotFound.into())
}

#[cfg(test)]
mod tests {
    use std::time::{Instant, SystemTime};

    use super::*;
    use crate::discovery::PeerSource;
    use crate::localsend::wire::Device;

    fn id(n: u8) -> DeviceId {
        DeviceId::from_bytes([n; 32])
    }

    /// A resolver over one native peer `desktop` (ID 1) and the LocalSend
    /// devices `pixel` (2) and, under the native peer's name, `desktop` (3).
    fn resolver(trust: TrustStore) -> (Resolver, Devices) {
        let table = PeerTable::new();
        table.upsert_unicast(Peer {
            id: id(1),
            name: "desktop".into(),
            addrs: vec!["10.0.0.1:47000".parse().unwrap()],
            tcp_port: Some(47000),
            version: 1,
            source: PeerSource::Manual,
            last_seen: SystemTime::now(),
        });
        let devices = Devices::default();
        let now = Instant::now();
        devices.proven(
            id(2),
            &Device::test_phone("pixel"),
            "10.0.0.2:53317".parse().unwrap(),
            now,
        );
        devices.proven(
            id(3),
            &Device::test_phone("desktop"),
            "10.0.0.1:53317".parse().unwrap(),
            now,
        );
        let resolver = Resolver::new(table, trust, false, "laptop").with_localsend(devices.clone());
        (resolver, devices)
    }

    fn localsend(route: Route) -> LocalSendTarget {
        match route {
            Route::LocalSend(target) => target,
            Route::Native(native) => panic!("native route to {}", native.label),
        }
    }

    #[tokio::test]
    async fn localsend_devices_are_reached_by_alias_fingerprint_or_address() {
        let tmp = tempfile::tempdir().unwrap();
        let (resolver, _) = resolver(TrustStore::load(tmp.path()).unwrap());
        let pixel = localsend(resolver.route("Pixel").await.unwrap());
        assert_eq!(pixel.fingerprint, Some(id(2)), "pinned to the proven hash");
        assert_eq!(pixel.addr, "10.0.0.2:53317".parse().unwrap());
        let by_hex = localsend(
            resolver
                .route(&id(2).to_hex()[..6].to_lowercase())
                .await
                .unwrap(),
        );
        assert_eq!(by_hex.fingerprint, Some(id(2)));
        let by_addr = localsend(resolver.route("10.0.0.2:53317").await.unwrap());
        assert_eq!(
            (by_addr.fingerprint, by_addr.label.as_str()),
            (Some(id(2)), "pixel")
        );
        // An unknown HOST:53317 is a LocalSend device met for the first time.
        let fresh = localsend(resolver.route("10.0.0.9:53317").await.unwrap());
        assert_eq!(fresh.fingerprint, None);
        let other_port = localsend(resolver.route("localsend://10.0.0.9:4000").await.unwrap());
        assert_eq!(other_port.addr, "10.0.0.9:4000".parse().unwrap());
        // Other ports are lanshare's.
        assert!(matches!(
            resolver.route("10.0.0.9:47000").await,
            Ok(Route::Native(_))
        ));
    }

    #[tokio::test]
    async fn a_lanshare_daemon_listed_under_both_protocols_is_reached_natively() {
        let tmp = tempfile::tempdir().unwrap();
        let (resolver, _) = resolver(TrustStore::load(tmp.path()).unwrap());
        assert!(matches!(
            resolver.route("desktop").await,
            Ok(Route::Native(_))
        ));
    }

    #[tokio::test]
    async fn several_localsend_devices_of_one_name_need_trust_or_a_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let trust = TrustStore::load(tmp.path()).unwrap();
        let (resolver, devices) = resolver(trust.clone());
        devices.proven(
            id(4),
            &Device::test_phone("pixel"),
            "10.0.0.4:53317".parse().unwrap(),
            Instant::now(),
        );
        assert!(matches!(
            resolver.route("pixel").await,
            Err(ResolveError::Ambiguous { .. })
        ));
        trust.trust(id(4), &PeerName::from("pixel")).unwrap();
        assert_eq!(
            localsend(resolver.route("pixel").await.unwrap()).fingerprint,
            Some(id(4))
        );
    }

    #[tokio::test]
    async fn a_trusted_name_with_another_certificate_is_an_impostor() {
        let tmp = tempfile::tempdir().unwrap();
        let trust = TrustStore::load(tmp.path()).unwrap();
        trust.trust(id(9), &PeerName::from("pixel")).unwrap();
        let (resolver, _) = resolver(trust);
        assert!(matches!(
            resolver.route("pixel").await,
            Err(ResolveError::Impostor { .. })
        ));
    }

    #[tokio::test]
    async fn without_localsend_its_addresses_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let resolver = Resolver::new(
            PeerTable::new(),
            TrustStore::load(tmp.path()).unwrap(),
            false,
            "laptop",
        );
        assert!(matches!(
            resolver.route("localsend://10.0.0.2:53317").await,
            Err(ResolveError::LocalSendOff(_))
        ));
        assert!(matches!(
            resolver.route("10.0.0.2:53317").await,
            Ok(Route::Native(_))
        ));
    }

    #[tokio::test]
    async fn with_localsend_on_aliases_count_as_seen_and_mistakes_get_their_hints() {
        let tmp = tempfile::tempdir().unwrap();
        let (resolver, _) = resolver(TrustStore::load(tmp.path()).unwrap());
        // `share send --queue pixel` queues for a LocalSend device by its alias.
        assert!(resolver.seen("pixel").unwrap());
        assert!(!resolver.seen("tablet").unwrap());
        // The hints of the native resolver hold on the LocalSend route too.
        assert!(matches!(
            resolver.route("10.0.0.2").await,
            Err(ResolveError::NoPort { .. })
        ));
        assert!(matches!(
            resolver.route("Laptop").await,
            Err(ResolveError::IsSelf(_))
        ));
    }

    #[test]
    fn an_address_without_a_port_suggests_the_default_port() {
        for (typed, suggested) in [
            ("10.0.0.5", "10.0.0.5:47000"),
            ("fe80::1", "[fe80::1]:47000"),
            ("[2001:db8::5]", "[2001:db8::5]:47000"),
        ] {
            let hint = typing_mistake(typed, "laptop").unwrap().to_string();
            assert!(hint.ends_with(&format!(": {suggested}")), "{hint}");
            assert!(hint.contains("without a port"), "{hint}");
        }
        assert!(typing_mistake("desktop", "laptop").is_none());
        assert!(typing_mistake("desktop.lan", "laptop").is_none());
    }

    #[test]
    fn ones_own_name_is_named_so() {
        let hint = typing_mistake("LAPTOP", "laptop").unwrap().to_string();
        assert!(hint.contains("this device's own name"), "{hint}");
    }

    #[test]
    fn a_short_prefix_says_the_minimum() {
        let hint = ResolveError::ShortPrefix("AXN".into()).to_string();
        assert!(hint.contains("at least 4 characters"), "{hint}");
    }
}
