//! The lanshare protocol's receiving side: read the offer, hand it to
//! the [`Intake`] (checks, `share transfers`, consent), then write and
//! verify block by block, commit, answer `Done` — and keep partial data
//! for a resume when the link, not the peer's content, was the problem.
//!
//! Every byte from the peer is treated as hostile. The intake checks the
//! manifest and its paths before anything is asked of the user or created
//! on disk. `Data` frames must carry exactly the requested blocks, in
//! order, each block followed by its `BlockValue`; anything else is a
//! protocol violation that ends the transfer with an `Error` frame and
//! discards what was received. Disk writes happen on a blocking thread fed
//! through a bounded channel, so a slow disk applies back-pressure to the
//! peer instead of growing memory.
//!
//! Interrupted transfers (connection lost, sender gone, a block that failed
//! verification, either daemon stopping: `Error(Paused)`, see
//! [`TransferError::Stopping`]) keep their staging directory and a resume
//! record ([`super::resume`]); when the same sender offers the same
//! unchanged files again, the offer is accepted without asking again and
//! only the missing blocks are requested. Kept data is listed, dropped on
//! request, expires and is capped as [`super::kept`] says:
//! [`Receiver::expire`] applies those rules, after every interrupted
//! transfer and periodically.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::framed::{Framed, Incoming, RecvError};
use super::handshake::kind;
use super::kept::{KeepPolicy, Kept, KeptPartials};
use super::memory::OverBudget;
use super::resume::{self, Record, ResumeStore};
use super::{MESSAGE_TIMEOUT, TransferError};
use crate::ids::{self, PrefixError};
use crate::intake::{Declined, Intake, Offer, Sender, SenderGone, top_level_names};
use crate::protocol::order::{BlockOrder, OrderError};
use crate::protocol::{EntryMeta, ErrorCode, MAX_DATA_CHUNK, Manifest, Message, heap_block};
use crate::registry::{Handle, State};
use crate::safe_text::PeerName;
use crate::store::{Plan, Staging, StoreError};

/// Chunks buffered between the network and the disk writer.
const PIPELINE_DEPTH: usize = 8;

/// How often the verified-block map is saved while data flows: after this
/// long, or after [`CHECKPOINT_BYTES`], whichever comes first. Blocks
/// verified since the last checkpoint are fetched again after a crash, so on
/// a fast link the byte bound is what keeps that loss small (1 s at loopback
/// or gigabit speed is a large part of a file).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// See [`CHECKPOINT_INTERVAL`].
const CHECKPOINT_BYTES: u64 = 16 << 20;

/// The lanshare protocol's receiver: the intake every offer goes through,
/// and the resume records only this protocol keeps.
pub struct Receiver {
    intake: Arc<Intake>,
    resume: ResumeStore,
    /// How long the sender may go quiet while it owes a message
    /// ([`MESSAGE_TIMEOUT`]; shorter in tests).
    message_timeout: Duration,
    keep: KeepPolicy,
}

/// Why the staged data of an interrupted transfer could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    /// The cleanup task did not finish.
    #[error("cleanup task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why [`Receiver::drop_kept`] dropped nothing.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    /// The prefix names several kept transfers.
    #[error("ID {0} is ambiguous; type more characters")]
    Ambiguous(String),
    /// The data could not be removed.
    #[error("cannot remove the partial data: {0}")]
    Forget(#[from] ForgetError),
}

/// Partial data that was dropped on request.
#[derive(Debug, Clone)]
pub struct Dropped {
    /// The ID of the transfer that left it.
    pub transfer: String,
    /// Its sender.
    pub peer: PeerName,
    /// The bytes it held.
    pub bytes: u64,
}

impl Receiver {
    /// A receiver feeding `intake`, keeping resume records in `resume`
    /// and partial data as [`KeepPolicy::default`] allows.
    pub fn new(intake: Arc<Intake>, resume: ResumeStore) -> Self {
        Self {
            intake,
            resume,
            message_timeout: MESSAGE_TIMEOUT,
            keep: KeepPolicy::default(),
        }
    }

    /// Gives up on a quiet sender after `limit` instead.
    #[cfg(test)]
    pub(crate) fn set_message_timeout(&mut self, limit: Duration) {
        self.message_timeout = limit;
    }

    /// Keeps partial data as `keep` allows.
    #[must_use]
    pub fn with_policy(mut self, keep: KeepPolicy) -> Self {
        self.keep = keep;
        self
    }

    /// The partial data it keeps, for listing.
    pub fn kept(&self) -> KeptPartials {
        KeptPartials::new(self.resume.clone(), self.keep)
    }

    /// The intake it feeds.
    pub fn intake(&self) -> &Arc<Intake> {
        &self.intake
    }

    /// Forgets an interrupted transfer: its staging data first, then its
    /// resume record and value log. If the data cannot be removed, the
    /// record stays, so the daemon's next sweep of old records tries
    /// again; in the other order a failure would leave hidden staging data
    /// that no sweep ever finds. The caller holds the key's resume claim.
    ///
    /// Returns whether staging data existed.
    ///
    /// # Errors
    /// Why the staging data could not be removed.
    pub async fn forget(&self, key: &str) -> Result<bool, ForgetError> {
        let download = self.intake.download().clone();
        let staged = key.to_owned();
        let removed = tokio::task::spawn_blocking(move || download.discard(&staged)).await??;
        self.resume.remove(key);
        Ok(removed)
    }

    /// One sweep over the interrupted transfers not being received now:
    /// removes the partial data and records of those kept too long or over
    /// the cap ([`KeepPolicy::to_drop`]), and value logs without a readable
    /// record.
    /// Runs after every transfer that kept data and every
    /// [`KeepPolicy::sweep_interval`].
    pub async fn expire(&self) {
        let mut drop = Vec::new();
        let mut kept = Vec::new();
        for key in self.resume.keys() {
            if self.resume.is_busy(&key) {
                continue;
            }
            match self.resume.load(&key) {
                Some(record) => kept.push(Kept {
                    key,
                    bytes: record.present,
                    trusted: self.intake.trusts(&record.peer),
                    since_ms: record.since_ms(),
                }),
                None => drop.push((key, "no readable record")),
            }
        }
        drop.extend(
            self.keep
                .to_drop(&kept, resume::now_ms())
                .into_iter()
                .map(|(key, why)| (key, why.as_str())),
        );
        for (key, why) in drop {
            let Some(_claim) = self.resume.claim(&key) else {
                continue;
            };
            // Logged only once both the data and the record are gone.
            match self.forget(&key).await {
                Ok(removed) => tracing::info!(
                    key,
                    removed,
                    "dropped the partial data of an interrupted transfer: {why}"
                ),
                Err(reason) => tracing::warn!(
                    key,
                    "cannot remove partial data (tried again at the next sweep): {reason}"
                ),
            }
        }
    }

    /// Drops the partial data kept from the transfer whose ID starts with
    /// `prefix` (`share cancel ID`). `None` if no kept transfer has such an
    /// ID (or it is being received again right now).
    ///
    /// # Errors
    /// An ambiguous prefix, or data that could not be removed.
    pub async fn drop_kept(&self, prefix: &str) -> Result<Option<Dropped>, DropError> {
        let kept = self.kept().list();
        let id = match ids::find_by_prefix(kept.iter().map(|(_, r)| r.transfer.as_str()), prefix) {
            Ok(id) => id.to_owned(),
            Err(PrefixError::NotFound(_)) => return Ok(None),
            Err(PrefixError::Ambiguous(p)) => return Err(DropError::Ambiguous(p)),
        };
        let Some((key, record)) = kept.into_iter().find(|(_, r)| r.transfer == id) else {
            return Ok(None);
        };
        Ok(self.drop_one(&key, record).await?)
    }

    /// Drops the partial data of every interrupted transfer not being
    /// received now (`share clean`).
    ///
    /// # Errors
    /// The first data that could not be removed (the rest is tried first).
    pub async fn drop_all_kept(&self) -> Result<Vec<Dropped>, ForgetError> {
        let mut dropped = Vec::new();
        let mut failed = None;
        for (key, record) in self.kept().list() {
            match self.drop_one(&key, record).await {
                Ok(Some(d)) => dropped.push(d),
                Ok(None) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(dropped),
        }
    }

    /// Forgets the kept transfer `key` unless a receive holds it.
    async fn drop_one(&self, key: &str, record: Record) -> Result<Option<Dropped>, ForgetError> {
        let Some(_claim) = self.resume.claim(key) else {
            return Ok(None);
        };
        self.forget(key).await?;
        tracing::info!(
            id = record.transfer,
            bytes = record.present,
            "dropped the partial data of an interrupted transfer from {} on request",
            record.peer_name
        );
        Ok(Some(Dropped {
            transfer: record.transfer,
            peer: record.peer_name,
            bytes: record.present,
        }))
    }

    /// Handles one incoming transfer after the `Hello` exchange.
    pub async fn receive(&self, framed: &mut Framed, sender: &Sender) {
        let first = framed.recv_within(self.message_timeout).await;
        self.receive_first(framed, sender, first).await;
    }

    /// [`Self::receive`] when the caller already read the first message
    /// after `Hello` (the daemon reads it to pick the session type).
    pub async fn receive_first(
        &self,
        framed: &mut Framed,
        sender: &Sender,
        first: Result<Message, RecvError>,
    ) {
        let peer_id = sender.id;
        let peer_name = &sender.name;
        // On a link that negotiated it, the Offer may come after its
        // entries' Metadata.
        let (metadata, first) = match first {
            Ok(Message::Metadata(metadata)) if framed.link().metadata => (
                Some(metadata),
                framed.recv_within(self.message_timeout).await,
            ),
            first => (None, first),
        };
        let manifest = match first {
            Ok(Message::Offer(manifest)) => manifest,
            Ok(other) => {
                let e = TransferError::Protocol(format!("expected Offer, got {}", kind(&other)));
                tracing::warn!(peer = %peer_id, "{e}; disconnecting");
                framed.send_error(&e).await;
                return;
            }
            // The dialer of an identity check or a lost transport race just
            // closes after Hello.
            Err(RecvError::Closed) => return,
            Err(RecvError::OverBudget(over)) => {
                over_budget(framed, sender, &over, "frame").await;
                return;
            }
            Err(e) => {
                let e = TransferError::from(e);
                tracing::warn!(peer = %peer_id, "no valid offer: {e}; disconnecting");
                if matches!(e, TransferError::Protocol(_) | TransferError::Timeout(_)) {
                    framed.send_error(&e).await;
                }
                return;
            }
        };

        if let Some(metadata) = &metadata
            && metadata.len() != manifest.entries.len()
        {
            let e = TransferError::Protocol(format!(
                "Metadata for {} entries before an Offer of {}",
                metadata.len(),
                manifest.entries.len()
            ));
            tracing::warn!(peer = %peer_id, "{e}; disconnecting");
            framed.send_error(&e).await;
            return;
        }

        // The manifest, its metadata and its plan stay in memory while the
        // offer waits and runs: paid for from the sender's memory budget,
        // first with the plan estimated as large as the manifest, then
        // exactly.
        let metadata_bytes = metadata.as_ref().map_or(0, |m| {
            heap_block(m.capacity() * std::mem::size_of::<EntryMeta>())
        });
        let mut held = framed.reserve_more();
        if let Err(over) = held.resize(manifest.heap_bytes() * 2 + metadata_bytes) {
            over_budget(framed, sender, &over, "offer").await;
            return;
        }
        let key = resume::key(&peer_id, &manifest);
        let kept = self.resume.load(&key).map_or(0, |r| r.present);
        // Checking 100 000 paths takes a while: off the runtime's threads,
        // which serve every other peer meanwhile.
        let intake = self.intake.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let checked = intake.check_files(&manifest, kept);
            (manifest, checked)
        })
        .await;
        let Ok((manifest, checked)) = checked else {
            tracing::error!(peer = %peer_id, "checking an offer failed unexpectedly");
            return;
        };
        let plan = match checked {
            Ok(plan) => plan,
            Err(reason) => {
                tracing::warn!(peer = %peer_id, name = %peer_name, "refused offer: {reason}");
                let reason = reason.to_string().into();
                let _ = framed.send(&Message::Reject { reason }).await;
                return;
            }
        };
        if let Err(over) = held.resize(manifest.heap_bytes() + plan.heap_bytes() + metadata_bytes) {
            over_budget(framed, sender, &over, "offer").await;
            return;
        }

        let Some(claim) = self.resume.claim(&key) else {
            let e = TransferError::Busy(
                "this transfer is already being received; retry shortly".into(),
            );
            framed.send_error(&e).await;
            return;
        };
        let record = self.resume.load(&key).filter(|r| r.peer == peer_id);

        let offer = Offer::Files(&manifest);
        let handle = self.intake.register(sender, offer);
        if record.is_some() {
            tracing::info!(
                id = handle.id(),
                "resuming a transfer from {peer_name} accepted earlier"
            );
        } else {
            let consent = {
                let (mut from_peer, _) = framed.halves();
                let gone = async move { sender_gone(from_peer.recv().await, peer_name) };
                self.intake.consent(sender, offer, &handle, gone).await
            };
            if let Err(declined) = consent {
                answer_declined(framed, &declined, "offer").await;
                return;
            }
        }

        handle.active();
        let mut record = record.unwrap_or_else(|| Record::new(peer_id, peer_name));
        record.attempt(
            handle.id(),
            &manifest,
            top_level_names(&manifest),
            sender.transport,
        );
        let job = Job {
            key: &key,
            record,
            peer_name,
            receiver: self,
            handle: &handle,
        };
        // The job watches the cancel itself: dropping it half way would leave
        // its disk writer running, which saves the resume record again after
        // the cleanup below (a cancelled transfer would then resume unasked).
        let result = job.run(framed, manifest, plan, metadata).await;
        match result {
            Ok(saved) => {
                tracing::info!(id = handle.id(), files = ?saved, "received from {peer_name}");
                self.intake.delivered(&handle, &saved);
            }
            Err((e, leftover)) => {
                let state = match &e {
                    TransferError::Cancelled => State::Cancelled,
                    TransferError::Peer {
                        code: ErrorCode::Cancelled,
                        ..
                    } => State::Cancelled,
                    _ => State::Failed,
                };
                // A user's cancel, on either side, is a decision, not a
                // fault; nor is a service stop, on either side.
                if state == State::Cancelled {
                    tracing::info!(id = handle.id(), "receiving from {peer_name} stopped: {e}");
                } else if is_pause(&e) {
                    tracing::info!(
                        id = handle.id(),
                        "receiving from {peer_name} paused, partial data kept for a resume: {e}"
                    );
                } else {
                    tracing::warn!(id = handle.id(), "receiving from {peer_name} failed: {e}");
                }
                if matches!(leftover, Leftover::Discard)
                    && let Err(reason) = self.forget(&key).await
                {
                    tracing::warn!(
                        key,
                        "cannot remove partial data (tried again at the next sweep): {reason}"
                    );
                }
                if !matches!(e, TransferError::Peer { .. } | TransferError::Link(_)) {
                    framed.send_error(&e).await;
                }
                handle.finish(state, Some(e.to_string()));
                if matches!(leftover, Leftover::Keep) {
                    // What it kept counts against the limits at once, as
                    // a candidate like the others.
                    drop(claim);
                    self.expire().await;
                }
            }
        }
    }
}

/// Refuses `sender`'s `what` (an offer, a frame) that does not fit its
/// memory budget with `Error(Busy)`, which a sender retries later; logged
/// as a warning for a trusted device, as routine for a stranger.
async fn over_budget(framed: &mut Framed, sender: &Sender, over: &OverBudget, what: &str) {
    let (peer, name) = (sender.id, &sender.name);
    if framed.reserve_more().is_stranger() {
        tracing::info!(%peer, %name, "{what} refused for now, over the peer memory budget: {over}");
    } else {
        tracing::warn!(%peer, %name, "{what} refused for now, over the peer memory budget: {over}");
    }
    framed
        .send_error(&TransferError::from(RecvError::OverBudget(*over)))
        .await;
}

/// Whether `e` pauses the transfer: this daemon or the sender's stops.
fn is_pause(e: &TransferError) -> bool {
    matches!(
        e,
        TransferError::Stopping
            | TransferError::Peer {
                code: ErrorCode::Paused,
                ..
            }
    )
}

/// What to do with partial data when a transfer ends without success.
enum Leftover {
    /// Keep it for a resume (the link failed or a daemon stops, not the
    /// content).
    Keep,
    /// Remove it (hostile or refused content, cancel, full disk).
    Discard,
}

/// What the sender's next message says while it waits for consent: it
/// only ever sends something to give up (an `Error`) or to break the
/// protocol.
pub(super) fn sender_gone(next: Result<Message, RecvError>, peer_name: &PeerName) -> SenderGone {
    match next {
        Ok(Message::Error {
            code: ErrorCode::Cancelled,
            message,
        }) => SenderGone::Cancelled(
            TransferError::Peer {
                peer: peer_name.clone(),
                code: ErrorCode::Cancelled,
                message: message.clean(),
            }
            .to_string(),
        ),
        Ok(Message::Error { code, message }) => SenderGone::GaveUp(code.report(&message.clean())),
        Ok(other) => SenderGone::BrokeProtocol(kind(&other).to_owned()),
        Err(e) => SenderGone::Lost(e.to_string()),
    }
}

/// Tells the sender of a `declined` offer what it needs to know: a
/// `Reject` with the reason, "cancelled" after this side's `share cancel`,
/// "paused" when this daemon stops, or the protocol violation it
/// committed. A sender that gave up gets nothing (an `Error` is never
/// answered).
pub(super) async fn answer_declined(framed: &mut Framed, declined: &Declined, noun: &str) {
    match (&declined.state, &declined.gone) {
        (State::Rejected, _) => {
            let reason = declined.reason.as_str().into();
            let _ = framed.send(&Message::Reject { reason }).await;
        }
        (State::Cancelled, None) => framed.send_error(&TransferError::Cancelled).await,
        _ if declined.stopped_here() => framed.send_error(&TransferError::Stopping).await,
        (_, Some(SenderGone::BrokeProtocol(what))) => {
            let e = TransferError::Protocol(format!(
                "sender sent {what} before the {noun} was accepted"
            ));
            framed.send_error(&e).await;
        }
        _ => {}
    }
}

/// One accepted transfer.
struct Job<'a> {
    key: &'a str,
    record: Record,
    peer_name: &'a PeerName,
    receiver: &'a Receiver,
    handle: &'a Handle,
}

type JobError = (TransferError, Leftover);

impl Job<'_> {
    /// Stages (or resumes), asks for the missing blocks, receives them and
    /// commits.
    async fn run(
        self,
        framed: &mut Framed,
        manifest: Manifest,
        plan: Plan,
        metadata: Option<Vec<EntryMeta>>,
    ) -> Result<Vec<String>, JobError> {
        let download = self.receiver.intake.download().clone();
        let key = self.key.to_owned();
        let map = self.record.verified_map();
        let resume = self.receiver.resume.clone();
        let staging_task = tokio::task::spawn_blocking(move || {
            let mut staging = download.stage(&plan, &manifest, &key)?;
            if let Some(metadata) = metadata {
                staging.set_metadata(metadata)?;
            }
            if map.contains(&true) {
                staging.verify_existing(&resume.claims(&key, &map))?;
            }
            Ok::<_, StoreError>((staging, manifest))
        });
        // If cancelled meanwhile, the task's Staging is dropped (removed)
        // when it finishes.
        let cancel = self.handle.cancelled();
        let mut staging_task = staging_task;
        let staged = tokio::select! {
            r = &mut staging_task => r.map_err(|e| internal(format!("staging task failed: {e}")))?,
            () = cancel.cancelled() => {
                let (e, leftover) = interruption(self.handle);
                if let Leftover::Keep = leftover
                    && let Ok(Ok((staging, _))) = staging_task.await
                {
                    // A stop: the data of an earlier attempt stays (the
                    // runtime waits for the task anyway).
                    finish_staging(staging, &leftover);
                }
                return Err((e, leftover));
            }
        };
        let (staging, manifest) = staged.map_err(|e| store_error(e, Leftover::Discard))?;

        let need = staging.missing();
        let present = staging.bytes_present();
        let order = BlockOrder::new(&manifest, &need);
        self.handle.set_resumed(present);
        let mut record = self.record.clone();
        record.set_verified(staging.verified_map(), present);
        self.receiver
            .resume
            .save(self.key, &record)
            .map_err(|e| internal(format!("cannot save resume state: {e}")))?;
        if present > 0 {
            tracing::info!(
                id = self.handle.id(),
                present,
                missing = manifest.total_bytes() - present,
                "resuming: asking only for missing blocks"
            );
        }
        framed
            .send(&Message::Accept { need })
            .await
            .map_err(|e| (e, Leftover::Keep))?;

        let (tx, rx) = mpsc::channel::<Chunk>(PIPELINE_DEPTH);
        let (recycle, free) = mpsc::channel::<Vec<u8>>(PIPELINE_DEPTH + 1);
        let (done, sent) = self.handle.counters();
        let resume = self.receiver.resume.clone();
        let key = self.key.to_owned();
        let values = resume
            .value_log(&key)
            .map_err(|e| internal(format!("cannot save resume state: {e}")))?;
        let writer = tokio::task::spawn_blocking(move || {
            let resume = Resume {
                store: &resume,
                key: &key,
                record,
                values,
            };
            write_blocks(staging, rx, &recycle, resume, |n| {
                done.fetch_add(n, Ordering::Relaxed);
                sent.fetch_add(n, Ordering::Relaxed);
            })
        });

        let pool = BufferPool::new(free);
        let failure = self.pump(framed, tx, pool, order).await;
        let (staging, written) = writer
            .await
            .map_err(|e| internal(format!("writer task failed: {e}")))?;
        if let Some(failure) = failure {
            // Verified blocks are worth keeping unless the peer misbehaved.
            let leftover = match &failure.1 {
                Leftover::Keep if written.is_ok() => Leftover::Keep,
                Leftover::Keep => leftover_for(written.as_ref().err()),
                Leftover::Discard => Leftover::Discard,
            };
            finish_staging(staging, &leftover);
            return Err((failure.0, leftover));
        }
        if let Err(e) = written {
            let leftover = leftover_for(Some(&e));
            finish_staging(staging, &leftover);
            return Err(store_error(e, leftover));
        }
        let saved = tokio::task::spawn_blocking(move || staging.commit())
            .await
            .map_err(|e| internal(format!("commit task failed: {e}")))?
            .map_err(|e| store_error(e, Leftover::Discard))?;
        self.receiver.resume.remove(self.key);
        framed
            .send(&Message::Done)
            .await
            .map_err(|e| (e, Leftover::Discard))?;
        Ok(saved)
    }

    /// Reads the data and block values `order` asks for into the writer,
    /// refusing the first frame out of that order as it arrives. Returns
    /// the failure, if any; the writer's own error arrives through its
    /// result. Reads nothing after the last value (PROTOCOL.md §6 step 4).
    async fn pump(
        &self,
        framed: &mut Framed,
        tx: mpsc::Sender<Chunk>,
        mut pool: BufferPool,
        mut order: BlockOrder,
    ) -> Option<JobError> {
        let cancel = self.handle.cancelled();
        let out_of_order =
            |e: OrderError| Some((TransferError::Protocol(e.to_string()), Leftover::Discard));
        let (mut from_peer, _) = framed.halves();
        while !order.is_complete() {
            // Payloads are read straight into pooled buffers: memory stays
            // flat however large the transfer, nothing is allocated per
            // chunk, and the data is copied once on its way to the writer.
            // No buffer means the writer stopped; its result says why.
            let mut buf = pool.take().await?;
            let incoming = tokio::select! {
                m = from_peer.recv_into_within(&mut buf, self.receiver.message_timeout) => m,
                () = cancel.cancelled() => return Some(interruption(self.handle)),
                // The writer stopped on bad data (or a full disk): answer
                // now, not when the peer sends its next frame.
                () = tx.closed() => return None,
            };
            match incoming {
                Ok(Incoming::Data { file, offset }) => {
                    if let Err(e) = order.data(file, offset, buf.len() as u64) {
                        return out_of_order(e);
                    }
                    if tx.send(Chunk::Data { file, offset, buf }).await.is_err() {
                        // The writer stopped; its result says why.
                        return None;
                    }
                }
                Ok(Incoming::Message(Message::BlockValue { file, block, value })) => {
                    pool.put_back(buf);
                    if let Err(e) = order.value(file, block) {
                        return out_of_order(e);
                    }
                    if tx.send(Chunk::Value { file, block, value }).await.is_err() {
                        return None;
                    }
                }
                Ok(Incoming::Message(Message::Error { code, message })) => {
                    let e = TransferError::Peer {
                        peer: self.peer_name.clone(),
                        code,
                        message: message.clean(),
                    };
                    let leftover = match code {
                        ErrorCode::Cancelled | ErrorCode::Protocol => Leftover::Discard,
                        _ => Leftover::Keep,
                    };
                    return Some((e, leftover));
                }
                Ok(Incoming::Message(other)) => {
                    let e =
                        TransferError::Protocol(format!("unexpected {} during data", kind(&other)));
                    return Some((e, Leftover::Discard));
                }
                Err(RecvError::Decode(d)) => {
                    return Some((TransferError::Protocol(d.to_string()), Leftover::Discard));
                }
                Err(e) => return Some((e.into(), Leftover::Keep)),
            }
        }
        None
    }
}

/// Where the writer keeps the resume state of the transfer.
struct Resume<'a> {
    store: &'a ResumeStore,
    key: &'a str,
    record: Record,
    values: resume::ValueLog,
}

impl Resume<'_> {
    /// Writes the logged values, then the verified map that relies on them
    /// (a block whose value is missing is only fetched again).
    fn save(&mut self, staging: &Staging) {
        if let Err(e) = self.values.flush() {
            tracing::warn!("cannot log block values: {e}");
        }
        self.record
            .set_verified(staging.verified_map(), staging.bytes_present());
        if let Err(e) = self.store.save(self.key, &self.record) {
            tracing::warn!("cannot save resume state: {e}");
        }
    }
}

/// Blocking: writes data into the staging area, logging the value of each
/// verified block and checkpointing the verified-block map. Returns the
/// staging area and the first error.
fn write_blocks(
    mut staging: Staging,
    mut rx: mpsc::Receiver<Chunk>,
    recycle: &mpsc::Sender<Vec<u8>>,
    mut resume: Resume<'_>,
    progress: impl Fn(u64),
) -> (Staging, Result<(), StoreError>) {
    let mut last_checkpoint = Instant::now();
    let mut unsaved = 0u64;
    let mut dirty = false;
    let mut result = Ok(());
    while let Some(chunk) = rx.blocking_recv() {
        let stored = match chunk {
            Chunk::Data { file, offset, buf } => {
                let written = staging.write(file, offset, &buf);
                // The pool never holds more than it handed out, so this
                // cannot block; if the network side is gone the buffer is
                // just dropped.
                let _ = recycle.try_send(buf);
                written
            }
            Chunk::Value { file, block, value } => {
                let before = staging.bytes_present();
                staging.block_value(file, block, &value).map(|global| {
                    resume.values.put(global, value);
                    // Progress counts verified bytes only.
                    let verified = staging.bytes_present() - before;
                    progress(verified);
                    unsaved += verified;
                    dirty = true;
                })
            }
        };
        if let Err(e) = stored {
            result = Err(e);
            break;
        }
        if dirty
            && (last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL || unsaved >= CHECKPOINT_BYTES)
        {
            resume.save(&staging);
            last_checkpoint = Instant::now();
            unsaved = 0;
            dirty = false;
        }
    }
    // Close the channel so the network side stops feeding us.
    drop(rx);
    resume.save(&staging);
    (staging, result)
}

/// What the network side hands the writer.
enum Chunk {
    /// Bytes of file entry `file` at `offset`, in a pooled buffer.
    Data {
        file: u32,
        offset: u64,
        buf: Vec<u8>,
    },
    /// The sender's value of block `block` of file entry `file`.
    Value {
        file: u32,
        block: u64,
        value: [u8; 32],
    },
}

/// A fixed set of chunk buffers circulating between the network side and
/// the disk writer.
struct BufferPool {
    free: mpsc::Receiver<Vec<u8>>,
    /// A buffer taken for a frame that turned out to carry no data.
    spare: Option<Vec<u8>>,
    created: usize,
}

impl BufferPool {
    fn new(free: mpsc::Receiver<Vec<u8>>) -> Self {
        Self {
            free,
            spare: None,
            created: 0,
        }
    }

    /// A buffer: a new one while fewer than the pipeline holds exist,
    /// otherwise the next one the writer returns. `None` if the writer has
    /// stopped.
    async fn take(&mut self) -> Option<Vec<u8>> {
        if let Some(buf) = self.spare.take() {
            return Some(buf);
        }
        if let Ok(buf) = self.free.try_recv() {
            return Some(buf);
        }
        if self.created <= PIPELINE_DEPTH {
            self.created += 1;
            return Some(Vec::with_capacity(MAX_DATA_CHUNK));
        }
        self.free.recv().await
    }

    /// Returns an unused buffer from [`take`](Self::take).
    fn put_back(&mut self, buf: Vec<u8>) {
        self.spare = Some(buf);
    }
}

/// Keeps or removes a staging area that will not be committed now. A kept
/// one holds only its verified blocks ([`Staging::keep`]); with none there
/// is nothing worth keeping on disk: it is removed, while the resume record
/// stays so a retry is not asked again.
fn finish_staging(staging: Staging, leftover: &Leftover) {
    match leftover {
        Leftover::Keep if staging.bytes_present() > 0 => staging.keep(),
        _ => drop(staging),
    }
}

/// Which store errors leave data worth resuming.
fn leftover_for(e: Option<&StoreError>) -> Leftover {
    match e {
        // A bad block is discarded by the store; the good ones remain and
        // the sender's retry asks for the bad one again.
        Some(StoreError::Integrity { .. }) | None => Leftover::Keep,
        _ => Leftover::Discard,
    }
}

/// How a transfer whose cancel signal fired ends: paused by the daemon's
/// stop, its data kept for the sender's retry; or cancelled by a user,
/// its data dropped.
fn interruption(handle: &Handle) -> JobError {
    match TransferError::interrupted(handle) {
        e @ TransferError::Stopping => (e, Leftover::Keep),
        e => (e, Leftover::Discard),
    }
}

fn internal(message: String) -> JobError {
    (TransferError::Local(message), Leftover::Keep)
}

/// Maps storage failures onto what the peer is told.
fn store_error(e: StoreError, leftover: Leftover) -> JobError {
    let code = match &e {
        _ if e.is_no_space() => ErrorCode::NoSpace,
        StoreError::Integrity { .. } => ErrorCode::Integrity,
        StoreError::Protocol(_) | StoreError::Path(_) => ErrorCode::Protocol,
        _ => ErrorCode::Io,
    };
    let error = match code {
        ErrorCode::Protocol => TransferError::Protocol(e.to_string()),
        _ => TransferError::Storage {
            code,
            message: e.to_string(),
        },
    };
    (error, leftover)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::identity::Identity;
    use crate::protocol::{Entry, EntryKind};
    use crate::store::plan;
    use crate::transfer::testing;

    /// An interrupted transfer: staged data under `key` and its record.
    fn interrupted(receiver: &Receiver, key: &str) {
        let manifest = Manifest {
            entries: vec![Entry {
                path: "a.bin".into(),
                kind: EntryKind::File {
                    size: 10,
                    tag: [7; 32],
                },
            }],
            ..Manifest::default()
        };
        let plan = plan(&manifest, receiver.intake.limits().max_depth).unwrap();
        let download = receiver.intake.download();
        download.stage(&plan, &manifest, key).unwrap().keep();
        let peer = Identity::generate().unwrap().id();
        receiver
            .resume
            .save(key, &Record::new(peer, &"laptop".into()))
            .unwrap();
    }

    #[tokio::test]
    async fn forget_removes_the_staged_data_and_then_the_record() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = testing::receiver(tmp.path(), crate::intake::AcceptPolicy::Ask);
        interrupted(&ctx, "k1");
        assert!(ctx.forget("k1").await.unwrap());
        assert!(ctx.resume.load("k1").is_none(), "record left behind");
        assert!(!ctx.forget("k1").await.unwrap(), "staged data left behind");
    }

    /// A record is the only way the daemon finds staged data again, so it
    /// must outlive any staged data that could not be removed.
    #[tokio::test]
    async fn a_record_stays_while_its_staged_data_cannot_be_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = testing::receiver(tmp.path(), crate::intake::AcceptPolicy::Ask);
        interrupted(&ctx, "k1");
        // Swap the staging directory for a symlink: the store refuses to
        // follow it, so the data cannot be removed through it.
        let downloads = tmp.path().join("downloads");
        let staged = std::fs::read_dir(&downloads)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains("k1"))
            .unwrap();
        std::fs::rename(&staged, tmp.path().join("moved")).unwrap();
        symlink(tmp.path().join("moved"), &staged).unwrap();
        assert!(ctx.forget("k1").await.is_err());
        assert!(
            ctx.resume.load("k1").is_some(),
            "record removed before the data"
        );
    }
}
