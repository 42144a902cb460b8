//! Scratch target for the issue-5 robustness tests while they are developed
//! (deleted when they move into the shared `tests` binary).

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

#[path = "common/mod.rs"]
mod common;

#[path = "transfer.rs"]
mod transfer;

#[path = "hostile.rs"]
mod hostile;
#[path = "robustness.rs"]
mod robustness;
