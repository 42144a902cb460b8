//! Running as a service (issue 6): systemd notifications, socket
//! permissions, and sending a user's files through a daemon that runs as
//! another user (open descriptors passed over the control socket).
//!
//! The test that needs other users (`useradd`, `runuser`) is ignored
//! unless run as root with `--include-ignored`. The real-systemd test, which boots
//! the Debian package in `systemd-nspawn` containers, is
//! `tests/systemd/container-test.sh` (run by CI as root).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::common::{TestDaemon, is_root, share_bin};

/// A `share daemon` on loopback with extra environment, its log collected.
pub(crate) struct Daemon {
    child: Child,
    socket: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `share daemon` from `cmd` (already holding the program and
    /// any wrapper) and waits for its "daemon ready" line.
    pub(crate) fn spawn(mut cmd: Command, dir: &Path, socket: &Path) -> Self {
        cmd.arg("daemon")
            .args(["--name", "svc", "--no-mdns", "--bind", "127.0.0.1"])
            .args(["--port", "0", "--accept", "all"])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--download-dir")
            .arg(dir.join("downloads"))
            .arg("--socket")
            .arg(socket)
            .env("RUST_LOG", "info")
            .env("HOME", dir)
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start share daemon");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("lanshare daemon ready") {
                    let port = line
                        .split(" port=")
                        .nth(1)
                        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                        .and_then(|p| p.parse::<u16>().ok());
                    let _ = ready_tx.send(port);
                }
                eprintln!("[svc] {line}");
                writer.lock().unwrap().push(line);
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(_port)) => Self {
                child,
                socket: socket.to_owned(),
                log,
            },
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "daemon did not become ready:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The daemon's process ID (wrappers such as `setpriv` exec it).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits; returns how long the stop took.
    fn stop(&mut self) -> Duration {
        let started = Instant::now();
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "daemon exited with {status}");
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "daemon did not stop within 15 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `READY=1` only once the socket answers, `WATCHDOG=1` at half the
/// interval, `STOPPING=1` on SIGTERM, and a quick, clean exit that leaves
/// no socket behind.
#[test]
fn notifies_systemd_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let socket = dir.path().join("run/share.sock");
    let mut cmd = Command::new(share_bin());
    cmd.env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000");
    let mut daemon = Daemon::spawn(cmd, dir.path(), &socket);

    let mut buf = [0u8; 512];
    let mut next = || {
        let n = notify.recv(&mut buf).expect("a notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = next();
    assert!(first.starts_with("READY=1\n"), "{first:?}");
    assert!(first.contains("STATUS=ready"), "{first:?}");
    // READY came after the control socket was serving.
    let out = Command::new(share_bin())
        .args(["--socket"])
        .arg(&socket)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["warnings"], serde_json::json!([]), "{status}");

    let started = Instant::now();
    let mut pings = 0;
    while pings < 2 {
        let msg = next();
        assert_eq!(msg, "WATCHDOG=1\n");
        pings += 1;
    }
    // Two pings at 200 ms intervals.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let took = daemon.stop();
    let mut stopping = next();
    while stopping == "WATCHDOG=1\n" {
        stopping = next();
    }
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");
    eprintln!("daemon stopped in {took:?}");
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(!socket.exists(), "stale control socket left behind");
    assert!(daemon.log().contains("stopped"), "{}", daemon.log());
}

/// Under systemd (stderr is the stream named by `JOURNAL_STREAM`) log
/// lines carry a syslog priority prefix for journald and no timestamp or
/// colours; with a leaked `JOURNAL_STREAM` that names another stream, the
/// normal format stays.
#[test]
fn journal_lines_carry_priorities_without_timestamps() {
    use std::io::Read;
    use std::os::fd::AsFd;

    for (matching, expect_prefix) in [(true, true), (false, false)] {
        let dir = tempfile::tempdir().unwrap();
        let (read, write) = std::io::pipe().unwrap();
        let stat = rustix::fs::fstat(write.as_fd()).unwrap();
        let ino = if matching {
            stat.st_ino
        } else {
            stat.st_ino + 1
        };
        let mut child = Command::new(share_bin())
            .args(["daemon", "--name", "j", "--no-mdns", "--bind", "127.0.0.1"])
            .args(["--port", "0"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--download-dir")
            .arg(dir.path().join("dl"))
            .arg("--socket")
            .arg(dir.path().join("run/s.sock"))
            .env("JOURNAL_STREAM", format!("{}:{ino}", stat.st_dev))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(write))
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(read);
        let mut first = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut lines = Vec::new();
        while Instant::now() < deadline {
            first.clear();
            if reader.read_line(&mut first).unwrap() == 0 {
                break;
            }
            lines.push(first.trim_end().to_owned());
            if first.contains("lanshare daemon ready") {
                break;
            }
        }
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = child.wait().unwrap();
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        assert!(status.success(), "{status}: {lines:?} {rest}");
        let ready = lines
            .iter()
            .find(|l| l.contains("lanshare daemon ready"))
            .unwrap_or_else(|| panic!("no ready line in {lines:?}"));
        if expect_prefix {
            assert!(ready.starts_with("<6>lanshare daemon ready"), "{ready:?}");
            assert!(!ready.contains('\x1b'), "colours in {ready:?}");
        } else {
            assert!(!ready.starts_with('<'), "{ready:?}");
            assert!(ready.contains("INFO"), "{ready:?}");
        }
    }
}

/// The system service's socket (in `RUNTIME_DIRECTORY`) is 0660 so the
/// `lanshare` group can use it; a user daemon's is 0600.
#[test]
fn socket_mode_depends_on_service_kind() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o750)).unwrap();
    let socket = runtime.join("share.sock");
    let mut cmd = Command::new(share_bin());
    cmd.env("RUNTIME_DIRECTORY", &runtime);
    let system = Daemon::spawn(cmd, dir.path(), &socket);
    let mode = std::fs::metadata(&system.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "system socket mode {mode:o}");
    drop(system);

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/user.sock");
    let user = Daemon::spawn(Command::new(share_bin()), dir.path(), &socket);
    let mode = std::fs::metadata(&user.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "user socket mode {mode:o}");
}

/// Throwaway system users and a group, deleted on drop.
pub(crate) struct Users {
    users: Vec<String>,
    group: String,
}

impl Users {
    /// Creates group `<prefix>g` and users `<prefix><name>`; `members`
    /// join the group.
    pub(crate) fn new(prefix: &str, names: &[&str], members: &[&str]) -> Self {
        let group = format!("{prefix}g");
        run(&["groupadd", "--system", &group]);
        let mut users = Users {
            users: Vec::new(),
            group,
        };
        for name in names {
            let user = format!("{prefix}{name}");
            let mut args = vec!["useradd", "--system", "--no-create-home"];
            args.extend(["--shell", "/usr/sbin/nologin", "--user-group"]);
            if members.contains(name) {
                args.extend(["--groups", &users.group]);
            }
            args.push(&user);
            run(&args);
            users.users.push(user);
        }
        users
    }

    pub(crate) fn user(&self, name: &str) -> String {
        self.users
            .iter()
            .find(|u| u.ends_with(name))
            .cloned()
            .expect("known user")
    }

    pub(crate) fn id(&self, name: &str, flag: &str) -> u32 {
        let out = Command::new("id").arg(flag).arg(name).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

impl Users {
    /// The group's ID.
    pub(crate) fn group_gid(&self) -> u32 {
        let out = Command::new("getent")
            .args(["group", &self.group])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .nth(2)
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        for user in &self.users {
            let _ = Command::new("userdel").arg(user).output();
        }
        let _ = Command::new("groupdel").arg(&self.group).output();
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
}

pub(crate) fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

/// Asserts that this test may create users and run commands as them:
/// root, with the tools. Such tests are `#[ignore]`d with the reason, and
/// run as root with `cargo test -- --include-ignored`.
pub(crate) fn assert_can_run_as_other_users() {
    assert!(
        is_root(),
        "this test creates users: run it as root with `cargo test -- --include-ignored`"
    );
    let missing: Vec<&str> = ["useradd", "groupadd", "runuser", "setpriv", "prlimit"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?} (Debian packages passwd, util-linux; `.ci/run` installs them)"
    );
}

/// `share ARGS` as `user` (with that user's groups), for a daemon that
/// runs as `service` (trusted like the `lanshare` user).
fn share_as(user: &str, service: &str, bin: &Path, socket: &Path, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(bin)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env("SHARE_SERVICE_USER", service)
        .env("RUST_LOG", "warn")
        .env("HOME", "/")
        .stdin(Stdio::null())
        .output()
        .expect("run runuser")
}

/// A file only user A can read goes out through a daemon running as a
/// third user when A asks (A's CLI opens it and passes the descriptor); B's
/// CLI cannot open it, so B's request fails naming the file and the daemon
/// never sees it; a user outside the daemon's group cannot connect at all.
#[test]
#[ignore = "needs root: creates users and runs the CLI as them"]
fn file_readable_only_by_its_owner_is_sent_only_for_its_owner() {
    assert_can_run_as_other_users();
    let prefix = format!("lsfd{}", std::process::id() % 100_000);
    let users = Users::new(&prefix, &["d", "a", "b", "c"], &["a", "b"]);
    let (daemon_user, alice, bob, carol) = (
        users.user("d"),
        users.user("a"),
        users.user("b"),
        users.user("c"),
    );
    let group_gid = users.group_gid();

    // Layout: everything under a world-traversable temp dir.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("share");
    crate::common::copy_share_bin(&bin);
    // The daemon's own directories, like the system service's.
    let svc = dir.path().join("svc");
    std::fs::create_dir(&svc).unwrap();
    std::fs::set_permissions(&svc, std::fs::Permissions::from_mode(0o700)).unwrap();
    let daemon_uid = users.id(&daemon_user, "-u");
    chown(&svc, daemon_uid, group_gid);
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o750)).unwrap();
    chown(&runtime, daemon_uid, group_gid);
    let socket = runtime.join("share.sock");
    // Alice's private file.
    let home = dir.path().join("alice");
    std::fs::create_dir(&home).unwrap();
    let alice_uid = users.id(&alice, "-u");
    chown(&home, alice_uid, users.id(&alice, "-g"));
    let secret = home.join("secret.txt");
    std::fs::write(&secret, b"for alice's eyes, and whoever she sends it to\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    chown(&secret, alice_uid, users.id(&alice, "-g"));

    // Receiver: a root daemon accepting everything.
    let receiver = TestDaemon::start("receiver");
    // Sender: runs as the daemon user, primary group = the shared group,
    // in "system service" mode (RUNTIME_DIRECTORY) so the socket is 0660.
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        &daemon_uid.to_string(),
        "--regid",
        &group_gid.to_string(),
        "--clear-groups",
        "--",
    ])
    .arg(&bin)
    .env("RUNTIME_DIRECTORY", &runtime);
    let daemon = Daemon::spawn(cmd, &svc, &socket);
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), group_gid, "socket group");

    // Alice: her CLI opens the file; the daemon sends what it was handed.
    let out = share_as(
        &alice,
        &daemon_user,
        &bin,
        &socket,
        &["send", &receiver.addr(), secret.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "alice's send failed: {}\n{}",
        stderr(&out),
        daemon.log()
    );
    let got = std::fs::read(receiver.download.join("secret.txt")).unwrap();
    assert_eq!(got, std::fs::read(&secret).unwrap());
    assert!(
        daemon.log().contains(&format!("uid={alice_uid}")),
        "caller uid not logged:\n{}",
        daemon.log()
    );

    // Bob is in the group, but cannot read the file: refused by his own
    // CLI, naming the file, before the daemon hears of it.
    let sends_before = daemon.log().matches("command=\"send\"").count();
    let out = share_as(
        &bob,
        &daemon_user,
        &bin,
        &socket,
        &["send", &receiver.addr(), secret.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "bob's send must fail");
    let err = stderr(&out);
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains(secret.to_str().unwrap()), "{err}");
    assert_eq!(
        daemon.log().matches("command=\"send\"").count(),
        sends_before,
        "the daemon must not see bob's request"
    );
    // Bob can still use the daemon for everything else.
    let out = share_as(&bob, &daemon_user, &bin, &socket, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Carol is not in the group: she cannot even connect.
    let out = share_as(&carol, &daemon_user, &bin, &socket, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("permission denied: add yourself to group lanshare"),
        "{err}"
    );
    assert!(err.contains("usermod -aG lanshare"), "{err}");
}

/// Runs `bin ARGS` as `user` with a bare environment: no `HOME`, no
/// `XDG_RUNTIME_DIR` (as under cron or `su`), `TMPDIR=tmp`.
fn run_without_session(user: &str, tmp: &Path, bin: &Path, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["30", "runuser", "-u", user, "--", "env", "-i"])
        .arg(format!("TMPDIR={}", tmp.display()))
        .args(["PATH=/usr/bin:/bin", "RUST_LOG=warn"])
        .arg(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run runuser")
}

/// Socket hijack (issue 13 item 1). Mallory creates the directory where
/// Alice's CLI and daemon look for their socket when no session gives them
/// `XDG_RUNTIME_DIR` (`$TMPDIR/lanshare-UID`, with `TMPDIR` world-writable
/// like /tmp) and listens there. Alice's CLI refuses that directory and
/// sends nothing; Alice's daemon refuses to bind in it. Moved into a
/// directory Alice does trust, Mallory's socket is still refused, because
/// its server runs as Mallory: `share send` passes no request and no file.
#[test]
#[ignore = "needs root: creates users and runs the CLI as them"]
fn a_socket_prepared_by_another_user_gets_nothing() {
    assert_can_run_as_other_users();
    let prefix = format!("lshj{}", std::process::id() % 100_000);
    let users = Users::new(&prefix, &["a", "m"], &[]);
    let (alice, mallory) = (users.user("a"), users.user("m"));
    let (alice_uid, alice_gid) = (users.id(&alice, "-u"), users.id(&alice, "-g"));
    let (mallory_uid, mallory_gid) = (users.id(&mallory, "-u"), users.id(&mallory, "-g"));

    // A shared temporary directory, like /tmp.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let bin = tmp.path().join("share");
    crate::common::copy_share_bin(&bin);
    let private_dir = |name: &str, uid, gid| {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        chown(&dir, uid, gid);
        dir
    };
    let alice_home = private_dir("alice", alice_uid, alice_gid);
    let secret = alice_home.join("secret.txt");
    std::fs::write(&secret, b"alice's eyes only\n").unwrap();
    chown(&secret, alice_uid, alice_gid);

    // Mallory's trap: the directory Alice's tools will look in, and a
    // listening socket inside, opened up to everyone.
    let trap = private_dir(&format!("lanshare-{alice_uid}"), mallory_uid, mallory_gid);
    let mallory_home = private_dir("mallory", mallory_uid, mallory_gid);
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", &mallory_uid.to_string()])
        .args(["--regid", &mallory_gid.to_string(), "--clear-groups", "--"])
        .arg(&bin);
    let listener = Daemon::spawn(cmd, &mallory_home, &trap.join("share.sock"));
    std::fs::set_permissions(&trap, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        trap.join("share.sock"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();

    let secret_arg = secret.to_str().unwrap();
    let out = run_without_session(
        &alice,
        tmp.path(),
        &bin,
        &["send", "127.0.0.1:9", secret_arg],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refusing to use the control socket"), "{err}");
    assert!(err.contains(&format!("belongs to user {mallory}")), "{err}");
    assert!(err.contains("nothing was sent"), "{err}");

    // Alice's daemon will not bind there either.
    let alice_state = alice_home.join("state");
    let out = run_without_session(
        &alice,
        tmp.path(),
        &bin,
        &[
            "daemon",
            "--no-mdns",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--state-dir",
            alice_state.to_str().unwrap(),
            "--download-dir",
            alice_home.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "alice's daemon started: {err}");
    assert!(
        err.contains("refusing to put the control socket in"),
        "{err}"
    );
    assert!(err.contains(&trap.display().to_string()), "{err}");

    // A directory others may write to is refused for what it is, too.
    let in_tmp = tmp.path().join("x.sock");
    let out = run_without_session(
        &alice,
        tmp.path(),
        &bin,
        &["--socket", in_tmp.to_str().unwrap(), "status"],
    );
    let err = stderr(&out);
    assert!(err.contains("other users can create files in it"), "{err}");

    // Mallory's socket in a directory Alice trusts (root's, 0755): its
    // server is still Mallory.
    let trusted = tmp.path().join("trusted");
    std::fs::create_dir(&trusted).unwrap();
    std::fs::set_permissions(&trusted, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(trap.join("share.sock"), trusted.join("share.sock")).unwrap();
    let moved = trusted.join("share.sock");
    let out = run_without_session(
        &alice,
        tmp.path(),
        &bin,
        &[
            "--socket",
            moved.to_str().unwrap(),
            "send",
            "127.0.0.1:9",
            secret_arg,
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("runs as user {mallory}")), "{err}");
    assert!(err.contains("nothing was sent"), "{err}");

    // Mallory heard nothing at all.
    let log = listener.log();
    assert!(!log.contains("control command"), "{log}");
    assert!(!log.contains("refused control request"), "{log}");
}

/// Runs `share daemon ARGS` with stderr as its journal stream (like
/// systemd's `JOURNAL_STREAM`); returns the exit code and the stderr lines.
fn daemon_under_journal(dir: &Path, args: &[&str]) -> (Option<i32>, Vec<String>) {
    use std::io::Read;
    use std::os::fd::AsFd;
    let (mut read, write) = std::io::pipe().unwrap();
    let stat = rustix::fs::fstat(write.as_fd()).unwrap();
    let mut child = Command::new(share_bin())
        .args(["daemon", "--name", "j", "--no-mdns", "--bind", "127.0.0.1"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--download-dir")
        .arg(dir.join("dl"))
        .arg("--socket")
        .arg(dir.join("run/s.sock"))
        .args(args)
        .env("JOURNAL_STREAM", format!("{}:{}", stat.st_dev, stat.st_ino))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(write))
        .spawn()
        .unwrap();
    let mut text = String::new();
    read.read_to_string(&mut text).unwrap();
    let status = child.wait().unwrap();
    (status.code(), text.lines().map(str::to_owned).collect())
}

/// A daemon that cannot start says why in exactly one journal entry at
/// priority err (a multi-line TOML error used to become several entries
/// at info) and exits with 78 when only an admin can fix it (config file,
/// corrupt trust store), which the units exclude from restarting; a busy
/// port, which may pass, exits with 1.
#[test]
fn startup_failures_are_one_entry_at_err_and_permanent_ones_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "name = \nport = 47000\n").unwrap();
    let corrupt_trust = tempfile::tempdir().unwrap();
    std::fs::create_dir(corrupt_trust.path().join("state")).unwrap();
    std::fs::write(corrupt_trust.path().join("state/trusted.json"), "{oops").unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let udp = std::net::UdpSocket::bind(("127.0.0.1", busy.local_addr().unwrap().port()));

    let cases: Vec<(&Path, Vec<&str>, i32, &str)> = vec![
        (
            dir.path(),
            vec!["--port", "0", "--config", config.to_str().unwrap()],
            78,
            "invalid config file",
        ),
        (corrupt_trust.path(), vec!["--port", "0"], 78, "is corrupt"),
        (dir.path(), vec!["--port", &busy_port], 1, "cannot listen"),
    ];
    for (dir, args, code, reason) in cases {
        let (status, lines) = daemon_under_journal(dir, &args);
        assert_eq!(status, Some(code), "{args:?}: {lines:#?}");
        let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("<3>")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {lines:#?}");
        assert!(errors[0].starts_with("<3>share: "), "{lines:#?}");
        assert!(errors[0].contains(reason), "{lines:#?}");
        let unprefixed: Vec<&String> = lines.iter().filter(|l| !l.starts_with('<')).collect();
        assert!(
            unprefixed.is_empty(),
            "lines without a priority: {unprefixed:#?}"
        );
    }
    drop((busy, udp));
}
