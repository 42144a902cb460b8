//! The `share doctor` report, as the daemon sends it and the CLI renders it.
//!
//! A report is a list of [`Check`]s, each with a [`Verdict`], one sentence
//! saying what was found and, unless all is well, one saying what to do.
//! The CLI adds the checks it can make without the daemon (is the daemon
//! reachable at all) and exits 0 only if no check failed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::identity::DeviceId;
use crate::protocol::HumanBytes;
use crate::safe_text::PeerName;
use crate::transfer::kept::KeptSummary;

/// Free space below which the download directory is a warning.
const LOW_SPACE: u64 = 1 << 30;
/// Free space below which it is a failure.
const NO_SPACE: u64 = 64 << 20;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Works.
    Ok,
    /// Works, but something deserves attention (slower, or unproven).
    Warn,
    /// Broken: something the user wants will not work.
    Fail,
}

impl Verdict {
    /// The word shown in front of a check.
    pub fn word(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Short, stable name of what was checked (`daemon`, `identity`,
    /// `interfaces`, `multicast eth0`, `discovery`, `reach desktop`, ...).
    pub check: String,
    /// The outcome.
    pub verdict: Verdict,
    /// What was found.
    pub message: String,
    /// What to do about it (absent when there is nothing to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    /// A check with no fix.
    pub fn new(check: impl Into<String>, verdict: Verdict, message: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            verdict,
            message: message.into(),
            fix: None,
        }
    }

    /// Adds what to do.
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// What `share doctor PEER` measured between this device and the peer.
/// `None` = not tested (e.g. the transport is off on one side, or the peer
/// could not be reached at all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    /// The name or address as given.
    pub peer: String,
    /// The peer's device ID, once a connection authenticated.
    pub id: Option<DeviceId>,
    /// The peer's name from its `Hello`.
    pub name: Option<PeerName>,
    /// The address (`IP:PORT`, service port) that answered.
    pub address: Option<String>,
    /// This device could connect to the peer over QUIC (UDP).
    pub udp_out: Option<bool>,
    /// This device could connect to the peer over TCP.
    pub tcp_out: Option<bool>,
    /// The peer could connect back to this device over QUIC (UDP).
    pub udp_in: Option<bool>,
    /// The peer could connect back to this device over TCP.
    pub tcp_in: Option<bool>,
    /// mDNS sees the peer.
    pub mdns: bool,
    /// Why the name or ID prefix names no single device (unknown,
    /// ambiguous, ...): nothing was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
    /// Why connecting or probing failed, for the details.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorReport {
    /// No check failed.
    pub ok: bool,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// The measurements behind the `reach` checks, with `share doctor PEER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<Reach>,
}

impl DoctorReport {
    /// Recomputes [`ok`](Self::ok) from the checks.
    pub fn settle(&mut self) {
        self.ok = self.checks.iter().all(|c| c.verdict != Verdict::Fail);
    }
}

/// Free space and writability of the download directory.
pub fn check_download_dir(dir: &Path) -> Check {
    let name = "download dir";
    let shown = dir.display();
    let stat = match rustix::fs::statvfs(dir) {
        Ok(stat) => stat,
        Err(e) => {
            return Check::new(name, Verdict::Fail, format!("{shown}: {e}"))
                .fix("create it, or choose another with `share daemon --download-dir DIR`");
        }
    };
    if let Some(read_only) = ReadOnly::check(dir) {
        return Check::new(name, Verdict::Fail, read_only.problem()).fix(read_only.fix());
    }
    if let Err(e) = rustix::fs::access(dir, rustix::fs::Access::WRITE_OK) {
        return Check::new(name, Verdict::Fail, format!("{shown} is not writable: {e}"))
            .fix("fix its permissions, or choose another with `share daemon --download-dir DIR`");
    }
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let message = format!("{shown}: {} free", HumanBytes(free));
    if free < NO_SPACE {
        Check::new(name, Verdict::Fail, message)
            .fix("free some space, or choose another directory with --download-dir")
    } else if free < LOW_SPACE {
        Check::new(name, Verdict::Warn, message)
            .fix("free some space, or choose another directory with --download-dir")
    } else if let Some(shared) = SharedDownloads::check(dir) {
        Check::new(
            name,
            Verdict::Warn,
            format!("{message}; {}", shared.problem()),
        )
        .fix(shared.fix())
    } else {
        Check::new(name, Verdict::Ok, message)
    }
}

/// A download directory other users may write to (its mode gives write
/// permission to its group or to everyone). They can create and rename
/// entries beside what is received: lanshare refuses a staging directory
/// it did not make, so they cannot slip their data into a download, but
/// they can make a resume start over, and they see every name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDownloads {
    dir: std::path::PathBuf,
    mode: u32,
}

impl SharedDownloads {
    /// `Some` if `dir` is writable by its group or by others.
    pub fn check(dir: &Path) -> Option<Self> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).ok()?.permissions().mode() & 0o7777;
        (mode & 0o022 != 0).then(|| Self {
            dir: dir.to_owned(),
            mode,
        })
    }

    /// What is wrong, in one sentence.
    pub fn problem(&self) -> String {
        let who = if self.mode & 0o002 != 0 {
            "every user"
        } else {
            "its group"
        };
        format!(
            "the download directory {} is writable by {who} (mode {:04o}): they can put entries beside what you receive and make interrupted downloads start over",
            self.dir.display(),
            self.mode
        )
    }

    /// How to fix it.
    pub fn fix(&self) -> String {
        format!(
            "make it writable by its owner only: chmod go-w {}",
            self.dir.display()
        )
    }
}

/// The partial data interrupted incoming transfers keep for a resume:
/// hidden in the download directory, so said here with how to drop it.
pub fn check_partial_data(kept: &KeptSummary) -> Check {
    let name = "partial data";
    if kept.transfers == 0 {
        return Check::new(
            name,
            Verdict::Ok,
            "no partial data of interrupted transfers is kept",
        );
    }
    let (n, s) = (kept.transfers, if kept.transfers == 1 { "" } else { "s" });
    Check::new(
        name,
        Verdict::Ok,
        format!(
            "{n} interrupted incoming transfer{s} keep {} of partial data for a resume (at most {} in all); `share transfers` lists it, `share cancel ID` or `share clean` drops it",
            HumanBytes(kept.bytes),
            HumanBytes(kept.max_bytes)
        ),
    )
}

/// A download directory the daemon cannot write to because its mount is
/// read-only for it: typically a directory outside the service's own,
/// under the unit's `ProtectSystem=strict`, which needs `ReadWritePaths=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOnly {
    dir: std::path::PathBuf,
    /// The daemon runs as a systemd service (`INVOCATION_ID` is set).
    under_systemd: bool,
}

impl ReadOnly {
    /// `Some` if `dir` (or, while it does not exist, the nearest directory
    /// above it) is on a mount that is read-only for this process.
    pub fn check(dir: &Path) -> Option<Self> {
        let existing = dir.ancestors().find(|d| d.exists())?;
        let stat = rustix::fs::statvfs(existing).ok()?;
        stat.f_flag
            .contains(rustix::fs::StatVfsMountFlags::RDONLY)
            .then(|| Self {
                dir: dir.to_owned(),
                under_systemd: std::env::var_os("INVOCATION_ID").is_some(),
            })
    }

    /// What is wrong, in one sentence.
    pub fn problem(&self) -> String {
        let dir = self.dir.display();
        if self.under_systemd {
            format!(
                "the download directory {dir} is read-only for the daemon: the service's sandbox (ProtectSystem=strict) lets it write only to its own directories, so nothing can be received"
            )
        } else {
            format!(
                "the download directory {dir} is on a read-only file system, so nothing can be received"
            )
        }
    }

    /// What to do about it.
    pub fn fix(&self) -> String {
        let dir = self.dir.display();
        if self.under_systemd {
            format!(
                "allow it with a drop-in: `sudo systemctl edit lanshare`, add `[Service]` and `ReadWritePaths={dir}` on their own lines, then `sudo systemctl restart lanshare`"
            )
        } else {
            "choose another with `download_dir` in the config file or `share daemon --download-dir DIR`".to_owned()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn download_dir_verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let check = check_download_dir(dir.path());
        assert_ne!(check.verdict, Verdict::Fail, "{check:?}");
        assert!(check.message.contains("free"));
        let missing = check_download_dir(&dir.path().join("nope"));
        assert_eq!(missing.verdict, Verdict::Fail);
        assert!(missing.fix.is_some());
    }

    /// A download directory others may write to is a warning, with the
    /// `chmod` that fixes it.
    #[test]
    fn shared_download_dir_is_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SharedDownloads::check(dir.path()), None);
        for (mode, who) in [(0o770, "its group"), (0o1777, "every user")] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let shared = SharedDownloads::check(dir.path()).unwrap();
            assert!(shared.problem().contains(who), "{}", shared.problem());
            assert!(shared.fix().contains("chmod go-w"));
            let check = check_download_dir(dir.path());
            assert_ne!(check.verdict, Verdict::Ok, "{check:?}");
            assert!(check.message.contains("writable by"), "{check:?}");
        }
    }

    /// Under systemd the advice is the drop-in the unit needs.
    #[test]
    fn read_only_download_dir_advice() {
        let dir = Path::new("/srv/incoming");
        let service = ReadOnly {
            dir: dir.to_owned(),
            under_systemd: true,
        };
        assert!(service.problem().contains("ProtectSystem=strict"));
        assert!(service.fix().contains("ReadWritePaths=/srv/incoming"));
        let by_hand = ReadOnly {
            under_systemd: false,
            ..service
        };
        assert!(by_hand.problem().contains("read-only file system"));
        assert!(by_hand.fix().contains("--download-dir"));
        // /proc/sys is read-only in most environments; a temporary
        // directory is not.
        assert_eq!(ReadOnly::check(&std::env::temp_dir()), None);
    }

    #[test]
    fn partial_data_is_totalled_with_how_to_drop_it() {
        let none = check_partial_data(&KeptSummary::default());
        assert_eq!(none.verdict, Verdict::Ok);
        assert!(none.message.starts_with("no partial data"), "{none:?}");
        let some = check_partial_data(&KeptSummary {
            transfers: 2,
            bytes: 3 << 20,
            max_bytes: 16 << 30,
        });
        assert!(
            some.message
                .starts_with("2 interrupted incoming transfers keep 3.0 MiB"),
            "{some:?}"
        );
        assert!(some.message.contains("16.0 GiB"), "{some:?}");
        assert!(some.message.contains("share clean"), "{some:?}");
    }

    #[test]
    fn ok_means_no_failure() {
        let mut report = DoctorReport {
            checks: vec![
                Check::new("a", Verdict::Ok, "fine"),
                Check::new("b", Verdict::Warn, "meh").fix("do x"),
            ],
            ..DoctorReport::default()
        };
        report.settle();
        assert!(report.ok);
        report
            .checks
            .push(Check::new("c", Verdict::Fail, "broken").fix("do y"));
        report.settle();
        assert!(!report.ok);
        let json = serde_json::to_value(&report).unwrap_or_default();
        assert_eq!(json["checks"][2]["verdict"], "fail");
        assert_eq!(json["checks"][0].get("fix"), None);
        assert!(json.get("reach").is_none());
    }
}
