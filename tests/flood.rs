//! Lock-out without a key (issue 14 item 1): a host with no key anyone
//! trusts floods a receiver with idle TCP connections, QUIC Initials that
//! never finish their handshake, and offers from throwaway identities that
//! wait for consent. A trusted device, from another address, must still get
//! its files through on both transports while all of that is held open.
//!
//! The trusted sender and the receiver use 127.0.0.1, the attackers other
//! addresses: on Linux the whole of 127.0.0.0/8 is loopback, so many hosts
//! need no namespace.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanshare::identity::Identity;
use lanshare::protocol::{Entry, EntryKind, Manifest, Message};
use lanshare::transfer::framed::Framed;
use lanshare::transport::quic::QuicTransport;
use lanshare::transport::tls;

use crate::common::{TestDaemon, assert_same_file, random_file};
use crate::transfer::{failure, send_json};

/// The attacking host.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The `n`th of many attacking hosts (n < 65 536), from 127.1.0.0 up.
fn host(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (n >> 8) as u8, n as u8))
}

/// Idle TCP connections, QUIC Initials and pending offers in the flood.
const TCP_CONNECTIONS: usize = 300;
const QUIC_INITIALS: usize = 300;
const OFFERS: usize = 200;

/// Everything the attacker holds open while the trusted device sends.
struct Flood {
    /// Strangers' connections waiting for consent to an offer, or idle
    /// after `Hello` (and the endpoints they came from).
    offers: Vec<(QuicTransport, Framed)>,
    /// How many strangers were refused outright.
    offers_refused: usize,
    /// Connected TCP sockets that never send a byte.
    _tcp: Vec<TcpStream>,
    /// The socket the Initials came from (kept open so that the
    /// receiver's answers are not met with ICMP errors).
    _initials: UdpSocket,
    rt: tokio::runtime::Runtime,
}

impl Flood {
    /// Starts every part of the flood against `target`: the idle TCP
    /// connections from `tcp_from(i)` for the `i`th, the QUIC Initials from
    /// [`ATTACKER`], and the strangers from `offers_from(i)` for the `i`th,
    /// each sending an offer if `offer`, or nothing after `Hello`.
    fn start(
        target: SocketAddr,
        tcp_from: impl Fn(usize) -> IpAddr,
        offers_from: impl Fn(usize) -> IpAddr,
        offer: bool,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (offers, offers_refused) = strangers(&rt, target, offers_from, offer);
        let tcp = idle_tcp(target, tcp_from);
        let initials = quic_initials(target);
        eprintln!(
            "flood held: {} strangers' connections ({offers_refused} strangers refused), \
             {} idle TCP connections, {QUIC_INITIALS} QUIC Initials",
            offers.len(),
            tcp.len()
        );
        Self {
            offers,
            offers_refused,
            _tcp: tcp,
            _initials: initials,
            rt,
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _runtime = self.rt.enter();
        for (_, framed) in self.offers.drain(..) {
            framed.into_link().abort("flood over");
        }
    }
}

/// [`OFFERS`] strangers, each a fresh identity on its own connection (the
/// `i`th from `from(i)`) that sends `Hello` and then, if `offer`, an offer
/// left waiting for the receiving user. Returns the connections that were
/// neither refused nor answered, and how many were.
fn strangers(
    rt: &tokio::runtime::Runtime,
    target: SocketAddr,
    from: impl Fn(usize) -> IpAddr,
    offer: bool,
) -> (Vec<(QuicTransport, Framed)>, usize) {
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..OFFERS {
        let attempt = rt.block_on(async {
            let (quic, mut framed) =
                crate::memory::stranger(target, from(i), &format!("stranger {i}")).await?;
            let manifest = Manifest {
                entries: vec![Entry {
                    path: format!("offer-{i}.bin"),
                    kind: EntryKind::File {
                        size: 1000,
                        tag: [i as u8; 32],
                    },
                }],
                ..Manifest::default()
            };
            if offer {
                framed
                    .send(&Message::Offer(manifest))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            // Refusals come at once; a pending offer stays unanswered.
            match framed.recv_within(Duration::from_millis(200)).await {
                Err(lanshare::transfer::framed::RecvError::Timeout(_)) => Ok((quic, framed)),
                Ok(answer) => Err(format!("answered {answer:?}")),
                Err(e) => Err(e.to_string()),
            }
        });
        match attempt {
            Ok(pending) => held.push(pending),
            Err(reason) => {
                if refused == 0 {
                    eprintln!("first refused offer ({i}): {reason}");
                }
                refused += 1;
            }
        }
    }
    (held, refused)
}

/// [`TCP_CONNECTIONS`] TCP connections that never send anything, the `i`th
/// from `from(i)`. Those the receiver closes are simply gone; the rest stay
/// open.
fn idle_tcp(target: SocketAddr, from: impl Fn(usize) -> IpAddr) -> Vec<TcpStream> {
    use socket2::{Domain, Socket, Type};
    (0..TCP_CONNECTIONS)
        .filter_map(|i| {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            socket.bind(&SocketAddr::new(from(i), 0).into()).unwrap();
            socket
                .connect_timeout(&target.into(), Duration::from_secs(2))
                .ok()?;
            Some(socket.into())
        })
        .collect()
}

/// Sends [`QUIC_INITIALS`] genuine client Initial packets, each of a new
/// connection, and never answers what comes back: handshakes that a
/// receiver can only finish by waiting out its timeout.
fn quic_initials(target: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind(SocketAddr::new(ATTACKER, 0)).unwrap();
    let identity = Identity::generate().unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(
        tls::client_config(&identity, None).unwrap(),
    )
    .unwrap();
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let now = Instant::now();
    let mut buf = Vec::new();
    for _ in 0..QUIC_INITIALS {
        let (_, mut conn) = endpoint
            .connect(now, config.clone(), target, tls::SERVER_NAME)
            .unwrap();
        buf.clear();
        let transmit = conn.poll_transmit(now, 1, &mut buf).unwrap();
        socket.send_to(&buf[..transmit.size], target).unwrap();
    }
    socket
}

/// A file of `len` bytes in a new temporary directory.
fn source_file(name: &str, len: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    random_file(&file, len, len as u64);
    (dir, file)
}

/// Sends `file` from `sender` to `receiver` over `transport`; returns how
/// long `share send` took.
fn timed_send(sender: &TestDaemon, receiver: &TestDaemon, file: &Path, transport: &str) -> f64 {
    let started = Instant::now();
    let result = send_json(
        sender,
        &[
            &receiver.addr(),
            file.to_str().unwrap(),
            "--transport",
            transport,
        ],
    );
    let took = started.elapsed().as_secs_f64();
    assert_eq!(result["status"], "done", "{result}");
    assert_eq!(result["transport"], transport, "{result}");
    assert_same_file(file, &receiver.download.join(file.file_name().unwrap()));
    took
}

/// Bob asks before accepting from strangers (the default), so the
/// strangers' offers wait; alice is trusted by bob. While `flood` holds,
/// alice sends a file over QUIC and one over TCP: both must arrive.
fn trusted_sends_get_through(flood: impl FnOnce(SocketAddr) -> Flood) {
    let bob = TestDaemon::builder("bob").spawn();
    let alice = TestDaemon::start("alice");
    let out = bob.cli(&["trust", &alice.addr()]);
    assert!(out.status.success(), "{:?}", failure(&out));

    let flood = flood(bob.addr().parse().unwrap());
    assert_eq!(flood.offers.len() + flood.offers_refused, OFFERS);
    let (_quic_dir, quic_file) = source_file("through-quic.bin", 300_000);
    let (_tcp_dir, tcp_file) = source_file("through-tcp.bin", 300_000);
    let quic = timed_send(&alice, &bob, &quic_file, "quic");
    let tcp = timed_send(&alice, &bob, &tcp_file, "tcp");
    eprintln!("trusted send under the flood: QUIC {quic:.3} s, TCP {tcp:.3} s");
    let status = bob.cli(&["status", "--json"]);
    assert!(status.status.success(), "{:?}", failure(&status));
    drop(flood);
}

/// The case: idle TCP connections and QUIC Initials from one host,
/// offers from fresh identities on many hosts (so that neither a bound per
/// address nor one per device stops them: only the bounds on strangers
/// and on waiting offers as a whole do).
#[test]
fn a_trusted_device_gets_through_a_flood_from_hosts_without_a_key() {
    trusted_sends_get_through(|bob| Flood::start(bob, |_| ATTACKER, host, true));
}

/// Strangers on many hosts that authenticate and then hold their
/// connections idle fill the strangers' slots, and only those.
#[test]
fn idle_strangers_cannot_take_the_slots_of_trusted_devices() {
    trusted_sends_get_through(|bob| Flood::start(bob, |_| ATTACKER, host, false));
}

/// Idle TCP connections from as many hosts as connections: no address
/// has more than one handshake open, so only the eviction of the oldest
/// handshake from a full budget makes room for alice's.
#[test]
fn handshakes_held_open_from_many_hosts_do_not_lock_out_a_trusted_device() {
    trusted_sends_get_through(|bob| Flood::start(bob, host, |_| ATTACKER, true));
}
