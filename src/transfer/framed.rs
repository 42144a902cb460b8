//! Message framing over a [`Link`]: the single seam between bytes and
//! [`Message`]s, used identically for QUIC and TCP (after mini-redis's
//! `Connection`).
//!
//! Reads go into one [`BytesMut`]; [`decode`] either yields a whole frame
//! (bulk data is split off without copying) or asks for more bytes. An
//! oversized length prefix is rejected before it is buffered. The buffer
//! is sized for the frame in progress, once its length prefix is in (never
//! by doubling), and is paid for from the peer's [`Reservation`] first: a
//! frame over the peer's memory budget ends the session with `Busy`
//! ([`RecvError::OverBudget`]). Once a large frame is decoded the buffer
//! goes back to its usual size. The bulk
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

use super::memory::{OverBudget, Reservation};
use super::{MESSAGE_TIMEOUT, STOP_GRACE, TransferError};
use crate::protocol::{self, DATA_HEADER_LEN, Message};
use crate::transport::{Link, LinkReader, LinkWriter, is_identity_io_error};

/// Usual size of the read buffer; large enough for a full data chunk to
/// arrive in few reads.
const READ_RESERVE: usize = 256 << 10;

/// A link that speaks protocol messages.
pub struct Framed {
    link: Link,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// What `rbuf` costs, reserved from the peer's memory budget.
    memory: Reservation,
    /// Whether a write was abandoned part way through a frame: the stream
    /// then ends mid-frame, and nothing may follow (the peer would read it
    /// as part of the cut frame).
    cut: bool,
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
    memory: &'a mut Reservation,
}

/// The sending side of a [`Framed`], borrowed.
pub struct FrameWriter<'a> {
    writer: &'a mut LinkWriter,
    wbuf: &'a mut BytesMut,
    /// [`Framed::cut`]: set while a frame is being written.
    cut: &'a mut bool,
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
    /// The frame in progress does not fit the peer's memory budget.
    #[error("{0}")]
    OverBudget(#[from] OverBudget),
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
            // The peer learns that memory is short, not who holds it.
            RecvError::OverBudget(_) => Self::Busy(
                "this device has no memory to spare for your connection now; try again later"
                    .into(),
            ),
            other => Self::Link(other.to_string()),
        }
    }
}

impl Framed {
    /// Wraps a link whose reads no budget bounds (beyond the frame size
    /// limit): for links this device opened.
    pub fn new(link: Link) -> Self {
        Self::budgeted(link, Reservation::unbounded())
    }

    /// Wraps a link whose read buffer is paid for from `memory`.
    pub fn budgeted(link: Link, memory: Reservation) -> Self {
        Self {
            link,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::with_capacity(4096),
            memory,
            cut: false,
        }
    }

    /// The underlying link (peer ID, transport, address).
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// A new, empty reservation from the same budget as this link's read
    /// buffer: for what a session keeps for the same peer.
    pub fn reserve_more(&self) -> Reservation {
        self.memory.sibling()
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
                memory: &mut self.memory,
            },
            FrameWriter {
                writer: &mut self.link.writer,
                wbuf: &mut self.wbuf,
                cut: &mut self.cut,
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
    /// (the link may already be dead; after a frame cut short only the
    /// direction is ended: nothing may follow such a frame). A stopping
    /// daemon waits only a third of [`STOP_GRACE`] for each step: a message
    /// that cannot even be handed to the transport by then sits behind data
    /// that will not be delivered before the link closes either.
    pub async fn send_error(&mut self, error: &TransferError) {
        let message = Message::Error {
            code: error.code(),
            message: truncate(&error.to_string(), protocol::MAX_REASON_LEN).into(),
        };
        let limit = match error {
            TransferError::Stopping => STOP_GRACE / 3,
            _ => Duration::from_secs(2),
        };
        if !self.cut {
            let _ = tokio::time::timeout(limit, self.send(&message)).await;
        }
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
                self.settle();
                return Ok(message);
            }
            let frame = protocol::frame_len(self.rbuf).unwrap_or(0);
            self.fill(READ_RESERVE, frame).await?;
        }
    }

    /// Reads at most `limit` more bytes into the read buffer, first making
    /// it hold at least `room` bytes.
    async fn fill(&mut self, limit: usize, room: usize) -> Result<(), RecvError> {
        self.make_room(room)?;
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

    /// Makes the read buffer hold at least `room` bytes (the whole frame in
    /// progress, when it is to be buffered) and at least one more than now,
    /// paying for a larger buffer from the reservation first. The new
    /// buffer is exactly that large (or the usual size), and what was
    /// buffered moves over.
    fn make_room(&mut self, room: usize) -> Result<(), RecvError> {
        let len = self.rbuf.len();
        let needed = room.max(len + 1);
        if self.rbuf.capacity() >= needed {
            return Ok(());
        }
        let size = needed.max(READ_RESERVE);
        self.memory.resize(size)?;
        let mut grown = BytesMut::with_capacity(size);
        grown.extend_from_slice(self.rbuf);
        *self.rbuf = grown;
        Ok(())
    }

    /// After a frame was decoded: a buffer grown for a large frame goes
    /// back to the usual size, and its memory back to the budget.
    fn settle(&mut self) {
        if self.memory.bytes() <= READ_RESERVE || self.rbuf.len() > READ_RESERVE {
            return;
        }
        let mut usual = BytesMut::with_capacity(READ_RESERVE);
        usual.extend_from_slice(self.rbuf);
        *self.rbuf = usual;
        // Shrinking never fails.
        let _ = self.memory.resize(READ_RESERVE);
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
                self.settle();
                return Ok(Incoming::Message(message));
            }
            // Short of a frame header, read no further than its end: a data
            // payload behind it then goes straight into `buf`. Any other
            // frame is buffered whole.
            let (limit, room) = if self.rbuf.len() < DATA_HEADER_LEN {
                (DATA_HEADER_LEN - self.rbuf.len(), 0)
            } else {
                (READ_RESERVE, protocol::frame_len(self.rbuf).unwrap_or(0))
            };
            self.fill(limit, room).await?;
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
        *self.cut = true;
        self.writer
            .write_all(self.wbuf)
            .await
            .map_err(|e| TransferError::Link(describe(&e)))?;
        *self.cut = false;
        self.writer
            .flush()
            .await
            .map_err(|e| TransferError::Link(describe(&e)))
    }

    /// Writes a pre-encoded frame: a data frame ([`DATA_HEADER_LEN`]
    /// header bytes from [`protocol::encode_data_header`] followed by the
    /// payload) or any frame from [`protocol::encode`]. Bulk data goes out
    /// with one call and, over QUIC, without a copy.
    ///
    /// Dropping the future part way leaves the frame cut short; the link
    /// remembers it, and [`Framed::send_error`] then sends nothing.
    pub async fn send_encoded(&mut self, frame: bytes::Bytes) -> Result<(), TransferError> {
        *self.cut = true;
        self.writer
            .write_bytes(frame)
            .await
            .map_err(|e| TransferError::Link(describe(&e)))?;
        *self.cut = false;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Entry, EntryKind, Manifest};
    use crate::transfer::memory::{MemoryBudget, MemoryLimits, OverBudget};
    use crate::transfer::testing::{alice, bob};
    use crate::transport::TransportKind;

    const MIB: usize = 1 << 20;

    /// An offer whose frame is a little over `mib` MiB.
    fn offer_of(mib: usize) -> Message {
        let entries = (0..mib * MIB / 100 + 1)
            .map(|i| Entry {
                path: format!("{i:097}"),
                kind: EntryKind::Directory,
            })
            .collect();
        Message::Offer(Manifest {
            entries,
            ..Manifest::default()
        })
    }

    /// Bob's end pays for its reads from `budget`, as alice's stranger.
    fn budgeted_pipe(budget: &MemoryBudget) -> (Framed, Framed) {
        let (a, b) = Link::pipe(alice(), bob(), TransportKind::Quic, [7; 8]);
        (
            Framed::new(a),
            Framed::budgeted(b, budget.account(alice(), false)),
        )
    }

    #[tokio::test]
    async fn a_large_frame_is_paid_for_and_given_back_once_decoded() {
        let budget = MemoryBudget::new(MemoryLimits::from_mib(8, 2));
        let (mut from_alice, mut at_bob) = budgeted_pipe(&budget);
        let sent = offer_of(1);
        let sending =
            tokio::spawn(async move { from_alice.send(&sent).await.map(|()| from_alice) });
        let received = at_bob.recv().await.unwrap();
        assert!(matches!(&received, Message::Offer(m) if m.entries.len() == MIB / 100 + 1));
        assert_eq!(budget.in_use(), READ_RESERVE, "back to the usual buffer");
        let from_alice = sending.await.unwrap().unwrap();
        drop(at_bob);
        assert_eq!(budget.in_use(), 0);
        drop(from_alice);
    }

    #[tokio::test]
    async fn a_frame_over_the_budget_is_refused_from_its_length_prefix() {
        let budget = MemoryBudget::new(MemoryLimits::from_mib(8, 2));
        let (mut from_alice, mut at_bob) = budgeted_pipe(&budget);
        let sending = tokio::spawn(async move {
            let _ = from_alice.send(&offer_of(3)).await;
            from_alice
        });
        let refused = at_bob.recv().await;
        assert!(
            matches!(
                refused,
                Err(RecvError::OverBudget(OverBudget::Device { limit, .. })) if limit == 2 * MIB
            ),
            "{refused:?}"
        );
        assert!(budget.in_use() <= READ_RESERVE, "{} held", budget.in_use());
        assert!(matches!(
            TransferError::from(refused.unwrap_err()),
            TransferError::Busy(_)
        ));
        drop(at_bob);
        assert_eq!(budget.in_use(), 0);
        sending.abort();
    }
}
