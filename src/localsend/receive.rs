//! Receiving from LocalSend apps: `prepare-upload`, `upload` and `cancel`
//! on lanshare's intake.
//!
//! A LocalSend offer takes the same path as a native one
//! ([`crate::intake`]): its paths are checked by the store's planner, it
//! appears in `share transfers` with its progress, it waits for policy,
//! trust or `share accept` / `share reject` (403 to the sender) until it
//! expires, a text lands in the inbox, files land through the staging
//! store (a private directory, a durable no-replace rename, never
//! overwritten), and the history records the outcome. What is LocalSend's
//! own lives here:
//!
//! * one session at a time, as in LocalSend 1.18: while an offer waits or
//!   a session runs, another `prepare-upload` gets 409. The wait is
//!   bounded by the offer timeout, and a session that stops uploading for
//!   [`SESSION_IDLE`] ends;
//! * the session ID and one token per file are random 128-bit values;
//!   an upload must name them, come from the address of the
//!   `prepare-upload` and present the same client certificate (403
//!   otherwise);
//! * each file arrives as one upload (with `Content-Length` or chunked),
//!   possibly in parallel with others, into its own
//!   [`FileWriter`]; a body longer or shorter
//!   than the size the offer announced is refused (400). A file with a
//!   SHA-256 is checked against it: a mismatch is 422 and the same token
//!   may try again, three tries in all; a file that failed is left out;
//! * the answer to the last upload waits for the commit, so a 200 means
//!   every file is verified, durable and visible under its final name;
//!   `metadata.modified` becomes the mtime;
//! * `cancel` from the sender ends a waiting offer or a session (its
//!   data is discarded); `share cancel` ends it on this side and tells the
//!   sender.
//!
//! The staging key of the running session is written to the state
//! directory ([`STAGING_FILE`]) while it runs, so staged data left by a
//! crash is removed at the next start.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::client;
use super::http::{self, BodyError, Caller, ServerBody};
use super::wire::{self, OfferedFile, PrepareResponse};
use crate::identity::Identity;
use crate::identity::trust::TrustStore;
use crate::intake::{Declined, Intake, Offer, OfferRefused, Sender, SenderGone};
use crate::protocol::{Entry, EntryKind, Manifest, choose_block_size};
use crate::registry::{Handle, State};
use crate::safe_text::PeerName;
use crate::store::{FileWriter, Staging, StoreError};
use crate::transport::TransportKind;

/// How often one file may be uploaded: a SHA-256 mismatch may be retried
/// until this many tries were made (LocalSend 1.18 does the same).
pub const MAX_TRIES: u8 = 3;

/// A session whose sender uploads nothing for this long ends.
pub const SESSION_IDLE: Duration = Duration::from_secs(60);

/// File in the state directory naming the running session's staging key.
pub const STAGING_FILE: &str = "localsend-staging";

/// Chunks of an upload buffered between the network and the disk.
const UPLOAD_PIPELINE: usize = 16;

/// Bytes collected before one write to disk.
const WRITE_SIZE: usize = 1 << 20;

/// The session slot and what the sessions need.
pub struct Receiving {
    intake: Arc<Intake>,
    trust: TrustStore,
    /// Our LocalSend identity, to tell a sender when its session is
    /// cancelled here.
    identity: Identity,
    slot: Mutex<Slot>,
    state_dir: PathBuf,
}

/// LocalSend 1.18's single slot.
enum Slot {
    Free,
    /// An offer waits for consent; `cancel` ends the wait.
    Pending {
        ip: IpAddr,
        fingerprint: crate::identity::DeviceId,
        cancel: CancellationToken,
    },
    Active(Arc<Session>),
}

/// What an answered `prepare-upload` leads to.
pub enum Prepared {
    /// Upload these files: the session and its tokens.
    Session(PrepareResponse),
    /// Nothing to upload (a text, delivered).
    Nothing,
}

/// Why a `prepare-upload` is not answered with a session.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Another offer waits or a session runs.
    #[error("blocked by another session")]
    Busy,
    /// The offer is malformed or breaks a limit.
    #[error("{0}")]
    Invalid(String),
    /// Refused before anyone was asked (too large, no space...).
    #[error("{0}")]
    Refused(#[from] OfferRefused),
    /// Rejected, expired, or cancelled.
    #[error("{}", .0.reason)]
    Declined(Declined),
    /// A trusted device's alias with another certificate.
    #[error("identity mismatch: \"{0}\" is trusted here with a different certificate")]
    Impostor(PeerName),
    /// Staging or the inbox failed.
    #[error("{0}")]
    Local(String),
}

impl PrepareError {
    /// The status the sender gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Busy => StatusCode::CONFLICT,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Refused(OfferRefused::NoSpace { .. }) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Refused(OfferRefused::Manifest(
                crate::protocol::ManifestError::TooLarge { .. }
                | crate::protocol::ManifestError::TooManyEntries { .. },
            )) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Refused(_) => StatusCode::BAD_REQUEST,
            Self::Declined(_) | Self::Impostor(_) => StatusCode::FORBIDDEN,
            Self::Local(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One accepted offer whose files are being uploaded.
struct Session {
    id: String,
    ip: IpAddr,
    sender: Sender,
    /// Where the sender's own server is (to tell it of a cancel here).
    sender_addr: SocketAddr,
    handle: Handle,
    /// Cancelled when the session ends, whoever ends it.
    ended: CancellationToken,
    key: String,
    state: Mutex<SessionState>,
}

struct SessionState {
    files: HashMap<String, FileSlot>,
    /// `None` once committed or discarded.
    staging: Option<Staging>,
    uploading: usize,
    last_activity: Instant,
}

struct FileSlot {
    index: u32,
    token: String,
    size: u64,
    sha256: Option<[u8; 32]>,
    modified: Option<SystemTime>,
    state: FileState,
    tries: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    Waiting,
    Uploading,
    Done,
    Failed,
}

/// How a session ended, for the registry and the history.
enum Ending {
    /// Every file arrived (some may have failed: then `Failed` with the
    /// count), committed.
    Complete,
    /// Cancelled by the sender (`cancel`) or here (`share cancel`).
    Cancelled(String),
    /// The sender stopped uploading.
    Abandoned,
}

impl Receiving {
    /// A receiver on `intake`, refusing impostors of what `trust` holds;
    /// `state_dir` keeps the staging key of the running session (staged
    /// data a previous run left is removed now).
    pub fn new(
        intake: Arc<Intake>,
        trust: TrustStore,
        identity: Identity,
        state_dir: &Path,
    ) -> Self {
        let receiving = Self {
            intake,
            trust,
            identity,
            slot: Mutex::new(Slot::Free),
            state_dir: state_dir.to_owned(),
        };
        receiving.forget_crashed_session();
        receiving
    }

    fn forget_crashed_session(&self) {
        let path = self.state_dir.join(STAGING_FILE);
        let Ok(key) = std::fs::read_to_string(&path) else {
            return;
        };
        let key = key.trim();
        if !key.is_empty() {
            match self.intake.download().discard(key) {
                Ok(true) => tracing::info!("removed a LocalSend session's data left by a crash"),
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot remove a crashed LocalSend session's data: {e}"),
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers a `prepare-upload` of `offer` from `caller`. Waits for
    /// consent; dropping the returned future (the sender hung up) ends the
    /// wait as "sender went away".
    ///
    /// # Errors
    /// [`PrepareError`].
    pub async fn prepare(
        self: &Arc<Self>,
        caller: Caller,
        offer: wire::Offer,
    ) -> Result<Prepared, PrepareError> {
        let sender = Sender {
            id: caller.fingerprint,
            address: caller.ip,
            name: offer.sender.alias.clone(),
            transport: TransportKind::LocalSend,
        };
        if let Some(trusted) = self.trust.impostor_of(&sender.name, &sender.id) {
            tracing::warn!(name = %sender.name, fingerprint = %sender.id.to_hex(), trusted = %trusted.id,
                "REFUSED: a LocalSend device uses the name of a trusted device with another certificate");
            return Err(PrepareError::Impostor(sender.name));
        }
        let cancel = CancellationToken::new();
        {
            let mut slot = self.lock();
            if !matches!(*slot, Slot::Free) {
                return Err(PrepareError::Busy);
            }
            *slot = Slot::Pending {
                ip: caller.ip,
                fingerprint: caller.fingerprint,
                cancel: cancel.clone(),
            };
        }
        // The decision runs in its own task, so a sender that hangs up
        // (which drops this future) still gets its offer recorded as
        // ended; `hung_up` tells that task.
        let hung_up = CancellationToken::new();
        let _guard = hung_up.clone().drop_guard();
        let (tx, rx) = oneshot::channel();
        let this = self.clone();
        let sender_addr = SocketAddr::new(caller.ip, offer.sender.port);
        tokio::spawn(async move {
            let result = this
                .decide(sender, sender_addr, offer.offered, cancel, hung_up)
                .await;
            if let Err(Ok(Prepared::Session(answer))) = tx.send(result) {
                // Accepted after the sender hung up: nobody will upload.
                this.end_by_id(&answer.session_id, Ending::Abandoned).await;
            }
        });
        rx.await
            .map_err(|_| PrepareError::Local("the offer was dropped".into()))?
    }

    async fn decide(
        self: &Arc<Self>,
        sender: Sender,
        sender_addr: SocketAddr,
        offered: wire::Offered,
        cancel: CancellationToken,
        hung_up: CancellationToken,
    ) -> Result<Prepared, PrepareError> {
        let gone = async {
            tokio::select! {
                () = cancel.cancelled() => SenderGone::Cancelled("cancelled by the sender".into()),
                () = hung_up.cancelled() => SenderGone::Lost("the sender closed the connection".into()),
            }
        };
        let result = match offered {
            wire::Offered::Text(text) => self.text(&sender, &text, gone).await,
            wire::Offered::Files(files) => self.files(&sender, sender_addr, files, gone).await,
        };
        let mut slot = self.lock();
        if matches!(*slot, Slot::Pending { .. }) {
            *slot = Slot::Free;
        }
        result
    }

    async fn text(
        &self,
        sender: &Sender,
        text: &str,
        gone: impl Future<Output = SenderGone>,
    ) -> Result<Prepared, PrepareError> {
        let handle = self.intake.register(sender, Offer::Text(text));
        self.intake
            .consent(sender, Offer::Text(text), &handle, gone)
            .await
            .map_err(PrepareError::Declined)?;
        match self.intake.deliver_text(&handle, sender, text) {
            Ok(_) => {
                handle.finish(State::Done, None);
                Ok(Prepared::Nothing)
            }
            Err(e) => {
                handle.finish(State::Failed, Some(e.to_string()));
                Err(PrepareError::Local(e.to_string()))
            }
        }
    }

    async fn files(
        self: &Arc<Self>,
        sender: &Sender,
        sender_addr: SocketAddr,
        files: Vec<OfferedFile>,
        gone: impl Future<Output = SenderGone>,
    ) -> Result<Prepared, PrepareError> {
        let manifest = manifest(&files);
        let plan = self.intake.check_files(&manifest, 0)?;
        let handle = self.intake.register(sender, Offer::Files(&manifest));
        self.intake
            .consent(sender, Offer::Files(&manifest), &handle, gone)
            .await
            .map_err(PrepareError::Declined)?;
        let key = format!("ls{}", random_hex(12));
        if let Err(e) = std::fs::write(self.state_dir.join(STAGING_FILE), &key) {
            tracing::warn!("cannot note the LocalSend staging key: {e}");
        }
        let download = self.intake.download().clone();
        let staged = {
            let key = key.clone();
            tokio::task::spawn_blocking(move || download.stage(&plan, &manifest, &key)).await
        };
        let staging = match staged {
            Ok(Ok(staging)) => staging,
            Ok(Err(e)) => return Err(self.failed_to_stage(&handle, &e.to_string())),
            Err(e) => return Err(self.failed_to_stage(&handle, &e.to_string())),
        };
        handle.active();
        let mut tokens = std::collections::BTreeMap::new();
        let slots = files
            .into_iter()
            .enumerate()
            .map(|(index, file)| {
                let token = random_hex(16);
                tokens.insert(file.id.clone(), token.clone());
                let slot = FileSlot {
                    index: index as u32,
                    token,
                    size: file.size,
                    sha256: file.sha256,
                    modified: file.modified.and_then(to_system_time),
                    state: FileState::Waiting,
                    tries: 0,
                };
                (file.id, slot)
            })
            .collect();
        let session = Arc::new(Session {
            id: random_hex(16),
            ip: sender_addr.ip(),
            sender: sender.clone(),
            sender_addr,
            handle,
            ended: CancellationToken::new(),
            key,
            state: Mutex::new(SessionState {
                files: slots,
                staging: Some(staging),
                uploading: 0,
                last_activity: Instant::now(),
            }),
        });
        *self.lock() = Slot::Active(session.clone());
        tokio::spawn(self.clone().watch(session.clone()));
        tracing::info!(id = session.handle.id(), from = %sender.name, "LocalSend upload session started");
        Ok(Prepared::Session(PrepareResponse {
            session_id: session.id.clone(),
            files: tokens,
        }))
    }

    fn failed_to_stage(&self, handle: &Handle, reason: &str) -> PrepareError {
        handle.finish(State::Failed, Some(reason.to_owned()));
        let _ = std::fs::remove_file(self.state_dir.join(STAGING_FILE));
        PrepareError::Local(format!("cannot prepare the download directory: {reason}"))
    }

    /// Ends a session that stops uploading, or that `share cancel` ends.
    async fn watch(self: Arc<Self>, session: Arc<Session>) {
        let cancelled = session.handle.cancelled();
        loop {
            let idle_until = {
                let state = session.lock();
                (state.uploading == 0).then(|| state.last_activity + SESSION_IDLE)
            };
            let wake = idle_until.unwrap_or_else(|| Instant::now() + SESSION_IDLE);
            tokio::select! {
                () = session.ended.cancelled() => return,
                () = cancelled.cancelled() => {
                    let _ = self.end(&session, Ending::Cancelled("cancelled on this device".into())).await;
                    self.tell_sender_cancelled(&session).await;
                    return;
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            let idle = {
                let state = session.lock();
                state.uploading == 0 && state.last_activity.elapsed() >= SESSION_IDLE
            };
            if idle {
                let _ = self.end(&session, Ending::Abandoned).await;
                return;
            }
        }
    }

    /// Answers an `upload`.
    pub async fn upload(&self, caller: Caller, request: Request<Incoming>) -> Response<ServerBody> {
        let query = wire::parse_query(request.uri().query().unwrap_or_default());
        let (Some(session_id), Some(file_id), Some(token)) = (
            wire::query_value(&query, "sessionId"),
            wire::query_value(&query, "fileId"),
            wire::query_value(&query, "token"),
        ) else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "missing sessionId, fileId or token",
            );
        };
        let session = match &*self.lock() {
            Slot::Active(session) if session.id == session_id => session.clone(),
            _ => return invalid_token(),
        };
        if session.ip != caller.ip || session.sender.id != caller.fingerprint {
            tracing::warn!(ip = %caller.ip, "LocalSend upload with a session's token from another address or certificate");
            return invalid_token();
        }
        let (index, size, sha256) = {
            let mut state = session.lock();
            let Some(file) = state.files.get_mut(file_id) else {
                return invalid_token();
            };
            if !same_token(&file.token, token) || file.state != FileState::Waiting {
                return invalid_token();
            }
            file.state = FileState::Uploading;
            file.tries += 1;
            let (index, size, sha256) = (file.index, file.size, file.sha256);
            state.uploading += 1;
            state.last_activity = Instant::now();
            (index, size, sha256)
        };
        let outcome = if http::content_length(&request).is_some_and(|n| n != size) {
            Err(Failure::Length(format!(
                "Content-Length differs from the {size} bytes the offer announced"
            )))
        } else {
            match session.writer(index) {
                Ok(writer) => receive_file(&session, writer, size, request.into_body()).await,
                Err(e) => Err(Failure::Local(e.to_string())),
            }
        };
        self.finish_upload(&session, file_id, sha256, outcome).await
    }

    async fn finish_upload(
        &self,
        session: &Arc<Session>,
        file_id: &str,
        sha256: Option<[u8; 32]>,
        outcome: Result<(FileWriter, [u8; 32]), Failure>,
    ) -> Response<ServerBody> {
        let (status, message, complete) = {
            let mut state = session.lock();
            state.uploading -= 1;
            state.last_activity = Instant::now();
            let SessionState { files, staging, .. } = &mut *state;
            let Some(file) = files.get_mut(file_id) else {
                return invalid_token();
            };
            let (status, message) = match outcome {
                Ok((writer, digest)) if sha256.is_none_or(|want| want == digest) => {
                    let accepted = match staging {
                        Some(staging) => staging
                            .accept_file(writer, file.modified)
                            .map_err(|e| e.to_string()),
                        None => Err("the session has ended".to_owned()),
                    };
                    match accepted {
                        Ok(()) => {
                            file.state = FileState::Done;
                            (StatusCode::OK, String::new())
                        }
                        Err(e) => {
                            file.state = FileState::Failed;
                            (StatusCode::INTERNAL_SERVER_ERROR, e)
                        }
                    }
                }
                Ok(_) => {
                    let left = MAX_TRIES.saturating_sub(file.tries);
                    file.state = if left > 0 {
                        FileState::Waiting
                    } else {
                        FileState::Failed
                    };
                    tracing::warn!(
                        id = session.handle.id(),
                        file = file.index,
                        left,
                        "LocalSend upload does not match its SHA-256"
                    );
                    (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("checksum mismatch; {left} tries left"),
                    )
                }
                Err(failure) => {
                    file.state = FileState::Failed;
                    (failure.status(), failure.to_string())
                }
            };
            if file.state == FileState::Failed
                && let Some(staging) = staging
                && let Err(e) = staging.leave_out(file.index)
            {
                tracing::warn!("cannot remove a failed LocalSend file: {e}");
            }
            let complete = files
                .values()
                .all(|f| matches!(f.state, FileState::Done | FileState::Failed));
            (status, message, complete)
        };
        if !complete {
            return refuse_or_ok(status, &message);
        }
        match self.end(session, Ending::Complete).await {
            Ok(()) => refuse_or_ok(status, &message),
            // This upload was fine, but the files could not be placed.
            Err(e) if status == StatusCode::OK => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e),
            Err(_) => refuse_or_ok(status, &message),
        }
    }

    async fn end_by_id(&self, session_id: &str, ending: Ending) {
        let session = match &*self.lock() {
            Slot::Active(session) if session.id == session_id => session.clone(),
            _ => return,
        };
        let _ = self.end(&session, ending).await;
    }

    /// Ends `session` (once): commits what arrived intact, or discards it;
    /// records the outcome; frees the slot. `Err` says why the commit
    /// failed.
    async fn end(&self, session: &Arc<Session>, ending: Ending) -> Result<(), String> {
        let (staging, failed, total) = {
            let mut state = session.lock();
            if session.ended.is_cancelled() {
                return Ok(());
            }
            session.ended.cancel();
            let failed = state
                .files
                .values()
                .filter(|f| f.state != FileState::Done)
                .count();
            (state.staging.take(), failed, state.files.len())
        };
        {
            let mut slot = self.lock();
            if matches!(&*slot, Slot::Active(s) if Arc::ptr_eq(s, session)) {
                *slot = Slot::Free;
            }
        }
        let handle = &session.handle;
        let committed = match (staging, &ending) {
            (Some(mut staging), Ending::Complete | Ending::Abandoned) if failed < total => {
                // Whatever did not arrive intact stays out.
                let left_out: Vec<u32> = session
                    .lock()
                    .files
                    .values()
                    .filter(|f| f.state != FileState::Done)
                    .map(|f| f.index)
                    .collect();
                let result = tokio::task::spawn_blocking(move || {
                    for index in left_out {
                        staging.leave_out(index)?;
                    }
                    staging.commit()
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e: StoreError| e.to_string()));
                Some(result)
            }
            // Nothing (or nothing wanted) to keep: dropping removes it.
            (staging, _) => {
                drop(staging);
                None
            }
        };
        let _ = std::fs::remove_file(self.state_dir.join(STAGING_FILE));
        let (state, reason) = match (&ending, &committed) {
            (_, Some(Err(e))) => (State::Failed, Some(format!("cannot save the files: {e}"))),
            (Ending::Cancelled(reason), _) => (State::Cancelled, Some(reason.clone())),
            (Ending::Complete, _) if failed == 0 => (State::Done, None),
            (Ending::Complete, _) => (
                State::Failed,
                Some(format!(
                    "{failed} of {total} files did not arrive intact{}",
                    saved_note(failed, total)
                )),
            ),
            (Ending::Abandoned, _) => (
                State::Failed,
                Some(format!(
                    "the sender stopped with {failed} of {total} files missing{}",
                    saved_note(failed, total)
                )),
            ),
        };
        match &committed {
            Some(Ok(names)) => tracing::info!(id = handle.id(), ?names, key = %session.key,
                "received from {} over LocalSend", session.sender.name),
            _ => tracing::info!(
                id = handle.id(),
                ?reason,
                "LocalSend session from {} ended",
                session.sender.name
            ),
        }
        handle.finish(state, reason.clone());
        match committed {
            Some(Err(_)) => Err(reason.unwrap_or_default()),
            _ => Ok(()),
        }
    }

    /// Answers a `cancel` from `caller`. Returns whether it ended one of
    /// our sessions (otherwise it may be about one of our sends).
    pub async fn cancel(&self, caller: Caller, session_id: Option<&str>) -> bool {
        let session = {
            let slot = self.lock();
            match &*slot {
                Slot::Pending {
                    ip,
                    fingerprint,
                    cancel,
                } if *ip == caller.ip && *fingerprint == caller.fingerprint => {
                    cancel.cancel();
                    return true;
                }
                Slot::Active(session)
                    if Some(session.id.as_str()) == session_id
                        && session.ip == caller.ip
                        && session.sender.id == caller.fingerprint =>
                {
                    session.clone()
                }
                _ => return false,
            }
        };
        let _ = self
            .end(
                &session,
                Ending::Cancelled("cancelled by the sender".into()),
            )
            .await;
        true
    }
}

impl Receiving {
    /// Tells the sender's own server that we ended its session, as
    /// LocalSend does (`cancel` with our session ID), so an idle sender
    /// learns it at once; a busy one also gets 403 for its next upload.
    /// Best effort: its certificate is pinned, failures are only logged.
    async fn tell_sender_cancelled(&self, session: &Session) {
        let addr = session.sender_addr;
        let path = format!(
            "/api/localsend/v2/cancel?sessionId={}",
            wire::percent_encode(&session.id)
        );
        let told = client::post(&self.identity, addr, Some(session.sender.id), &path, None).await;
        if let Err(e) = told {
            tracing::debug!(%addr, "cannot tell the LocalSend sender of the cancel: {e}");
        }
    }
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self, index: u32) -> Result<FileWriter, StoreError> {
        match &self.lock().staging {
            Some(staging) => staging.file_writer(index),
            None => Err(StoreError::Aborted),
        }
    }
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The body's length is not the announced size.
    #[error("{0}")]
    Length(String),
    /// The body could not be read.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// Writing failed here.
    #[error("{0}")]
    Local(String),
    /// The session ended meanwhile.
    #[error("the session has ended")]
    Ended,
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Self::Length(_) => StatusCode::BAD_REQUEST,
            Self::Body(e) => e.status(),
            Self::Local(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Ended => StatusCode::FORBIDDEN,
        }
    }
}

/// Streams an upload body into `writer` on a blocking thread, hashing it.
/// Returns the writer (all `size` bytes written) and the SHA-256.
async fn receive_file(
    session: &Session,
    writer: FileWriter,
    size: u64,
    mut body: Incoming,
) -> Result<(FileWriter, [u8; 32]), Failure> {
    let (tx, rx) = mpsc::channel::<Bytes>(UPLOAD_PIPELINE);
    let (done, sent) = session.handle.counters();
    let disk = tokio::task::spawn_blocking(move || {
        write_file(writer, rx, |n| {
            done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        })
    });
    let mut received = 0u64;
    let network: Result<(), Failure> = async {
        loop {
            let chunk = tokio::select! {
                chunk = http::next_frame(&mut body) => chunk?,
                () = session.ended.cancelled() => return Err(Failure::Ended),
            };
            let Some(chunk) = chunk else { return Ok(()) };
            received += chunk.len() as u64;
            if received > size {
                return Err(Failure::Length(format!(
                    "body longer than the {size} bytes the offer announced"
                )));
            }
            if tx.send(chunk).await.is_err() {
                // The writer stopped; its result says why.
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    let written = disk
        .await
        .map_err(|e| Failure::Local(format!("writer task failed: {e}")))?;
    network?;
    let (writer, digest) = written.map_err(|e| Failure::Local(e.to_string()))?;
    if writer.written() != size {
        return Err(Failure::Length(format!(
            "body of {} bytes, shorter than the {size} bytes the offer announced",
            writer.written()
        )));
    }
    Ok((writer, digest))
}

/// Blocking: writes what arrives on `rx` in [`WRITE_SIZE`] pieces and
/// hashes it; `progress` hears of every piece written.
fn write_file(
    mut writer: FileWriter,
    mut rx: mpsc::Receiver<Bytes>,
    progress: impl Fn(u64),
) -> Result<(FileWriter, [u8; 32]), StoreError> {
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut pending: Vec<u8> = Vec::with_capacity(WRITE_SIZE);
    let flush = |writer: &mut FileWriter, pending: &mut Vec<u8>| {
        if pending.is_empty() {
            return Ok(());
        }
        writer.write(pending)?;
        progress(pending.len() as u64);
        pending.clear();
        Ok::<(), StoreError>(())
    };
    while let Some(chunk) = rx.blocking_recv() {
        hash.update(&chunk);
        if pending.len() + chunk.len() > WRITE_SIZE {
            flush(&mut writer, &mut pending)?;
        }
        if chunk.len() >= WRITE_SIZE {
            writer.write(&chunk)?;
            progress(chunk.len() as u64);
        } else {
            pending.extend_from_slice(&chunk);
        }
    }
    flush(&mut writer, &mut pending)?;
    let mut digest = [0u8; 32];
    digest.copy_from_slice(hash.finish().as_ref());
    Ok((writer, digest))
}

/// What became of the files that did arrive, for a failure's reason.
fn saved_note(failed: usize, total: usize) -> &'static str {
    if failed < total {
        "; the others were saved"
    } else {
        ""
    }
}

/// Builds the manifest of a LocalSend offer: one file entry per offered
/// file (folders are implied by the paths), tagged with its SHA-256 when
/// given. Two files with the same name (LocalSend senders allow it) get
/// ` (1)`, ` (2)` suffixes here, as they would on disk.
fn manifest(files: &[OfferedFile]) -> Manifest {
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    let entries = files
        .iter()
        .map(|file| {
            let mut path = file.name.clone();
            let (dir, name) = match file.name.rsplit_once('/') {
                Some((dir, name)) => (format!("{dir}/"), name),
                None => (String::new(), file.name.as_str()),
            };
            let mut n = 0;
            while !taken.insert(path.to_lowercase()) {
                n += 1;
                path = format!("{dir}{}", crate::store::numbered_name(name, n, false));
            }
            Entry {
                path,
                kind: EntryKind::File {
                    size: file.size,
                    tag: file.sha256.unwrap_or([0; 32]),
                },
            }
        })
        .collect();
    let sizes: Vec<u64> = files.iter().map(|f| f.size).collect();
    Manifest {
        entries,
        block_size: choose_block_size(&sizes),
    }
}

fn to_system_time(t: wire::Timestamp) -> Option<SystemTime> {
    let nanos = Duration::from_nanos(u64::from(t.nanos));
    if t.secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(t.secs as u64) + nanos)
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
            .and_then(|t| t.checked_add(nanos))
    }
}

/// `bytes` random bytes as hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // Without a working system RNG no token could be trusted; ring's
    // SystemRandom reads getrandom(2), which does not fail on Linux.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Token comparison in time independent of where they differ.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn invalid_token() -> Response<ServerBody> {
    refuse(StatusCode::FORBIDDEN, "invalid session, token or address")
}

fn refuse(status: StatusCode, message: &str) -> Response<ServerBody> {
    http::json(status, wire::error_body(message))
}

fn refuse_or_ok(status: StatusCode, message: &str) -> Response<ServerBody> {
    if status == StatusCode::OK {
        http::empty(StatusCode::OK)
    } else {
        refuse(status, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: &str, name: &str, size: u64) -> OfferedFile {
        OfferedFile {
            id: id.into(),
            name: name.into(),
            size,
            mime: "application/octet-stream".into(),
            sha256: None,
            modified: None,
        }
    }

    #[test]
    fn duplicate_names_in_one_offer_are_numbered_not_refused() {
        let files = [
            file("a", "IMG_1.jpg", 1),
            file("b", "img_1.JPG", 2),
            file("c", "Album/x.png", 3),
            file("d", "Album/x.png", 4),
            file("e", "IMG_1.jpg", 5),
            file("f", "my.dir/notes", 6),
            file("g", "my.dir/notes", 7),
        ];
        let manifest = manifest(&files);
        let paths: Vec<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "IMG_1.jpg",
                "img_1 (1).JPG",
                "Album/x.png",
                "Album/x (1).png",
                "IMG_1 (2).jpg",
                "my.dir/notes",
                "my.dir/notes (1)"
            ]
        );
        assert!(
            crate::store::plan(&manifest, 16).is_ok(),
            "the store accepts it"
        );
        assert_eq!(manifest.total_bytes(), 28);
    }

    #[test]
    fn times_before_and_after_the_epoch_convert() {
        let t = |secs, nanos| to_system_time(wire::Timestamp { secs, nanos });
        assert_eq!(t(0, 0), Some(SystemTime::UNIX_EPOCH));
        assert_eq!(
            t(-1, 500_000_000),
            Some(SystemTime::UNIX_EPOCH - Duration::from_millis(500))
        );
        assert_eq!(
            t(1_700_000_000, 1),
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 1))
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert_eq!(random_hex(16).len(), 32);
        assert_ne!(random_hex(16), random_hex(16));
    }
}
