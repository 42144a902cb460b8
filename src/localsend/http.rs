//! HTTPS plumbing for LocalSend: the server's accept loop with its limits,
//! request bodies read within bounds, and client connections. HTTP/1.1
//! (hyper) over tokio-rustls with the configurations of [`super::tls`].
//!
//! Every resource a client can make the server hold is bounded, so a
//! hostile one can slow LocalSend down at worst, never the daemon:
//!
//! * connections: at most [`MAX_CONNECTIONS`], and [`MAX_CONNECTIONS_PER_IP`]
//!   from one address (one host cannot take every slot); more are closed at
//!   once;
//! * time: the TLS handshake must finish within [`HANDSHAKE_TIMEOUT`], each
//!   request head (also the wait for the next request on an idle
//!   keep-alive connection) within [`HEADER_TIMEOUT`], and a request body
//!   must keep moving ([`BODY_IDLE_TIMEOUT`] between reads): slow-loris
//!   heads and bodies are cut off;
//! * memory: request heads are limited to [`MAX_HEAD_BYTES`] (hyper's read
//!   buffer), JSON bodies to the size each route allows ([`read_body`]),
//!   uploads stream through a small buffer.
//!
//! Chunked and `Content-Length` bodies are both decoded by hyper; a body
//! shorter or longer than its `Content-Length`, or broken chunk framing,
//! is an error of the body stream that the route turns into a refusal.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::identity::DeviceId;
use crate::transport::tls::peer_id;

/// Most LocalSend connections served at once.
pub const MAX_CONNECTIONS: usize = 128;
/// Most LocalSend connections from one IP address at once (a sender uses
/// one per upload, and uploads may run in parallel).
pub const MAX_CONNECTIONS_PER_IP: usize = 16;
/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request head, counted from when the
/// server starts waiting for it (so also how long an idle keep-alive
/// connection stays open).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause within a request body before the request is abandoned.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// How long a client waits to reach a peer (TCP and TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The body of every answer the server gives (all are small).
pub type ServerBody = Full<Bytes>;

/// The body of a client request: a JSON document or an upload stream.
pub type ClientBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Who is on the other end of a server connection: its address and the
/// fingerprint its certificate proved in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The client's IP address (IPv4-mapped IPv6 shown as IPv4).
    pub ip: IpAddr,
    /// SHA-256 of the client's certificate.
    pub fingerprint: DeviceId,
}

/// Answers the requests of one server.
pub trait Handler: Send + Sync + 'static {
    /// The answer to `request` from `caller`.
    fn handle(
        self: &Arc<Self>,
        caller: Caller,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<ServerBody>> + Send;
}

/// Serves HTTPS on `listener` until `cancel`, one task per connection on
/// `tracker`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handler: Arc<H>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Slots::default());
    loop {
        let (stream, remote) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: back off briefly.
                    tracing::warn!("LocalSend: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ip = remote.ip().to_canonical();
        let Some(slot) = slots.take(ip) else {
            tracing::debug!(%ip, "LocalSend: too many connections; closing a new one");
            continue;
        };
        let (acceptor, handler, cancel) = (acceptor.clone(), handler.clone(), cancel.clone());
        tracker.spawn(async move {
            let _slot = slot;
            tokio::select! {
                () = cancel.cancelled() => {}
                () = serve_connection(stream, ip, acceptor, handler) => {}
            }
        });
    }
}

async fn serve_connection<H: Handler>(
    stream: TcpStream,
    ip: IpAddr,
    acceptor: TlsAcceptor,
    handler: Arc<H>,
) {
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%ip, "LocalSend: TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%ip, "LocalSend: TLS handshake timed out");
            return;
        }
    };
    // The verifier made a certificate mandatory; without one there is no
    // connection to serve.
    let Some(fingerprint) = peer_id(tls.get_ref().1.peer_certificates()) else {
        return;
    };
    let caller = Caller { ip, fingerprint };
    let service = hyper::service::service_fn(move |request| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler.handle(caller, request).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%ip, "LocalSend: connection ended: {e}");
    }
}

/// Connection slots: a global count and one per IP address.
#[derive(Default)]
struct Slots {
    counts: Mutex<SlotCounts>,
}

#[derive(Default)]
struct SlotCounts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One taken slot, given back on drop.
struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Slots {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if counts.total >= MAX_CONNECTIONS || from_ip >= MAX_CONNECTIONS_PER_IP {
            return None;
        }
        counts.total += 1;
        counts.per_ip.insert(ip, from_ip + 1);
        Some(Slot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .slots
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than the route allows.
    #[error("request body over the {0}-byte limit")]
    TooLarge(usize),
    /// Stalled longer than [`BODY_IDLE_TIMEOUT`].
    #[error("request body stalled for {} s", BODY_IDLE_TIMEOUT.as_secs())]
    Stalled,
    /// Broken framing, shorter than announced, or the connection failed.
    #[error("request body broken: {0}")]
    Broken(#[from] hyper::Error),
}

impl BodyError {
    /// The status that answers it.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Stalled => StatusCode::REQUEST_TIMEOUT,
            Self::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads a whole (JSON) request body of at most `max` bytes. A declared
/// `Content-Length` over the limit is refused before anything is read.
///
/// # Errors
/// [`BodyError`].
pub async fn read_body(request: Request<Incoming>, max: usize) -> Result<Bytes, BodyError> {
    if content_length(&request).is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge(max));
    }
    let mut body = request.into_body();
    let mut out = Vec::new();
    while let Some(frame) = next_frame(&mut body).await? {
        if out.len() + frame.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        out.extend_from_slice(&frame);
    }
    Ok(out.into())
}

/// The next data chunk of a request body (`None` at its end), within
/// [`BODY_IDLE_TIMEOUT`].
///
/// # Errors
/// [`BodyError::Stalled`] or [`BodyError::Broken`].
pub async fn next_frame(body: &mut Incoming) -> Result<Option<Bytes>, BodyError> {
    loop {
        let frame = tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| BodyError::Stalled)?;
        match frame {
            None => return Ok(None),
            Some(frame) => {
                // Trailers carry no data.
                if let Ok(data) = frame?.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// The request's `Content-Length`, if it has a valid one.
pub fn content_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// An answer with a JSON body.
pub fn json(status: StatusCode, body: Vec<u8>) -> Response<ServerBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// An answer without a body.
pub fn empty(status: StatusCode) -> Response<ServerBody> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The peer could not be reached.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// Where we tried.
        addr: SocketAddr,
        /// Why not.
        reason: String,
    },
    /// The peer's certificate is not the one we expected, or the peer
    /// refused ours.
    #[error("{addr} is not the device we expected (certificate check failed: {reason})")]
    Identity {
        /// Where we tried.
        addr: SocketAddr,
        /// What the TLS layer said.
        reason: String,
    },
    /// The peer took too long.
    #[error("{addr} did not answer in time")]
    Timeout {
        /// Where we tried.
        addr: SocketAddr,
    },
    /// The HTTP exchange failed.
    #[error("connection to {addr} failed: {reason}")]
    Http {
        /// Where we tried.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
}

/// An HTTPS connection to a LocalSend peer, its certificate checked.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<ClientBody>,
    addr: SocketAddr,
    /// SHA-256 of the certificate the peer proved.
    pub fingerprint: DeviceId,
}

/// Connects to `addr` with `tls` (which pins the expected fingerprint, or
/// not), within [`CONNECT_TIMEOUT`].
///
/// # Errors
/// [`ClientError::Unreachable`], [`ClientError::Identity`] or
/// [`ClientError::Timeout`].
pub async fn connect(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Connection, ClientError> {
    let attempt = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Unreachable {
                addr,
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let name =
            rustls::pki_types::ServerName::try_from(super::tls::SERVER_NAME).map_err(|e| {
                ClientError::Unreachable {
                    addr,
                    reason: e.to_string(),
                }
            })?;
        TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| classify(addr, &e))
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| ClientError::Timeout { addr })??;
    let fingerprint =
        peer_id(stream.get_ref().1.peer_certificates()).ok_or(ClientError::Identity {
            addr,
            reason: "no certificate".into(),
        })?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Http {
            addr,
            reason: e.to_string(),
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%addr, "LocalSend connection ended: {e}");
        }
    });
    Ok(Connection {
        sender,
        addr,
        fingerprint,
    })
}

impl Connection {
    /// Sends `request` and returns the status and the body of the answer
    /// (at most `max_answer` bytes are kept).
    ///
    /// # Errors
    /// [`ClientError::Identity`] when the server refused our certificate
    /// (TLS 1.3 reports that only now), [`ClientError::Http`] otherwise.
    pub async fn send(
        &mut self,
        request: Request<ClientBody>,
        max_answer: usize,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let addr = self.addr;
        let http = |e: hyper::Error| match tls_error(&e) {
            Some(tls) => classify(addr, &std::io::Error::other(tls.clone())),
            None => ClientError::Http {
                addr,
                reason: e.to_string(),
            },
        };
        self.sender.ready().await.map_err(http)?;
        let response = self.sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let mut body = response.into_body();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(http)?.into_data() {
                let room = max_answer.saturating_sub(out.len());
                out.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
        Ok((status, out.into()))
    }

    /// The address connected to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the connection is gone (the peer closed it, or it failed).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// The rustls error somewhere in a hyper error's causes.
fn tls_error(e: &hyper::Error) -> Option<&rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An io::Error's source() skips the error it wraps.
        if let Some(tls) = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        source = s.source();
    }
    None
}

/// Sorts a handshake failure into identity or connectivity.
fn classify(addr: SocketAddr, e: &std::io::Error) -> ClientError {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(tls) if crate::transport::tls::is_identity_error(tls) => ClientError::Identity {
            addr,
            reason: tls.to_string(),
        },
        _ => ClientError::Unreachable {
            addr,
            reason: e.to_string(),
        },
    }
}

/// A request body from a JSON document.
pub fn json_body(body: Vec<u8>) -> ClientBody {
    Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed()
}

/// A request body streamed from a channel, of exactly `len` bytes (sent
/// with `Content-Length`); the producer ends it early with an error.
/// `taken` hears of every piece hyper takes to send.
pub fn stream_body(
    chunks: mpsc::Receiver<std::io::Result<Bytes>>,
    len: u64,
    taken: impl Fn(u64) + Send + Sync + 'static,
) -> ClientBody {
    StreamBody {
        chunks,
        remaining: len,
        taken: Box::new(taken),
    }
    .boxed()
}

struct StreamBody {
    chunks: mpsc::Receiver<std::io::Result<Bytes>>,
    remaining: u64,
    taken: Box<dyn Fn(u64) + Send + Sync>,
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.chunks.poll_recv(cx) {
            Poll::Ready(Some(Ok(data))) => {
                self.remaining = self.remaining.saturating_sub(data.len() as u64);
                (self.taken)(data.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_globally_and_per_address() {
        let slots = Arc::new(Slots::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mine: Vec<Slot> = (0..MAX_CONNECTIONS_PER_IP)
            .map(|_| slots.take(a).unwrap())
            .collect();
        assert!(slots.take(a).is_none(), "one address cannot take more");
        let others: Vec<Slot> = (0..MAX_CONNECTIONS - MAX_CONNECTIONS_PER_IP)
            .map(|i| slots.take(IpAddr::from([10, 0, 1, i as u8])).unwrap())
            .collect();
        assert!(
            slots.take("10.0.2.1".parse().unwrap()).is_none(),
            "all taken"
        );
        drop(mine);
        assert!(slots.take(a).is_some(), "given back on drop");
        drop(others);
        let counts = slots.counts.lock().unwrap();
        assert_eq!((counts.total, counts.per_ip.len()), (0, 0));
    }
}
