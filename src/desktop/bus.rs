//! The session bus side: the freedesktop notification service
//! (`org.freedesktop.Notifications`, Desktop Notifications Specification
//! 1.2) and the file manager (`org.freedesktop.FileManager1`), over zbus.
//!
//! [`Notifier`] wraps one session-bus connection. It learns what the
//! notification server can do ([`Caps`]) on first use rather than at start,
//! because at login the agent may come up before the shell that provides
//! the service.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use zbus::Variant;

use super::agent::{Caps, Note, Urgency};

/// The well-known name one agent per session owns once it watches the
/// daemon, so a second one (an autostart entry and the user unit both
/// starting it) steps aside.
pub const AGENT_NAME: &str = "org.lanshare.Notify";

/// `app_name` of every notification.
const APP_NAME: &str = "lanshare";

/// Icon of every notification (a standard icon name).
const APP_ICON: &str = "folder-download";

#[zbus::proxy(
    interface = "org.freedesktop.Notifications",
    default_service = "org.freedesktop.Notifications",
    default_path = "/org/freedesktop/Notifications"
)]
trait Notifications {
    /// Shows (or, with `replaces_id`, updates) a notification.
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: &str,
        replaces_id: u32,
        app_icon: &str,
        summary: &str,
        body: &str,
        actions: &[&str],
        hints: HashMap<&str, Variant<'_>>,
        expire_timeout: i32,
    ) -> zbus::Result<u32>;

    /// Withdraws a notification.
    fn close_notification(&self, id: u32) -> zbus::Result<()>;

    /// Optional features of the server (`actions`, `body-markup`, ...).
    fn get_capabilities(&self) -> zbus::Result<Vec<String>>;

    /// Name, vendor, version and spec version of the server.
    fn get_server_information(&self) -> zbus::Result<(String, String, String, String)>;

    /// The user chose an action of notification `id`.
    #[zbus(signal)]
    fn action_invoked(&self, id: u32, action_key: String) -> zbus::Result<()>;

    /// Notification `id` went away (1 expired, 2 dismissed, 3 closed by
    /// a call, 4 other).
    #[zbus(signal)]
    fn notification_closed(&self, id: u32, reason: u32) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.FileManager1",
    default_service = "org.freedesktop.FileManager1",
    default_path = "/org/freedesktop/FileManager1"
)]
trait FileManager1 {
    /// Opens the folders containing `uris` with those items selected.
    fn show_items(&self, uris: &[&str], startup_id: &str) -> zbus::Result<()>;
}

/// Why the session bus cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No session bus to connect to (no graphical session).
    #[error(
        "no desktop session bus ({0}); desktop notifications need a graphical session (DBUS_SESSION_BUS_ADDRESS or $XDG_RUNTIME_DIR/bus)"
    )]
    NoSession(String),
    /// Another agent already serves this session.
    #[error("another `share notify` already runs in this session")]
    AlreadyRunning,
    /// A call failed.
    #[error("desktop notification service: {0}")]
    Call(#[from] zbus::Error),
}

/// A user's choice on a notification, or its disappearance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Action `key` of notification `id` was invoked.
    Action {
        /// Notification.
        id: u32,
        /// Action key.
        key: String,
    },
    /// Notification `id` was closed (dismissed, expired, replaced).
    Closed {
        /// Notification.
        id: u32,
    },
}

/// A connection to the session bus's notification service.
pub struct Notifier {
    connection: zbus::Connection,
    proxy: NotificationsProxy<'static>,
    caps: Option<Caps>,
}

impl Notifier {
    /// Connects to the session bus.
    pub async fn connect() -> Result<Self, BusError> {
        let connection = zbus::Connection::session()
            .await
            .map_err(|e| BusError::NoSession(e.to_string()))?;
        let proxy = NotificationsProxy::new(&connection).await?;
        Ok(Self {
            connection,
            proxy,
            caps: None,
        })
    }

    /// Takes [`AGENT_NAME`] on the bus: one agent per session.
    pub async fn claim_agent_name(&self) -> Result<(), BusError> {
        match self.connection.request_name(AGENT_NAME).await {
            Ok(()) => Ok(()),
            Err(zbus::Error::NameTaken) => Err(BusError::AlreadyRunning),
            Err(e) => Err(e.into()),
        }
    }

    /// The user's answers from now on. Call before showing anything, so no
    /// signal is missed.
    pub async fn signals(
        &self,
    ) -> Result<impl futures_util::Stream<Item = Signal> + Send + Unpin + use<>, BusError> {
        let actions = self.proxy.receive_action_invoked().await?.filter_map(|s| {
            std::future::ready(s.args().ok().map(|a| Signal::Action {
                id: a.id,
                key: a.action_key,
            }))
        });
        let closed = self
            .proxy
            .receive_notification_closed()
            .await?
            .filter_map(|s| std::future::ready(s.args().ok().map(|a| Signal::Closed { id: a.id })));
        Ok(futures_util::stream::select(actions, closed))
    }

    /// What the server can do (asked once, then remembered).
    pub async fn caps(&mut self) -> Result<Caps, BusError> {
        if let Some(caps) = &self.caps {
            return Ok(caps.clone());
        }
        let list = self.proxy.get_capabilities().await?;
        let (server, ..) = self
            .proxy
            .get_server_information()
            .await
            .unwrap_or_default();
        let caps = Caps::from_server(&server, &list);
        tracing::debug!(%server, ?list, "notification server");
        self.caps = Some(caps.clone());
        Ok(caps)
    }

    /// Shows `note`, replacing notification `replaces` (0: a new one).
    /// Returns the notification's ID.
    pub async fn show(&self, note: &Note, replaces: u32) -> Result<u32, BusError> {
        let actions: Vec<&str> = note
            .actions
            .iter()
            .flat_map(|(key, label)| [key.as_str(), label.as_str()])
            .collect();
        let mut hints: HashMap<&str, Variant<'_>> = HashMap::new();
        hints.insert("urgency", Variant::from(note.urgency as u8));
        hints.insert("category", Variant::from(note.category));
        hints.insert("desktop-entry", Variant::from("lanshare"));
        if let Some(percent) = note.progress {
            hints.insert("value", Variant::from(i32::from(percent)));
        }
        if note.resident {
            hints.insert("resident", Variant::from(true));
        }
        if note.transient {
            hints.insert("transient", Variant::from(true));
        }
        let timeout = match note.urgency {
            // Offers wait for an answer: never expire on screen.
            Urgency::Critical => 0,
            _ => -1,
        };
        Ok(self
            .proxy
            .notify(
                APP_NAME,
                replaces,
                APP_ICON,
                &note.summary,
                &note.body,
                &actions,
                hints,
                timeout,
            )
            .await?)
    }

    /// Shows `note` and waits for the user to pick one of its actions:
    /// returns the action's key, or `None` when the notification is
    /// dismissed or nothing is picked within `limit`. The notification is
    /// withdrawn either way.
    pub async fn ask(&self, note: &Note, limit: Duration) -> Result<Option<String>, BusError> {
        let mut signals = self.signals().await?;
        let id = self.show(note, 0).await?;
        let picked = tokio::time::timeout(limit, async {
            while let Some(signal) = signals.next().await {
                match signal {
                    Signal::Action { id: on, key } if on == id => return Some(key),
                    Signal::Closed { id: on } if on == id => return None,
                    _ => {}
                }
            }
            None
        })
        .await
        .unwrap_or(None);
        let _ = self.close(id).await;
        Ok(picked)
    }

    /// Withdraws notification `id`.
    pub async fn close(&self, id: u32) -> Result<(), BusError> {
        Ok(self.proxy.close_notification(id).await?)
    }

    /// Shows `paths` in the file manager, selected. Falls back to
    /// `xdg-open` on their folder when no file manager serves
    /// `org.freedesktop.FileManager1`.
    pub async fn open_folder(&self, paths: &[PathBuf]) {
        let uris: Vec<String> = paths.iter().map(|p| file_uri(p)).collect();
        let refs: Vec<&str> = uris.iter().map(String::as_str).collect();
        let shown = match FileManager1Proxy::new(&self.connection).await {
            Ok(proxy) => proxy.show_items(&refs, "").await,
            Err(e) => Err(e),
        };
        let Err(e) = shown else {
            return;
        };
        tracing::debug!("no file manager on the bus ({e}); trying xdg-open");
        let Some(folder) = paths.first().and_then(|p| p.parent()) else {
            return;
        };
        match tokio::process::Command::new("xdg-open")
            .arg(folder)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
        {
            Ok(mut child) => {
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
            }
            Err(e) => tracing::warn!("cannot open {}: {e}", folder.display()),
        }
    }
}

/// `file://` URI of an absolute path: every byte but the unreserved ones
/// and `/` percent-encoded (RFC 8089, RFC 3986).
pub fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris_are_percent_encoded() {
        assert_eq!(
            file_uri(Path::new("/home/ana/Downloads/report 1.pdf")),
            "file:///home/ana/Downloads/report%201.pdf"
        );
        assert_eq!(
            file_uri(Path::new("/tmp/Grüße#?%.txt")),
            "file:///tmp/Gr%C3%BC%C3%9Fe%23%3F%25.txt"
        );
    }
}
