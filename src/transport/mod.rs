//! Transports: authenticated, bidirectional byte channels between devices.
//!
//! Two transports carry the same protocol: QUIC over UDP ([`quic`]) and, for
//! networks that drop UDP, TLS 1.3 over TCP ([`tcp`]) on the same port
//! number. Both use the same rustls configuration ([`tls`]): TLS 1.3 only,
//! ALPN `lanshare/1.1` or `lanshare/1`, mutual authentication with the
//! pinned-certificate verifiers from [`crate::identity::verifier`]. Each
//! yields a [`Link`]: a reader, a writer, the peer's proven [`DeviceId`],
//! and whether the ALPN both chose carries entry metadata. Everything above
//! this module (framing, transfers) sees only `Link` and the [`Transport`]
//! trait, never quinn or TCP.
//!
//! [`admission`] bounds the handshakes in flight, so connections that never
//! authenticate cannot crowd out those that do.
//!
//! [`dial`] races the two (QUIC first, TCP after a 250 ms head start) and
//! remembers paths on which QUIC is broken.
//!
//! A TLS 1.3 client finishes its handshake before the server has judged the
//! client certificate, so a `Link` is *not yet* authorized: the layer above
//! must wait for the peer's first application message before trusting it.

pub mod admission;
pub mod dial;
mod path_mtu;
pub mod quic;
pub mod tcp;
pub mod tls;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::identity::DeviceId;

/// How long a QUIC or TCP connection attempt (handshake included) may take
/// before the dialer gives up on that transport. quinn alone would wait the
/// whole idle timeout on a black-holed port.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an incoming connection may take from its first packet to its
/// `Hello` (transport handshake included), and how long a dialer whose own
/// handshake is done waits for the peer's `Hello`. The peer has answered by then, so only loss recovery delays
/// it: in TLS 1.3 the server completes only when the client's last
/// handshake message arrives, after the client has completed, and a lost
/// client `Finished` or `Hello` costs a retransmission timeout that on a
/// lossy link grows to seconds. [`CONNECT_TIMEOUT`] would cut that short.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle timeout: a silent peer is declared dead after this long. Keep-alives
/// (every [`KEEP_ALIVE`]) keep a healthy but quiet connection open, e.g.
/// while an offer waits for the user's consent.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Keep-alive interval; must be well below [`IDLE_TIMEOUT`].
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Target size of UDP socket buffers (the kernel may clamp it, see the
/// `net.core.rmem_max` sysctl).
pub const UDP_BUFFER_SIZE: usize = 4 << 20;

/// Which transport a link runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// QUIC over UDP (preferred).
    Quic,
    /// TLS 1.3 over TCP (fallback).
    Tcp,
    /// LocalSend's HTTPS API (a LocalSend app at the other end; see
    /// [`crate::localsend`]). Never produced by the native transports.
    #[serde(rename = "localsend")]
    LocalSend,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Quic => "quic",
            Self::Tcp => "tcp",
            Self::LocalSend => "localsend",
        })
    }
}

/// Errors from connecting or accepting.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached (refused, timed out, unreachable).
    #[error("cannot reach {addr} over {kind}: {reason}")]
    Unreachable {
        /// Transport tried.
        kind: TransportKind,
        /// Address tried.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The peer's host answered that nothing listens on the port (TCP
    /// connection refused): the host is up, the daemon is not there.
    #[error("nothing listens on {addr} over {kind} (connection refused)")]
    Refused {
        /// Transport tried.
        kind: TransportKind,
        /// Address tried.
        addr: SocketAddr,
    },
    /// The TLS handshake failed on identity grounds: wrong or invalid
    /// certificate, bad signature, or the peer refused ours. A fallback
    /// must never turn this into a success.
    #[error("identity check failed with {addr} over {kind}: {reason}")]
    Identity {
        /// Transport tried.
        kind: TransportKind,
        /// Address tried.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// Local setup failed (binding a socket, building a TLS config).
    #[error("{0}")]
    Setup(String),
}

impl TransportError {
    /// Whether this is an authentication failure rather than a network one.
    pub fn is_identity(&self) -> bool {
        matches!(self, Self::Identity { .. })
    }
}

/// Boxed reading half of a link.
pub type LinkReader = Box<dyn AsyncRead + Send + Unpin>;
/// Writing half of a link. An enum rather than a boxed trait object so
/// bulk data can take each transport's cheapest path
/// ([`LinkWriter::write_bytes`]); it is an ordinary [`AsyncWrite`] too.
pub enum LinkWriter {
    /// A QUIC send stream.
    Quic(quinn::SendStream),
    /// The write half of a TLS-over-TCP stream.
    Tcp(tokio::io::WriteHalf<tokio_rustls::TlsStream<tcp::TcpIo>>),
    /// The write half of an in-memory pipe ([`Link::pipe`], tests only).
    #[cfg(test)]
    Pipe(tokio::io::WriteHalf<tokio::io::DuplexStream>),
}

impl LinkWriter {
    /// Writes all of `data`. QUIC takes ownership of the buffer without
    /// copying it; TLS copies it into its record layer either way.
    pub async fn write_bytes(&mut self, data: bytes::Bytes) -> std::io::Result<()> {
        match self {
            Self::Quic(stream) => stream.write_chunk(data).await.map_err(std::io::Error::from),
            Self::Tcp(stream) => stream.write_all(&data).await,
            #[cfg(test)]
            Self::Pipe(stream) => stream.write_all(&data).await,
        }
    }
}

impl AsyncWrite for LinkWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Quic(s) => Pin::new(s)
                .poll_write(cx, buf)
                .map_err(std::io::Error::from),
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(test)]
            Self::Pipe(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Quic(s) => Pin::new(s).poll_flush(cx),
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(test)]
            Self::Pipe(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Quic(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(test)]
            Self::Pipe(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Keeps transport state alive for as long as the link is used.
enum Guard {
    /// The connection, and where to remember the MTU it discovered.
    Quic(quinn::Connection, std::sync::Arc<path_mtu::PathMtus>),
    /// The TLS stream is split into halves, so the exporter output for the
    /// pairing code ([`Link::pairing_code`]) is taken after the handshake.
    Tcp { pairing_exporter: Option<[u8; 8]> },
    /// An in-memory pipe: the exporter output both ends were given.
    #[cfg(test)]
    Pipe { pairing_exporter: [u8; 8] },
}

impl Drop for Guard {
    /// Logs what the QUIC path ended as: the first thing to look at when a
    /// transfer is slower than the link (an MTU stuck low, heavy loss).
    /// Remembers its MTU for the next connection to that peer.
    fn drop(&mut self) {
        if let Guard::Quic(conn, mtus) = self {
            let path = conn.stats().path;
            mtus.record(conn.remote_address().ip(), path.current_mtu);
            tracing::debug!(
                remote = %canonical(conn.remote_address()),
                mtu = path.current_mtu,
                rtt_us = path.rtt.as_micros(),
                lost_packets = path.lost_packets,
                black_holes = path.black_holes_detected,
                "QUIC link closed"
            );
        }
    }
}

/// An encrypted, mutually authenticated byte channel to one peer.
pub struct Link {
    /// The peer's device ID, proven by the TLS handshake signature.
    pub peer: DeviceId,
    /// The transport carrying this link.
    pub kind: TransportKind,
    /// The peer's address (IPv4-mapped addresses canonicalised).
    pub remote: SocketAddr,
    /// Bytes from the peer.
    pub reader: LinkReader,
    /// Bytes to the peer.
    pub writer: LinkWriter,
    /// Both ends negotiated ALPN [`crate::protocol::ALPN_METADATA`]: an
    /// `Offer` is followed by its entries' `Metadata`.
    pub metadata: bool,
    guard: Guard,
    /// When an incoming connection's first packet arrived (`None` for a
    /// link we dialled): its whole authentication, transport handshake and
    /// `Hello`, must finish within [`HANDSHAKE_TIMEOUT`] of it.
    accepted: Option<tokio::time::Instant>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("kind", &self.kind)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// How long the peer may still take to send its `Hello`: for an
    /// incoming link, what is left of [`HANDSHAKE_TIMEOUT`] since its first
    /// packet (an unauthenticated connection is held no longer than that,
    /// see [`admission`]); for a link we dialled, [`HANDSHAKE_TIMEOUT`].
    pub fn hello_wait(&self) -> Duration {
        match self.accepted {
            Some(at) => {
                (at + HANDSHAKE_TIMEOUT).saturating_duration_since(tokio::time::Instant::now())
            }
            None => HANDSHAKE_TIMEOUT,
        }
    }

    /// Finishes our sending direction: everything written so far will be
    /// delivered, then the peer reads end-of-stream.
    pub async fn finish(&mut self) -> std::io::Result<()> {
        self.writer.shutdown().await
    }

    /// The 6-digit pairing code of this TLS session, derived with the TLS
    /// keying-material exporter ([`crate::protocol::PAIRING_EXPORTER_LABEL`],
    /// empty context). Both ends compute the same number; a man in the
    /// middle holds two sessions with different secrets, so the two users
    /// see different codes. `None` if the exporter is unavailable.
    pub fn pairing_code(&self) -> Option<u32> {
        let exporter = match &self.guard {
            Guard::Quic(conn, _) => {
                let mut out = [0u8; 8];
                conn.export_keying_material(&mut out, crate::protocol::PAIRING_EXPORTER_LABEL, b"")
                    .ok()?;
                out
            }
            Guard::Tcp { pairing_exporter } => (*pairing_exporter)?,
            #[cfg(test)]
            Guard::Pipe { pairing_exporter } => *pairing_exporter,
        };
        Some(crate::protocol::pairing_code(exporter))
    }

    /// Closes the link at once with a short reason for the peer's logs.
    /// Unsent data is discarded; use [`Link::finish`] first for a clean end.
    pub fn abort(self, reason: &str) {
        if let Guard::Quic(conn, _) = &self.guard {
            conn.close(quinn::VarInt::from_u32(1), reason.as_bytes());
        }
    }

    /// Ends the link cleanly: finishes our side, then waits (bounded by
    /// `limit`) as [`Link::wait_peer_closed`] does, so our last message is
    /// delivered and the peer sees a clean end of stream.
    pub async fn close(mut self, limit: Duration) {
        let _ = self.finish().await;
        self.wait_peer_closed(limit).await;
    }

    /// Ends the link promptly because this side stops (the daemon shuts
    /// down): finishes our side and waits, bounded by `limit`, until the
    /// peer has our last message, without waiting for what the peer still
    /// has in flight, as [`Link::close`] does (on a slow link that can be
    /// seconds of data). Over QUIC our reading side is stopped
    /// (`STOP_SENDING`): the peer's writes fail at once, its unsent data is
    /// dropped, and it finds our last message when it reads. Over TCP there
    /// is no such signal, so whatever arrives meanwhile is read and dropped
    /// (a close with unread data would reset the connection and could
    /// discard our last message) until the peer closes or `limit` passes.
    pub async fn interrupt(mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.finish()).await;
        if let LinkWriter::Quic(stream) = &mut self.writer {
            // Dropping a quinn stream not read to its end sends STOP_SENDING.
            self.reader = Box::new(tokio::io::empty());
            let _ = tokio::time::timeout(limit, stream.stopped()).await;
        } else {
            self.wait_peer_closed(limit).await;
        }
    }

    /// Waits (bounded by `limit`) until the peer has acknowledged
    /// everything we sent, so closing now cuts off nothing: quinn discards
    /// unacknowledged stream data when the last connection handle goes
    /// (TLS over TCP delivers what was flushed). Call after [`Link::finish`].
    pub async fn wait_delivered(mut self, limit: Duration) {
        if let LinkWriter::Quic(stream) = &mut self.writer {
            let _ = tokio::time::timeout(limit, stream.stopped()).await;
        }
    }

    /// Waits (bounded by `limit`) until the peer has ended its side and —
    /// over QUIC — acknowledged everything we sent (see
    /// [`Link::wait_delivered`]). Call after [`Link::finish`].
    pub async fn wait_peer_closed(mut self, limit: Duration) {
        let settle = async {
            let mut sink = [0u8; 256];
            loop {
                match tokio::io::AsyncReadExt::read(&mut self.reader, &mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            if let LinkWriter::Quic(stream) = &mut self.writer {
                let _ = stream.stopped().await;
            }
        };
        let _ = tokio::time::timeout(limit, settle).await;
    }
}

#[cfg(test)]
impl Link {
    /// Both ends of an in-memory link between device `a` (the first end,
    /// whose peer is `b`) and device `b`, with `kind` and loopback
    /// addresses for show, and `pairing_exporter` as both ends' keying
    /// material. Sessions run over it exactly as over QUIC or TCP, so they
    /// are tested without sockets (and under a paused clock).
    pub(crate) fn pipe(
        a: DeviceId,
        b: DeviceId,
        kind: TransportKind,
        pairing_exporter: [u8; 8],
    ) -> (Link, Link) {
        // Room for several data frames in flight, as on a real link.
        const PIPE_BUFFER: usize = 4 << 20;
        let (one, other) = tokio::io::duplex(PIPE_BUFFER);
        let end = |stream: tokio::io::DuplexStream, peer: DeviceId, port: u16| {
            let (reader, writer) = tokio::io::split(stream);
            Link {
                peer,
                kind,
                remote: SocketAddr::from(([127, 0, 0, 1], port)),
                reader: Box::new(reader),
                writer: LinkWriter::Pipe(writer),
                metadata: true,
                guard: Guard::Pipe { pairing_exporter },
                accepted: None,
            }
        };
        (end(one, b, 2), end(other, a, 1))
    }
}

/// A boxed future, for the object-safe [`Transport`] trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One way of reaching a peer. QUIC and TCP implement it; [`dial`] races them.
pub trait Transport: Send + Sync {
    /// Which transport this is.
    fn kind(&self) -> TransportKind;

    /// Connects to `addr`, requiring the peer's device ID to be `expected`
    /// when given. Fails within [`CONNECT_TIMEOUT`].
    fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<DeviceId>,
    ) -> BoxFuture<'_, Result<Link, TransportError>>;
}

/// Normalises IPv4-mapped IPv6 addresses (from dual-stack sockets).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Whether an I/O error on a link's reader or writer means the peer's TLS
/// stack rejected our identity (QUIC closes with a crypto error code after
/// a client certificate is refused; TLS over TCP sends an alert).
pub fn is_identity_io_error(e: &std::io::Error) -> bool {
    let Some(inner) = e.get_ref() else {
        return false;
    };
    if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
        return tls::is_identity_error(tls);
    }
    let conn = if let Some(quinn::ReadError::ConnectionLost(c)) = inner.downcast_ref() {
        Some(c)
    } else if let Some(quinn::WriteError::ConnectionLost(c)) = inner.downcast_ref() {
        Some(c)
    } else {
        None
    };
    conn.is_some_and(quic::is_identity_close)
}
