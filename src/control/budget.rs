//! What the local users of the control socket may make the daemon hold:
//! connections, bytes of requests being read, and passed descriptors,
//! per user and in total.
//!
//! Why: every member of group `lanshare` can connect to the system
//! service. Without bounds one member could hold thousands of idle
//! connections, pass tens of thousands of descriptors until the daemon
//! has none left (after which it cannot even accept a connection or ping
//! the systemd watchdog), or send endless lines without a newline. The
//! rules, each chosen so that whatever one user does, every *other* user
//! can still run `share status`:
//!
//! * **Connections**: at most [`Limits::connections_per_uid`] per user
//!   and [`Limits::connections`] in total, except that a user with no
//!   connection open is always let in. So the total is bounded by
//!   `connections` plus the number of users who may connect at all.
//! * **Request bytes**: each connection reads its first [`FREE_BYTES`]
//!   without asking (a `status` request is 30 bytes); a longer request
//!   (a `send` of many files) reserves the rest from its user's and the
//!   overall budget as it grows, and gives it back once parsed.
//! * **Descriptors**: a connection reserves descriptors *before* each
//!   `recvmsg` and offers the kernel room for exactly that many; the
//!   kernel discards any others the client attached (see
//!   [`super::fds`]). A request that announces files reserves them all
//!   before reading them, and holds them until its command ends.
//!
//! The state is a small map behind a mutex: the control socket sees a few
//! requests per second, never a hot path. A [`Lease`] gives everything
//! back when it is dropped, whatever way the connection ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::MAX_REQUEST_LEN;

/// Bytes of a request each connection may buffer without reserving them:
/// one read's worth, enough for every request but a large `send`.
pub(crate) const FREE_BYTES: usize = 16 << 10;

/// How much the control socket's clients may make the daemon hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Open connections of one user (beyond its first).
    pub(crate) connections_per_uid: usize,
    /// Open connections of all users together (each user's first excepted).
    pub(crate) connections: usize,
    /// Request bytes beyond [`FREE_BYTES`] per connection, for one user.
    pub(crate) bytes_per_uid: usize,
    /// Request bytes beyond [`FREE_BYTES`] per connection, for everyone.
    pub(crate) bytes: usize,
    /// Passed descriptors held for one user.
    pub(crate) fds_per_uid: usize,
    /// Passed descriptors held for everyone.
    pub(crate) fds: usize,
}

impl Limits {
    /// The limits for a process that may have `open_files` descriptors
    /// open (`RLIMIT_NOFILE`): clients may make it hold half of them, one
    /// user a quarter; the other half stays free for the daemon's own
    /// sockets, received files and new control connections. With the
    /// units' `LimitNOFILE=524288`, one user may pass 131072 files: more
    /// than the largest transfer ([`crate::protocol::MAX_ENTRIES`]).
    pub(crate) fn for_open_files(open_files: u64) -> Self {
        let open_files = usize::try_from(open_files).unwrap_or(usize::MAX);
        Self {
            connections_per_uid: 32,
            connections: 256,
            bytes_per_uid: 2 * MAX_REQUEST_LEN,
            bytes: 4 * MAX_REQUEST_LEN,
            fds_per_uid: open_files / 4,
            fds: open_files / 2,
        }
    }

    /// The limits for this process, from its current `RLIMIT_NOFILE`.
    pub(crate) fn for_this_process() -> Self {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        Self::for_open_files(limit.current.unwrap_or(u64::MAX))
    }
}

/// Why a connection or a reservation was refused; the message goes to
/// the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The user has too many connections open.
    #[error(
        "too many control connections from your user ({0} open); close some (other `share` commands still running?) and try again"
    )]
    Connections(usize),
    /// The request is larger than the memory left for requests.
    #[error(
        "the daemon is reading too many large requests now; try again when other `share send` commands have started"
    )]
    Bytes,
    /// Not enough descriptors left for the files a request announced.
    #[error(
        "the daemon cannot hold {wanted} more open files now (room for {available}); send fewer files at once, or once your other sends have ended"
    )]
    Descriptors {
        /// Announced by the request.
        wanted: usize,
        /// What the budgets had left.
        available: usize,
    },
}

/// What one user, or everyone, holds now.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    connections: usize,
    bytes: usize,
    fds: usize,
}

#[derive(Debug, Default)]
struct State {
    total: Usage,
    users: HashMap<u32, Usage>,
}

/// The shared budget of one control socket.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: Limits,
    state: Mutex<State>,
}

impl Budget {
    /// A budget enforcing `limits`.
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    /// Lets a connection of `uid` in, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, uid: u32) -> Result<Lease, Refusal> {
        let mut state = self.lock();
        let open = state.users.get(&uid).map_or(0, |u| u.connections);
        if open > 0
            && (open >= self.limits.connections_per_uid
                || state.total.connections >= self.limits.connections)
        {
            return Err(Refusal::Connections(open));
        }
        state.total.connections += 1;
        state.users.entry(uid).or_default().connections += 1;
        Ok(Lease {
            budget: self.clone(),
            uid,
            bytes: 0,
            fds: 0,
        })
    }

    /// Connections, bytes and descriptors held for `uid` now (tests and
    /// logs).
    #[cfg(test)]
    fn usage(&self, uid: u32) -> (usize, usize, usize) {
        let state = self.lock();
        let u = state.users.get(&uid).copied().unwrap_or_default();
        (u.connections, u.bytes, u.fds)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One admitted connection's share of the budget; dropping it gives back
/// everything it holds.
#[derive(Debug)]
pub(crate) struct Lease {
    budget: Arc<Budget>,
    uid: u32,
    bytes: usize,
    fds: usize,
}

impl Lease {
    /// Makes sure a request buffer of `len` bytes is paid for: the first
    /// [`FREE_BYTES`] are free, the rest is reserved from the budget.
    pub(crate) fn cover_bytes(&mut self, len: usize) -> Result<(), Refusal> {
        let want = len.saturating_sub(FREE_BYTES);
        if want <= self.bytes {
            return Ok(());
        }
        let more = want - self.bytes;
        let limits = self.budget.limits;
        let mut state = self.budget.lock();
        let user = state.users.get(&self.uid).map_or(0, |u| u.bytes);
        if user + more > limits.bytes_per_uid || state.total.bytes + more > limits.bytes {
            return Err(Refusal::Bytes);
        }
        state.total.bytes += more;
        state.users.entry(self.uid).or_default().bytes += more;
        self.bytes += more;
        Ok(())
    }

    /// Gives back the request bytes (the request was parsed).
    pub(crate) fn release_bytes(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        let mut state = self.budget.lock();
        state.total.bytes -= bytes;
        if let Some(user) = state.users.get_mut(&self.uid) {
            user.bytes -= bytes;
        }
    }

    /// Reserves `wanted` descriptors, all or none.
    pub(crate) fn reserve_fds(&mut self, wanted: usize) -> Result<(), Refusal> {
        let available = self.reserve_fds_up_to(wanted);
        if available == wanted {
            return Ok(());
        }
        self.release_fds(available);
        Err(Refusal::Descriptors { wanted, available })
    }

    /// Reserves as many descriptors as the budgets allow, at most
    /// `wanted` (possibly none), and returns how many.
    pub(crate) fn reserve_fds_up_to(&mut self, wanted: usize) -> usize {
        let limits = self.budget.limits;
        let mut state = self.budget.lock();
        let user = state.users.get(&self.uid).map_or(0, |u| u.fds);
        let granted = wanted
            .min(limits.fds_per_uid.saturating_sub(user))
            .min(limits.fds.saturating_sub(state.total.fds));
        state.total.fds += granted;
        state.users.entry(self.uid).or_default().fds += granted;
        self.fds += granted;
        granted
    }

    /// Descriptors this connection holds or has reserved.
    #[cfg(test)]
    pub(crate) fn fds_held(&self) -> usize {
        self.fds
    }

    /// Gives back `count` reserved descriptors (a read brought fewer).
    pub(crate) fn release_fds(&mut self, count: usize) {
        let count = count.min(self.fds);
        self.fds -= count;
        let mut state = self.budget.lock();
        state.total.fds -= count;
        if let Some(user) = state.users.get_mut(&self.uid) {
            user.fds -= count;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        state.total.connections -= 1;
        state.total.bytes -= self.bytes;
        state.total.fds -= self.fds;
        if let Some(user) = state.users.get_mut(&self.uid) {
            user.connections -= 1;
            user.bytes -= self.bytes;
            user.fds -= self.fds;
            if user.connections == 0 {
                state.users.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits {
            connections_per_uid: 2,
            connections: 3,
            bytes_per_uid: 100,
            bytes: 150,
            fds_per_uid: 10,
            fds: 15,
        }
    }

    #[test]
    fn connections_per_user_and_in_total_but_every_user_gets_one() {
        let budget = Budget::new(small());
        let a1 = budget.admit(1).unwrap();
        let a2 = budget.admit(1).unwrap();
        assert_eq!(budget.admit(1).unwrap_err(), Refusal::Connections(2));
        let b1 = budget.admit(2).unwrap();
        // Total reached: a second connection of user 2 waits, but a user
        // with none open still gets in.
        assert!(budget.admit(2).is_err());
        let c1 = budget.admit(3).unwrap();
        drop((a1, a2));
        assert_eq!(budget.usage(1), (0, 0, 0));
        let b2 = budget.admit(2).unwrap();
        assert_eq!(budget.usage(2).0, 2);
        drop((b1, b2, c1));
        assert!(budget.lock().users.is_empty());
        assert_eq!(budget.lock().total.connections, 0);
    }

    #[test]
    fn request_bytes_beyond_the_free_share_are_reserved_and_given_back() {
        let budget = Budget::new(small());
        let mut a = budget.admit(1).unwrap();
        a.cover_bytes(FREE_BYTES).unwrap();
        assert_eq!(budget.usage(1).1, 0, "the first bytes are free");
        a.cover_bytes(FREE_BYTES + 60).unwrap();
        a.cover_bytes(FREE_BYTES + 40).unwrap();
        assert_eq!(budget.usage(1).1, 60, "a buffer is paid for once");
        let mut a2 = budget.admit(1).unwrap();
        assert_eq!(a2.cover_bytes(FREE_BYTES + 41), Err(Refusal::Bytes));
        a2.cover_bytes(FREE_BYTES + 40).unwrap();
        let mut b = budget.admit(2).unwrap();
        assert_eq!(b.cover_bytes(FREE_BYTES + 51), Err(Refusal::Bytes));
        b.cover_bytes(FREE_BYTES + 50).unwrap();
        a.release_bytes();
        assert_eq!(budget.usage(1).1, 40);
        drop(a2);
        drop(b);
        assert_eq!(budget.lock().total.bytes, 0);
    }

    #[test]
    fn descriptors_are_granted_up_to_the_budgets() {
        let budget = Budget::new(small());
        let mut a = budget.admit(1).unwrap();
        assert_eq!(a.reserve_fds_up_to(8), 8);
        assert_eq!(a.reserve_fds_up_to(8), 2, "user limit");
        a.release_fds(3);
        assert_eq!(budget.usage(1).2, 7);
        let mut b = budget.admit(2).unwrap();
        assert_eq!(
            b.reserve_fds(9),
            Err(Refusal::Descriptors {
                wanted: 9,
                available: 8
            }),
            "total limit: 7 + 9 > 15"
        );
        assert_eq!(budget.usage(2).2, 0, "a refused reservation holds nothing");
        b.reserve_fds(8).unwrap();
        assert_eq!(b.reserve_fds_up_to(5), 0);
        drop(a);
        drop(b);
        assert_eq!(budget.lock().total.fds, 0);
    }

    #[test]
    fn limits_follow_the_open_file_limit() {
        let l = Limits::for_open_files(524_288);
        assert_eq!((l.fds, l.fds_per_uid), (262_144, 131_072));
        assert!(l.fds_per_uid >= crate::protocol::MAX_ENTRIES);
        let l = Limits::for_open_files(u64::MAX);
        assert!(l.fds_per_uid <= l.fds);
    }
}
