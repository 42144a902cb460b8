//! `share notify`: the per-user desktop agent.
//!
//! The daemon may be a system service shared by the members of a group,
//! and it must never touch anyone's desktop session. So each user who
//! wants notifications runs this small agent in their graphical session
//! (a user unit started with it): it subscribes to the daemon's events
//! over the control socket, as that user and under the socket's own
//! access rules, and talks to that user's session bus. Accept, Reject and
//! "Always accept from this device" become ordinary control requests
//! (`share accept`, `share reject`, `share trust`).
//!
//! [`agent`] decides what to show and do (pure, unit-tested); [`bus`]
//! speaks D-Bus (zbus on the tokio runtime, no libdbus). [`run`] is the
//! loop between them and the daemon; it follows the daemon through
//! restarts, and it stops with [`bus::BusError::NoSession`] when there is
//! no session bus at all.

pub mod agent;
pub mod bus;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::control::Request;
use crate::control::client::{self, ClientError};
use crate::control::events::{Subscription, Topic};
use agent::{Agent, Op};
use bus::{BusError, Notifier, Signal};

/// First wait before connecting to the daemon again; doubled up to
/// [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_secs(1);

/// Longest wait between connection attempts (the daemon not installed
/// for this user, or restarting).
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Runs the agent until `shutdown` resolves.
///
/// # Errors
/// No session bus, another agent in this session, or no notification
/// server.
pub async fn run(
    sockets: Vec<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    let mut notifier = Notifier::connect().await?;
    let mut signals = notifier.signals().await?;
    let caps = notifier.caps().await?;
    tracing::info!(?caps, "desktop agent ready");
    let mut agent = Agent::new(caps);
    let (done_tx, mut done_rx) = mpsc::channel::<(String, Result<(), ClientError>)>(16);
    tokio::pin!(shutdown);
    let mut wait = RECONNECT_FIRST;
    let mut named = false;
    loop {
        let mut subscription = tokio::select! {
            () = &mut shutdown => return Ok(()),
            opened = Subscription::open(&sockets, &[Topic::Transfers]) => match opened {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!("cannot reach the lanshare daemon ({e}); trying again in {} s", wait.as_secs());
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(RECONNECT_MAX);
                    continue;
                }
            },
        };
        wait = RECONNECT_FIRST;
        if !named {
            // Taken once the agent is watching, so its owner on the bus
            // means "offers will be shown".
            notifier.claim_agent_name().await?;
            named = true;
        }
        tracing::info!("watching the lanshare daemon for offers");
        loop {
            let ops = tokio::select! {
                () = &mut shutdown => return Ok(()),
                event = subscription.next() => match event {
                    Ok(event) => agent.on_event(event, Instant::now()),
                    Err(e) => {
                        tracing::info!("lost the lanshare daemon: {e}");
                        break;
                    }
                },
                Some(signal) = signals.next() => match signal {
                    Signal::Action { id, key } => agent.on_action(id, &key),
                    Signal::Closed { id } => {
                        agent.on_closed(id);
                        Vec::new()
                    }
                },
                Some((transfer, result)) = done_rx.recv() => match result {
                    Ok(()) => Vec::new(),
                    Err(e) => agent.on_command_failed(&transfer, &e.to_string()),
                },
            };
            for op in ops {
                perform(op, &mut agent, &notifier, &sockets, &done_tx).await;
            }
        }
    }
}

/// Carries out one of the agent's decisions.
async fn perform(
    op: Op,
    agent: &mut Agent,
    notifier: &Notifier,
    sockets: &[PathBuf],
    done: &mpsc::Sender<(String, Result<(), ClientError>)>,
) {
    match op {
        Op::Show { transfer, note } => {
            let replaces = agent.note_of(&transfer).unwrap_or(0);
            match notifier.show(&note, replaces).await {
                Ok(id) => agent.shown(&transfer, id),
                Err(e) => tracing::warn!("cannot show a notification: {e}"),
            }
        }
        Op::Open { paths } => notifier.open_folder(&paths).await,
        Op::Accept { transfer } => {
            command(
                sockets,
                done,
                transfer.clone(),
                vec![Request::Accept { id: transfer }],
            );
        }
        Op::Reject { transfer, reason } => {
            let request = Request::Reject {
                id: transfer.clone(),
                reason: Some(reason.into()),
            };
            command(sockets, done, transfer, vec![request]);
        }
        Op::TrustAndAccept { transfer, peer_id } => {
            let requests = vec![
                Request::Trust {
                    peer: peer_id.to_string(),
                },
                Request::Accept {
                    id: transfer.clone(),
                },
            ];
            command(sockets, done, transfer, requests);
        }
    }
}

/// Sends `requests` in order, in the background (the loop keeps serving
/// events meanwhile); the outcome comes back on `done`.
fn command(
    sockets: &[PathBuf],
    done: &mpsc::Sender<(String, Result<(), ClientError>)>,
    transfer: String,
    requests: Vec<Request>,
) {
    let sockets = sockets.to_vec();
    let done = done.clone();
    tokio::spawn(async move {
        let mut result = Ok(());
        for request in requests {
            if let Err(e) = client::call(&sockets, request, |_| {}).await {
                result = Err(e);
                break;
            }
        }
        let _ = done.send((transfer, result)).await;
    });
}
