//! LocalSend discovery: multicast announcements out, answers by HTTPS
//! `register` back, and the same for announcements we hear.
//!
//! LocalSend 1.18 announces itself on UDP 224.0.0.167 (and ff12::fd3a:e420
//! where IPv6 is up), port 53317, in a burst at start, and answers every
//! announcement with `POST /api/localsend/v2/register` to the announcer,
//! pinning the fingerprint the announcement claimed. We do the same, on
//! the interfaces the daemon's interface policy allows (the policy mDNS
//! uses: no container, VM or VPN interfaces unless chosen):
//!
//! * announce at start ([`BURST`]) and then every [`ANNOUNCE_INTERVAL`],
//!   so apps learn about us and, by answering, keep their entries in our
//!   [`Devices`] table fresh;
//! * for an announcement we hear, `register` to its sender with its
//!   fingerprint pinned; only when that handshake succeeds does the device
//!   enter the table (our server records the devices that `register` to
//!   us, see `super::server`).
//!
//! Interfaces are looked at again before every announcement, so one that
//! comes up later is joined then.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client;
use super::devices::Devices;
use super::http::ClientError;
use super::wire::{Device, SelfInfo};
use crate::discovery::InterfacePolicy;
use crate::discovery::interfaces::HostInterface;
use crate::identity::{DeviceId, Identity};

/// LocalSend's IPv4 multicast group.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 167);
/// LocalSend's IPv6 multicast group (1.18).
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff12, 0, 0, 0, 0, 0, 0xfd3a, 0xe420);
/// When the start-up announcements go out, after start.
pub const BURST: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_millis(2000),
];
/// How often we announce after the burst.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(30);
/// Most `register` requests in flight at once.
const MAX_REGISTERS: usize = 8;
/// Largest datagram read.
const MAX_DATAGRAM: usize = 16 << 10;

/// Where to announce: one interface's name, index and addresses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Interface {
    name: String,
    index: u32,
    v4: Option<Ipv4Addr>,
    v6: bool,
}

/// The multicast sockets (one per IP version that could be bound).
pub struct Multicast {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    port: u16,
}

impl Multicast {
    /// Binds UDP `port` on all addresses (IPv4 and, where possible, IPv6),
    /// shared with other LocalSend programs on this host
    /// (`SO_REUSEADDR`).
    ///
    /// # Errors
    /// Only if neither IPv4 nor IPv6 can be bound.
    pub fn bind(port: u16) -> std::io::Result<Self> {
        let v4 = bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
        let v6 = bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)));
        match (v4, v6) {
            (Err(e), Err(_)) => Err(e),
            (v4, v6) => Ok(Self {
                v4: v4.ok(),
                v6: v6.ok(),
                port,
            }),
        }
    }

    /// The UDP port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_multicast_loop_v6(true)?;
    } else {
        socket.set_multicast_loop_v4(true)?;
        socket.set_multicast_ttl_v4(1)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// What discovery works with.
pub struct Discoverer {
    /// How we describe ourselves.
    pub me: SelfInfo,
    /// Our LocalSend identity (its certificate goes with every `register`).
    pub identity: Identity,
    /// Where proven devices go.
    pub devices: Devices,
    /// Which interfaces to use.
    pub policy: InterfacePolicy,
}

impl Discoverer {
    /// Announces and listens until `cancel`.
    pub async fn run(
        self: Arc<Self>,
        multicast: Multicast,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) {
        let multicast = Arc::new(multicast);
        let registers = Arc::new(Semaphore::new(MAX_REGISTERS));
        for v6 in [false, true] {
            let (me, multicast, registers) = (self.clone(), multicast.clone(), registers.clone());
            let (cancel, inner) = (cancel.clone(), tracker.clone());
            tracker.spawn(async move {
                let socket = if v6 { &multicast.v6 } else { &multicast.v4 };
                if let Some(socket) = socket {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = me.listen(socket, &registers, &inner) => {}
                    }
                }
            });
        }
        let mut joined = BTreeSet::new();
        let start = Instant::now();
        let schedule = BURST
            .into_iter()
            .chain((1..).map(|n| BURST[2] + ANNOUNCE_INTERVAL * n));
        for at in schedule {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until((start + at).into()) => {}
            }
            let interfaces = self.interfaces();
            for intf in &interfaces {
                if joined.insert(intf.clone()) {
                    multicast.join(intf);
                }
            }
            multicast
                .announce(&interfaces, &self.me.announcement())
                .await;
            let gone = self.devices.expire(Instant::now());
            if gone > 0 {
                tracing::debug!(gone, "LocalSend devices stopped answering");
            }
        }
    }

    /// The interfaces the policy allows, with their addresses.
    fn interfaces(&self) -> Vec<Interface> {
        let Ok(list) = if_addrs::get_if_addrs() else {
            return Vec::new();
        };
        let mut out: Vec<Interface> = Vec::new();
        for intf in list {
            let host = HostInterface {
                name: intf.name.clone(),
                loopback: intf.is_loopback(),
                point_to_point: intf.is_p2p(),
                up: intf.is_oper_up(),
            };
            if self.policy.ignore_reason(&host).is_some() {
                continue;
            }
            let Some(index) = intf.index else { continue };
            let entry = match out.iter_mut().find(|i| i.name == intf.name) {
                Some(entry) => entry,
                None => {
                    out.push(Interface {
                        name: intf.name.clone(),
                        index,
                        v4: None,
                        v6: false,
                    });
                    let last = out.len() - 1;
                    &mut out[last]
                }
            };
            match intf.ip() {
                IpAddr::V4(v4) => entry.v4 = entry.v4.or(Some(v4)),
                IpAddr::V6(_) => entry.v6 = true,
            }
        }
        out
    }

    async fn listen(&self, socket: &UdpSocket, registers: &Arc<Semaphore>, tracker: &TaskTracker) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (len, from) = match socket.recv_from(&mut buf).await {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!("LocalSend multicast receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Ok(device) = Device::parse(&buf[..len]) else {
                continue;
            };
            let Some(fingerprint) = device.fingerprint else {
                continue;
            };
            if fingerprint == self.me.fingerprint {
                continue;
            }
            let addr = with_port(from, device.port);
            if !self.devices.wants_check(fingerprint, addr, Instant::now()) {
                continue;
            }
            let Ok(permit) = registers.clone().try_acquire_owned() else {
                continue;
            };
            let (identity, me, devices) =
                (self.identity.clone(), self.me.clone(), self.devices.clone());
            tracker.spawn(async move {
                let _permit = permit;
                match register(&identity, &me, addr, Some(fingerprint)).await {
                    Ok((proven, device)) => {
                        if devices.proven(proven, &device, addr, Instant::now()) {
                            tracing::info!(alias = %device.alias, %addr,
                                fingerprint = %proven.to_hex(), "found a LocalSend device");
                        }
                    }
                    Err(e) => tracing::debug!(%addr, "LocalSend register failed: {e}"),
                }
            });
        }
    }
}

impl Multicast {
    fn join(&self, intf: &Interface) {
        if let (Some(socket), Some(v4)) = (&self.v4, intf.v4)
            && let Err(e) = SockRef::from(socket).join_multicast_v4(&GROUP_V4, &v4)
        {
            tracing::debug!(interface = %intf.name, "cannot join {GROUP_V4}: {e}");
        }
        if let Some(socket) = &self.v6
            && intf.v6
            && let Err(e) = SockRef::from(socket).join_multicast_v6(&GROUP_V6, intf.index)
        {
            tracing::debug!(interface = %intf.name, "cannot join {GROUP_V6}: {e}");
        }
    }

    async fn announce(&self, interfaces: &[Interface], message: &[u8]) {
        for intf in interfaces {
            if let (Some(socket), Some(v4)) = (&self.v4, intf.v4) {
                let sent = match SockRef::from(socket).set_multicast_if_v4(&v4) {
                    Ok(()) => socket
                        .send_to(message, (GROUP_V4, self.port))
                        .await
                        .map(drop),
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    tracing::debug!(interface = %intf.name, "LocalSend announcement to {GROUP_V4} failed: {e}");
                }
            }
            if let Some(socket) = &self.v6
                && intf.v6
            {
                let to = SocketAddrV6::new(GROUP_V6, self.port, 0, intf.index);
                let sent = match SockRef::from(socket).set_multicast_if_v6(intf.index) {
                    Ok(()) => socket.send_to(message, to).await.map(drop),
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    tracing::debug!(interface = %intf.name, "LocalSend announcement to {GROUP_V6} failed: {e}");
                }
            }
        }
    }
}

/// `from` with the HTTPS port the device announced (an IPv6 link-local
/// source keeps its scope).
fn with_port(from: SocketAddr, port: u16) -> SocketAddr {
    match from {
        SocketAddr::V4(v4) => SocketAddr::from((*v4.ip(), port)),
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, port)),
            None => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), port, 0, v6.scope_id())),
        },
    }
}

/// Why a `register` failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Connecting or the exchange failed (includes a fingerprint that is
    /// not the one expected).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The peer answered with an error status.
    #[error("answered {0}")]
    Status(StatusCode),
    /// The answer is not a device description.
    #[error("invalid answer: {0}")]
    Answer(#[from] super::wire::WireError),
}

/// Sends our `register` to `addr`, pinned to `expected` if given. Returns
/// the fingerprint the peer proved and what it says about itself.
///
/// # Errors
/// [`RegisterError`].
pub async fn register(
    identity: &Identity,
    me: &SelfInfo,
    addr: SocketAddr,
    expected: Option<DeviceId>,
) -> Result<(DeviceId, Device), RegisterError> {
    let answer = client::post(
        identity,
        addr,
        expected,
        "/api/localsend/v2/register",
        Some(me.register_body()),
    )
    .await?;
    if answer.status != StatusCode::OK {
        return Err(RegisterError::Status(answer.status));
    }
    Ok((answer.fingerprint, Device::parse(&answer.body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_go_to_the_announced_port_of_the_source_address() {
        let from: SocketAddr = "10.1.2.3:53317".parse().unwrap();
        assert_eq!(with_port(from, 4000), "10.1.2.3:4000".parse().unwrap());
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:53317".parse().unwrap();
        assert_eq!(with_port(mapped, 53317), from);
        let link_local = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53317, 0, 7));
        let SocketAddr::V6(out) = with_port(link_local, 9) else {
            panic!("v6 expected")
        };
        assert_eq!((out.scope_id(), out.port()), (7, 9));
    }
}
