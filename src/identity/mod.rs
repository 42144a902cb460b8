//! Device identity: a self-signed certificate whose hash is the device ID.
//!
//! On first start the daemon generates an Ed25519 key and a self-signed
//! certificate with rcgen and stores them in the state directory
//! (`key.pem` mode 0600, directory 0700). Every later start reuses them, so
//! the device ID ([`DeviceId`], SHA-256 of the certificate DER) is stable for
//! the life of the installation. Deleting both files rotates the identity
//! (peers then have to trust the new ID again). See `certs/README.md`.
//!
//! This module also owns the trust store ([`trust`]) and the TLS certificate
//! verifiers ([`verifier`]) that turn a handshake into a device ID.

mod device_id;
pub mod trust;
pub mod verifier;

pub use device_id::{DEVICE_ID_TEXT_LEN, DeviceId, DeviceIdError};

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// File name of the PEM certificate inside the state directory.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the PEM (PKCS#8) private key inside the state directory.
pub const KEY_FILE: &str = "key.pem";

/// Which identity: its files in the state directory and how a new one is
/// made. The daemon has two, the device identity ([`DEVICE`]) and the one
/// it shows LocalSend apps (`crate::localsend::identity`); they are kept
/// apart so neither protocol can present the other's certificate.
#[derive(Debug)]
pub struct Kind {
    /// PEM certificate file name.
    pub cert_file: &'static str,
    /// PEM (PKCS#8) key file name.
    pub key_file: &'static str,
    /// Key type of a new identity.
    pub algorithm: &'static rcgen::SignatureAlgorithm,
    /// Common name and DNS name of a new certificate.
    pub common_name: &'static str,
    /// Subject alternative name of a new certificate.
    pub dns_name: &'static str,
}

/// The lanshare device identity: Ed25519, `cert.pem` / `key.pem`.
pub const DEVICE: Kind = Kind {
    cert_file: CERT_FILE,
    key_file: KEY_FILE,
    algorithm: &rcgen::PKCS_ED25519,
    common_name: "lanshare device",
    dns_name: "lanshare.invalid",
};

/// Errors while loading or creating the identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing a file in the state directory failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Only one of key and certificate exists.
    #[error(
        "{present} exists but {missing} does not; restore the missing file or delete both to create a new identity"
    )]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A PEM file could not be parsed.
    #[error("cannot parse {path}: {reason}; delete cert.pem and key.pem to create a new identity")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// Key generation failed (should not happen with ring).
    #[error("cannot generate a device key: {0}")]
    Generate(#[from] rcgen::Error),
}

/// This device's key, certificate and derived ID.
#[derive(Debug)]
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    id: DeviceId,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            id: self.id,
        }
    }
}

impl Identity {
    /// Loads the identity from `state_dir`, creating the directory (0700) and
    /// a new key and certificate on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, IdentityError> {
        Self::load_or_create_kind(state_dir, &DEVICE)
    }

    /// [`load_or_create`](Self::load_or_create) for an identity of another
    /// [`Kind`].
    pub fn load_or_create_kind(state_dir: &Path, kind: &Kind) -> Result<Self, IdentityError> {
        ensure_private_dir(state_dir)?;
        let cert_path = state_dir.join(kind.cert_file);
        let key_path = state_dir.join(kind.key_file);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(&cert_path, &key_path),
            (false, false) => {
                let identity = Self::generate_kind(kind)?;
                identity.persist(&cert_path, &key_path)?;
                tracing::info!(id = %identity.id, file = kind.cert_file, "created a new identity");
                Ok(identity)
            }
            (true, false) => Err(IdentityError::Incomplete {
                present: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(IdentityError::Incomplete {
                present: key_path,
                missing: cert_path,
            }),
        }
    }

    /// Loads an existing identity without creating anything.
    pub fn load_existing(state_dir: &Path) -> Result<Option<Self>, IdentityError> {
        let cert_path = state_dir.join(CERT_FILE);
        let key_path = state_dir.join(KEY_FILE);
        if !cert_path.exists() && !key_path.exists() {
            return Ok(None);
        }
        Self::load(&cert_path, &key_path).map(Some)
    }

    /// A fresh in-memory identity (Ed25519), not persisted.
    pub fn generate() -> Result<Self, IdentityError> {
        Self::generate_kind(&DEVICE)
    }

    /// A fresh in-memory identity of `kind`, not persisted. The
    /// certificate is valid from 1975 to 4096 (rcgen's default), so no
    /// peer that checks dates finds it expired.
    pub fn generate_kind(kind: &Kind) -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::generate_for(kind.algorithm)?;
        let mut params = rcgen::CertificateParams::new(vec![kind.dns_name.to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, kind.common_name);
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().clone();
        let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        Ok(Self {
            id: DeviceId::from_cert_der(&cert_der),
            cert: cert_der,
            key: key_der,
        })
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, IdentityError> {
        let cert = CertificateDer::from_pem_file(cert_path).map_err(|e| IdentityError::Parse {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| IdentityError::Parse {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?;
        let mode = fs::metadata(key_path)
            .map_err(|source| IdentityError::Io {
                action: "cannot read",
                path: key_path.to_owned(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %key_path.display(), mode = format!("{mode:o}"), "private key is readable by others; fixing to 0600");
            set_mode(key_path, 0o600)?;
        }
        Ok(Self {
            id: DeviceId::from_cert_der(&cert),
            cert,
            key,
        })
    }

    fn persist(&self, cert_path: &Path, key_path: &Path) -> Result<(), IdentityError> {
        let key_pem = pem_encode("PRIVATE KEY", self.key.secret_der());
        let cert_pem = pem_encode("CERTIFICATE", self.cert.as_ref());
        // Key first: a crash in between leaves `Incomplete`, never a cert
        // without its key being silently replaced.
        write_new_file(key_path, key_pem.as_bytes(), 0o600)?;
        write_new_file(cert_path, cert_pem.as_bytes(), 0o644)?;
        Ok(())
    }

    /// The device ID (SHA-256 of the certificate DER).
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// The certificate, DER-encoded.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The private key, DER-encoded (PKCS#8).
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// The file in the state directory that holds the name the daemon last
/// announced, so that `share id` shows it while no daemon runs (it may
/// have come from `--name`, which the CLI cannot see).
const NAME_FILE: &str = "name";

/// Longest name file read back: a name is at most 63 bytes.
const NAME_FILE_MAX: u64 = 256;

/// Records `name` as the one the daemon using `state_dir` announces, if it
/// is not already recorded.
///
/// # Errors
/// The file cannot be written.
pub fn record_name(state_dir: &Path, name: &str) -> std::io::Result<()> {
    if recorded_name(state_dir).as_deref() == Some(name) {
        return Ok(());
    }
    crate::state_file::replace(&state_dir.join(NAME_FILE), name.as_bytes())
}

/// The name the daemon using `state_dir` last announced, if recorded.
pub fn recorded_name(state_dir: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(state_dir.join(NAME_FILE))
        .ok()?
        .take(NAME_FILE_MAX)
        .read_to_string(&mut text)
        .ok()?;
    let name = text.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Creates `dir` (and parents) if needed and makes it mode 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<(), IdentityError> {
    fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
        action: "cannot create directory",
        path: dir.to_owned(),
        source,
    })?;
    set_mode(dir, 0o700)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), IdentityError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
        IdentityError::Io {
            action: "cannot set permissions on",
            path: path.to_owned(),
            source,
        }
    })
}

/// Writes a file that must not exist yet, with `mode` from the start (no
/// window with umask permissions), and syncs it.
fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        action: "cannot write",
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let first = Identity::load_or_create(&dir).unwrap();
        let second = Identity::load_or_create(&dir).unwrap();
        assert_eq!(first.id(), second.id());
        assert_eq!(first.cert(), second.cert());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert_eq!(first.id(), DeviceId::from_cert_der(first.cert()));
    }

    #[test]
    fn incomplete_identity_is_an_error_not_a_silent_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        Identity::load_or_create(tmp.path()).unwrap();
        fs::remove_file(tmp.path().join(KEY_FILE)).unwrap();
        assert!(matches!(
            Identity::load_or_create(tmp.path()),
            Err(IdentityError::Incomplete { .. })
        ));
    }

    #[test]
    fn fresh_identities_differ() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn pem_matches_rcgen_encoding() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert_eq!(
            pem_encode("PRIVATE KEY", &key.serialize_der()).trim(),
            key.serialize_pem().replace("\r\n", "\n").trim()
        );
    }
}
