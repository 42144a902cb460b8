//! The trust store: device IDs the user has pinned with `share trust`.
//!
//! Trust is stored by device ID, never by name: names are chosen by peers
//! and can collide or be forged, IDs are hashes of certificates whose keys
//! the TLS handshake proves. The name is kept only to detect a known name
//! arriving with a different ID, which is reported loudly instead of being
//! trusted. The file (`trusted.json` in the state directory) is replaced
//! atomically (write temp, fsync, rename) so a crash never leaves it torn.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::DeviceId;
use crate::protocol::names::same_name;
use crate::safe_text::PeerName;
use crate::safe_text::confusable::confusable;

/// File name of the trust store inside the state directory.
pub const TRUST_FILE: &str = "trusted.json";

/// Errors reading or writing the trust store.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The trust file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("{path} is corrupt ({reason}); fix or delete it and trust your devices again")]
    Corrupt {
        /// The trust file.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
}

/// One pinned device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedPeer {
    /// The pinned device ID.
    pub id: DeviceId,
    /// The name the device had when it was trusted.
    pub name: PeerName,
    /// When it was trusted (seconds since the Unix epoch).
    pub since: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TrustFile {
    version: u32,
    peers: Vec<TrustedPeer>,
}

/// Shared, persistent set of trusted devices.
#[derive(Debug, Clone)]
pub struct TrustStore {
    path: PathBuf,
    peers: Arc<RwLock<BTreeMap<DeviceId, TrustedPeer>>>,
}

impl TrustStore {
    /// Loads `state_dir/trusted.json`, or starts empty if it does not exist.
    pub fn load(state_dir: &Path) -> Result<Self, TrustError> {
        let path = state_dir.join(TRUST_FILE);
        let peers = match fs::read(&path) {
            Ok(bytes) => {
                let file: TrustFile =
                    serde_json::from_slice(&bytes).map_err(|e| TrustError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                file.peers.into_iter().map(|p| (p.id, p)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(TrustError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        Ok(Self {
            path,
            peers: Arc::new(RwLock::new(peers)),
        })
    }

    /// Whether `id` is trusted.
    pub fn is_trusted(&self, id: &DeviceId) -> bool {
        self.read().contains_key(id)
    }

    /// All trusted devices.
    pub fn list(&self) -> Vec<TrustedPeer> {
        self.read().values().cloned().collect()
    }

    /// A trusted device other than `id` that uses `name` (the same name by
    /// PROTOCOL.md §6.1, [`same_name`]):
    /// the sign of an impostor, or of a device that changed its key.
    pub fn name_conflict(&self, name: &str, id: &DeviceId) -> Option<TrustedPeer> {
        self.read()
            .values()
            .find(|p| p.id != *id && same_name(&p.name, name))
            .cloned()
    }

    /// The trusted device whose name `id` uses without being it: the sign
    /// of an impostor, or of a device that changed its key. A device the
    /// user trusted under that very name is none (two trusted devices may
    /// share a name). Every check of a peer's claimed name uses this.
    pub fn impostor_of(&self, name: &str, id: &DeviceId) -> Option<TrustedPeer> {
        let peers = self.read();
        if peers.get(id).is_some_and(|p| same_name(&p.name, name)) {
            return None;
        }
        peers
            .values()
            .find(|p| p.id != *id && same_name(&p.name, name))
            .cloned()
    }

    /// The trusted device whose name `name` looks like (the same in any
    /// case, or [confusable](crate::safe_text::confusable)) while `id` is
    /// another device: a stranger named to pass for a trusted device,
    /// which is flagged wherever its name is shown. A device the user
    /// trusted under a look-alike name itself is none.
    pub fn look_alike_of(&self, name: &str, id: &DeviceId) -> Option<TrustedPeer> {
        let peers = self.read();
        if peers.get(id).is_some_and(|p| confusable(&p.name, name)) {
            return None;
        }
        peers
            .values()
            .find(|p| p.id != *id && confusable(&p.name, name))
            .cloned()
    }

    /// Trusted devices called `name` ([`same_name`]: case and Unicode
    /// normalisation do not matter).
    pub fn find_by_name(&self, name: &str) -> Vec<TrustedPeer> {
        self.read()
            .values()
            .filter(|p| same_name(&p.name, name))
            .cloned()
            .collect()
    }

    /// Pins `id` under `name` and saves. Returns false if it was already
    /// trusted. If saving fails, nothing changes: a device is never
    /// trusted (and auto-accepted) in memory while the file says otherwise.
    pub fn trust(&self, id: DeviceId, name: &PeerName) -> Result<bool, TrustError> {
        let mut peers = self.write();
        if peers.contains_key(&id) {
            return Ok(false);
        }
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut updated = peers.clone();
        updated.insert(
            id,
            TrustedPeer {
                id,
                name: name.clone(),
                since,
            },
        );
        self.save(&updated)?;
        *peers = updated;
        Ok(true)
    }

    /// Removes `id` and saves. Returns false if it was not trusted. If
    /// saving fails, the device stays trusted, as the file still says.
    pub fn untrust(&self, id: &DeviceId) -> Result<bool, TrustError> {
        let mut peers = self.write();
        let mut updated = peers.clone();
        if updated.remove(id).is_none() {
            return Ok(false);
        }
        self.save(&updated)?;
        *peers = updated;
        Ok(true)
    }

    fn save(&self, peers: &BTreeMap<DeviceId, TrustedPeer>) -> Result<(), TrustError> {
        let file = TrustFile {
            version: 1,
            peers: peers.values().cloned().collect(),
        };
        let io = |action, source| TrustError::Io {
            action,
            path: self.path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| io("encode", e.into()))?;
        crate::state_file::replace(&self.path, &json).map_err(|e| io("write", e))?;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<DeviceId, TrustedPeer>> {
        self.peers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<DeviceId, TrustedPeer>> {
        self.peers.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_persists_and_detects_name_conflicts() {
        let tmp = tempfile::tempdir().unwrap();
        let a = DeviceId::from_cert_der(b"a");
        let b = DeviceId::from_cert_der(b"b");
        let store = TrustStore::load(tmp.path()).unwrap();
        assert!(store.trust(a, &"desktop".into()).unwrap());
        assert!(!store.trust(a, &"desktop".into()).unwrap());

        let reloaded = TrustStore::load(tmp.path()).unwrap();
        assert!(reloaded.is_trusted(&a));
        assert!(!reloaded.is_trusted(&b));
        assert_eq!(reloaded.name_conflict("Desktop", &b).map(|p| p.id), Some(a));
        assert!(reloaded.name_conflict("desktop", &a).is_none());
        // An impostor uses a trusted name without being that device; a
        // device trusted under another name is one too, but two devices
        // the user trusted under one name are not.
        assert_eq!(reloaded.impostor_of("desktop", &b).map(|p| p.id), Some(a));
        assert!(reloaded.impostor_of("DESKTOP", &a).is_none());
        assert!(reloaded.impostor_of("laptop", &b).is_none());
        reloaded.trust(b, &"laptop".into()).unwrap();
        assert_eq!(reloaded.impostor_of("desktop", &b).map(|p| p.id), Some(a));
        let c = DeviceId::from_cert_der(b"c");
        reloaded.trust(c, &"Desktop".into()).unwrap();
        assert!(reloaded.impostor_of("desktop", &c).is_none());
        reloaded.untrust(&b).unwrap();
        reloaded.untrust(&c).unwrap();

        assert!(reloaded.untrust(&a).unwrap());
        assert!(!TrustStore::load(tmp.path()).unwrap().is_trusted(&a));
    }

    /// A trusted name is the same name in any case and either Unicode
    /// normal form (PROTOCOL.md §6.1), not only in ASCII case.
    #[test]
    fn a_trusted_name_matches_in_any_case_and_normal_form() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (DeviceId::from_cert_der(b"a"), DeviceId::from_cert_der(b"b"));
        let store = TrustStore::load(tmp.path()).unwrap();
        store.trust(a, &"Café Émile".into()).unwrap();
        for claimed in ["café émile", "CAFÉ ÉMILE", "Cafe\u{301} E\u{301}mile"] {
            assert_eq!(
                store.impostor_of(claimed, &b).map(|p| p.id),
                Some(a),
                "{claimed:?}"
            );
            assert_eq!(store.find_by_name(claimed).len(), 1, "{claimed:?}");
        }
        assert!(store.impostor_of("Cafe Emile", &b).is_none());
    }

    /// A save that fails (here: a directory where the temporary file must
    /// go, which stops root too) changes nothing in memory, for trust and
    /// for untrust alike.
    #[test]
    fn failed_save_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let a = DeviceId::from_cert_der(b"a");
        let b = DeviceId::from_cert_der(b"b");
        let store = TrustStore::load(tmp.path()).unwrap();
        assert!(store.trust(a, &"laptop".into()).unwrap());
        let blocker = tmp.path().join(format!(".{TRUST_FILE}.tmp"));
        fs::create_dir(&blocker).unwrap();

        assert!(matches!(
            store.trust(b, &"desktop".into()),
            Err(TrustError::Io { .. })
        ));
        assert!(!store.is_trusted(&b), "trusted in memory, not on disk");
        assert!(matches!(store.untrust(&a), Err(TrustError::Io { .. })));
        assert!(store.is_trusted(&a), "untrusted in memory, not on disk");

        fs::remove_dir(&blocker).unwrap();
        let on_disk = TrustStore::load(tmp.path()).unwrap();
        assert_eq!(on_disk.list(), store.list());
    }

    #[test]
    fn look_alikes_of_trusted_names_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let (desktop, stranger) = (DeviceId::from_cert_der(b"d"), DeviceId::from_cert_der(b"s"));
        let store = TrustStore::load(tmp.path()).unwrap();
        store.trust(desktop, &"desktop".into()).unwrap();
        for alike in ["d\u{435}sktop", "DESKTOP", "\u{ff44}esktop", "deskt0p"] {
            let found = store.look_alike_of(alike, &stranger).map(|p| p.id);
            assert_eq!(found, Some(desktop), "{alike:?}");
            // The trusted device itself is no look-alike of itself.
            assert!(store.look_alike_of(alike, &desktop).is_none(), "{alike:?}");
        }
        assert!(store.look_alike_of("laptop", &stranger).is_none());
        assert!(store.look_alike_of("desktop 2", &stranger).is_none());
    }

    #[test]
    fn corrupt_file_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(TRUST_FILE), b"{not json").unwrap();
        assert!(matches!(
            TrustStore::load(tmp.path()),
            Err(TrustError::Corrupt { .. })
        ));
    }
}
