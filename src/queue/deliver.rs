//! Delivering one queued send: wait for the peer (peer-table changes, or
//! a backing-off timer for a `HOST:PORT` that no table lists), check that
//! it answers, then hand the send to the send service.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::store::What;
use super::{Queue, RETRY_MAX, RETRY_MIN};
use crate::outgoing::retry::Backoff;
use crate::outgoing::{Payload, SendJob};
use crate::peers::{IDENTIFY_TIMEOUT, IdentifyError, Route};
use crate::registry::State;
use crate::transfer::source::{self, SourceError};
use crate::transport::dial::{DialError, Preference};

/// Whether a look for the peer found it answering.
enum Probe {
    Ready,
    /// Not there (yet); keep waiting.
    Absent(String),
    /// It answered but refused us or is not who we expect: give up.
    Refused(String),
}

/// Why the files of a queued send cannot be had.
#[derive(Debug, thiserror::Error)]
enum FilesError {
    /// Queued by another user before a restart.
    #[error(
        "queued by user {0} before the daemon restarted; the daemon does not open other users' files itself, so queue it again"
    )]
    OtherUser(u32),
    /// Walking or opening the paths failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The task failed.
    #[error("internal error: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Queue {
    /// Waits for the peer of queued send `id`, then sends; see the module
    /// docs.
    pub(super) async fn deliver(self: Arc<Self>, id: String) {
        let Some((peer, preference, cancel)) = self.store.with(&id, |i| {
            (i.stored.peer.clone(), i.stored.transport, i.cancel.clone())
        }) else {
            return;
        };
        let mut changes = self.peers.subscribe();
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            changes.borrow_and_update();
            let probe = tokio::select! {
                p = self.probe(&peer, preference) => p,
                () = cancel.cancelled() => return,
            };
            match probe {
                Probe::Ready => match self.send_now(&id, &peer, preference, &cancel).await {
                    Some(error) => {
                        self.store.with(&id, |i| {
                            i.attempts += 1;
                            i.last_error = Some(error);
                        });
                    }
                    None => return,
                },
                Probe::Absent(reason) => {
                    tracing::debug!(id, "queued send to {peer} still waiting: {reason}");
                    self.store.with(&id, |i| i.last_error = Some(reason));
                }
                Probe::Refused(reason) => {
                    self.fail(&id, State::Failed, &reason);
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_wait()) => {}
                _ = changes.changed() => backoff.reset(),
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Whether `peer` resolves and answers a `Hello` now (a LocalSend
    /// device: whether it is listed or named by address; the send's
    /// connection is the check).
    async fn probe(&self, peer: &str, preference: Preference) -> Probe {
        let resolved = match self.resolver.route(peer).await {
            Ok(Route::Native(resolved)) => resolved,
            Ok(Route::LocalSend(_)) => return Probe::Ready,
            Err(e) => return Probe::Absent(e.to_string()),
        };
        let answered = self
            .connector
            .identify(&resolved.target, preference, IDENTIFY_TIMEOUT)
            .await;
        match answered {
            Ok(_) => Probe::Ready,
            Err(IdentifyError::Dial(DialError::Refused(e))) => {
                Probe::Refused(format!("{}: {e}", resolved.label))
            }
            Err(e) => Probe::Absent(format!("cannot reach {}: {e}", resolved.label)),
        }
    }

    /// Sends queued item `id` now. `None`: it is over (sent, failed for
    /// good, cancelled, or the daemon stops); `Some(error)`: it did not go
    /// out and keeps waiting.
    async fn send_now(
        &self,
        id: &str,
        peer: &str,
        preference: Preference,
        cancel: &CancellationToken,
    ) -> Option<String> {
        let (what, skipped) = match self.files(id).await? {
            Ok(files) => files,
            Err(reason) => {
                self.fail(id, State::Failed, &reason.to_string());
                return None;
            }
        };
        let pin = self.store.with(id, |i| {
            i.sending = true;
            i.pin.clone()
        });
        tracing::info!(id, "{peer} is reachable; sending queued files");
        // Nobody watches a queued send's progress.
        let (events, _) = mpsc::unbounded_channel();
        let job = SendJob {
            peer: peer.to_owned(),
            payload: Payload::Files { what, skipped },
            preference,
            retry_for: None,
            pin: pin.flatten(),
        };
        let result = self.sends.send(job, events, cancel.clone()).await;
        self.store.with(id, |i| i.sending = false);
        if cancel.is_cancelled() {
            // Removed by the user (already out of the queue), or the daemon
            // stops (kept in the file for the next start).
            return None;
        }
        match result {
            Ok(_) => {
                tracing::info!(id, "queued send to {peer} delivered");
                self.store.remove(id);
                None
            }
            // It reached the peer: the transfer is in the history, and
            // whatever ended it (a rejection, a failure after retries) is
            // not cured by waiting for the peer to appear.
            Err(e) if e.reached_peer() => {
                if e.is_decision() {
                    tracing::info!(id, "queued send to {peer} was not taken: {e}");
                } else {
                    tracing::warn!(id, "queued send to {peer} failed: {e}");
                }
                self.store.remove(id);
                None
            }
            Err(e) if e.is_bad_job() => {
                self.fail(id, State::Failed, &e.to_string());
                None
            }
            // The peer went away again in between.
            Err(e) => Some(e.to_string()),
        }
    }

    /// The files of item `id`: the ones the CLI passed, or (after a
    /// restart) opened again from the paths. `None` if the item is gone.
    async fn files(&self, id: &str) -> Option<Result<(What, Vec<String>), FilesError>> {
        let (what, skipped, stored) = self.store.with(id, |i| {
            (i.what.clone(), i.skipped.clone(), i.stored.clone())
        })?;
        if let Some(what) = what {
            return Some(Ok((what, skipped)));
        }
        let own = rustix::process::geteuid().as_raw();
        if stored.uid != own && stored.uid != 0 {
            return Some(Err(FilesError::OtherUser(stored.uid)));
        }
        let roots = stored.roots.clone();
        let options = stored.walk.clone();
        let reopened = tokio::task::spawn_blocking(move || {
            let mut layout = source::walk(&roots, &options)?;
            let what = layout.open_all()?;
            let skipped = layout.skipped.iter().map(ToString::to_string).collect();
            Ok::<_, SourceError>((what, skipped))
        })
        .await;
        Some(match reopened {
            Ok(Ok(files)) => Ok(files),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(e.into()),
        })
    }
}
