//! Memory strangers can make a receiver hold (issue 14 item 2): many
//! throwaway identities each send a 100 000-entry offer and wait for
//! consent, and more send all but the last byte of an 8 MiB frame. The
//! receiver's resident memory must stay within its peer memory budget
//! (256 MiB by default) plus 64 MiB, and come back to within 64 MiB of
//! idle once they are gone.
//!
//! The strangers use addresses in 127.0.0.0/8 other than the receiver's,
//! as several hosts (see `flood.rs`). The figures are printed (run with
//! `--nocapture`); `bench/README.md` quotes them.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use lanshare::identity::Identity;
use lanshare::protocol::{self, Entry, EntryKind, ErrorCode, Manifest, Message};
use lanshare::transfer::framed::{Framed, RecvError};
use lanshare::transfer::handshake;
use lanshare::transport::Transport;
use lanshare::transport::quic::QuicTransport;

use crate::common::TestDaemon;

/// Entries in each huge offer: the most the protocol allows.
pub(crate) const ENTRIES: usize = protocol::MAX_ENTRIES;

/// Strangers offering: more than the receiver keeps waiting (32).
const OFFERS: usize = 40;

/// Strangers' connections stuck inside an 8 MiB frame: as many as the
/// strangers' connection slots (64).
const HALF_FRAMES: usize = 64;

/// The daemon's default peer memory budget, and the slack the issue allows
/// on top of it (allocator, runtime, connections' own buffers).
const BUDGET_MIB: f64 = 256.0;
const SLACK_MIB: f64 = 64.0;

/// A stranger's host: `127.2.x.y` for the `n`th.
fn host(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 2, (n >> 8) as u8, n as u8))
}

/// The process ID of `daemon`, from the peer credentials of its control
/// socket.
pub(crate) fn pid_of(daemon: &TestDaemon) -> u32 {
    let stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    let peer = rustix::net::sockopt::socket_peercred(&stream).unwrap();
    peer.pid.as_raw_nonzero().get().unsigned_abs()
}

/// Resident and peak resident memory of process `pid`, in MiB
/// (`VmRSS`, `VmHWM` of `/proc/PID/status`).
pub(crate) fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A 100 000-entry offer of empty files eight folders deep, unique to
/// `seed` (so no two strangers' offers are the same transfer).
pub(crate) fn huge_offer(seed: usize) -> Manifest {
    let entries = (0..ENTRIES)
        .map(|i| Entry {
            path: format!("s{seed}/photos/2026/a/b/c/d/e/{i:06}.jpg"),
            kind: EntryKind::File {
                size: 0,
                tag: [7; 32],
            },
        })
        .collect();
    Manifest {
        entries,
        ..Manifest::default()
    }
}

/// A stranger: a fresh identity on its own endpoint at `from`, connected
/// to `target` and past `Hello`.
pub(crate) async fn stranger(
    target: SocketAddr,
    from: IpAddr,
    name: &str,
) -> Result<(QuicTransport, Framed), String> {
    let identity = Identity::generate().map_err(|e| e.to_string())?;
    let quic = QuicTransport::bind(SocketAddr::new(from, 0), &identity, false)
        .map_err(|e| e.to_string())?;
    let link = quic
        .connect(target, None)
        .await
        .map_err(|e| e.to_string())?;
    let mut framed = Framed::new(link);
    handshake::client(&mut framed, name)
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok((quic, framed))
}

/// What became of one stranger's attempt.
pub(crate) enum Outcome {
    /// No answer: the receiver holds it (an offer waiting for consent, a
    /// frame half read).
    Held(Box<(QuicTransport, Framed)>),
    /// Refused with `Error(Busy)`.
    Busy,
    /// Any other answer or failure.
    Other(String),
}

impl Outcome {
    /// What an answer from the receiver means.
    fn of(answer: Result<Message, RecvError>) -> Self {
        match answer {
            Ok(Message::Error {
                code: ErrorCode::Busy,
                ..
            }) => Self::Busy,
            Ok(other) => Self::Other(format!("answered {other:?}")),
            Err(e) => Self::Other(e.to_string()),
        }
    }
}

/// The receiver's answer on `framed` within `limit`: refusals come at once
/// (as in `flood.rs`), so silence means the stranger is held.
async fn outcome(quic: QuicTransport, mut framed: Framed, limit: Duration) -> Outcome {
    match framed.recv_within(limit).await {
        Err(RecvError::Timeout(_)) => Outcome::Held(Box::new((quic, framed))),
        answer => Outcome::of(answer),
    }
}

/// Strangers held and refused by a flood.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) held: Vec<(QuicTransport, Framed)>,
    pub(crate) busy: usize,
    pub(crate) other: Vec<String>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Held(held) => self.held.push(*held),
            Outcome::Busy => self.busy += 1,
            Outcome::Other(what) => self.other.push(what),
        }
    }

    /// Hangs up on every held connection.
    pub(crate) fn leave(&mut self, rt: &tokio::runtime::Runtime) {
        let _runtime = rt.enter();
        for (_, framed) in self.held.drain(..) {
            framed.into_link().abort("probe over");
        }
    }
}

/// `count` strangers, four per host (the receiver keeps at most four
/// waiting offers per address), each offering a fresh [`huge_offer`] to
/// `bob`. Returns once every offer was answered or is listed as pending by
/// `share transfers` (so parsed, checked and held).
pub(crate) fn huge_offers(rt: &tokio::runtime::Runtime, bob: &TestDaemon, count: usize) -> Tally {
    let target: SocketAddr = bob.addr().parse().unwrap();
    let pending: Arc<Mutex<HashSet<String>>> = Arc::default();
    // One offer at a time goes out (40 at once take the unoptimised test
    // build longer than the receiver waits for a message); then each
    // waits on its own.
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let name = format!("offer {i}");
            let sent = rt.block_on(async {
                let (quic, mut framed) = stranger(target, host(i / 4), &name).await?;
                framed
                    .send(&Message::Offer(huge_offer(i)))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((quic, framed))
            });
            let pending = pending.clone();
            rt.spawn(async move {
                let (quic, mut framed) = match sent {
                    Ok(s) => s,
                    Err(e) => return Outcome::Other(e),
                };
                loop {
                    match framed.recv_within(Duration::from_millis(200)).await {
                        Err(RecvError::Timeout(_)) => {
                            if pending.lock().unwrap().contains(&name) {
                                return Outcome::Held(Box::new((quic, framed)));
                            }
                        }
                        answer => return Outcome::of(answer),
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !tasks.iter().all(|t| t.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "the offers were neither answered nor listed"
        );
        let listed = bob
            .transfers()
            .into_iter()
            .filter(|t| t["state"] == "pending");
        pending
            .lock()
            .unwrap()
            .extend(listed.filter_map(|t| t["peer"].as_str().map(str::to_owned)));
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.add(rt.block_on(task).unwrap());
    }
    tally
}

/// How long a stranger waits for a refusal before counting itself held.
const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// Runs `attempts` at once on `rt` and tallies their outcomes.
fn all(
    rt: &tokio::runtime::Runtime,
    attempts: impl Iterator<Item = impl Future<Output = Outcome> + Send + 'static>,
) -> Tally {
    rt.block_on(async {
        let tasks: Vec<_> = attempts.map(tokio::spawn).collect();
        let mut tally = Tally::default();
        for task in tasks {
            tally.add(task.await.unwrap());
        }
        tally
    })
}

/// `count` strangers, eight per host (the strangers' bound per address),
/// each sending all but the last byte of an `Offer` frame of nearly
/// [`protocol::MAX_FRAME_LEN`] bytes, and then nothing.
fn half_frames(rt: &tokio::runtime::Runtime, target: SocketAddr, count: usize) -> Tally {
    // 100 000 directories with 80-byte names: an 8.3 MB frame.
    let manifest = Manifest {
        entries: (0..ENTRIES)
            .map(|i| Entry {
                path: format!("{i:080}"),
                kind: EntryKind::Directory,
            })
            .collect(),
        ..Manifest::default()
    };
    let mut frame = BytesMut::new();
    protocol::encode(&Message::Offer(manifest), &mut frame).unwrap();
    assert!(frame.len() > 8_000_000 && frame.len() <= protocol::MAX_FRAME_LEN + 4);
    let half = frame.split_to(frame.len() - 1).freeze();
    let attempts = (0..count).map(|i| {
        let half = half.clone();
        async move {
            let (quic, framed) =
                match stranger(target, host(1000 + i / 8), &format!("frame {i}")).await {
                    Ok(s) => s,
                    Err(e) => return Outcome::Other(e),
                };
            let mut link = framed.into_link();
            if let Err(e) = link.writer.write_all(&half).await {
                return Outcome::Other(e.to_string());
            }
            let _ = link.writer.flush().await;
            outcome(quic, Framed::new(link), ANSWER_WAIT).await
        }
    });
    all(rt, attempts)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Polls until the resident memory of `pid` is at most `target` MiB (at
/// most `limit`); returns the last reading.
fn settles_to(pid: u32, target: f64, limit: Duration) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let (rss, _) = memory_mib(pid);
        if rss <= target || Instant::now() > deadline {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The probes against a receiver with the default budget: its peak
/// stays under the budget plus 64 MiB, and its memory comes back when the
/// strangers leave.
#[test]
fn strangers_cannot_make_the_receiver_hold_more_than_its_budget() {
    let bob = TestDaemon::builder("bob").spawn();
    let pid = pid_of(&bob);
    let target: SocketAddr = bob.addr().parse().unwrap();
    let rt = runtime();
    let (idle, _) = memory_mib(pid);

    let mut offers = huge_offers(&rt, &bob, OFFERS);
    let (with_offers, _) = memory_mib(pid);
    let mut frames = half_frames(&rt, target, HALF_FRAMES);
    let (with_both, peak) = memory_mib(pid);
    eprintln!(
        "idle {idle:.1} MiB; {} offers held, {} busy, other {:?}: {with_offers:.1} MiB; \
         {} half frames held, {} busy, other {:?}: {with_both:.1} MiB; peak {peak:.1} MiB",
        offers.held.len(),
        offers.busy,
        offers.other.first(),
        frames.held.len(),
        frames.busy,
        frames.other.first(),
    );
    offers.leave(&rt);
    frames.leave(&rt);
    let left = Instant::now();
    let after = settles_to(pid, idle + SLACK_MIB, Duration::from_secs(60));
    eprintln!(
        "after the strangers left: {after:.1} MiB ({:.1} s)",
        left.elapsed().as_secs_f64()
    );

    assert!(
        peak <= idle + BUDGET_MIB + SLACK_MIB,
        "peak {peak:.1} MiB, idle {idle:.1} MiB"
    );
    assert!(
        after <= idle + SLACK_MIB,
        "{after:.1} MiB a minute after the strangers left, idle {idle:.1} MiB"
    );
}
