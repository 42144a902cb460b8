//! `share doctor` and the interface policy. Loopback tests (any user):
//! a stopped daemon, the connect-back probe and its rate limit. Namespace
//! tests (root): all green on a healthy LAN; "UDP blocked, TCP works" and
//! an asymmetric path named as such; multicast dropped named as a
//! discovery problem with `share peers add` as the fix; a host with a
//! `docker0` interface does not announce on it.
//!
//! Timings are printed as `MEASURED:` lines (`--nocapture` shows them).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::netns::{Lan, has_id, in_ns, peer_with_id, peers, sh, wait_peers};
use crate::common::{TestDaemon, eventually, share_bin};

/// Time allowed for a started peer to be listed.
const APPEAR_LIMIT: Duration = Duration::from_secs(5);

/// `share doctor ARGS --json` on `d`: whether it exited 0, and the report.
fn doctor(d: &TestDaemon, args: &[&str]) -> (bool, Value) {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    all.push("--json");
    let started = Instant::now();
    let out = d.cli(&all);
    eprintln!(
        "MEASURED: share doctor {args:?} on {} took {} ms",
        d.name,
        started.elapsed().as_millis()
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor output is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        report["ok"].as_bool(),
        Some(out.status.success()),
        "`ok` and the exit status disagree: {report:#}"
    );
    (out.status.success(), report)
}

/// The check called `name`.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"))
}

/// Checks with this verdict.
fn with_verdict<'a>(report: &'a Value, verdict: &str) -> Vec<&'a Value> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == verdict)
        .collect()
}

fn text(c: &Value) -> String {
    format!(
        "{} {}",
        c["message"].as_str().unwrap_or(""),
        c["fix"].as_str().unwrap_or("")
    )
}

#[test]
fn doctor_without_a_daemon_says_how_to_start_it() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(share_bin())
        .args(["doctor", "--json"])
        .env("SHARE_SOCKET", home.path().join("none.sock"))
        .env("HOME", home.path())
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("STATE_DIRECTORY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let daemon = check(&report, "daemon");
    assert_eq!(daemon["verdict"], "fail", "{report:#}");
    assert!(text(daemon).contains("share daemon"), "{daemon:#}");
    assert_eq!(check(&report, "identity")["verdict"], "warn", "{report:#}");

    // Human output: one line per check, the fix underneath.
    let out = Command::new(share_bin())
        .arg("doctor")
        .env("SHARE_SOCKET", home.path().join("none.sock"))
        .env("HOME", home.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.starts_with("fail  daemon"), "{human}");
    assert!(human.contains("→ start it"), "{human}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed"));
}

#[test]
fn doctor_probe_on_loopback_and_its_rate_limit() {
    let a = TestDaemon::start("alpha");
    let b = TestDaemon::start("beta");
    let (ok, report) = doctor(&a, &[&b.addr()]);
    let name = format!("reach {}", b.addr());
    let reach = check(&report, &name);
    assert_eq!(reach["verdict"], "ok", "{report:#}");
    let r = &report["reach"];
    for key in ["udp_out", "tcp_out", "udp_in", "tcp_in"] {
        assert_eq!(r[key], true, "{key}: {r:#}");
    }
    assert_eq!(r["name"], "beta", "{r:#}");
    assert_eq!(r["id"], b.id().as_str(), "{r:#}");
    // --no-mdns: discovery is a warning, not a failure.
    assert!(with_verdict(&report, "fail").is_empty(), "{report:#}");
    assert!(ok);

    // A second probe right away is refused by the peer's rate limit, and
    // said so; the outbound checks still run.
    let (_, report) = doctor(&a, &[&b.addr()]);
    let reach = check(&report, &name);
    assert_eq!(reach["verdict"], "warn", "{report:#}");
    let errors = report["reach"]["errors"].to_string();
    assert!(
        errors.contains("one reachability probe per 5 s"),
        "{errors}"
    );
    assert_eq!(report["reach"]["udp_out"], true);
}

#[test]
#[ignore = "needs root: network namespaces"]
fn doctor_is_green_on_a_healthy_lan() {
    let lan = Lan::new(2);
    let a = lan.daemon(0, "alpha").accept("all").spawn();
    let b = lan.daemon(1, "beta").accept("all").spawn();
    let (a_id, b_id) = (a.id(), b.id());
    let ready = Instant::now();
    wait_peers(&a, ready, APPEAR_LIMIT, "beta", |p| has_id(p, &b_id));
    wait_peers(&b, ready, APPEAR_LIMIT, "alpha", |p| has_id(p, &a_id));
    // Until mDNS has settled the doctor says so; wait for its verdict.
    let (ok, report) = eventually("mDNS to settle", Duration::from_secs(10), || {
        let (ok, report) = doctor(&a, &[]);
        (!report.to_string().contains("has not settled yet")).then_some((ok, report))
    });
    for name in [
        "daemon",
        "identity",
        "listening",
        "interfaces",
        "multicast eth0",
        "discovery",
    ] {
        assert_eq!(check(&report, name)["verdict"], "ok", "{name}: {report:#}");
    }
    assert!(text(check(&report, "interfaces")).contains("eth0"));
    assert!(text(check(&report, "multicast eth0")).contains("beta"));
    assert_ne!(check(&report, "download dir")["verdict"], "fail");
    assert!(with_verdict(&report, "fail").is_empty(), "{report:#}");
    assert!(ok, "{report:#}");

    let (ok, report) = doctor(&a, &["beta"]);
    assert!(ok, "{report:#}");
    assert_eq!(check(&report, "reach beta")["verdict"], "ok", "{report:#}");
    assert_eq!(
        check(&report, "discovery beta")["verdict"],
        "ok",
        "{report:#}"
    );
    let r = &report["reach"];
    for key in ["udp_out", "tcp_out", "udp_in", "tcp_in", "mdns"] {
        assert_eq!(r[key], true, "{key}: {r:#}");
    }
    assert!(
        with_verdict(&report, "warn")
            .iter()
            .all(|c| c["check"] == "udp buffers"),
        "only the host's buffer limits may warn on a healthy LAN: {report:#}"
    );

    // Human output (no peer: beta answers one probe per 5 s).
    let human = String::from_utf8_lossy(&a.cli(&["doctor"]).stdout).into_owned();
    assert!(human.contains("ok    multicast eth0"), "{human}");
    assert!(human.contains("1 peer answers (beta)"), "{human}");
}

/// Drops UDP to `port` arriving on the host it is loaded on.
fn block_udp(port: u16) -> String {
    format!(
        "table inet lanshare_doctor {{
            chain input {{ type filter hook input priority 0; policy accept; udp dport {port} counter drop; }}
        }}"
    )
}

#[test]
#[ignore = "needs root: network namespaces"]
fn doctor_names_udp_blocked_and_asymmetric_paths() {
    let lan = Lan::new(2);
    let a = lan.daemon(0, "alpha").accept("all").spawn();
    let b = lan.daemon(1, "beta").accept("all").spawn();
    let b_id = b.id();
    wait_peers(&a, Instant::now(), APPEAR_LIMIT, "beta", |p| {
        has_id(p, &b_id)
    });

    // UDP to beta's service port is dropped on the path (both directions
    // of QUIC die there: alpha's packets in, beta's replies are not even
    // answered). TCP is untouched.
    lan.nft_script(1, &block_udp(b.port));
    let probed = Instant::now();
    let (ok, report) = doctor(&a, &["beta"]);
    assert!(!ok, "{report:#}");
    let reach = check(&report, "reach beta");
    assert_eq!(reach["verdict"], "fail", "{report:#}");
    assert!(text(reach).contains("UDP blocked, TCP works"), "{reach:#}");
    let r = &report["reach"];
    assert_eq!(r["udp_out"], false, "{r:#}");
    assert_eq!(r["tcp_out"], true, "{r:#}");
    assert_eq!(r["udp_in"], false, "{r:#}");
    assert_eq!(r["tcp_in"], true, "{r:#}");
    let human = String::from_utf8_lossy(&a.cli(&["doctor", "beta"]).stdout).into_owned();
    assert!(human.contains("UDP blocked, TCP works"), "{human}");
    lan.nft(1, "delete table inet lanshare_doctor");

    // Now alpha's (stateful, like firewalld or ufw) firewall drops new
    // connections to its own service port: alpha reaches beta, beta
    // cannot connect back.
    lan.nft_script(
        0,
        &format!(
            "table inet lanshare_doctor {{
                chain input {{ type filter hook input priority 0; policy accept;
                    ct state established,related accept;
                    udp dport {port} counter drop; tcp dport {port} counter drop; }}
            }}",
            port = a.port
        ),
    );
    // Beta answers one probe per 5 s per device.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(probed.elapsed()));
    let (ok, report) = doctor(&a, &["beta"]);
    assert!(!ok, "{report:#}");
    let reach = check(&report, "reach beta");
    assert_eq!(reach["verdict"], "fail", "{report:#}");
    assert!(text(reach).contains("asymmetric"), "{reach:#}");
    assert!(text(reach).contains("cannot connect back"), "{reach:#}");
    let r = &report["reach"];
    assert_eq!(r["udp_out"], true, "{r:#}");
    assert_eq!(r["tcp_out"], true, "{r:#}");
    assert_eq!(r["udp_in"], false, "{r:#}");
    assert_eq!(r["tcp_in"], false, "{r:#}");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn doctor_names_discovery_when_multicast_is_dropped() {
    let lan = Lan::new(2);
    // Beta's own firewall drops mDNS in and out; alpha drops only what
    // comes from beta's address (as a network that filters multicast
    // between clients would).
    lan.nft_script(
        1,
        "table inet lanshare_doctor {
            chain input { type filter hook input priority 0; policy accept; udp dport 5353 counter drop; }
            chain output { type filter hook output priority 0; policy accept; udp dport 5353 counter drop; }
        }",
    );
    lan.nft_script(
        0,
        &format!(
            "table inet lanshare_doctor {{
                chain input {{ type filter hook input priority 0; policy accept;
                    ip saddr {} udp dport 5353 counter drop; }}
            }}",
            lan.addrs[1]
        ),
    );
    let a = lan.daemon(0, "alpha").accept("all").spawn();
    let b = lan.daemon(1, "beta").accept("all").spawn();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        peers(&a).is_empty() && peers(&b).is_empty(),
        "mDNS got through"
    );

    // Beta: its own announcement never comes back.
    let (ok, report) = doctor(&b, &[]);
    assert!(!ok, "{report:#}");
    let multicast = check(&report, "multicast eth0");
    assert_eq!(multicast["verdict"], "fail", "{report:#}");
    assert!(
        text(multicast).contains("discovery is blocked"),
        "{multicast:#}"
    );
    assert!(text(multicast).contains("share peers add"), "{multicast:#}");

    // Alpha: multicast works locally, nobody answers; with beta's address
    // the doctor proves beta is there and names discovery.
    let (_, report) = doctor(&a, &[]);
    let multicast = check(&report, "multicast eth0");
    assert_eq!(multicast["verdict"], "warn", "{report:#}");
    assert!(text(multicast).contains("share peers add"), "{multicast:#}");
    let beta = lan.addr_of(1, &b);
    let (ok, report) = doctor(&a, &[&beta]);
    assert!(!ok, "{report:#}");
    assert_eq!(
        check(&report, &format!("reach {beta}"))["verdict"],
        "ok",
        "{report:#}"
    );
    let discovery = check(&report, &format!("discovery {beta}"));
    assert_eq!(discovery["verdict"], "fail", "{report:#}");
    assert!(
        text(discovery).contains("discovery is not working"),
        "{discovery:#}"
    );
    assert!(
        text(discovery).contains(&format!("share peers add {beta}")),
        "{discovery:#}"
    );
    assert_eq!(report["reach"]["mdns"], false);

    // Following the advice works, and the doctor then sees a peer found
    // only by unicast as a discovery failure too.
    let out = a.cli(&["peers", "add", &beta]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, report) = doctor(&a, &[]);
    let discovery = check(&report, "discovery");
    assert_eq!(discovery["verdict"], "fail", "{report:#}");
    assert!(text(discovery).contains("beta"), "{discovery:#}");
}

/// A network namespace deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// The `addresses` of a `share peers` entry.
fn addresses(entry: &Value) -> Vec<String> {
    entry["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn host_does_not_announce_on_a_docker0_interface() {
    let lan = Lan::new(2);
    // Host 1 gets a `docker0` veth to a third namespace, which can reach
    // it only over that link.
    let ns = Netns(format!(
        "ls{}dk{}",
        std::process::id() % 10_000,
        lan.hosts.len()
    ));
    sh(&["ip", "netns", "add", &ns.0]);
    sh(&[
        "ip",
        "link",
        "add",
        "docker0",
        "netns",
        &lan.hosts[1],
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &ns.0,
    ]);
    in_ns(
        &lan.hosts[1],
        &["ip", "addr", "add", "172.31.7.1/24", "dev", "docker0"],
    );
    in_ns(&lan.hosts[1], &["ip", "link", "set", "docker0", "up"]);
    in_ns(
        &ns.0,
        &["ip", "addr", "add", "172.31.7.2/24", "dev", "eth0"],
    );
    in_ns(&ns.0, &["ip", "link", "set", "eth0", "up"]);
    in_ns(&ns.0, &["ip", "link", "set", "lo", "up"]);

    let a = lan.daemon(0, "alpha").accept("all").spawn();
    let mut b = lan.daemon(1, "beta").accept("all").spawn();
    let c = TestDaemon::builder("container")
        .netns(&ns.0)
        .accept("all")
        .spawn();
    let b_id = b.id();

    // Beta announces on eth0 (alpha sees it), without its docker0 address.
    let (list, _) = wait_peers(&a, Instant::now(), APPEAR_LIMIT, "beta on eth0", |p| {
        has_id(p, &b_id)
    });
    let seen = addresses(peer_with_id(&list, &b_id).unwrap());
    assert!(
        seen.iter().all(|a| !a.starts_with("172.31.7.")),
        "beta announced its docker0 address: {seen:?}"
    );
    // The namespace behind docker0 never hears of beta.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(!has_id(&peers(&c), &b_id), "beta was announced on docker0");
        std::thread::sleep(Duration::from_millis(250));
    }
    let status = b.json(&["status"]);
    let interfaces = status["interfaces"].as_array().unwrap();
    let docker = interfaces.iter().find(|i| i["name"] == "docker0").unwrap();
    assert_eq!(docker["used"], false, "{status:#}");
    assert!(
        docker["reason"].as_str().unwrap().contains("container"),
        "{docker:#}"
    );
    let eth0 = interfaces.iter().find(|i| i["name"] == "eth0").unwrap();
    assert_eq!(eth0["used"], true, "{status:#}");
    let human = String::from_utf8_lossy(&b.cli(&["status"]).stdout).into_owned();
    assert!(
        human.contains("docker0: ignored, container network"),
        "{human}"
    );

    // Control: selected explicitly, docker0 is used and the link works.
    assert!(b.stop());
    let b = lan
        .daemon(1, "beta")
        .accept("all")
        .args(&["--interface", "docker0"])
        .spawn();
    let b_id = b.id();
    wait_peers(&c, Instant::now(), APPEAR_LIMIT, "beta on docker0", |p| {
        has_id(p, &b_id)
    });
    let status = b.json(&["status"]);
    let eth0 = status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .unwrap()
        .clone();
    assert_eq!(
        eth0["used"], false,
        "--interface selects exactly: {status:#}"
    );
}

/// `share doctor PEER` with a name that names no single device says so,
/// not that the network or its ports are at fault.
#[test]
fn doctor_with_an_unknown_or_ambiguous_name_says_so() {
    let a = TestDaemon::start("alpha");
    let twins = [TestDaemon::start("twin"), TestDaemon::start("twin")];
    for twin in &twins {
        let out = a.cli(&["peers", "add", &twin.addr()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (peer, says) in [
        ("twin", "2 devices match \"twin\""),
        ("nobody", "\"nobody\""),
    ] {
        let (ok, report) = doctor(&a, &[peer]);
        assert!(!ok, "{report:#}");
        let reach = check(&report, &format!("reach {peer}"));
        assert_eq!(reach["verdict"], "fail", "{report:#}");
        let said = text(reach);
        assert!(said.contains(says), "{said}");
        for wrong in ["cannot connect", "UDP or TCP", "port"] {
            assert!(!said.contains(wrong), "{said}");
        }
        assert_eq!(
            report["reach"]["unresolved"].as_str(),
            reach["message"].as_str()
        );
    }
}
