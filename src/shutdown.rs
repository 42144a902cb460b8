//! Shutdown signals.
//!
//! systemd stops services with SIGTERM, a terminal with SIGINT (Ctrl-C);
//! both mean "stop gracefully". The daemon takes shutdown as an injected
//! future, so tests can use a oneshot instead.

/// Resolves on the first SIGINT or SIGTERM.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
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
