//! `share doctor [PEER] [--json]`: ask the daemon for its checks and show
//! them, one verdict per line with what to do underneath.
//!
//! The one check the daemon cannot make is whether it is reachable at
//! all; when it is not, the CLI builds a short report itself (daemon,
//! identity on disk, download directory) so the first thing a user with a
//! stopped daemon reads is how to start it. The exit status is 0 only if
//! no check failed.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Parser;

use super::{Cli, Command};
use crate::control::Request;
use crate::control::client::{self, ClientError};
use crate::doctor::report::{Check, DoctorReport, Verdict, check_download_dir};

/// Runs `share doctor`.
pub(super) async fn run(sockets: &[PathBuf], peer: Option<String>, as_json: bool) -> Result<()> {
    let report = match client::call(sockets, Request::Doctor { peer }, |_| {}).await {
        Ok(data) => serde_json::from_value::<DoctorReport>(data)?,
        Err(e @ (ClientError::NoDaemon { .. } | ClientError::Permission(_))) => offline(&e),
        Err(e) => return Err(e.into()),
    };
    if as_json {
        super::output::json(&report)?;
    } else {
        render(&report)?;
    }
    let failed = report
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .count();
    if failed > 0 {
        bail!(
            "{failed} check{} failed",
            if failed == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// The report when the daemon cannot be asked.
fn offline(error: &ClientError) -> DoctorReport {
    let fix = match error {
        ClientError::Permission(_) => {
            "add yourself to group lanshare: `sudo usermod -aG lanshare $USER`, then log out and back in"
        }
        _ => "start it: `systemctl --user start lanshare` (or `share daemon` in a terminal)",
    };
    let mut checks = vec![Check::new("daemon", Verdict::Fail, error.to_string()).fix(fix)];
    // The defaults a `share daemon` started now would use.
    let config = Cli::try_parse_from(["share", "daemon"])
        .ok()
        .and_then(|cli| match cli.command {
            Command::Daemon(args) => args.resolve(None).ok(),
            _ => None,
        });
    if let Some(config) = config {
        checks.push(
            match crate::identity::Identity::load_existing(&config.state_dir) {
                Ok(Some(identity)) => Check::new(
                    "identity",
                    Verdict::Ok,
                    format!(
                        "device ID {} (kept in {})",
                        identity.id(),
                        config.state_dir.display()
                    ),
                ),
                Ok(None) => Check::new(
                    "identity",
                    Verdict::Warn,
                    format!("no identity in {} yet", config.state_dir.display()),
                )
                .fix("the daemon creates one when it first starts"),
                Err(e) => Check::new("identity", Verdict::Fail, e.to_string()).fix(
                    "fix the permissions of the state directory, or move the broken files aside",
                ),
            },
        );
        if config.download_dir.exists() {
            checks.push(check_download_dir(&config.download_dir));
        }
    }
    let mut report = DoctorReport {
        checks,
        ..DoctorReport::default()
    };
    report.settle();
    report
}

/// Human output: `VERDICT  CHECK  message`, the fix indented below.
fn render(report: &DoctorReport) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let width = report
        .checks
        .iter()
        .map(|c| c.check.chars().count())
        .max()
        .unwrap_or(0);
    for c in &report.checks {
        writeln!(
            out,
            "{:4}  {:width$}  {}",
            c.verdict.word(),
            c.check,
            c.message
        )?;
        if let Some(fix) = &c.fix {
            writeln!(out, "{:4}  {:width$}  → {fix}", "", "")?;
        }
    }
    let (warn, fail) = report
        .checks
        .iter()
        .fold((0, 0), |(w, f), c| match c.verdict {
            Verdict::Warn => (w + 1, f),
            Verdict::Fail => (w, f + 1),
            Verdict::Ok => (w, f),
        });
    writeln!(
        out,
        "{}",
        match (fail, warn) {
            (0, 0) => "all checks passed".to_owned(),
            (0, w) => format!("no failures, {w} warning(s)"),
            (f, w) => format!("{f} failed, {w} warning(s)"),
        }
    )?;
    Ok(())
}
