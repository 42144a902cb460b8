//! lanshare: peer-to-peer file sharing for home and office LANs.
//!
//! A daemon (`share daemon`) advertises itself over mDNS, finds the other
//! daemons on the LAN, and moves files between them over QUIC — or over
//! TLS 1.3 on TCP where UDP is blocked — with self-signed certificates as
//! device identities. The `share` CLI talks to the local daemon over a Unix
//! socket.
//!
//! `ARCHITECTURE.md` at the root of the repository is the map of the
//! modules below: what each one owns, the rules between them, and how a
//! `share send` flows through them. Each module's own documentation says
//! why it is built the way it is.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod describe;
pub mod desktop;
pub mod discovery;
pub mod doctor;
pub mod history;
pub mod identity;
pub mod ids;
pub mod intake;
pub mod localsend;
pub mod outgoing;
pub mod pairing;
pub mod peers;
pub mod protocol;
pub mod queue;
pub mod registry;
pub mod safe_text;
pub mod shutdown;
pub mod state_file;
pub mod store;
pub mod subscriptions;
pub mod tally;
pub mod transfer;
pub mod transport;
