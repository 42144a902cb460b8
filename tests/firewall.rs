//! The firewall definitions shipped in `systemd/`: they open exactly the
//! default service port (UDP and TCP) and mDNS, or, for the
//! `lanshare-localsend` variants, LocalSend's port (TCP and UDP); and the
//! package installs them where firewalld and ufw look.

use std::path::Path;

use lanshare::config::DEFAULT_PORT;
use lanshare::localsend::wire::DEFAULT_PORT as LOCALSEND_PORT;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The `port/protocol` pairs of a firewalld service file.
fn firewalld_ports(xml: &str) -> Vec<String> {
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(
        !xml.contains("<destination"),
        "a destination would restrict every port"
    );
    let mut ports: Vec<String> = xml
        .split("<port ")
        .skip(1)
        .map(|p| {
            let attr = |name: &str| {
                let start = p.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                p[start..start + p[start..].find('"').unwrap()].to_owned()
            };
            format!("{}/{}", attr("port"), attr("protocol"))
        })
        .collect();
    ports.sort();
    ports
}

/// The ports of a ufw application profile called `name`.
fn ufw_ports(profile: &str, name: &str) -> Vec<String> {
    let lines: Vec<&str> = profile.lines().collect();
    assert_eq!(lines[0], format!("[{name}]"));
    for key in ["title=", "description="] {
        assert!(lines.iter().any(|l| l.starts_with(key)), "missing {key}");
    }
    let ports = lines
        .iter()
        .find_map(|l| l.strip_prefix("ports="))
        .expect("ports=");
    let mut ports: Vec<String> = ports.split('|').map(str::to_owned).collect();
    ports.sort();
    ports
}

#[test]
fn the_localsend_variants_open_localsends_port_only() {
    let want = vec![
        format!("{LOCALSEND_PORT}/tcp"),
        format!("{LOCALSEND_PORT}/udp"),
    ];
    let xml = repo_file("systemd/firewalld/lanshare-localsend.xml");
    assert_eq!(firewalld_ports(&xml), want);
    assert!(xml.contains("<short>lanshare-localsend</short>"));
    let profile = repo_file("systemd/ufw/lanshare-localsend");
    assert_eq!(ufw_ports(&profile, "lanshare-localsend"), want);
}

#[test]
fn firewalld_service_opens_the_service_port_and_mdns() {
    let xml = repo_file("systemd/firewalld/lanshare.xml");
    let mut want = vec![
        format!("{DEFAULT_PORT}/tcp"),
        format!("{DEFAULT_PORT}/udp"),
        "5353/udp".to_owned(),
    ];
    want.sort();
    assert_eq!(firewalld_ports(&xml), want);
    assert!(xml.contains("<short>lanshare</short>"));
}

#[test]
fn ufw_profile_opens_the_service_port_and_mdns() {
    let profile = repo_file("systemd/ufw/lanshare");
    let mut want = vec![
        format!("{DEFAULT_PORT}/tcp"),
        format!("{DEFAULT_PORT}/udp"),
        "5353/udp".to_owned(),
    ];
    want.sort();
    assert_eq!(ufw_ports(&profile, "lanshare"), want);
}

#[test]
fn the_package_installs_both() {
    let manifest: toml::Value = toml::from_str(&repo_file("Cargo.toml")).unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap();
    let installed = |src: &str, dest: &str| {
        assets.iter().any(|a| {
            a[0].as_str() == Some(src)
                && a[1].as_str() == Some(dest)
                && a[2].as_str() == Some("644")
        })
    };
    assert!(installed(
        "systemd/firewalld/lanshare.xml",
        "usr/lib/firewalld/services/lanshare.xml"
    ));
    assert!(installed(
        "systemd/ufw/lanshare",
        "etc/ufw/applications.d/lanshare"
    ));
    assert!(installed(
        "systemd/firewalld/lanshare-localsend.xml",
        "usr/lib/firewalld/services/lanshare-localsend.xml"
    ));
    assert!(installed(
        "systemd/ufw/lanshare-localsend",
        "etc/ufw/applications.d/lanshare-localsend"
    ));
}
