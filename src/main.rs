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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
                // `share send` passes every file as an open descriptor.
                lanshare::control::fds::raise_open_file_limit();
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

/// The first SIGTERM/SIGINT starts the graceful stop; a second one (an
/// impatient Ctrl-C) exits at once.
async fn stop_signal() {
    lanshare::shutdown::signal().await;
    tokio::spawn(async {
        lanshare::shutdown::signal().await;
        eprintln!("share: second stop signal, exiting without waiting");
        std::process::exit(130);
    });
}

/// Logs go to stderr. Under systemd (JOURNAL_STREAM set) timestamps and
/// colours are left to the journal. `RUST_LOG` filters as usual; the
/// default is `info` for the daemon and `warn` for client commands.
fn init_tracing(is_daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if is_daemon { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if journal {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
