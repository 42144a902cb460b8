//! Outgoing sends: one service that every sender shares (`share send`,
//! `share send --text`, the send queue), whatever carries the bytes.
//!
//! A [`SendJob`] names the peer as the user typed it, what to send and how
//! hard to try; [`SendService::send`] resolves the peer, prepares the
//! payload (the daemon never opens a path a user names: files arrive as
//! open descriptors, see [`crate::transfer::source`]), and makes attempts
//! (`native`: the lanshare protocol) until one succeeds or
//! [`retry`] says to stop. Progress streams to the caller as
//! [`SendEvent`]s; the result is a [`SendReport`] or a [`SendError`] that
//! says how far the send got ([`SendError::reached_peer`]), which is all
//! the queue needs to know.
//!
//! A second protocol (LocalSend) plugs in beside `native`: resolution
//! picks the protocol, and its attempt function registers and reports
//! the same way.

mod localsend;
mod native;
pub mod retry;

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::identity::DeviceId;
use crate::intake::text::{TextError, check_text, preview};
use crate::localsend::LocalSend;
use crate::peers::{Connector, ResolveError, Resolver, Route};
use crate::registry::{Direction, Handle, NewTransfer, Registry, State, TransferKind};
use crate::safe_text::{CleanText, PeerName};
use crate::transfer::source::{self, Source, SourceError, SourceFile};
use crate::transfer::{MESSAGE_TIMEOUT, SessionEvent, TransferError};
use crate::transport::TransportKind;
use crate::transport::dial::{DialError, Preference};
use retry::{AttemptError, Next, RetryPlan};

/// Progress of `share send`, streamed to the CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SendEvent {
    /// The files are open and the offer is built.
    Prepared {
        /// Number of files.
        files: usize,
        /// Total bytes.
        bytes: u64,
        /// Special files skipped inside directories.
        skipped: Vec<String>,
    },
    /// Connected and authenticated.
    Connected {
        /// Peer name.
        peer: PeerName,
        /// Transport won by the race.
        transport: TransportKind,
    },
    /// Waiting for the receiver to accept.
    Waiting {
        /// Peer name.
        peer: PeerName,
        /// Transfer ID on this side.
        id: String,
    },
    /// The transfer was interrupted and will be retried.
    Retrying {
        /// Attempts made so far.
        attempt: u32,
        /// Seconds until the next attempt.
        in_s: u64,
        /// What went wrong.
        reason: CleanText,
    },
    /// Bytes sent so far.
    Progress {
        /// Bytes sent.
        bytes_done: u64,
        /// Total.
        bytes: u64,
    },
}

/// Result of `share send`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendResult {
    /// Always `done` (failures are errors).
    pub status: ResultStatus,
    /// Peer name.
    pub peer: PeerName,
    /// Peer device ID.
    pub peer_id: DeviceId,
    /// Transfer ID.
    pub id: String,
    /// Transport used.
    pub transport: TransportKind,
    /// Files sent.
    pub files: usize,
    /// Bytes of file content.
    pub bytes: u64,
    /// Bytes of file data actually sent over the network, over all
    /// attempts (less than `bytes` when a transfer resumed).
    pub bytes_sent: u64,
    /// Connections it took (1 unless interrupted and resumed).
    pub attempts: u32,
    /// Wall time from request to `Done`.
    pub seconds: f64,
    /// Time from the receiver's accept (the first byte of file data) to
    /// `Done`: what the rate is measured over. Absent from a daemon that
    /// predates it.
    #[serde(default)]
    pub transfer_seconds: Option<f64>,
    /// Special files that were skipped.
    pub skipped: Vec<String>,
}

/// Result of `share send --text`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextResult {
    /// Always `done` (failures are errors).
    pub status: ResultStatus,
    /// Peer name.
    pub peer: PeerName,
    /// Peer device ID.
    pub peer_id: DeviceId,
    /// Transfer ID on this side.
    pub id: String,
    /// Transport used.
    pub transport: TransportKind,
    /// Length of the text in bytes.
    pub bytes: u64,
    /// Wall time from request to the receiver's confirmation.
    pub seconds: f64,
}

/// `status` of a result document: `done` in a success, `failed` in the
/// document `share ... --json` prints for a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    /// It happened: the receiver confirmed.
    Done,
    /// It did not (the document also carries `error` and `kind`).
    Failed,
}

/// What to send.
#[derive(Debug)]
pub enum Payload {
    /// Files and directories: each entry's offered name and, for a file,
    /// the open file the CLI passed; plus the special files the CLI left
    /// out of named directories.
    Files {
        /// The entries, parents before children.
        what: Vec<(String, Option<SourceFile>)>,
        /// Left out, as text for the user.
        skipped: Vec<String>,
    },
    /// A short text.
    Text(String),
}

/// One send: to whom, what, how.
#[derive(Debug)]
pub struct SendJob {
    /// Name, device-ID prefix or `HOST:PORT`, as the user typed it.
    pub peer: String,
    /// What to send.
    pub payload: Payload,
    /// Which transports to use.
    pub preference: Preference,
    /// How long an interrupted file transfer keeps retrying; `None` = the
    /// daemon's `retry_s`. Texts are not retried.
    pub retry_for: Option<Duration>,
    /// The PIN a LocalSend receiver asks for (`--pin`); unused for
    /// lanshare peers.
    pub pin: Option<String>,
}

/// A send that completed: the receiver confirmed.
#[derive(Debug, Clone)]
pub enum SendReport {
    /// Files, verified and in place at the receiver.
    Files(SendResult),
    /// A text, in the receiver's inbox.
    Text(TextResult),
}

/// Why a send did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Nothing to send.
    #[error("nothing to send: give at least one file or directory")]
    Empty,
    /// A file cannot be sent (the descriptor is not a readable file, a
    /// name is not sendable).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The text cannot be sent.
    #[error(transparent)]
    Text(#[from] TextError),
    /// The peer could not be resolved.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// No connection could be made.
    #[error(
        "cannot connect to {label}: {error}; `share doctor {}` checks the way there",
        shell_word(label)
    )]
    Connect {
        /// What was dialed.
        label: String,
        /// Why.
        error: DialError,
    },
    /// Cancelled before anything reached the peer.
    #[error("cancelled")]
    Cancelled,
    /// This daemon stops (a service stop or restart) before the send
    /// completed; the receiver keeps what it verified, so sending the same
    /// files again resumes.
    #[error("{}", stopping(peer, *reached))]
    Stopping {
        /// The peer, as the user named it.
        peer: String,
        /// Whether the transfer had reached the peer.
        reached: bool,
    },
    /// It reached the peer (the transfer is in `share transfers` and the
    /// history) and then failed for good.
    #[error(transparent)]
    Transfer(AttemptError),
    /// A task of the daemon failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl SendError {
    /// Whether the send reached the peer: its outcome is recorded, and
    /// sending again would be a new transfer. A queued send that did not
    /// reach its peer keeps waiting for it.
    pub fn reached_peer(&self) -> bool {
        matches!(self, Self::Transfer(_))
    }

    /// Whether it ended by someone's decision, not a fault: the receiver
    /// (its user, policy or offer expiry) declined, or a user cancelled.
    pub fn is_decision(&self) -> bool {
        matches!(self, Self::Cancelled)
            || matches!(self, Self::Transfer(e) if matches!(e.final_state(), State::Rejected | State::Cancelled))
    }

    /// Whether the job itself is at fault: sending again cannot help.
    pub fn is_bad_job(&self) -> bool {
        matches!(self, Self::Empty | Self::Source(_) | Self::Text(_))
    }
}

/// Wording of [`SendError::Stopping`].
fn stopping(peer: &str, reached: bool) -> String {
    if reached {
        format!(
            "the lanshare service stopped during the send (stop or restart); {peer} keeps what it received, so the same `share send` resumes once the service is back"
        )
    } else {
        format!(
            "the lanshare service stopped before the send reached {peer} (stop or restart); send again once it is back"
        )
    }
}

/// How the service behaves (from the daemon's configuration).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long an interrupted file transfer keeps retrying by default.
    pub retry_window: Duration,
    /// How long the receiver's user has to accept (the receiver's offer
    /// timeout, which we cannot know, is at most this; plus slack).
    pub consent_timeout: Duration,
}

impl Settings {
    /// Settings for a daemon whose own offers expire after
    /// `offer_timeout`: a peer configured alike answers within it.
    pub fn new(retry_window: Duration, offer_timeout: Duration) -> Self {
        Self {
            retry_window,
            consent_timeout: offer_timeout + MESSAGE_TIMEOUT,
        }
    }
}

/// The outgoing-send service.
pub struct SendService {
    connector: Arc<Connector>,
    resolver: Resolver,
    registry: Registry,
    settings: Settings,
    /// The LocalSend service, when LocalSend is on.
    localsend: Option<Arc<LocalSend>>,
}

/// A payload ready to offer.
#[derive(Debug)]
enum Prepared {
    Files {
        source: Source,
        /// Top-level names, for listings.
        names: Vec<CleanText>,
        skipped: Vec<String>,
    },
    Text(String),
}

impl Prepared {
    fn file_count(&self) -> usize {
        match self {
            Self::Files { source, .. } => source.manifest.file_count(),
            Self::Text(_) => 0,
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Self::Files { source, .. } => source.manifest.total_bytes(),
            Self::Text(text) => text.len() as u64,
        }
    }

    fn names(&self) -> Vec<CleanText> {
        match self {
            Self::Files { names, .. } => names.clone(),
            Self::Text(text) => vec![preview(text)],
        }
    }

    fn kind(&self) -> TransferKind {
        match self {
            Self::Files { .. } => TransferKind::Files,
            Self::Text(_) => TransferKind::Text,
        }
    }
}

impl SendService {
    /// A service dialing with `connector`, resolving with `resolver` and
    /// listing sends in `registry`.
    pub fn new(
        connector: Arc<Connector>,
        resolver: Resolver,
        registry: Registry,
        settings: Settings,
    ) -> Self {
        Self {
            connector,
            resolver,
            registry,
            settings,
            localsend: None,
        }
    }

    /// Also sends to LocalSend devices, through `localsend` (the resolver
    /// must know its devices: [`Resolver::with_localsend`]).
    #[must_use]
    pub fn with_localsend(mut self, localsend: Arc<LocalSend>) -> Self {
        self.localsend = Some(localsend);
        self
    }

    /// Runs `job` to the end, streaming progress to `events`; `cancel`
    /// stops it (the receiver is told).
    ///
    /// # Errors
    /// Why it did not complete, and how far it got.
    pub async fn send(
        &self,
        job: SendJob,
        events: mpsc::UnboundedSender<SendEvent>,
        cancel: CancellationToken,
    ) -> Result<SendReport, SendError> {
        let started = Instant::now();
        let (payload, mut plan) = match job.payload {
            Payload::Files { what, skipped } => {
                if what.is_empty() {
                    return Err(SendError::Empty);
                }
                let window = job.retry_for.unwrap_or(self.settings.retry_window);
                (
                    PayloadIn::Files { what, skipped },
                    RetryPlan::new(started, window),
                )
            }
            Payload::Text(text) => {
                check_text(&text)?;
                (PayloadIn::Text(text), RetryPlan::never(started))
            }
        };
        let mut target = self.resolver.route(&job.peer).await?;
        let payload = prepare(payload).await?;
        if let Prepared::Files {
            source, skipped, ..
        } = &payload
        {
            if !skipped.is_empty() {
                tracing::warn!(skipped = ?skipped, "special files are not sent");
            }
            let _ = events.send(SendEvent::Prepared {
                files: source.manifest.file_count(),
                bytes: source.manifest.total_bytes(),
                skipped: skipped.clone(),
            });
        }

        let mut handle: Option<Handle> = None;
        let mut attempts = 0u32;
        let accepted = OnceLock::new();
        loop {
            attempts += 1;
            let common = Common {
                registry: &self.registry,
                payload: &payload,
                consent_timeout: self.settings.consent_timeout,
                accepted: &accepted,
                events: &events,
                cancel: &cancel,
            };
            let result = match (&target, &self.localsend) {
                (Route::Native(target), _) => {
                    native::attempt(
                        native::Attempt {
                            common,
                            connector: &self.connector,
                            target,
                            preference: job.preference,
                        },
                        &mut handle,
                    )
                    .await
                }
                (Route::LocalSend(target), Some(service)) => {
                    localsend::attempt(
                        localsend::Attempt {
                            common,
                            service: service.sender(),
                            target,
                            pin: job.pin.as_deref(),
                        },
                        &mut handle,
                    )
                    .await
                }
                (Route::LocalSend(_), None) => {
                    return Err(SendError::Internal("LocalSend is off".into()));
                }
            };
            let error = match result {
                Ok(delivered) => {
                    let Some(handle) = handle else {
                        return Err(SendError::Internal("no transfer handle".into()));
                    };
                    handle.finish(State::Done, None);
                    let times = Times {
                        started,
                        accepted: accepted.get().copied(),
                    };
                    return Ok(report(
                        &payload, delivered, &handle, attempts, times, &events,
                    ));
                }
                Err(e) => e,
            };
            if self.registry.is_stopping() {
                if let Some(handle) = &handle {
                    handle.finish(State::Failed, Some(error.to_string()));
                }
                return Err(SendError::Stopping {
                    peer: job.peer,
                    reached: handle.is_some(),
                });
            }
            let next = if cancel.is_cancelled() {
                Next::GiveUp
            } else {
                plan.after(&error, handle.is_some(), Instant::now())
            };
            let Next::RetryIn(wait) = next else {
                return Err(match &handle {
                    Some(handle) => {
                        tracing::info!(id = handle.id(), "send ended: {error}");
                        handle.finish(error.final_state(), Some(error.to_string()));
                        SendError::Transfer(error)
                    }
                    None => match error {
                        AttemptError::Dial(label, error) => SendError::Connect { label, error },
                        AttemptError::Transfer(TransferError::Cancelled) => SendError::Cancelled,
                        other => SendError::Transfer(other),
                    },
                });
            };
            tracing::info!(
                attempt = attempts,
                retry_in_s = wait.as_secs(),
                "send interrupted: {error}; retrying"
            );
            let _ = events.send(SendEvent::Retrying {
                attempt: attempts,
                in_s: wait.as_secs(),
                reason: error.to_string().into(),
            });
            if let Some(handle) = &handle {
                handle.waiting();
            }
            let transfer_cancel = handle.as_ref().map(Handle::cancelled).unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => {}
                () = transfer_cancel.cancelled() => {}
            }
            // The peer may have come back elsewhere (new address, restarted daemon).
            if let Ok(again) = self.resolver.route(&job.peer).await {
                target = again;
            }
        }
    }
}

impl Prepared {
    /// The total that progress lines count up to (files only).
    fn progress_total(&self) -> Option<u64> {
        matches!(self, Self::Files { .. }).then(|| self.bytes())
    }

    /// Lists an outgoing transfer of this payload to `peer` in `registry`.
    fn register(
        &self,
        registry: &Registry,
        peer: PeerName,
        peer_id: DeviceId,
        transport: TransportKind,
    ) -> Handle {
        let handle = registry.start(NewTransfer {
            direction: Direction::Out,
            peer,
            peer_id,
            files: self.file_count(),
            bytes: self.bytes(),
            transport,
            names: self.names(),
        });
        handle.set_kind(self.kind());
        handle
    }
}

/// Whom an attempt reached.
pub(super) struct Delivered {
    pub(super) peer: PeerName,
    pub(super) peer_id: DeviceId,
    pub(super) transport: TransportKind,
}

/// How often `share send` gets a progress line.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// What an attempt needs whatever the protocol, and the steps both
/// protocols' attempts take around their own session.
struct Common<'a> {
    registry: &'a Registry,
    payload: &'a Prepared,
    /// How long the receiver's user may take to answer.
    consent_timeout: Duration,
    /// Set when the receiver first accepts (file data starts to flow).
    accepted: &'a OnceLock<Instant>,
    events: &'a mpsc::UnboundedSender<SendEvent>,
    /// The caller's cancel (the CLI went away, the queue item was removed).
    cancel: &'a CancellationToken,
}

impl Common<'_> {
    /// Runs `connect` unless the caller or the transfer (`handle`, from an
    /// earlier attempt) is cancelled first.
    async fn connect<T>(
        &self,
        handle: &Option<Handle>,
        connect: impl Future<Output = T>,
    ) -> Result<T, AttemptError> {
        let transfer_cancel = handle.as_ref().map(Handle::cancelled).unwrap_or_default();
        tokio::select! {
            r = connect => Ok(r),
            () = self.cancel.cancelled() => Err(AttemptError::Transfer(TransferError::Cancelled)),
            () = transfer_cancel.cancelled() => Err(AttemptError::Transfer(TransferError::Cancelled)),
        }
    }

    /// Tells the caller whom it reached, and registers the transfer on the
    /// first attempt that connects (a later one keeps it, with this
    /// attempt's transport).
    fn connected<'h>(
        &self,
        handle: &'h mut Option<Handle>,
        peer: &PeerName,
        peer_id: DeviceId,
        transport: TransportKind,
    ) -> &'h Handle {
        let _ = self.events.send(SendEvent::Connected {
            peer: peer.clone(),
            transport,
        });
        let handle = handle.get_or_insert_with(|| {
            self.payload
                .register(self.registry, peer.clone(), peer_id, transport)
        });
        handle.set_transport(transport);
        handle
    }

    /// Runs `session` to its end through [`follow`].
    async fn follow<T>(
        &self,
        session: impl Future<Output = T>,
        session_rx: mpsc::UnboundedReceiver<SessionEvent>,
        handle: &Handle,
        peer: &PeerName,
    ) -> T {
        let followed = Followed {
            handle,
            peer,
            total: self.payload.progress_total(),
            events: self.events,
            accepted: self.accepted,
            cancel: self.cancel,
        };
        follow(session, session_rx, followed).await
    }
}

/// What [`follow`] reports to.
struct Followed<'a> {
    handle: &'a Handle,
    peer: &'a PeerName,
    /// For files, their total size (progress lines); `None` for a text.
    total: Option<u64>,
    events: &'a mpsc::UnboundedSender<SendEvent>,
    /// Set when the receiver first accepts (the rate counts from then).
    accepted: &'a OnceLock<Instant>,
    /// The caller's cancel, turned into the transfer's.
    cancel: &'a CancellationToken,
}

/// Runs a sending session to its end; meanwhile forwards its events and
/// progress to the caller, and turns a vanished caller into a cancel.
async fn follow<T>(
    session: impl Future<Output = T>,
    mut session_rx: mpsc::UnboundedReceiver<SessionEvent>,
    f: Followed<'_>,
) -> T {
    tokio::pin!(session);
    let id = f.handle.id().to_owned();
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    let mut caller_gone = false;
    loop {
        tokio::select! {
            // Events first, so that the accept is timed when it comes
            // even if the session ends in the same turn.
            biased;
            // `None` only once the session has returned.
            Some(e) = session_rx.recv() => match e {
                SessionEvent::Waiting => {
                    f.handle.waiting();
                    let _ = f.events.send(SendEvent::Waiting { peer: f.peer.to_owned(), id: id.clone() });
                }
                SessionEvent::Accepted => {
                    let _ = f.accepted.set(Instant::now());
                    f.handle.active();
                }
            },
            r = &mut session => break r,
            () = f.cancel.cancelled(), if !caller_gone => {
                caller_gone = true;
                f.handle.cancel();
            }
            _ = tick.tick(), if f.total.is_some() => {
                let bytes = f.total.unwrap_or_default();
                let _ = f.events.send(SendEvent::Progress { bytes_done: f.handle.bytes_done(), bytes });
            }
        }
    }
}

/// A payload as the job gives it.
enum PayloadIn {
    Files {
        what: Vec<(String, Option<SourceFile>)>,
        skipped: Vec<String>,
    },
    Text(String),
}

/// Builds the offer from the open files (on a blocking thread: it
/// inspects every descriptor), or takes the text as it is.
async fn prepare(payload: PayloadIn) -> Result<Prepared, SendError> {
    match payload {
        PayloadIn::Files { what, skipped } => {
            let source = tokio::task::spawn_blocking(move || source::prepare(what))
                .await
                .map_err(|e| SendError::Internal(e.to_string()))??;
            let names = source
                .manifest
                .entries
                .iter()
                .filter(|e| !e.path.contains('/'))
                .map(|e| CleanText::from(e.path.as_str()))
                .collect();
            Ok(Prepared::Files {
                source,
                names,
                skipped,
            })
        }
        PayloadIn::Text(text) => Ok(Prepared::Text(text)),
    }
}

/// When a send was asked for, and when the receiver first accepted it.
struct Times {
    started: Instant,
    accepted: Option<Instant>,
}

/// The report of a send that completed.
fn report(
    payload: &Prepared,
    delivered: Delivered,
    handle: &Handle,
    attempts: u32,
    times: Times,
    events: &mpsc::UnboundedSender<SendEvent>,
) -> SendReport {
    let bytes = payload.bytes();
    let seconds = times.started.elapsed().as_secs_f64();
    let transfer_seconds = times.accepted.map(|at| at.elapsed().as_secs_f64());
    match payload {
        Prepared::Files {
            source, skipped, ..
        } => {
            let _ = events.send(SendEvent::Progress {
                bytes_done: bytes,
                bytes,
            });
            SendReport::Files(SendResult {
                status: ResultStatus::Done,
                peer: delivered.peer,
                peer_id: delivered.peer_id,
                id: handle.id().to_owned(),
                transport: delivered.transport,
                files: source.manifest.file_count(),
                bytes,
                bytes_sent: handle.bytes_sent(),
                attempts,
                seconds,
                transfer_seconds,
                skipped: skipped.clone(),
            })
        }
        Prepared::Text(_) => SendReport::Text(TextResult {
            status: ResultStatus::Done,
            peer: delivered.peer,
            peer_id: delivered.peer_id,
            id: handle.id().to_owned(),
            transport: delivered.transport,
            bytes,
            seconds,
        }),
    }
}

/// `text` as one word of a shell command: as it is if it holds only
/// characters no shell treats specially, else in single quotes.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_alphanumeric() || "._-:@%+,/=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn doctor_hints_quote_names_a_shell_would_split() {
        assert_eq!(shell_word("beta"), "beta");
        assert_eq!(shell_word("10.0.0.5:47000"), "10.0.0.5:47000");
        assert_eq!(shell_word("Anna's laptop"), r"'Anna'\''s laptop'");
        assert_eq!(shell_word("[fe80::1]:47000"), "'[fe80::1]:47000'");
    }
}
