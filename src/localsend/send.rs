//! Sending to LocalSend apps: `prepare-upload`, one `upload` per file,
//! `cancel` when the user cancels.
//!
//! Runs on one HTTPS connection whose certificate is pinned to the
//! device's fingerprint (from discovery or the trust store); the outgoing
//! service ([`crate::outgoing`]) registers the transfer and turns the
//! result into `share send`'s answer, as for a native send.
//!
//! * Every file's SHA-256 is computed before the offer (LocalSend wants
//!   it in `prepare-upload`); the file's version is checked before and
//!   after it is read, so a file that changes while it is being sent fails
//!   the send instead of arriving torn.
//! * `prepare-upload` carries the PIN (`--pin`) and the files' names (a
//!   folder's files as `folder/sub/name`), sizes, MIME types, hashes and
//!   modification times. The answer: 200 with a token per accepted file,
//!   204 (nothing to send, or a text delivered), or a refusal that
//!   [`refusal`] turns into a clear error (401 PIN, 403 rejected, 409 busy,
//!   429 too many PINs).
//! * Uploads use `Content-Length` (some receivers mishandle chunked
//!   bodies), one file after the other, read in [`CHUNK`]-sized pieces; a
//!   422 (checksum mismatch) is retried with the same token up to
//!   [`MAX_TRIES`] tries.
//! * A cancel here sends `cancel` with the session ID; a `cancel` from the
//!   receiver (to our server, see [`RemoteCancels`]) stops the uploads.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Request, StatusCode, header};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{self, MAX_ANSWER};
use super::http::{self, ClientError, Connection};
use super::receive::MAX_TRIES;
use super::wire::{self, OutFile, OutMetadata, PrepareResponse, SelfInfo, Timestamp};
use crate::identity::{DeviceId, Identity};
use crate::protocol::{EntryKind, ErrorCode};
use crate::registry::Handle;
use crate::safe_text::{CleanText, PeerName};
use crate::transfer::source::{OfferedFile, Source, Version};
use crate::transfer::{SessionEvent, TransferError};

/// Bytes read from a file per piece of an upload body.
pub const CHUNK: usize = 256 << 10;

/// Pieces of an upload buffered ahead of the network.
const READ_AHEAD: usize = 4;

/// How long an upload may make no progress before it is abandoned.
const UPLOAD_STALL: Duration = Duration::from_secs(30);

/// How long a receiver may take to answer an upload whose body it has
/// (it syncs the files to disk before it answers the last one).
const ANSWER_WAIT: Duration = Duration::from_secs(600);

/// The sessions of our sends, by receiver address and the session ID it
/// gave us, so a `cancel` the receiver sends to our server stops the
/// right send.
#[derive(Debug, Default)]
pub struct RemoteCancels {
    sessions: Mutex<HashMap<(IpAddr, String), CancellationToken>>,
}

impl RemoteCancels {
    fn insert(&self, ip: IpAddr, session: &str) -> (CancellationToken, RemoteGuard<'_>) {
        let token = CancellationToken::new();
        self.lock().insert((ip, session.to_owned()), token.clone());
        let guard = RemoteGuard {
            cancels: self,
            key: (ip, session.to_owned()),
        };
        (token, guard)
    }

    /// A `cancel` from `ip` for `session`: stops that send. Returns
    /// whether there was one.
    pub fn cancel(&self, ip: IpAddr, session: &str) -> bool {
        match self.lock().remove(&(ip, session.to_owned())) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, String), CancellationToken>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct RemoteGuard<'a> {
    cancels: &'a RemoteCancels,
    key: (IpAddr, String),
}

impl Drop for RemoteGuard<'_> {
    fn drop(&mut self) {
        self.cancels.lock().remove(&self.key);
    }
}

/// What a send needs besides the connection.
pub struct Context<'a> {
    /// Our LocalSend identity (for the `cancel` connection).
    pub identity: &'a Identity,
    /// How we describe ourselves in `prepare-upload`.
    pub me: &'a SelfInfo,
    /// The receiver's name, for messages.
    pub peer: &'a PeerName,
    /// The PIN to present, if the user gave one.
    pub pin: Option<&'a str>,
    /// How long the receiver's user may take to answer.
    pub consent_timeout: Duration,
    /// Where the receiver's `cancel` reaches us.
    pub remote_cancels: &'a RemoteCancels,
}

/// What to send.
pub enum What<'a> {
    /// Files (directories are implied by the files' paths).
    Files(&'a Source),
    /// A text message.
    Text(&'a str),
}

/// Sends `what` over `connection`, counting progress on `handle` and
/// reporting the wait for consent on `events`.
///
/// # Errors
/// A [`TransferError`] with a message for the user.
pub async fn send(
    ctx: &Context<'_>,
    connection: &mut Connection,
    what: What<'_>,
    handle: &Handle,
    events: &mpsc::UnboundedSender<SessionEvent>,
) -> Result<(), TransferError> {
    let cancel = handle.cancelled();
    let (files, sources) = match what {
        What::Files(source) => {
            let offered = tokio::select! {
                r = describe(source, cancel.clone()) => r?,
                () = cancel.cancelled() => return Err(TransferError::Cancelled),
            };
            offered.into_iter().unzip()
        }
        What::Text(text) => (vec![text_file(text)], vec![None]),
    };
    let mut path = "/api/localsend/v2/prepare-upload".to_owned();
    if let Some(pin) = ctx.pin {
        path.push_str(&format!("?pin={}", wire::percent_encode(pin)));
    }
    let addr = connection.addr();
    let peer = (addr, connection.fingerprint);
    let body = wire::prepare_body(ctx.me, &files);
    let request = client::post_request(addr, &path, Some(body)).map_err(link)?;
    let _ = events.send(SessionEvent::Waiting);
    // On a cancel or timeout the receiver is told before the request is
    // dropped: a dropped connection would read as "sender went away".
    let answer = {
        let asked = tokio::time::timeout(ctx.consent_timeout, connection.send(request, MAX_ANSWER));
        tokio::pin!(asked);
        tokio::select! {
            r = &mut asked => match r {
                Ok(answer) => answer.map_err(link)?,
                Err(_) => {
                    cancel_remote(ctx, peer, None).await;
                    return Err(TransferError::Rejected {
                        peer: ctx.peer.clone(),
                        reason: CleanText::from(format!(
                            "not accepted within {} s",
                            ctx.consent_timeout.as_secs()
                        )),
                    });
                }
            },
            () = cancel.cancelled() => {
                cancel_remote(ctx, peer, None).await;
                return Err(TransferError::Cancelled);
            }
        }
    };
    let session = match answer.0 {
        StatusCode::OK => PrepareResponse::parse(&answer.1)
            .map_err(|e| TransferError::Protocol(format!("{} answered: {e}", ctx.peer)))?,
        StatusCode::NO_CONTENT => {
            let _ = events.send(SessionEvent::Accepted);
            return Ok(());
        }
        status => return Err(refusal(ctx.peer, status, &answer.1, ctx.pin.is_some())),
    };
    let _ = events.send(SessionEvent::Accepted);
    let (remote_cancel, _guard) = ctx.remote_cancels.insert(addr.ip(), &session.session_id);
    let uploads = upload_all(ctx, connection, &session, &files, &sources, handle);
    tokio::pin!(uploads);
    tokio::select! {
        r = &mut uploads => r,
        () = cancel.cancelled() => {
            cancel_remote(ctx, peer, Some(&session.session_id)).await;
            Err(TransferError::Cancelled)
        }
        () = remote_cancel.cancelled() => Err(TransferError::Peer {
            peer: ctx.peer.clone(),
            code: ErrorCode::Cancelled,
            message: CleanText::from("cancelled"),
        }),
    }
}

async fn upload_all(
    ctx: &Context<'_>,
    connection: &mut Connection,
    session: &PrepareResponse,
    files: &[OutFile],
    sources: &[Option<OfferedFile>],
    handle: &Handle,
) -> Result<(), TransferError> {
    for (file, source) in files.iter().zip(sources) {
        let Some(token) = session.files.get(&file.id) else {
            // The receiver did not want this one.
            continue;
        };
        let query = format!(
            "/api/localsend/v2/upload?sessionId={}&fileId={}&token={}",
            wire::percent_encode(&session.session_id),
            wire::percent_encode(&file.id),
            wire::percent_encode(token)
        );
        let mut tries = 0;
        loop {
            tries += 1;
            let before = handle.bytes_done();
            if connection.is_closed() {
                // A receiver may answer early (a 422 before the whole
                // body) and close; the next upload needs a new connection.
                let (addr, pinned) = (connection.addr(), connection.fingerprint);
                *connection = client::connect(ctx.identity, addr, Some(pinned))
                    .await
                    .map_err(link)?;
            }
            let (status, body) = upload(connection, &query, file, source.as_ref(), handle).await?;
            match status {
                StatusCode::OK | StatusCode::NO_CONTENT => break,
                StatusCode::UNPROCESSABLE_ENTITY if tries < MAX_TRIES => {
                    tracing::warn!(file = %file.file_name, tries, "{} reports a checksum mismatch; sending the file again", ctx.peer);
                    handle.set_resumed(before);
                }
                StatusCode::UNPROCESSABLE_ENTITY => {
                    return Err(TransferError::Peer {
                        peer: ctx.peer.clone(),
                        code: ErrorCode::Integrity,
                        message: CleanText::from(format!(
                            "{} did not arrive intact in {MAX_TRIES} tries",
                            file.file_name
                        )),
                    });
                }
                status => return Err(upload_refusal(ctx.peer, status, &body)),
            }
        }
    }
    Ok(())
}

/// One upload of `file` (read from `source`, or the text in its preview).
async fn upload(
    connection: &mut Connection,
    path: &str,
    file: &OutFile,
    source: Option<&OfferedFile>,
    handle: &Handle,
) -> Result<(StatusCode, Bytes), TransferError> {
    let addr = connection.addr();
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    // Progress counts what hyper takes to send (a file's own text counts
    // when the send is done).
    let (done, sent) = handle.counters();
    let count = source.is_some();
    let body = http::stream_body(rx, file.size, move |n| {
        if count {
            done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let reader = match source {
        Some(offered) => {
            let offered = offered.clone();
            Some(tokio::task::spawn_blocking(move || {
                read_into(&offered, &tx)
            }))
        }
        None => {
            let text = file.preview.clone().unwrap_or_default();
            let _ = tx.try_send(Ok(Bytes::from(text)));
            None
        }
    };
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, file.size)
        .body(body)
        .map_err(|e| TransferError::Local(e.to_string()))?;
    let until = handle.bytes_done() + if count { file.size } else { 0 };
    let sent = answer_of(handle, until, connection.send(request, MAX_ANSWER)).await;
    // The reader's own failure (a changed file) explains a failed send.
    if let Some(reader) = reader {
        match reader.await {
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(TransferError::Local(format!("reader failed: {e}"))),
            Ok(Ok(())) => {}
        }
    }
    sent
}

/// Runs `send` to its answer. While the body goes out (until `handle`
/// counts `until` bytes), no progress for [`UPLOAD_STALL`] abandons it;
/// after that the receiver may take up to [`ANSWER_WAIT`] to answer (it
/// makes the files durable before it answers the last upload).
async fn answer_of(
    handle: &Handle,
    until: u64,
    send: impl Future<Output = Result<(StatusCode, Bytes), ClientError>>,
) -> Result<(StatusCode, Bytes), TransferError> {
    tokio::pin!(send);
    let mut last = handle.bytes_done();
    let mut waited = Duration::ZERO;
    loop {
        tokio::select! {
            r = &mut send => return r.map_err(link),
            () = tokio::time::sleep(UPLOAD_STALL) => {
                let now = handle.bytes_done();
                waited = if now == last { waited + UPLOAD_STALL } else { Duration::ZERO };
                last = now;
                let limit = if now >= until { ANSWER_WAIT } else { UPLOAD_STALL };
                if waited >= limit {
                    return Err(TransferError::Link(format!(
                        "no progress for {} s",
                        waited.as_secs()
                    )));
                }
            }
        }
    }
}

/// Blocking: reads all of `offered` into `tx` in [`CHUNK`]-sized pieces,
/// checking its version before and after.
fn read_into(
    offered: &OfferedFile,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<(), TransferError> {
    let changed = || {
        TransferError::Local(format!(
            "{} changed while being sent; send it again",
            offered.source.path.display()
        ))
    };
    let unchanged = || match Version::of(&offered.source.file) {
        Ok(now) if now == offered.version => Ok(()),
        _ => Err(changed()),
    };
    unchanged()?;
    let size = offered.version.size();
    let mut offset = 0u64;
    while offset < size {
        let len = CHUNK.min((size - offset) as usize);
        let mut buf = vec![0u8; len];
        if let Err(e) = offered.source.file.read_exact_at(&mut buf, offset) {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            return Err(TransferError::Local(format!(
                "cannot read {}: {e}",
                offered.source.path.display()
            )));
        }
        offset += len as u64;
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            // The request ended; its result says why.
            return Ok(());
        }
    }
    if let Err(e) = unchanged() {
        let _ = tx.blocking_send(Err(std::io::Error::other("the file changed")));
        return Err(e);
    }
    Ok(())
}

/// The files of `source` for `prepare-upload`, with their SHA-256 (read on
/// a blocking thread; `cancel` stops it).
async fn describe(
    source: &Source,
    cancel: CancellationToken,
) -> Result<Vec<(OutFile, Option<OfferedFile>)>, TransferError> {
    let mut todo = Vec::new();
    for (n, (entry, file)) in source
        .manifest
        .entries
        .iter()
        .zip(&source.files)
        .enumerate()
    {
        if let (EntryKind::File { size, .. }, Some(offered)) = (&entry.kind, file) {
            todo.push((n, entry.path.clone(), *size, offered.clone()));
        }
    }
    tokio::task::spawn_blocking(move || {
        todo.into_iter()
            .map(|(n, path, size, offered)| {
                let sha256 = sha256_of(&offered, &cancel)?;
                let modified = offered.version.modified().map(|(secs, nanos)| OutMetadata {
                    modified: Timestamp { secs, nanos }.format(),
                });
                let file = OutFile {
                    id: n.to_string(),
                    file_type: mime_type(&path).to_owned(),
                    file_name: path,
                    size,
                    sha256: Some(sha256),
                    preview: None,
                    metadata: modified,
                };
                Ok((file, Some(offered)))
            })
            .collect()
    })
    .await
    .map_err(|e| TransferError::Local(format!("hashing failed: {e}")))?
}

/// Lower-case hex SHA-256 of an open file, checking its version.
fn sha256_of(offered: &OfferedFile, cancel: &CancellationToken) -> Result<String, TransferError> {
    let path = offered.source.path.display();
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let size = offered.version.size();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < size {
        if cancel.is_cancelled() {
            return Err(TransferError::Cancelled);
        }
        let len = buf.len().min((size - offset) as usize);
        offered
            .source
            .file
            .read_exact_at(&mut buf[..len], offset)
            .map_err(|e| TransferError::Local(format!("cannot read {path}: {e}")))?;
        hash.update(&buf[..len]);
        offset += len as u64;
    }
    match Version::of(&offered.source.file) {
        Ok(now) if now == offered.version => {}
        _ => {
            return Err(TransferError::Local(format!(
                "{path} changed while being sent; send it again"
            )));
        }
    }
    Ok(hash
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A text message: one `text/plain` file whose preview is the text.
fn text_file(text: &str) -> OutFile {
    OutFile {
        id: "0".into(),
        file_name: "message.txt".into(),
        size: text.len() as u64,
        file_type: "text/plain".into(),
        sha256: None,
        preview: Some(text.to_owned()),
        metadata: None,
    }
}

/// The MIME type LocalSend apps use to pick an icon and a viewer.
fn mime_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "txt" => "text/plain",
        "apk" => "application/vnd.android.package-archive",
        _ => "application/octet-stream",
    }
}

/// Tells the receiver at `addr` we cancel (best effort, on a connection
/// of its own, pinned to `fingerprint`).
async fn cancel_remote(
    ctx: &Context<'_>,
    (addr, fingerprint): (SocketAddr, DeviceId),
    session: Option<&str>,
) {
    let path = match session {
        Some(id) => format!(
            "/api/localsend/v2/cancel?sessionId={}",
            wire::percent_encode(id)
        ),
        None => "/api/localsend/v2/cancel".to_owned(),
    };
    let told = client::post(ctx.identity, addr, Some(fingerprint), &path, None).await;
    if let Err(e) = told {
        tracing::debug!(%addr, "cannot tell the LocalSend receiver of the cancel: {e}");
    }
}

/// A refused `prepare-upload`, in words for the user.
pub fn refusal(peer: &PeerName, status: StatusCode, body: &[u8], pin_given: bool) -> TransferError {
    let said = wire::error_message(body);
    let refused = |message: &str| TransferError::Peer {
        peer: peer.clone(),
        code: ErrorCode::Refused,
        message: CleanText::from(message),
    };
    match status {
        StatusCode::UNAUTHORIZED if pin_given => {
            refused("the PIN is wrong; check it on the receiving device")
        }
        StatusCode::UNAUTHORIZED => refused("it requires a PIN; send again with --pin PIN"),
        StatusCode::FORBIDDEN => TransferError::Rejected {
            peer: peer.clone(),
            reason: CleanText::from(said.unwrap_or_else(|| "rejected".into())),
        },
        StatusCode::CONFLICT => TransferError::Peer {
            peer: peer.clone(),
            code: ErrorCode::Busy,
            message: CleanText::from("it is busy with another transfer"),
        },
        StatusCode::TOO_MANY_REQUESTS => {
            refused("too many wrong PINs; wait a minute before trying again")
        }
        StatusCode::INSUFFICIENT_STORAGE => TransferError::Peer {
            peer: peer.clone(),
            code: ErrorCode::NoSpace,
            message: CleanText::from(said.unwrap_or_else(|| "not enough space".into())),
        },
        status => TransferError::Peer {
            peer: peer.clone(),
            code: if status.is_server_error() {
                ErrorCode::Io
            } else {
                ErrorCode::Refused
            },
            message: CleanText::from(format!(
                "answered HTTP {}{}",
                status.as_u16(),
                said.map(|m| format!(": {m}")).unwrap_or_default()
            )),
        },
    }
}

/// A refused `upload`: the receiver ended the session, or failed.
fn upload_refusal(peer: &PeerName, status: StatusCode, body: &[u8]) -> TransferError {
    let said = wire::error_message(body);
    match status {
        StatusCode::FORBIDDEN | StatusCode::CONFLICT | StatusCode::NOT_FOUND => {
            TransferError::Peer {
                peer: peer.clone(),
                code: ErrorCode::Cancelled,
                message: CleanText::from(said.unwrap_or_else(|| "cancelled".into())),
            }
        }
        status => TransferError::Peer {
            peer: peer.clone(),
            code: if status.is_server_error() {
                ErrorCode::Io
            } else {
                ErrorCode::Protocol
            },
            message: CleanText::from(format!(
                "answered HTTP {} to an upload{}",
                status.as_u16(),
                said.map(|m| format!(": {m}")).unwrap_or_default()
            )),
        },
    }
}

fn link(e: ClientError) -> TransferError {
    TransferError::Link(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_to_do() {
        let phone = PeerName::from("phone");
        let msg = |status, pin| refusal(&phone, status, b"", pin).to_string();
        assert!(
            msg(StatusCode::UNAUTHORIZED, false).contains("--pin"),
            "{}",
            msg(StatusCode::UNAUTHORIZED, false)
        );
        assert!(msg(StatusCode::UNAUTHORIZED, true).contains("PIN is wrong"));
        assert!(msg(StatusCode::TOO_MANY_REQUESTS, true).contains("wait a minute"));
        assert!(matches!(
            refusal(&phone, StatusCode::FORBIDDEN, &wire::error_body("no thanks"), false),
            TransferError::Rejected { reason, .. } if reason.as_str() == "no thanks"
        ));
        assert!(matches!(
            refusal(&phone, StatusCode::CONFLICT, b"", false),
            TransferError::Peer {
                code: ErrorCode::Busy,
                ..
            }
        ));
        assert!(matches!(
            upload_refusal(&phone, StatusCode::FORBIDDEN, b""),
            TransferError::Peer {
                code: ErrorCode::Cancelled,
                ..
            }
        ));
    }

    #[test]
    fn remote_cancels_reach_only_their_send() {
        let cancels = RemoteCancels::default();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let (token, guard) = cancels.insert(ip, "s1");
        assert!(
            !cancels.cancel("10.0.0.3".parse().unwrap(), "s1"),
            "another address"
        );
        assert!(!cancels.cancel(ip, "s2"), "another session");
        assert!(cancels.cancel(ip, "s1"));
        assert!(token.is_cancelled());
        drop(guard);
        assert!(cancels.lock().is_empty());
    }

    #[test]
    fn mime_types_by_extension() {
        assert_eq!(mime_type("Photos/IMG_1.JPG"), "image/jpeg");
        assert_eq!(mime_type("notes.txt"), "text/plain");
        assert_eq!(mime_type("Makefile"), "application/octet-stream");
    }
}
