//! The memory peers may make this daemon hold: frames being read and the
//! manifests of offers, per device and in total.
//!
//! Why: connection slots bound how many peers are served, not how much
//! each one costs. An `Offer` frame may be 8 MiB, and the 100 000 entries
//! it describes cost tens of MiB once decoded and checked; a stranger's
//! offer then sits in memory for as long as it waits for consent. Without
//! a budget, a few dozen throwaway identities took the daemon to gigabytes.
//!
//! The rules:
//!
//! * Every byte a peer's frames and offers hold is *reserved* first, from
//!   its device's share ([`MemoryLimits::per_device`]) and from the total
//!   ([`MemoryLimits::total`]); strangers (devices not trusted when they
//!   connected) together get at most [`MemoryLimits::strangers`], so they
//!   can never take the memory a trusted device needs.
//! * A reservation that does not fit is refused; the session answers
//!   `Error(Busy)`, which a sender retries later.
//! * A [`Reservation`] gives its bytes back when it is dropped, whatever
//!   way the session ends. Large releases also hand free memory back to
//!   the system ([`release_free_memory`]): glibc's allocator otherwise keeps
//!   freed pages in its arenas, and the daemon's resident size would stay
//!   at its high-water mark after the peers left.
//!
//! The state is a small map behind a mutex, touched when a frame's buffer
//! grows or an offer arrives, never per data chunk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::identity::DeviceId;

/// One mebibyte.
const MIB: usize = 1 << 20;

/// Allocations at least this large are mapped on their own
/// ([`tune_allocator`]).
pub const MMAP_THRESHOLD: usize = 2 * MIB;

/// A release at least this large wakes [`release_free_memory`]'s task.
pub const TRIM_AFTER: usize = MIB;

/// The bounds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// All peers together.
    pub total: usize,
    /// Any one device.
    pub per_device: usize,
    /// All strangers together (at most `total`).
    pub strangers: usize,
}

impl MemoryLimits {
    /// `total` MiB in all, `per_device` MiB for any one device; strangers
    /// get half of the total.
    #[must_use]
    pub fn from_mib(total: usize, per_device: usize) -> Self {
        Self {
            total: total.saturating_mul(MIB),
            per_device: per_device.saturating_mul(MIB),
            strangers: total.saturating_mul(MIB) / 2,
        }
    }
}

impl Default for MemoryLimits {
    /// 256 MiB in all, 64 MiB per device, 128 MiB for all strangers.
    fn default() -> Self {
        Self::from_mib(DEFAULT_TOTAL_MIB, DEFAULT_PER_DEVICE_MIB)
    }
}

/// Default of the `peer_memory_mib` setting.
pub const DEFAULT_TOTAL_MIB: usize = 256;
/// Default of the `peer_memory_per_device_mib` setting.
pub const DEFAULT_PER_DEVICE_MIB: usize = 64;

/// Which bound a reservation would have crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    /// The device's own share.
    #[error("this device already holds {held} of the {limit} bytes of memory one device may use")]
    Device {
        /// Bytes the device holds.
        held: usize,
        /// The bound.
        limit: usize,
    },
    /// The strangers' share.
    #[error("untrusted devices already hold {held} of the {limit} bytes of memory they may use")]
    Strangers {
        /// Bytes all strangers hold.
        held: usize,
        /// The bound.
        limit: usize,
    },
    /// The total.
    #[error("peers already hold {held} of the {limit} bytes of memory they may use")]
    Total {
        /// Bytes all peers hold.
        held: usize,
        /// The bound.
        limit: usize,
    },
}

/// Bytes held, by whom.
#[derive(Debug, Default)]
struct Held {
    total: usize,
    strangers: usize,
    devices: HashMap<DeviceId, usize>,
}

/// The shared budget; cloning shares it.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limits: MemoryLimits,
    held: Mutex<Held>,
    /// Woken by large releases (see [`release_free_memory`]).
    released: Notify,
}

impl MemoryBudget {
    /// A budget with these bounds.
    #[must_use]
    pub fn new(limits: MemoryLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                held: Mutex::new(Held::default()),
                released: Notify::new(),
            }),
        }
    }

    /// An empty reservation for `device`, counted as a stranger's unless
    /// `trusted`.
    #[must_use]
    pub fn account(&self, device: DeviceId, trusted: bool) -> Reservation {
        Reservation {
            owner: Some(Owner {
                shared: self.shared.clone(),
                device,
                stranger: !trusted,
            }),
            bytes: 0,
        }
    }

    /// Bytes held by all peers now.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.shared.lock().total
    }

    /// Bytes held by `device` now.
    #[must_use]
    pub fn held_by(&self, device: &DeviceId) -> usize {
        self.shared.lock().devices.get(device).copied().unwrap_or(0)
    }

    /// The bounds.
    #[must_use]
    pub fn limits(&self) -> MemoryLimits {
        self.shared.limits
    }

    /// Waits until a reservation gave back at least [`TRIM_AFTER`] bytes.
    pub async fn released(&self) {
        self.shared.released.notified().await;
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // The map stays consistent at every await-free step; a panic
        // elsewhere while holding it cannot leave it half updated.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `extra` more bytes for `device`, or says which bound is full.
    fn grow(&self, device: DeviceId, stranger: bool, extra: usize) -> Result<(), OverBudget> {
        let limits = &self.limits;
        let mut held = self.lock();
        let mine = held.devices.get(&device).copied().unwrap_or(0);
        if mine
            .checked_add(extra)
            .is_none_or(|n| n > limits.per_device)
        {
            return Err(OverBudget::Device {
                held: mine,
                limit: limits.per_device,
            });
        }
        if stranger
            && (held.strangers)
                .checked_add(extra)
                .is_none_or(|n| n > limits.strangers)
        {
            return Err(OverBudget::Strangers {
                held: held.strangers,
                limit: limits.strangers,
            });
        }
        if held
            .total
            .checked_add(extra)
            .is_none_or(|n| n > limits.total)
        {
            return Err(OverBudget::Total {
                held: held.total,
                limit: limits.total,
            });
        }
        held.total += extra;
        if stranger {
            held.strangers += extra;
        }
        *held.devices.entry(device).or_default() += extra;
        Ok(())
    }

    /// Gives `fewer` bytes of `device` back.
    fn shrink(&self, device: DeviceId, stranger: bool, fewer: usize) {
        let mut held = self.lock();
        held.total = held.total.saturating_sub(fewer);
        if stranger {
            held.strangers = held.strangers.saturating_sub(fewer);
        }
        if let Some(mine) = held.devices.get_mut(&device) {
            *mine = mine.saturating_sub(fewer);
            if *mine == 0 {
                held.devices.remove(&device);
            }
        }
        drop(held);
        if fewer >= TRIM_AFTER {
            self.released.notify_one();
        }
    }
}

#[derive(Debug)]
struct Owner {
    shared: Arc<Shared>,
    device: DeviceId,
    stranger: bool,
}

/// Bytes one session holds for one device; given back when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    /// `None` for memory no peer controls (our own sends, tests).
    owner: Option<Owner>,
    bytes: usize,
}

impl Reservation {
    /// A reservation outside any budget: every size fits.
    #[must_use]
    pub fn unbounded() -> Self {
        Self::default()
    }

    /// Bytes reserved.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Makes the reservation exactly `bytes`: growing takes from the
    /// budget (all or nothing), shrinking gives back.
    ///
    /// # Errors
    /// The bound growing would cross; the reservation is unchanged.
    pub fn resize(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if let Some(owner) = &self.owner {
            if bytes > self.bytes {
                owner
                    .shared
                    .grow(owner.device, owner.stranger, bytes - self.bytes)?;
            } else {
                owner
                    .shared
                    .shrink(owner.device, owner.stranger, self.bytes - bytes);
            }
        }
        self.bytes = bytes;
        Ok(())
    }

    /// Whether it counts against the strangers' share.
    #[must_use]
    pub fn is_stranger(&self) -> bool {
        self.owner.as_ref().is_some_and(|o| o.stranger)
    }

    /// A second, empty reservation for the same device and budget.
    #[must_use]
    pub fn sibling(&self) -> Self {
        Self {
            owner: self.owner.as_ref().map(|o| Owner {
                shared: o.shared.clone(),
                device: o.device,
                stranger: o.stranger,
            }),
            bytes: 0,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Shrinking never fails.
        let _ = self.resize(0);
    }
}

/// Sets the C allocator up for a long-running daemon whose peers come and
/// go, once at start: allocations of [`MMAP_THRESHOLD`] and more (large
/// frame buffers, the arrays of a large manifest) get their own mappings,
/// which go back to the system when freed. glibc otherwise raises that
/// threshold to the size of the largest block freed so far (up to 32 MiB),
/// after which every 8 MiB frame buffer comes from the heap and stays
/// there. The 1 MiB data buffers of a running transfer stay below it, so
/// they are reused from the heap as before rather than mapped and unmapped
/// for each chunk. A no-op with other C libraries.
#[allow(unsafe_code)]
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocator parameters; it is
    // called before any other thread exists and with a documented
    // parameter and value.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

/// Hands the allocator's free memory back to the system each time a
/// reservation gave back at least [`TRIM_AFTER`] bytes (the daemon runs
/// this for its lifetime). glibc keeps freed small blocks (a manifest's
/// paths) in its arenas; `malloc_trim` returns every whole free page. A
/// no-op with other C libraries. Ends at `cancel`.
pub async fn release_free_memory(budget: MemoryBudget, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = budget.released() => {}
        }
        // Let the rest of a burst of releases (strangers leaving together)
        // finish first, so one trim covers them.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

/// Returns the allocator's free pages to the system.
#[allow(unsafe_code)]
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks
    // each arena in turn).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> DeviceId {
        DeviceId::from_bytes([n; 32])
    }

    fn budget(total: usize, per_device: usize, strangers: usize) -> MemoryBudget {
        MemoryBudget::new(MemoryLimits {
            total,
            per_device,
            strangers,
        })
    }

    #[test]
    fn a_device_is_held_to_its_share() {
        let b = budget(100, 40, 100);
        let mut r = b.account(device(1), true);
        r.resize(40).unwrap();
        assert_eq!(
            r.resize(41),
            Err(OverBudget::Device {
                held: 40,
                limit: 40
            })
        );
        assert_eq!(r.bytes(), 40, "a refused growth changes nothing");
        // Another session of the same device shares the same share.
        let mut other = b.account(device(1), true);
        assert!(other.resize(1).is_err());
        // Another device has its own.
        let mut third = b.account(device(2), true);
        third.resize(40).unwrap();
        assert_eq!(b.in_use(), 80);
    }

    #[test]
    fn strangers_cannot_take_what_trusted_devices_need() {
        let b = budget(100, 30, 50);
        let mut strangers: Vec<_> = (0..5).map(|n| b.account(device(n), false)).collect();
        assert!(strangers[0].resize(30).is_ok());
        assert!(strangers[1].resize(20).is_ok());
        assert_eq!(
            strangers[2].resize(1),
            Err(OverBudget::Strangers {
                held: 50,
                limit: 50
            })
        );
        let mut trusted = b.account(device(9), true);
        trusted.resize(30).unwrap();
        let mut trusted2 = b.account(device(10), true);
        trusted2.resize(20).unwrap();
        assert_eq!(
            trusted2.resize(21),
            Err(OverBudget::Total {
                held: 100,
                limit: 100
            })
        );
    }

    #[test]
    fn dropping_gives_everything_back() {
        let b = budget(100, 60, 100);
        let mut r = b.account(device(1), false);
        r.resize(60).unwrap();
        let mut sibling = r.sibling();
        assert!(
            sibling.resize(1).is_err(),
            "a sibling shares the device's share"
        );
        r.resize(10).unwrap();
        sibling.resize(50).unwrap();
        assert_eq!(b.held_by(&device(1)), 60);
        drop(r);
        drop(sibling);
        assert_eq!(b.in_use(), 0);
        assert_eq!(b.held_by(&device(1)), 0);
        // And the freed share can be taken again.
        let mut again = b.account(device(1), false);
        again.resize(60).unwrap();
    }

    #[test]
    fn an_unbounded_reservation_never_refuses() {
        let mut r = Reservation::unbounded();
        r.resize(usize::MAX).unwrap();
        assert_eq!(r.bytes(), usize::MAX);
    }

    #[test]
    fn sizes_that_overflow_are_refused() {
        let b = budget(usize::MAX, usize::MAX, usize::MAX);
        let mut r = b.account(device(1), true);
        r.resize(usize::MAX - 1).unwrap();
        let mut other = b.account(device(2), true);
        assert!(other.resize(2).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_release_wakes_the_trimmer() {
        let b = budget(100 * MIB, 100 * MIB, 100 * MIB);
        let mut small = b.account(device(1), true);
        small.resize(TRIM_AFTER - 1).unwrap();
        let mut large = b.account(device(2), true);
        large.resize(TRIM_AFTER).unwrap();
        let waiter = b.clone();
        let woken = tokio::spawn(async move { waiter.released().await });
        tokio::task::yield_now().await;
        drop(small);
        tokio::task::yield_now().await;
        assert!(!woken.is_finished(), "a small release does not trim");
        drop(large);
        woken.await.unwrap();
    }
}
