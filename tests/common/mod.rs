//! Test harness: real `share` daemons in temporary directories.
//!
//! [`TestDaemon`] starts the binary built by cargo (`CARGO_BIN_EXE_share`)
//! with its own state, download directory and control socket, on loopback
//! with `--no-mdns` unless a network namespace is given. Readiness is an
//! event, the one systemd waits for: the harness plays systemd, hands the
//! daemon a `NOTIFY_SOCKET` and waits for its `READY=1`, which the daemon
//! sends once every listener and the control socket are up; the service
//! port is then read from `status` on the control socket. Daemons are
//! stopped on drop. [`netns`] builds throwaway namespace LANs for
//! multi-host tests (root only: those tests are `#[ignore]`d with the
//! reason, and CI runs them with `--include-ignored`).
//!
//! There is no push channel from a daemon to a test, so waiting for a
//! state (a transfer done, a peer listed) polls it with a deadline:
//! [`eventually`].

#![allow(dead_code)]

pub mod desktop;
pub mod netns;
pub mod pty;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the binary under test.
pub fn share_bin() -> &'static str {
    env!("CARGO_BIN_EXE_share")
}

/// Copies the `share` binary to `to` (mode 0755), for tests that run it
/// as other users from a directory they may enter.
///
/// The copy is made by a `cp` child, not in this process: a descriptor
/// open for writing here would be inherited by any child another test
/// thread forks meanwhile, and executing the copy while such a child has
/// not yet reached its own `exec` fails with "Text file busy".
pub fn copy_share_bin(to: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let status = std::process::Command::new("cp")
        .arg(share_bin())
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp {} {}: {status}",
        share_bin(),
        to.display()
    );
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Unmounts `dir`, lazily if it is still busy: for the `Drop` of a mount
/// a test made, which must not fail.
pub fn unmount(dir: &Path) {
    let umount = |args: &[&str]| {
        Command::new("umount")
            .args(args)
            .arg(dir)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !umount(&[]) {
        umount(&["--lazy"]);
    }
}

/// Whether the tests run as root (namespace tests need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// How long a daemon may take to report ready.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// Polls `probe` (every 20 ms) until it returns `Some`, and returns that;
/// panics naming `what` after `limit`. For states a test can only observe
/// by asking (there is no push channel from a daemon to a test).
pub fn eventually<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Options for starting a daemon.
pub struct Builder {
    name: String,
    args: Vec<String>,
    netns: Option<String>,
    state_dir: Option<PathBuf>,
    download_dir: Option<PathBuf>,
    mdns: bool,
    bind: Option<String>,
    port: u16,
    socket: Option<PathBuf>,
}

impl Builder {
    /// Adds raw daemon arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// `--accept POLICY`.
    pub fn accept(self, policy: &str) -> Self {
        self.args(&["--accept", policy])
    }

    /// Runs the daemon inside network namespace `ns` with mDNS on, bound
    /// to all addresses of that namespace.
    pub fn netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.to_owned());
        self.mdns = true;
        self.bind = None;
        self
    }

    /// Keeps mDNS off even inside a namespace.
    pub fn no_mdns(mut self) -> Self {
        self.mdns = false;
        self
    }

    /// Reuses an existing state directory (identity, trust).
    pub fn state_dir(mut self, dir: &Path) -> Self {
        self.state_dir = Some(dir.to_owned());
        self
    }

    /// Uses a specific control socket (to start a daemon again where its
    /// clients look for it).
    pub fn socket(mut self, path: &Path) -> Self {
        self.socket = Some(path.to_owned());
        self
    }

    /// Uses a specific download directory.
    pub fn download_dir(mut self, dir: &Path) -> Self {
        self.download_dir = Some(dir.to_owned());
        self
    }

    /// A fixed service port (default 0 = any).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Starts the daemon and waits until it reports ready.
    pub fn spawn(self) -> TestDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = self.state_dir.unwrap_or_else(|| dir.path().join("state"));
        let download = self
            .download_dir
            .unwrap_or_else(|| dir.path().join("downloads"));
        // In a directory the daemon creates private (0700), as it requires.
        let socket = self
            .socket
            .unwrap_or_else(|| dir.path().join("run/share.sock"));
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, share_bin()]);
                c
            }
            None => Command::new(share_bin()),
        };
        cmd.arg("daemon")
            .args(["--name", &self.name])
            .args(["--port", &self.port.to_string()])
            .arg("--state-dir")
            .arg(&state)
            .arg("--download-dir")
            .arg(&download)
            .arg("--socket")
            .arg(&socket)
            .args(&self.args)
            .env("RUST_LOG", "info,lanshare=debug")
            .env_remove("XDG_CONFIG_HOME")
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !self.mdns {
            cmd.arg("--no-mdns");
        }
        if let Some(bind) = &self.bind {
            cmd.args(["--bind", bind]);
        }
        // Play systemd: the daemon says `READY=1` on this socket once it
        // serves.
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
        cmd.env("NOTIFY_SOCKET", &notify_path)
            .env_remove("WATCHDOG_USEC");
        let mut child = cmd.spawn().expect("start share daemon");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Log::default());
        let log_writer = log.clone();
        let name = self.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{name}] {line}");
                log_writer.push(line);
            }
        });
        if let Err(why) = wait_ready(&notify, &mut child) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "daemon {} did not become ready ({why}):\n{}",
                self.name,
                log.lines.lock().unwrap().join("\n")
            );
        }
        let status = control(&socket, r#"{"v":1,"cmd":"status"}"#)
            .unwrap_or_else(|e| panic!("daemon {}: status after READY=1: {e}", self.name));
        let port = status["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("status names the port");
        TestDaemon {
            name: self.name,
            child: Some(child),
            socket,
            port,
            state,
            download,
            log,
            _notify: notify,
            _dir: dir,
        }
    }
}

/// Waits for `READY=1` on `notify`; fails early if the daemon exits.
fn wait_ready(notify: &UnixDatagram, child: &mut Child) -> Result<(), String> {
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + READY_LIMIT;
    let mut buf = [0u8; 4096];
    loop {
        match notify.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]);
                if message.lines().any(|l| l == "READY=1") {
                    return Ok(());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(format!("notify socket: {e}")),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited with {status}"));
        }
        if Instant::now() >= deadline {
            return Err(format!("no READY=1 within {READY_LIMIT:?}"));
        }
    }
}

/// Sends one raw control request line to `socket` and returns the `data`
/// of its final `ok` reply.
pub fn control(socket: &Path, request: &str) -> Result<Value, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    writeln!(stream, "{request}").map_err(|e| format!("write: {e}"))?;
    for line in BufReader::new(stream).lines() {
        let reply: Value = serde_json::from_str(&line.map_err(|e| format!("read: {e}"))?)
            .map_err(|e| e.to_string())?;
        match reply["type"].as_str() {
            Some("ok") => return Ok(reply["data"].clone()),
            Some("error") => return Err(reply.to_string()),
            _ => {}
        }
    }
    Err("the daemon closed the connection without answering".into())
}

/// A running daemon.
pub struct TestDaemon {
    /// Device name.
    pub name: String,
    child: Option<Child>,
    /// Control socket.
    pub socket: PathBuf,
    /// Service port.
    pub port: u16,
    /// State directory.
    pub state: PathBuf,
    /// Download directory.
    pub download: PathBuf,
    log: Arc<Log>,
    /// Where the daemon sends its systemd notifications (kept open so
    /// `STOPPING=1` has somewhere to go).
    _notify: UnixDatagram,
    _dir: tempfile::TempDir,
}

/// A daemon's log lines so far, with a signal for each new one.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl Log {
    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
        self.grew.notify_all();
    }
}

impl TestDaemon {
    /// A loopback daemon with mDNS off.
    pub fn builder(name: &str) -> Builder {
        Builder {
            name: name.to_owned(),
            args: Vec::new(),
            netns: None,
            state_dir: None,
            download_dir: None,
            mdns: false,
            bind: Some("127.0.0.1".into()),
            port: 0,
            socket: None,
        }
    }

    /// Starts a loopback daemon accepting everything.
    pub fn start(name: &str) -> Self {
        Self::builder(name).accept("all").spawn()
    }

    /// `127.0.0.1:PORT` of this daemon.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `share ARGS` against this daemon, to adjust and start.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(share_bin());
        cmd.args(args)
            .env("SHARE_SOCKET", &self.socket)
            .env("RUST_LOG", "warn");
        cmd
    }

    /// Runs `share ARGS` against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run share")
    }

    /// Runs `share ARGS --json`, asserts success, parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "share {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "share {args:?}: stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// This daemon's device ID.
    pub fn id(&self) -> String {
        self.json(&["id"])["id"].as_str().unwrap().to_owned()
    }

    /// The transfers list.
    pub fn transfers(&self) -> Vec<Value> {
        self.json(&["transfers"]).as_array().unwrap().clone()
    }

    /// Polls `share transfers` until `pred` holds for some transfer
    /// (30 s at most).
    pub fn wait_transfer(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_transfer_within(Duration::from_secs(30), what, pred)
    }

    /// [`TestDaemon::wait_transfer`] with a limit of its own.
    pub fn wait_transfer_within(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(&format!("{}: {what}", self.name), limit, || {
            self.transfers().into_iter().find(|t| pred(t))
        })
    }

    /// `share accept` of the pending `offer` (an entry of `share
    /// transfers`), which must succeed.
    pub fn accept_offer(&self, offer: &Value) {
        let id = offer["id"].as_str().expect("the offer has an id");
        let out = self.cli(&["accept", id]);
        assert!(
            out.status.success(),
            "share accept {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether a log line containing `needle` has been read so far. Only
    /// for asserting that something did *not* happen; to check that it did,
    /// use [`TestDaemon::wait_logged`], because the log is read by another
    /// thread and trails the daemon's actions. Logs are checked only where
    /// the log line is the behaviour under test (a refusal reported to the
    /// admin), never to synchronise with the daemon.
    pub fn logged(&self, needle: &str) -> bool {
        self.log
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// The log lines read so far (stderr, one entry per line as a log
    /// viewer or journald would split it). For checking what the log
    /// looks like, never to synchronise with the daemon.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lines.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) for a log line containing `needle`; returns
    /// whether one arrived.
    pub fn wait_logged(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lines = self.log.lines.lock().unwrap();
        loop {
            if lines.iter().any(|l| l.contains(needle)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            lines = self.log.grew.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Stops the daemon with SIGTERM and waits (bounded); returns whether
    /// it exited successfully.
    pub fn stop(&mut self) -> bool {
        self.stop_timed().0
    }

    /// [`TestDaemon::stop`], also returning how long the daemon took from
    /// the signal to its exit (to within 5 ms; 15 s if it was killed).
    pub fn stop_timed(&mut self) -> (bool, Duration) {
        let Some(mut child) = self.child.take() else {
            return (true, Duration::ZERO);
        };
        let pid = rustix::process::Pid::from_child(&child);
        let signalled = Instant::now();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = signalled + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return (status.success(), signalled.elapsed());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return (false, signalled.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The daemon's process ID (to read its memory and descriptors).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the daemon with SIGKILL (no cleanup, like a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `len` pseudo-random bytes (fast, deterministic per seed).
pub fn random_file(path: &Path, len: usize, seed: u64) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, data).unwrap();
}

/// Asserts two files have identical bytes.
pub fn assert_same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        x.len() == y.len() && x == y,
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

/// Lists every entry under `dir` (relative paths, sorted), including hidden ones.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
