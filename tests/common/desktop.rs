//! A desktop session for tests: a private `dbus-daemon --session`, a test
//! notification server that records every `Notify` call and can invoke
//! actions, a file manager that records what it was asked to show, and
//! the `share notify` agent connected to both a daemon and that bus.
//!
//! The bus has its own configuration (no service activation, so no real
//! notification daemon of the machine can be started by a call), and the
//! servers run on a runtime of their own inside the test process. Tests
//! synchronise on the calls the servers receive: [`Desktop::next`] waits
//! for the next one (with a deadline that only turns a hang into a
//! failure).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::object_server::SignalEmitter;

use super::{TestDaemon, share_bin};

/// How long a test waits for the next call before failing.
const CALL_LIMIT: Duration = Duration::from_secs(60);

const NOTIFICATIONS_PATH: &str = "/org/freedesktop/Notifications";

/// One `Notify` call, as the server received it.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The ID the server answered with.
    pub id: u32,
    /// The notification it replaces (0: a new one).
    pub replaces_id: u32,
    pub summary: String,
    pub body: String,
    /// Action keys and labels.
    pub actions: Vec<(String, String)>,
    /// The `value` hint (progress percent), if given.
    pub progress: Option<i32>,
}

impl Notification {
    /// Whether it has an action with this key.
    pub fn has_action(&self, key: &str) -> bool {
        self.actions.iter().any(|(k, _)| k == key)
    }
}

/// What the servers were asked to do.
#[derive(Debug, Clone)]
pub enum Call {
    /// `Notify`.
    Notify(Notification),
    /// `CloseNotification`.
    Close(u32),
    /// The file manager's `ShowItems`.
    ShowItems(Vec<String>),
}

struct Notifications {
    calls: mpsc::Sender<Call>,
    last_id: u32,
    capabilities: Vec<String>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &mut self,
        _app_name: String,
        replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        hints: HashMap<String, zbus::OwnedVariant>,
        _expire_timeout: i32,
    ) -> u32 {
        let id = if replaces_id != 0 {
            replaces_id
        } else {
            self.last_id += 1;
            self.last_id
        };
        let actions = actions
            .chunks(2)
            .map(|pair| (pair[0].clone(), pair.get(1).cloned().unwrap_or_default()))
            .collect();
        let progress = hints.get("value").and_then(|v| i32::try_from(v).ok());
        let _ = self.calls.send(Call::Notify(Notification {
            id,
            replaces_id,
            summary,
            body,
            actions,
            progress,
        }));
        id
    }

    fn close_notification(&mut self, id: u32) {
        let _ = self.calls.send(Call::Close(id));
    }

    fn get_capabilities(&self) -> Vec<String> {
        self.capabilities.clone()
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "lanshare-test".into(),
            "lanshare".into(),
            "1".into(),
            "1.2".into(),
        )
    }

    #[zbus(signal)]
    async fn action_invoked(
        emitter: &SignalEmitter<'_>,
        id: u32,
        action_key: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn notification_closed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        reason: u32,
    ) -> zbus::Result<()>;
}

struct FileManager {
    calls: mpsc::Sender<Call>,
}

#[zbus::interface(name = "org.freedesktop.FileManager1")]
impl FileManager {
    fn show_items(&self, uris: Vec<String>, _startup_id: String) {
        let _ = self.calls.send(Call::ShowItems(uris));
    }
}

/// A session bus with a test notification server and file manager.
pub struct Desktop {
    /// The bus address (`DBUS_SESSION_BUS_ADDRESS`).
    pub address: String,
    runtime: tokio::runtime::Runtime,
    connection: zbus::Connection,
    calls: mpsc::Receiver<Call>,
    bus: Child,
    _dir: tempfile::TempDir,
}

impl Desktop {
    /// Starts the bus and the servers; the notification server announces
    /// `capabilities`.
    pub fn start(capabilities: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("bus");
        let config = dir.path().join("session.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start dbus-daemon (package dbus-daemon)");
        // The address is printed once the bus listens.
        let mut address = String::new();
        BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut address)
            .expect("dbus-daemon prints its address");
        let address = address.trim().to_owned();
        assert!(!address.is_empty(), "dbus-daemon did not start");

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, calls) = mpsc::channel();
        let notifications = Notifications {
            calls: tx.clone(),
            last_id: 0,
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        };
        let connection = runtime
            .block_on(
                zbus::connection::Builder::address(address.as_str())
                    .serve_at(NOTIFICATIONS_PATH, notifications)
                    .serve_at("/org/freedesktop/FileManager1", FileManager { calls: tx })
                    .name("org.freedesktop.Notifications")
                    .name("org.freedesktop.FileManager1")
                    .build(),
            )
            .expect("serve the test notification server");
        Self {
            address,
            runtime,
            connection,
            calls,
            bus,
            _dir: dir,
        }
    }

    /// The next call the servers receive.
    pub fn next(&self, what: &str) -> Call {
        self.calls
            .recv_timeout(CALL_LIMIT)
            .unwrap_or_else(|_| panic!("no D-Bus call within {CALL_LIMIT:?} (waiting for {what})"))
    }

    /// The next call, which must be a `Notify`.
    pub fn next_notification(&self, what: &str) -> Notification {
        match self.next(what) {
            Call::Notify(n) => n,
            other => panic!("expected a notification ({what}), got {other:?}"),
        }
    }

    /// The calls received and not yet taken, without waiting.
    pub fn pending(&self) -> Vec<Call> {
        self.calls.try_iter().collect()
    }

    /// Notifications until (and including) the first one `until` accepts.
    pub fn notifications_until(
        &self,
        what: &str,
        until: impl Fn(&Notification) -> bool,
    ) -> Vec<Notification> {
        let mut seen = Vec::new();
        loop {
            let n = self.next_notification(what);
            let last = until(&n);
            seen.push(n);
            if last {
                return seen;
            }
        }
    }

    /// The user clicks action `key` of notification `id`.
    pub fn invoke(&self, id: u32, key: &str) {
        self.runtime.block_on(async {
            let iface = self
                .connection
                .object_server()
                .interface::<_, Notifications>(NOTIFICATIONS_PATH)
                .await
                .unwrap();
            Notifications::action_invoked(iface.signal_emitter(), id, key)
                .await
                .unwrap();
        });
    }

    /// Environment for a process of this session.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address);
        cmd
    }

    /// Starts `share notify` for `daemon` and waits until it watches it
    /// (it owns `org.lanshare.Notify` from then on).
    pub fn agent(&self, daemon: &TestDaemon) -> AgentProcess {
        let name_taken = self.runtime.block_on(async {
            let dbus = zbus::fdo::DBusProxy::new(&self.connection).await.unwrap();
            dbus.receive_name_owner_changed().await.unwrap()
        });
        let mut child = self
            .command(share_bin())
            .arg("notify")
            .env("SHARE_SOCKET", &daemon.socket)
            .env("RUST_LOG", "info,lanshare=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start share notify");
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[notify] {line}");
            }
        });
        self.runtime.block_on(async {
            let mut changes = name_taken;
            tokio::time::timeout(CALL_LIMIT, async {
                while let Some(change) = changes.next().await {
                    let args = change.args().unwrap();
                    if args.name.as_str() == "org.lanshare.Notify" && args.new_owner.is_some() {
                        return;
                    }
                }
            })
            .await
            .expect("share notify took its bus name (it watches the daemon)");
        });
        AgentProcess { child }
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// A running `share notify`; stopped with SIGTERM on [`AgentProcess::stop`]
/// or killed on drop.
pub struct AgentProcess {
    child: Child,
}

impl AgentProcess {
    /// SIGTERM, then the exit status (it must stop by itself).
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        self.child.wait().unwrap()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `file://` URI of a local path, as the agent passes it to the file
/// manager.
pub fn file_uri(path: &Path) -> String {
    lanshare::desktop::bus::file_uri(path)
}
