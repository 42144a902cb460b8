//! Slots for authenticated incoming connections, with trusted devices and
//! strangers kept apart.
//!
//! Once its TLS handshake is done a connection has a device ID, but an
//! identity costs nothing to make: a stranger's ID says only that it is
//! one of an unlimited supply. So the slots come in two pools:
//!
//! * **trusted devices** (in the trust store): at most
//!   [`SlotLimits::per_device`] connections each, [`SlotLimits::trusted`]
//!   in all. Strangers never take from this pool, so no number of them
//!   can lock a trusted device out.
//! * **strangers**: at most [`SlotLimits::per_device`] per device ID, but
//!   also at most [`SlotLimits::strangers_per_address`] per source address
//!   (fresh identities from one host share that) and
//!   [`SlotLimits::strangers`] in all.
//!
//! Connections still in their transport handshake have a budget of their
//! own ([`crate::transport::admission`]).

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::identity::DeviceId;
use crate::tally::Tally;

/// Sizes of the pools (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotLimits {
    /// Connections from one device, trusted or not.
    pub(crate) per_device: usize,
    /// Connections from trusted devices, all together.
    pub(crate) trusted: usize,
    /// Connections from strangers, all together.
    pub(crate) strangers: usize,
    /// Connections from strangers at one source address.
    pub(crate) strangers_per_address: usize,
}

impl Default for SlotLimits {
    fn default() -> Self {
        Self {
            per_device: 16,
            trusted: 128,
            strangers: 64,
            strangers_per_address: 8,
        }
    }
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SlotRefusal {
    /// This device has its maximum.
    #[error("too many connections from this device")]
    Device,
    /// Strangers at this address have their maximum.
    #[error("too many connections from unknown devices at this address")]
    Address,
    /// The pool (trusted or strangers) is full.
    #[error("too many connections")]
    Pool,
}

#[derive(Debug, Default)]
struct Open {
    devices: Tally<DeviceId>,
    stranger_addresses: Tally<IpAddr>,
    trusted: usize,
    strangers: usize,
}

/// The open incoming connections, by pool.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerSlots {
    limits: SlotLimits,
    open: Arc<Mutex<Open>>,
}

/// One held slot; released on drop.
#[derive(Debug)]
pub(crate) struct PeerSlot {
    peer: DeviceId,
    /// The stranger's address; `None` for a trusted device.
    stranger_at: Option<IpAddr>,
    open: Arc<Mutex<Open>>,
}

impl PeerSlots {
    /// Takes a slot for `peer` connecting from `address`, from the pool
    /// `trusted` says.
    pub(crate) fn acquire(
        &self,
        peer: DeviceId,
        address: IpAddr,
        trusted: bool,
    ) -> Result<PeerSlot, SlotRefusal> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let limits = &self.limits;
        if open.devices.get(&peer) >= limits.per_device {
            return Err(SlotRefusal::Device);
        }
        if trusted {
            if open.trusted >= limits.trusted {
                return Err(SlotRefusal::Pool);
            }
            open.trusted += 1;
        } else {
            if open.stranger_addresses.get(&address) >= limits.strangers_per_address {
                return Err(SlotRefusal::Address);
            }
            if open.strangers >= limits.strangers {
                return Err(SlotRefusal::Pool);
            }
            open.strangers += 1;
            open.stranger_addresses.add(address);
        }
        open.devices.add(peer);
        Ok(PeerSlot {
            peer,
            stranger_at: (!trusted).then_some(address),
            open: self.open.clone(),
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.devices.sub(&self.peer);
        match self.stranger_at {
            Some(address) => {
                open.strangers -= 1;
                open.stranger_addresses.sub(&address);
            }
            None => open.trusted -= 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str) -> DeviceId {
        DeviceId::from_cert_der(name.as_bytes())
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn slots() -> PeerSlots {
        PeerSlots {
            limits: SlotLimits {
                per_device: 3,
                trusted: 4,
                strangers: 5,
                strangers_per_address: 2,
            },
            open: Arc::default(),
        }
    }

    #[test]
    fn one_device_cannot_take_every_slot() {
        let slots = slots();
        let (a, b) = (device("a"), device("b"));
        let held: Vec<_> = (0..3)
            .map(|_| slots.acquire(a, ip(1), true).unwrap())
            .collect();
        assert_eq!(
            slots.acquire(a, ip(2), true).unwrap_err(),
            SlotRefusal::Device
        );
        assert!(
            slots.acquire(b, ip(1), true).is_ok(),
            "other devices are unaffected"
        );
        drop(held);
        assert!(
            slots.acquire(a, ip(1), true).is_ok(),
            "slots come back when connections end"
        );
    }

    #[test]
    fn fresh_identities_from_one_address_share_its_slots() {
        let slots = slots();
        let held: Vec<_> = (0..2)
            .map(|i| slots.acquire(device(&i.to_string()), ip(1), false).unwrap())
            .collect();
        assert_eq!(
            slots.acquire(device("fresh"), ip(1), false).unwrap_err(),
            SlotRefusal::Address
        );
        assert!(slots.acquire(device("fresh"), ip(2), false).is_ok());
        drop(held);
        assert!(slots.acquire(device("fresh"), ip(1), false).is_ok());
    }

    #[test]
    fn strangers_cannot_take_the_slots_of_trusted_devices() {
        let slots = slots();
        // Strangers from many addresses fill their whole pool...
        let strangers: Vec<_> = (0..5)
            .map(|i| slots.acquire(device(&i.to_string()), ip(i), false).unwrap())
            .collect();
        assert_eq!(
            slots.acquire(device("one more"), ip(9), false).unwrap_err(),
            SlotRefusal::Pool
        );
        // ...and trusted devices still get theirs, up to their own pool.
        let trusted: Vec<_> = (0..4)
            .map(|i| {
                slots
                    .acquire(device(&format!("t{i}")), ip(20), true)
                    .unwrap()
            })
            .collect();
        assert_eq!(
            slots.acquire(device("t9"), ip(20), true).unwrap_err(),
            SlotRefusal::Pool
        );
        drop((strangers, trusted));
        let open = slots.open.lock().unwrap();
        assert_eq!((open.trusted, open.strangers), (0, 0));
        assert!(open.devices.is_empty() && open.stranger_addresses.is_empty());
    }
}
