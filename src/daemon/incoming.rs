//! Incoming connections: the connection slots, the `Hello` exchange, and
//! the one place that knows what a session can be. The first message
//! after `Hello` picks it:
//!
//! | first message | session |
//! |---|---|
//! | `Offer` (or anything else) | a file transfer ([`Receiver`]), whose receiver answers a non-`Offer` with a protocol error |
//! | `Text` | a text ([`crate::transfer::text::receive`]) |
//! | `PairRequest` | pairing ([`Pairings::serve`]) |
//! | `Probe` | a reachability probe to answer ([`Doctor::answer_probe`]) |
//! | `Echo` | the dial-back of our own probe ([`Doctor::echoed`]) |
//!
//! Adding a kind of session is one arm in [`Incoming::session`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::peer_slots::PeerSlots;
use crate::doctor::Doctor;
use crate::identity::trust::TrustStore;
use crate::intake::Sender;
use crate::pairing::Pairings;
use crate::peers::Peers;
use crate::protocol::Message;
use crate::transfer::framed::{Framed, RecvError};
use crate::transfer::memory::MemoryBudget;
use crate::transfer::receive::Receiver;
use crate::transfer::{STOP_GRACE, TransferError, handshake, text};
use crate::transport::Link;

/// How long the last message of a refused connection may take to arrive.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// How long a finished session waits for the peer to close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What incoming sessions need.
pub(super) struct Incoming {
    /// This device's name, for our `Hello`.
    pub(super) name: String,
    pub(super) trust: TrustStore,
    /// Open incoming connections, trusted devices apart from strangers.
    pub(super) peer_slots: PeerSlots,
    /// What peers' frames and offers may hold in memory.
    pub(super) memory: MemoryBudget,
    pub(super) receiver: Arc<Receiver>,
    pub(super) pairings: Arc<Pairings>,
    pub(super) peers: Arc<Peers>,
    pub(super) doctor: Arc<Doctor>,
}

impl Incoming {
    /// Handles every authenticated incoming link in its own task, until
    /// `cancel`.
    pub(super) async fn run(
        self: Arc<Self>,
        mut links: mpsc::Receiver<Link>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) {
        loop {
            let link = tokio::select! {
                () = cancel.cancelled() => break,
                link = links.recv() => match link {
                    Some(link) => link,
                    None => break,
                },
            };
            tracker.spawn(self.clone().serve(link, cancel.clone()));
        }
    }

    /// One incoming connection: hello, then one session; then a clean
    /// close, waiting (bounded) for the peer so our last message — a
    /// refusal, an error, `Done` — is delivered before the connection
    /// goes away. Once the daemon stops (`stopping`), the close waits
    /// only for our last message, not for the peer's data in flight.
    async fn serve(self: Arc<Self>, link: Link, stopping: CancellationToken) {
        let (peer, kind, remote) = (link.peer, link.kind, link.remote);
        let trusted = self.trust.is_trusted(&peer);
        let mut framed = Framed::budgeted(link, self.memory.account(peer, trusted));
        let _slot = match self.peer_slots.acquire(peer, remote.ip(), trusted) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Strangers over their bounds are routine under a flood:
                // not worth a warning each.
                if trusted {
                    tracing::warn!(%peer, %remote, "{refusal}; refusing a trusted device");
                } else {
                    tracing::debug!(%peer, %remote, "{refusal}; refusing");
                }
                let busy = TransferError::Busy(format!("{refusal}; try again later"));
                framed.send_error(&busy).await;
                framed.into_link().wait_delivered(REFUSAL_LINGER).await;
                return;
            }
        };
        match handshake::server(&mut framed, &self.name, &self.trust).await {
            Ok(hello) => {
                tracing::debug!(%peer, %remote, %kind, name = %hello.name, "peer connected");
                self.peers.heard_from(&peer);
                let sender = Sender {
                    id: peer,
                    address: remote.ip(),
                    name: hello.name,
                    transport: kind,
                };
                let first = framed.recv().await;
                self.session(&mut framed, &sender, first).await;
            }
            Err(e) => tracing::info!(%peer, %remote, %kind, "handshake failed: {e}"),
        }
        let link = framed.into_link();
        if stopping.is_cancelled() {
            link.interrupt(STOP_GRACE).await;
        } else {
            link.close(CLOSE_WAIT).await;
        }
    }

    /// Serves an authenticated link whose first message after `Hello` was
    /// `first`.
    async fn session(
        &self,
        framed: &mut Framed,
        sender: &Sender,
        first: Result<Message, RecvError>,
    ) {
        match first {
            Ok(Message::Text { text }) => {
                text::receive(framed, self.receiver.intake(), sender, text).await;
            }
            Ok(Message::PairRequest) => self.pairings.serve(framed, &sender.name).await,
            Ok(Message::Probe { port, nonce }) => {
                self.doctor.answer_probe(framed, port, nonce).await;
            }
            Ok(Message::Echo { nonce }) => {
                if !self.doctor.echoed(&nonce, sender.id, sender.transport) {
                    tracing::debug!(peer = %sender.id, "unexpected probe echo");
                }
            }
            first => self.receiver.receive_first(framed, sender, first).await,
        }
    }
}
