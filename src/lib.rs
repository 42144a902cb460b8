//! lanshare: peer-to-peer file sharing for home and office LANs.
//!
//! A daemon (`share daemon`) advertises itself over mDNS, finds the other
//! daemons on the LAN, and moves files between them over QUIC — or over
//! TLS 1.3 on TCP where UDP is blocked — with self-signed certificates as
//! device identities. The `share` CLI talks to the local daemon over a Unix
//! socket.
//!
//! # Layout
//! Data flows top to bottom when sending and bottom to top when receiving;
//! no module reaches upward.
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | argument parsing and human/JSON output |
//! | [`control`] | the CLI ↔ daemon socket protocol |
//! | [`daemon`] | the runtime: composition, command handling, shutdown |
//! | [`config`] | file + flags + defaults |
//! | [`discovery`] | mDNS advertisement and the live peer table |
//! | [`transfer`] | offer/consent/data/done state machines, progress |
//! | [`store`] | the download directory: sanitised paths, staging, atomic rename |
//! | [`protocol`] | wire messages and the framing codec (pure, no I/O) |
//! | [`transport`] | QUIC and TCP+TLS links, the racing dialer |
//! | [`identity`] | certificates, device IDs, verifiers, trust store |
//! | [`state_file`] | atomic replacement of small state files |

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod discovery;
pub mod identity;
pub mod protocol;
pub mod shutdown;
pub mod state_file;
pub mod store;
pub mod transfer;
pub mod transport;
