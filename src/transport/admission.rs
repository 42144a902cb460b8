//! Admission of incoming connections while their TLS handshake runs.
//!
//! Until a handshake completes, nothing is known about a connection but its
//! source address, and opening one costs an attacker nothing: an idle TCP
//! connect, or a single QUIC Initial datagram. So handshakes in flight have
//! a budget of their own, apart from the authenticated connections the
//! daemon serves afterwards (which it divides between trusted devices and
//! strangers), and within it:
//!
//! * **per source address** at most [`HandshakeLimits::per_address`]: one
//!   host cannot fill the budget however many connections it opens; the
//!   surplus is refused at once.
//! * **in total** at most [`HandshakeLimits::total`]: when it is full, the
//!   *oldest* handshake is evicted to make room. An honest handshake on a
//!   LAN takes milliseconds, so many hosts holding handshakes open only
//!   push each other out; to keep an honest one out they would have to
//!   open connections faster than it completes.
//! * **QUIC address validation** once more than
//!   [`HandshakeLimits::validate_above`] handshakes are in flight: a new
//!   QUIC client is sent a Retry and must echo its token from the address
//!   it claims (RFC 9000 §8.1) before it gets a slot, so Initials with
//!   forged source addresses, or from a client that never answers, cost
//!   one stateless reply and no slot.
//! * every handshake must finish within
//!   [`HANDSHAKE_TIMEOUT`](super::HANDSHAKE_TIMEOUT) of its first packet.
//!
//! The state is a small table behind a mutex; there is no I/O here, so the
//! rules are tested directly.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::tally::Tally;

/// Sizes of the handshake budget (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Handshakes in flight at once, all sources together.
    pub total: usize,
    /// Handshakes in flight at once from one source address.
    pub per_address: usize,
    /// Above this many handshakes in flight, QUIC clients must first
    /// prove their address with a Retry.
    pub validate_above: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            total: 64,
            per_address: 8,
            validate_above: 4,
        }
    }
}

/// Why a handshake was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The source address already has its share of handshakes in flight.
    #[error("too many handshakes in flight from {0}")]
    Address(IpAddr),
}

/// The handshakes in flight, shared by the QUIC and TCP listeners.
#[derive(Debug, Clone)]
pub struct Handshakes {
    limits: HandshakeLimits,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    per_address: Tally<IpAddr>,
    /// Oldest first: sequence numbers only grow.
    in_flight: BTreeMap<u64, InFlight>,
    next: u64,
}

#[derive(Debug)]
struct InFlight {
    address: IpAddr,
    evicted: CancellationToken,
}

impl State {
    fn remove(&mut self, seq: u64) -> Option<InFlight> {
        let gone = self.in_flight.remove(&seq)?;
        self.per_address.sub(&gone.address);
        Some(gone)
    }
}

impl Handshakes {
    /// An empty budget of the given size.
    pub fn new(limits: HandshakeLimits) -> Self {
        Self {
            limits,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a new QUIC client must validate its address (Retry) before
    /// it is admitted.
    pub fn must_validate(&self) -> bool {
        self.lock().in_flight.len() >= self.limits.validate_above
    }

    /// How many handshakes are in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// Admits a handshake from `address`, evicting the oldest one in
    /// flight if the budget is full. The slot is held until the returned
    /// ticket is dropped or evicted.
    ///
    /// # Errors
    /// [`Refusal::Address`] when `address` already has
    /// [`HandshakeLimits::per_address`] handshakes in flight.
    pub fn admit(&self, address: IpAddr) -> Result<Ticket, Refusal> {
        let mut state = self.lock();
        if state.per_address.get(&address) >= self.limits.per_address {
            return Err(Refusal::Address(address));
        }
        while state.in_flight.len() >= self.limits.total.max(1) {
            let Some(&oldest) = state.in_flight.keys().next() else {
                break;
            };
            if let Some(gone) = state.remove(oldest) {
                tracing::debug!(remote = %gone.address, "handshake budget full: evicting the oldest handshake");
                gone.evicted.cancel();
            }
        }
        let seq = state.next;
        state.next += 1;
        let evicted = CancellationToken::new();
        state.in_flight.insert(
            seq,
            InFlight {
                address,
                evicted: evicted.clone(),
            },
        );
        state.per_address.add(address);
        Ok(Ticket {
            seq,
            evicted,
            handshakes: self.clone(),
        })
    }
}

/// One admitted handshake's slot; released on drop.
#[derive(Debug)]
pub struct Ticket {
    seq: u64,
    evicted: CancellationToken,
    handshakes: Handshakes,
}

impl Ticket {
    /// Resolves when the handshake was evicted to make room for a newer
    /// one: the caller must then drop the connection.
    pub fn evicted(&self) -> WaitForCancellationFutureOwned {
        self.evicted.clone().cancelled_owned()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.handshakes.lock().remove(self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn limits(total: usize, per_address: usize) -> HandshakeLimits {
        HandshakeLimits {
            total,
            per_address,
            validate_above: 2,
        }
    }

    #[test]
    fn one_address_gets_its_share_and_no_more() {
        let handshakes = Handshakes::new(limits(10, 3));
        let held: Vec<_> = (0..3).map(|_| handshakes.admit(ip(1)).unwrap()).collect();
        assert_eq!(
            handshakes.admit(ip(1)).unwrap_err(),
            Refusal::Address(ip(1))
        );
        let other = handshakes.admit(ip(2));
        assert!(other.is_ok(), "another address is unaffected");
        drop(held);
        assert!(handshakes.admit(ip(1)).is_ok(), "slots come back on drop");
    }

    #[test]
    fn a_full_budget_evicts_the_oldest_handshake() {
        let handshakes = Handshakes::new(limits(3, 3));
        let first = handshakes.admit(ip(1)).unwrap();
        let second = handshakes.admit(ip(2)).unwrap();
        let third = handshakes.admit(ip(3)).unwrap();
        assert!(!first.evicted.is_cancelled());
        let fourth = handshakes.admit(ip(4)).unwrap();
        assert!(first.evicted.is_cancelled(), "the oldest makes room");
        assert!(!second.evicted.is_cancelled() && !third.evicted.is_cancelled());
        assert_eq!(handshakes.in_flight(), 3);
        // The evicted ticket's drop releases nothing twice.
        drop(first);
        assert_eq!(handshakes.in_flight(), 3);
        // Its address's count was released at eviction.
        let again = handshakes.admit(ip(1)).unwrap();
        assert!(second.evicted.is_cancelled());
        drop((third, fourth, again));
        assert_eq!(handshakes.in_flight(), 0);
        assert!(handshakes.lock().per_address.is_empty());
    }

    #[test]
    fn validation_is_required_under_load_only() {
        let handshakes = Handshakes::new(limits(10, 10));
        let one = handshakes.admit(ip(1)).unwrap();
        assert!(!handshakes.must_validate());
        let two = handshakes.admit(ip(1)).unwrap();
        assert!(handshakes.must_validate());
        drop(one);
        assert!(!handshakes.must_validate());
        drop(two);
    }

    #[tokio::test]
    async fn an_evicted_ticket_says_so() {
        let handshakes = Handshakes::new(limits(1, 1));
        let first = handshakes.admit(ip(1)).unwrap();
        let _second = handshakes.admit(ip(2)).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), first.evicted())
            .await
            .expect("eviction is signalled");
    }
}
