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
                lanshare::daemon::run(config, lanshare::shutdown::signal(), |_| {}).await?;
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
        .with_target(false);
    if journal {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}
