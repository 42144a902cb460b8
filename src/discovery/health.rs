//! What mDNS has shown to work, per interface, for `share doctor`.
//!
//! "Discovery does not work" has three different causes with three
//! different fixes, and the evidence for each comes from the browse
//! results the worker sees anyway:
//!
//! - **Our own announcement never came back** on an interface: mdns-sd
//!   sends with multicast loopback on, so our own packets are received like
//!   anyone else's. If they are not, multicast (UDP 5353) is blocked on
//!   *this host* (a local firewall, or the interface cannot do multicast).
//! - **Our announcement came back but no peer ever answered**: multicast
//!   works here, but either no other lanshare device is on that link, or
//!   the network filters multicast between devices (Wi-Fi client
//!   isolation, IGMP snooping without a querier, a firewall on the path).
//!   A peer that is reachable by unicast but never seen over mDNS tells
//!   these two apart.
//! - **Peers answered**: discovery works on that interface.
//!
//! mdns-sd tags every resolved address with the interfaces it arrived on,
//! so all three are known per interface. The state is only ever added to
//! (plus the latest errors); it is tiny and bounded by the number of
//! interfaces and peers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use crate::identity::DeviceId;

/// How many recent mDNS errors are kept.
const MAX_ERRORS: usize = 8;

/// Shared, cheaply cloneable record of mDNS evidence.
#[derive(Clone, Debug, Default)]
pub struct MdnsHealth {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// Interface -> when our own announcement was last received on it.
    own: HashMap<String, SystemTime>,
    /// Interface -> peers resolved on it, and when.
    peers: HashMap<String, HashMap<DeviceId, SystemTime>>,
    /// Interface -> when we last announced on it.
    announced: HashMap<String, SystemTime>,
    /// Recent mDNS errors, oldest first.
    errors: Vec<String>,
}

/// Evidence for one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceEvidence {
    /// Our own announcement came back on it (last time).
    pub own_seen: Option<SystemTime>,
    /// We announced on it (last time).
    pub announced: Option<SystemTime>,
    /// Peers resolved on it (ever), with the last time.
    pub peers: Vec<(DeviceId, SystemTime)>,
}

impl MdnsHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Our own instance was resolved with addresses seen on `interfaces`.
    pub(crate) fn own_seen(&self, interfaces: &[String], at: SystemTime) {
        let mut state = self.lock();
        for name in interfaces {
            state.own.insert(name.clone(), at);
        }
    }

    /// Peer `id` was resolved with addresses seen on `interfaces`.
    pub(crate) fn peer_seen(&self, id: DeviceId, interfaces: &[String], at: SystemTime) {
        let mut state = self.lock();
        for name in interfaces {
            state.peers.entry(name.clone()).or_default().insert(id, at);
        }
    }

    /// We announced on `interface`.
    pub(crate) fn announced(&self, interface: &str, at: SystemTime) {
        self.lock().announced.insert(interface.to_owned(), at);
    }

    /// mdns-sd reported an error.
    pub(crate) fn error(&self, message: String) {
        let mut state = self.lock();
        if state.errors.len() >= MAX_ERRORS {
            state.errors.remove(0);
        }
        state.errors.push(message);
    }

    /// The evidence for every interface mentioned so far.
    pub fn interfaces(&self) -> BTreeMap<String, InterfaceEvidence> {
        let state = self.lock();
        let mut out: BTreeMap<String, InterfaceEvidence> = BTreeMap::new();
        for (name, at) in &state.own {
            out.entry(name.clone()).or_default().own_seen = Some(*at);
        }
        for (name, at) in &state.announced {
            out.entry(name.clone()).or_default().announced = Some(*at);
        }
        for (name, peers) in &state.peers {
            let mut list: Vec<(DeviceId, SystemTime)> =
                peers.iter().map(|(id, at)| (*id, *at)).collect();
            list.sort();
            out.entry(name.clone()).or_default().peers = list;
        }
        out
    }

    /// The latest mDNS errors, oldest first.
    pub fn errors(&self) -> Vec<String> {
        self.lock().errors.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_per_interface() {
        let health = MdnsHealth::default();
        let t = SystemTime::UNIX_EPOCH;
        let peer = DeviceId::from_cert_der(b"peer");
        health.own_seen(&["eth0".into()], t);
        health.announced("eth0", t);
        health.announced("wlan0", t);
        health.peer_seen(peer, &["wlan0".into()], t);
        for i in 0..20 {
            health.error(format!("e{i}"));
        }
        let map = health.interfaces();
        assert_eq!(map.len(), 2);
        assert_eq!(map["eth0"].own_seen, Some(t));
        assert!(map["eth0"].peers.is_empty());
        assert_eq!(map["wlan0"].own_seen, None);
        assert_eq!(map["wlan0"].peers, vec![(peer, t)]);
        let errors = health.errors();
        assert_eq!(errors.len(), MAX_ERRORS);
        assert_eq!(errors.last().map(String::as_str), Some("e19"));
    }
}
