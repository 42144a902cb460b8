//! Who may own the control socket's directory, and who may serve it.
//!
//! Why: a Unix socket is found by its path, and a path can be prepared by
//! someone else. Without `XDG_RUNTIME_DIR` (cron, `su`, `sudo -u`, ssh
//! without a session) a per-user socket used to live in
//! `$TMPDIR/lanshare-UID/`, a name any local user can create first and
//! listen in; `share send ~/secret` would then have handed the open file to
//! them. So both ends check, before anything is sent or bound:
//!
//! * **The CLI** uses a socket only in a directory owned by the user, root
//!   or the service user (`lanshare`, looked up by name in `/etc/passwd`;
//!   `SHARE_SERVICE_USER` names another) that neither its group nor others
//!   may write to, and sends nothing (no request, no descriptor) to a
//!   process whose `SO_PEERCRED` uid is not one of those three.
//! * **The daemon** binds only in a directory it owns that gives others
//!   nothing: mode 0700, or 0750 for the system service's group socket
//!   (`RuntimeDirectoryMode=0750`: the group may enter, never write).
//!   It creates a missing directory 0700 itself.
//!
//! The default per-user location no longer sits in a shared directory at
//! all when it can be avoided ([`crate::config::Env::user_socket`]).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The service user's default name (the Debian package creates it).
pub const SERVICE_USER: &str = "lanshare";

/// Environment variable naming the service user instead.
pub const SERVICE_USER_ENV: &str = "SHARE_SERVICE_USER";

/// Why a socket directory or server is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Distrust {
    /// The path exists but is not a plain directory (a symbolic link, a
    /// file).
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// Owned by someone the caller does not trust.
    #[error("{dir} belongs to {owner}")]
    Owner {
        /// The directory.
        dir: PathBuf,
        /// Its owner, by name if known.
        owner: String,
    },
    /// Writable (or, for the daemon, usable) by others.
    #[error("{dir} has mode {mode:04o}; {wanted}")]
    Mode {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// What it should be.
        wanted: &'static str,
    },
    /// The process behind the socket runs as someone else.
    #[error("the process behind {socket} runs as {user}")]
    Server {
        /// The socket.
        socket: PathBuf,
        /// Its user, by name if known.
        user: String,
    },
}

/// The users the CLI trusts to own a socket directory and to serve it:
/// itself, root and the service user.
#[derive(Debug, Clone, Copy)]
pub struct TrustedUsers {
    me: u32,
    service: Option<u32>,
}

impl TrustedUsers {
    /// This process's user, root, and the service user (from
    /// [`SERVICE_USER_ENV`] or [`SERVICE_USER`]) if it exists.
    pub fn of_this_process() -> Self {
        let name = std::env::var(SERVICE_USER_ENV)
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| SERVICE_USER.to_owned());
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        Self {
            me: rustix::process::geteuid().as_raw(),
            service: uid_of(&passwd, &name),
        }
    }

    /// Trusts `me`, root and `service`.
    pub fn new(me: u32, service: Option<u32>) -> Self {
        Self { me, service }
    }

    /// Whether `uid` is one of them.
    pub fn trusts(&self, uid: u32) -> bool {
        uid == self.me || uid == 0 || Some(uid) == self.service
    }

    /// Checks the directory of a socket the CLI is about to use. `Ok(false)`
    /// if it does not exist (no daemon there).
    pub fn check_directory(&self, socket: &Path) -> Result<bool, Distrust> {
        let dir = parent(socket);
        let meta = match std::fs::symlink_metadata(dir) {
            Ok(meta) => meta,
            Err(_) => return Ok(false),
        };
        if !meta.is_dir() {
            return Err(Distrust::NotADirectory(dir.to_owned()));
        }
        if !self.trusts(meta.uid()) {
            return Err(Distrust::Owner {
                dir: dir.to_owned(),
                owner: user_name(meta.uid()),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(Distrust::Mode {
                dir: dir.to_owned(),
                mode,
                wanted: "other users can create files in it",
            });
        }
        Ok(true)
    }

    /// Checks the user a connected server runs as (`SO_PEERCRED`).
    pub fn check_server(&self, socket: &Path, uid: u32) -> Result<(), Distrust> {
        if self.trusts(uid) {
            Ok(())
        } else {
            Err(Distrust::Server {
                socket: socket.to_owned(),
                user: user_name(uid),
            })
        }
    }
}

/// Checks a directory the daemon is about to bind its socket in: its own,
/// and closed to others (`group_may_enter` for the system service's
/// 0750 runtime directory). `Ok(false)` if it does not exist yet.
pub fn check_own_directory(dir: &Path, group_may_enter: bool) -> Result<bool, Distrust> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(_) => return Ok(false),
    };
    if !meta.is_dir() {
        return Err(Distrust::NotADirectory(dir.to_owned()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Distrust::Owner {
            dir: dir.to_owned(),
            owner: user_name(meta.uid()),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    let (forbidden, wanted) = if group_may_enter {
        (0o027, "it must be 0750 or stricter")
    } else {
        (0o077, "it must be 0700")
    };
    if mode & forbidden != 0 {
        return Err(Distrust::Mode {
            dir: dir.to_owned(),
            mode,
            wanted,
        });
    }
    Ok(true)
}

fn parent(socket: &Path) -> &Path {
    match socket.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The uid of `name` in `passwd` (the format of `/etc/passwd`).
fn uid_of(passwd: &str, name: &str) -> Option<u32> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name)
            .then(|| fields.nth(1)?.parse().ok())
            .flatten()
    })
}

/// `name (uid N)`, or `uid N` if the name is unknown.
fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    });
    match name {
        Some(name) => format!("user {name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_user_is_found_by_name() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      lanshare:x:998:997::/var/lib/lanshare:/usr/sbin/nologin\n\
                      lanshare2:x:5:5::/:/bin/false\n";
        assert_eq!(uid_of(passwd, "lanshare"), Some(998));
        assert_eq!(uid_of(passwd, "lanshar"), None);
        assert_eq!(uid_of("broken", "broken"), None);
    }

    #[test]
    fn only_me_root_and_the_service_are_trusted() {
        let t = TrustedUsers::new(1000, Some(998));
        assert!(t.trusts(1000) && t.trusts(0) && t.trusts(998));
        assert!(!t.trusts(1001));
        assert!(!TrustedUsers::new(1000, None).trusts(998));
        let err = t.check_server(Path::new("/x/s.sock"), 1001).unwrap_err();
        assert!(err.to_string().contains("uid 1001"), "{err}");
    }

    #[test]
    fn directories_open_to_others_are_refused() {
        let me = rustix::process::geteuid().as_raw();
        let t = TrustedUsers::new(me, None);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let socket = dir.join("share.sock");
        assert_eq!(t.check_directory(&socket), Ok(false));
        assert_eq!(check_own_directory(&dir, false), Ok(false));
        std::fs::create_dir(&dir).unwrap();
        for (mode, cli, daemon, service) in [
            (0o700, true, true, true),
            (0o750, true, false, true),
            (0o755, true, false, false),
            (0o770, false, false, false),
            (0o1777, false, false, false),
        ] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(t.check_directory(&socket).is_ok(), cli, "{mode:o}");
            assert_eq!(check_own_directory(&dir, false).is_ok(), daemon, "{mode:o}");
            assert_eq!(check_own_directory(&dir, true).is_ok(), service, "{mode:o}");
        }
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(matches!(
            t.check_directory(&link.join("share.sock")),
            Err(Distrust::NotADirectory(_))
        ));
    }
}
