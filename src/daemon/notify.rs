//! Talking to systemd (`sd_notify`): readiness, stopping, watchdog.
//!
//! The unit is `Type=notify`, so systemd considers the service started only
//! when we say `READY=1`, which [`super::run`] does once the listeners, the
//! control socket and mDNS are up: `systemctl start lanshare` then returns
//! when `share status` already works. `STOPPING=1` goes out as soon as a
//! stop signal arrives, so systemd shows "deactivating" while the daemon
//! says its mDNS goodbyes and drains transfers. With `WatchdogSec=` set,
//! a task pings `WATCHDOG=1` at half the interval; if the runtime wedges,
//! the pings stop and systemd restarts the service.
//!
//! Everything here is a no-op without `NOTIFY_SOCKET` (run by hand, tests).
//! Failures never stop the daemon: they are logged and shown as warnings
//! in `share status`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use sd_notify::NotifyState;

/// Whether systemd asked for notifications.
pub(super) fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// `READY=1` plus a one-line status. Returns a warning on failure.
pub(super) fn ready(status: &str) -> Option<String> {
    if !enabled() {
        return None;
    }
    match sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
        Ok(()) => {
            tracing::debug!("told systemd we are ready");
            None
        }
        Err(e) => {
            let w = format!(
                "could not tell systemd the daemon is ready ({e}); `systemctl start` may time out"
            );
            tracing::warn!("{w}");
            Some(w)
        }
    }
}

/// `STOPPING=1`: a graceful stop has begun.
pub(super) fn stopping() {
    if enabled()
        && let Err(e) = sd_notify::notify(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: mDNS goodbye, draining transfers"),
        ])
    {
        tracing::warn!("could not tell systemd the daemon is stopping: {e}");
    }
}

/// How often to ping the watchdog: half of `WatchdogSec=`, if set for us.
pub(super) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// Pings `WATCHDOG=1` every `interval` until `cancel`. `on_failure` is
/// called once, with a warning, if a ping cannot be sent.
pub(super) async fn watchdog(
    interval: Duration,
    cancel: CancellationToken,
    on_failure: impl FnOnce(String),
) {
    let mut on_failure = Some(on_failure);
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog])
            && let Some(report) = on_failure.take()
        {
            let w = format!("systemd watchdog ping failed ({e}); systemd may restart the daemon");
            tracing::warn!("{w}");
            report(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_notify_socket_everything_is_quiet() {
        // The test environment is not a systemd service.
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            return;
        }
        assert!(!enabled());
        assert_eq!(ready("ready"), None);
        stopping();
    }
}
