//! Consent: whether an incoming offer goes ahead, by policy, by trust, or
//! by the user's `share accept` / `share reject` before the offer expires.
//!
//! `decide` is the whole rule and knows nothing of wire protocols: the
//! session that received the offer passes a future that resolves when its
//! sender gives up ([`SenderGone`]), and answers its sender itself from
//! the [`Declined`] it gets back.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::pending::PendingOffers;
use crate::identity::trust::TrustStore;
use crate::registry::{Decision, Handle, State, StopCause};

/// Which offers are accepted without asking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AcceptPolicy {
    /// Trusted devices automatically; others wait for `share accept`.
    #[default]
    Ask,
    /// Trusted devices automatically; others are rejected at once.
    Trusted,
    /// Everything, from anyone (kiosks and tests only).
    All,
}

impl AcceptPolicy {
    /// The lower-case name (as in JSON and the config file).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ask => "ask",
            Self::Trusted => "trusted",
            Self::All => "all",
        }
    }
}

/// What kind of offer waits for consent (for messages and the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offering {
    /// Files and directories: `files` files of `bytes` bytes.
    Files {
        /// Number of files.
        files: usize,
        /// Their total size.
        bytes: u64,
    },
    /// A short text message.
    Text,
}

impl Offering {
    /// What the offer is called in messages.
    pub(super) fn noun(self) -> &'static str {
        match self {
            Self::Files { .. } => "offer",
            Self::Text => "text",
        }
    }

    fn things(self) -> &'static str {
        match self {
            Self::Files { .. } => "files",
            Self::Text => "texts",
        }
    }
}

/// How a sender ended its wait for consent, as its session saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderGone {
    /// It cancelled the offer; the text says so in its words.
    Cancelled(String),
    /// It stopped with an error of its own.
    GaveUp(String),
    /// It broke its protocol: it sent this (the session answers that
    /// itself).
    BrokeProtocol(String),
    /// The connection ended or failed.
    Lost(String),
}

/// Why an offer does not go ahead: the final state it was recorded with
/// and the reason (shown in `share transfers`, the history, and sent to
/// the sender when it is a rejection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declined {
    /// `Rejected` (tell the sender), `Cancelled` (by a user on either
    /// side) or `Failed` (the sender went away, or, with no `gone`, this
    /// daemon stops: [`Declined::stopped_here`]).
    pub state: State,
    /// Why, in words.
    pub reason: String,
    /// The sender's part in it, if it ended the wait.
    pub gone: Option<SenderGone>,
}

impl Declined {
    fn rejected(reason: String) -> Self {
        Self {
            state: State::Rejected,
            reason,
            gone: None,
        }
    }

    /// Whether this side's user cancelled (the sender is to be told).
    pub fn cancelled_here(&self) -> bool {
        self.state == State::Cancelled && self.gone.is_none()
    }

    /// Whether this daemon stopped while the offer waited (the sender is
    /// told the offer is paused: it offers again, and is asked about
    /// again, once the service is back).
    pub fn stopped_here(&self) -> bool {
        self.state == State::Failed && self.gone.is_none()
    }
}

/// What [`decide`] needs to know.
pub(super) struct Rules<'a> {
    pub(super) policy: AcceptPolicy,
    pub(super) trust: &'a TrustStore,
    pub(super) pending: &'a PendingOffers,
    pub(super) offer_timeout: Duration,
}

/// Decides whether an offer registered as `handle` goes ahead: policy,
/// trust, or the user's answer within the offer timeout; while waiting,
/// `gone` may report that the sender gave up, and `share cancel` may
/// cancel it.
pub(super) async fn decide(
    rules: &Rules<'_>,
    sender: &super::Sender,
    offering: Offering,
    handle: &Handle,
    gone: impl Future<Output = SenderGone>,
) -> Result<(), Declined> {
    let trusted = rules.trust.is_trusted(&sender.id);
    match rules.policy {
        AcceptPolicy::All => return Ok(()),
        _ if trusted => return Ok(()),
        AcceptPolicy::Trusted => {
            return Err(Declined::rejected(format!(
                "this device only accepts {} from trusted devices",
                offering.things()
            )));
        }
        AcceptPolicy::Ask => {}
    }
    let _place = rules
        .pending
        .wait(sender.id, sender.address)
        .map_err(|e| Declined::rejected(e.to_string()))?;
    let noun = offering.noun();
    let (files, bytes) = match offering {
        Offering::Files { files, bytes } => (files, bytes),
        Offering::Text => (0, 0),
    };
    tracing::info!(
        id = handle.id(),
        files,
        bytes,
        "{noun} from {} waiting: share accept {} / share reject {}",
        sender.name,
        handle.id(),
        handle.id()
    );
    let timeout = rules.offer_timeout;
    let decision = handle.pending(timeout);
    let cancel = handle.cancelled();
    tokio::select! {
        d = tokio::time::timeout(timeout, decision) => match d {
            Ok(Ok(Decision::Accept)) => Ok(()),
            Ok(Ok(Decision::Reject(reason))) => Err(Declined::rejected(reason.to_string())),
            Ok(Err(_)) => Err(Declined::rejected("the receiving daemon is shutting down".into())),
            Err(_) => Err(Declined::rejected(format!(
                "{noun} expired: not accepted within {} s",
                timeout.as_secs()
            ))),
        },
        // `share cancel` on a pending offer, or the daemon's stop.
        () = cancel.cancelled() => Err(match handle.stop_cause() {
            Some(StopCause::Shutdown) => Declined {
                state: State::Failed,
                reason: format!("this device's lanshare service stopped before the {noun} was answered"),
                gone: None,
            },
            Some(StopCause::Cancel) | None => Declined {
                state: State::Cancelled,
                reason: "cancelled".into(),
                gone: None,
            },
        }),
        gone = gone => {
            let (state, reason) = match &gone {
                SenderGone::Cancelled(reason) => (State::Cancelled, reason.clone()),
                SenderGone::GaveUp(message) => (State::Failed, format!("sender gave up: {message}")),
                SenderGone::BrokeProtocol(_) => (State::Failed, "the sender broke the protocol".into()),
                SenderGone::Lost(e) => (State::Failed, format!("sender went away: {e}")),
            };
            Err(Declined { state, reason, gone: Some(gone) })
        }
    }
}
