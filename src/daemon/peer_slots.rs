//! A per-device cap on simultaneous incoming connections.
//!
//! The global cap ([`crate::transport::MAX_CONNECTIONS`]) keeps the daemon
//! alive under load; this one keeps a single device — hostile or merely
//! buggy — from taking all of those slots and starving everyone else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::identity::DeviceId;

/// Most simultaneous incoming connections from one device.
pub(crate) const MAX_CONNECTIONS_PER_PEER: usize = 16;

/// Counts open incoming connections per device.
#[derive(Debug, Default, Clone)]
pub(crate) struct PeerSlots {
    open: Arc<Mutex<HashMap<DeviceId, usize>>>,
}

/// One held slot; released on drop.
#[derive(Debug)]
pub(crate) struct PeerSlot {
    peer: DeviceId,
    open: Arc<Mutex<HashMap<DeviceId, usize>>>,
}

impl PeerSlots {
    /// Takes a slot for `peer`, or `None` if it already has the maximum.
    pub(crate) fn acquire(&self, peer: DeviceId) -> Option<PeerSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(peer).or_default();
        if *count >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peer,
            open: self.open.clone(),
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_device_cannot_take_every_slot() {
        let slots = PeerSlots::default();
        let (a, b) = (DeviceId::from_cert_der(b"a"), DeviceId::from_cert_der(b"b"));
        let held: Vec<_> = (0..MAX_CONNECTIONS_PER_PEER)
            .map(|_| slots.acquire(a).unwrap())
            .collect();
        assert!(slots.acquire(a).is_none());
        assert!(slots.acquire(b).is_some(), "other devices are unaffected");
        drop(held);
        assert!(
            slots.acquire(a).is_some(),
            "slots come back when connections end"
        );
    }
}
