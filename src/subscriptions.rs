//! The daemon's side of `subscribe`: one stream of [`Event`]s per
//! subscriber, merged from the places where things happen.
//!
//! - Transfers: the [`Registry`] publishes a snapshot on every change
//!   (bounded broadcast: publishing never waits for a subscriber); an
//!   incoming transfer that starts waiting for consent also becomes an
//!   [`Event::Offer`]. Whatever protocol delivered the offer, it is in the
//!   registry, so it is here.
//! - Progress: byte counters change per block, far too often to publish,
//!   so each subscriber samples the active transfers every
//!   [`PROGRESS_EVERY`] while there are any, and sends what changed.
//! - Peers: the discovery peer table signals changes of the peer set;
//!   the list is also compared every [`PEERS_EVERY`] (liveness updates and
//!   trust changes do not signal), and sent when it differs.
//!
//! The stream is pulled by the connection that writes it: while a client
//! is slow to read, nothing is computed for it, and the broadcast channel
//! drops what it cannot keep. The stream then says [`Event::Lagged`] and
//! starts over with a snapshot, so a slow subscriber costs the daemon a
//! bounded amount of memory and never delays a transfer.
//!
//! Subscriptions are long-lived connections holding a task and a socket,
//! so there are at most [`MAX_SUBSCRIPTIONS`] of them, and at most
//! [`MAX_SUBSCRIPTIONS_PER_UID`] per user (the system service is shared
//! by the members of its group).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::{Interval, MissedTickBehavior};

use crate::control::events::{Event, EventStream, Topic};
use crate::control::{CommandError, ErrorKind};
use crate::peers::{PeerInfo, Peers};
use crate::registry::{Direction, Registry, State, TransferInfo};

/// Subscriptions open at once, in total.
pub const MAX_SUBSCRIPTIONS: usize = 32;

/// Subscriptions open at once by one user.
pub const MAX_SUBSCRIPTIONS_PER_UID: usize = 8;

/// How often active transfers' counters are sampled.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// How often the peer list is compared for changes nothing signalled.
pub const PEERS_EVERY: Duration = Duration::from_secs(5);

/// Opens subscriptions (cheap to clone).
#[derive(Clone)]
pub struct Subscriptions {
    registry: Registry,
    peers: Arc<Peers>,
    open: Arc<Mutex<Open>>,
}

/// Who holds subscriptions now.
#[derive(Default)]
struct Open {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// One open subscription's place in the limits; released on drop.
struct Permit {
    open: Arc<Mutex<Open>>,
    uid: u32,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_uid.remove(&self.uid);
            }
        }
    }
}

impl Subscriptions {
    /// Subscriptions to these sources.
    pub fn new(registry: Registry, peers: Arc<Peers>) -> Self {
        Self {
            registry,
            peers,
            open: Arc::default(),
        }
    }

    /// Opens a subscription for user `uid` to `topics` (all if empty).
    ///
    /// # Errors
    /// `busy` when the limits are reached.
    pub fn open(&self, uid: u32, topics: &[Topic]) -> Result<EventStream, CommandError> {
        let permit = self.permit(uid)?;
        let topics: HashSet<Topic> = if topics.is_empty() {
            Topic::ALL.into_iter().collect()
        } else {
            topics.iter().copied().collect()
        };
        // Receivers first, then the snapshot: nothing falls in between.
        let changes = topics
            .contains(&Topic::Transfers)
            .then(|| self.registry.subscribe());
        let peers_changed = topics.contains(&Topic::Peers).then(|| self.peers.changes());
        let mut subscriber = Subscriber {
            sources: self.clone(),
            changes,
            peers_changed,
            queue: VecDeque::new(),
            active: HashMap::new(),
            offered: HashSet::new(),
            peers: None,
            progress: interval(PROGRESS_EVERY),
            peers_check: interval(PEERS_EVERY),
            _permit: permit,
        };
        subscriber.resync();
        Ok(Box::pin(futures_util::stream::unfold(
            subscriber,
            |mut s| async move { s.next().await.map(|event| (event, s)) },
        )))
    }

    fn permit(&self, uid: u32) -> Result<Permit, CommandError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = open.per_uid.get(&uid).copied().unwrap_or(0);
        if mine >= MAX_SUBSCRIPTIONS_PER_UID {
            return Err(CommandError::new(
                ErrorKind::Busy,
                format!(
                    "you already have {mine} live views open (share receive, --watch, share notify); close one first"
                ),
            ));
        }
        if open.total >= MAX_SUBSCRIPTIONS {
            return Err(CommandError::new(
                ErrorKind::Busy,
                format!(
                    "the daemon already serves {MAX_SUBSCRIPTIONS} live views (the limit); try again when one closes"
                ),
            ));
        }
        open.total += 1;
        *open.per_uid.entry(uid).or_default() += 1;
        Ok(Permit {
            open: self.open.clone(),
            uid,
        })
    }

    fn peer_list(&self) -> Vec<PeerInfo> {
        self.peers.list()
    }
}

fn interval(period: Duration) -> Interval {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    interval
}

/// One subscriber's state.
struct Subscriber {
    sources: Subscriptions,
    changes: Option<broadcast::Receiver<TransferInfo>>,
    peers_changed: Option<watch::Receiver<u64>>,
    /// Events ready to go (a snapshot and the offers after it).
    queue: VecDeque<Event>,
    /// Active transfers and the counters last sent for each.
    active: HashMap<String, (u64, u64)>,
    /// Offers already sent as [`Event::Offer`].
    offered: HashSet<String>,
    /// The peer list last sent (`None`: peers not subscribed).
    peers: Option<Vec<PeerInfo>>,
    progress: Interval,
    peers_check: Interval,
    _permit: Permit,
}

impl Subscriber {
    /// The next event; `None` when the daemon is going away.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            tokio::select! {
                change = next_change(&mut self.changes) => match change {
                    Ok(info) => self.on_change(info),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "a subscriber lagged; resynchronising it");
                        self.queue.push_back(Event::Lagged { missed });
                        self.resync();
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = peers_changed(&mut self.peers_changed) => {
                    if changed.is_err() {
                        return None;
                    }
                    self.check_peers();
                }
                _ = self.progress.tick(), if !self.active.is_empty() => self.sample_progress(),
                _ = self.peers_check.tick(), if self.peers.is_some() => self.check_peers(),
            }
        }
    }

    /// Queues a snapshot of the subscribed topics and the offers waiting.
    fn resync(&mut self) {
        let transfers = self.changes.is_some().then(|| self.sources.registry.list());
        let peers = self
            .peers_changed
            .is_some()
            .then(|| self.sources.peer_list());
        self.peers.clone_from(&peers);
        self.active.clear();
        self.offered.clear();
        let waiting: Vec<TransferInfo> = transfers
            .iter()
            .flatten()
            .inspect(|t| {
                if t.state == State::Active {
                    self.active
                        .insert(t.id.clone(), (t.bytes_done, t.bytes_sent));
                }
            })
            .filter(|t| is_offer(t))
            .cloned()
            .collect();
        self.queue.push_back(Event::Snapshot { transfers, peers });
        for transfer in waiting {
            self.queue_offer(transfer);
        }
    }

    fn on_change(&mut self, info: TransferInfo) {
        match info.state {
            State::Active => {
                self.active
                    .insert(info.id.clone(), (info.bytes_done, info.bytes_sent));
            }
            _ => {
                self.active.remove(&info.id);
            }
        }
        let offer = is_offer(&info) && !self.offered.contains(&info.id);
        if !is_offer(&info) {
            self.offered.remove(&info.id);
        }
        let transfer = info.clone();
        let trusted =
            (info.direction == Direction::In).then(|| self.sources.peers.is_trusted(&info.peer_id));
        if offer {
            self.queue_offer(info);
        }
        self.queue.push_back(Event::Transfer { transfer, trusted });
    }

    fn queue_offer(&mut self, transfer: TransferInfo) {
        self.offered.insert(transfer.id.clone());
        let trusted = self.sources.peers.is_trusted(&transfer.peer_id);
        self.queue.push_back(Event::Offer { transfer, trusted });
    }

    fn sample_progress(&mut self) {
        for now in self.sources.registry.progress() {
            if let Some(last) = self.active.get_mut(&now.id)
                && *last != (now.bytes_done, now.bytes_sent)
            {
                *last = (now.bytes_done, now.bytes_sent);
                self.queue.push_back(Event::Progress {
                    id: now.id,
                    bytes_done: now.bytes_done,
                    bytes_sent: now.bytes_sent,
                    bytes: now.bytes,
                });
            }
        }
    }

    fn check_peers(&mut self) {
        let Some(last) = &self.peers else {
            return;
        };
        let now = self.sources.peer_list();
        if !same_peers(last, &now) {
            self.peers = Some(now.clone());
            self.queue.push_back(Event::Peers { peers: now });
        }
    }
}

/// Whether two lists show the same devices, ignoring how long ago each
/// was seen (which changes by itself every second).
fn same_peers(a: &[PeerInfo], b: &[PeerInfo]) -> bool {
    let key = |p: &PeerInfo| PeerInfo {
        last_seen_s: 0,
        ..p.clone()
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

/// An incoming transfer waiting for this device's consent.
fn is_offer(info: &TransferInfo) -> bool {
    info.direction == Direction::In && info.state == State::Pending
}

async fn next_change(
    changes: &mut Option<broadcast::Receiver<TransferInfo>>,
) -> Result<TransferInfo, broadcast::error::RecvError> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn peers_changed(
    changed: &mut Option<watch::Receiver<u64>>,
) -> Result<(), watch::error::RecvError> {
    match changed {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use futures_util::StreamExt;

    use super::*;
    use crate::discovery::{Peer, PeerSource, PeerTable};
    use crate::identity::DeviceId;
    use crate::identity::trust::TrustStore;
    use crate::peers::{Connector, Remembered, Resolver};
    use crate::registry::{CHANGES_BUFFERED, Handle, NewTransfer};
    use crate::transport::TransportKind;
    use crate::transport::dial::Dialer;

    struct World {
        subs: Subscriptions,
        registry: Registry,
        table: PeerTable,
        trust: TrustStore,
        _dir: tempfile::TempDir,
    }

    fn world() -> World {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::default();
        let table = PeerTable::new();
        let trust = TrustStore::load(dir.path()).unwrap();
        let connector = Connector::new(Dialer::new(None, None), "me".into(), trust.clone());
        let peers = Peers::new(
            table.clone(),
            trust.clone(),
            Remembered::load(dir.path()).0,
            Arc::new(connector),
            Resolver::new(table.clone(), trust.clone(), false, "me"),
            DeviceId::from_cert_der(b"me"),
        );
        World {
            subs: Subscriptions::new(registry.clone(), Arc::new(peers)),
            registry,
            table,
            trust,
            _dir: dir,
        }
    }

    fn laptop() -> DeviceId {
        DeviceId::from_cert_der(b"laptop")
    }

    fn incoming(registry: &Registry, bytes: u64) -> Handle {
        registry.start(NewTransfer {
            direction: Direction::In,
            peer: "laptop".into(),
            peer_id: laptop(),
            files: 1,
            bytes,
            transport: TransportKind::Quic,
            names: vec!["a.bin".into()],
        })
    }

    async fn next(events: &mut EventStream) -> Event {
        tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .expect("an event within the (paused) minute")
            .expect("the stream goes on")
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_first_then_waiting_offers_then_changes_and_sampled_progress() {
        let w = world();
        let waiting = incoming(&w.registry, 100);
        let _decision = waiting.pending(Duration::from_secs(120));
        w.trust.trust(laptop(), &"laptop".into()).unwrap();
        let mut events = w.subs.open(1000, &[Topic::Transfers]).unwrap();
        match next(&mut events).await {
            Event::Snapshot { transfers, peers } => {
                assert_eq!(transfers.unwrap().len(), 1);
                assert_eq!(peers, None, "peers were not asked for");
            }
            other => panic!("expected a snapshot, got {other:?}"),
        }
        assert!(matches!(
            next(&mut events).await,
            Event::Offer { transfer, trusted: true } if transfer.id == waiting.id()
        ));

        let second = incoming(&w.registry, 1000);
        let _decision = second.pending(Duration::from_secs(120));
        assert!(
            matches!(next(&mut events).await, Event::Offer { transfer, .. } if transfer.id == second.id())
        );
        assert!(
            matches!(next(&mut events).await, Event::Transfer { transfer, .. } if transfer.state == State::Pending)
        );
        second.active();
        assert!(
            matches!(next(&mut events).await, Event::Transfer { transfer, .. } if transfer.state == State::Active)
        );
        second.add_sent(400);
        assert_eq!(
            next(&mut events).await,
            Event::Progress {
                id: second.id().to_owned(),
                bytes_done: 400,
                bytes_sent: 400,
                bytes: 1000
            }
        );
        second.finish(State::Done, None);
        assert!(
            matches!(next(&mut events).await, Event::Transfer { transfer, .. } if transfer.state == State::Done)
        );
        // Nothing is active any more: no sampling, no events.
        assert!(
            tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_that_falls_behind_gets_lagged_and_a_fresh_snapshot() {
        let w = world();
        let mut events = w.subs.open(1000, &[Topic::Transfers]).unwrap();
        assert!(matches!(next(&mut events).await, Event::Snapshot { .. }));
        // The client does not read while many changes happen.
        let handle = incoming(&w.registry, 10);
        for _ in 0..CHANGES_BUFFERED + 5 {
            handle.active();
        }
        handle.finish(State::Failed, Some("gone".into()));
        assert_eq!(next(&mut events).await, Event::Lagged { missed: 6 });
        match next(&mut events).await {
            Event::Snapshot { transfers, .. } => {
                assert_eq!(transfers.unwrap()[0].state, State::Failed);
            }
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn peer_changes_and_trust_changes_are_sent() {
        let w = world();
        let mut events = w.subs.open(1000, &[Topic::Peers]).unwrap();
        assert!(matches!(
            next(&mut events).await,
            Event::Snapshot { transfers: None, peers: Some(p) } if p.is_empty()
        ));
        w.table.upsert_manual(Peer {
            id: laptop(),
            name: "laptop".into(),
            addrs: vec!["192.0.2.7:47000".parse().unwrap()],
            tcp_port: Some(47000),
            version: 1,
            source: PeerSource::Manual,
            last_seen: SystemTime::now(),
        });
        match next(&mut events).await {
            Event::Peers { peers } => assert_eq!((peers.len(), peers[0].trusted), (1, false)),
            other => panic!("expected peers, got {other:?}"),
        }
        // Trusting signals nothing in the table; the periodic check sees it.
        w.trust.trust(laptop(), &"laptop".into()).unwrap();
        match next(&mut events).await {
            Event::Peers { peers } => assert!(peers[0].trusted),
            other => panic!("expected peers, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn subscriptions_are_limited_per_user_and_in_total() {
        let w = world();
        let mine: Vec<EventStream> = (0..MAX_SUBSCRIPTIONS_PER_UID)
            .map(|_| w.subs.open(1000, &[]).unwrap())
            .collect();
        let refused = w.subs.open(1000, &[]).err().unwrap();
        assert_eq!(refused.kind, ErrorKind::Busy);
        let others: Vec<EventStream> = (0..MAX_SUBSCRIPTIONS - MAX_SUBSCRIPTIONS_PER_UID)
            .map(|i| {
                w.subs
                    .open(2000 + u32::try_from(i / 4).unwrap(), &[])
                    .unwrap()
            })
            .collect();
        assert_eq!(w.subs.open(3000, &[]).err().unwrap().kind, ErrorKind::Busy);
        drop(mine);
        assert!(w.subs.open(1000, &[]).is_ok(), "closing frees the places");
        drop(others);
    }
}
