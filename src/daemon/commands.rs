//! Control commands, executed against the daemon's shared state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::control::server::{Caller, Handler};
use crate::control::{Ack, IdInfo, PeerInfo, Request, SendEvent, SendResult, StatusInfo};
use crate::transfer::framed::Framed;
use crate::transfer::registry::{Decision, Direction, NewTransfer, State};
use crate::transfer::{TransferError, handshake, send, source};
use crate::transport::BoxFuture;
use crate::transport::dial::{AuthFailure, Preference};

/// How often `share send` gets a progress line.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// The daemon's [`Handler`].
pub(super) struct Commands(pub(super) Arc<Shared>);

impl Handler for Commands {
    fn handle(
        &self,
        request: Request,
        _caller: Caller,
        events: mpsc::UnboundedSender<SendEvent>,
        cancel: CancellationToken,
    ) -> BoxFuture<'_, Result<serde_json::Value, String>> {
        let shared = self.0.clone();
        Box::pin(async move {
            match request {
                Request::Id => to_json(&IdInfo {
                    name: shared.config.name.clone(),
                    id: shared.identity.id(),
                }),
                Request::Status => to_json(&shared.status()),
                Request::Peers => to_json(&shared.peer_list()),
                Request::Transfers => to_json(&shared.registry.list()),
                Request::Send {
                    peer,
                    paths,
                    transport,
                } => shared.send(&peer, paths, transport, events, cancel).await,
                Request::Accept { id } => {
                    let id = shared
                        .registry
                        .decide(&id, Decision::Accept)
                        .map_err(|e| e.to_string())?;
                    ack(format!("accepted transfer {id}"))
                }
                Request::Reject { id, reason } => {
                    let reason = reason.unwrap_or_else(|| "declined by the user".into());
                    let id = shared
                        .registry
                        .decide(&id, Decision::Reject(reason))
                        .map_err(|e| e.to_string())?;
                    ack(format!("rejected transfer {id}"))
                }
                Request::Cancel { id } => {
                    let id = shared.registry.cancel(&id).map_err(|e| e.to_string())?;
                    ack(format!("cancelled transfer {id}"))
                }
                Request::Trust { peer } => shared.trust_peer(&peer).await,
                Request::Untrust { peer } => {
                    let (id, name) = shared.find_device(&peer)?;
                    match shared.trust.untrust(&id) {
                        Ok(true) => ack(format!("{name} ({id}) is no longer trusted")),
                        Ok(false) => Err(format!("{name} ({id}) was not trusted")),
                        Err(e) => Err(e.to_string()),
                    }
                }
            }
        })
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| format!("internal error: {e}"))
}

fn ack(message: String) -> Result<serde_json::Value, String> {
    to_json(&Ack { message })
}

impl Shared {
    fn status(&self) -> StatusInfo {
        let active = self
            .registry
            .list()
            .iter()
            .filter(|t| matches!(t.state, State::Pending | State::Active))
            .count();
        StatusInfo {
            name: self.config.name.clone(),
            id: self.identity.id(),
            port: self.port,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: crate::protocol::VERSION,
            uptime_s: self.started.elapsed().as_secs(),
            transports: self.transports.clone(),
            mdns: self.config.mdns,
            accept: format!("{:?}", self.config.accept).to_lowercase(),
            peers: self.peers.list().len(),
            active_transfers: active,
            quic_broken_paths: self.dialer.broken_paths(),
            download_dir: self.config.download_dir.clone(),
            state_dir: self.config.state_dir.clone(),
            warnings: self.warnings.clone(),
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
                source: format!("{:?}", p.source).to_lowercase(),
                last_seen_s: now
                    .duration_since(p.last_seen)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                name: p.name,
                id: p.id,
            })
            .collect()
    }

    async fn trust_peer(&self, text: &str) -> Result<serde_json::Value, String> {
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
                    .map_err(|e| e.to_string())?;
                let id = framed.link().peer;
                framed.into_link().abort("identity check only");
                (id, hello.name)
            }
        };
        if let Some(other) = self.trust.name_conflict(&name, &id) {
            tracing::warn!(%name, new = %id, trusted = %other.id, "trusting a second device under an existing name");
        }
        match self.trust.trust(id, &name) {
            Ok(true) => ack(format!("trusted {name} ({id})")),
            Ok(false) => ack(format!("{name} ({id}) was already trusted")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn authenticate(
        &self,
        link: crate::transport::Link,
    ) -> Result<(Framed, handshake::PeerHello), AuthFailure> {
        let mut framed = Framed::new(link);
        let hello = handshake::client(&mut framed, &self.config.name).await?;
        Ok((framed, hello))
    }

    async fn send(
        &self,
        peer: &str,
        paths: Vec<PathBuf>,
        preference: Preference,
        events: mpsc::UnboundedSender<SendEvent>,
        cancel: CancellationToken,
    ) -> Result<serde_json::Value, String> {
        let started = Instant::now();
        if paths.is_empty() {
            return Err("nothing to send: give at least one file or directory".into());
        }
        let resolved = self.resolve(peer).await?;
        let source = tokio::task::spawn_blocking(move || source::scan(&paths))
            .await
            .map_err(|e| format!("internal error: {e}"))?
            .map_err(|e| e.to_string())?;
        let skipped: Vec<String> = source
            .skipped
            .iter()
            .map(|s| format!("{} ({})", s.path.display(), s.kind))
            .collect();
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

        let dial = self
            .dialer
            .dial(&resolved.target, preference, |link| self.authenticate(link));
        let ((mut framed, hello), transport) = tokio::select! {
            r = dial => r.map_err(|e| format!("cannot connect to {}: {e}", resolved.label))?,
            () = cancel.cancelled() => return Err("cancelled".into()),
        };
        let peer_name = hello.name;
        let peer_id = framed.link().peer;
        let _ = events.send(SendEvent::Connected {
            peer: peer_name.clone(),
            transport,
        });

        let handle = self.registry.start(NewTransfer {
            direction: Direction::Out,
            peer: peer_name.clone(),
            peer_id,
            files,
            bytes,
            transport,
            names: source
                .manifest
                .entries
                .iter()
                .filter(|e| !e.path.contains('/'))
                .map(|e| e.path.clone())
                .collect(),
        });
        let id = handle.id().to_owned();

        // Forward progress, and turn a vanished CLI into a cancel.
        let (send_events_tx, mut send_events_rx) = mpsc::unbounded_channel();
        let transfer_cancel = handle.cancelled();
        let ticker = async {
            let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
            let mut client_gone = false;
            loop {
                tokio::select! {
                    () = cancel.cancelled(), if !client_gone => {
                        client_gone = true;
                        transfer_cancel.cancel();
                    }
                    e = send_events_rx.recv() => match e {
                        Some(send::SendEvent::Waiting) => {
                            handle.waiting();
                            let _ = events.send(SendEvent::Waiting { peer: peer_name.clone(), id: id.clone() });
                        }
                        Some(send::SendEvent::Accepted) => handle.active(),
                        None => std::future::pending::<()>().await,
                    },
                    _ = tick.tick() => {
                        let _ = events.send(SendEvent::Progress { bytes_done: handle.bytes_done(), bytes });
                    }
                }
            }
        };
        let transfer = send::send(
            &mut framed,
            &peer_name,
            source,
            &handle,
            self.config.offer_timeout + Duration::from_secs(30),
            send_events_tx,
        );
        let result = tokio::select! {
            r = transfer => r,
            _ = ticker => unreachable_loop(),
        };
        let mut link = framed.into_link();
        let _ = link.finish().await;
        drop(link);

        match result {
            Ok(()) => {
                handle.finish(State::Done, None);
                let _ = events.send(SendEvent::Progress {
                    bytes_done: bytes,
                    bytes,
                });
                to_json(&SendResult {
                    status: "done".into(),
                    peer: peer_name,
                    peer_id,
                    id,
                    transport,
                    files,
                    bytes,
                    seconds: started.elapsed().as_secs_f64(),
                    skipped,
                })
            }
            Err(e) => {
                let state = match &e {
                    TransferError::Rejected { .. } => State::Rejected,
                    TransferError::Cancelled => State::Cancelled,
                    _ => State::Failed,
                };
                handle.finish(state, Some(e.to_string()));
                Err(e.to_string())
            }
        }
    }
}

/// The progress loop never ends on its own.
fn unreachable_loop() -> Result<(), TransferError> {
    Err(TransferError::Local("progress loop ended".into()))
}
