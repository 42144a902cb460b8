//! The daemon's side of every control command: one exhaustive match from
//! [`Request`] to the feature that owns it, and each feature's result or
//! error in the control protocol's terms ([`Response`], [`CommandError`]).
//!
//! The features hold their own state; this is only the switchboard, so
//! adding a command is one arm here (the compiler checks that none is
//! missing) and a method on its feature.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::status::Status;
use crate::control::events::{EventStream, Topic};
use crate::control::server::{Caller, Handler};
use crate::control::{Ack, CommandError, ErrorKind, Request, Response, SendEntry, SendEvent};
use crate::doctor::Doctor;
use crate::history::History;
use crate::intake::inbox::Inbox;
use crate::outgoing::{Payload, SendJob, SendReport, SendService};
use crate::pairing::Pairings;
use crate::peers::Peers;
use crate::protocol::HumanBytes;
use crate::queue::{NewQueued, Queue};
use crate::registry::{Decision, Registry, RegistryError};
use crate::subscriptions::Subscriptions;
use crate::transfer::kept;
use crate::transfer::receive::{DropError, Receiver};
use crate::transfer::source::SourceFile;
use crate::transport::BoxFuture;

/// The features the commands reach: the daemon's [`Handler`].
pub(super) struct Commands {
    pub(super) status: Arc<Status>,
    pub(super) registry: Registry,
    pub(super) peers: Arc<Peers>,
    pub(super) sends: Arc<SendService>,
    pub(super) queue: Arc<Queue>,
    pub(super) pairings: Arc<Pairings>,
    pub(super) inbox: Arc<Inbox>,
    pub(super) history: Arc<History>,
    pub(super) doctor: Arc<Doctor>,
    pub(super) receiver: Arc<Receiver>,
    pub(super) subscriptions: Subscriptions,
}

impl Handler for Commands {
    fn handle(
        &self,
        request: Request,
        caller: Caller,
        files: Vec<std::fs::File>,
        events: mpsc::UnboundedSender<SendEvent>,
        cancel: CancellationToken,
    ) -> BoxFuture<'_, Result<Response, CommandError>> {
        Box::pin(async move {
            Ok(match request {
                Request::Id => Response::Id(self.status.id()),
                Request::Status => Response::Status(Box::new(self.status.report())),
                Request::Peers => Response::Peers(self.peers.list()),
                Request::PeersAdd { addr } => ack(self.peers.add(&addr).await?),
                Request::PeersRemove { peer } => ack(self.peers.remove(&peer)?),
                Request::Trust { peer } => ack(self.peers.trust(&peer).await?),
                Request::Untrust { peer } => ack(self.peers.untrust(&peer)?),
                Request::Doctor { peer } => {
                    Response::Doctor(Box::new(self.doctor.run(peer.as_deref()).await))
                }
                Request::Transfers => Response::Transfers(kept::annotate(
                    self.registry.list(),
                    &self.receiver.kept().list(),
                )),
                Request::Accept { id } => {
                    let id = self.registry.decide(&id, Decision::Accept)?;
                    ack(format!("accepted transfer {id}"))
                }
                Request::Reject { id, reason } => {
                    let reason = reason.unwrap_or_else(|| "declined by the user".into());
                    let id = self.registry.decide(&id, Decision::Reject(reason))?;
                    ack(format!("rejected transfer {id}"))
                }
                Request::Cancel { id } => ack(self.cancel(&id).await?),
                Request::Clean => {
                    let dropped = self.receiver.drop_all_kept().await.map_err(|e| {
                        CommandError::new(ErrorKind::Io, format!("cannot remove partial data: {e}"))
                    })?;
                    let bytes: u64 = dropped.iter().map(|d| d.bytes).sum();
                    ack(match dropped.len() {
                        0 => "no partial data was kept; there is nothing to clean".to_owned(),
                        n => format!(
                            "dropped the partial data of {n} interrupted transfer{} ({})",
                            if n == 1 { "" } else { "s" },
                            HumanBytes(bytes)
                        ),
                    })
                }
                Request::Send {
                    peer,
                    entries,
                    skipped,
                    transport,
                    retry_for_s,
                    pin,
                } => {
                    let what = attach_files(entries, files)?;
                    tracing::debug!(uid = caller.uid, entries = what.len(), "send request");
                    let job = SendJob {
                        peer,
                        payload: Payload::Files { what, skipped },
                        preference: transport,
                        retry_for: retry_for_s.map(Duration::from_secs),
                        pin,
                    };
                    sent(self.sends.send(job, events, cancel).await?)
                }
                Request::SendText {
                    peer,
                    text,
                    transport,
                    pin,
                } => {
                    let job = SendJob {
                        peer,
                        payload: Payload::Text(text),
                        preference: transport,
                        retry_for: None,
                        pin,
                    };
                    sent(self.sends.send(job, events, cancel).await?)
                }
                Request::QueueSend {
                    peer,
                    entries,
                    skipped,
                    transport,
                    roots,
                    wait_for_peer,
                    walk,
                    pin,
                } => Response::Queued(self.queue.add(
                    NewQueued {
                        peer,
                        what: attach_files(entries, files)?,
                        skipped,
                        transport,
                        roots,
                        walk,
                        uid: caller.uid,
                        pin,
                    },
                    wait_for_peer,
                )?),
                Request::Queue => Response::Queue(self.queue.list()),
                Request::QueueCancel { id } => ack(self.queue.cancel(&id)?),
                Request::Pair { peer, transport } => {
                    Response::Pairing(self.pairings.start(&peer, transport).await?)
                }
                Request::Pairings => Response::Pairings(self.pairings.list()),
                Request::PairDecide { id, accept, wait } => {
                    Response::Pairing(self.pairings.decide(&id, accept, wait).await?)
                }
                Request::History { limit } => Response::History(self.history.read(limit)?),
                Request::Inbox => Response::Inbox(self.inbox.list()?),
                Request::ReceiveText { wait_s } => {
                    let wait = Duration::from_secs(wait_s.unwrap_or(0));
                    Response::Text(self.inbox.next_unread(wait, &cancel).await?)
                }
                // The control server streams subscriptions itself
                // (`Handler::subscribe`); one never reaches here.
                Request::Subscribe { .. } => {
                    return Err(CommandError::new(
                        ErrorKind::Internal,
                        "subscribe is not a one-shot command",
                    ));
                }
            })
        })
    }

    fn subscribe(&self, topics: &[Topic], caller: Caller) -> Result<EventStream, CommandError> {
        self.subscriptions.open(caller.uid, topics)
    }
}

impl Commands {
    /// `share cancel ID`: stops a pending or running transfer, or drops
    /// the partial data an interrupted incoming one kept (listed or not,
    /// e.g. after a restart).
    async fn cancel(&self, id: &str) -> Result<String, CommandError> {
        let refused = match self.registry.cancel(id) {
            Ok(id) => return Ok(format!("cancelled transfer {id}")),
            Err(e) => e,
        };
        let kept_id = match &refused {
            RegistryError::NothingTo { info, .. } => info.id.as_str(),
            RegistryError::NotFound(_) => id,
            RegistryError::Ambiguous(_) => return Err(refused.into()),
        };
        match self.receiver.drop_kept(kept_id).await {
            Ok(Some(dropped)) => Ok(format!(
                "dropped the {} of partial data that transfer {} from {} kept for a resume",
                HumanBytes(dropped.bytes),
                dropped.transfer,
                dropped.peer
            )),
            Ok(None) => Err(refused.into()),
            Err(DropError::Ambiguous(p)) => Err(RegistryError::Ambiguous(p).into()),
            Err(e @ DropError::Forget(_)) => Err(CommandError::new(ErrorKind::Io, e.to_string())),
        }
    }
}

fn ack(message: String) -> Response {
    Response::Ack(Ack { message })
}

fn sent(report: SendReport) -> Response {
    match report {
        SendReport::Files(result) => Response::Sent(result),
        SendReport::Text(result) => Response::TextSent(result),
    }
}

/// Pairs the entries of a send request with the open files passed along
/// with it, one per file entry, in order.
fn attach_files(
    entries: Vec<SendEntry>,
    files: Vec<std::fs::File>,
) -> Result<Vec<(String, Option<SourceFile>)>, CommandError> {
    let mut files = files.into_iter();
    let mut what = Vec::with_capacity(entries.len());
    for entry in entries {
        let file = if entry.dir {
            None
        } else {
            let file = files.next().ok_or_else(|| {
                CommandError::invalid(format!("no open file was passed for {}", entry.path))
            })?;
            Some(SourceFile {
                path: PathBuf::from(&entry.path),
                file: Arc::new(file),
            })
        };
        what.push((entry.path, file));
    }
    if files.next().is_some() {
        return Err(CommandError::invalid(
            "more open files were passed than the request names",
        ));
    }
    Ok(what)
}
