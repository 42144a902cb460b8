//! The intake: where every incoming offer goes, whatever wire protocol
//! delivered it.
//!
//! A receiving session (the lanshare protocol's in [`crate::transfer`]
//! today, LocalSend's later) turns what its peer sent into the terms here
//! and leaves every decision to the [`Intake`]:
//!
//! 1. [`Intake::check_files`]: the offer's structure against the limits,
//!    its paths through the store's sanitiser, and free space, before
//!    anything is asked of the user or created on disk;
//! 2. [`Intake::register`]: the offer appears in `share transfers` (the
//!    [`Registry`]) with its progress counters and cancel token, and the
//!    history records how it ends;
//! 3. [`Intake::consent`]: policy, trust, or the user's `share accept` /
//!    `share reject` before the offer expires ([`consent`]), with the
//!    offers waiting at once bounded ([`pending`]);
//! 4. the data lands through the staging store ([`Intake::download`]), or a
//!    text in the inbox ([`Intake::deliver_text`]).
//!
//! The session keeps what only its protocol knows: framing, how data and
//! checksums arrive, resume records, and how to answer its sender. The
//! offer is described by a [`Manifest`] (names, kinds and sizes); a
//! protocol whose offers have no lanshare version tags or block size
//! (LocalSend: names, sizes, optional SHA-256) fills those fields with
//! its own values and verifies its data its own way before commit.
//!
//! Who offers is a [`Sender`]: the identity the transport proved (a
//! certificate hash) and the name the peer gave, already cleaned at the
//! handshake. A cleaned-name type slots in there.

pub mod consent;
pub mod inbox;
pub mod pending;
pub mod text;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use consent::{AcceptPolicy, Declined, Offering, SenderGone};
use inbox::{Inbox, InboxError, InboxText};
use pending::{PendingLimits, PendingOffers};
use text::preview;
use unicode_normalization::UnicodeNormalization;

use crate::identity::DeviceId;
use crate::identity::trust::TrustStore;
use crate::protocol::{HumanBytes, Manifest, ManifestError, ManifestLimits};
use crate::registry::{Direction, Handle, NewTransfer, Registry, State, TransferKind};
use crate::safe_text::{CleanText, PeerName};
use crate::store::{DownloadDir, PathError, Plan, StoreError, plan};
use crate::transport::TransportKind;

/// Who offers something: proven identity, given name, transport.
#[derive(Debug, Clone)]
pub struct Sender {
    /// The identity the transport's handshake proved.
    pub id: DeviceId,
    /// The address it connected from (a bound on waiting offers is per
    /// address: fresh identities from one host share it).
    pub address: IpAddr,
    /// The name it gave, cleaned.
    pub name: PeerName,
    /// How it reached us.
    pub transport: TransportKind,
}

/// What is offered.
#[derive(Debug, Clone, Copy)]
pub enum Offer<'a> {
    /// Files and directories.
    Files(&'a Manifest),
    /// A short text.
    Text(&'a str),
}

/// Why an offer of files is refused before anyone is asked; the text is
/// what the sender is told.
#[derive(Debug, thiserror::Error)]
pub enum OfferRefused {
    /// Too many entries, too large, malformed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A path that cannot be written safely.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The download directory's file system lacks room.
    #[error("not enough space on the receiver: {} needed, {} free", HumanBytes(*needed), HumanBytes(*free))]
    NoSpace {
        /// Bytes offered.
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// Free space could not be checked.
    #[error("receiver cannot check its download directory: {0}")]
    Unchecked(StoreError),
}

/// How the intake behaves (from the daemon's configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which offers are accepted without asking.
    pub policy: AcceptPolicy,
    /// How long an offer waits for a decision before it expires.
    pub offer_timeout: Duration,
    /// Limits on offers.
    pub limits: ManifestLimits,
}

/// Incoming offers: consent, the transfer table, the inbox and the
/// staging store, behind one interface.
pub struct Intake {
    settings: Settings,
    download: Arc<DownloadDir>,
    trust: TrustStore,
    registry: Registry,
    inbox: Arc<Inbox>,
    pending: PendingOffers,
}

impl Intake {
    /// An intake writing into `download` and `inbox`, listing offers in
    /// `registry` and trusting what `trust` says.
    pub fn new(
        settings: Settings,
        download: Arc<DownloadDir>,
        trust: TrustStore,
        registry: Registry,
        inbox: Arc<Inbox>,
    ) -> Self {
        Self {
            settings,
            download,
            trust,
            registry,
            inbox,
            pending: PendingOffers::new(PendingLimits::default()),
        }
    }

    /// The download directory, where staged data lands.
    pub fn download(&self) -> &Arc<DownloadDir> {
        &self.download
    }

    /// The offer limits.
    pub fn limits(&self) -> &ManifestLimits {
        &self.settings.limits
    }

    /// Whether `id` is a trusted device.
    pub fn trusts(&self, id: &DeviceId) -> bool {
        self.trust.is_trusted(id)
    }

    /// The received texts.
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    /// Checks an offer of files: structure and limits, every path, and
    /// free space for what is not on disk yet (`kept`: bytes of it kept
    /// from an interrupted attempt, whose other blocks hold no space).
    /// `Ok` is the checked path plan that staging takes.
    ///
    /// # Errors
    /// Why the offer is refused, in words for the sender.
    pub fn check_files(&self, manifest: &Manifest, kept: u64) -> Result<Plan, OfferRefused> {
        let limits = &self.settings.limits;
        manifest.validate(limits)?;
        let plan = plan(manifest, limits.max_depth)?;
        log_stored_names(manifest, &plan);
        let needed = manifest.total_bytes().saturating_sub(kept);
        match self.download.free_space() {
            Ok(free) if free < needed => Err(OfferRefused::NoSpace { needed, free }),
            Ok(_) => Ok(plan),
            Err(e) => Err(OfferRefused::Unchecked(e)),
        }
    }

    /// Lists an offer in the transfer table (active until [`Self::consent`]
    /// makes it pending); its [`Handle`] carries progress and cancel, and
    /// its final state reaches the history.
    pub fn register(&self, sender: &Sender, offer: Offer<'_>) -> Handle {
        let (files, bytes, names, kind) = match offer {
            Offer::Files(manifest) => (
                manifest.file_count(),
                manifest.total_bytes(),
                top_level_names(manifest),
                TransferKind::Files,
            ),
            Offer::Text(text) => (
                0,
                text.len() as u64,
                vec![preview(text)],
                TransferKind::Text,
            ),
        };
        let handle = self.registry.start(NewTransfer {
            direction: Direction::In,
            peer: sender.name.clone(),
            peer_id: sender.id,
            files,
            bytes,
            transport: sender.transport,
            names,
        });
        handle.set_kind(kind);
        if let Some(trusted) = self.trust.look_alike_of(&sender.name, &sender.id) {
            tracing::warn!(
                id = handle.id(),
                peer = %sender.id,
                trusted = %trusted.id,
                "{} from {} ({}), whose name looks like that of the trusted device {} ({}); it is listed as a look-alike",
                if kind == TransferKind::Text { "text" } else { "offer" },
                sender.name,
                sender.id.short(),
                trusted.name,
                trusted.id.short(),
            );
            handle.set_looks_like(trusted.id);
        }
        handle
    }

    /// Whether the offer registered as `handle` goes ahead (see
    /// [`consent`]). A declined offer is recorded as such here; the
    /// session answers its sender.
    ///
    /// # Errors
    /// The final state and why, when it does not go ahead.
    pub async fn consent(
        &self,
        sender: &Sender,
        offer: Offer<'_>,
        handle: &Handle,
        gone: impl Future<Output = SenderGone>,
    ) -> Result<(), Declined> {
        let rules = consent::Rules {
            policy: self.settings.policy,
            trust: &self.trust,
            pending: &self.pending,
            offer_timeout: self.settings.offer_timeout,
        };
        let offering = match offer {
            Offer::Files(manifest) => Offering::Files {
                files: manifest.file_count(),
                bytes: manifest.total_bytes(),
            },
            Offer::Text(_) => Offering::Text,
        };
        let result = consent::decide(&rules, sender, offering, handle, gone).await;
        if let Err(declined) = &result {
            tracing::info!(
                id = handle.id(),
                "{} from {} not accepted: {}",
                offering.noun(),
                sender.name,
                declined.reason
            );
            handle.finish(declined.state, Some(declined.reason.clone()));
        }
        result
    }

    /// Records an accepted offer of files as done, with where the store
    /// put its top-level entries (`saved`: the names its commit chose), so
    /// `share receive`, subscribers and the history can show the paths.
    pub fn delivered(&self, handle: &Handle, saved: &[String]) {
        let dir = self.download.path();
        handle.set_saved(saved.iter().map(|name| dir.join(name)).collect());
        handle.finish(State::Done, None);
    }

    /// Stores an accepted text in the inbox and counts it as carried.
    ///
    /// # Errors
    /// The inbox could not be written.
    pub fn deliver_text(
        &self,
        handle: &Handle,
        sender: &Sender,
        text: &str,
    ) -> Result<InboxText, InboxError> {
        let stored = self.inbox.store(
            handle.id(),
            &sender.name,
            sender.id,
            self.trust
                .look_alike_of(&sender.name, &sender.id)
                .map(|t| t.id),
            text,
        )?;
        handle.add_sent(text.len() as u64);
        tracing::info!(
            id = handle.id(),
            bytes = text.len(),
            "text from {} in the inbox (share receive --text)",
            sender.name
        );
        Ok(stored)
    }
}

/// The distinct first path components, in offer order. Linear in the
/// number of entries: an offer may hold 100 000 top-level names.
pub(crate) fn top_level_names(manifest: &Manifest) -> Vec<CleanText> {
    let mut seen = std::collections::HashSet::new();
    let mut names: Vec<CleanText> = Vec::new();
    for entry in &manifest.entries {
        let top = entry.path.split('/').next().unwrap_or_default();
        if seen.insert(top) {
            names.push(CleanText::from(top));
        }
    }
    names
}

/// Logs each name stored under another name than the one sent (see
/// [`crate::store::path::stored_name`]): the first few, then how many.
fn log_stored_names(manifest: &Manifest, plan: &Plan) {
    const SHOWN: usize = 8;
    let mapped = manifest
        .entries
        .iter()
        .zip(plan.entries())
        .filter(|(sent, planned)| {
            planned.path.to_rel_string() != sent.path.nfc().collect::<String>()
        });
    let mut count = 0usize;
    for (sent, planned) in mapped {
        count += 1;
        if count <= SHOWN {
            tracing::info!(
                "offered name {:?} will be stored as {:?}",
                sent.path,
                planned.path.to_rel_string()
            );
        }
    }
    if count > SHOWN {
        tracing::info!(
            "{} more offered names will be stored under other names",
            count - SHOWN
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Entry, EntryKind};
    use crate::transfer::testing::bob_receiving;

    /// A kept partial transfer holds only its verified blocks, so resuming
    /// it needs room for the rest: the free-space check counts what is
    /// kept, and nothing more.
    #[test]
    fn free_space_is_checked_for_what_is_not_kept() {
        let bob = bob_receiving(AcceptPolicy::Ask);
        let intake = bob.receiver.intake();
        let free = intake.download().free_space().unwrap();
        let size = free + (1 << 30);
        let manifest = Manifest {
            entries: vec![Entry {
                path: "big.bin".into(),
                kind: EntryKind::File { size, tag: [1; 32] },
            }],
            ..Manifest::default()
        };
        assert!(matches!(
            intake.check_files(&manifest, 0),
            Err(OfferRefused::NoSpace { needed, .. }) if needed == size
        ));
        // 2 GiB of it kept: the other free - 1 GiB fit.
        intake.check_files(&manifest, 2 << 30).unwrap();
    }
}
