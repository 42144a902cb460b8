//! The subscription: a control connection that stays open and receives
//! what happens in the daemon as it happens.
//!
//! A client sends `{"v":1,"cmd":"subscribe","topics":["transfers"]}` and
//! gets event lines, `{"type":"event","event":{"event":"transfer",...}}`,
//! until it closes the connection (or the daemon stops). There is no final
//! `ok` line; a refusal (too many subscriptions: kind `busy`) is a final
//! `error` line. The first event is always a [`Event::Snapshot`] of the
//! current state, so a client never has to combine a list request with
//! the stream; after it come changes. `share transfers --watch`,
//! `share peers --watch`, `share receive` and the desktop agent
//! (`share notify`) are all built on this.
//!
//! A client that reads too slowly does not hold the daemon back: the
//! daemon keeps a bounded number of recent events for all subscribers
//! together, and one that falls behind them gets [`Event::Lagged`]
//! followed by a fresh snapshot. Progress is sampled, so a slow reader
//! simply sees fewer progress events.

use std::path::PathBuf;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;

use super::client::{self, ClientError};
use super::server::{Client, write_reply};
use super::{CONTROL_VERSION, CommandError, Reply, Request, RequestEnvelope};
use crate::peers::PeerInfo;
use crate::registry::TransferInfo;

/// What a subscription is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topic {
    /// Transfers in both directions, incoming offers, progress.
    Transfers,
    /// The visible devices.
    Peers,
}

impl Topic {
    /// Every topic (what an empty topic list in the request means).
    pub const ALL: [Self; 2] = [Self::Transfers, Self::Peers];
}

/// One event of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The current state of the subscribed topics: the first event, and
    /// again right after [`Event::Lagged`]. A topic not subscribed to is
    /// absent.
    Snapshot {
        /// What `share transfers` lists, oldest first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transfers: Option<Vec<TransferInfo>>,
        /// What `share peers` lists.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peers: Option<Vec<PeerInfo>>,
    },
    /// An incoming offer waits for this device's answer (`share accept` /
    /// `share reject`). Sent when it starts waiting, and for every offer
    /// already waiting right after a snapshot, so a client may see one
    /// offer twice (after `lagged`): the transfer ID identifies it.
    Offer {
        /// The offer as `share transfers` shows it (state `pending`).
        transfer: TransferInfo,
        /// Whether the sender is a trusted device now.
        trusted: bool,
    },
    /// A transfer appeared or changed state (or gained its final paths).
    Transfer {
        /// Its new snapshot.
        transfer: TransferInfo,
        /// For an incoming transfer, whether the sender is a trusted
        /// device now (one the daemon accepted without asking may be a
        /// stranger's, under `accept = "all"`); absent for outgoing ones.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trusted: Option<bool>,
    },
    /// Bytes moved on an active transfer; sent at most a few times a
    /// second per transfer, and only when the counters changed.
    Progress {
        /// Transfer ID.
        id: String,
        /// Bytes known to be at the receiver.
        bytes_done: u64,
        /// Bytes carried over the network, over all attempts.
        bytes_sent: u64,
        /// Total bytes of the transfer.
        bytes: u64,
    },
    /// The visible devices changed (a device appeared, left, changed
    /// address or name, or was trusted or untrusted); the whole list.
    Peers {
        /// What `share peers` lists now.
        peers: Vec<PeerInfo>,
    },
    /// This client read too slowly and `missed` events were dropped for
    /// it; a [`Event::Snapshot`] follows.
    Lagged {
        /// How many events were lost.
        missed: u64,
    },
}

/// The daemon's stream of events for one subscriber.
pub type EventStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Event> + Send>>;

/// The daemon's side of one subscription: writes `events` until the
/// client leaves, leaves an event unread for the control socket's write
/// timeout (a client that stopped reading), or `cancel` fires (the
/// daemon stops).
pub(super) async fn serve(
    mut events: EventStream,
    mut client: Client,
    mut write: OwnedWriteHalf,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = client.gone() => return Ok(()),
            event = events.next() => match event {
                Some(event) => event,
                None => return Ok(()),
            },
        };
        if let Err(e) = write_reply(&mut write, &Reply::Event { event }).await {
            tracing::info!("closing a subscription: {e}");
            return Ok(());
        }
    }
}

/// A client's subscription: events in the order the daemon sent them.
pub struct Subscription {
    lines: Lines<BufReader<OwnedReadHalf>>,
    /// Kept open: closing it ends the subscription.
    _write: OwnedWriteHalf,
    /// The snapshot read while subscribing.
    first: Option<Event>,
}

impl Subscription {
    /// Subscribes to `topics` (all if empty) on the first daemon in
    /// `sockets` that answers. Returns once the daemon has sent its
    /// snapshot: every later change will be seen.
    ///
    /// # Errors
    /// No daemon, no permission, or the daemon refused (kind `busy`).
    pub async fn open(sockets: &[PathBuf], topics: &[Topic]) -> Result<Self, ClientError> {
        let (stream, _) = client::connect(sockets).await?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(&RequestEnvelope {
            v: CONTROL_VERSION,
            request: Request::Subscribe {
                topics: topics.to_vec(),
            },
        })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        write
            .write_all(&line)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut subscription = Self {
            lines: BufReader::new(read).lines(),
            _write: write,
            first: None,
        };
        subscription.first = Some(subscription.read().await?);
        Ok(subscription)
    }

    /// The next event.
    ///
    /// # Errors
    /// The connection ended (the daemon stopped) or broke.
    pub async fn next(&mut self) -> Result<Event, ClientError> {
        match self.first.take() {
            Some(event) => Ok(event),
            None => self.read().await,
        }
    }

    async fn read(&mut self) -> Result<Event, ClientError> {
        let line = self
            .lines
            .next_line()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .ok_or_else(|| {
                ClientError::Protocol("the daemon ended the subscription (did it stop?)".into())
            })?;
        match serde_json::from_str::<Reply<serde_json::Value, Event>>(&line) {
            Ok(Reply::Event { event }) => Ok(event),
            Ok(Reply::Error { message, kind }) => {
                Err(ClientError::Daemon(CommandError::new(kind, message)))
            }
            Ok(Reply::Ok { .. }) => Err(ClientError::Protocol(
                "the daemon answered a subscription with a result".into(),
            )),
            Err(e) => Err(ClientError::Protocol(format!("malformed event: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixStream;

    use super::*;

    /// Serves `events` on one end of a socket pair; returns the other.
    fn serving(events: EventStream) -> (tokio::task::JoinHandle<std::io::Result<()>>, UnixStream) {
        let (daemon, client) = UnixStream::pair().unwrap();
        let (reader, write) = daemon.into_split();
        let watch = Client::new(reader, false);
        let served = tokio::spawn(serve(events, watch, write, CancellationToken::new()));
        (served, client)
    }

    /// A client that stops reading is let go after the write timeout,
    /// instead of holding the daemon's task forever.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_let_go() {
        let endless = Box::pin(futures_util::stream::repeat(Event::Lagged { missed: 1 }));
        let (served, _client) = serving(endless);
        let result = tokio::time::timeout(std::time::Duration::from_secs(600), served).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "still serving: {result:?}"
        );
    }

    #[tokio::test]
    async fn a_client_that_leaves_ends_the_subscription() {
        let (served, client) = serving(Box::pin(futures_util::stream::pending()));
        drop(client);
        assert!(matches!(served.await, Ok(Ok(()))));
    }

    #[tokio::test]
    async fn events_go_out_as_event_lines() {
        let one = Box::pin(futures_util::stream::iter([Event::Lagged { missed: 3 }]));
        let (served, client) = serving(one);
        served.await.unwrap().unwrap();
        let mut lines = BufReader::new(client).lines();
        let line = lines.next_line().await.unwrap().unwrap();
        assert_eq!(
            line,
            r#"{"type":"event","event":{"event":"lagged","missed":3}}"#
        );
        assert_eq!(lines.next_line().await.unwrap(), None);
    }
}
