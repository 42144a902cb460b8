//! Which network interfaces mDNS uses: the interface policy.
//!
//! # Why a policy
//!
//! A typical Linux desktop has more virtual interfaces than real ones:
//! `docker0` and one `veth*` per container, `virbr0` for libvirt VMs,
//! `wg0`/`tailscale0` for VPNs. Announcing on them is at best useless
//! (nobody on a container bridge runs lanshare) and at worst wrong: peers
//! learn addresses they cannot reach, a VM bridge leaks the device into
//! guests, and a VPN tunnel announces the device to a remote network. So by
//! default mDNS skips every interface whose name starts with one of
//! [`IGNORED_PREFIXES`] (container, VM-bridge and VPN naming conventions),
//! every point-to-point interface (`IFF_POINTOPOINT`: PPP, most tunnels)
//! and loopback. Matching is by name prefix, so `docker0`, `docker1` and
//! `br-3f2a…` all match; the real LAN interface names (`eth0`, `enp3s0`,
//! `wlan0`, `wlp2s0`, `en0`, `bond0`, `br0`) do not.
//!
//! `share daemon --interface NAME` (repeatable) or `interfaces = [..]` in
//! the config file replaces the policy: exactly the named interfaces are
//! used, whatever their names (so a LAN bridge called `br-lan` can still
//! be chosen).
//!
//! The policy is handed to mdns-sd as a predicate, which it evaluates on
//! every interface check, so an interface that appears later (`docker0`
//! created after the daemon started) is ignored from its first moment, not
//! after some polling delay.
//!
//! [`report`] lists the host's interfaces with the verdict for each, for
//! `share status` and `share doctor`. It uses the same enumeration
//! (`if-addrs`) as mdns-sd, so it shows what discovery sees.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Name prefixes of interfaces mDNS ignores by default, with the kind of
/// network they belong to (shown to the user).
pub const IGNORED_PREFIXES: &[(&str, &str)] = &[
    // Containers.
    ("docker", "container network"),
    ("veth", "container network"),
    ("br-", "container network"),
    ("podman", "container network"),
    ("cni", "container network"),
    ("flannel", "container network"),
    ("cali", "container network"),
    ("cilium", "container network"),
    ("weave", "container network"),
    ("kube", "container network"),
    ("lxc", "container network"),
    ("lxdbr", "container network"),
    ("vxlan", "container network"),
    // Bridges to virtual machines.
    ("virbr", "virtual machine bridge"),
    ("vnet", "virtual machine bridge"),
    ("vboxnet", "virtual machine bridge"),
    ("vmnet", "virtual machine bridge"),
    // VPNs and tunnels.
    ("tun", "VPN or tunnel"),
    ("tap", "VPN or tunnel"),
    ("wg", "VPN or tunnel"),
    ("tailscale", "VPN or tunnel"),
    ("zt", "VPN or tunnel"),
    ("nordlynx", "VPN or tunnel"),
    ("utun", "VPN or tunnel"),
    ("ipsec", "VPN or tunnel"),
    ("ppp", "VPN or tunnel"),
    ("tunl", "VPN or tunnel"),
];

/// Which interfaces mDNS may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfacePolicy {
    /// Exactly these interfaces (`--interface`); empty = the default policy.
    pub only: Vec<String>,
    /// Use loopback too (tests on one host).
    pub allow_loopback: bool,
}

/// One host interface as mDNS sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInterface {
    /// Interface name.
    pub name: String,
    /// Loopback.
    pub loopback: bool,
    /// `IFF_POINTOPOINT`.
    pub point_to_point: bool,
    /// Operationally up.
    pub up: bool,
}

impl InterfacePolicy {
    /// `None` if mDNS uses `intf`, otherwise why not (for the user).
    pub fn ignore_reason(&self, intf: &HostInterface) -> Option<String> {
        if intf.loopback && !self.allow_loopback {
            return Some("loopback".into());
        }
        if !self.only.is_empty() {
            if self.only.contains(&intf.name) {
                return (!intf.up).then(|| "down".into());
            }
            return Some("not selected (--interface / `interfaces` in the config)".into());
        }
        if let Some(kind) = ignored_kind(&intf.name) {
            return Some(format!(
                "{kind} (ignored by default; select it with --interface {})",
                intf.name
            ));
        }
        if intf.point_to_point {
            return Some("point-to-point link (VPN or tunnel)".into());
        }
        if !intf.up {
            return Some("down".into());
        }
        None
    }

    /// Whether mdns-sd must be told to skip an interface called `name`
    /// (the default policy's name rule; mdns-sd itself already skips
    /// point-to-point and down interfaces).
    pub fn ignores_name(&self, name: &str) -> bool {
        if self.only.is_empty() {
            ignored_kind(name).is_some()
        } else {
            !self.only.iter().any(|n| n == name)
        }
    }
}

/// The kind of network an interface name says it belongs to, if it is one
/// the default policy ignores.
pub fn ignored_kind(name: &str) -> Option<&'static str> {
    IGNORED_PREFIXES
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|(_, kind)| *kind)
}

/// One line of the interface report (`share status`, `share doctor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceInfo {
    /// Interface name.
    pub name: String,
    /// Its addresses.
    pub addresses: Vec<String>,
    /// Whether mDNS announces and listens on it.
    pub used: bool,
    /// Why not, when it is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Lists the host's interfaces (those with an address, like mdns-sd) and
/// what `policy` makes of each, sorted: used first, then by name.
pub fn report(policy: &InterfacePolicy) -> Vec<InterfaceInfo> {
    let Ok(list) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    let mut by_name: BTreeMap<String, (HostInterface, Vec<String>)> = BTreeMap::new();
    for intf in list {
        let entry = by_name.entry(intf.name.clone()).or_insert_with(|| {
            (
                HostInterface {
                    name: intf.name.clone(),
                    loopback: intf.is_loopback(),
                    point_to_point: intf.is_p2p(),
                    up: intf.is_oper_up(),
                },
                Vec::new(),
            )
        });
        entry.1.push(intf.ip().to_string());
    }
    classify(policy, by_name.into_values())
}

/// The pure part of [`report`].
pub fn classify(
    policy: &InterfacePolicy,
    interfaces: impl IntoIterator<Item = (HostInterface, Vec<String>)>,
) -> Vec<InterfaceInfo> {
    let mut out: Vec<InterfaceInfo> = interfaces
        .into_iter()
        .map(|(intf, mut addresses)| {
            addresses.sort();
            addresses.dedup();
            let reason = policy.ignore_reason(&intf);
            InterfaceInfo {
                name: intf.name,
                addresses,
                used: reason.is_none(),
                reason,
            }
        })
        .collect();
    out.sort_by(|a, b| b.used.cmp(&a.used).then_with(|| a.name.cmp(&b.name)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intf(name: &str) -> HostInterface {
        HostInterface {
            name: name.into(),
            up: true,
            ..HostInterface::default()
        }
    }

    #[test]
    fn lan_interfaces_are_kept() {
        let policy = InterfacePolicy::default();
        for name in [
            "eth0", "enp3s0", "eno1", "wlan0", "wlp2s0", "en0", "bond0", "br0", "lan",
        ] {
            assert_eq!(policy.ignore_reason(&intf(name)), None, "{name}");
            assert!(!policy.ignores_name(name), "{name}");
        }
    }

    #[test]
    fn virtual_interfaces_are_ignored_by_prefix() {
        let policy = InterfacePolicy::default();
        for name in [
            "docker0",
            "docker_gwbridge",
            "veth1a2b3c",
            "br-3f2a9c1d7e",
            "virbr0",
            "virbr0-nic",
            "vnet3",
            "tun0",
            "tap1",
            "wg0",
            "tailscale0",
            "zt5u4y3x",
            "vboxnet0",
            "vmnet8",
            "lxcbr0",
            "lxdbr0",
            "podman0",
            "cni0",
            "flannel.1",
            "cali123",
            "ppp0",
        ] {
            let reason = policy.ignore_reason(&intf(name));
            assert!(reason.is_some(), "{name} must be ignored");
            assert!(
                reason.as_deref().is_some_and(|r| r.contains("--interface")),
                "{reason:?}"
            );
            assert!(policy.ignores_name(name), "{name}");
        }
        assert_eq!(ignored_kind("docker0"), Some("container network"));
        assert_eq!(ignored_kind("wg-home"), Some("VPN or tunnel"));
        assert_eq!(ignored_kind("virbr1"), Some("virtual machine bridge"));
    }

    #[test]
    fn point_to_point_loopback_and_down() {
        let policy = InterfacePolicy::default();
        let p2p = HostInterface {
            point_to_point: true,
            ..intf("corp")
        };
        assert!(
            policy
                .ignore_reason(&p2p)
                .is_some_and(|r| r.contains("point-to-point"))
        );
        let lo = HostInterface {
            loopback: true,
            ..intf("lo")
        };
        assert_eq!(policy.ignore_reason(&lo).as_deref(), Some("loopback"));
        let tests = InterfacePolicy {
            allow_loopback: true,
            ..InterfacePolicy::default()
        };
        assert_eq!(tests.ignore_reason(&lo), None);
        let down = HostInterface {
            up: false,
            ..intf("eth1")
        };
        assert_eq!(policy.ignore_reason(&down).as_deref(), Some("down"));
    }

    #[test]
    fn explicit_selection_is_exact() {
        let policy = InterfacePolicy {
            only: vec!["docker0".into(), "br-lan".into()],
            allow_loopback: false,
        };
        assert_eq!(policy.ignore_reason(&intf("docker0")), None);
        assert_eq!(policy.ignore_reason(&intf("br-lan")), None);
        assert!(!policy.ignores_name("docker0"));
        assert!(policy.ignores_name("eth0"));
        assert!(
            policy
                .ignore_reason(&intf("eth0"))
                .is_some_and(|r| r.contains("not selected"))
        );
        // A prefix is not a selection.
        assert!(policy.ignores_name("docker"));
    }

    #[test]
    fn report_groups_addresses_and_sorts_used_first() {
        let policy = InterfacePolicy::default();
        let out = classify(
            &policy,
            vec![
                (intf("docker0"), vec!["172.17.0.1".into()]),
                (
                    intf("eth0"),
                    vec!["fe80::1".into(), "10.0.0.2".into(), "10.0.0.2".into()],
                ),
            ],
        );
        assert_eq!(out[0].name, "eth0");
        assert!(out[0].used);
        assert_eq!(out[0].addresses, ["10.0.0.2", "fe80::1"]);
        assert_eq!(out[1].name, "docker0");
        assert!(!out[1].used);
        let json = serde_json::to_value(&out[0]).unwrap_or_default();
        assert!(json.get("reason").is_none(), "{json}");
    }
}
