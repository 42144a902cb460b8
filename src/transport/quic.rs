//! QUIC transport (quinn): the preferred way between two devices.
//!
//! One UDP socket serves both directions. The socket is created with socket2
//! so its buffers can be raised to [`UDP_BUFFER_SIZE`] (quinn leaves the
//! kernel default of ~208 KiB, which drops packets at LAN speeds); if the
//! kernel clamps the request, a warning names the sysctl to raise. Transport
//! parameters follow the measurements in `shared/notes/tech.md` §5: a 15 s
//! idle timeout with 5 s keep-alives, Cubic congestion control, GSO on, and
//! an 8 MiB stream window: enough for ~800 MB/s at a 10 ms (busy Wi-Fi)
//! round trip, and measured here both faster and lighter than 16 MiB (the
//! receiver buffers up to a window of data: 46 instead of 62 MiB peak RSS
//! for a 4 GiB transfer).
//!
//! Packets start at 1452 bytes of UDP payload (safe on any Ethernet path,
//! IPv4 or IPv6) and MTU discovery then probes up to [`MAX_UDP_PAYLOAD`]:
//! a 1500-byte LAN settles at its limit, while jumbo-frame LANs and
//! loopback carry 6500-byte packets, which cuts quinn's per-packet work
//! (and the CPU of a 1 GiB transfer on loopback) by about a third. The
//! bound stops at 6500 because GSO hands the kernel up to ten segments in
//! one send and the whole send must fit a 64 KiB UDP datagram: a larger
//! bound (9000, say) makes those sends fail, and the path falls back to
//! 1200. A probe that does not fit the interface fails locally and only
//! ends the search; it is never mistaken for congestion. What discovery
//! reached is remembered per peer address for a while (`path_mtu`), so
//! the next connection there starts at that size instead of climbing again
//! from 1452 bytes; black-hole detection still falls back if the path
//! changed.
//!
//! The peer is asked to acknowledge within 2 ms rather than QUIC's default
//! 25 ms (ACK frequency extension), because on a LAN that delay, not the
//! round trip, would pace loss recovery and the start of each transfer.
//!
//! Before its first round-trip sample, a connection assumes 100 ms instead
//! of RFC 9002's 333 ms, a default made for the internet. A lost handshake
//! packet is then resent after 0.3 s instead of 1 s, and a lost first
//! answer leaves a first round-trip sample of about 0.3 s instead of 1 s
//! behind, which paces the later resends of the handshake. On a LAN with
//! 10 % loss this cut the slowest tenth of connection setups from 1 s to
//! 0.3 s; a real round trip above 100 ms (rare even on Wi-Fi) costs a few
//! early resends.
//!
//! Each transfer uses one bidirectional stream on its own connection: the
//! dialer opens it and writes `Hello` at once, so the acceptor's
//! `accept_bi` completes.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::Handshakes;
use super::path_mtu::PathMtus;
use super::{
    BoxFuture, CONNECT_TIMEOUT, Guard, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, KEEP_ALIVE, Link,
    LinkWriter, Transport, TransportError, TransportKind, UDP_BUFFER_SIZE, canonical, tls,
};
use crate::identity::{DeviceId, Identity};

/// A bound QUIC endpoint that can dial and accept.
pub struct QuicTransport {
    endpoint: quinn::Endpoint,
    identity: Identity,
    transport: Arc<quinn::TransportConfig>,
    /// The MTU each peer's last connection discovered.
    mtus: Arc<PathMtus>,
    buffer_warning: Option<String>,
}

/// The transport parameters of every lanshare QUIC connection (see the
/// module docs). Public so the benchmark's raw-quinn ceiling measures
/// exactly these settings.
///
/// # Errors
/// Only if the idle timeout were out of QUIC's range.
pub fn transport_config() -> Result<quinn::TransportConfig, TransportError> {
    transport_config_from(INITIAL_MTU)
}

/// [`transport_config`] for a connection whose packets start at
/// `initial_mtu` bytes of UDP payload.
fn transport_config_from(initial_mtu: u16) -> Result<quinn::TransportConfig, TransportError> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
        .map_err(|e| TransportError::Setup(format!("idle timeout: {e}")))?;
    t.max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .stream_receive_window(quinn::VarInt::from_u32(8 << 20))
        .send_window(64 << 20)
        // The session's one stream (PROTOCOL.md §3): a peer cannot open
        // more and make quinn buffer a stream window for each.
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(1))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .initial_rtt(INITIAL_RTT)
        .initial_mtu(initial_mtu)
        .mtu_discovery_config(Some(mtu_discovery()))
        .ack_frequency_config(Some(ack_frequency()));
    Ok(t)
}

/// The UDP payload a connection starts at when nothing is known about the
/// path: safe on any Ethernet path, IPv4 or IPv6.
pub const INITIAL_MTU: u16 = 1452;

/// The largest UDP payload lanshare sends or accepts, and the bound of MTU
/// discovery: ten GSO segments of this size (quinn's batch) still fit one
/// 64 KiB UDP send (see the module docs).
pub const MAX_UDP_PAYLOAD: u16 = 6500;

fn mtu_discovery() -> quinn::MtuDiscoveryConfig {
    let mut m = quinn::MtuDiscoveryConfig::default();
    m.upper_bound(MAX_UDP_PAYLOAD);
    m
}

/// The round-trip estimate before the first measurement (see the module
/// docs).
/// How long a stopping daemon waits for its connections to go idle. The
/// close frames leave at once; what follows is each connection's draining
/// period (three probe timeouts: a second on a loopback link busy with a
/// transfer, whose queues inflate the round trip), which only answers the
/// peer's late packets with the close again. A stop must not wait for it
/// (issue 13 item 9: a stop takes well under a second).
const CLOSE_FRAMES_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

const INITIAL_RTT: std::time::Duration = std::time::Duration::from_millis(100);

/// The longest the peer may wait before acknowledging (see [`ack_frequency`]).
const MAX_ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// How soon the peer must acknowledge: within [`MAX_ACK_DELAY`] instead of
/// QUIC's default 25 ms, still every other packet. On a LAN the round trip
/// is well under a millisecond, so a 25 ms delay would dominate both loss
/// recovery and the start of a transfer, where a sender with a small
/// congestion window waits for the ACK of an odd packet (with 6500-byte
/// packets, 2000 small files took a fifth longer). Uses the QUIC ACK
/// frequency extension; a peer without it keeps its own delay.
fn ack_frequency() -> quinn::AckFrequencyConfig {
    let mut a = quinn::AckFrequencyConfig::default();
    a.max_ack_delay(Some(MAX_ACK_DELAY));
    a
}

/// The one QUIC version lanshare speaks: version 1 (RFC 9000). quinn
/// also speaks drafts of it by default; PROTOCOL.md §3 allows only this.
pub const QUIC_VERSION: u32 = 1;

/// Endpoint settings for QUIC version 1 only ([`QUIC_VERSION`]), whose
/// stateless-reset key and connection-ID key are derived from the device
/// key, so they survive restarts: a daemon that
/// crashed and came back recognises its old connection IDs and resets its
/// peers' stale connections at once, instead of leaving them to wait out
/// the idle timeout before they retry (and resume).
fn endpoint_config(identity: &Identity) -> Result<quinn::EndpointConfig, TransportError> {
    let secret = blake3::derive_key(
        "lanshare 2026 QUIC stateless reset key",
        identity.key().secret_der(),
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    config.supported_versions(vec![QUIC_VERSION]);
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| TransportError::Setup(format!("QUIC payload size: {e}")))?;
    let cid_key = blake3::derive_key("lanshare 2026 QUIC connection id key", &secret);
    let mut cid_seed = [0u8; 8];
    cid_seed.copy_from_slice(&cid_key[..8]);
    let cid_seed = u64::from_le_bytes(cid_seed);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_seed))
    });
    Ok(config)
}

/// Creates the UDP socket: dual-stack when bound to `::`, buffers raised.
/// Returns the socket and, if the kernel clamped the buffers, a warning.
fn udp_socket(addr: SocketAddr) -> Result<(std::net::UdpSocket, Option<String>), TransportError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let setup = |what: &str, e: std::io::Error| {
        TransportError::Setup(format!("cannot {what} UDP socket on {addr}: {e}"))
    };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| setup("create", e))?;
    if addr.is_ipv6() {
        socket
            .set_only_v6(addr.ip() != IpAddr::V6(Ipv6Addr::UNSPECIFIED))
            .map_err(|e| setup("configure", e))?;
    }
    // Best effort: failure here only costs throughput, reported below.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_SIZE);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_SIZE);
    // Linux reports double the usable size it granted.
    let recv = socket.recv_buffer_size().unwrap_or(0);
    let send = socket.send_buffer_size().unwrap_or(0);
    let warning = (recv < UDP_BUFFER_SIZE || send < UDP_BUFFER_SIZE).then(|| {
        format!(
            "UDP socket buffers clamped by the kernel (receive {recv} B, send {send} B, wanted {UDP_BUFFER_SIZE} B); \
             QUIC may drop packets at high speed. Raise them with: sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000"
        )
    });
    socket.bind(&addr.into()).map_err(|e| setup("bind", e))?;
    Ok((socket.into(), warning))
}

impl QuicTransport {
    /// Binds the endpoint on `addr` (port 0 picks a free port).
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        accept: bool,
    ) -> Result<Self, TransportError> {
        let transport = Arc::new(transport_config()?);
        let server = if accept {
            let crypto = QuicServerConfig::try_from(tls::server_config(identity)?)
                .map_err(|e| TransportError::Setup(format!("QUIC TLS config: {e}")))?;
            let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
            server.transport_config(transport.clone());
            Some(server)
        } else {
            None
        };
        let (socket, buffer_warning) = udp_socket(addr)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| TransportError::Setup("no async runtime for QUIC".into()))?;
        let endpoint = quinn::Endpoint::new(endpoint_config(identity)?, server, socket, runtime)
            .map_err(|e| TransportError::Setup(format!("cannot start QUIC on {addr}: {e}")))?;
        Ok(Self {
            endpoint,
            identity: identity.clone(),
            transport,
            mtus: Arc::new(PathMtus::new(INITIAL_MTU, MAX_UDP_PAYLOAD)),
            buffer_warning,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.endpoint
            .local_addr()
            .map_err(|e| TransportError::Setup(format!("QUIC local address: {e}")))
    }

    /// Set when the kernel refused the requested socket buffer sizes.
    pub fn buffer_warning(&self) -> Option<&str> {
        self.buffer_warning.as_deref()
    }

    /// Accepts connections until `cancel`, handing authenticated links to
    /// `links`. Each handshake runs in its own task so a slow or hostile
    /// client never blocks others; `handshakes` bounds the ones in flight
    /// (see [`super::admission`]): under load a new client must first
    /// prove its address with a Retry, one address gets only its share,
    /// and a full budget evicts the oldest handshake.
    pub async fn serve(
        self: Arc<Self>,
        links: mpsc::Sender<Link>,
        handshakes: Handshakes,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) {
        loop {
            let incoming = tokio::select! {
                () = cancel.cancelled() => break,
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => incoming,
                    None => break,
                },
            };
            let started = tokio::time::Instant::now();
            let remote = canonical(incoming.remote_address());
            if !incoming.remote_address_validated() && handshakes.must_validate() {
                // Stateless: the client comes back with a token from the
                // address it claims, or never (a forged address).
                let _ = incoming.retry();
                continue;
            }
            let ticket = match handshakes.admit(remote.ip()) {
                Ok(ticket) => ticket,
                Err(refusal) => {
                    tracing::debug!(%remote, "refusing QUIC connection: {refusal}");
                    incoming.refuse();
                    continue;
                }
            };
            let links = links.clone();
            let mtus = self.mtus.clone();
            tracker.spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_one(incoming, mtus));
                let outcome = tokio::select! {
                    outcome = handshake => outcome,
                    () = ticket.evicted() => {
                        tracing::debug!(%remote, "QUIC handshake evicted: too many in flight");
                        return;
                    }
                };
                drop(ticket);
                match outcome {
                    Ok(Ok(mut link)) => {
                        link.accepted = Some(started);
                        let _ = links.send(link).await;
                    }
                    Ok(Err(e)) => tracing::info!(%remote, "QUIC connection failed: {e}"),
                    Err(_) => tracing::info!(%remote, "QUIC handshake timed out"),
                }
            });
        }
    }

    /// Closes every connection and gives the close frames
    /// `CLOSE_FRAMES_WAIT` to go out.
    pub async fn shutdown(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"daemon shutting down");
        let _ = tokio::time::timeout(CLOSE_FRAMES_WAIT, self.endpoint.wait_idle()).await;
    }

    async fn connect_inner(
        &self,
        addr: SocketAddr,
        expected: Option<DeviceId>,
    ) -> Result<Link, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable {
            kind: TransportKind::Quic,
            addr,
            reason,
        };
        let crypto = QuicClientConfig::try_from(tls::client_config(&self.identity, expected)?)
            .map_err(|e| TransportError::Setup(format!("QUIC TLS config: {e}")))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let initial_mtu = self.mtus.initial(addr.ip());
        config.transport_config(if initial_mtu == INITIAL_MTU {
            self.transport.clone()
        } else {
            Arc::new(transport_config_from(initial_mtu)?)
        });
        let connecting = self
            .endpoint
            .connect_with(config, addr, tls::SERVER_NAME)
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = connecting.await.map_err(|e| classify(e, addr))?;
        let peer = peer_of(&conn).ok_or_else(|| TransportError::Identity {
            kind: TransportKind::Quic,
            addr,
            reason: "peer presented no certificate".into(),
        })?;
        let (send, recv) = conn.open_bi().await.map_err(|e| classify(e, addr))?;
        Ok(Link {
            peer,
            kind: TransportKind::Quic,
            remote: canonical(addr),
            reader: Box::new(recv),
            writer: LinkWriter::Quic(send),
            metadata: has_metadata(&conn),
            guard: Guard::Quic(conn, self.mtus.clone()),
            accepted: None,
        })
    }
}

impl Transport for QuicTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Quic
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
                        kind: TransportKind::Quic,
                        addr,
                        reason: format!(
                            "no answer within {} s (UDP blocked or nothing listening)",
                            CONNECT_TIMEOUT.as_secs()
                        ),
                    })
                })
        })
    }
}

/// Completes an incoming connection; what its MTU discovery reaches goes
/// into `mtus` when it ends.
async fn accept_one(
    incoming: quinn::Incoming,
    mtus: Arc<PathMtus>,
) -> Result<Link, TransportError> {
    let addr = canonical(incoming.remote_address());
    let conn = incoming.await.map_err(|e| classify(e, addr))?;
    let peer = peer_of(&conn).ok_or_else(|| TransportError::Identity {
        kind: TransportKind::Quic,
        addr,
        reason: "peer presented no certificate".into(),
    })?;
    let (send, recv) = conn.accept_bi().await.map_err(|e| classify(e, addr))?;
    Ok(Link {
        peer,
        kind: TransportKind::Quic,
        remote: addr,
        reader: Box::new(recv),
        writer: LinkWriter::Quic(send),
        metadata: has_metadata(&conn),
        guard: Guard::Quic(conn, mtus),
        accepted: None,
    })
}

/// Whether the connection negotiated ALPN
/// [`crate::protocol::ALPN_METADATA`].
fn has_metadata(conn: &quinn::Connection) -> bool {
    let alpn = conn
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    tls::has_metadata(alpn.as_deref())
}

fn peer_of(conn: &quinn::Connection) -> Option<DeviceId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    tls::peer_id(Some(&certs))
}

/// Maps quinn's errors: TLS alerts about certificates are identity
/// failures, everything else means "not reachable this way".
fn classify(e: quinn::ConnectionError, addr: SocketAddr) -> TransportError {
    let reason = e.to_string();
    if is_identity_close(&e) {
        TransportError::Identity {
            kind: TransportKind::Quic,
            addr,
            reason,
        }
    } else {
        TransportError::Unreachable {
            kind: TransportKind::Quic,
            addr,
            reason,
        }
    }
}

/// Whether a connection ended because a TLS certificate was refused.
pub(super) fn is_identity_close(e: &quinn::ConnectionError) -> bool {
    let code = match e {
        quinn::ConnectionError::TransportError(t) => t.code,
        quinn::ConnectionError::ConnectionClosed(c) => c.error_code,
        _ => return false,
    };
    is_identity_alert(code)
}

/// QUIC carries TLS alerts as transport error codes 0x100 + alert.
fn is_identity_alert(code: quinn::TransportErrorCode) -> bool {
    let value = u64::from(code);
    if !(0x100..0x200).contains(&value) {
        return false;
    }
    let alert = rustls::AlertDescription::from((value - 0x100) as u8);
    tls::is_identity_error(&rustls::Error::AlertReceived(alert))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use tokio::io::AsyncWriteExt;

    use crate::transport::admission::HandshakeLimits;

    /// A listening QUIC transport on loopback with a fresh identity, the
    /// links it accepts, and the token that stops it. Needs a runtime.
    pub(crate) fn listening_on_loopback() -> (
        Arc<QuicTransport>,
        Identity,
        mpsc::Receiver<Link>,
        CancellationToken,
    ) {
        let (transport, identity, incoming, cancel, _) = listening_with(HandshakeLimits::default());
        (transport, identity, incoming, cancel)
    }

    /// [`listening_on_loopback`] with a handshake budget of `limits`,
    /// which is returned too.
    fn listening_with(
        limits: HandshakeLimits,
    ) -> (
        Arc<QuicTransport>,
        Identity,
        mpsc::Receiver<Link>,
        CancellationToken,
        Handshakes,
    ) {
        let identity = Identity::generate().unwrap();
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let transport = Arc::new(QuicTransport::bind(lo, &identity, true).unwrap());
        let (links, incoming) = mpsc::channel(1);
        let cancel = CancellationToken::new();
        let handshakes = Handshakes::new(limits);
        tokio::spawn(transport.clone().serve(
            links,
            handshakes.clone(),
            cancel.clone(),
            TaskTracker::new(),
        ));
        (transport, identity, incoming, cancel, handshakes)
    }

    /// The first datagram of a new client connection to `server`: a
    /// genuine Initial, from a client that will never answer.
    fn initial_to(server: SocketAddr) -> Vec<u8> {
        let identity = Identity::generate().unwrap();
        let crypto =
            QuicClientConfig::try_from(tls::client_config(&identity, None).unwrap()).unwrap();
        let mut client = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            None,
            false,
            None,
        );
        let now = Instant::now();
        let config = quinn::ClientConfig::new(Arc::new(crypto));
        let (_, mut conn) = client
            .connect(now, config, server, tls::SERVER_NAME)
            .unwrap();
        let mut buf = Vec::new();
        let transmit = conn.poll_transmit(now, 1, &mut buf).unwrap();
        buf.truncate(transmit.size);
        buf
    }

    /// Sends `initial` from `socket` to `server` and returns the type of
    /// the first long-header packet that comes back (RFC 9000 §17.2:
    /// 0 Initial, 3 Retry).
    async fn answer_to(socket: &tokio::net::UdpSocket, server: SocketAddr, initial: &[u8]) -> u8 {
        socket.send_to(initial, server).await.unwrap();
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
            .await
            .expect("the server answers an Initial")
            .unwrap();
        assert!(n > 0 && buf[0] & 0x80 != 0, "not a long header");
        (buf[0] >> 4) & 0x03
    }

    /// Under load, a client that has not proven its address gets a Retry
    /// and no handshake slot, so Initials that are never followed up (or
    /// come from forged addresses) cost one stateless answer each; an
    /// honest client follows the Retry and connects as usual.
    #[tokio::test]
    async fn under_load_an_initial_gets_a_retry_and_no_slot() {
        let limits = HandshakeLimits {
            validate_above: 1,
            ..HandshakeLimits::default()
        };
        let (server, server_id, mut incoming, cancel, handshakes) = listening_with(limits);
        let addr = server.local_addr().unwrap();
        let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();

        // Not under load: the Initial is answered with the server's own
        // Initial, and its handshake holds a slot.
        assert_eq!(answer_to(&raw, addr, &initial_to(addr)).await, 0);
        assert_eq!(handshakes.in_flight(), 1);
        // Now under load: a Retry, and no second slot.
        let raw2 = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(answer_to(&raw2, addr, &initial_to(addr)).await, 3);
        assert_eq!(handshakes.in_flight(), 1);

        let client = QuicTransport::bind(
            "127.0.0.1:0".parse().unwrap(),
            &Identity::generate().unwrap(),
            false,
        )
        .unwrap();
        let link = client.connect(addr, Some(server_id.id())).await;
        let mut link = link.expect("an honest client connects after the Retry");
        // The stream shows at the server with its first bytes.
        link.writer.write_all(b"x").await.unwrap();
        let accepted = incoming
            .recv()
            .await
            .expect("the server hands over the link");
        assert_eq!(accepted.peer, client.identity.id());
        cancel.cancel();
    }

    /// Only QUIC version 1: a client offering a draft version (which quinn
    /// speaks too) gets a Version Negotiation packet and no connection.
    #[tokio::test]
    async fn only_quic_version_1_is_spoken() {
        let (server, server_id, _incoming, cancel) = listening_on_loopback();
        let addr = server.local_addr().unwrap();
        let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let identity = Identity::generate().unwrap();
        let crypto = QuicClientConfig::try_from(
            tls::client_config(&identity, Some(server_id.id())).unwrap(),
        )
        .unwrap();
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.version(0xff00_001d); // draft 29
        let connecting = client.connect_with(config, addr, tls::SERVER_NAME).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .expect("the server answers at once");
        assert!(
            matches!(result, Err(quinn::ConnectionError::VersionMismatch)),
            "{:?}",
            result.map(|_| ())
        );
        // Version 1 connects (see the other tests); the server's endpoint
        // lists nothing else.
        cancel.cancel();
    }

    /// A peer gets credit for the session's one stream and no more, so it
    /// cannot make the daemon buffer a stream window (8 MiB) on streams no
    /// session reads: a second stream cannot even be opened.
    #[tokio::test]
    async fn a_peer_can_open_only_the_one_session_stream() {
        let (server, server_id, mut incoming, cancel) = listening_on_loopback();
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let client = QuicTransport::bind(lo, &Identity::generate().unwrap(), false).unwrap();
        let mut link = client
            .connect(server.local_addr().unwrap(), Some(server_id.id()))
            .await
            .unwrap();
        link.writer.write_all(b"x").await.unwrap();
        // Held: a session that ended would give the stream's credit back.
        let _accepted = incoming
            .recv()
            .await
            .expect("the server hands over the link");
        // The handshake told the client its stream credit; an opening
        // within it is ready at the first poll, one beyond it never is.
        let second = tokio::time::timeout(Duration::ZERO, connection(&link).open_bi()).await;
        assert!(second.is_err(), "a second stream was opened");
        cancel.cancel();
    }

    /// On a path that carries them (loopback here), MTU discovery climbs
    /// all the way to [`MAX_UDP_PAYLOAD`]. Both settings are needed: the
    /// transport's discovery bound and the payload size each endpoint
    /// advertises; leaving either at quinn's default silently caps every
    /// path at Ethernet size and costs a third of the QUIC throughput.
    #[tokio::test]
    async fn mtu_discovery_reaches_the_payload_limit_where_the_path_allows() {
        let (server, server_id, _incoming, cancel) = listening_on_loopback();
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let client = QuicTransport::bind(lo, &Identity::generate().unwrap(), false).unwrap();
        let link = client
            .connect(server.local_addr().unwrap(), Some(server_id.id()))
            .await
            .unwrap();
        assert_eq!(connection(&link).stats().path.current_mtu, INITIAL_MTU);
        assert_eq!(
            mtu_reaches(&link, MAX_UDP_PAYLOAD).await,
            MAX_UDP_PAYLOAD,
            "MTU discovery stopped early"
        );
        cancel.cancel();
    }

    /// The QUIC connection under a link.
    fn connection(link: &Link) -> &quinn::Connection {
        let Guard::Quic(conn, _) = &link.guard else {
            panic!("a QUIC link without a QUIC connection");
        };
        conn
    }

    /// Polls (bounded) until the link's path MTU is `wanted`: quinn raises
    /// no event when a probe succeeds.
    async fn mtu_reaches(link: &Link, wanted: u16) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut mtu = connection(link).stats().path.current_mtu;
        while mtu != wanted && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
            mtu = connection(link).stats().path.current_mtu;
        }
        mtu
    }

    /// A connection to an address whose last connection discovered a
    /// larger MTU starts there: no climb from [`INITIAL_MTU`] by binary
    /// search (eight probes, a round trip each, from 1452 to 6500).
    #[tokio::test]
    async fn a_new_connection_starts_at_the_mtu_the_last_one_discovered() {
        let (server, server_id, mut incoming, cancel) = listening_on_loopback();
        let addr = server.local_addr().unwrap();
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let client = QuicTransport::bind(lo, &Identity::generate().unwrap(), false).unwrap();
        assert_eq!(client.mtus.initial(addr.ip()), INITIAL_MTU);
        let mut first = client.connect(addr, Some(server_id.id())).await.unwrap();
        // The server hands a link over once the stream carries a byte; it
        // serves one at a time.
        first.writer.write_all(b"x").await.unwrap();
        first.writer.flush().await.unwrap();
        let theirs = incoming.recv().await.unwrap();
        assert_eq!(mtu_reaches(&first, MAX_UDP_PAYLOAD).await, MAX_UDP_PAYLOAD);
        drop((first, theirs));
        assert_eq!(client.mtus.initial(addr.ip()), MAX_UDP_PAYLOAD);
        let second = client.connect(addr, Some(server_id.id())).await.unwrap();
        let stats = connection(&second).stats().path;
        assert_eq!(
            stats.current_mtu, MAX_UDP_PAYLOAD,
            "started below: {stats:?}"
        );
        cancel.cancel();
    }

    /// A UDP relay in front of `server` that drops every datagram larger
    /// than `limit` bytes: the same address as before, but now a path that
    /// carries only Ethernet-sized packets. Returns the address to dial.
    async fn narrow_path(server: SocketAddr, limit: usize) -> SocketAddr {
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
            let mut client = None;
            loop {
                tokio::select! {
                    r = front.recv_from(&mut up) => {
                        let Ok((n, from)) = r else { return };
                        client = Some(from);
                        if n <= limit {
                            let _ = back.send(&up[..n]).await;
                        }
                    }
                    r = back.recv(&mut down) => {
                        let Ok(n) = r else { return };
                        if let (true, Some(to)) = (n <= limit, client) {
                            let _ = front.send_to(&down[..n], to).await;
                        }
                    }
                }
            }
        });
        addr
    }

    /// The remembered MTU is only a starting point: when the path no
    /// longer carries it, black-hole detection falls back, the data still
    /// arrives, and the smaller size the connection ends with replaces the
    /// remembered one.
    #[tokio::test]
    async fn a_remembered_mtu_the_path_no_longer_carries_falls_back() {
        let (server, server_id, mut incoming, cancel) = listening_on_loopback();
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let client = QuicTransport::bind(lo, &Identity::generate().unwrap(), false).unwrap();
        let path = narrow_path(server.local_addr().unwrap(), 1472).await;
        client.mtus.record(path.ip(), MAX_UDP_PAYLOAD);
        let mut link = client.connect(path, Some(server_id.id())).await.unwrap();
        assert_eq!(connection(&link).stats().path.current_mtu, MAX_UDP_PAYLOAD);
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        link.writer.write_all(&data).await.unwrap();
        link.finish().await.unwrap();
        let mut theirs = incoming.recv().await.unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut theirs.reader, &mut got)
            .await
            .unwrap();
        assert!(got == data, "{} of {} bytes arrived", got.len(), data.len());
        let stats = connection(&link).stats().path;
        assert!(stats.black_holes_detected >= 1, "{stats:?}");
        assert!(stats.current_mtu <= 1472, "{stats:?}");
        drop(link);
        assert!(client.mtus.initial(path.ip()) <= 1472);
        cancel.cancel();
    }

    /// Before its first round-trip sample a connection assumes
    /// [`INITIAL_RTT`], so a first packet that goes unanswered is resent
    /// after one probe timeout of 3 × 100 ms (RFC 9002 §6.2: the estimate
    /// plus four times half of it), not QUIC's default of 1 s. Time is
    /// paused: quinn's timers run on tokio's clock, so the gap is exact.
    #[tokio::test(start_paused = true)]
    async fn an_unanswered_first_packet_is_resent_after_three_initial_round_trips() {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let client = QuicTransport::bind(lo, &Identity::generate().unwrap(), false).unwrap();
        let listen = async {
            let mut buf = [0u8; 2048];
            silent.recv(&mut buf).await.unwrap();
            let first = tokio::time::Instant::now();
            loop {
                silent.recv(&mut buf).await.unwrap();
                let gap = first.elapsed();
                // Datagrams of the same flight arrive at the same instant.
                if !gap.is_zero() {
                    return gap;
                }
            }
        };
        let gap = tokio::select! {
            gap = listen => gap,
            r = client.connect(silent.local_addr().unwrap(), None) => panic!("{r:?}"),
        };
        let pto = 3 * INITIAL_RTT;
        assert!(
            pto <= gap && gap < pto + Duration::from_millis(10),
            "resent after {gap:?}"
        );
    }
}
