//! Shutdown signals.
//!
//! systemd stops services with SIGTERM, a terminal with SIGINT (Ctrl-C);
//! both mean "stop gracefully". The daemon takes shutdown as an injected
//! future, so tests can use a oneshot instead.

use std::future::Future;

/// Resolves on the first SIGINT or SIGTERM received after this call.
///
/// The handlers are installed *now*, not when the future is first polled:
/// the daemon awaits it only after it has told systemd it is ready, and a
/// SIGTERM arriving in between must still mean "stop gracefully" rather
/// than the default "die at once". Call it inside the tokio runtime.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                // Without signal handlers, Ctrl-C still works via the default.
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
