//! `share receive` (wait for the next offer, ask, show progress until the
//! files are in place) and `share accept` without an ID.
//!
//! Both are clients of the daemon's event subscription
//! ([`crate::control::events`]): `share receive` subscribes first, so an
//! offer that is already waiting counts as "the next one" and one that
//! arrives while it asks is not missed. The consent rules stay the
//! daemon's: a trusted device's offer is accepted by the daemon itself
//! (`share receive` then only follows it); an untrusted one waits for the
//! answer given here, with `share accept`, or on the desktop. Ctrl-C
//! before answering just stops waiting: the offer stays pending.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use indicatif::ProgressBar;
use serde::Serialize;

use super::output::{errln, json, outln, parse};
use super::{send, texts};
use crate::control::client::{self, ClientError};
use crate::control::events::{Event, Subscription, Topic};
use crate::control::{Ack, CommandError, ErrorKind, IdInfo, Request, ResultStatus, TransferList};
use crate::describe::{names_preview, what, who};
use crate::identity::DeviceId;
use crate::registry::{Direction, State, TransferInfo, TransferKind};

/// `share receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Print the newest unread text to stdout and mark it read (instead of
    /// waiting for files): exactly as sent into a pipe or file, with control
    /// characters escaped on a terminal.
    #[arg(long)]
    pub text: bool,
    /// With --text: if no text is unread, wait up to SECS for the next one.
    #[arg(long, value_name = "SECS", requires = "text")]
    pub wait: Option<u64>,
    /// Only an offer from this device (name or device-ID prefix).
    #[arg(long, value_name = "PEER", conflicts_with = "text")]
    pub from: Option<String>,
    /// Give up if no offer arrives within SECS.
    #[arg(long, value_name = "SECS", conflicts_with = "text")]
    pub timeout: Option<u64>,
    /// Accept an offer from a trusted device without asking.
    #[arg(long, conflicts_with = "text")]
    pub yes: bool,
    /// Accept an offer from any device without asking, trusted or not.
    #[arg(long, conflicts_with = "text")]
    pub yes_untrusted: bool,
    /// Print one JSON document on stdout (never asks; with --text: sender,
    /// time, text instead of the bare text).
    #[arg(long)]
    pub json: bool,
}

/// The `--json` document of a received transfer.
#[derive(Debug, Serialize)]
struct Received<'a> {
    status: ResultStatus,
    id: &'a str,
    peer: &'a str,
    peer_id: DeviceId,
    trusted: bool,
    files: usize,
    bytes: u64,
    /// Where the top-level entries were put.
    paths: &'a [PathBuf],
    /// From the start of `share receive`, waiting included.
    seconds: f64,
}

/// `share receive ...`.
pub(super) async fn receive(sockets: &[PathBuf], args: ReceiveArgs) -> Result<()> {
    if args.text {
        return texts::receive_text(sockets, args.wait, args.json).await;
    }
    // With --json, run_client turns the error into the failure document.
    receive_files(sockets, &args)
        .await
        .map_err(|failure| ClientError::Daemon(failure).into())
}

/// A chosen offer and how it got past consent.
enum Found {
    /// Waiting for an answer.
    Pending {
        transfer: TransferInfo,
        trusted: bool,
    },
    /// The daemon accepted it without asking: a trusted device, or any
    /// under the accept policy `all`.
    Accepted {
        transfer: TransferInfo,
        trusted: bool,
    },
}

async fn receive_files(sockets: &[PathBuf], args: &ReceiveArgs) -> Result<(), CommandError> {
    let started = Instant::now();
    let mut events = Subscription::open(sockets, &[Topic::Transfers])
        .await
        .map_err(from_client)?;
    let chatty = !args.json && std::io::stderr().is_terminal();
    if chatty
        && let Ok(me) = client::call(sockets, Request::Id, |_| {}).await
        && let Ok(me) = serde_json::from_value::<IdInfo>(me)
    {
        errln!(
            "waiting for an offer (on the other device: share send {} FILES); Ctrl-C stops",
            me.name
        );
    }
    let deadline = args
        .timeout
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let found = next_offer(&mut events, args, deadline).await?;
    let (transfer, trusted) = match found {
        Found::Pending { transfer, trusted } => {
            describe(&transfer, trusted, args.json);
            decide(sockets, &mut events, args, &transfer, trusted).await?;
            (transfer, trusted)
        }
        Found::Accepted { transfer, trusted } => {
            describe(&transfer, trusted, args.json);
            if !args.json {
                if trusted {
                    errln!("accepted without asking: a trusted device");
                } else {
                    errln!(
                        "accepted without asking: this daemon accepts offers from any device (accept = \"all\")"
                    );
                }
            }
            (transfer, trusted)
        }
    };
    let done = follow(&mut events, &transfer, chatty).await?;
    let seconds = started.elapsed().as_secs_f64();
    output(&done, trusted, seconds, args.json)
        .map_err(|e| CommandError::new(ErrorKind::Io, e.to_string()))
}

/// Waits for an offer of files matching `--from`: one already waiting, a
/// new one, or a new transfer the daemon accepted by itself.
async fn next_offer(
    events: &mut Subscription,
    args: &ReceiveArgs,
    deadline: Option<tokio::time::Instant>,
) -> Result<Found, CommandError> {
    // Transfers that existed before we started are not "the next one".
    let mut known: HashSet<String> = HashSet::new();
    loop {
        let event = match deadline {
            Some(at) => match tokio::time::timeout_at(at, events.next()).await {
                Ok(event) => event,
                Err(_) => {
                    return Err(CommandError::new(
                        ErrorKind::Timeout,
                        format!(
                            "no offer arrived within {} s",
                            args.timeout.unwrap_or_default()
                        ),
                    ));
                }
            },
            None => events.next().await,
        }
        .map_err(from_client)?;
        match event {
            Event::Snapshot { transfers, .. } => {
                known.extend(
                    transfers
                        .into_iter()
                        .flatten()
                        .filter(|t| t.state != State::Pending)
                        .map(|t| t.id),
                );
            }
            Event::Offer { transfer, trusted } if wanted(&transfer, args) => {
                return Ok(Found::Pending { transfer, trusted });
            }
            Event::Transfer { transfer, trusted }
                if transfer.state == State::Active
                    && !known.contains(&transfer.id)
                    && wanted(&transfer, args) =>
            {
                return Ok(Found::Accepted {
                    transfer,
                    trusted: trusted.unwrap_or(false),
                });
            }
            Event::Transfer { transfer, .. } => {
                known.insert(transfer.id);
            }
            _ => {}
        }
    }
}

/// Incoming files, from the device `--from` names (if it does).
fn wanted(t: &TransferInfo, args: &ReceiveArgs) -> bool {
    t.direction == Direction::In
        && t.kind == TransferKind::Files
        && args.from.as_deref().is_none_or(|from| {
            t.peer.eq_ignore_ascii_case(from) || (from.len() >= 4 && t.peer_id.matches_prefix(from))
        })
}

/// Who offers what, on stderr (stdout is for the result).
fn describe(t: &TransferInfo, trusted: bool, json: bool) {
    if json {
        return;
    }
    errln!("{} offers {}", who(t, trusted), what(t));
    errln!("  {}", names_preview(&t.names));
}

/// Accepts `t` (by the flags, or by asking), or says why not.
async fn decide(
    sockets: &[PathBuf],
    events: &mut Subscription,
    args: &ReceiveArgs,
    t: &TransferInfo,
    trusted: bool,
) -> Result<(), CommandError> {
    let accept = if args.yes_untrusted || (args.yes && trusted) {
        true
    } else if !args.json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        ask(events, t).await?
    } else {
        let hint = if args.yes {
            format!(
                "{} is not a trusted device; --yes accepts only trusted ones",
                t.peer
            )
        } else {
            "no terminal to ask on".to_owned()
        };
        return Err(CommandError::new(
            ErrorKind::Refused,
            format!(
                "not accepted ({hint}): the offer stays pending; answer with `share accept {}` or `share reject {}`, or use --yes-untrusted",
                t.id, t.id
            ),
        ));
    };
    let request = if accept {
        Request::Accept { id: t.id.clone() }
    } else {
        Request::Reject {
            id: t.id.clone(),
            reason: None,
        }
    };
    client::call(sockets, request, |_| {})
        .await
        .map_err(from_client)?;
    if accept {
        Ok(())
    } else {
        Err(CommandError::new(
            ErrorKind::Rejected,
            format!("declined the offer from {}", t.peer),
        ))
    }
}

/// `Accept? [y/N]` on the terminal; the offer may end meanwhile (expiry,
/// the sender cancels).
async fn ask(events: &mut Subscription, t: &TransferInfo) -> Result<bool, CommandError> {
    eprint!("Accept? [y/N] ");
    let _ = std::io::stderr().flush();
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    });
    tokio::pin!(answer);
    loop {
        tokio::select! {
            line = &mut answer => {
                let line = line
                    .map_err(|e| CommandError::new(ErrorKind::Internal, e.to_string()))?
                    .map_err(|e| {
                        CommandError::new(ErrorKind::Io, format!("cannot read the answer: {e}"))
                    })?;
                return Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"));
            }
            event = events.next() => {
                if let Some(ended) = ended(&event.map_err(from_client)?, &t.id)
                    && ended.state != State::Pending
                {
                    eprintln!();
                    return Err(gone(&ended));
                }
            }
        }
    }
}

/// The state of transfer `id` in `event`, if the event tells it.
fn ended(event: &Event, id: &str) -> Option<TransferInfo> {
    match event {
        Event::Transfer { transfer, .. } if transfer.id == id => Some(transfer.clone()),
        Event::Snapshot {
            transfers: Some(list),
            ..
        } => list.iter().find(|t| t.id == id).cloned(),
        _ => None,
    }
}

/// The error for a transfer that ended without the files.
fn gone(t: &TransferInfo) -> CommandError {
    let kind = match t.state {
        State::Rejected => ErrorKind::Rejected,
        State::Cancelled => ErrorKind::Cancelled,
        _ => ErrorKind::Failed,
    };
    let reason = t.reason.as_deref().unwrap_or("no reason given");
    CommandError::new(
        kind,
        format!(
            "the transfer from {} {}: {}",
            t.peer,
            t.state.as_str(),
            reason
        ),
    )
}

/// Shows progress until `t` is done; returns its final snapshot.
async fn follow(
    events: &mut Subscription,
    t: &TransferInfo,
    bar: bool,
) -> Result<TransferInfo, CommandError> {
    let bar = bar.then(|| {
        let bar = ProgressBar::new(t.bytes);
        bar.set_style(send::transfer_style());
        bar
    });
    let result = loop {
        let event = match events.next().await {
            Ok(event) => event,
            Err(e) => break Err(from_client(e)),
        };
        if let Event::Progress { id, bytes_done, .. } = &event
            && id == &t.id
            && let Some(bar) = &bar
        {
            bar.set_position(*bytes_done);
        }
        match ended(&event, &t.id) {
            Some(now) if now.state == State::Done => break Ok(now),
            Some(now) if matches!(now.state, State::Pending | State::Active) => {}
            Some(now) => break Err(gone(&now)),
            None => {}
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

fn output(t: &TransferInfo, trusted: bool, seconds: f64, as_json: bool) -> Result<()> {
    if as_json {
        let document = Received {
            status: ResultStatus::Done,
            id: &t.id,
            peer: &t.peer,
            peer_id: t.peer_id,
            trusted,
            files: t.files,
            bytes: t.bytes,
            paths: &t.saved,
            seconds,
        };
        return json(&serde_json::to_value(document)?);
    }
    outln!("received {} from {} in {seconds:.2} s:", what(t), t.peer);
    for path in &t.saved {
        outln!("{}", path.display());
    }
    Ok(())
}

fn from_client(e: ClientError) -> CommandError {
    match e {
        ClientError::Daemon(e) => e,
        other => CommandError::new(other.kind(), other.to_string()),
    }
}

/// `share accept` without an ID: the only incoming offer waiting.
pub(super) async fn accept_only(sockets: &[PathBuf]) -> Result<()> {
    let list: TransferList = parse(client::call(sockets, Request::Transfers, |_| {}).await?)?;
    let waiting: Vec<&TransferInfo> = list
        .iter()
        .filter(|t| t.direction == Direction::In && t.state == State::Pending)
        .collect();
    let offer = match waiting.as_slice() {
        [] => bail!("no offer is waiting for an answer (see `share transfers`)"),
        [one] => *one,
        several => {
            let listed: Vec<String> = several
                .iter()
                .map(|t| format!("{} from {} ({})", t.id, t.peer, what(t)))
                .collect();
            bail!(
                "{} offers are waiting: {}; name one with `share accept ID`",
                several.len(),
                listed.join(", ")
            );
        }
    };
    let ack: Ack = parse(
        client::call(
            sockets,
            Request::Accept {
                id: offer.id.clone(),
            },
            |_| {},
        )
        .await?,
    )?;
    outln!("{}: {} from {}", ack.message, what(offer), offer.peer);
    Ok(())
}
