//! Throwaway network-namespace LANs for multi-host tests (root only).
//!
//! A [`Lan`] is a bridge in its own "switch" namespace with one veth per
//! host namespace, addresses `10.X.Y.(i+1)/24` chosen per test so parallel
//! tests never collide. Traffic never leaves the namespaces, so mDNS and
//! QUIC run on real (virtual) interfaces without touching the machine's
//! network. Everything is deleted on drop, also when a test panics (and
//! when `Lan::new` itself fails half-way).
//!
//! Declare the `Lan` *before* the daemons that run in it, so the daemons
//! are dropped (killed) first.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Builder, TestDaemon};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its output on failure.
pub(crate) fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` inside namespace `ns`.
pub(crate) fn in_ns(ns: &str, cmd: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(cmd);
    sh(&all);
}

/// A bridged LAN of host namespaces.
pub(crate) struct Lan {
    switch: String,
    /// Whether the switch namespace exists (for a half-built `Lan`).
    switch_created: bool,
    /// Host namespace names, in order.
    pub(crate) hosts: Vec<String>,
    /// IPv4 address of each host.
    pub(crate) addrs: Vec<String>,
}

impl Lan {
    /// Creates `n` hosts on one bridge. Only root can; the tests that use
    /// a `Lan` are `#[ignore = "needs root: network namespaces"]`, so an ordinary `cargo test`
    /// lists them as ignored and `--include-ignored` as root runs them.
    pub(crate) fn new(n: usize) -> Self {
        assert!(
            super::is_root(),
            "network-namespace tests need root: run them as root with `cargo test -- --include-ignored`"
        );
        let id = std::process::id() % 10_000;
        let seq = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("ls{id}x{seq}");
        let subnet = (id as usize * 7 + seq as usize) % 250 + 1;
        // Built in place so that a failure half-way still deletes what
        // exists (Drop runs while the panic unwinds).
        let mut lan = Self {
            switch: format!("{tag}sw"),
            switch_created: false,
            hosts: Vec::new(),
            addrs: Vec::new(),
        };
        sh(&["ip", "netns", "add", &lan.switch]);
        lan.switch_created = true;
        in_ns(&lan.switch, &["ip", "link", "add", "br0", "type", "bridge"]);
        // Without a multicast querier, snooping could stop forwarding mDNS
        // to a port once its membership ages out; a plain hub is simpler.
        in_ns(
            &lan.switch,
            &[
                "ip",
                "link",
                "set",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        );
        in_ns(&lan.switch, &["ip", "link", "set", "br0", "up"]);
        for i in 0..n {
            let host = format!("{tag}h{i}");
            sh(&["ip", "netns", "add", &host]);
            lan.hosts.push(host.clone());
            let outer = format!("v{seq}p{i}");
            sh(&[
                "ip",
                "link",
                "add",
                &outer,
                "netns",
                &lan.switch,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &host,
            ]);
            in_ns(&lan.switch, &["ip", "link", "set", &outer, "master", "br0"]);
            in_ns(&lan.switch, &["ip", "link", "set", &outer, "up"]);
            let addr = format!("10.{}.{}.{}", 100 + seq % 100, subnet, i + 1);
            in_ns(
                &host,
                &["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"],
            );
            in_ns(&host, &["ip", "link", "set", "eth0", "up"]);
            in_ns(&host, &["ip", "link", "set", "lo", "up"]);
            lan.addrs.push(addr);
        }
        lan
    }

    /// A daemon builder for host `i` (mDNS on, inside that namespace).
    pub(crate) fn daemon(&self, i: usize, name: &str) -> Builder {
        TestDaemon::builder(name).netns(&self.hosts[i])
    }

    /// Runs one `nft` command inside host `i` (needs the nftables package).
    pub(crate) fn nft(&self, i: usize, script: &str) {
        in_ns(&self.hosts[i], &["nft", script]);
    }

    /// Loads a multi-line `nft -f` script inside host `i`.
    pub(crate) fn nft_script(&self, i: usize, script: &str) {
        nft_script_in(&self.hosts[i], script);
    }

    /// Runs a command inside host `i` and returns its output (no panic).
    pub(crate) fn run(&self, i: usize, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.hosts[i]])
            .args(cmd)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
    }

    /// Starts counting the mDNS packets (UDP port 5353, IPv4 and IPv6)
    /// that enter the bridge, each once; read with [`Lan::mdns_packets`].
    pub(crate) fn count_mdns(&self) {
        nft_script_in(
            &self.switch,
            "table bridge mdns {
                counter seen {}
                chain count {
                    type filter hook prerouting priority 0; policy accept;
                    ether type { ip, ip6 } udp dport 5353 counter name seen
                }
            }",
        );
    }

    /// mDNS packets on the LAN since [`Lan::count_mdns`].
    pub(crate) fn mdns_packets(&self) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.switch, "nft", "list", "counter"])
            .args(["bridge", "mdns", "seen"])
            .output()
            .expect("run nft");
        let text = String::from_utf8_lossy(&out.stdout);
        let at = text
            .find("packets ")
            .unwrap_or_else(|| panic!("no counter in {text}"));
        text[at + "packets ".len()..]
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad counter in {text}"))
    }

    /// `IP:PORT` of `daemon` running on host `i`.
    pub(crate) fn addr_of(&self, i: usize, daemon: &TestDaemon) -> String {
        format!("{}:{}", self.addrs[i], daemon.port)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let switch = self.switch_created.then_some(&self.switch);
        for ns in self.hosts.iter().chain(switch) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Loads a multi-line `nft -f` script inside namespace `ns`.
fn nft_script_in(ns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write nft script");
    let out = child.wait_with_output().expect("wait for nft");
    assert!(
        out.status.success(),
        "nft -f failed in {ns}: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `share peers --json` of `daemon`.
pub(crate) fn peers(daemon: &TestDaemon) -> Vec<Value> {
    daemon
        .json(&["peers"])
        .as_array()
        .expect("peers is a list")
        .clone()
}

/// Whether a `share peers` entry is the device with this ID.
pub(crate) fn has_id(peers: &[Value], id: &str) -> bool {
    peers.iter().any(|p| p["id"] == id)
}

/// The `share peers` entry with this ID.
pub(crate) fn peer_with_id<'a>(peers: &'a [Value], id: &str) -> Option<&'a Value> {
    peers.iter().find(|p| p["id"] == id)
}

/// Polls `share peers --json` on `daemon` every ~100 ms until `pred` holds
/// (there is no push channel from the daemon to a test). Panics after
/// `limit`. Returns the matching list and the time since `since`.
pub(crate) fn wait_peers(
    daemon: &TestDaemon,
    since: Instant,
    limit: Duration,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let list = peers(daemon);
        if pred(&list) {
            return (list, since.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "{}: timed out after {limit:?} waiting for {what}; peers: {list:#?}",
            daemon.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
