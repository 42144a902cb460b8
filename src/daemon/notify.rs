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
//! in `share status`. The protocol (`KEY=VALUE` lines in one datagram) is
//! small enough to speak directly, over a socket kept open ([`Notifier`]).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The daemon's line to systemd: one datagram socket, opened at start and
/// kept. Opening a socket per message (as `sd_notify(3)` does) fails once
/// the process is out of descriptors, and then the watchdog ping is lost
/// and systemd kills a daemon that is merely busy; a socket opened while
/// descriptors were plentiful keeps working.
#[derive(Clone, Default)]
pub(super) struct Notifier {
    /// `None` without `NOTIFY_SOCKET` (run by hand, tests).
    line: Option<Arc<(UnixDatagram, SocketAddr)>>,
}

impl Notifier {
    /// Opens the socket `NOTIFY_SOCKET` names (a path, or `@name` in the
    /// abstract namespace). Returns a warning if it cannot.
    pub(super) fn from_env() -> (Self, Option<String>) {
        let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
            return (Self::default(), None);
        };
        match open(&target) {
            Ok(line) => (
                Self {
                    line: Some(Arc::new(line)),
                },
                None,
            ),
            Err(e) => {
                let w = format!(
                    "cannot reach systemd's notification socket {} ({e}); `systemctl start` may time out",
                    target.to_string_lossy()
                );
                tracing::warn!("{w}");
                (Self::default(), Some(w))
            }
        }
    }

    /// Sends `KEY=VALUE` lines; a no-op without `NOTIFY_SOCKET`.
    fn send(&self, states: &[(&str, &str)]) -> std::io::Result<()> {
        let Some(line) = &self.line else {
            return Ok(());
        };
        let mut message = String::new();
        for (key, value) in states {
            message.push_str(key);
            message.push('=');
            message.push_str(value);
            message.push('\n');
        }
        line.0.send_to_addr(message.as_bytes(), &line.1).map(|_| ())
    }

    /// `READY=1` plus a one-line status. Returns a warning on failure.
    pub(super) fn ready(&self, status: &str) -> Option<String> {
        match self.send(&[("READY", "1"), ("STATUS", status)]) {
            Ok(()) => None,
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
    pub(super) fn stopping(&self) {
        let status = "stopping: mDNS goodbye, draining transfers";
        if let Err(e) = self.send(&[("STOPPING", "1"), ("STATUS", status)]) {
            tracing::warn!("could not tell systemd the daemon is stopping: {e}");
        }
    }

    /// Pings `WATCHDOG=1` every `interval` until `cancel`. `on_failure`
    /// is called once, with a warning, if a ping cannot be sent.
    pub(super) async fn watchdog(
        self,
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
            if let Err(e) = self.send(&[("WATCHDOG", "1")])
                && let Some(report) = on_failure.take()
            {
                let w =
                    format!("systemd watchdog ping failed ({e}); systemd may restart the daemon");
                tracing::warn!("{w}");
                report(w);
            }
        }
    }
}

/// A non-blocking datagram socket and the address of `target`.
fn open(target: &std::ffi::OsStr) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = target.as_bytes();
    let addr = match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(target)?,
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])?
        }
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "only path and abstract socket addresses are supported",
            ));
        }
    };
    let socket = UnixDatagram::unbound()?;
    // A full systemd queue must not block a runtime thread.
    socket.set_nonblocking(true)?;
    Ok((socket, addr))
}

/// How often to ping the watchdog: half of `WatchdogSec=`, if systemd set
/// it for this process (`WATCHDOG_USEC`, and `WATCHDOG_PID` if present).
pub(super) fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec = std::env::var("WATCHDOG_USEC").ok()?.parse::<u64>().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_notify_socket_everything_is_quiet() {
        let quiet = Notifier::default();
        assert_eq!(quiet.ready("ready"), None);
        quiet.stopping();
    }

    #[test]
    fn messages_go_to_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let abstract_name = format!("@lanshare-notify-test-{}", std::process::id());
        for target in [path.as_os_str().to_owned(), abstract_name.into()] {
            let receiver = match open(&target) {
                Ok((_, addr)) => UnixDatagram::bind_addr(&addr).unwrap(),
                Err(e) => panic!("{target:?}: {e}"),
            };
            let line = open(&target).unwrap();
            let notifier = Notifier {
                line: Some(Arc::new(line)),
            };
            assert_eq!(notifier.ready("up"), None);
            let mut buf = [0u8; 64];
            let n = receiver.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"READY=1\nSTATUS=up\n");
        }
    }
}
