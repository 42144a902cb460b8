//! Test fixtures for the sessions: two devices joined by an in-memory
//! link ([`Link::pipe`]), a receiving side in a temporary directory, and
//! files to send.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::framed::Framed;
use super::kept::KeepPolicy;
use super::receive::Receiver;
use super::resume::ResumeStore;
use super::source::{self, Source};
use crate::identity::DeviceId;
use crate::identity::trust::TrustStore;
use crate::intake::inbox::Inbox;
use crate::intake::{AcceptPolicy, Intake, Sender, Settings};
use crate::protocol::ManifestLimits;
use crate::registry::{Direction, Handle, NewTransfer, Registry};
use crate::store::DownloadDir;
use crate::transport::{Link, TransportKind};

/// How long a test receiver's offers wait for a decision.
pub(crate) const OFFER_TIMEOUT: Duration = Duration::from_secs(120);

/// The sending device.
pub(crate) fn alice() -> DeviceId {
    DeviceId::from_cert_der(b"alice")
}

/// The receiving device.
pub(crate) fn bob() -> DeviceId {
    DeviceId::from_cert_der(b"bob")
}

/// Alice's end and Bob's end of a fresh in-memory link.
pub(crate) fn framed_pipe() -> (Framed, Framed) {
    let (a, b) = Link::pipe(alice(), bob(), TransportKind::Quic, [7; 8]);
    (Framed::new(a), Framed::new(b))
}

/// The same pipe between peers that did not negotiate entry metadata
/// (one of them an older version).
pub(crate) fn framed_pipe_without_metadata() -> (Framed, Framed) {
    let (mut a, mut b) = Link::pipe(alice(), bob(), TransportKind::Quic, [7; 8]);
    a.metadata = false;
    b.metadata = false;
    (Framed::new(a), Framed::new(b))
}

/// Alice as Bob's receiver sees her.
pub(crate) fn alice_as_sender() -> Sender {
    Sender {
        id: alice(),
        address: std::net::Ipv4Addr::LOCALHOST.into(),
        name: "alice".into(),
        transport: TransportKind::Quic,
    }
}

/// A receiving daemon's parts, in a directory of its own.
pub(crate) struct Bob {
    pub(crate) receiver: Receiver,
    /// The receiver's transfer table.
    pub(crate) registry: Registry,
    pub(crate) trust: TrustStore,
    pub(crate) downloads: PathBuf,
    _dir: tempfile::TempDir,
}

/// A receiver with `policy`, its state in a fresh temporary directory.
pub(crate) fn bob_receiving(policy: AcceptPolicy) -> Bob {
    bob_keeping(policy, KeepPolicy::default())
}

/// [`bob_receiving`], keeping partial data as `keep` allows.
pub(crate) fn bob_keeping(policy: AcceptPolicy, keep: KeepPolicy) -> Bob {
    bob_in(tempfile::tempdir().unwrap(), policy, keep)
}

/// `bob` after a restart of his daemon: the same state and download
/// directory, a new transfer table.
pub(crate) fn bob_restarted(bob: Bob, policy: AcceptPolicy) -> Bob {
    bob_in(bob._dir, policy, KeepPolicy::default())
}

impl Bob {
    /// Names of the resume records and value logs in the state directory.
    pub(crate) fn resume_files(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self._dir.path().join("resume")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn bob_in(dir: tempfile::TempDir, policy: AcceptPolicy, keep: KeepPolicy) -> Bob {
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let registry = Registry::default();
    let trust = TrustStore::load(dir.path()).unwrap();
    let intake = Intake::new(
        Settings {
            policy,
            offer_timeout: OFFER_TIMEOUT,
            limits: ManifestLimits::default(),
        },
        Arc::new(DownloadDir::open(&downloads).unwrap()),
        trust.clone(),
        registry.clone(),
        Arc::new(Inbox::open(dir.path()).unwrap()),
    );
    Bob {
        receiver: Receiver::new(Arc::new(intake), ResumeStore::new(dir.path())).with_policy(keep),
        registry,
        trust,
        downloads,
        _dir: dir,
    }
}

/// A receiver with its state in `root` (`root/downloads` for files).
pub(crate) fn receiver(root: &Path, policy: AcceptPolicy) -> Receiver {
    let download = root.join("downloads");
    std::fs::create_dir_all(&download).unwrap();
    let settings = Settings {
        policy,
        offer_timeout: OFFER_TIMEOUT,
        limits: ManifestLimits::default(),
    };
    let intake = Intake::new(
        settings,
        Arc::new(DownloadDir::open(&download).unwrap()),
        TrustStore::load(root).unwrap(),
        Registry::default(),
        Arc::new(Inbox::open(root).unwrap()),
    );
    Receiver::new(Arc::new(intake), ResumeStore::new(root))
}

/// Writes `len` deterministic pseudo-random bytes to `path`.
pub(crate) fn random_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005) | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, &data).unwrap();
    data
}

/// The offer of `paths`, with the files open (as the daemon has it).
pub(crate) fn source_of(paths: &[PathBuf]) -> Source {
    source::scan(paths, &source::WalkOptions::default()).unwrap()
}

/// Registers an outgoing transfer of `source` to Bob in `registry`.
pub(crate) fn outgoing(registry: &Registry, source: &Source) -> Handle {
    registry.start(NewTransfer {
        direction: Direction::Out,
        peer: "bob".into(),
        peer_id: bob(),
        files: source.manifest.file_count(),
        bytes: source.manifest.total_bytes(),
        transport: TransportKind::Quic,
        names: Vec::new(),
    })
}
