//! Control commands, executed against the daemon's shared state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::control::records::PairingState;
use crate::control::server::{Caller, Handler};
use crate::control::{
    Ack, CommandError, IdInfo, PeerInfo, Request, Response, ResultStatus, SendEntry, SendEvent,
    SendResult, StatusInfo,
};
use crate::identity::DeviceId;
use crate::protocol::ErrorCode;
use crate::transfer::framed::Framed;
use crate::transfer::registry::{Decision, Direction, Handle, NewTransfer, State};
use crate::transfer::source::SourceFile;
use crate::transfer::{TransferError, handshake, send, source};
use crate::transport::BoxFuture;
use crate::transport::TransportKind;
use crate::transport::dial::{AuthFailure, DialError, Preference};

/// How often `share send` gets a progress line.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// The daemon's [`Handler`].
pub(super) struct Commands(pub(super) Arc<Shared>);

impl Handler for Commands {
    fn handle(
        &self,
        request: Request,
        caller: Caller,
        files: Vec<std::fs::File>,
        events: mpsc::UnboundedSender<SendEvent>,
        cancel: CancellationToken,
    ) -> BoxFuture<'_, Result<Response, CommandError>> {
        let shared = self.0.clone();
        Box::pin(async move {
            Ok(match request {
                Request::Id => Response::Id(IdInfo {
                    name: shared.config.name.clone(),
                    id: shared.identity.id(),
                }),
                Request::Status => Response::Status(Box::new(shared.status())),
                Request::Peers => Response::Peers(shared.peer_list()),
                Request::Transfers => Response::Transfers(shared.registry.list()),
                Request::Send {
                    peer,
                    entries,
                    skipped,
                    transport,
                    retry_for_s,
                } => {
                    let retry_for = retry_for_s.map(Duration::from_secs);
                    let what = attach_files(entries, files)?;
                    tracing::debug!(uid = caller.uid, entries = what.len(), "send request");
                    Response::Sent(
                        shared
                            .send(&peer, (what, skipped), transport, retry_for, events, cancel)
                            .await?,
                    )
                }
                Request::Accept { id } => {
                    let id = shared.registry.decide(&id, Decision::Accept)?;
                    ack(format!("accepted transfer {id}"))
                }
                Request::Reject { id, reason } => {
                    let reason = reason.unwrap_or_else(|| "declined by the user".into());
                    let id = shared.registry.decide(&id, Decision::Reject(reason))?;
                    ack(format!("rejected transfer {id}"))
                }
                Request::Cancel { id } => {
                    let id = shared.registry.cancel(&id)?;
                    ack(format!("cancelled transfer {id}"))
                }
                Request::Trust { peer } => Response::Ack(shared.trust_peer(&peer).await?),
                request @ (Request::Pair { .. }
                | Request::Pairings
                | Request::PairDecide { .. }
                | Request::History { .. }
                | Request::QueueSend { .. }
                | Request::Queue
                | Request::QueueCancel { .. }
                | Request::SendText { .. }
                | Request::Inbox
                | Request::ReceiveText { .. }) => {
                    shared
                        .everyday(request, caller, files, events, cancel)
                        .await?
                }
                Request::Untrust { peer } => {
                    let (id, name) = shared.find_device(&peer)?;
                    if !shared.trust.untrust(&id)? {
                        return Err(CommandError::conflict(format!(
                            "{name} ({id}) was not trusted"
                        )));
                    }
                    ack(format!("{name} ({id}) is no longer trusted"))
                }
                Request::Doctor { peer } => {
                    Response::Doctor(Box::new(shared.doctor(peer.as_deref()).await))
                }
                Request::PeersAdd { addr } => Response::Ack(shared.add_peer(&addr).await?),
                Request::PeersRemove { peer } => Response::Ack(shared.remove_peer(&peer)?),
            })
        })
    }
}

/// Pairs the entries of a send request with the open files passed along
/// with it, one per file entry, in order.
pub(super) fn attach_files(
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

fn ack(message: String) -> Response {
    Response::Ack(Ack { message })
}

impl Shared {
    fn status(&self) -> StatusInfo {
        let transfers = self.registry.list();
        let active = transfers
            .iter()
            .filter(|t| matches!(t.state, State::Pending | State::Active))
            .count();
        let offers_to_answer = transfers
            .iter()
            .filter(|t| t.direction == Direction::In && t.state == State::Pending)
            .count();
        let pairings_to_confirm = self
            .pairings
            .list()
            .iter()
            .filter(|p| p.state == PairingState::Waiting && p.you_confirmed.is_none())
            .count();
        let unread_texts = self.inbox.unread().unwrap_or(0);
        StatusInfo {
            name: self.config.name.clone(),
            id: self.identity.id(),
            port: self.port,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: crate::protocol::VERSION,
            uptime_s: self.started.elapsed().as_secs(),
            transports: self.transports.clone(),
            mdns: self.config.mdns,
            accept: self.config.accept,
            peers: self.peers.list().len(),
            active_transfers: active,
            offers_to_answer,
            pairings_to_confirm,
            unread_texts,
            quic_broken_paths: self.dialer.broken_paths(),
            download_dir: self.config.download_dir.clone(),
            state_dir: self.config.state_dir.clone(),
            warnings: self.warnings(),
            interfaces: self.interface_report(),
        }
    }

    fn peer_list(&self) -> Vec<PeerInfo> {
        let now = SystemTime::now();
        self.peers
            .list()
            .into_iter()
            .map(|p| PeerInfo {
                trusted: self.trust.is_trusted(&p.id),
                addresses: p.addrs.iter().map(ToString::to_string).collect(),
                tcp_port: p.tcp_port,
                source: p.source,
                last_seen_s: now
                    .duration_since(p.last_seen)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                last_seen: p
                    .last_seen
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                name: p.name,
                id: p.id,
            })
            .collect()
    }

    async fn trust_peer(&self, text: &str) -> Result<Ack, CommandError> {
        let (id, name) = match self.find_device(text) {
            Ok(found) => found,
            Err(not_visible) => {
                // `share trust HOST:PORT`: learn the identity by connecting.
                let Ok(resolved) = self.resolve(text).await else {
                    return Err(not_visible);
                };
                let ((framed, hello), _) = self
                    .dialer
                    .dial(&resolved.target, Preference::Auto, |link| {
                        self.authenticate(link)
                    })
                    .await
                    .map_err(|e| CommandError::dial(&resolved.label, &e))?;
                let id = framed.link().peer;
                framed.into_link().abort("identity check only");
                (id, hello.name)
            }
        };
        if let Some(other) = self.trust.name_conflict(&name, &id) {
            tracing::warn!(%name, new = %id, trusted = %other.id, "trusting a second device under an existing name");
        }
        let message = if self.trust.trust(id, &name)? {
            format!("trusted {name} ({id})")
        } else {
            format!("{name} ({id}) was already trusted")
        };
        Ok(Ack { message })
    }

    /// The dialer's side of `Hello` on a new link: the step that makes a
    /// link authenticated, for every kind of outgoing session.
    pub(super) async fn hello(
        &self,
        link: crate::transport::Link,
    ) -> Result<(Framed, handshake::PeerHello), AuthFailure> {
        let mut framed = Framed::new(link);
        let hello = handshake::client(&mut framed, &self.config.name).await?;
        Ok((framed, hello))
    }

    /// [`Self::hello`] for a transfer: also refuses a device that uses a
    /// trusted device's name with another identity.
    pub(super) async fn authenticate(
        &self,
        link: crate::transport::Link,
    ) -> Result<(Framed, handshake::PeerHello), AuthFailure> {
        let (framed, hello) = self.hello(link).await?;
        // An address typed by the user carries no expected identity: a
        // device there using a trusted device's name with another key is
        // an impostor, not that device.
        let peer = framed.link().peer;
        if let Some(trusted) = self.trust.name_conflict(&hello.name, &peer)
            && !self.trust.is_trusted(&peer)
        {
            tracing::warn!(name = %hello.name, presented = %peer, trusted = %trusted.id,
                "REFUSED: a device uses the name of a trusted device with a different identity");
            framed.into_link().abort("identity mismatch");
            return Err(AuthFailure::Refused(format!(
                "identity mismatch: \"{}\" is trusted with ID {} but this device has ID {}",
                hello.name,
                trusted.id.short(),
                peer.short()
            )));
        }
        Ok((framed, hello))
    }

    pub(super) async fn send(
        &self,
        peer: &str,
        (what, skipped): (Vec<(String, Option<SourceFile>)>, Vec<String>),
        preference: Preference,
        retry_for: Option<Duration>,
        events: mpsc::UnboundedSender<SendEvent>,
        cancel: CancellationToken,
    ) -> Result<SendResult, CommandError> {
        let started = Instant::now();
        if what.is_empty() {
            return Err(CommandError::invalid(
                "nothing to send: give at least one file or directory",
            ));
        }
        let resolved = self.resolve(peer).await?;
        // Inspect the descriptors the CLI passed: the daemon never opens a
        // path a user names (see `transfer::source`).
        let source = tokio::task::spawn_blocking(move || source::prepare(what))
            .await
            .map_err(CommandError::internal)??;
        if !skipped.is_empty() {
            tracing::warn!(skipped = ?skipped, "special files are not sent");
        }
        let files = source.manifest.file_count();
        let bytes = source.manifest.total_bytes();
        let _ = events.send(SendEvent::Prepared {
            files,
            bytes,
            skipped: skipped.clone(),
        });

        let names: Vec<String> = source
            .manifest
            .entries
            .iter()
            .filter(|e| !e.path.contains('/'))
            .map(|e| e.path.clone())
            .collect();
        let retry_window = retry_for.unwrap_or(self.config.retry_window);
        let deadline = started + retry_window;
        let mut backoff = RETRY_INITIAL;
        let mut handle: Option<Handle> = None;
        let mut integrity_failures = 0;
        let mut attempts = 0u32;
        let mut target = resolved;
        loop {
            attempts += 1;
            let result = self
                .attempt(
                    &target,
                    preference,
                    &source,
                    &names,
                    &mut handle,
                    &events,
                    &cancel,
                )
                .await;
            let error = match result {
                Ok((peer_name, peer_id, transport)) => {
                    let Some(handle) = handle else {
                        return Err(CommandError::internal("no transfer handle"));
                    };
                    handle.finish(State::Done, None);
                    let _ = events.send(SendEvent::Progress {
                        bytes_done: bytes,
                        bytes,
                    });
                    return Ok(SendResult {
                        status: ResultStatus::Done,
                        peer: peer_name,
                        peer_id,
                        id: handle.id().to_owned(),
                        transport,
                        files,
                        bytes,
                        bytes_sent: handle.bytes_sent(),
                        attempts,
                        seconds: started.elapsed().as_secs_f64(),
                        skipped,
                    });
                }
                Err(e) => e,
            };
            if matches!(
                error,
                AttemptError::Transfer(TransferError::Peer {
                    code: ErrorCode::Integrity,
                    ..
                })
            ) {
                integrity_failures += 1;
            }
            // Only a transfer that got going is retried: a typo in a name or
            // a peer that never answered should fail at once.
            let retry = handle.is_some()
                && error.retryable()
                && integrity_failures <= MAX_INTEGRITY_RETRIES
                && Instant::now() + backoff < deadline
                && !cancel.is_cancelled();
            if !retry {
                let message = error.to_string();
                if let Some(handle) = &handle {
                    handle.finish(error.final_state(), Some(message.clone()));
                }
                return Err(error.into());
            }
            tracing::info!(
                attempt = attempts,
                retry_in_s = backoff.as_secs(),
                "send interrupted: {error}; retrying"
            );
            let _ = events.send(SendEvent::Retrying {
                attempt: attempts,
                in_s: backoff.as_secs(),
                reason: error.to_string(),
            });
            if let Some(handle) = &handle {
                handle.waiting();
            }
            let transfer_cancel = handle.as_ref().map(Handle::cancelled).unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = cancel.cancelled() => {}
                () = transfer_cancel.cancelled() => {}
            }
            backoff = (backoff * 2).min(RETRY_MAX);
            // The peer may have come back elsewhere (new address, restarted daemon).
            if let Ok(again) = self.resolve(peer).await {
                target = again;
            }
        }
    }

    /// One connection: dial, hello, offer, data, done.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        target: &super::resolve::Resolved,
        preference: Preference,
        source: &source::Source,
        names: &[String],
        handle: &mut Option<Handle>,
        events: &mpsc::UnboundedSender<SendEvent>,
        cancel: &CancellationToken,
    ) -> Result<(String, DeviceId, TransportKind), AttemptError> {
        let transfer_cancel = handle.as_ref().map(Handle::cancelled).unwrap_or_default();
        let dial = self
            .dialer
            .dial(&target.target, preference, |link| self.authenticate(link));
        let ((mut framed, hello), transport) = tokio::select! {
            r = dial => r.map_err(|e| AttemptError::Dial(target.label.clone(), e))?,
            () = cancel.cancelled() => return Err(AttemptError::Transfer(TransferError::Cancelled)),
            () = transfer_cancel.cancelled() => return Err(AttemptError::Transfer(TransferError::Cancelled)),
        };
        let peer_name = hello.name;
        let peer_id = framed.link().peer;
        let _ = events.send(SendEvent::Connected {
            peer: peer_name.clone(),
            transport,
        });
        let handle = handle.get_or_insert_with(|| {
            self.registry.start(NewTransfer {
                direction: Direction::Out,
                peer: peer_name.clone(),
                peer_id,
                files: source.manifest.file_count(),
                bytes: source.manifest.total_bytes(),
                transport,
                names: names.to_vec(),
            })
        });
        handle.set_transport(transport);
        let id = handle.id().to_owned();
        let bytes = source.manifest.total_bytes();

        // Run the transfer; meanwhile forward its events and progress, and
        // turn a vanished CLI into a cancel.
        let (send_events_tx, mut send_events_rx) = mpsc::unbounded_channel();
        let transfer_cancel = handle.cancelled();
        let result = {
            let transfer = send::send(
                &mut framed,
                &peer_name,
                source,
                handle,
                self.config.offer_timeout + Duration::from_secs(30),
                send_events_tx,
            );
            tokio::pin!(transfer);
            let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
            let mut client_gone = false;
            loop {
                tokio::select! {
                    r = &mut transfer => break r,
                    () = cancel.cancelled(), if !client_gone => {
                        client_gone = true;
                        transfer_cancel.cancel();
                    }
                    // `None` only once the transfer has returned.
                    Some(e) = send_events_rx.recv() => match e {
                        send::SendEvent::Waiting => {
                            handle.waiting();
                            let _ = events.send(SendEvent::Waiting { peer: peer_name.clone(), id: id.clone() });
                        }
                        send::SendEvent::Accepted => handle.active(),
                    },
                    _ = tick.tick() => {
                        let _ = events.send(SendEvent::Progress { bytes_done: handle.bytes_done(), bytes });
                    }
                }
            }
        };
        let mut link = framed.into_link();
        let _ = link.finish().await;
        if result.is_err() {
            // Let our Error frame reach the receiver before closing.
            link.wait_peer_closed(Duration::from_secs(2)).await;
        }
        result
            .map(|()| (peer_name, peer_id, transport))
            .map_err(AttemptError::Transfer)
    }
}

/// First wait before retrying an interrupted send.
const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait between retries.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Blocks failing verification are re-requested at most this many times.
const MAX_INTEGRITY_RETRIES: u32 = 3;

/// Why one send attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    /// Connecting to the peer (named by the label) failed.
    #[error("cannot connect to {0}: {1}")]
    Dial(String, DialError),
    /// The transfer failed once connected.
    #[error(transparent)]
    Transfer(TransferError),
}

impl From<AttemptError> for CommandError {
    fn from(e: AttemptError) -> Self {
        match e {
            AttemptError::Dial(label, e) => Self::dial(&label, &e),
            AttemptError::Transfer(e) => e.into(),
        }
    }
}

impl AttemptError {
    /// Whether trying again could help: the network or the peer's daemon
    /// failed, not the content, the user or the peer's decision.
    fn retryable(&self) -> bool {
        match self {
            Self::Dial(_, DialError::Unreachable(_)) => true,
            Self::Dial(..) => false,
            Self::Transfer(e) => match e {
                TransferError::Link(_) => true,
                TransferError::Peer { code, .. } => {
                    matches!(code, ErrorCode::Busy | ErrorCode::Io | ErrorCode::Integrity)
                }
                _ => false,
            },
        }
    }

    fn final_state(&self) -> State {
        match self {
            Self::Transfer(TransferError::Rejected { .. }) => State::Rejected,
            Self::Transfer(TransferError::Cancelled) => State::Cancelled,
            Self::Transfer(TransferError::Peer {
                code: ErrorCode::Cancelled,
                ..
            }) => State::Cancelled,
            _ => State::Failed,
        }
    }
}
