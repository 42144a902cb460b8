//! lanshare against a real third-party LocalSend implementation,
//! `localsendd` 0.1.1 from the Python package registry, in network
//! namespaces (multicast discovery needs a LAN of its own).
//!
//! `localsendd` is installed into a venv under cargo's target directory on
//! first use (`.ci/run` does it up front); where that cannot be done (no
//! `python3 -m venv`, no registry), every test here prints why and that it
//! is SKIPPED, instead of failing.
//!
//! `localsendd` speaks protocol 2.2 with multicast, HTTPS, a client
//! certificate and fingerprint pinning. Its server does not ask for client
//! certificates; [`REQUIRE_CLIENT_CERT`] wraps it so that it does, as a
//! LocalSend 1.18 receiver does. It flattens folder paths to file names
//! and sends files only (no folders, no text messages), so those
//! directions are covered by `tests/localsend.rs` between two lanshare
//! daemons.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::common::netns::{Lan, peers};
use crate::common::{TestDaemon, assert_same_file, eventually, random_file, tree};
use crate::localsend::succeeded;

/// The version the tests are written against.
const LOCALSENDD: &str = "localsendd==0.1.1";

/// A Python prelude that makes localsendd's HTTPS server require a client
/// certificate signed by the key of the certificate in `$TRUST_CERT` (ours),
/// like LocalSend 1.18's server, then runs localsendd.
const REQUIRE_CLIENT_CERT: &str = r#"
import os, ssl, sys
import localsendd.identity as identity
import localsendd.daemon as daemon
original = identity.build_tls
def build_tls(enable):
    ctx, fingerprint = original(enable)
    if ctx is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=os.environ["TRUST_CERT"])
    return ctx, fingerprint
identity.build_tls = build_tls
daemon.build_tls = build_tls
sys.exit(daemon.main(sys.argv[1:]))
"#;

/// The venv with localsendd, installed on first use; `None` (and a
/// message) if it cannot be installed here.
fn venv() -> Option<&'static Path> {
    static VENV: OnceLock<Option<PathBuf>> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("localsendd-venv");
        let bin = venv.join("bin/localsendd");
        if bin.exists() {
            return Some(venv);
        }
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output();
        let installed = created.and_then(|out| {
            if !out.status.success() {
                return Ok(out);
            }
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", LOCALSENDD])
                .output()
        });
        match installed {
            Ok(out) if out.status.success() && bin.exists() => Some(venv),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot install {LOCALSENDD} into {}: {}; the LocalSend interoperability tests did not run",
                    venv.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!(
                    "SKIPPED: cannot install {LOCALSENDD} (python3 -m venv: {e}); the LocalSend interoperability tests did not run"
                );
                None
            }
        }
    })
    .as_deref()
}

/// A LAN of `n` hosts with a default route, which localsendd needs for
/// multicast (it joins the group on the default interface) and to know
/// its own address.
fn lan(n: usize) -> Lan {
    let lan = Lan::new(n);
    for host in &lan.hosts {
        crate::common::netns::in_ns(host, &["ip", "route", "add", "default", "dev", "eth0"]);
    }
    lan
}

/// A localsendd in host `i` of `lan`.
struct Localsendd {
    child: Child,
    home: tempfile::TempDir,
    ns: String,
    venv: &'static Path,
}

impl Localsendd {
    fn start(lan: &Lan, i: usize, venv: &'static Path, alias: &str, args: &[&str]) -> Self {
        Self::start_with(lan, i, venv, alias, args, None)
    }

    /// `trust_cert`: make its server require a client certificate, this
    /// one (as LocalSend 1.18 does).
    fn start_with(
        lan: &Lan,
        i: usize,
        venv: &'static Path,
        alias: &str,
        args: &[&str],
        trust_cert: Option<&Path>,
    ) -> Self {
        let home = tempfile::tempdir().unwrap();
        let ns = lan.hosts[i].clone();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]);
        match trust_cert {
            Some(cert) => {
                cmd.arg(venv.join("bin/python3"))
                    .args(["-c", REQUIRE_CLIENT_CERT])
                    .env("TRUST_CERT", cert);
            }
            None => {
                cmd.arg(venv.join("bin/localsendd"));
            }
        }
        let child = cmd
            .args(["--alias", alias, "--log-level", "debug", "--no-log-time"])
            .arg("--download-dir")
            .arg(home.path().join("downloads"))
            .arg("--socket")
            .arg(home.path().join("ctl.sock"))
            .args(args)
            .env("HOME", home.path())
            .env("XDG_STATE_HOME", home.path().join("state"))
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_RUNTIME_DIR", home.path())
            .env_remove("REQUESTS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start localsendd");
        let daemon = Self {
            child,
            home,
            ns,
            venv,
        };
        eventually(
            "localsendd answers its control socket",
            Duration::from_secs(20),
            || {
                daemon
                    .ctl(&["status", "--json"])
                    .status
                    .success()
                    .then_some(())
            },
        );
        daemon
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(self.venv.join("bin/localsendctl"))
            .arg("--socket")
            .arg(self.home.path().join("ctl.sock"))
            .args(args)
            .output()
            .expect("run localsendctl")
    }

    /// `localsendctl status --json`.
    fn state(&self) -> Value {
        let out = self.ctl(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).expect("status is JSON")
    }

    fn fingerprint(&self) -> String {
        self.state()["self"]["fingerprint"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn downloads(&self) -> PathBuf {
        self.home.path().join("downloads")
    }

    /// Waits until its last result is of `kind` (`sent`, `declined`...).
    fn wait_result(&self, kind: &str) -> Value {
        eventually(
            &format!("localsendd: a {kind} result"),
            Duration::from_secs(60),
            || {
                let result = self.state()["result"].clone();
                (result["kind"] == kind).then_some(result)
            },
        )
    }

    /// Starts `localsendctl watch`: a client is attached, so incoming
    /// offers wait for `accept` / `reject` instead of being refused.
    /// Returns once it is attached (it has printed the first state).
    fn attach(&self) -> Child {
        use std::io::BufRead;
        let mut child = Command::new(self.venv.join("bin/localsendctl"))
            .arg("--socket")
            .arg(self.home.path().join("ctl.sock"))
            .args(["watch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run localsendctl watch");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        assert!(
            matches!(lines.next(), Some(Ok(line)) if line.contains("\"state\"")),
            "localsendctl watch attaches"
        );
        // Keep reading so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        child
    }

    /// Waits until an incoming offer waits for an answer.
    fn wait_incoming(&self) -> Value {
        eventually(
            "localsendd: an incoming offer",
            Duration::from_secs(30),
            || {
                let incoming = self.state()["incoming"].clone();
                (!incoming.is_null()).then_some(incoming)
            },
        )
    }
}

impl Drop for Localsendd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.ns;
    }
}

/// Stops a background child (a `localsendctl watch`), by its handle.
fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A lanshare daemon with LocalSend on in host `i`.
fn lanshare(lan: &Lan, i: usize, name: &str, accept: &str, extra: &[&str]) -> TestDaemon {
    lan.daemon(i, name)
        .accept(accept)
        .args(&["--localsend"])
        .args(extra)
        .spawn()
}

/// Waits until `daemon` lists the LocalSend device with `fingerprint`.
fn wait_listed(daemon: &TestDaemon, fingerprint: &str) -> Value {
    eventually(
        &format!("{} lists LocalSend device {fingerprint}", daemon.name),
        Duration::from_secs(30),
        || {
            peers(daemon)
                .into_iter()
                .find(|p| p["localsend"]["fingerprint"] == fingerprint)
        },
    )
}

/// The LocalSend fingerprint of a lanshare daemon.
fn our_fingerprint(daemon: &TestDaemon) -> String {
    daemon.json(&["status"])["localsend"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn sha256(path: &Path) -> String {
    let data = std::fs::read(path).unwrap();
    ring::digest::digest(&ring::digest::SHA256, &data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
#[ignore = "needs root: network namespaces (and localsendd from the Python registry)"]
fn discovery_works_both_ways() {
    let Some(venv) = venv() else { return };
    let lan = lan(2);
    let nas = lanshare(&lan, 0, "nas", "ask", &[]);
    let phone = Localsendd::start(&lan, 1, venv, "phone", &[]);
    let listed = wait_listed(&nas, &phone.fingerprint());
    assert_eq!(listed["name"], "phone");
    assert_eq!(listed["protocol"], "localsend");
    assert_eq!(listed["source"], "localsend");
    assert_eq!(listed["trusted"], false);
    assert_eq!(listed["addresses"][0], format!("{}:53317", lan.addrs[1]));
    assert_eq!(listed["localsend"]["device_type"], "desktop");
    let ours = our_fingerprint(&nas);
    let seen = eventually("localsendd lists nas", Duration::from_secs(30), || {
        let out = phone.ctl(&["devices", "--json"]);
        let devices: Value = serde_json::from_slice(&out.stdout).ok()?;
        devices
            .as_array()?
            .iter()
            .find(|d| d["fingerprint"] == ours)
            .cloned()
    });
    assert_eq!(seen["alias"], "nas");
    assert_eq!(seen["deviceType"], "headless");
    // Its dual-stack server writes IPv4 peers as mapped IPv6 addresses.
    let ip = seen["ip"].as_str().unwrap();
    assert!(ip.trim_start_matches("::ffff:") == lan.addrs[0], "{ip}");
    // Listed once, however many announcements and registers arrived.
    let count = peers(&nas)
        .iter()
        .filter(|p| p["protocol"] == "localsend")
        .count();
    assert_eq!(count, 1);
}

#[test]
#[ignore = "needs root: network namespaces (and localsendd from the Python registry)"]
fn files_and_a_folder_go_both_ways_with_consent() {
    let Some(venv) = venv() else { return };
    let lan = lan(2);
    let nas = lanshare(&lan, 0, "nas", "ask", &[]);
    let phone = Localsendd::start(&lan, 1, venv, "phone", &[]);
    wait_listed(&nas, &phone.fingerprint());
    let src = tempfile::tempdir().unwrap();
    let folder = src.path().join("album");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    random_file(&folder.join("sub/a.jpg"), 2 << 20, 1);
    random_file(&folder.join("b.txt"), 3000, 2);
    random_file(&src.path().join("single.bin"), 5 << 20, 3);

    // lanshare -> localsendd: the phone's user accepts.
    let watch = phone.attach();
    let send = std::process::Command::new(crate::common::share_bin())
        .args(["send", "phone", "--json"])
        .arg(&folder)
        .arg(src.path().join("single.bin"))
        .env("SHARE_SOCKET", &nas.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let incoming = phone.wait_incoming();
    assert_eq!(incoming["fileCount"], 3);
    let out = phone.ctl(&["accept"]);
    assert!(out.status.success());
    let out = send.wait_with_output().unwrap();
    succeeded(&out);
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["transport"], "localsend");
    stop(watch);
    // localsendd keeps file names only (no folders).
    for (sent, name) in [
        (folder.join("sub/a.jpg"), "a.jpg"),
        (folder.join("b.txt"), "b.txt"),
        (src.path().join("single.bin"), "single.bin"),
    ] {
        assert_eq!(
            sha256(&phone.downloads().join(name)),
            sha256(&sent),
            "{name}"
        );
    }

    // localsendd -> lanshare: waits in `share transfers` until accepted.
    let out = phone.ctl(&[
        "send",
        src.path().join("single.bin").to_str().unwrap(),
        folder.join("b.txt").to_str().unwrap(),
        "--to",
        "nas",
    ]);
    succeeded(&out);
    let offer = nas.wait_transfer("the offer from localsendd waits", |t| {
        t["direction"] == "in" && t["state"] == "pending"
    });
    assert_eq!(offer["peer"], "phone");
    assert_eq!(offer["transport"], "localsend");
    assert!(tree(&nas.download).is_empty());
    nas.accept_offer(&offer);
    nas.wait_transfer("received from localsendd", |t| {
        t["id"] == offer["id"] && t["state"] == "done"
    });
    assert_same_file(
        &src.path().join("single.bin"),
        &nas.download.join("single.bin"),
    );
    assert_same_file(&folder.join("b.txt"), &nas.download.join("b.txt"));
    assert_eq!(phone.wait_result("sent")["kind"], "sent");
}

#[test]
#[ignore = "needs root: network namespaces (and localsendd from the Python registry)"]
fn a_rejection_is_403_at_the_sender_both_ways() {
    let Some(venv) = venv() else { return };
    let lan = lan(2);
    let nas = lanshare(&lan, 0, "nas", "ask", &[]);
    let phone = Localsendd::start(&lan, 1, venv, "phone", &[]);
    wait_listed(&nas, &phone.fingerprint());
    let file = tempfile::NamedTempFile::new().unwrap();
    random_file(file.path(), 1000, 1);

    let watch = phone.attach();
    let send = std::process::Command::new(crate::common::share_bin())
        .args(["send", "phone"])
        .arg(file.path())
        .env("SHARE_SOCKET", &nas.socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    phone.wait_incoming();
    assert!(phone.ctl(&["reject"]).status.success());
    let out = send.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("rejected"), "{err}");
    stop(watch);

    let out = phone.ctl(&["send", file.path().to_str().unwrap(), "--to", "nas"]);
    assert!(out.status.success());
    let offer = nas.wait_transfer("the offer waits", |t| t["state"] == "pending");
    assert!(
        nas.cli(&["reject", offer["id"].as_str().unwrap()])
            .status
            .success()
    );
    let result = phone.wait_result("declined");
    assert_eq!(result["kind"], "declined", "{result}");
    assert_eq!(result["code"], 403);
    assert!(tree(&nas.download).is_empty());
}

#[test]
#[ignore = "needs root: network namespaces (and localsendd from the Python registry)"]
fn a_pin_is_401_until_given_both_ways() {
    let Some(venv) = venv() else { return };
    let lan = lan(2);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[localsend]\nenabled = true\npin = \"2468\"\n").unwrap();
    let nas = lan
        .daemon(0, "nas")
        .accept("all")
        .args(&["--config", config.to_str().unwrap()])
        .spawn();
    let phone = Localsendd::start(&lan, 1, venv, "phone", &["--unattended", "--pin", "1357"]);
    wait_listed(&nas, &phone.fingerprint());
    let file = dir.path().join("x.bin");
    random_file(&file, 1000, 1);

    let out = nas.cli(&["send", "phone", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--pin"), "{err}");
    let out = nas.cli(&["send", "phone", "--pin", "1357", file.to_str().unwrap()]);
    succeeded(&out);
    assert_eq!(sha256(&phone.downloads().join("x.bin")), sha256(&file));

    let out = phone.ctl(&[
        "send",
        file.to_str().unwrap(),
        "--to",
        "nas",
        "--pin",
        "0000",
    ]);
    assert!(out.status.success());
    let result = phone.wait_result("pin_required");
    assert_eq!(result["code"], 401, "{result}");
    assert!(phone.ctl(&["dismiss"]).status.success());
    let out = phone.ctl(&[
        "send",
        file.to_str().unwrap(),
        "--to",
        "nas",
        "--pin",
        "2468",
    ]);
    assert!(out.status.success());
    assert_eq!(phone.wait_result("sent")["kind"], "sent");
    assert_same_file(&file, &nas.download.join("x.bin"));
}

#[test]
#[ignore = "needs root: network namespaces (and localsendd from the Python registry)"]
fn either_side_can_cancel_a_running_transfer() {
    let Some(venv) = venv() else { return };
    let lan = lan(2);
    // 40 Mbit/s on both ends: 24 MiB take about five seconds.
    for i in 0..2 {
        crate::common::netns::in_ns(
            &lan.hosts[i],
            &[
                "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "40mbit", "burst",
                "64kb", "latency", "400ms",
            ],
        );
    }
    let nas = lanshare(&lan, 0, "nas", "all", &[]);
    let phone = Localsendd::start(&lan, 1, venv, "phone", &["--unattended"]);
    wait_listed(&nas, &phone.fingerprint());
    let file = tempfile::NamedTempFile::new().unwrap();
    random_file(file.path(), 24 << 20, 1);

    // The phone cancels what lanshare sends.
    let send = std::process::Command::new(crate::common::share_bin())
        .args(["send", "phone", "--json"])
        .arg(file.path())
        .env("SHARE_SOCKET", &nas.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("localsendd receives", Duration::from_secs(30), || {
        let state = phone.state();
        // localsendd's --unattended accepts only while no control client
        // is attached, and this poll is one: an offer that arrived during
        // a poll waits for an answer, which the poll gives.
        if state["incoming"].is_object() && state["active"].is_null() {
            let _ = phone.ctl(&["accept"]);
        }
        let active = &state["active"];
        (active["phase"] == "transferring" && active["bytesDone"].as_u64()? > 0).then_some(())
    });
    assert!(phone.ctl(&["cancel"]).status.success());
    let out = send.wait_with_output().unwrap();
    assert!(!out.status.success(), "the send must fail");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["kind"], "cancelled", "{result}");
    nas.wait_transfer("the send is recorded as cancelled", |t| {
        t["direction"] == "out" && t["state"] == "cancelled"
    });

    // lanshare cancels what the phone sends.
    assert!(phone.ctl(&["dismiss"]).status.success());
    let out = phone.ctl(&["send", file.path().to_str().unwrap(), "--to", "nas"]);
    assert!(out.status.success());
    let incoming = nas.wait_transfer("bytes arrive from the phone", |t| {
        t["direction"] == "in" && t["state"] == "active" && t["bytes_done"].as_u64() > Some(0)
    });
    assert!(
        nas.cli(&["cancel", incoming["id"].as_str().unwrap()])
            .status
            .success()
    );
    let result = phone.wait_result("remote_cancelled");
    assert_eq!(result["kind"], "remote_cancelled", "{result}");
    nas.wait_transfer("cancelled here", |t| {
        t["id"] == incoming["id"] && t["state"] == "cancelled"
    });
    assert!(
        tree(&nas.download).is_empty(),
        "a cancelled transfer leaves nothing: {:?}",
        tree(&nas.download)
    );
}

#[test]
#[ignore = "needs root: network namespaces (and localsendd from the Python registry)"]
fn a_text_message_reaches_localsendd() {
    let Some(venv) = venv() else { return };
    let lan = lan(2);
    let nas = lanshare(&lan, 0, "nas", "all", &[]);
    let phone = Localsendd::start(&lan, 1, venv, "phone", &["--unattended"]);
    wait_listed(&nas, &phone.fingerprint());
    let out = nas.cli(&["send", "phone", "--text", "dinner at eight"]);
    succeeded(&out);
    // localsendd has no message view: it keeps the text as a file.
    let got = std::fs::read_to_string(phone.downloads().join("message.txt")).unwrap();
    assert_eq!(got, "dinner at eight");
}

#[test]
#[ignore = "needs root: network namespaces (and localsendd from the Python registry)"]
fn a_receiver_that_requires_client_certificates_gets_ours() {
    let Some(venv) = venv() else { return };
    let lan = lan(2);
    let nas = lanshare(&lan, 0, "nas", "all", &[]);
    let cert = nas.state.join("localsend-cert.pem");
    let phone = Localsendd::start_with(&lan, 1, venv, "phone", &["--unattended"], Some(&cert));
    wait_listed(&nas, &phone.fingerprint());
    let file = tempfile::NamedTempFile::new().unwrap();
    random_file(file.path(), 3 << 20, 7);
    let out = nas.cli(&["send", "phone", file.path().to_str().unwrap()]);
    succeeded(&out);
    let name = file.path().file_name().unwrap();
    assert_eq!(sha256(&phone.downloads().join(name)), sha256(file.path()));
}
