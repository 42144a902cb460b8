//! The `share` binary: parse arguments, set up logging, run the daemon or
//! a client command, and map the outcome to an exit code (0 success, 2
//! usage error from clap, 1 anything else with a one-line reason).

use std::process::ExitCode;

use clap::Parser;
use lanshare::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_daemon = matches!(cli.command, Command::Daemon(_));
    init_tracing(is_daemon);
    if matches!(cli.command, Command::Daemon(_) | Command::Send(_)) {
        // Before the runtime starts threads; see the function's docs.
        lanshare::control::fds::prepare_descriptor_table();
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("share: cannot start the async runtime: {e}");
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
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("share: {e:#}");
            ExitCode::FAILURE
        }
    }
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
/// `warn` for client commands.
fn init_tracing(is_daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if is_daemon { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
