//! The sending side: offer, wait for consent, stream data, wait for `Done`.
//!
//! Files are read on a blocking thread in [`MAX_DATA_CHUNK`]-sized chunks
//! straight into buffers that already hold room for the frame header, so
//! each chunk is written to the link with one call and never copied. The
//! reader re-hashes what it reads and stops with an error if a file changed
//! since it was scanned (the receiver would reject it anyway; this says
//! why). A bounded channel between reader and writer keeps memory flat no
//! matter how large the files are.
//!
//! Success means the receiver's `Done`: every file verified, synced and
//! renamed into place. Nothing less makes `share send` exit 0.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::mpsc;

use super::TransferError;
use super::framed::Framed;
use super::handshake::kind;
use super::registry::Handle;
use super::source::Source;
use crate::protocol::{DATA_HEADER_LEN, EntryKind, MAX_DATA_CHUNK, Message, encode_data_header};

/// How long the sender waits for `Done` after the last byte: the receiver
/// verifies and syncs everything first, which can take a while on slow disks.
pub const DONE_TIMEOUT: Duration = Duration::from_secs(300);

/// Chunks buffered between the disk reader and the network writer.
const PIPELINE_DEPTH: usize = 8;

/// Progress notifications for the user interface.
#[derive(Debug, Clone)]
pub enum SendEvent {
    /// The offer is out; the receiver's user has to accept it.
    Waiting,
    /// Accepted; data is flowing.
    Accepted,
}

/// Sends `source` over an authenticated link and waits for the receiver's
/// `Done`. `consent_timeout` bounds the wait for accept/reject.
pub async fn send(
    framed: &mut Framed,
    peer_name: &str,
    source: Source,
    handle: &Handle,
    consent_timeout: Duration,
    events: mpsc::UnboundedSender<SendEvent>,
) -> Result<(), TransferError> {
    let cancel = handle.cancelled();
    let result = tokio::select! {
        r = run(framed, peer_name, source, handle, consent_timeout, events) => r,
        () = cancel.cancelled() => Err(TransferError::Cancelled),
    };
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
    peer_name: &str,
    source: Source,
    handle: &Handle,
    consent_timeout: Duration,
    events: mpsc::UnboundedSender<SendEvent>,
) -> Result<(), TransferError> {
    framed
        .send(&Message::Offer(source.manifest.clone()))
        .await?;
    let _ = events.send(SendEvent::Waiting);
    match framed.recv_within(consent_timeout).await? {
        Message::Accept => {}
        Message::Reject { reason } => {
            return Err(TransferError::Rejected {
                peer: peer_name.to_owned(),
                reason,
            });
        }
        Message::Error { code, message } => {
            return Err(TransferError::Peer {
                peer: peer_name.to_owned(),
                code,
                message,
            });
        }
        other => {
            return Err(TransferError::Protocol(format!(
                "expected Accept or Reject, got {}",
                kind(&other)
            )));
        }
    }
    let _ = events.send(SendEvent::Accepted);

    let jobs: Vec<(u32, PathBuf, u64, [u8; 32])> = source
        .manifest
        .entries
        .iter()
        .zip(source.files)
        .enumerate()
        .filter_map(|(i, (entry, path))| match (&entry.kind, path) {
            (EntryKind::File { size, hash }, Some(path)) if *size > 0 => {
                Some((u32::try_from(i).ok()?, path, *size, *hash))
            }
            _ => None,
        })
        .collect();
    let (tx, mut rx) = mpsc::channel::<Result<BytesMut, TransferError>>(PIPELINE_DEPTH);
    let reader = tokio::task::spawn_blocking(move || read_files(jobs, &tx));

    let (mut from_peer, mut to_peer) = framed.halves();
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(Ok(frame)) => {
                    to_peer.send_data_frame(&frame).await?;
                    handle.add_bytes((frame.len() - DATA_HEADER_LEN) as u64);
                }
                Some(Err(e)) => return Err(e),
                None => break,
            },
            message = from_peer.recv() => return Err(unexpected(message?, peer_name)),
        }
    }
    drop(rx);
    let _ = reader.await;
    to_peer.flush().await?;

    match from_peer.recv_within(DONE_TIMEOUT).await? {
        Message::Done => Ok(()),
        other => Err(unexpected(other, peer_name)),
    }
}

/// A message from the receiver while we stream or wait for `Done`.
fn unexpected(message: Message, peer_name: &str) -> TransferError {
    match message {
        Message::Error { code, message } => TransferError::Peer {
            peer: peer_name.to_owned(),
            code,
            message,
        },
        other => TransferError::Protocol(format!("unexpected {} from the receiver", kind(&other))),
    }
}

/// Blocking: reads every file in order into header-prefixed frames.
fn read_files(
    jobs: Vec<(u32, PathBuf, u64, [u8; 32])>,
    tx: &mpsc::Sender<Result<BytesMut, TransferError>>,
) {
    for (index, path, size, hash) in jobs {
        if let Err(e) = read_file(index, &path, size, &hash, tx) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    }
}

fn read_file(
    index: u32,
    path: &PathBuf,
    size: u64,
    expected: &[u8; 32],
    tx: &mpsc::Sender<Result<BytesMut, TransferError>>,
) -> Result<(), TransferError> {
    let local = |what: &str, e: std::io::Error| {
        TransferError::Local(format!("cannot {what} {}: {e}", path.display()))
    };
    let mut file = File::open(path).map_err(|e| local("open", e))?;
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0u64;
    while offset < size {
        let want = usize::try_from(size - offset)
            .unwrap_or(MAX_DATA_CHUNK)
            .min(MAX_DATA_CHUNK);
        let mut frame = BytesMut::with_capacity(DATA_HEADER_LEN + want);
        encode_data_header(index, offset, want, &mut frame);
        frame.resize(DATA_HEADER_LEN + want, 0);
        let payload = &mut frame[DATA_HEADER_LEN..];
        let mut filled = 0;
        while filled < want {
            match file.read(&mut payload[filled..]) {
                Ok(0) => {
                    return Err(TransferError::Local(format!(
                        "{} shrank while being sent; send it again",
                        path.display()
                    )));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(local("read", e)),
            }
        }
        hasher.update(payload);
        offset += want as u64;
        if tx.blocking_send(Ok(frame)).is_err() {
            // The network side stopped; it reports why.
            return Ok(());
        }
    }
    if hasher.finalize().as_bytes() != expected {
        return Err(TransferError::Local(format!(
            "{} changed while being sent; send it again",
            path.display()
        )));
    }
    Ok(())
}
