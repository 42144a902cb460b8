//! Discovery between hosts of a virtual LAN (network namespaces, root
//! only): daemons find each other over mDNS by name and device ID, files go
//! by peer name, an idle LAN stays quiet, a peer that stops (cleanly or
//! not) leaves the peer table in time while live ones stay, and colliding
//! names are resolved by device-ID prefix.
//!
//! Timings are printed as `MEASURED:` lines (`--nocapture` shows them).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::netns::{Lan, has_id, peer_with_id, peers, wait_peers};
use crate::common::{TestDaemon, assert_same_file, random_file, tree};

/// A started peer must be listed within ~2 s; the hard limit leaves room
/// for a loaded machine.
const APPEAR_LIMIT: Duration = Duration::from_secs(5);
/// A peer that said goodbye must be gone within ~2 s (hard limit 5 s).
const GOODBYE_LIMIT: Duration = Duration::from_secs(5);
/// A peer that vanished without goodbye is checked once it has not been
/// heard for 81-88 s and dropped 3 s later: at most 91 s after its last
/// announcement (see `discovery::liveness`); 9 s of slack for a loaded
/// machine.
const SILENT_LIMIT: Duration = Duration::from_secs(100);
/// A live peer is heard at least every 75 s (its periodic announcements).
const HEARD_LIMIT_S: u64 = 75 + 5;
/// A send to a peer that vanished gives up within this long: its TCP port
/// is refused at once (after QUIC's 250 ms head start), discovery's check
/// gets no answer within 0.5 s and drops it, which ends the dial (about
/// 0.8 s). Without that, QUIC waits out its 3 s connect timeout per
/// address; the limit is below that, with room for a loaded machine.
const FAIL_FAST_LIMIT: Duration = Duration::from_millis(2500);
/// After a failed connection the peer is checked and dropped if it does
/// not answer within 3 s; 3 s of slack.
const CHECK_LIMIT: Duration = Duration::from_secs(6);

/// First 8 characters of a device ID, as the daemon shows it in messages.
fn short(id: &str) -> String {
    id.replace('-', "").chars().take(8).collect()
}

/// The `addresses` of a `share peers` entry.
fn addresses(entry: &Value) -> Vec<String> {
    entry["addresses"]
        .as_array()
        .expect("addresses is a list")
        .iter()
        .map(|a| a.as_str().expect("address is a string").to_owned())
        .collect()
}

/// Starts alpha on host 0 and beta on host 1 and waits until alpha lists
/// beta. Returns both, their IDs and how long discovery took.
fn alpha_and_beta(lan: &Lan) -> (TestDaemon, TestDaemon, String, String, Duration) {
    let a = lan.daemon(0, "alpha").accept("all").spawn();
    let b = lan.daemon(1, "beta").accept("all").spawn();
    let ready = Instant::now();
    let (a_id, b_id) = (a.id(), b.id());
    assert_ne!(a_id, b_id, "two fresh daemons got the same device ID");
    let (_, took) = wait_peers(&a, ready, APPEAR_LIMIT, "beta to appear", |p| {
        has_id(p, &b_id)
    });
    (a, b, a_id, b_id, took)
}

#[test]
#[ignore = "needs root: network namespaces"]
fn two_hosts_discover_each_other_and_send_by_name() {
    let lan = Lan::new(2);
    let a = lan.daemon(0, "alpha").accept("all").spawn();
    let b = lan.daemon(1, "beta").accept("all").spawn();
    let ready = Instant::now();
    let (a_id, b_id) = (a.id(), b.id());
    assert_ne!(a_id, b_id);

    let (list, took) = wait_peers(&a, ready, APPEAR_LIMIT, "beta to appear", |p| {
        has_id(p, &b_id)
    });
    eprintln!(
        "MEASURED: alpha lists beta {} ms after both daemons were ready",
        took.as_millis()
    );
    let entry = peer_with_id(&list, &b_id).unwrap();
    assert_eq!(entry["name"], "beta", "{entry:#}");
    assert_eq!(entry["source"], "mdns", "{entry:#}");
    assert_eq!(entry["tcp_port"], b.port, "TXT tcp: {entry:#}");
    let b_addr = lan.addr_of(1, &b);
    assert!(
        addresses(entry).contains(&b_addr),
        "beta's LAN address {b_addr} missing: {entry:#}"
    );
    assert!(!has_id(&list, &a_id), "alpha lists itself: {list:#?}");
    assert_eq!(list.len(), 1, "only beta is on this LAN: {list:#?}");

    // And the other way round.
    let (list, took) = wait_peers(&b, ready, APPEAR_LIMIT, "alpha to appear", |p| {
        has_id(p, &a_id)
    });
    eprintln!(
        "MEASURED: beta lists alpha {} ms after both daemons were ready",
        took.as_millis()
    );
    let entry = peer_with_id(&list, &a_id).unwrap();
    assert_eq!(entry["name"], "alpha");
    assert!(addresses(entry).contains(&lan.addr_of(0, &a)), "{entry:#}");
    assert!(!has_id(&list, &b_id), "beta lists itself: {list:#?}");

    // Send by name.
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("report.bin");
    random_file(&file, 3 << 20, 11);
    let result = a.json(&["send", "beta", file.to_str().unwrap()]);
    assert_eq!(result["status"], "done", "{result:#}");
    assert_eq!(result["peer"], "beta", "{result:#}");
    assert_eq!(result["peer_id"], b_id.as_str(), "{result:#}");
    assert_eq!(result["transport"], "quic", "{result:#}");
    assert_eq!(result["files"], 1, "{result:#}");
    assert_eq!(result["bytes"], 3 << 20, "{result:#}");
    eprintln!("MEASURED: send by name took {} s", result["seconds"]);
    assert_same_file(&file, &b.download.join("report.bin"));
    assert_eq!(tree(&b.download), ["report.bin"]);

    let incoming = b.transfers();
    assert_eq!(incoming.len(), 1, "{incoming:#?}");
    let t = &incoming[0];
    assert_eq!(t["direction"], "in", "{t:#}");
    assert_eq!(t["state"], "done", "{t:#}");
    assert_eq!(t["peer"], "alpha", "{t:#}");
    assert_eq!(t["peer_id"], a_id.as_str(), "{t:#}");
    assert_eq!(t["transport"], "quic", "{t:#}");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn stopped_peer_disappears_within_two_seconds() {
    let lan = Lan::new(2);
    let (a, mut b, _, b_id, _) = alpha_and_beta(&lan);

    let sigterm = Instant::now();
    assert!(b.stop(), "beta did not exit cleanly after SIGTERM");
    let exited = sigterm.elapsed();
    let (list, gone) = wait_peers(&a, sigterm, GOODBYE_LIMIT, "beta to disappear", |p| {
        !has_id(p, &b_id)
    });
    eprintln!(
        "MEASURED: beta exited {} ms after SIGTERM; alpha stopped listing it {} ms after SIGTERM",
        exited.as_millis(),
        gone.as_millis()
    );
    assert!(list.is_empty(), "{list:#?}");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn idle_lan_is_quiet_and_a_silent_peer_is_dropped_while_live_ones_stay() {
    let lan = Lan::new(3);
    lan.count_mdns();
    let a = lan.daemon(0, "alpha").accept("all").spawn();
    let mut b = lan.daemon(1, "beta").accept("all").spawn();
    let c = lan.daemon(2, "gamma").accept("all").spawn();
    let ready = Instant::now();
    let (a_id, b_id, c_id) = (a.id(), b.id(), c.id());
    wait_peers(&a, ready, APPEAR_LIMIT, "beta and gamma", |p| {
        has_id(p, &b_id) && has_id(p, &c_id)
    });

    // Nobody polls anybody: in the 30 s after start-up the LAN carries
    // only the browsers' PTR queries, which back off (1, 2, 4, 8, 16 s
    // apart; one packet per address family). Periodic checks of every
    // peer (the old design) would send several times as many.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(ready.elapsed()));
    let before = lan.mdns_packets();
    std::thread::sleep(Duration::from_secs(30));
    let idle = lan.mdns_packets() - before;
    eprintln!("MEASURED: {idle} mDNS packets in 30 s on an idle LAN of 3");
    assert!(
        idle <= 30,
        "{idle} mDNS packets in 30 s on an idle LAN of 3 daemons"
    );

    // SIGKILL: no goodbye packets, nothing but silence.
    let killed = Instant::now();
    b.kill();
    let (list, gone) = wait_peers(&a, killed, SILENT_LIMIT, "killed beta to disappear", |p| {
        assert!(
            has_id(p, &c_id),
            "alpha dropped gamma, which is alive: {p:#?}"
        );
        !has_id(p, &b_id)
    });
    eprintln!(
        "MEASURED: alpha stopped listing beta {:.1} s after kill -9",
        gone.as_secs_f64()
    );
    assert_eq!(list.len(), 1, "{list:#?}");
    assert!(
        a.wait_logged("peer gone (not heard for over 80 s, no answer to a check)"),
        "alpha should say why it dropped beta"
    );
    // However long that took, gamma was heard from recently: its periodic
    // announcements keep "last heard" current.
    let heard = peer_with_id(&list, &c_id).unwrap()["last_seen_s"]
        .as_u64()
        .unwrap();
    assert!(
        heard <= HEARD_LIMIT_S,
        "gamma last heard {heard} s ago, {} s after start",
        ready.elapsed().as_secs()
    );
    wait_peers(&c, killed, SILENT_LIMIT, "gamma to drop beta", |p| {
        assert!(
            has_id(p, &a_id),
            "gamma dropped alpha, which is alive: {p:#?}"
        );
        !has_id(p, &b_id)
    });

    // Beta comes back (same identity): a send by name right after its
    // start reaches it.
    let b = lan
        .daemon(1, "beta")
        .accept("all")
        .state_dir(&b.state)
        .spawn();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("welcome-back.txt");
    std::fs::write(&file, "hello again\n").unwrap();
    let result = a.json(&["send", "beta", file.to_str().unwrap()]);
    assert_eq!(result["status"], "done", "{result:#}");
    assert_eq!(result["peer_id"], b_id.as_str(), "{result:#}");
    assert_same_file(&file, &b.download.join("welcome-back.txt"));
}

#[test]
#[ignore = "needs root: network namespaces"]
fn send_to_a_vanished_peer_fails_fast_and_drops_it() {
    let lan = Lan::new(2);
    let (a, mut b, _, b_id, _) = alpha_and_beta(&lan);
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f.txt");
    std::fs::write(&file, "too late\n").unwrap();

    // Beta crashes; alpha still lists it (its records have not expired).
    b.kill();
    let killed = Instant::now();
    assert!(has_id(&peers(&a), &b_id));
    let out = a.cli(&["send", "beta", file.to_str().unwrap()]);
    let failed = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "MEASURED: the send failed {:.1} s after kill -9: {}",
        failed.as_secs_f64(),
        stderr.trim()
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "share: cannot connect to beta: it has left the network (every address refused the connection and discovery no longer lists it); `share doctor beta` checks the way there",
        "one sentence and what to run"
    );
    assert!(failed < FAIL_FAST_LIMIT, "the send took {failed:?} to fail");

    // The refused connection made alpha check beta at once: it is
    // dropped now, not when its silence is noticed.
    let checked = Instant::now();
    let (list, gone) = wait_peers(&a, checked, CHECK_LIMIT, "beta to be dropped", |p| {
        !has_id(p, &b_id)
    });
    eprintln!(
        "MEASURED: alpha dropped beta {:.1} s after the failed send",
        gone.as_secs_f64()
    );
    assert!(list.is_empty(), "{list:#?}");
    assert!(
        a.wait_logged("peer gone (no answer to a check after its addresses refused a connection)"),
        "alpha should say why it dropped beta"
    );
}

#[test]
#[ignore = "needs root: network namespaces"]
fn colliding_names_need_a_device_id_prefix() {
    let lan = Lan::new(3);
    let a = lan.daemon(0, "alpha").spawn();
    let t1 = lan.daemon(1, "twin").accept("all").spawn();
    let t2 = lan.daemon(2, "twin").accept("all").spawn();
    let ready = Instant::now();
    let (id1, id2) = (t1.id(), t2.id());
    assert_ne!(id1, id2);

    let (list, took) = wait_peers(&a, ready, APPEAR_LIMIT, "both twins to appear", |p| {
        has_id(p, &id1) && has_id(p, &id2)
    });
    eprintln!(
        "MEASURED: alpha lists both twins {} ms after all were ready",
        took.as_millis()
    );
    assert_eq!(list.len(), 2, "{list:#?}");
    for (id, host, d) in [(&id1, 1, &t1), (&id2, 2, &t2)] {
        let entry = peer_with_id(&list, id).unwrap();
        assert_eq!(entry["name"], "twin", "{entry:#}");
        assert!(
            addresses(entry).contains(&lan.addr_of(host, d)),
            "twin {id} should be reached on host {host}: {entry:#}"
        );
    }

    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f.txt");
    std::fs::write(&file, "for one twin only\n").unwrap();

    let out = a.cli(&["send", "twin", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "ambiguous send: {stderr}");
    assert!(
        stderr.contains("device-ID prefix"),
        "the error should ask for an ID prefix: {stderr}"
    );
    assert!(
        stderr.contains(&short(&id1)) && stderr.contains(&short(&id2)),
        "the error should name both IDs: {stderr}"
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one-line reason: {stderr}"
    );
    assert!(tree(&t1.download).is_empty() && tree(&t2.download).is_empty());

    let prefix = short(&id2);
    let result = a.json(&["send", &prefix, file.to_str().unwrap()]);
    assert_eq!(result["status"], "done", "{result:#}");
    assert_eq!(result["peer"], "twin", "{result:#}");
    assert_eq!(result["peer_id"], id2.as_str(), "{result:#}");
    assert_same_file(&file, &t2.download.join("f.txt"));
    assert!(
        tree(&t1.download).is_empty(),
        "the other twin got the file: {:?}",
        tree(&t1.download)
    );
}
