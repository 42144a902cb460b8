//! Test fixtures for the sessions: a receiving side in a temporary
//! directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::receive::Receiver;
use super::resume::ResumeStore;
use crate::identity::trust::TrustStore;
use crate::intake::inbox::Inbox;
use crate::intake::{AcceptPolicy, Intake, Settings};
use crate::protocol::ManifestLimits;
use crate::registry::Registry;
use crate::store::DownloadDir;

/// A receiver with its state in `root` (`root/downloads` for files) and
/// its own registry; offers expire after 120 s.
pub(crate) fn receiver(root: &Path, policy: AcceptPolicy) -> Receiver {
    let download = root.join("downloads");
    std::fs::create_dir_all(&download).unwrap();
    let settings = Settings {
        policy,
        offer_timeout: Duration::from_secs(120),
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
