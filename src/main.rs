//! The `share` binary: parse arguments, set up logging, run the daemon or
//! a client command, and map the outcome to an exit code: 0 success, 2
//! usage error (from clap), 78 a daemon that cannot start until its
//! configuration or files are fixed ([`EXIT_CONFIG`]), 1 anything else,
//! each failure with a one-line reason.
//!
//! Under systemd the reason is one journal entry at priority `err`, and so
//! is a panic (a bug): multi-line text would otherwise become several
//! entries at the stream's default priority, info.

use std::process::ExitCode;

use clap::Parser;
use lanshare::cli::{Cli, Command};

/// Exit status of a daemon that cannot start because of its configuration
/// or its files (a config error, a corrupt trust store or identity, an
/// unusable download or socket directory): `EX_CONFIG` of sysexits(3).
/// The units name it in `RestartPreventExitStatus=`, so systemd does not
/// restart into the same error every two seconds; errors that may pass
/// (a port in use) keep status 1 and are retried.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_daemon = matches!(cli.command, Command::Daemon(_));
    // The daemon and the desktop agent log what they do; commands only
    // warnings.
    let journal = init_tracing(is_daemon || matches!(cli.command, Command::Notify));
    if journal {
        install_journal_panic_hook();
    }
    if matches!(cli.command, Command::Daemon(_) | Command::Send(_)) {
        // Before the runtime starts threads; see the function's docs.
        lanshare::control::fds::prepare_descriptor_table();
    }
    if is_daemon {
        // Before the runtime starts threads; see the function's docs.
        lanshare::transfer::memory::tune_allocator();
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            fatal(&format!("cannot start the async runtime: {e}"), journal);
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Daemon(args) => {
                let config = args.resolve(cli.socket)?;
                lanshare::daemon::run(config, stop_signal(), |_| {}).await?;
                Ok(())
            }
            command => lanshare::cli::run_client(cli.socket, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // stdout closed early (`share peers | head -1`): not a failure.
            let broken_pipe = e.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            fatal(&lanshare::cli::error_line(&e), journal);
            if is_daemon && needs_admin(&e) {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Whether the daemon failed in a way only a change of its configuration
/// or files can fix ([`EXIT_CONFIG`]).
fn needs_admin(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<lanshare::config::ConfigError>()
        .is_some()
        || error
            .downcast_ref::<lanshare::daemon::DaemonError>()
            .is_some_and(lanshare::daemon::DaemonError::needs_admin)
}

/// Reports why the program stops: `share: REASON` on stderr, as one
/// journal entry at `err` under systemd.
fn fatal(reason: &str, journal: bool) {
    use lanshare::safe_text::{printable, printable_lines};
    if journal {
        let line = journal::line(3, &format!("share: {reason}"));
        eprintln!("{}", printable(&line));
    } else {
        eprintln!("share: {}", printable_lines(reason));
    }
}

/// Reports a panic as one journal entry at `err` (the default hook writes
/// several lines, each an entry at info), naming it a bug.
fn install_journal_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let text = format!(
            "share: internal error (a bug, please report it): thread '{}' panicked{place}: {message}",
            thread.name().unwrap_or("unnamed")
        );
        eprintln!("{}", journal::line(3, &text));
    }));
}

/// The async runtime, with half the cores (at least one) as worker
/// threads unless `TOKIO_WORKER_THREADS` says otherwise.
///
/// Why not one per core, tokio's default: a transfer keeps a blocking-pool
/// thread busy with the files (reading and hashing, or verifying and
/// writing) next to the network work on the runtime, so the runtime
/// needs only part of the machine, and workers beyond what is free cost
/// wake-ups and thread hand-offs. Measured on two cores with both ends of
/// a 1 GiB QUIC transfer on the machine (`bench/`, A/B of 6 runs): one
/// worker instead of two was 11 % faster, used 11 % less CPU and peaked at
/// 29 instead of 47 MiB in the receiver; TCP was unchanged.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        builder.worker_threads((cores / 2).max(1));
    }
    builder.build()
}

/// The first SIGTERM/SIGINT starts the graceful stop; a second one (an
/// impatient Ctrl-C) exits at once. The handlers are in place as soon as
/// this returns, before the daemon reports ready.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    let first = lanshare::shutdown::signal();
    async move {
        first.await;
        let second = lanshare::shutdown::signal();
        tokio::spawn(async move {
            second.await;
            eprintln!("share: second stop signal, exiting without waiting");
            std::process::exit(130);
        });
    }
}

/// Logs go to stderr. Under systemd (stderr connected to the journal)
/// timestamps and colours are left to the journal, and each line starts
/// with its syslog priority (`<4>` for a warning, ...), which journald
/// turns into the entry's priority, so `journalctl -p warning` works.
/// `RUST_LOG` filters as usual; the default is `info` for the daemon and
/// the desktop agent, `warn` for client commands. Every logged value is
/// escaped, so one event is one line ([`lanshare::safe_text::log_fields`]).
/// Returns whether stderr is the journal.
fn init_tracing(long_running: bool) -> bool {
    use tracing_subscriber::EnvFilter;
    let default = if long_running { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(lanshare::safe_text::log_fields())
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if journal {
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_level(false)
            .with_target(false);
        builder.event_format(journal::Priority(format)).init();
    } else {
        builder.init();
    }
    journal
}

/// Whether stderr goes to the journal: systemd sets `JOURNAL_STREAM` to
/// the `DEVICE:INODE` of the stream it connected; a variable inherited by
/// a process whose stderr is something else does not count.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(stat.st_dev) && ino.parse::<u64>().ok() == Some(stat.st_ino)
}

mod journal {
    //! The `<N>` syslog-priority prefix journald reads on stderr lines.

    use std::fmt;

    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
    use tracing_subscriber::registry::LookupSpan;

    /// `text` as one journal entry of `priority`: journald starts a new
    /// entry (at the stream's default priority) at every newline, so line
    /// breaks become ` / `.
    pub(super) fn line(priority: u8, text: &str) -> String {
        let flat: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        format!("<{priority}>{}", flat.join(" / "))
    }

    /// Wraps a formatter, prefixing each event with its priority.
    pub(super) struct Priority<F>(pub(super) F);

    impl<S, N, F> FormatEvent<S, N> for Priority<F>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
        F: FormatEvent<S, N>,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            let priority = match *event.metadata().level() {
                Level::ERROR => 3,
                Level::WARN => 4,
                Level::INFO => 6,
                Level::DEBUG | Level::TRACE => 7,
            };
            write!(writer, "<{priority}>")?;
            self.0.format_event(ctx, writer, event)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_are_one_entry() {
        let text = "invalid config file x: TOML parse error at line 1, column 8\n  |\n1 | name =\n  |       ^\r\n";
        let line = journal::line(3, text);
        assert_eq!(
            line,
            "<3>invalid config file x: TOML parse error at line 1, column 8 / | / 1 | name = / |       ^"
        );
        assert!(!line.contains(['\n', '\r']));
    }

    /// A panic under journald is one line at `err`: run in a child process
    /// (this test binary again), whose stderr is checked.
    #[test]
    fn a_panic_is_one_journal_entry_at_err() {
        const CHILD: &str = "LANSHARE_TEST_PANIC_CHILD";
        if std::env::var_os(CHILD).is_some() {
            install_journal_panic_hook();
            std::thread::Builder::new()
                .name("worker".into())
                .spawn(|| panic!("first line\nsecond line"))
                .unwrap()
                .join()
                .unwrap_err();
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "tests::a_panic_is_one_journal_entry_at_err"])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with("<3>share: internal error (a bug, please report it): thread 'worker' panicked at src/main.rs:"),
            "{stderr}"
        );
        assert!(lines[0].ends_with(": first line / second line"), "{stderr}");
    }
}
