//! The optional receive PIN (`[localsend] pin`): checked in constant time,
//! with wrong guesses rate-limited per address and globally.
//!
//! LocalSend carries the PIN in the `prepare-upload` URL, so a guesser
//! can try as fast as it can connect. Three wrong PINs lock an address out
//! for [`LOCKOUT`] (429, as LocalSend 1.18 answers); and because addresses
//! are cheap on a LAN (and IPv6 gives everyone millions), all wrong guesses
//! together are limited too: after [`GLOBAL_FAILURES`] in one [`WINDOW`]
//! every sender gets 429 until the window has passed. A 4-digit PIN then
//! takes days of guessing, not seconds. The PIN only gates the question:
//! it never replaces consent (an offer with the right PIN still waits for
//! `share accept` unless the policy or trust says otherwise).
//!
//! Pure: the caller passes the time in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Wrong PINs one address may send before it is locked out.
pub const FAILURES_PER_ADDRESS: u32 = 3;
/// How long a locked-out address gets 429.
pub const LOCKOUT: Duration = Duration::from_secs(60);
/// Wrong PINs from all addresses together per [`WINDOW`] before everyone
/// gets 429.
pub const GLOBAL_FAILURES: u32 = 10;
/// See [`GLOBAL_FAILURES`].
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered at once (the oldest is
/// forgotten first; the global limit still holds).
const MAX_TRACKED: usize = 1024;

/// The answer to a PIN check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No PIN configured, or the right one.
    Pass,
    /// No PIN given (401, "PIN required").
    Missing,
    /// A wrong PIN (401, "Invalid PIN").
    Wrong,
    /// Too many wrong PINs (429).
    TooMany,
}

/// The PIN and its failure counters.
#[derive(Debug)]
pub struct PinGate {
    /// SHA-256 of the PIN; `None` when no PIN is configured.
    pin: Option<[u8; 32]>,
    per_address: HashMap<IpAddr, Failures>,
    global: Failures,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// When the first failure of the current window happened.
    since: Instant,
}

impl PinGate {
    /// A gate for `pin` (`None`: every request passes).
    pub fn new(pin: Option<&str>, now: Instant) -> Self {
        Self {
            pin: pin.map(digest),
            per_address: HashMap::new(),
            global: Failures {
                count: 0,
                since: now,
            },
        }
    }

    /// Whether a PIN is required.
    pub fn required(&self) -> bool {
        self.pin.is_some()
    }

    /// Checks the PIN `given` by `ip` at `now`.
    pub fn check(&mut self, ip: IpAddr, given: Option<&str>, now: Instant) -> Verdict {
        let Some(pin) = self.pin else {
            return Verdict::Pass;
        };
        if now.duration_since(self.global.since) >= WINDOW {
            self.global = Failures {
                count: 0,
                since: now,
            };
        }
        self.per_address
            .retain(|_, f| now.duration_since(f.since) < LOCKOUT);
        let locked = self
            .per_address
            .get(&ip)
            .is_some_and(|f| f.count >= FAILURES_PER_ADDRESS);
        if locked || self.global.count >= GLOBAL_FAILURES {
            return Verdict::TooMany;
        }
        let Some(given) = given else {
            return Verdict::Missing;
        };
        if same(&digest(given), &pin) {
            self.per_address.remove(&ip);
            return Verdict::Pass;
        }
        self.global.count += 1;
        if self.per_address.len() >= MAX_TRACKED
            && !self.per_address.contains_key(&ip)
            && let Some(oldest) = self
                .per_address
                .iter()
                .min_by_key(|(_, f)| f.since)
                .map(|(ip, _)| *ip)
        {
            self.per_address.remove(&oldest);
        }
        let entry = self.per_address.entry(ip).or_insert(Failures {
            count: 0,
            since: now,
        });
        entry.count += 1;
        Verdict::Wrong
    }
}

fn digest(pin: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, pin.as_bytes()).as_ref());
    out
}

/// Compares in time independent of where the inputs differ (the digests
/// also hide the PIN's length).
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn no_pin_lets_everything_pass() {
        let now = Instant::now();
        let mut gate = PinGate::new(None, now);
        assert!(!gate.required());
        assert_eq!(gate.check(ip(1), None, now), Verdict::Pass);
        assert_eq!(gate.check(ip(1), Some("x"), now), Verdict::Pass);
    }

    #[test]
    fn three_wrong_pins_lock_an_address_out_for_a_minute() {
        let t0 = Instant::now();
        let mut gate = PinGate::new(Some("4711"), t0);
        assert_eq!(gate.check(ip(1), None, t0), Verdict::Missing);
        assert_eq!(gate.check(ip(1), Some("4711"), t0), Verdict::Pass);
        for _ in 0..FAILURES_PER_ADDRESS {
            assert_eq!(gate.check(ip(1), Some("0000"), t0), Verdict::Wrong);
        }
        // Now even the right PIN is refused from that address...
        assert_eq!(gate.check(ip(1), Some("4711"), t0), Verdict::TooMany);
        // ...but not from another one.
        assert_eq!(gate.check(ip(2), Some("4711"), t0), Verdict::Pass);
        let later = t0 + LOCKOUT;
        assert_eq!(gate.check(ip(1), Some("4711"), later), Verdict::Pass);
    }

    #[test]
    fn guesses_from_many_addresses_hit_the_global_limit() {
        let t0 = Instant::now();
        let mut gate = PinGate::new(Some("4711"), t0);
        for n in 0..GLOBAL_FAILURES {
            assert_eq!(gate.check(ip(n as u8), Some("1"), t0), Verdict::Wrong);
        }
        assert_eq!(gate.check(ip(200), Some("4711"), t0), Verdict::TooMany);
        let next_window = t0 + WINDOW;
        assert_eq!(
            gate.check(ip(200), Some("4711"), next_window),
            Verdict::Pass
        );
    }

    #[test]
    fn a_prefix_or_extension_of_the_pin_is_wrong() {
        let t0 = Instant::now();
        let mut gate = PinGate::new(Some("4711"), t0);
        assert_eq!(gate.check(ip(1), Some("471"), t0), Verdict::Wrong);
        assert_eq!(gate.check(ip(2), Some("47110"), t0), Verdict::Wrong);
        assert_eq!(gate.check(ip(3), Some(""), t0), Verdict::Wrong);
    }
}
