//! Integration tests: one binary (ripgrep-style) so the heavy dependencies
//! link once. Loopback tests run real daemons with `--no-mdns`; namespace
//! tests (root) build their own virtual LANs.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

mod cli;
mod control;
mod desktop;
mod discovery;
mod docs;
mod doctor;
mod durability;
mod events;
mod fallback;
mod firewall;
mod flood;
mod history;
mod hostile;
mod localsend;
mod localsend_hostile;
mod localsend_interop;
mod loopback_fallback;
mod memory;
mod pairing;
mod partial;
mod peer_text;
mod peers;
mod receive;
mod robustness;
mod security;
mod send_tree;
mod service_stop;
mod systemd;
mod text;
mod transfer;
mod watch;
