//! When to try a send again, and how long to wait: pure decisions, with
//! time passed in, so they are tested without a clock or a network.
//!
//! A send is retried only once it got going (the receiver had registered
//! the transfer): a typo in a name, or a peer that never answered, fails
//! at once. Then only failures that waiting can cure are retried: the
//! link or the peer's daemon (busy, or paused because its service stops
//! or restarts), not the content, the user or the peer's decision. Blocks
//! that keep failing verification stop it after
//! [`MAX_INTEGRITY_RETRIES`]; the whole retry window is the user's
//! (`retry_s`, `--retry-for`).

use std::time::{Duration, Instant};

use crate::protocol::ErrorCode;
use crate::registry::State;
use crate::transfer::TransferError;
use crate::transport::dial::DialError;

/// First wait before retrying an interrupted send.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Blocks failing verification are re-requested at most this many times.
pub const MAX_INTEGRITY_RETRIES: u32 = 3;

/// Why one attempt of a send failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// Connecting to the peer (named by the label) failed.
    #[error("cannot connect to {0}: {1}")]
    Dial(String, DialError),
    /// The transfer failed once connected.
    #[error(transparent)]
    Transfer(TransferError),
}

impl AttemptError {
    /// Whether trying again could help: the network or the peer's daemon
    /// failed, not the content, the user or the peer's decision.
    pub fn retryable(&self) -> bool {
        match self {
            // A device that left the network (its daemon stopped and said
            // goodbye) may come back: a restart or an upgrade takes seconds.
            Self::Dial(_, DialError::Unreachable(_) | DialError::Gone) => true,
            Self::Dial(..) => false,
            Self::Transfer(e) => match e {
                TransferError::Link(_) | TransferError::Timeout(_) => true,
                TransferError::Peer { code, .. } => matches!(
                    code,
                    ErrorCode::Busy | ErrorCode::Io | ErrorCode::Integrity | ErrorCode::Paused
                ),
                _ => false,
            },
        }
    }

    /// The state a transfer that ends with this error is recorded in.
    pub fn final_state(&self) -> State {
        match self {
            Self::Transfer(TransferError::Rejected { .. }) => State::Rejected,
            Self::Transfer(
                TransferError::Cancelled
                | TransferError::Peer {
                    code: ErrorCode::Cancelled,
                    ..
                },
            ) => State::Cancelled,
            _ => State::Failed,
        }
    }

    fn is_integrity(&self) -> bool {
        matches!(
            self,
            Self::Transfer(TransferError::Peer {
                code: ErrorCode::Integrity,
                ..
            })
        )
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this long.
    RetryIn(Duration),
    /// Stop: report the error.
    GiveUp,
}

/// A doubling wait between `min` and `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    current: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            current: min,
            min,
            max,
        }
    }

    /// The wait now.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The wait now; the next one is twice as long (at most `max`).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.current;
        self.current = (self.current * 2).min(self.max);
        wait
    }

    /// Back to `min` (something changed that makes success likely).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

/// The retry state of one send.
#[derive(Debug, Clone)]
pub struct RetryPlan {
    /// No retry may start after this.
    deadline: Instant,
    backoff: Backoff,
    integrity_failures: u32,
}

impl RetryPlan {
    /// Retries until `window` after `started`.
    pub fn new(started: Instant, window: Duration) -> Self {
        Self {
            deadline: started + window,
            backoff: Backoff::new(RETRY_INITIAL, RETRY_MAX),
            integrity_failures: 0,
        }
    }

    /// Never retries (a text: the receiver may have stored it already).
    pub fn never(now: Instant) -> Self {
        Self::new(now, Duration::ZERO)
    }

    /// The decision after an attempt failed with `error` at `now`;
    /// `got_going` says whether the transfer had started at the receiver
    /// (in any attempt so far).
    pub fn after(&mut self, error: &AttemptError, got_going: bool, now: Instant) -> Next {
        if error.is_integrity() {
            self.integrity_failures += 1;
        }
        let wait = self.backoff.current();
        let retry = got_going
            && error.retryable()
            && self.integrity_failures <= MAX_INTEGRITY_RETRIES
            && now + wait < self.deadline;
        if retry {
            Next::RetryIn(self.backoff.next_wait())
        } else {
            Next::GiveUp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_lost() -> AttemptError {
        AttemptError::Transfer(TransferError::Link("connection lost".into()))
    }

    fn peer(code: ErrorCode) -> AttemptError {
        AttemptError::Transfer(TransferError::Peer {
            peer: "desktop".into(),
            code,
            message: "x".into(),
        })
    }

    #[test]
    fn only_failures_that_waiting_can_cure_are_retried() {
        let t0 = Instant::now();
        let window = Duration::from_secs(600);
        for retryable in [
            link_lost(),
            peer(ErrorCode::Busy),
            peer(ErrorCode::Io),
            peer(ErrorCode::Integrity),
            peer(ErrorCode::Paused),
            AttemptError::Dial("x".into(), DialError::Unreachable(vec![])),
            AttemptError::Dial("x".into(), DialError::Gone),
        ] {
            let mut plan = RetryPlan::new(t0, window);
            assert_eq!(
                plan.after(&retryable, true, t0),
                Next::RetryIn(RETRY_INITIAL),
                "{retryable}"
            );
        }
        for fatal in [
            peer(ErrorCode::Cancelled),
            peer(ErrorCode::Protocol),
            peer(ErrorCode::NoSpace),
            AttemptError::Transfer(TransferError::Rejected {
                peer: "desktop".into(),
                reason: "no".into(),
            }),
            AttemptError::Transfer(TransferError::Cancelled),
            AttemptError::Transfer(TransferError::Stopping),
            AttemptError::Transfer(TransferError::Local("changed".into())),
            AttemptError::Dial("x".into(), DialError::Refused("impostor".into())),
        ] {
            let mut plan = RetryPlan::new(t0, window);
            assert_eq!(plan.after(&fatal, true, t0), Next::GiveUp, "{fatal}");
        }
    }

    #[test]
    fn nothing_is_retried_before_the_transfer_got_going() {
        let t0 = Instant::now();
        let mut plan = RetryPlan::new(t0, Duration::from_secs(600));
        assert_eq!(plan.after(&link_lost(), false, t0), Next::GiveUp);
        // A fresh send to a device that left fails at once.
        let gone = AttemptError::Dial("x".into(), DialError::Gone);
        assert_eq!(plan.after(&gone, false, t0), Next::GiveUp);
        let mut never = RetryPlan::never(t0);
        assert_eq!(never.after(&link_lost(), true, t0), Next::GiveUp);
    }

    #[test]
    fn waits_double_up_to_the_maximum_within_the_window() {
        let t0 = Instant::now();
        let mut plan = RetryPlan::new(t0, Duration::from_secs(120));
        let mut now = t0;
        let mut waits = Vec::new();
        while let Next::RetryIn(wait) = plan.after(&link_lost(), true, now) {
            waits.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        // The next wait would end after the window.
        assert!(now + RETRY_MAX >= t0 + Duration::from_secs(120));
    }

    #[test]
    fn integrity_failures_stop_after_the_limit() {
        let t0 = Instant::now();
        let mut plan = RetryPlan::new(t0, Duration::from_secs(3600));
        let bad = peer(ErrorCode::Integrity);
        for _ in 0..MAX_INTEGRITY_RETRIES {
            assert!(matches!(plan.after(&bad, true, t0), Next::RetryIn(_)));
        }
        assert_eq!(plan.after(&bad, true, t0), Next::GiveUp);
    }

    #[test]
    fn final_states() {
        assert_eq!(link_lost().final_state(), State::Failed);
        assert_eq!(peer(ErrorCode::Cancelled).final_state(), State::Cancelled);
        assert_eq!(
            AttemptError::Transfer(TransferError::Rejected {
                peer: "p".into(),
                reason: "r".into()
            })
            .final_state(),
            State::Rejected
        );
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_secs(2));
    }
}
