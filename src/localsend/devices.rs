//! The LocalSend devices on the LAN, as `share peers` shows them.
//!
//! A device enters the table only with a fingerprint proven in a TLS
//! handshake: its `register` to us (body fingerprint equal to its client
//! certificate's hash) or our `register` to it (its server certificate
//! pinned to the fingerprint it announced). Multicast announcements are
//! unauthenticated, so they only make us ask ([`Devices::wants_check`]) and
//! refresh an entry only from the address it was proven at. A device that
//! is not heard from for [`DEVICE_TTL`] (we announce every
//! [`super::discover::ANNOUNCE_INTERVAL`], and every app answers an
//! announcement) is dropped.
//!
//! Pure and synchronous (times are passed in); shared behind a lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::wire::{Device, DeviceType};
use crate::identity::DeviceId;
use crate::safe_text::PeerName;

/// How long a device stays listed without being heard from.
pub const DEVICE_TTL: Duration = Duration::from_secs(100);

/// Least time between two checks of the same announced fingerprint.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Most devices listed (a flood of forged announcements cannot grow the
/// table: entries need a handshake, and this bounds even those).
pub const MAX_DEVICES: usize = 512;

/// One LocalSend device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSendDevice {
    /// SHA-256 of its certificate, proven in a handshake.
    pub fingerprint: DeviceId,
    /// Its alias (cleaned).
    pub alias: PeerName,
    /// Its model, if given.
    pub model: Option<String>,
    /// Its type.
    pub device_type: DeviceType,
    /// Protocol version it speaks.
    pub version: String,
    /// Where its HTTPS server is.
    pub addr: SocketAddr,
    /// When it was last heard from (for `share peers`).
    pub last_seen: SystemTime,
}

#[derive(Debug)]
struct Entry {
    device: LocalSendDevice,
    heard: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    devices: HashMap<DeviceId, Entry>,
    /// When each announced fingerprint was last checked.
    checked: HashMap<DeviceId, Instant>,
}

/// The shared table. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct Devices {
    inner: Arc<RwLock<Inner>>,
    /// Bumped when a device is added, for those waiting for one.
    added: Arc<watch::Sender<u64>>,
}

impl Default for Devices {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            added: Arc::new(watch::channel(0).0),
        }
    }
}

impl Devices {
    /// Records `device`, whose fingerprint `proven` a handshake showed, at
    /// `addr`. Returns whether it is new.
    pub fn proven(
        &self,
        proven: DeviceId,
        device: &Device,
        addr: SocketAddr,
        now: Instant,
    ) -> bool {
        let mut inner = self.write();
        let new = !inner.devices.contains_key(&proven);
        if new && inner.devices.len() >= MAX_DEVICES {
            return false;
        }
        inner.devices.insert(
            proven,
            Entry {
                device: LocalSendDevice {
                    fingerprint: proven,
                    alias: device.alias.clone(),
                    model: device.model.clone(),
                    device_type: device.device_type,
                    version: device.version.clone(),
                    addr,
                    last_seen: SystemTime::now(),
                },
                heard: now,
            },
        );
        inner.checked.insert(proven, now);
        drop(inner);
        if new {
            self.added.send_modify(|n| *n += 1);
        }
        new
    }

    /// Changes when a device is added.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.added.subscribe()
    }

    /// An unauthenticated multicast message claiming `fingerprint` from
    /// `addr`: refreshes the entry if it was proven at exactly that
    /// address, and says whether to answer it with a `register` (which
    /// also checks it): not if that fingerprint was checked within
    /// [`RECHECK_INTERVAL`].
    pub fn wants_check(&self, fingerprint: DeviceId, addr: SocketAddr, now: Instant) -> bool {
        let mut inner = self.write();
        if let Some(entry) = inner.devices.get_mut(&fingerprint)
            && entry.device.addr == addr
        {
            entry.heard = now;
            entry.device.last_seen = SystemTime::now();
        }
        let due = inner
            .checked
            .get(&fingerprint)
            .is_none_or(|t| now.duration_since(*t) >= RECHECK_INTERVAL);
        if due {
            if inner.checked.len() >= 4 * MAX_DEVICES {
                inner
                    .checked
                    .retain(|_, t| now.duration_since(*t) < RECHECK_INTERVAL);
            }
            inner.checked.insert(fingerprint, now);
        }
        due
    }

    /// Drops devices not heard from for [`DEVICE_TTL`]; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut inner = self.write();
        let before = inner.devices.len();
        inner
            .devices
            .retain(|_, e| now.duration_since(e.heard) < DEVICE_TTL);
        inner
            .checked
            .retain(|_, t| now.duration_since(*t) < DEVICE_TTL);
        before - inner.devices.len()
    }

    /// Every device, by alias.
    pub fn list(&self) -> Vec<LocalSendDevice> {
        let mut all: Vec<LocalSendDevice> = self
            .read()
            .devices
            .values()
            .map(|e| e.device.clone())
            .collect();
        all.sort_by(|a, b| {
            a.alias
                .to_lowercase()
                .cmp(&b.alias.to_lowercase())
                .then(a.fingerprint.cmp(&b.fingerprint))
        });
        all
    }

    /// The device with this fingerprint.
    pub fn get(&self, fingerprint: &DeviceId) -> Option<LocalSendDevice> {
        self.read()
            .devices
            .get(fingerprint)
            .map(|e| e.device.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 53317))
    }

    #[test]
    fn proven_devices_are_listed_once_and_expire() {
        let devices = Devices::default();
        let t0 = Instant::now();
        let phone = DeviceId::from_bytes([1; 32]);
        assert!(devices.proven(phone, &Device::test_phone("Pixel"), addr(2), t0));
        assert!(!devices.proven(phone, &Device::test_phone("Pixel"), addr(2), t0));
        assert!(devices.proven(
            DeviceId::from_bytes([2; 32]),
            &Device::test_phone("anna"),
            addr(3),
            t0
        ));
        let aliases: Vec<String> = devices
            .list()
            .into_iter()
            .map(|d| d.alias.to_string())
            .collect();
        assert_eq!(aliases, ["anna", "Pixel"]);
        // Heard again at its address: kept past the first TTL (and
        // answered: it was checked long enough ago).
        assert!(devices.wants_check(phone, addr(2), t0 + DEVICE_TTL / 2));
        assert_eq!(devices.expire(t0 + DEVICE_TTL), 1);
        assert_eq!(devices.list().len(), 1);
        assert_eq!(devices.expire(t0 + DEVICE_TTL * 2), 1);
        assert!(devices.get(&phone).is_none());
    }

    #[test]
    fn announcements_from_elsewhere_are_checked_not_trusted() {
        let devices = Devices::default();
        let t0 = Instant::now();
        let phone = DeviceId::from_bytes([1; 32]);
        devices.proven(phone, &Device::test_phone("Pixel"), addr(2), t0);
        // Someone else claims the phone's fingerprint: check, at most
        // once per interval; the entry keeps its proven address.
        let forged = addr(66);
        assert!(devices.wants_check(phone, forged, t0 + RECHECK_INTERVAL));
        assert!(!devices.wants_check(phone, forged, t0 + RECHECK_INTERVAL));
        assert_eq!(devices.get(&phone).map(|d| d.addr), Some(addr(2)));
        // An unknown fingerprint is checked, and not listed.
        let unknown = DeviceId::from_bytes([9; 32]);
        assert!(devices.wants_check(unknown, addr(9), t0));
        assert!(devices.get(&unknown).is_none());
        // Forged announcements do not keep a silent device alive.
        assert_eq!(devices.expire(t0 + DEVICE_TTL), 1);
    }
}
