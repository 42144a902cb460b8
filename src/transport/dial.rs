//! The racing dialer: QUIC first, TCP+TLS as a fallback the user never notices.
//!
//! quinn cannot tell a black-holed UDP port from a slow peer (it ignores
//! ICMP and waits its whole idle timeout), so waiting for QUIC to fail is
//! not an option. Instead, like Happy Eyeballs (RFC 8305), QUIC gets a
//! [`HEAD_START`] and TCP starts when that elapses or as soon as QUIC fails;
//! the first connection that *authenticates* (the caller's `authenticate`
//! step, i.e. the peer's `Hello`) wins and the loser is dropped, which
//! closes it.
//!
//! Security: an identity failure on either transport ends the whole dial.
//! A fallback never turns a refusal into a success.
//!
//! When TCP wins because QUIC failed, the path is remembered as "QUIC
//! broken": the next dials to that peer go straight to TCP, and QUIC is
//! re-probed (a normal race) after a backoff that starts at
//! [`REPROBE_INITIAL`] and doubles up to [`REPROBE_MAX`]. A QUIC win clears
//! the mark.
//!
//! A known device that no transport reached is reported to the
//! [`Dialer::on_unreachable`] hook, so discovery can check at once whether
//! it is still on the LAN. When every TCP address of a known device
//! refuses the connection (its host is up, nothing listens) while QUIC is
//! still waiting out its timeout, the [`Dialer::on_refused`] hook starts
//! that check early, and the dial ends as soon as discovery no longer
//! lists the device ([`DialError::Gone`]) instead of seconds later.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::quic::QuicTransport;
use super::tcp::TcpTransport;
use super::{Link, Transport, TransportError, TransportKind};
use crate::identity::DeviceId;

/// QUIC's head start before the TCP attempt begins.
pub const HEAD_START: Duration = Duration::from_millis(250);
/// First delay before QUIC is tried again on a path where it failed.
pub const REPROBE_INITIAL: Duration = Duration::from_secs(10);
/// Longest delay between QUIC re-probes.
pub const REPROBE_MAX: Duration = Duration::from_secs(600);

/// Which transports a dial may use (`share send --transport`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preference {
    /// Race QUIC and TCP (default).
    #[default]
    Auto,
    /// QUIC only.
    Quic,
    /// TCP+TLS only.
    Tcp,
}

/// Where to reach a peer.
#[derive(Debug, Clone)]
pub struct Target {
    /// The device we mean to reach; its certificate must match. `None`
    /// only for a bare `HOST:PORT` of an unknown device.
    pub expected: Option<DeviceId>,
    /// QUIC (UDP) addresses, in preference order.
    pub quic: Vec<SocketAddr>,
    /// TCP addresses, in preference order.
    pub tcp: Vec<SocketAddr>,
}

impl Target {
    /// A known device at `addrs` (its QUIC addresses), whose TCP fallback
    /// listens on `tcp_port` of the same hosts when it has one.
    pub fn device(id: DeviceId, addrs: &[SocketAddr], tcp_port: Option<u16>) -> Self {
        let tcp = match tcp_port {
            Some(port) => addrs
                .iter()
                .map(|a| {
                    // set_port keeps an IPv6 link-local scope.
                    let mut a = *a;
                    a.set_port(port);
                    a
                })
                .collect(),
            None => Vec::new(),
        };
        Self {
            expected: Some(id),
            quic: addrs.to_vec(),
            tcp,
        }
    }
}

/// Why the caller's authentication step failed.
#[derive(Debug)]
pub enum AuthFailure {
    /// The peer refused us or is not who we expected: stop the whole dial.
    Refused(String),
    /// The link broke during authentication: another path may work.
    Failed(String),
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The requested transport is disabled on this daemon.
    #[error("{0}")]
    Unavailable(String),
    /// The peer's identity did not check out, or it refused us.
    #[error("{0}")]
    Refused(String),
    /// No transport reached the peer.
    #[error("cannot reach the peer: {}", .0.join("; "))]
    Unreachable(Vec<String>),
    /// Every TCP address refused the connection and discovery no longer
    /// lists the device.
    #[error(
        "it has left the network (every address refused the connection and discovery no longer lists it)"
    )]
    Gone,
}

#[derive(Debug, Clone, Copy)]
struct Broken {
    reprobe_at: Instant,
    backoff: Duration,
}

/// Called with a known device that no transport reached.
type UnreachableHook = Box<dyn Fn(&DeviceId) + Send + Sync>;

/// Completes when discovery no longer lists a device.
pub type Departed = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Called with a known device whose every TCP address refused the
/// connection.
type RefusedHook = Box<dyn Fn(&DeviceId) -> Departed + Send + Sync>;

/// Dials peers over whichever transports are enabled.
pub struct Dialer {
    quic: Option<Arc<QuicTransport>>,
    tcp: Option<Arc<TcpTransport>>,
    broken: Mutex<HashMap<PathKey, Broken>>,
    head_start: Duration,
    unreachable: Option<UnreachableHook>,
    refused: Option<RefusedHook>,
}

/// Identifies a path for the broken-QUIC memory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PathKey {
    Device(DeviceId),
    Addr(SocketAddr),
}

enum LegError {
    Fatal(String),
    /// Every address failed; `refused`: each refused the connection.
    Failed {
        reasons: Vec<String>,
        refused: bool,
    },
    /// Refused everywhere, and discovery dropped the device meanwhile.
    Gone,
}

impl LegError {
    /// Both legs failed: `self` first, then `other`.
    fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::Failed { mut reasons, .. }, Self::Failed { reasons: more, .. }) => {
                reasons.extend(more);
                Self::Failed {
                    reasons,
                    refused: false,
                }
            }
            (Self::Failed { .. }, decisive) | (decisive, _) => decisive,
        }
    }
}

impl Dialer {
    /// A dialer over the given transports (either may be disabled).
    pub fn new(quic: Option<Arc<QuicTransport>>, tcp: Option<Arc<TcpTransport>>) -> Self {
        Self {
            quic,
            tcp,
            broken: Mutex::new(HashMap::new()),
            head_start: HEAD_START,
            unreachable: None,
            refused: None,
        }
    }

    /// Calls `hook` with the expected device of every dial that fails
    /// because no transport reached it ([`DialError::Unreachable`]).
    pub fn on_unreachable(mut self, hook: impl Fn(&DeviceId) + Send + Sync + 'static) -> Self {
        self.unreachable = Some(Box::new(hook));
        self
    }

    /// Calls `hook` with the expected device when every TCP address
    /// refused the connection while QUIC is still trying; the dial fails
    /// with [`DialError::Gone`] as soon as the future it returns completes
    /// (discovery no longer lists the device), unless QUIC gets through
    /// first (a firewall may refuse TCP to a device that is there).
    pub fn on_refused(
        mut self,
        hook: impl Fn(&DeviceId) -> Departed + Send + Sync + 'static,
    ) -> Self {
        self.refused = Some(Box::new(hook));
        self
    }

    /// Number of paths on which QUIC is currently skipped (remembered as
    /// broken and not yet due for a re-probe).
    pub fn broken_paths(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|b| now < b.reprobe_at).count()
    }

    /// Connects to `target` and runs `authenticate` on the link; returns
    /// the first authenticated result and the transport it used.
    pub async fn dial<T, F, Fut>(
        &self,
        target: &Target,
        preference: Preference,
        authenticate: F,
    ) -> Result<(T, TransportKind), DialError>
    where
        F: Fn(Link) -> Fut,
        Fut: Future<Output = Result<T, AuthFailure>>,
    {
        let result = self.race(target, preference, authenticate).await;
        if let (Err(DialError::Unreachable(_)), Some(id), Some(hook)) =
            (&result, &target.expected, &self.unreachable)
        {
            hook(id);
        }
        result
    }

    async fn race<T, F, Fut>(
        &self,
        target: &Target,
        preference: Preference,
        authenticate: F,
    ) -> Result<(T, TransportKind), DialError>
    where
        F: Fn(Link) -> Fut,
        Fut: Future<Output = Result<T, AuthFailure>>,
    {
        let quic = self.quic.as_deref().filter(|_| !target.quic.is_empty());
        let tcp = self.tcp.as_deref().filter(|_| !target.tcp.is_empty());
        let key = match target.expected {
            Some(id) => PathKey::Device(id),
            None => match target.quic.first().or(target.tcp.first()) {
                Some(addr) => PathKey::Addr(*addr),
                None => return Err(DialError::Unreachable(vec!["no address known".into()])),
            },
        };

        match preference {
            Preference::Quic => {
                let q = quic.ok_or_else(|| {
                    DialError::Unavailable(
                        "QUIC is disabled on this daemon or the peer has no QUIC address".into(),
                    )
                })?;
                return finish(
                    leg(q, &target.quic, target.expected, &authenticate).await,
                    TransportKind::Quic,
                );
            }
            Preference::Tcp => {
                let t = tcp.ok_or_else(|| {
                    DialError::Unavailable(
                        "TCP is disabled on this daemon or the peer has no TCP address".into(),
                    )
                })?;
                return finish(
                    leg(t, &target.tcp, target.expected, &authenticate).await,
                    TransportKind::Tcp,
                );
            }
            Preference::Auto => {}
        }

        let (q, t) = match (quic, tcp) {
            (None, None) => {
                return Err(DialError::Unavailable(
                    "no transport is enabled for this peer".into(),
                ));
            }
            (Some(q), None) => {
                return finish(
                    leg(q, &target.quic, target.expected, &authenticate).await,
                    TransportKind::Quic,
                );
            }
            (None, Some(t)) => {
                return finish(
                    leg(t, &target.tcp, target.expected, &authenticate).await,
                    TransportKind::Tcp,
                );
            }
            (Some(q), Some(t)) => (q, t),
        };

        if self.quic_known_broken(&key) {
            tracing::debug!("QUIC known broken on this path; dialling TCP directly");
            return finish(
                leg(t, &target.tcp, target.expected, &authenticate).await,
                TransportKind::Tcp,
            );
        }

        let quic_fut = leg(q, &target.quic, target.expected, &authenticate);
        tokio::pin!(quic_fut);
        let head_start = tokio::time::sleep(self.head_start);
        let early = tokio::select! {
            r = &mut quic_fut => Some(r),
            () = head_start => None,
        };
        let outcome = match early {
            Some(Ok(value)) => Ok((value, TransportKind::Quic)),
            Some(Err(LegError::Failed { reasons, refused })) => {
                match leg(t, &target.tcp, target.expected, &authenticate).await {
                    Ok(value) => Ok((value, TransportKind::Tcp)),
                    Err(e) => Err(LegError::Failed { reasons, refused }.and(e)),
                }
            }
            Some(Err(decisive)) => Err(decisive),
            None => {
                let tcp_fut = leg(t, &target.tcp, target.expected, &authenticate);
                tokio::pin!(tcp_fut);
                tokio::select! {
                    r = &mut quic_fut => match r {
                        Ok(value) => Ok((value, TransportKind::Quic)),
                        Err(quic_failed @ LegError::Failed { .. }) => match tcp_fut.await {
                            Ok(value) => Ok((value, TransportKind::Tcp)),
                            Err(e) => Err(quic_failed.and(e)),
                        },
                        Err(decisive) => Err(decisive),
                    },
                    r = &mut tcp_fut => match r {
                        Ok(value) => Ok((value, TransportKind::Tcp)),
                        Err(LegError::Failed { reasons, refused }) => {
                            let departed = self.departed(refused, target.expected);
                            tokio::select! {
                                r = &mut quic_fut => match r {
                                    Ok(value) => Ok((value, TransportKind::Quic)),
                                    Err(e) => Err(e.and(LegError::Failed { reasons, refused })),
                                },
                                () = departed => Err(LegError::Gone),
                            }
                        }
                        Err(decisive) => Err(decisive),
                    },
                }
            }
        };
        match &outcome {
            Ok((_, TransportKind::Quic)) => self.mark_quic_ok(&key),
            Ok((_, TransportKind::Tcp)) => self.mark_quic_broken(key),
            // The legs above are QUIC and TCP only.
            Ok((_, TransportKind::LocalSend)) | Err(_) => {}
        }
        outcome.map_err(DialError::from)
    }

    /// Completes when discovery no longer lists `expected`, if every TCP
    /// address `refused` it and the [`on_refused`](Self::on_refused) hook
    /// is set; never otherwise.
    fn departed(&self, refused: bool, expected: Option<DeviceId>) -> Departed {
        match (&self.refused, expected) {
            (Some(hook), Some(id)) if refused => hook(&id),
            _ => Box::pin(std::future::pending()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathKey, Broken>> {
        self.broken.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn quic_known_broken(&self, key: &PathKey) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|b| Instant::now() < b.reprobe_at)
    }

    fn mark_quic_ok(&self, key: &PathKey) {
        if self.lock().remove(key).is_some() {
            tracing::info!("QUIC works again on this path");
        }
    }

    fn mark_quic_broken(&self, key: PathKey) {
        let mut broken = self.lock();
        let backoff = broken
            .get(&key)
            .map(|b| (b.backoff * 2).min(REPROBE_MAX))
            .unwrap_or(REPROBE_INITIAL);
        tracing::info!(
            retry_in_s = backoff.as_secs(),
            "QUIC failed on this path; using TCP until the next probe"
        );
        broken.insert(
            key,
            Broken {
                reprobe_at: Instant::now() + backoff,
                backoff,
            },
        );
    }
}

fn finish<T>(
    result: Result<T, LegError>,
    kind: TransportKind,
) -> Result<(T, TransportKind), DialError> {
    result.map(|value| (value, kind)).map_err(DialError::from)
}

impl From<LegError> for DialError {
    fn from(e: LegError) -> Self {
        match e {
            LegError::Fatal(reason) => Self::Refused(reason),
            LegError::Failed { reasons, .. } => Self::Unreachable(reasons),
            LegError::Gone => Self::Gone,
        }
    }
}

/// Tries each address of one transport in turn.
async fn leg<T, F, Fut>(
    transport: &dyn Transport,
    addrs: &[SocketAddr],
    expected: Option<DeviceId>,
    authenticate: &F,
) -> Result<T, LegError>
where
    F: Fn(Link) -> Fut,
    Fut: Future<Output = Result<T, AuthFailure>>,
{
    let mut reasons = Vec::new();
    let mut refused = !addrs.is_empty();
    for &addr in addrs {
        match transport.connect(addr, expected).await {
            Ok(link) => {
                let auth = tokio::time::timeout(super::HANDSHAKE_TIMEOUT, authenticate(link));
                match auth.await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(AuthFailure::Refused(reason))) => return Err(LegError::Fatal(reason)),
                    Ok(Err(AuthFailure::Failed(reason))) => {
                        reasons.push(format!("{} {addr}: {reason}", transport.kind()));
                    }
                    Err(_) => reasons.push(format!(
                        "{} {addr}: no hello from the peer within {} s",
                        transport.kind(),
                        super::HANDSHAKE_TIMEOUT.as_secs()
                    )),
                }
            }
            Err(e @ TransportError::Identity { .. }) => return Err(LegError::Fatal(e.to_string())),
            Err(e) => {
                refused &= matches!(e, TransportError::Refused { .. });
                reasons.push(e.to_string());
                continue;
            }
        }
        refused = false;
    }
    Err(LegError::Failed { reasons, refused })
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::identity::Identity;
    use crate::transport::quic::tests::listening_on_loopback;
    use crate::transport::tcp::TcpTransport;
    use crate::transport::{CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT};

    /// A QUIC-only dialer and a listening peer on loopback that completes
    /// the transport handshake but never says anything (the test plays its
    /// `Hello` by delaying the authentication step instead).
    async fn dialer_and_target() -> (Dialer, Target, CancellationToken) {
        let (peer, peer_id, mut incoming, cancel) = listening_on_loopback();
        // Hold the accepted link open until the test ends.
        tokio::spawn(async move { while let Some(_link) = incoming.recv().await {} });
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let quic = QuicTransport::bind(lo, &Identity::generate().unwrap(), false).unwrap();
        let target = Target::device(peer_id.id(), &[peer.local_addr().unwrap()], None);
        (Dialer::new(Some(Arc::new(quic)), None), target, cancel)
    }

    /// Once the transport handshake is done the peer is there: a `Hello`
    /// slowed by loss recovery (a lost TLS `Finished`, a lost `Hello`)
    /// must not be cut off at the connect timeout. Time is paused once
    /// the link is up, so the waits below take no real time.
    #[tokio::test]
    async fn a_hello_slower_than_the_connect_timeout_still_wins() {
        let (dialer, target, cancel) = dialer_and_target().await;
        let slow = CONNECT_TIMEOUT + Duration::from_secs(2);
        assert!(slow < HANDSHAKE_TIMEOUT);
        let result = dialer
            .dial(&target, Preference::Quic, |link| {
                tokio::time::pause();
                async move {
                    tokio::time::sleep(slow).await;
                    Ok::<_, AuthFailure>(link.peer)
                }
            })
            .await;
        match result {
            Ok((peer, TransportKind::Quic)) => assert_eq!(Some(peer), target.expected),
            other => panic!("{other:?}"),
        }
        cancel.cancel();
    }

    /// A peer that completes the handshake and then never answers still
    /// fails the dial, after [`HANDSHAKE_TIMEOUT`], with a reason saying so.
    #[tokio::test]
    async fn a_hello_that_never_comes_fails_the_dial() {
        let (dialer, target, cancel) = dialer_and_target().await;
        let result = dialer
            .dial(&target, Preference::Quic, |_link| {
                tokio::time::pause();
                std::future::pending::<Result<(), AuthFailure>>()
            })
            .await;
        match result {
            Err(DialError::Unreachable(reasons)) => {
                let expected = format!(
                    "no hello from the peer within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                );
                assert!(reasons.iter().any(|r| r.contains(&expected)), "{reasons:?}");
            }
            other => panic!("{other:?}"),
        }
        cancel.cancel();
    }

    /// Discovery hears of every known device that no transport reached,
    /// and only of those.
    #[tokio::test]
    async fn unreachable_devices_are_reported() {
        let (dialer, target, cancel) = dialer_and_target().await;
        let reported = Arc::new(Mutex::new(Vec::new()));
        let dialer = dialer.on_unreachable({
            let reported = reported.clone();
            move |id| reported.lock().unwrap().push(*id)
        });
        let reached = dialer
            .dial(&target, Preference::Quic, |link| async move {
                Ok::<_, AuthFailure>(link.peer)
            })
            .await;
        assert!(reached.is_ok(), "{reached:?}");
        assert!(reported.lock().unwrap().is_empty());

        let failed = dialer
            .dial(&target, Preference::Quic, |_link| {
                tokio::time::pause();
                std::future::pending::<Result<(), AuthFailure>>()
            })
            .await;
        assert!(
            matches!(failed, Err(DialError::Unreachable(_))),
            "{failed:?}"
        );
        assert_eq!(*reported.lock().unwrap(), vec![target.expected.unwrap()]);
        cancel.cancel();
    }

    /// A known device whose host refuses TCP (nothing listens) and drops
    /// QUIC packets: with discovery saying it is gone, the dial ends at
    /// once instead of waiting out QUIC's connect timeout; while
    /// discovery still lists it, QUIC is waited for (a firewall may refuse
    /// TCP to a device that is there).
    #[tokio::test]
    async fn refused_everywhere_and_gone_from_discovery_fails_at_once() {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let identity = Identity::generate().unwrap();
        let quic = Arc::new(QuicTransport::bind(lo, &identity, false).unwrap());
        let tcp = Arc::new(TcpTransport::bind(lo, &identity, false).await.unwrap());
        // UDP that never answers; a TCP port nobody listens on.
        let silent = std::net::UdpSocket::bind(lo).unwrap();
        let closed = std::net::TcpListener::bind(lo)
            .unwrap()
            .local_addr()
            .unwrap();
        let gone = Identity::generate().unwrap().id();
        let target = Target {
            expected: Some(gone),
            quic: vec![silent.local_addr().unwrap()],
            tcp: vec![closed],
        };
        let dial = |departed: fn() -> Departed| {
            let refused = Arc::new(Mutex::new(Vec::new()));
            let dialer = Dialer::new(Some(quic.clone()), Some(tcp.clone())).on_refused({
                let refused = refused.clone();
                move |id| {
                    refused.lock().unwrap().push(*id);
                    departed()
                }
            });
            let target = target.clone();
            async move {
                let started = Instant::now();
                let result = dialer
                    .dial(&target, Preference::Auto, |_link| async {
                        Ok::<_, AuthFailure>(())
                    })
                    .await;
                (result, started.elapsed(), refused.lock().unwrap().clone())
            }
        };

        let (result, took, refused) = dial(|| Box::pin(std::future::ready(()))).await;
        assert!(matches!(result, Err(DialError::Gone)), "{result:?}");
        assert_eq!(refused, vec![gone]);
        assert!(took < CONNECT_TIMEOUT, "waited {took:?} for QUIC");

        let (result, took, refused) = dial(|| Box::pin(std::future::pending())).await;
        let Err(DialError::Unreachable(reasons)) = result else {
            panic!("{result:?}");
        };
        assert_eq!(refused, vec![gone]);
        assert!(took >= CONNECT_TIMEOUT, "gave up on QUIC after {took:?}");
        assert!(
            reasons.iter().any(|r| r.contains("connection refused")),
            "{reasons:?}"
        );
    }
}
