//! The QUIC path MTU discovered per peer address, remembered for a while so
//! that the next connection starts there instead of at 1452 bytes.
//!
//! Every transfer is a new QUIC connection, and MTU discovery starts each
//! one at the safe 1452-byte payload and climbs from there by probing, one
//! round trip per probe; on a jumbo-frame LAN (or loopback) the first part
//! of every transfer therefore ran with a quarter of the packet size it
//! could have used. When a connection ends, the payload size its discovery
//! reached is stored here under the peer's IP address, and a connection to
//! that address within [`REMEMBER_FOR`] starts at it (never above the
//! configured bound, [`super::quic::MAX_UDP_PAYLOAD`]). Nothing is lost if
//! the path changed meanwhile: quinn's black-hole detection falls back to
//! the minimum after the first lost full-size packets and discovery climbs
//! again, and what that connection ends with replaces the entry.
//!
//! Only sizes above the default start are remembered (a smaller one is
//! what black-hole detection leaves behind and would only slow the next
//! start); the table holds at most 256 addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a discovered size is used for new connections: as long as
/// quinn itself trusts one before probing again (its MTU discovery
/// interval, 600 s).
pub(crate) const REMEMBER_FOR: Duration = Duration::from_secs(600);

/// Most addresses remembered; the oldest entry makes room.
const MAX_ENTRIES: usize = 256;

/// Discovered path MTUs (UDP payload sizes) by peer IP address.
#[derive(Debug)]
pub(crate) struct PathMtus {
    /// The size a connection starts at without an entry.
    default: u16,
    /// The largest size ever used.
    max: u16,
    entries: Mutex<HashMap<IpAddr, (u16, Instant)>>,
}

impl PathMtus {
    /// An empty table for connections that start at `default` and may
    /// discover up to `max`.
    pub(crate) fn new(default: u16, max: u16) -> Self {
        Self {
            default,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The size a new connection to `ip` starts at.
    pub(crate) fn initial(&self, ip: IpAddr) -> u16 {
        self.initial_at(ip, Instant::now())
    }

    fn initial_at(&self, ip: IpAddr, now: Instant) -> u16 {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(&ip.to_canonical()) {
            Some(&(mtu, at)) if now.duration_since(at) < REMEMBER_FOR => {
                mtu.clamp(self.default, self.max)
            }
            _ => self.default,
        }
    }

    /// Records what a connection to `ip` ended with.
    pub(crate) fn record(&self, ip: IpAddr, mtu: u16) {
        self.record_at(ip, mtu, Instant::now());
    }

    fn record_at(&self, ip: IpAddr, mtu: u16, now: Instant) {
        let ip = ip.to_canonical();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if mtu <= self.default {
            entries.remove(&ip);
            return;
        }
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&ip) {
            entries.retain(|_, (_, at)| now.duration_since(*at) < REMEMBER_FOR);
            if entries.len() >= MAX_ENTRIES
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| *k)
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(ip, (mtu.min(self.max), now));
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 168, 1, last))
    }

    #[test]
    fn a_discovered_size_is_used_for_a_while_and_bounded() {
        let mtus = PathMtus::new(1452, 6500);
        let t0 = Instant::now();
        assert_eq!(mtus.initial_at(ip(1), t0), 1452, "nothing known yet");
        mtus.record_at(ip(1), 6500, t0);
        assert_eq!(mtus.initial_at(ip(1), t0 + Duration::from_secs(1)), 6500);
        assert_eq!(mtus.initial_at(ip(2), t0), 1452, "another address");
        assert_eq!(mtus.initial_at(ip(1), t0 + REMEMBER_FOR), 1452, "expired");
        mtus.record_at(ip(1), 9000, t0);
        assert_eq!(mtus.initial_at(ip(1), t0), 6500, "never above the bound");
        // The same peer reached through an IPv4-mapped IPv6 address.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 168, 1, 1).to_ipv6_mapped());
        assert_eq!(mtus.initial_at(mapped, t0), 6500);
    }

    #[test]
    fn a_path_that_got_worse_forgets_its_size() {
        let mtus = PathMtus::new(1452, 6500);
        let t0 = Instant::now();
        mtus.record_at(ip(1), 6500, t0);
        // Black-hole detection fell back and discovery ended lower.
        mtus.record_at(ip(1), 1200, t0);
        assert_eq!(mtus.initial_at(ip(1), t0), 1452);
        mtus.record_at(ip(1), 1470, t0);
        assert_eq!(mtus.initial_at(ip(1), t0), 1470);
    }

    #[test]
    fn the_table_is_bounded_and_drops_the_oldest() {
        let mtus = PathMtus::new(1452, 6500);
        let t0 = Instant::now();
        for i in 0..MAX_ENTRIES as u32 + 10 {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            mtus.record_at(addr, 6500, t0 + Duration::from_millis(u64::from(i)));
        }
        let entries = mtus.entries.lock().unwrap();
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert!(!entries.contains_key(&IpAddr::V4(Ipv4Addr::from(0x0a00_0000))));
        assert!(entries.contains_key(&IpAddr::V4(Ipv4Addr::from(
            0x0a00_0000 + MAX_ENTRIES as u32 + 9
        ))));
    }
}
