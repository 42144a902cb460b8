//! Kept partial transfers: the verified data of interrupted incoming
//! transfers, kept in their staging directories for a resume, and the
//! rules that bound it.
//!
//! A transfer interrupted by the link keeps its verified blocks (and only
//! those, [`crate::store::Staging::keep`]) with a resume record
//! ([`super::resume`]). Left alone, that data would be invisible and
//! unbounded: a stranger could fill the disk with transfers it never
//! finishes. So kept data
//!
//! * is listed: `share transfers` shows it on the transfer that left it
//!   ([`annotate`]), `share status` and `share doctor` total it
//!   ([`KeptPartials::summary`]);
//! * can be dropped: `share cancel ID`, `share clean`
//!   ([`super::receive::Receiver::drop_kept`]);
//! * expires: [`KeepPolicy::trusted_for`] after its transfer was last
//!   interrupted for a trusted sender, the much shorter
//!   [`KeepPolicy::untrusted_for`] for anyone else;
//! * is capped: all of it together stays under [`KeepPolicy::max_bytes`],
//!   dropping strangers' data before trusted devices', oldest first.
//!
//! The decisions are pure functions of the records ([`KeepPolicy::to_drop`]);
//! the receiver applies them after every interrupted transfer and in the
//! daemon's periodic sweep.

use std::time::Duration;

use serde::Serialize;

use super::resume::{Record, ResumeStore};
use crate::registry::{Direction, State, TransferInfo, TransferKind};

/// Default of [`KeepPolicy::trusted_for`]: a day.
pub const DEFAULT_KEEP_TRUSTED: Duration = Duration::from_secs(24 * 3600);
/// Default of [`KeepPolicy::untrusted_for`]: an hour.
pub const DEFAULT_KEEP_UNTRUSTED: Duration = Duration::from_secs(3600);
/// Default of [`KeepPolicy::max_bytes`]: 16 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;

/// How long, and how much, partial data is kept (from the configuration:
/// `keep_partial_s`, `keep_partial_untrusted_s`, `max_partial_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepPolicy {
    /// How long a trusted device's partial data is kept after its
    /// transfer was last interrupted.
    pub trusted_for: Duration,
    /// The same for every other device (strangers can be anyone).
    pub untrusted_for: Duration,
    /// All kept partial data together, in bytes; 0 keeps none.
    pub max_bytes: u64,
}

impl Default for KeepPolicy {
    fn default() -> Self {
        Self {
            trusted_for: DEFAULT_KEEP_TRUSTED,
            untrusted_for: DEFAULT_KEEP_UNTRUSTED,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// One kept partial transfer, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Its resume key.
    pub key: String,
    /// Bytes it holds on disk.
    pub bytes: u64,
    /// Whether its sender is a trusted device now.
    pub trusted: bool,
    /// When its transfer was last interrupted (milliseconds since the
    /// epoch).
    pub since_ms: u64,
}

impl KeepPolicy {
    /// How long partial data from a `trusted` (or not) sender is kept.
    pub fn keep_for(&self, trusted: bool) -> Duration {
        if trusted {
            self.trusted_for
        } else {
            self.untrusted_for
        }
    }

    /// Which of `kept` to drop at `now_ms` (milliseconds since the epoch), and
    /// why: every one kept as long as its sender's limit, then, while the
    /// rest together exceed [`max_bytes`](Self::max_bytes), strangers'
    /// before trusted devices', the longest kept first.
    pub fn to_drop(&self, kept: &[Kept], now_ms: u64) -> Vec<(String, DropReason)> {
        let (expired, mut rest): (Vec<&Kept>, Vec<&Kept>) = kept.iter().partition(|k| {
            u128::from(now_ms.saturating_sub(k.since_ms)) >= self.keep_for(k.trusted).as_millis()
        });
        let mut drop: Vec<(String, DropReason)> = expired
            .iter()
            .map(|k| (k.key.clone(), DropReason::Expired))
            .collect();
        let mut total: u64 = rest.iter().map(|k| k.bytes).sum();
        rest.sort_by_key(|k| (k.trusted, k.since_ms));
        for k in rest {
            if total <= self.max_bytes {
                break;
            }
            total -= k.bytes;
            drop.push((k.key.clone(), DropReason::OverCap));
        }
        drop
    }

    /// How often the daemon looks for partial data to drop: a quarter of
    /// the shorter limit, between a minute and an hour.
    pub fn sweep_interval(&self) -> Duration {
        (self.trusted_for.min(self.untrusted_for) / 4)
            .clamp(Duration::from_secs(60), Duration::from_secs(3600))
    }
}

/// Why kept partial data is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Kept as long as its sender's limit.
    Expired,
    /// All kept data together exceeded the cap.
    OverCap,
}

impl DropReason {
    /// In words, for the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "kept as long as the configured limit",
            Self::OverCap => "all partial data together exceeded max_partial_bytes",
        }
    }
}

/// The totals `share status` and `share doctor` report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KeptSummary {
    /// Interrupted transfers that keep partial data.
    pub transfers: usize,
    /// Bytes they hold.
    pub bytes: u64,
    /// The cap on all of it ([`KeepPolicy::max_bytes`]).
    pub max_bytes: u64,
}

/// The kept partial transfers of one receiver, read from its resume
/// records: what the commands list and total.
#[derive(Debug, Clone)]
pub struct KeptPartials {
    store: ResumeStore,
    policy: KeepPolicy,
}

impl KeptPartials {
    /// The kept transfers recorded in `store`, bounded by `policy`.
    pub fn new(store: ResumeStore, policy: KeepPolicy) -> Self {
        Self { store, policy }
    }

    /// The bounds.
    pub fn policy(&self) -> &KeepPolicy {
        &self.policy
    }

    /// Every interrupted transfer that keeps data (not the ones being
    /// received right now), by key. A record from before transfer IDs were
    /// recorded goes by its key's first eight digits.
    pub fn list(&self) -> Vec<(String, Record)> {
        self.store
            .records()
            .into_iter()
            .filter(|(key, record)| record.present > 0 && !self.store.is_busy(key))
            .map(|(key, mut record)| {
                if record.transfer.is_empty() {
                    record.transfer = key.chars().take(8).collect();
                }
                (key, record)
            })
            .collect()
    }

    /// How many there are and what they hold.
    pub fn summary(&self) -> KeptSummary {
        let list = self.list();
        KeptSummary {
            transfers: list.len(),
            bytes: list.iter().map(|(_, r)| r.present).sum(),
            max_bytes: self.policy.max_bytes,
        }
    }
}

/// The transfer list with the kept partial data shown: a listed transfer
/// that left data gets its [`TransferInfo::partial_bytes`]; one no longer
/// listed (the daemon restarted since) is listed from its record, as the
/// failed incoming transfer it was, before the others.
pub fn annotate(mut list: Vec<TransferInfo>, kept: &[(String, Record)]) -> Vec<TransferInfo> {
    let mut records: Vec<&Record> = kept.iter().map(|(_, record)| record).collect();
    // Oldest first, like the table (`created` is in whole seconds).
    records.sort_by_key(|r| (r.created, r.since_ms()));
    let mut earlier = Vec::new();
    for record in records {
        match list.iter_mut().find(|t| t.id == record.transfer) {
            Some(listed) => listed.partial_bytes = Some(record.present),
            None => earlier.push(listed_from(record)),
        }
    }
    earlier.extend(list);
    earlier
}

/// A kept transfer the transfer table no longer holds, as it would list it.
fn listed_from(record: &Record) -> TransferInfo {
    TransferInfo {
        id: record.transfer.clone(),
        direction: Direction::In,
        peer: record.peer_name.clone(),
        peer_id: record.peer,
        looks_like: None,
        state: State::Failed,
        files: record.files,
        bytes: record.bytes,
        bytes_done: record.present,
        bytes_sent: 0,
        transport: record.transport,
        names: record.names.clone(),
        reason: Some("interrupted before the daemon restarted".into()),
        started: record.created,
        kind: TransferKind::Files,
        partial_bytes: Some(record.present),
        expires_in_s: None,
        saved: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600 * 1000;

    fn keys(drop: Vec<(String, DropReason)>) -> Vec<String> {
        drop.into_iter().map(|(key, _)| key).collect()
    }

    fn kept(key: &str, gib: u64, trusted: bool, since_ms: u64) -> Kept {
        Kept {
            key: key.into(),
            bytes: gib << 30,
            trusted,
            since_ms,
        }
    }

    #[test]
    fn strangers_data_expires_sooner() {
        let policy = KeepPolicy::default();
        let now = 100 * HOUR;
        let list = [
            kept("stranger-fresh", 1, false, now - HOUR + 1000),
            kept("stranger-old", 1, false, now - HOUR),
            kept("trusted-hours", 1, true, now - 23 * HOUR),
            kept("trusted-day", 1, true, now - 24 * HOUR),
        ];
        assert_eq!(
            keys(policy.to_drop(&list, now)),
            ["stranger-old", "trusted-day"]
        );
        // Configured otherwise.
        let policy = KeepPolicy {
            trusted_for: Duration::from_secs(2 * 3600),
            untrusted_for: Duration::from_secs(10),
            ..policy
        };
        assert_eq!(
            keys(policy.to_drop(&list, now)),
            [
                "stranger-fresh",
                "stranger-old",
                "trusted-hours",
                "trusted-day"
            ]
        );
        // A clock set back drops nothing early.
        assert!(
            policy
                .to_drop(&[kept("x", 1, false, now + HOUR)], now)
                .is_empty()
        );
    }

    #[test]
    fn over_the_cap_strangers_go_first_then_the_oldest() {
        let policy = KeepPolicy {
            max_bytes: 10 << 30,
            ..KeepPolicy::default()
        };
        let now = 100 * HOUR;
        let list = [
            kept("trusted-old", 4, true, now - 3 * HOUR),
            kept("stranger-new", 3, false, now - 60_000),
            kept("trusted-new", 4, true, now - 60_000),
            kept("stranger-old", 2, false, now - 120_000),
        ];
        // 13 GiB: dropping the older stranger's 2 GiB is not enough, the
        // newer stranger's 3 GiB too brings it to 8.
        assert_eq!(
            policy.to_drop(&list, now),
            [
                ("stranger-old".to_owned(), DropReason::OverCap),
                ("stranger-new".to_owned(), DropReason::OverCap)
            ]
        );
        // Only trusted data over the cap: the oldest goes.
        let trusted = [list[0].clone(), list[2].clone(), kept("t3", 3, true, now)];
        assert_eq!(keys(policy.to_drop(&trusted, now)), ["trusted-old"]);
        // Exactly at the cap: kept.
        let at_cap = [kept("a", 6, false, now), kept("b", 4, true, now)];
        assert!(policy.to_drop(&at_cap, now).is_empty());
        // A cap of 0 keeps nothing.
        let none = KeepPolicy {
            max_bytes: 0,
            ..policy
        };
        assert_eq!(keys(none.to_drop(&at_cap, now)), ["a", "b"]);
    }

    /// Kept transfers no longer in the table are listed from their
    /// records, oldest first (also within one second), before the table;
    /// listed ones get their partial bytes.
    #[test]
    fn kept_transfers_are_listed_oldest_first_and_annotated() {
        use crate::identity::DeviceId;
        let record = |transfer: &str, created: u64, stopped_ms: u64| {
            let mut r = Record::new(DeviceId::from_cert_der(b"a"), &"alice".into());
            r.transfer = transfer.into();
            r.created = created;
            r.updated_ms = stopped_ms;
            r.present = 1 << 20;
            (format!("key-{transfer}"), r)
        };
        // Keys in the opposite order of time.
        let kept = [
            record("b", 100, 100_900),
            record("z", 100, 100_400),
            record("a", 101, 101_100),
            record("t", 200, 200_000),
        ];
        let mut table = listed_from(&kept[3].1);
        table.partial_bytes = None;
        let listed = annotate(vec![table], &kept);
        let ids: Vec<&str> = listed.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["z", "b", "a", "t"]);
        assert!(listed.iter().all(|t| t.partial_bytes == Some(1 << 20)));
        assert_eq!(listed[0].state, State::Failed);
    }

    #[test]
    fn sweeps_run_often_enough_for_the_shorter_limit() {
        assert_eq!(
            KeepPolicy::default().sweep_interval(),
            Duration::from_secs(900)
        );
        let strict = KeepPolicy {
            untrusted_for: Duration::ZERO,
            ..KeepPolicy::default()
        };
        assert_eq!(strict.sweep_interval(), Duration::from_secs(60));
    }
}
