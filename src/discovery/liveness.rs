//! When discovery speaks and when it checks a peer: the timing decisions,
//! as pure functions of explicit instants (tested under tokio's paused
//! clock), so that traffic grows with the number of devices, not its square.
//!
//! # What each daemon sends
//!
//! | when | what (per interface, once over IPv4 and once over IPv6) | who decides |
//! |---|---|---|
//! | start | 3 probes 250 ms apart, then 2 announcements 1 s apart | mdns-sd (RFC 6762 §8) |
//! | start | a PTR query after 10-50 ms, repeated after 1, 2, 4, ... s up to once an hour, listing the peers it knows so that they stay silent | mdns-sd (§5.2, §7.1) |
//! | every 60-75 s, drawn anew each time | an announcement of all its records, repeated 1 s later | [`Announcer`] |
//! | a peer was not heard for 81-88 s (drawn anew each time), or a connection to it failed | a check: SRV, A and AAAA queries for that peer, twice 1 s apart (once, for 0.5 s, after a refused connection); at most once per [`CHECK_INTERVAL`] per peer | [`Silence`], [`Checks`] |
//! | stop | goodbyes (TTL 0) | mdns-sd |
//!
//! Answers to other devices' queries come on top, but in steady state
//! nobody asks: see below. On a LAN of N lanshare devices that is about
//! 4 N / 67.5 packets per second (two announcements over two address
//! families every 67.5 s on average), plus the PTR queries, which fade to
//! 2 N per hour. A device that vanishes without a goodbye costs each
//! browser one check (4 packets) and, about an hour later, some 16 packets
//! more (mdns-sd refreshes the vanished device's PTR and TXT records near
//! their 4500 s TTL; read in mdns-sd's source, not measured).
//!
//! # Why the announcements
//!
//! A browser keeps a peer's records for their TTL and asks for them again
//! at 80, 85, 90 and 95 % of it (RFC 6762 §5.2). mdns-sd 0.21.7 does so at
//! exactly those points (`DnsRecord::refresh_maybe` in `dns_parser.rs`,
//! without the 2 % random variation the RFC asks for) and has no duplicate
//! question suppression (§7.3). Every browser received the peer's last
//! announcement at the same moment, so all N - 1 of them ask at the same
//! millisecond: N (N - 1) queries per TTL, in bursts. Announcing before
//! anyone's refresh point keeps every cache fresh with one announcement
//! per device instead, so browsers never need to ask. The next announcement is
//! drawn uniformly from [`ANNOUNCE_MIN`] to [`ANNOUNCE_MIN`] +
//! [`ANNOUNCE_SPREAD`] each time, so daemons that start together drift
//! apart within a few rounds.
//!
//! Each periodic announcement also flips the TXT key `beat` between `0`
//! and `1`. mdns-sd reports a peer only when its records change, so the
//! flip is what lets every browser see each announcement: it keeps "last
//! heard" current (`share peers`) and tells [`Silence`] who went quiet.
//! Both values are probed once (the second at the first periodic
//! announcement) and then re-announced without probing, as mdns-sd does
//! for records it already owns.
//!
//! # Record TTLs and liveness
//!
//! mdns-sd 0.21.7 announces SRV, A and AAAA with a TTL of [`HOST_TTL`]
//! (120 s) and PTR and TXT with 4500 s, the values RFC 6762 §10
//! recommends, and offers no way to change them (`ServiceInfo::_set_host_ttl`
//! is crate-private). 120 s is also what we would pick: the announcement
//! interval must stay under 80 % of the TTL with room for jitter and for a
//! check, and a shorter TTL would mean more announcements.
//!
//! - A clean stop sends goodbyes: peers drop the device about 1 s later.
//! - A device that vanishes silently (`kill -9`, power loss) misses its
//!   next announcement. Each browser checks it once it has not been heard
//!   for 81-88 s ([`Silence`]; its own random limit, so that the browsers'
//!   checks do not coincide) and drops it [`CHECK_TIMEOUT`] later: **at most
//!   91 s after its last announcement**, between 6 s and 91 s after it
//!   died. The check is mdns-sd's `verify` (RFC 6762 §10.4), which flushes
//!   the records before mdns-sd's own refresh at 96 s would send 4 rounds
//!   of queries; mdns-sd's cache expiry at 120 s remains the backstop.
//! - A failed connection to the device proves more than silence: the
//!   browser checks it at once ([`Checks`]) and drops it [`CHECK_TIMEOUT`]
//!   later if it does not answer. So a send to a vanished device fails (it
//!   cannot connect) and the next `share peers` no longer lists it.
//! - A refused connection (every TCP address answered that nothing
//!   listens) proves more still: the host is up, so a daemon there would
//!   answer at once. That check waits only [`REFUSED_CHECK_TIMEOUT`] (one
//!   query), and the send, which waits for the verdict rather than for
//!   QUIC's connect timeout, fails in under a second.
//! - A live device that misses an announcement (both packets lost) answers
//!   the check and stays. It is dropped only if it misses every
//!   announcement and answers nothing for as long; its next announcement
//!   brings it back. A device that does not announce periodically (another
//!   implementation) stays listed as long as it answers a check every
//!   81-88 s.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// TTL mdns-sd gives SRV, A and AAAA records (`DNS_HOST_TTL`).
pub(crate) const HOST_TTL: Duration = Duration::from_secs(120);

/// A browser refreshes a record at this share of its TTL (RFC 6762 §5.2).
const REFRESH_AT_PERCENT: u32 = 80;

/// Shortest time between two periodic announcements.
pub(crate) const ANNOUNCE_MIN: Duration = Duration::from_secs(60);

/// The random part of the time between two periodic announcements.
pub(crate) const ANNOUNCE_SPREAD: Duration = Duration::from_secs(15);

/// Shortest time a peer may go unheard before it is checked: past its
/// longest announcement interval, the repeat 1 s later, and 5 s of slack
/// for a late timer.
pub(crate) const SILENCE_MIN: Duration = Duration::from_secs(81);

/// The random part of how long a peer may go unheard.
pub(crate) const SILENCE_SPREAD: Duration = Duration::from_secs(7);

/// How long a checked peer has to answer before mdns-sd drops it. mdns-sd
/// queries twice, 1 s apart; a live peer on the LAN answers in
/// milliseconds.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The same for a peer whose every TCP address refused a connection: its
/// host answered, so it is on the LAN and answers an mDNS query at once if
/// its daemon runs; one query, no repeat.
pub(crate) const REFUSED_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// At most one check per peer instance in this interval, however often
/// connections to it fail.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(30);

// A peer is checked only after it missed an announcement (and its repeat
// 1 s later), with 5 s to spare for a late timer.
const _: () =
    assert!(ANNOUNCE_MIN.as_secs() + ANNOUNCE_SPREAD.as_secs() + 1 + 5 <= SILENCE_MIN.as_secs());
// The check of a vanished peer ends before mdns-sd's own refresh at 80 %
// of the TTL would send its four rounds of queries, with 5 s to spare.
const _: () = assert!(
    SILENCE_MIN.as_secs() + SILENCE_SPREAD.as_secs() + CHECK_TIMEOUT.as_secs() + 5
        <= HOST_TTL.as_secs() * REFRESH_AT_PERCENT as u64 / 100
);

/// `unit`, drawn uniformly from [0, 1), clamped to it (NaN counts as 0).
fn clamp_unit(unit: f64) -> f64 {
    // `>=` is false for NaN too.
    if unit >= 0.0 { unit.min(1.0) } else { 0.0 }
}

/// The time until the next periodic announcement, for `unit` drawn
/// uniformly from [0, 1).
pub(crate) fn announce_delay(unit: f64) -> Duration {
    ANNOUNCE_MIN + ANNOUNCE_SPREAD.mul_f64(clamp_unit(unit))
}

/// How long a peer may go unheard before it is checked, for `unit` drawn
/// uniformly from [0, 1).
pub(crate) fn silence_limit(unit: f64) -> Duration {
    SILENCE_MIN + SILENCE_SPREAD.mul_f64(clamp_unit(unit))
}

/// The periodic announcements of our own service.
#[derive(Debug)]
pub(crate) struct Announcer {
    next: Instant,
    beat: bool,
}

impl Announcer {
    /// Registration (TXT `beat=0`) happened at `now`; the first periodic
    /// announcement follows after [`announce_delay`]`(unit)`.
    pub(crate) fn new(now: Instant, unit: f64) -> Self {
        Self {
            next: now + announce_delay(unit),
            beat: false,
        }
    }

    /// When the next announcement is due.
    pub(crate) fn due(&self) -> Instant {
        self.next
    }

    /// The announcement due now was sent at `now`: flips the beat (returned,
    /// to be announced) and schedules the next one [`announce_delay`]`(unit)`
    /// later.
    pub(crate) fn announced(&mut self, now: Instant, unit: f64) -> bool {
        self.beat = !self.beat;
        self.next = now + announce_delay(unit);
        self.beat
    }
}

/// When each peer instance is due for a check if nothing is heard from it.
#[derive(Debug, Default)]
pub(crate) struct Silence {
    /// Instance fullname (lower case) -> the fullname as received (mdns-sd
    /// looks records up by it) and when it is due.
    due: HashMap<String, (String, Instant)>,
}

impl Silence {
    /// The instance `fullname` was heard at `now`: it is due for a check
    /// [`silence_limit`]`(unit)` later unless heard again.
    pub(crate) fn heard(&mut self, fullname: &str, now: Instant, unit: f64) {
        self.due.insert(
            fullname.to_lowercase(),
            (fullname.to_owned(), now + silence_limit(unit)),
        );
    }

    /// The instance is gone: no more checks.
    pub(crate) fn forget(&mut self, fullname: &str) {
        self.due.remove(&fullname.to_lowercase());
    }

    /// When the next instance is due, if any.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.values().map(|(_, due)| *due).min()
    }

    /// The instances (fullnames as received) due at `now`, to be checked.
    /// Each is due again a full [`silence_limit`] later (`unit` is called
    /// once per instance), in case it answers the check but still does not
    /// announce.
    pub(crate) fn overdue(&mut self, now: Instant, mut unit: impl FnMut() -> f64) -> Vec<String> {
        let mut found = Vec::new();
        for (fullname, due) in self.due.values_mut() {
            if *due <= now {
                found.push(fullname.clone());
                *due = now + silence_limit(unit());
            }
        }
        found.sort();
        found
    }
}

/// Why a peer is being checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CheckCause {
    /// It was not heard for longer than its announcements allow.
    Silence,
    /// A connection to it failed.
    FailedConnection,
    /// Every TCP address refused a connection to it.
    Refused,
}

/// Rate limit for checks, and what each recent check was for.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    /// Instance fullname (lower case) -> when it was last checked, and why.
    last: HashMap<String, (Instant, CheckCause)>,
}

impl Checks {
    /// Whether the instance `fullname` may be checked at `now`; if so, the
    /// check is recorded. Remembers only checks of the last
    /// [`CHECK_INTERVAL`], so its size is bounded by the peers checked in it.
    pub(crate) fn admit(&mut self, fullname: &str, now: Instant, cause: CheckCause) -> bool {
        self.last
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < CHECK_INTERVAL);
        let key = fullname.to_lowercase();
        if self.last.contains_key(&key) {
            return false;
        }
        self.last.insert(key, (now, cause));
        true
    }

    /// The cause of a check of `fullname` under way at `now` (started at
    /// most [`CHECK_TIMEOUT`], plus a second of slack, before): a removal
    /// now is its verdict.
    pub(crate) fn checking(&self, fullname: &str, now: Instant) -> Option<CheckCause> {
        self.last
            .get(&fullname.to_lowercase())
            .filter(|(at, _)| {
                now.saturating_duration_since(*at) <= CHECK_TIMEOUT + Duration::from_secs(1)
            })
            .map(|(_, cause)| *cause)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn delays_stay_between_the_bounds() {
        assert_eq!(announce_delay(0.0), ANNOUNCE_MIN);
        assert_eq!(announce_delay(1.0), ANNOUNCE_MIN + ANNOUNCE_SPREAD);
        assert_eq!(announce_delay(-3.0), ANNOUNCE_MIN);
        assert_eq!(announce_delay(f64::NAN), ANNOUNCE_MIN);
        let mid = announce_delay(0.5);
        assert!(mid > ANNOUNCE_MIN && mid < ANNOUNCE_MIN + ANNOUNCE_SPREAD);
        assert_eq!(silence_limit(0.0), SILENCE_MIN);
        assert_eq!(silence_limit(2.0), SILENCE_MIN + SILENCE_SPREAD);
        // The longest announcement interval and its repeat fit in the
        // shortest silence; the longest silence and its check end before
        // browsers refresh at 80 % of the TTL.
        assert!(announce_delay(1.0) + Duration::from_secs(1) < silence_limit(0.0));
        assert!(silence_limit(1.0) + CHECK_TIMEOUT < HOST_TTL.mul_f64(0.8));
    }

    /// 64 daemons started in the same millisecond, each announcing on its
    /// own timer for an hour of paused time: every interval is jittered,
    /// the beat flips every time, and they drift apart, so no second
    /// carries more than a handful of announcements.
    #[tokio::test(start_paused = true)]
    async fn daemons_started_together_drift_apart() {
        const N: u64 = 64;
        let start = Instant::now();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for seed in 0..N {
            let sent = sent.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut announcer = Announcer::new(Instant::now(), rng.f64());
                // Registration announced `beat=0`.
                let mut previous = (Instant::now(), false);
                while announcer.due() < start + Duration::from_secs(3600) {
                    tokio::time::sleep_until(announcer.due()).await;
                    let now = Instant::now();
                    let beat = announcer.announced(now, rng.f64());
                    let gap = now - previous.0;
                    assert!(gap >= ANNOUNCE_MIN && gap <= ANNOUNCE_MIN + ANNOUNCE_SPREAD);
                    assert_ne!(beat, previous.1, "the beat flips at every announcement");
                    previous = (now, beat);
                    sent.lock().unwrap().push(now - start);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let sent = sent.lock().unwrap();
        // About one per device every 67.5 s.
        let per_device_hour = sent.len() as f64 / N as f64;
        assert!(
            (3600.0 / 75.0..=3600.0 / 60.0).contains(&per_device_hour),
            "{per_device_hour} announcements per device and hour"
        );
        // Busiest second after the first round: far from all 64 at once.
        let mut per_second = HashMap::<u64, u32>::new();
        for at in sent.iter().filter(|at| at.as_secs() >= 120) {
            *per_second.entry(at.as_secs()).or_default() += 1;
        }
        let busiest = per_second.values().copied().max().unwrap();
        assert!(busiest <= 8, "{busiest} announcements in one second");
    }

    /// 48 browsers follow one peer for an hour of paused time: while it
    /// announces nobody checks it; once it dies, every browser checks it
    /// once, 81-88 s after its last announcement, and their checks are
    /// spread over those 7 s instead of coinciding.
    #[tokio::test(start_paused = true)]
    async fn only_a_silent_peer_is_checked_and_the_checks_are_spread() {
        const BROWSERS: usize = 48;
        const PEER: &str = "Peer._lanshare._udp.local.";
        let mut rng = fastrand::Rng::with_seed(7);
        let start = Instant::now();
        let mut browsers: Vec<Silence> = (0..BROWSERS).map(|_| Silence::default()).collect();
        for silence in &mut browsers {
            silence.heard(PEER, start, rng.f64());
        }
        let mut announcer = Announcer::new(start, rng.f64());
        let dies_at = start + Duration::from_secs(3600);
        let mut last_heard = start;
        let mut checks = Vec::new();
        loop {
            let next_check = browsers.iter().filter_map(Silence::next_due).min().unwrap();
            let announcing = announcer.due() < dies_at;
            if announcing && announcer.due() <= next_check {
                tokio::time::sleep_until(announcer.due()).await;
                let now = Instant::now();
                announcer.announced(now, rng.f64());
                last_heard = now;
                // The same packet reaches every browser at once.
                for silence in &mut browsers {
                    silence.heard(PEER, now, rng.f64());
                }
                continue;
            }
            if !announcing && next_check > last_heard + silence_limit(1.0) {
                break;
            }
            tokio::time::sleep_until(next_check).await;
            let now = Instant::now();
            for (i, silence) in browsers.iter_mut().enumerate() {
                for fullname in silence.overdue(now, || rng.f64()) {
                    assert_eq!(fullname, PEER);
                    checks.push((i, now));
                }
            }
        }
        assert!(last_heard < dies_at && last_heard + ANNOUNCE_MIN + ANNOUNCE_SPREAD >= dies_at);
        assert_eq!(checks.len(), BROWSERS, "one check per browser: {checks:?}");
        let mut per_second = HashMap::<u64, usize>::new();
        for (_, at) in &checks {
            let silent = *at - last_heard;
            assert!(silent >= SILENCE_MIN && silent <= SILENCE_MIN + SILENCE_SPREAD);
            *per_second.entry(silent.as_secs()).or_default() += 1;
        }
        let busiest = per_second.values().copied().max().unwrap();
        assert!(busiest <= BROWSERS / 3, "{busiest} checks in one second");

        // A peer that is gone is forgotten: nothing more is due.
        for silence in &mut browsers {
            silence.forget("PEER._lanshare._udp.local.");
            assert_eq!(silence.next_due(), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_is_checked_at_most_once_per_interval() {
        let mut checks = Checks::default();
        let t0 = Instant::now();
        assert!(checks.admit(
            "Bob._lanshare._udp.local.",
            t0,
            CheckCause::FailedConnection
        ));
        assert_eq!(
            checks.checking("bob._lanshare._udp.local.", t0),
            Some(CheckCause::FailedConnection)
        );
        // Another failure, or silence, soon after: no second check,
        // case-insensitively.
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        assert!(!checks.admit("bob._lanshare._udp.local.", now, CheckCause::Silence));
        assert!(checks.admit("eve._lanshare._udp.local.", now, CheckCause::Silence));
        assert_eq!(
            checks.checking("eve._lanshare._udp.local.", now),
            Some(CheckCause::Silence)
        );
        // The check's verdict comes CHECK_TIMEOUT after it started; a
        // removal long after it has another cause.
        assert_eq!(checks.checking("bob._lanshare._udp.local.", now), None);
        // Bob again once the interval since his check has passed.
        tokio::time::advance(CHECK_INTERVAL - Duration::from_secs(5)).await;
        let now = Instant::now();
        assert!(checks.admit(
            "bob._lanshare._udp.local.",
            now,
            CheckCause::FailedConnection
        ));
        // Old entries are forgotten: only the two recent checks remain.
        assert_eq!(checks.last.len(), 2);
        tokio::time::advance(CHECK_INTERVAL).await;
        let now = Instant::now();
        assert!(checks.admit("carol._lanshare._udp.local.", now, CheckCause::Silence));
        assert_eq!(checks.last.len(), 1);
    }
}
