//! LocalSend interoperability: lanshare as a peer of the LocalSend apps
//! (protocol 2.2, apps 1.18; <= 1.17 where noted).
//!
//! * [`wire`]: the JSON messages, as a pure codec.

pub mod wire;
