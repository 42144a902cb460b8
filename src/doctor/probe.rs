//! Reachability probes: "can you connect back to me?" (`share doctor PEER`).
//!
//! A connection that works in one direction says nothing about the other:
//! a host firewall usually allows everything out and little in, and many
//! networks block UDP but not TCP. Only the peer can tell whether *it* can
//! reach *us*, so `share doctor PEER`:
//!
//! 1. dials the peer over TCP (outbound, one `Hello` exchange), then
//! 2. dials once more (over TCP if that worked) and sends
//!    `Probe { port, nonce }` instead of an `Offer`. The peer dials back the **observed source address** of that
//!    connection at `port`, once over QUIC and once over TCP, each with a
//!    short timeout, pinned to our device ID; on each dial-back that
//!    authenticates it sends `Echo { nonce }`, which our acceptor records
//!    ([`Doctor::echoed`]). Then it answers `ProbeResult`.
//!
//! 3. Last, it dials the peer over QUIC (outbound).
//!
//! What our acceptor recorded is the truth for the inbound direction (the
//! peer's `ProbeResult` only says when it is done), so a peer cannot make
//! a blocked port look open.
//!
//! The order matters: both daemons send QUIC from their service port, so
//! once we have sent QUIC to the peer, a *stateful* firewall here accepts
//! the peer's QUIC from that port as a reply for a minute or two. Testing
//! outbound QUIC only after the dial-back keeps that from hiding an
//! inbound UDP block. (The same effect means a recent QUIC transfer
//! between the two can still make inbound UDP look open.)
//!
//! # Abuse
//!
//! A daemon must not become a tool for making connections to third
//! parties. The dial-back goes only to the address the probe came from —
//! never an address from the message — and is pinned to the prober's
//! device ID, so it can only complete with the device that asked. Probes
//! are answered at most once per [`PROBE_INTERVAL`] per device ID *and*
//! per source address (identities are cheap), and at most
//! [`MAX_IN_FLIGHT`] at a time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Doctor;
use super::report::Reach;
use crate::identity::DeviceId;
use crate::peers::{Answered, Connected, Connector, IdentifyError};
use crate::protocol::{ErrorCode, Message, PROBE_NONCE_LEN};
use crate::safe_text::CleanText;
use crate::transfer::TransferError;
use crate::transfer::framed::{Framed, RecvError};
use crate::transfer::handshake;
use crate::transport::TransportKind;
use crate::transport::dial::{DialError, Preference, Target};

/// At most one probe answered per device ID and per source address in
/// this interval.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Most probes being answered at once.
pub const MAX_IN_FLIGHT: usize = 4;

/// Budget of one dial-back (connect, handshake, `Hello`, `Echo`).
const DIAL_BACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the prober waits for `ProbeResult`: both dial-backs run at
/// once, so one [`DIAL_BACK_TIMEOUT`] plus slack.
const RESULT_TIMEOUT: Duration = Duration::from_secs(12);

/// Budget of one outbound test dial.
const OUT_TIMEOUT: Duration = Duration::from_secs(6);

/// Rate-limit entries older than this are dropped.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Probe bookkeeping: rate limits for answering, and the nonces of our own
/// probes waiting for `Echo`es.
#[derive(Default)]
pub(super) struct Probes {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_id: HashMap<DeviceId, Instant>,
    by_ip: HashMap<IpAddr, Instant>,
    in_flight: usize,
    /// Our probes: nonce -> (peer expected to echo, echoed over QUIC, over TCP).
    pending: HashMap<[u8; PROBE_NONCE_LEN], Pending>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    peer: DeviceId,
    quic: bool,
    tcp: bool,
}

/// Releases an in-flight slot.
struct Slot<'a>(&'a Probes);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

impl Probes {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a probe from `peer` at `ip`, or says how many seconds to wait.
    fn admit(&self, peer: DeviceId, ip: IpAddr, now: Instant) -> Result<Slot<'_>, u64> {
        let mut state = self.lock();
        state
            .by_id
            .retain(|_, at| now.saturating_duration_since(*at) < FORGET_AFTER);
        state
            .by_ip
            .retain(|_, at| now.saturating_duration_since(*at) < FORGET_AFTER);
        let wait = |last: Option<&Instant>| {
            last.map(|at| PROBE_INTERVAL.saturating_sub(now.saturating_duration_since(*at)))
                .unwrap_or_default()
        };
        let wait = wait(state.by_id.get(&peer)).max(wait(state.by_ip.get(&ip)));
        if !wait.is_zero() {
            return Err(wait.as_secs().max(1));
        }
        if state.in_flight >= MAX_IN_FLIGHT {
            return Err(PROBE_INTERVAL.as_secs());
        }
        state.by_id.insert(peer, now);
        state.by_ip.insert(ip, now);
        state.in_flight += 1;
        drop(state);
        Ok(Slot(self))
    }

    /// Registers one of our probes.
    fn expect(&self, nonce: [u8; PROBE_NONCE_LEN], peer: DeviceId) {
        self.lock().pending.insert(
            nonce,
            Pending {
                peer,
                quic: false,
                tcp: false,
            },
        );
    }

    /// Ends one of our probes: (echoed over QUIC, over TCP).
    fn take(&self, nonce: &[u8; PROBE_NONCE_LEN]) -> (bool, bool) {
        self.lock()
            .pending
            .remove(nonce)
            .map(|p| (p.quic, p.tcp))
            .unwrap_or_default()
    }

    /// An `Echo` arrived on an incoming connection from `peer` over `kind`.
    /// Returns whether it answered one of our probes.
    fn echoed(&self, nonce: &[u8; PROBE_NONCE_LEN], peer: DeviceId, kind: TransportKind) -> bool {
        let mut state = self.lock();
        match state.pending.get_mut(nonce) {
            Some(pending) if pending.peer == peer => {
                match kind {
                    TransportKind::Quic => pending.quic = true,
                    TransportKind::Tcp => pending.tcp = true,
                    // Probes travel on native links only.
                    TransportKind::LocalSend => return false,
                }
                true
            }
            _ => false,
        }
    }
}

impl Doctor {
    /// Answers a `Probe` received on `framed` (acceptor side).
    pub async fn answer_probe(&self, framed: &mut Framed, port: u16, nonce: [u8; PROBE_NONCE_LEN]) {
        let (peer, remote) = (framed.link().peer, framed.link().remote);
        if port == 0 {
            let _ = framed
                .send(&Message::Error {
                    code: ErrorCode::Protocol,
                    message: "a probe must name a port".into(),
                })
                .await;
            return;
        }
        let _slot = match self.probes.admit(peer, remote.ip(), Instant::now()) {
            Ok(slot) => slot,
            Err(wait) => {
                tracing::info!(%peer, %remote, "reachability probe refused: rate limit");
                let _ = framed
                    .send(&Message::Error {
                        code: ErrorCode::Busy,
                        message: format!(
                            "one reachability probe per {} s; retry in {wait} s",
                            PROBE_INTERVAL.as_secs()
                        )
                        .into(),
                    })
                    .await;
                return;
            }
        };
        let back = dial_back_addr(remote, port);
        let target = Target {
            expected: Some(peer),
            quic: vec![back],
            tcp: vec![back],
        };
        let (quic, tcp) = tokio::join!(
            self.dial_back(&target, Preference::Quic, nonce),
            self.dial_back(&target, Preference::Tcp, nonce),
        );
        tracing::info!(%peer, %back, quic, tcp, "answered a reachability probe");
        let _ = framed.send(&Message::ProbeResult { quic, tcp }).await;
    }

    /// An `Echo` arrived on an incoming connection from `peer` over
    /// `kind`. Returns whether it answered one of our probes.
    pub fn echoed(
        &self,
        nonce: &[u8; PROBE_NONCE_LEN],
        peer: DeviceId,
        kind: TransportKind,
    ) -> bool {
        self.probes.echoed(nonce, peer, kind)
    }

    /// One dial-back: connect, `Hello`, `Echo`, clean close.
    async fn dial_back(
        &self,
        target: &Target,
        preference: Preference,
        nonce: [u8; PROBE_NONCE_LEN],
    ) -> bool {
        let echo = async {
            let mut connected = self
                .connector
                .open(target, preference)
                .await
                .map_err(ProbeError::Dial)?;
            connected
                .framed
                .send(&Message::Echo { nonce })
                .await
                .map_err(ProbeError::NotSent)?;
            Ok::<_, ProbeError>(connected)
        };
        match tokio::time::timeout(DIAL_BACK_TIMEOUT, echo).await {
            Ok(Ok(connected)) => {
                connected
                    .framed
                    .into_link()
                    .close(Duration::from_secs(2))
                    .await;
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(?preference, "probe dial-back failed: {e}");
                false
            }
            Err(_) => {
                tracing::debug!(?preference, "probe dial-back timed out");
                false
            }
        }
    }
}

/// Why one reachability test failed (the text goes into the report's
/// `errors`).
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    /// No answer within the test's budget.
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The connection failed.
    #[error(transparent)]
    Dial(DialError),
    /// Connecting to send the probe failed.
    #[error("cannot connect to the peer to probe it{}", .0.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NoCarrier(Option<DialError>),
    /// The system has no randomness for a nonce.
    #[error("no randomness available for the probe nonce")]
    NoRandomness,
    /// The probe message could not be sent.
    #[error("probe not sent: {0}")]
    NotSent(TransferError),
    /// The peer answered with an `Error`.
    #[error("the peer refused the probe: {0}")]
    Refused(CleanText),
    /// The peer answered something else.
    #[error("the peer answered the probe with {0} (an older lanshare?)")]
    Unexpected(&'static str),
    /// The link failed before the result came.
    #[error("no answer to the probe: {0}")]
    NoAnswer(RecvError),
}

/// Connects over one transport, exchanges `Hello`, closes cleanly.
async fn dial_out(
    connector: &Connector,
    target: &Target,
    preference: Preference,
) -> Result<Answered, ProbeError> {
    connector
        .identify(target, preference, OUT_TIMEOUT)
        .await
        .map_err(|e| match e {
            IdentifyError::Timeout(limit) => ProbeError::Timeout(limit),
            IdentifyError::Dial(e) => ProbeError::Dial(e),
        })
}

/// Notes one outbound test in `slot` (and `errors`); the first success
/// tells who answered.
fn record(
    result: Result<Answered, ProbeError>,
    slot: &mut Option<bool>,
    kind: &str,
    errors: &mut Vec<String>,
    learned: &mut Option<Answered>,
) {
    match result {
        Ok(found) => {
            *slot = Some(true);
            learned.get_or_insert(found);
        }
        Err(e) => {
            *slot = Some(false);
            errors.push(format!("{kind} to the peer: {e}"));
        }
    }
}

/// A fresh random nonce.
fn nonce() -> Result<[u8; PROBE_NONCE_LEN], ProbeError> {
    use ring::rand::SecureRandom;
    let mut nonce = [0u8; PROBE_NONCE_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| ProbeError::NoRandomness)?;
    Ok(nonce)
}

impl Doctor {
    /// Measures reachability between this device and `text` (a name, ID
    /// prefix or `HOST:PORT`) in both directions and over both transports.
    pub(super) async fn reach(&self, text: &str) -> Reach {
        let mut reach = Reach {
            peer: text.to_owned(),
            ..Reach::default()
        };
        let resolved = match self.resolver.resolve(text).await {
            Ok(resolved) => resolved,
            Err(e) => {
                reach.unresolved = Some(e.to_string());
                return reach;
            }
        };
        let mut target = resolved.target;
        let started = Instant::now();
        let mut learned = None;
        // TCP first: it learns who is there and carries the probe, so no
        // QUIC packet has passed between the two service ports before the
        // peer's QUIC dial-back (a stateful firewall would let that in as
        // a "reply" to our own traffic and hide a block).
        if !target.tcp.is_empty() {
            let result = dial_out(&self.connector, &target, Preference::Tcp).await;
            record(
                result,
                &mut reach.tcp_out,
                "TCP",
                &mut reach.errors,
                &mut learned,
            );
        }
        let mut quic_tested = false;
        if learned.is_none() && !target.quic.is_empty() {
            let result = dial_out(&self.connector, &target, Preference::Quic).await;
            record(
                result,
                &mut reach.udp_out,
                "UDP (QUIC)",
                &mut reach.errors,
                &mut learned,
            );
            quic_tested = true;
        }
        let Some(Answered {
            id, name, remote, ..
        }) = learned
        else {
            return reach;
        };
        reach.id = Some(id);
        reach.name = Some(name);
        reach.address = Some(remote.to_string());
        reach.mdns = self.peers.seen_by_mdns(&id);
        target.expected = Some(id);
        // Test UDP on the address TCP reached (all of them otherwise): the
        // question is the transport, not which of the peer's addresses.
        let same_ip: Vec<SocketAddr> = target
            .quic
            .iter()
            .filter(|a| a.ip() == remote.ip())
            .copied()
            .collect();
        if !same_ip.is_empty() {
            target.quic = same_ip;
        }
        let carrier = if reach.tcp_out == Some(true) {
            Preference::Tcp
        } else {
            Preference::Quic
        };
        let probe = self.probe(&target, id, carrier).await;
        tracing::debug!(
            ms = started.elapsed().as_millis(),
            "doctor: connect-back probe done"
        );
        match probe {
            Ok((quic, tcp)) => {
                reach.udp_in = self.facts.quic.then_some(quic);
                reach.tcp_in = self.facts.tcp.then_some(tcp);
            }
            Err(e) => reach.errors.push(e.to_string()),
        }
        if !quic_tested && !target.quic.is_empty() {
            let result = dial_out(&self.connector, &target, Preference::Quic).await;
            record(
                result,
                &mut reach.udp_out,
                "UDP (QUIC)",
                &mut reach.errors,
                &mut None,
            );
        }
        tracing::debug!(
            ms = started.elapsed().as_millis(),
            "doctor: reachability measured"
        );
        reach
    }

    /// Asks the peer to connect back; returns (QUIC echo seen, TCP echo seen).
    async fn probe(
        &self,
        target: &Target,
        id: DeviceId,
        carrier: Preference,
    ) -> Result<(bool, bool), ProbeError> {
        let nonce = nonce()?;
        self.probes.expect(nonce, id);
        let result = self.probe_exchange(target, nonce, carrier).await;
        // Both dial-backs ended before the peer answered; an `Echo` may
        // still be in our acceptor's queue.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let echoed = self.probes.take(&nonce);
        result.map(|_| echoed)
    }

    async fn probe_exchange(
        &self,
        target: &Target,
        nonce: [u8; PROBE_NONCE_LEN],
        carrier: Preference,
    ) -> Result<(bool, bool), ProbeError> {
        let dial = self.connector.open(target, carrier);
        let Connected { mut framed, .. } = tokio::time::timeout(OUT_TIMEOUT, dial)
            .await
            .map_err(|_| ProbeError::NoCarrier(None))?
            .map_err(|e| ProbeError::NoCarrier(Some(e)))?;
        let port = self.facts.port;
        framed
            .send(&Message::Probe { port, nonce })
            .await
            .map_err(ProbeError::NotSent)?;
        let answer = framed.recv_within(RESULT_TIMEOUT).await;
        framed.into_link().close(Duration::from_secs(1)).await;
        match answer {
            Ok(Message::ProbeResult { quic, tcp }) => Ok((quic, tcp)),
            Ok(Message::Error { code, message }) => {
                Err(ProbeError::Refused(code.report(&message.clean()).into()))
            }
            Ok(other) => Err(ProbeError::Unexpected(handshake::kind(&other))),
            Err(e) => Err(ProbeError::NoAnswer(e)),
        }
    }
}

/// Where a probe that arrived from `remote` is answered: the observed
/// source address (IPv6 scope included) at the port the prober named,
/// never an address from the message.
fn dial_back_addr(remote: SocketAddr, port: u16) -> SocketAddr {
    let mut back = remote;
    back.set_port(port);
    back
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_per_device_and_per_address() {
        let probes = Probes::default();
        let t0 = Instant::now();
        let (a, b) = (DeviceId::from_cert_der(b"a"), DeviceId::from_cert_der(b"b"));
        let ip1: IpAddr = [10, 0, 0, 1].into();
        let ip2: IpAddr = [10, 0, 0, 2].into();
        let first = probes.admit(a, ip1, t0);
        assert!(first.is_ok());
        drop(first);
        // Same device from another address, or another identity from the
        // same address: both refused within the interval.
        assert_eq!(
            probes.admit(a, ip2, t0).err(),
            Some(PROBE_INTERVAL.as_secs())
        );
        assert!(probes.admit(b, ip1, t0 + Duration::from_secs(2)).is_err());
        // A different device on a different address is fine.
        assert!(probes.admit(b, ip2, t0).is_ok());
        // After the interval, again.
        assert!(probes.admit(a, ip1, t0 + PROBE_INTERVAL).is_ok());
    }

    #[test]
    fn in_flight_is_bounded() {
        let probes = Probes::default();
        let t0 = Instant::now();
        let slots: Vec<_> = (0..MAX_IN_FLIGHT)
            .filter_map(|i| {
                let id = DeviceId::from_cert_der(&[i as u8]);
                probes.admit(id, [10, 0, 1, i as u8].into(), t0).ok()
            })
            .collect();
        assert_eq!(slots.len(), MAX_IN_FLIGHT);
        let extra = DeviceId::from_cert_der(b"extra");
        assert!(probes.admit(extra, [10, 0, 2, 1].into(), t0).is_err());
        drop(slots);
        assert!(probes.admit(extra, [10, 0, 2, 1].into(), t0).is_ok());
    }

    #[test]
    fn echoes_count_only_for_the_probed_device() {
        let probes = Probes::default();
        let (peer, other) = (DeviceId::from_cert_der(b"p"), DeviceId::from_cert_der(b"o"));
        let nonce = [7; PROBE_NONCE_LEN];
        probes.expect(nonce, peer);
        assert!(!probes.echoed(&nonce, other, TransportKind::Quic));
        assert!(!probes.echoed(&[8; PROBE_NONCE_LEN], peer, TransportKind::Quic));
        assert!(probes.echoed(&nonce, peer, TransportKind::Tcp));
        assert_eq!(probes.take(&nonce), (false, true));
        // Gone after take.
        assert!(!probes.echoed(&nonce, peer, TransportKind::Quic));
        assert_eq!(probes.take(&nonce), (false, false));
    }

    #[test]
    fn dial_back_keeps_the_observed_address() {
        let v6 = std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST),
            51234,
            0,
            3,
        );
        let back = dial_back_addr(SocketAddr::V6(v6), 47000);
        assert_eq!(back.ip(), v6.ip().to_owned());
        assert_eq!(back.port(), 47000);
        match back {
            SocketAddr::V6(b) => assert_eq!(b.scope_id(), 3),
            SocketAddr::V4(_) => panic!("family changed"),
        }
        let v4 = SocketAddr::from(([10, 0, 0, 9], 51234));
        assert_eq!(dial_back_addr(v4, 1), SocketAddr::from(([10, 0, 0, 9], 1)));
    }
}
