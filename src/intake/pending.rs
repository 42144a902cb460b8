//! Offers (and texts) waiting for the receiving user's consent.
//!
//! A waiting offer holds a connection open for up to the consent timeout
//! and puts a line in front of the user, and it costs its sender nothing:
//! under the default `ask` policy any device may send one, and a device
//! identity is free to make. So waiting offers are bounded per device ID,
//! per source address (fresh identities from one host share it) and in
//! total; beyond that an offer is rejected at once, saying why. Offers from
//! trusted devices never wait, so these bounds never touch them.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::identity::DeviceId;
use crate::tally::Tally;

/// Sizes of the bounds (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingLimits {
    /// Offers waiting from one device.
    pub per_device: usize,
    /// Offers waiting from one source address.
    pub per_address: usize,
    /// Offers waiting in all.
    pub total: usize,
}

impl Default for PendingLimits {
    fn default() -> Self {
        Self {
            per_device: 4,
            per_address: 4,
            total: 32,
        }
    }
}

/// Why an offer may not wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooMany {
    /// This device already has its share waiting.
    #[error("too many offers waiting for consent from this device (limit {0})")]
    Device(usize),
    /// This address already has its share waiting.
    #[error("too many offers waiting for consent from this address (limit {0})")]
    Address(usize),
    /// The receiver has as many waiting as it keeps.
    #[error("too many offers waiting for consent on this device (limit {0}); try again later")]
    Total(usize),
}

#[derive(Debug, Default)]
struct Waiting {
    devices: Tally<DeviceId>,
    addresses: Tally<IpAddr>,
    total: usize,
}

/// The offers waiting for consent.
#[derive(Debug, Clone, Default)]
pub struct PendingOffers {
    limits: PendingLimits,
    waiting: Arc<Mutex<Waiting>>,
}

/// One waiting offer's place; given up on drop.
#[derive(Debug)]
pub struct Place {
    peer: DeviceId,
    address: IpAddr,
    waiting: Arc<Mutex<Waiting>>,
}

impl PendingOffers {
    /// Bounds of the given sizes.
    pub fn new(limits: PendingLimits) -> Self {
        Self {
            limits,
            waiting: Arc::default(),
        }
    }

    /// A place in the queue for an offer from `peer` at `address`.
    ///
    /// # Errors
    /// [`TooMany`] says which bound is reached.
    pub fn wait(&self, peer: DeviceId, address: IpAddr) -> Result<Place, TooMany> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let limits = self.limits;
        if waiting.devices.get(&peer) >= limits.per_device {
            return Err(TooMany::Device(limits.per_device));
        }
        if waiting.addresses.get(&address) >= limits.per_address {
            return Err(TooMany::Address(limits.per_address));
        }
        if waiting.total >= limits.total {
            return Err(TooMany::Total(limits.total));
        }
        waiting.devices.add(peer);
        waiting.addresses.add(address);
        waiting.total += 1;
        Ok(Place {
            peer,
            address,
            waiting: self.waiting.clone(),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.total -= 1;
        waiting.devices.sub(&self.peer);
        waiting.addresses.sub(&self.address);
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

    fn offers() -> PendingOffers {
        PendingOffers::new(PendingLimits {
            per_device: 2,
            per_address: 3,
            total: 5,
        })
    }

    #[test]
    fn each_bound_holds_and_places_come_back() {
        let offers = offers();
        let a = device("a");
        let two: Vec<_> = (0..2).map(|_| offers.wait(a, ip(1)).unwrap()).collect();
        assert_eq!(offers.wait(a, ip(2)).unwrap_err(), TooMany::Device(2));
        // Fresh identities at the same address share its bound.
        let third = offers.wait(device("b"), ip(1)).unwrap();
        assert_eq!(
            offers.wait(device("c"), ip(1)).unwrap_err(),
            TooMany::Address(3)
        );
        // Elsewhere, up to the total.
        let more: Vec<_> = (0..2)
            .map(|i| offers.wait(device(&i.to_string()), ip(10 + i)).unwrap())
            .collect();
        assert_eq!(
            offers.wait(device("d"), ip(20)).unwrap_err(),
            TooMany::Total(5)
        );
        drop((two, third, more));
        let waiting = offers.waiting.lock().unwrap();
        assert_eq!(waiting.total, 0);
        assert!(waiting.devices.is_empty() && waiting.addresses.is_empty());
    }
}
