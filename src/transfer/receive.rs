//! The receiving side: validate the offer, get consent, write, verify,
//! commit, answer `Done`.
//!
//! Every byte from the peer is treated as hostile. The manifest is checked
//! structurally ([`Manifest::validate`]) and its paths are sanitised by
//! [`crate::store`] before anything is asked of the user or created on
//! disk. Data frames must arrive in manifest order with exact offsets;
//! anything else is a protocol violation that ends the transfer with an
//! `Error` frame. Disk writes happen on a blocking thread fed through a
//! bounded channel, so a slow disk applies back-pressure to the peer
//! instead of growing memory, and the async runtime never blocks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::framed::Framed;
use super::handshake::kind;
use super::registry::{Decision, Direction, Handle, NewTransfer, Registry, State};
use super::{MESSAGE_TIMEOUT, TransferError};
use crate::identity::trust::TrustStore;
use crate::protocol::{ErrorCode, Manifest, ManifestLimits, Message};
use crate::store::{DownloadDir, StoreError, path::plan};

/// Chunks buffered between the network and the disk writer.
const PIPELINE_DEPTH: usize = 8;

/// Which offers are accepted without asking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AcceptPolicy {
    /// Trusted devices automatically; others wait for `share accept`.
    #[default]
    Ask,
    /// Trusted devices automatically; others are rejected at once.
    Trusted,
    /// Everything, from anyone (kiosks and tests only).
    All,
}

/// What the receiver needs from the daemon.
pub struct ReceiveContext {
    /// Where files land.
    pub download: Arc<DownloadDir>,
    /// Trusted devices.
    pub trust: TrustStore,
    /// Consent policy.
    pub policy: AcceptPolicy,
    /// Transfer table.
    pub registry: Registry,
    /// How long a pending offer waits for a decision.
    pub offer_timeout: Duration,
    /// Limits on offers.
    pub limits: ManifestLimits,
}

/// Handles one incoming transfer after the `Hello` exchange.
pub async fn receive(framed: &mut Framed, peer_name: &str, ctx: &ReceiveContext) {
    let peer_id = framed.link().peer;
    let manifest = match framed.recv().await {
        Ok(Message::Offer(manifest)) => manifest,
        Ok(other) => {
            let e = TransferError::Protocol(format!("expected Offer, got {}", kind(&other)));
            tracing::warn!(peer = %peer_id, "{e}");
            framed.send_error(&e).await;
            return;
        }
        Err(e) => {
            let e = TransferError::from(e);
            tracing::info!(peer = %peer_id, "no offer: {e}");
            if matches!(e, TransferError::Protocol(_)) {
                framed.send_error(&e).await;
            }
            return;
        }
    };

    if let Err(reason) = check_offer(&manifest, ctx) {
        tracing::warn!(peer = %peer_id, name = peer_name, "refused offer: {reason}");
        let _ = framed.send(&Message::Reject { reason }).await;
        return;
    }

    let names = top_level_names(&manifest);
    let handle = ctx.registry.start(NewTransfer {
        direction: Direction::In,
        peer: peer_name.to_owned(),
        peer_id,
        files: manifest.file_count(),
        bytes: manifest.total_bytes(),
        transport: framed.link().kind,
        names,
    });
    if let Err(reason) = consent(framed, &manifest, peer_name, ctx, &handle).await {
        tracing::info!(
            id = handle.id(),
            "offer from {peer_name} rejected: {reason}"
        );
        handle.finish(State::Rejected, Some(reason.clone()));
        let _ = framed.send(&Message::Reject { reason }).await;
        return;
    }

    handle.active();
    let cancel = handle.cancelled();
    let result = tokio::select! {
        r = write_all(framed, manifest, peer_name, ctx, &handle) => r,
        () = cancel.cancelled() => Err(TransferError::Cancelled),
    };
    match result {
        Ok(saved) => {
            tracing::info!(id = handle.id(), files = ?saved, "received from {peer_name}");
            handle.finish(State::Done, None);
        }
        Err(e) => {
            tracing::warn!(id = handle.id(), "receiving from {peer_name} failed: {e}");
            let state = if matches!(e, TransferError::Cancelled) {
                State::Cancelled
            } else {
                State::Failed
            };
            if !matches!(e, TransferError::Peer { .. }) {
                framed.send_error(&e).await;
            }
            handle.finish(state, Some(e.to_string()));
        }
    }
}

/// Structural and path checks, plus free space. `Err` is the reason sent
/// back to the peer.
fn check_offer(manifest: &Manifest, ctx: &ReceiveContext) -> Result<(), String> {
    manifest.validate(&ctx.limits).map_err(|e| e.to_string())?;
    plan(manifest, ctx.limits.max_depth).map_err(|e| e.to_string())?;
    let needed = manifest.total_bytes();
    match ctx.download.free_space() {
        Ok(free) if free < needed => Err(format!(
            "not enough space on the receiver: {} needed, {} free",
            human_bytes(needed),
            human_bytes(free)
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("receiver cannot check its download directory: {e}")),
    }
}

/// Decides whether to go ahead: policy, trust, or the user's answer.
async fn consent(
    framed: &mut Framed,
    manifest: &Manifest,
    peer_name: &str,
    ctx: &ReceiveContext,
    handle: &Handle,
) -> Result<(), String> {
    let trusted = ctx.trust.is_trusted(&framed.link().peer);
    match ctx.policy {
        AcceptPolicy::All => return Ok(()),
        _ if trusted => return Ok(()),
        AcceptPolicy::Trusted => {
            return Err("this device only accepts files from trusted devices".into());
        }
        AcceptPolicy::Ask => {}
    }
    tracing::info!(
        id = handle.id(),
        files = manifest.file_count(),
        bytes = manifest.total_bytes(),
        "offer from {peer_name} waiting: share accept {} / share reject {}",
        handle.id(),
        handle.id()
    );
    let decision = handle.pending();
    let timeout = ctx.offer_timeout;
    // While waiting, the sender may give up (closes or sends Error).
    let (mut from_peer, _) = framed.halves();
    tokio::select! {
        d = tokio::time::timeout(timeout, decision) => match d {
            Ok(Ok(Decision::Accept)) => Ok(()),
            Ok(Ok(Decision::Reject(reason))) => Err(reason),
            Ok(Err(_)) => Err("the receiving daemon is shutting down".into()),
            Err(_) => Err(format!("offer expired: not accepted within {} s", timeout.as_secs())),
        },
        m = from_peer.recv() => Err(match m {
            Ok(Message::Error { message, .. }) => format!("sender gave up: {message}"),
            Ok(other) => format!("sender sent {} before the offer was accepted", kind(&other)),
            Err(e) => format!("sender went away: {e}"),
        }),
    }
}

/// Accepts, then streams data into a staging area and commits it.
async fn write_all(
    framed: &mut Framed,
    manifest: Manifest,
    peer_name: &str,
    ctx: &ReceiveContext,
    handle: &Handle,
) -> Result<Vec<String>, TransferError> {
    let total = manifest.total_bytes();
    let download = ctx.download.clone();
    let max_depth = ctx.limits.max_depth;
    let staging = tokio::task::spawn_blocking(move || {
        let plan = plan(&manifest, max_depth).map_err(StoreError::from)?;
        download.stage(&plan, &manifest)
    })
    .await
    .map_err(|e| TransferError::Local(format!("staging task failed: {e}")))?
    .map_err(store_error)?;

    framed.send(&Message::Accept).await?;

    let (tx, mut rx) = mpsc::channel::<(u32, u64, Bytes)>(PIPELINE_DEPTH);
    let progress = handle.counter();
    let writer = tokio::task::spawn_blocking(move || {
        let mut staging = staging;
        while let Some((file, offset, data)) = rx.blocking_recv() {
            staging.write(file, offset, &data)?;
            progress.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        staging.commit()
    });

    let mut received = 0u64;
    let mut failure = None;
    while received < total {
        match framed.recv_within(MESSAGE_TIMEOUT).await {
            Ok(Message::Data { file, offset, data }) => {
                let len = data.len() as u64;
                if received + len > total {
                    failure = Some(TransferError::Protocol(format!(
                        "more data than the {total} bytes offered"
                    )));
                    break;
                }
                received += len;
                if tx.send((file, offset, data)).await.is_err() {
                    // The writer stopped; its result says why.
                    break;
                }
            }
            Ok(Message::Error { code, message }) => {
                failure = Some(TransferError::Peer {
                    peer: peer_name.to_owned(),
                    code,
                    message,
                });
                break;
            }
            Ok(other) => {
                failure = Some(TransferError::Protocol(format!(
                    "unexpected {} during data",
                    kind(&other)
                )));
                break;
            }
            Err(e) => {
                failure = Some(e.into());
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| TransferError::Local(format!("writer task failed: {e}")))?;
    if let Some(e) = failure {
        // The staging area is dropped (and removed) by the writer task.
        return Err(e);
    }
    let saved = written.map_err(store_error)?;
    framed.send(&Message::Done).await?;
    Ok(saved)
}

/// Maps storage failures onto what the peer is told.
fn store_error(e: StoreError) -> TransferError {
    let code = match &e {
        StoreError::NoSpace { .. } => ErrorCode::NoSpace,
        StoreError::Integrity { .. } => ErrorCode::Integrity,
        StoreError::Protocol(_) | StoreError::Path(_) => ErrorCode::Protocol,
        _ => ErrorCode::Io,
    };
    match code {
        ErrorCode::Protocol => TransferError::Protocol(e.to_string()),
        _ => TransferError::Storage {
            code,
            message: e.to_string(),
        },
    }
}

fn top_level_names(manifest: &Manifest) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for entry in &manifest.entries {
        let top = entry.path.split('/').next().unwrap_or_default();
        if !names.iter().any(|n| n == top) {
            names.push(top.to_owned());
        }
    }
    names
}

/// `1.5 MiB`-style sizes for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
