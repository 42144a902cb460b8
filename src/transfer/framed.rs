//! Message framing over a [`Link`]: the single seam between bytes and
//! [`Message`]s, used identically for QUIC and TCP (after mini-redis's
//! `Connection`).
//!
//! Reads go into one growing [`BytesMut`]; [`decode`] either yields a whole
//! frame (bulk data is split off without copying) or asks for more bytes.
//! An oversized length prefix is rejected before it is buffered. The bulk
//! receiver uses [`FrameReader::recv_into`] instead, which reads each data
//! payload straight into a buffer of the caller's (see
//! [`decode_data_header`]).
//! [`Framed::halves`] borrows the reading and writing sides separately so a
//! sender can watch for the peer's `Error` while it streams data.
//!
//! [`decode`]: crate::protocol::decode
//! [`decode_data_header`]: crate::protocol::decode_data_header

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{MESSAGE_TIMEOUT, TransferError};
use crate::protocol::{self, DATA_HEADER_LEN, Message};
use crate::transport::{Link, LinkReader, LinkWriter, is_identity_io_error};

/// Read-buffer growth step; large enough for a full data chunk to arrive
/// in few reads.
const READ_RESERVE: usize = 256 << 10;

/// A link that speaks protocol messages.
pub struct Framed {
    link: Link,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

/// What [`FrameReader::recv_into`] received.
#[derive(Debug)]
pub enum Incoming {
    /// A `Data` frame; its payload is in the caller's buffer.
    Data {
        /// Manifest entry index.
        file: u32,
        /// Byte offset in that file.
        offset: u64,
    },
    /// Any other message.
    Message(Message),
}

/// The receiving side of a [`Framed`], borrowed.
pub struct FrameReader<'a> {
    reader: &'a mut LinkReader,
    rbuf: &'a mut BytesMut,
}

/// The sending side of a [`Framed`], borrowed.
pub struct FrameWriter<'a> {
    writer: &'a mut LinkWriter,
    wbuf: &'a mut BytesMut,
}

/// Why receiving a message failed.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The peer closed the stream cleanly.
    #[error("the peer closed the connection")]
    Closed,
    /// The bytes did not decode.
    #[error("{0}")]
    Decode(#[from] protocol::DecodeError),
    /// The link failed.
    #[error("{}", describe(.0))]
    Io(std::io::Error),
    /// No message within the timeout.
    #[error("no message from the peer for {0} s")]
    Timeout(u64),
}

impl RecvError {
    /// Whether the peer refused our identity at the TLS layer.
    pub fn is_identity(&self) -> bool {
        matches!(self, Self::Io(e) if is_identity_io_error(e))
    }
}

impl From<RecvError> for TransferError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Decode(d) => Self::Protocol(d.to_string()),
            RecvError::Timeout(seconds) => Self::Timeout(seconds),
            other => Self::Link(other.to_string()),
        }
    }
}

impl Framed {
    /// Wraps a link.
    pub fn new(link: Link) -> Self {
        Self {
            link,
            rbuf: BytesMut::with_capacity(READ_RESERVE),
            wbuf: BytesMut::with_capacity(4096),
        }
    }

    /// The underlying link (peer ID, transport, address).
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Gives the link back (for closing).
    pub fn into_link(self) -> Link {
        self.link
    }

    /// Borrows the reading and writing sides independently.
    pub fn halves(&mut self) -> (FrameReader<'_>, FrameWriter<'_>) {
        (
            FrameReader {
                reader: &mut self.link.reader,
                rbuf: &mut self.rbuf,
            },
            FrameWriter {
                writer: &mut self.link.writer,
                wbuf: &mut self.wbuf,
            },
        )
    }

    /// Receives the next message, waiting at most [`MESSAGE_TIMEOUT`].
    pub async fn recv(&mut self) -> Result<Message, RecvError> {
        self.halves().0.recv_within(MESSAGE_TIMEOUT).await
    }

    /// Receives the next message, waiting at most `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Message, RecvError> {
        self.halves().0.recv_within(limit).await
    }

    /// Sends one message and flushes it.
    pub async fn send(&mut self, message: &Message) -> Result<(), TransferError> {
        self.halves().1.send(message).await
    }

    /// Tells the peer why we stop and ends our direction, best effort
    /// (the link may already be dead).
    pub async fn send_error(&mut self, error: &TransferError) {
        let message = Message::Error {
            code: error.code(),
            message: truncate(&error.to_string(), protocol::MAX_REASON_LEN).into(),
        };
        let limit = Duration::from_secs(2);
        let _ = tokio::time::timeout(limit, self.send(&message)).await;
        let _ = tokio::time::timeout(limit, self.link.finish()).await;
    }
}

impl FrameReader<'_> {
    /// Receives the next message, waiting at most `limit`. Cancel-safe:
    /// bytes read so far stay buffered.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Message, RecvError> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| RecvError::Timeout(limit.as_secs()))?
    }

    /// Receives the next message with no time limit. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Message, RecvError> {
        loop {
            if let Some(message) = protocol::decode(self.rbuf)? {
                return Ok(message);
            }
            self.fill(READ_RESERVE).await?;
        }
    }

    /// Reads at most `limit` more bytes into the read buffer.
    async fn fill(&mut self, limit: usize) -> Result<(), RecvError> {
        self.rbuf.reserve(limit);
        let n = self
            .reader
            .read_buf(&mut (&mut *self.rbuf).limit(limit))
            .await
            .map_err(RecvError::Io)?;
        if n == 0 {
            return Err(if self.rbuf.is_empty() {
                RecvError::Closed
            } else {
                cut_short()
            });
        }
        Ok(())
    }

    /// Receives the next message like [`recv`](Self::recv), except that a
    /// `Data` payload goes into `buf` (replacing its contents), read from
    /// the link straight into it: bulk data is copied once on its way from
    /// the transport to `buf` instead of twice. `buf` should have room for
    /// [`protocol::MAX_DATA_CHUNK`] bytes so it never reallocates.
    ///
    /// Not cancel-safe in the middle of a payload: dropping the future
    /// loses that frame, so only drop it when the transfer ends anyway.
    pub async fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<Incoming, RecvError> {
        loop {
            if let Some(header) = protocol::decode_data_header(self.rbuf)? {
                self.rbuf.advance(DATA_HEADER_LEN);
                let buffered = header.len.min(self.rbuf.len());
                buf.clear();
                buf.reserve(header.len);
                buf.extend_from_slice(&self.rbuf[..buffered]);
                self.rbuf.advance(buffered);
                while buf.len() < header.len {
                    let want = header.len - buf.len();
                    let n = self
                        .reader
                        .read_buf(&mut (&mut *buf).limit(want))
                        .await
                        .map_err(RecvError::Io)?;
                    if n == 0 {
                        return Err(cut_short());
                    }
                }
                return Ok(Incoming::Data {
                    file: header.file,
                    offset: header.offset,
                });
            }
            if let Some(message) = protocol::decode(self.rbuf)? {
                return Ok(Incoming::Message(message));
            }
            // Short of a frame header, read no further than its end: a data
            // payload behind it then goes straight into `buf`.
            let limit = if self.rbuf.len() < DATA_HEADER_LEN {
                DATA_HEADER_LEN - self.rbuf.len()
            } else {
                READ_RESERVE
            };
            self.fill(limit).await?;
        }
    }

    /// Like [`recv_into`](Self::recv_into), waiting at most `limit`.
    pub async fn recv_into_within(
        &mut self,
        buf: &mut Vec<u8>,
        limit: Duration,
    ) -> Result<Incoming, RecvError> {
        tokio::time::timeout(limit, self.recv_into(buf))
            .await
            .map_err(|_| RecvError::Timeout(limit.as_secs()))?
    }
}

impl FrameWriter<'_> {
    /// Sends one message and flushes it.
    pub async fn send(&mut self, message: &Message) -> Result<(), TransferError> {
        self.wbuf.clear();
        protocol::encode(message, self.wbuf)
            .map_err(|e| TransferError::Local(format!("cannot encode message: {e}")))?;
        self.writer
            .write_all(self.wbuf)
            .await
            .map_err(|e| TransferError::Link(describe(&e)))?;
        self.writer
            .flush()
            .await
            .map_err(|e| TransferError::Link(describe(&e)))
    }

    /// Writes a pre-encoded frame: a data frame ([`DATA_HEADER_LEN`]
    /// header bytes from [`protocol::encode_data_header`] followed by the
    /// payload) or any frame from [`protocol::encode`]. Bulk data goes out
    /// with one call and, over QUIC, without a copy.
    pub async fn send_encoded(&mut self, frame: bytes::Bytes) -> Result<(), TransferError> {
        self.writer
            .write_bytes(frame)
            .await
            .map_err(|e| TransferError::Link(describe(&e)))
    }

    /// Flushes buffered bytes.
    pub async fn flush(&mut self) -> Result<(), TransferError> {
        self.writer
            .flush()
            .await
            .map_err(|e| TransferError::Link(describe(&e)))
    }
}

/// The link ended inside a frame.
fn cut_short() -> RecvError {
    RecvError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "connection closed in the middle of a message",
    ))
}

/// An I/O error with its causes: quinn reports "connection lost" and keeps
/// the reason ("timed out", "reset by peer") in the error's source.
pub fn describe(e: &std::io::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.get_ref().and_then(|inner| inner.source());
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
