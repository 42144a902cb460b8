//! TLS 1.3 over TCP: the fallback for networks that drop UDP.
//!
//! It listens on the same port number as QUIC, uses exactly the same rustls
//! configuration (see [`super::tls`]) and therefore the same pinned
//! identities, and carries the same framed protocol, so nothing above the
//! [`Transport`] trait can tell the two apart. `TCP_NODELAY` is set so small
//! control messages (hello, accept, done) are not held back by Nagle.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::Handshakes;
use super::{
    BoxFuture, CONNECT_TIMEOUT, Guard, HANDSHAKE_TIMEOUT, Link, LinkWriter, Transport,
    TransportError, TransportKind, canonical, tls,
};
use crate::identity::{DeviceId, Identity};

/// A TCP+TLS listener and dialer.
pub struct TcpTransport {
    listener: Option<TcpListener>,
    acceptor: TlsAcceptor,
    identity: Identity,
}

impl TcpTransport {
    /// Binds the listener on `addr` (`accept = false`: dial only).
    pub async fn bind(
        addr: SocketAddr,
        identity: &Identity,
        accept: bool,
    ) -> Result<Self, TransportError> {
        let listener =
            if accept {
                let socket = if addr.is_ipv6() {
                    tokio::net::TcpSocket::new_v6()
                } else {
                    tokio::net::TcpSocket::new_v4()
                }
                .map_err(|e| TransportError::Setup(format!("cannot create TCP socket: {e}")))?;
                socket.set_reuseaddr(true).map_err(|e| {
                    TransportError::Setup(format!("cannot configure TCP socket: {e}"))
                })?;
                socket.bind(addr).map_err(|e| {
                    TransportError::Setup(format!("cannot listen on TCP {addr}: {e}"))
                })?;
                Some(socket.listen(128).map_err(|e| {
                    TransportError::Setup(format!("cannot listen on TCP {addr}: {e}"))
                })?)
            } else {
                None
            };
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls::server_config(identity)?)),
            identity: identity.clone(),
        })
    }

    /// The bound address, if listening.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Accepts connections until `cancel`; see [`super::quic::QuicTransport::serve`]
    /// (without address validation, which TCP's own handshake provides).
    pub async fn serve(
        self: Arc<Self>,
        links: mpsc::Sender<Link>,
        handshakes: Handshakes,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            let (stream, remote) = tokio::select! {
                () = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!("TCP accept failed: {e}");
                        // e.g. EMFILE: back off instead of spinning.
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let started = tokio::time::Instant::now();
            let remote = canonical(remote);
            let ticket = match handshakes.admit(remote.ip()) {
                Ok(ticket) => ticket,
                Err(refusal) => {
                    // Dropping the stream closes it.
                    tracing::debug!(%remote, "refusing TCP connection: {refusal}");
                    continue;
                }
            };
            let acceptor = self.acceptor.clone();
            let links = links.clone();
            tracker.spawn(async move {
                let handshake = async {
                    stream.set_nodelay(true).ok();
                    let tls = acceptor
                        .accept(buffered(stream))
                        .await
                        .map_err(|e| classify(e, remote))?;
                    let peer = verified_peer(tls.get_ref().1, remote)?;
                    Ok::<_, TransportError>(link(
                        tokio_rustls::TlsStream::Server(tls),
                        peer,
                        remote,
                    ))
                };
                let outcome = tokio::select! {
                    outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => outcome,
                    () = ticket.evicted() => {
                        tracing::debug!(%remote, "TLS handshake evicted: too many in flight");
                        return;
                    }
                };
                drop(ticket);
                match outcome {
                    Ok(Ok(mut link)) => {
                        link.accepted = Some(started);
                        let _ = links.send(link).await;
                    }
                    Ok(Err(e)) => tracing::info!(%remote, "TCP connection failed: {e}"),
                    Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
                }
            });
        }
    }

    async fn connect_inner(
        &self,
        addr: SocketAddr,
        expected: Option<DeviceId>,
    ) -> Result<Link, TransportError> {
        let stream = TcpStream::connect(addr).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                TransportError::Refused {
                    kind: TransportKind::Tcp,
                    addr,
                }
            } else {
                TransportError::Unreachable {
                    kind: TransportKind::Tcp,
                    addr,
                    reason: e.to_string(),
                }
            }
        })?;
        stream.set_nodelay(true).ok();
        let connector = TlsConnector::from(Arc::new(tls::client_config(&self.identity, expected)?));
        let name = ServerName::try_from(tls::SERVER_NAME)
            .map_err(|e| TransportError::Setup(format!("server name: {e}")))?;
        let tls = connector
            .connect(name, buffered(stream))
            .await
            .map_err(|e| classify(e, addr))?;
        let peer = verified_peer(tls.get_ref().1, addr)?;
        Ok(link(
            tokio_rustls::TlsStream::Client(tls),
            peer,
            canonical(addr),
        ))
    }
}

/// The peer's device ID, once the handshake also agreed on one of our
/// ALPNs. (QUIC enforces ALPN itself; plain TLS lets a handshake without
/// it pass.)
fn verified_peer(
    state: &rustls::CommonState,
    addr: SocketAddr,
) -> Result<DeviceId, TransportError> {
    let refuse = |reason: &str| TransportError::Identity {
        kind: TransportKind::Tcp,
        addr,
        reason: reason.into(),
    };
    if !crate::protocol::ALPNS.contains(&state.alpn_protocol().unwrap_or_default()) {
        return Err(refuse(
            "peer did not negotiate ALPN lanshare/1 or lanshare/1.1",
        ));
    }
    tls::peer_id(state.peer_certificates()).ok_or_else(|| refuse("peer presented no certificate"))
}

/// The byte stream under TLS: a TCP socket with a read buffer. rustls
/// reads at most 4 KiB per call; without a buffer that is one system call
/// per 4 KiB received.
pub(crate) type TcpIo = tokio::io::BufReader<TcpStream>;

/// Read-buffer size under TLS.
const TCP_READ_BUFFER: usize = 256 << 10;

fn buffered(stream: TcpStream) -> TcpIo {
    tokio::io::BufReader::with_capacity(TCP_READ_BUFFER, stream)
}

fn link(stream: tokio_rustls::TlsStream<TcpIo>, peer: DeviceId, remote: SocketAddr) -> Link {
    let pairing_exporter = pairing_exporter(&stream);
    let metadata = tls::has_metadata(stream.get_ref().1.alpn_protocol());
    let (reader, writer) = tokio::io::split(stream);
    Link {
        peer,
        kind: TransportKind::Tcp,
        remote,
        reader: Box::new(reader),
        writer: LinkWriter::Tcp(writer),
        metadata,
        guard: Guard::Tcp { pairing_exporter },
        accepted: None,
    }
}

/// Exporter output for [`Link::pairing_code`], read from the TLS session
/// before the stream is split (the halves do not expose the session).
fn pairing_exporter(stream: &tokio_rustls::TlsStream<TcpIo>) -> Option<[u8; 8]> {
    let label = crate::protocol::PAIRING_EXPORTER_LABEL;
    let out = [0u8; 8];
    match stream {
        tokio_rustls::TlsStream::Client(s) => {
            s.get_ref().1.export_keying_material(out, label, Some(b""))
        }
        tokio_rustls::TlsStream::Server(s) => {
            s.get_ref().1.export_keying_material(out, label, Some(b""))
        }
    }
    .ok()
}

impl Transport for TcpTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Tcp
    }

    fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<DeviceId>,
    ) -> BoxFuture<'_, Result<Link, TransportError>> {
        Box::pin(async move {
            tokio::time::timeout(CONNECT_TIMEOUT, self.connect_inner(addr, expected))
                .await
                .unwrap_or_else(|_| {
                    Err(TransportError::Unreachable {
                        kind: TransportKind::Tcp,
                        addr,
                        reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    })
                })
        })
    }
}

/// TLS errors about certificates are identity failures; the rest (reset,
/// refused, EOF) are connectivity.
fn classify(e: std::io::Error, addr: SocketAddr) -> TransportError {
    let identity = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(tls::is_identity_error);
    if identity {
        TransportError::Identity {
            kind: TransportKind::Tcp,
            addr,
            reason: e.to_string(),
        }
    } else {
        TransportError::Unreachable {
            kind: TransportKind::Tcp,
            addr,
            reason: e.to_string(),
        }
    }
}
