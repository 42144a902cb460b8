//! The sending side: offer, wait for consent, stream data, wait for `Done`.
//!
//! Files are read on a blocking thread in [`MAX_DATA_CHUNK`]-sized chunks
//! straight into buffers that already hold room for the frame header, so
//! each chunk is written to the link with one call and never copied. The
//! reader hashes what it reads, block by block, and follows each block's
//! data with a `BlockValue` frame that the receiver checks its own hash
//! against: one pass over the data, and the first byte moves as soon as the
//! offer is accepted. It stops with an error if a file's version changed
//! since the offer, before or after reading each part. A bounded channel
//! between reader and writer keeps memory flat no matter how large the
//! files are.
//!
//! Success means the receiver's `Done`: every file verified, synced and
//! renamed into place. Nothing less makes `share send` exit 0.
//!
//! When the daemon stops, the session ends with
//! [`TransferError::Stopping`] (sent as `Error(Paused)`, so the receiver
//! keeps its data) without waiting for a slow link to take the frame being
//! written (`FRAME_GRACE`).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustix::buffer::spare_capacity;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::framed::{FrameReader, Framed, RecvError};
use super::handshake::kind;
use super::source::{OfferedFile, Source, Version};
use super::{SessionEvent, TransferError};
use crate::protocol::hash::BlockHasher;
use crate::protocol::{
    BLOCK_VALUE_FRAME_LEN, BlockRange, DATA_HEADER_LEN, EntryKind, MAX_DATA_CHUNK, Message,
    blocks_for, encode, encode_data_header,
};
use crate::registry::{Handle, StopCause};
use crate::safe_text::PeerName;

/// How long the sender waits for `Done` after the last byte: the receiver
/// verifies and syncs everything first, which can take a while on slow disks.
pub const DONE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a stopping daemon lets the frame being written finish: long
/// enough for a LAN to take a whole one (so the receiver is told
/// `Error(Paused)` after it), short enough that a slow link does not hold
/// up the stop; then the frame is cut (the receiver keeps its data either
/// way).
const FRAME_GRACE: Duration = Duration::from_millis(100);

/// How long a failed write waits for the receiver's explanation
/// ([`last_words`]).
const LAST_WORDS_WAIT: Duration = Duration::from_millis(500);

/// Chunks buffered between the disk reader and the network writer.
const PIPELINE_DEPTH: usize = 8;

/// Sends `source` over an authenticated link and waits for the receiver's
/// `Done`. `consent_timeout` bounds the wait for accept/reject.
pub async fn send(
    framed: &mut Framed,
    peer_name: &PeerName,
    source: &Source,
    handle: &Handle,
    consent_timeout: Duration,
    events: mpsc::UnboundedSender<SessionEvent>,
) -> Result<(), TransferError> {
    // `run` watches a user's cancel only between frames: cutting a frame
    // short would leave the `Error(Cancelled)` unsent (nothing may follow a
    // cut frame), and the receiver would see a broken link (and keep the
    // data for a resume) instead. The daemon's stop does cut a frame: the
    // receiver keeps its data either way.
    let result = run(framed, peer_name, source, handle, consent_timeout, events).await;
    if let Err(e) = &result
        && !matches!(
            e,
            TransferError::Rejected { .. } | TransferError::Peer { .. }
        )
    {
        framed.send_error(e).await;
    }
    result
}

async fn run(
    framed: &mut Framed,
    peer_name: &PeerName,
    source: &Source,
    handle: &Handle,
    consent_timeout: Duration,
    events: mpsc::UnboundedSender<SessionEvent>,
) -> Result<(), TransferError> {
    if framed.link().metadata {
        framed
            .send(&Message::Metadata(source.metadata.clone()))
            .await?;
    }
    framed
        .send(&Message::Offer(source.manifest.clone()))
        .await?;
    let _ = events.send(SessionEvent::Waiting);
    let cancel = handle.cancelled();
    let reply = tokio::select! {
        r = framed.recv_within(consent_timeout) => r.map_err(|e| no_answer(e, peer_name))?,
        () = cancel.cancelled() => return Err(TransferError::interrupted(handle)),
    };
    let need = match reply {
        Message::Accept { need } => need,
        Message::Reject { reason } => {
            return Err(TransferError::Rejected {
                peer: peer_name.clone(),
                reason: reason.clean(),
            });
        }
        Message::Error { code, message } => {
            return Err(TransferError::Peer {
                peer: peer_name.clone(),
                code,
                message: message.clean(),
            });
        }
        other => {
            return Err(TransferError::Protocol(format!(
                "expected Accept or Reject, got {}",
                kind(&other)
            )));
        }
    };
    let segments = plan_segments(source, &need)?;
    let needed: u64 = segments.iter().map(|s| s.len).sum();
    handle.set_resumed(source.manifest.total_bytes().saturating_sub(needed));
    let _ = events.send(SessionEvent::Accepted);

    let (tx, mut rx) = mpsc::channel::<Result<Frame, TransferError>>(PIPELINE_DEPTH);
    let block_size = source.manifest.block_size;
    let reader = tokio::task::spawn_blocking(move || read_segments(segments, block_size, &tx));

    let (mut from_peer, mut to_peer) = framed.halves();
    let mut written = 0u64;
    // The receiver may finish (and say Done) as soon as the last byte
    // lands, before the reader thread has even closed the channel.
    let mut early_done = false;
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(Ok(Frame { bytes, data })) => {
                    // A user's cancel waits for the frame to end (see
                    // `send`); a stop waits only `FRAME_GRACE`, then ends
                    // the stream mid-frame.
                    let sent = tokio::select! {
                        r = to_peer.send_encoded(bytes) => r,
                        () = daemon_stops(&cancel, handle) => return Err(TransferError::Stopping),
                    };
                    if let Err(e) = sent {
                        return Err(last_words(&mut from_peer, peer_name, e).await);
                    }
                    handle.add_sent(data);
                    written += data;
                }
                Some(Err(e)) => return Err(e),
                None => break,
            },
            message = from_peer.recv() => match message? {
                Message::Done if written == needed => {
                    early_done = true;
                    break;
                }
                other => return Err(unexpected(other, peer_name)),
            },
            () = cancel.cancelled() => return Err(TransferError::interrupted(handle)),
        }
    }
    drop(rx);
    let _ = reader.await;
    if early_done {
        return Ok(());
    }
    to_peer.flush().await?;

    let reply = tokio::select! {
        r = from_peer.recv_within(DONE_TIMEOUT) => r?,
        () = cancel.cancelled() => return Err(TransferError::interrupted(handle)),
    };
    match reply {
        Message::Done => Ok(()),
        other => Err(unexpected(other, peer_name)),
    }
}

/// The error for a failed wait for the receiver's decision: a timeout
/// there is no answer, not a broken link (see [`TransferError::NoAnswer`]).
pub(super) fn no_answer(e: RecvError, peer_name: &PeerName) -> TransferError {
    match e {
        RecvError::Timeout(waited) => TransferError::NoAnswer {
            peer: peer_name.clone(),
            waited,
        },
        other => other.into(),
    }
}

/// Resolves [`FRAME_GRACE`] after `cancel` fired because the daemon
/// stops; never for a user's cancel.
async fn daemon_stops(cancel: &CancellationToken, handle: &Handle) {
    cancel.cancelled().await;
    if handle.stop_cause() != Some(StopCause::Shutdown) {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(FRAME_GRACE).await;
}

/// Why writing to the receiver failed: the receiver may have said why
/// before it stopped reading (a stopping receiver sends `Error(Paused)`
/// and then stops our stream, so our write fails before we read it).
/// Waits for that message a moment; otherwise the write's own error.
async fn last_words(
    from_peer: &mut FrameReader<'_>,
    peer_name: &PeerName,
    write_error: TransferError,
) -> TransferError {
    match from_peer.recv_within(LAST_WORDS_WAIT).await {
        Ok(message @ Message::Error { .. }) => unexpected(message, peer_name),
        _ => write_error,
    }
}

/// A byte range of one file to send: whole blocks.
struct Segment {
    file: u32,
    /// The open file (passed by the CLI) and its version when offered.
    offered: OfferedFile,
    offset: u64,
    len: u64,
    /// The file's size in the offer.
    size: u64,
}

/// Encoded frames for the writer (a `Data` frame, followed by a
/// `BlockValue` frame when it ends a block), and how many file bytes they
/// carry.
struct Frame {
    bytes: Bytes,
    data: u64,
}

/// Checks the receiver's block ranges against the manifest (they are peer
/// input) and turns them into byte ranges.
fn plan_segments(source: &Source, need: &[BlockRange]) -> Result<Vec<Segment>, TransferError> {
    let manifest = &source.manifest;
    let bad = |why: String| TransferError::Protocol(format!("bad block request: {why}"));
    let mut segments = Vec::with_capacity(need.len());
    let mut previous: Option<(u32, u64)> = None;
    for range in need {
        let index = range.file as usize;
        let (Some(entry), Some(Some(offered))) =
            (manifest.entries.get(index), source.files.get(index))
        else {
            return Err(bad(format!("entry {} is not a file", range.file)));
        };
        let EntryKind::File { size, .. } = entry.kind else {
            return Err(bad(format!("entry {} is not a file", range.file)));
        };
        let blocks = blocks_for(size, manifest.block_size);
        let end = range.first.checked_add(range.count);
        if range.count == 0 || end.is_none_or(|end| end > blocks) {
            return Err(bad(format!("blocks outside file {}", range.file)));
        }
        if previous.is_some_and(|(f, e)| (range.file, range.first) < (f, e)) {
            return Err(bad("ranges out of order or overlapping".into()));
        }
        let end = range.first + range.count;
        previous = Some((range.file, end));
        let block_size = u64::from(manifest.block_size);
        let offset = range.first * block_size;
        let len = (end * block_size).min(size) - offset;
        segments.push(Segment {
            file: range.file,
            offered: offered.clone(),
            offset,
            len,
            size,
        });
    }
    Ok(segments)
}

/// A message from the receiver while we stream or wait for `Done`.
fn unexpected(message: Message, peer_name: &PeerName) -> TransferError {
    match message {
        Message::Error { code, message } => TransferError::Peer {
            peer: peer_name.clone(),
            code,
            message: message.clean(),
        },
        other => TransferError::Protocol(format!("unexpected {} from the receiver", kind(&other))),
    }
}

/// Blocking: reads every segment into header-prefixed frames.
fn read_segments(
    segments: Vec<Segment>,
    block_size: u32,
    tx: &mpsc::Sender<Result<Frame, TransferError>>,
) {
    for segment in segments {
        if let Err(e) = read_segment(&segment, block_size, tx) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    }
}

/// Reads one segment in chunks that never cross a block boundary, hashing
/// each block and sending its value right after its last chunk. The file's
/// version is checked before and after: a file that changed since the
/// offer is reported as changed (its blocks would not belong together).
fn read_segment(
    segment: &Segment,
    block_size: u32,
    tx: &mpsc::Sender<Result<Frame, TransferError>>,
) -> Result<(), TransferError> {
    let OfferedFile { source, version } = &segment.offered;
    let path = &source.path;
    let local = |what: &str, e: std::io::Error| {
        TransferError::Local(format!("cannot {what} {}: {e}", path.display()))
    };
    let file = &source.file;
    let unchanged = || match Version::of(file) {
        Ok(now) if now == *version => Ok(()),
        Ok(_) => Err(TransferError::Local(format!(
            "{} changed while being sent; send it again",
            path.display()
        ))),
        Err(e) => Err(local("inspect", e)),
    };
    unchanged()?;
    let end = segment.offset + segment.len;
    let mut offset = segment.offset;
    let bs = u64::from(block_size);
    let mut hasher: Option<BlockHasher> = None;
    while offset < end {
        let block = offset / bs;
        let block_end = ((block + 1) * bs).min(end);
        let want = usize::try_from(block_end - offset)
            .unwrap_or(MAX_DATA_CHUNK)
            .min(MAX_DATA_CHUNK);
        let last_of_block = offset + want as u64 == block_end;
        let end_of_frame = DATA_HEADER_LEN + want;
        let mut header = BytesMut::with_capacity(DATA_HEADER_LEN);
        encode_data_header(segment.file, offset, want, &mut header);
        let mut frame = Vec::with_capacity(end_of_frame + BLOCK_VALUE_FRAME_LEN);
        frame.extend_from_slice(&header);
        // Read into the spare capacity: no zero-filling a buffer that the
        // read overwrites anyway.
        while frame.len() < end_of_frame {
            let at = offset + (frame.len() - DATA_HEADER_LEN) as u64;
            match rustix::io::pread(file, spare_capacity(&mut frame), at) {
                // Shorter than offered: changed, normally.
                Ok(0) => {
                    unchanged()?;
                    return Err(local("read", std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(local("read", e.into())),
            }
        }
        // The allocator may have granted more room than asked for.
        frame.truncate(end_of_frame);
        let running =
            hasher.get_or_insert_with(|| BlockHasher::new(segment.size, block_size, block));
        running.update(&frame[DATA_HEADER_LEN..]);
        if last_of_block {
            // The block's value goes out right behind its last chunk, in
            // the same write.
            let value = Message::BlockValue {
                file: segment.file,
                block,
                value: running.finalize(),
            };
            hasher = None;
            let mut encoded = BytesMut::with_capacity(BLOCK_VALUE_FRAME_LEN);
            encode(&value, &mut encoded)
                .map_err(|e| TransferError::Local(format!("cannot encode a block value: {e}")))?;
            frame.extend_from_slice(&encoded);
        }
        offset += want as u64;
        let frame = Frame {
            bytes: Bytes::from(frame),
            data: want as u64,
        };
        if tx.blocking_send(Ok(frame)).is_err() {
            // The network side stopped; it reports why.
            return Ok(());
        }
    }
    unchanged()
}
