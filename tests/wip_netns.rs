//! Scratch target for the namespace tests while they are developed
//! (deleted when they move into the shared `tests` binary).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

#[path = "wip/discovery.rs"]
mod discovery;
#[path = "wip/fallback.rs"]
mod fallback;
