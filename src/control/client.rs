//! The CLI side of the control socket: connect to the first socket that
//! answers, send one request (plus, for `send`, the open files it names;
//! see [`super::fds`]), and read progress events until the final reply.
//!
//! Before anything is sent, the socket's directory and the user serving
//! it are checked ([`super::ownership`]): a socket another user could have
//! put there, or a server running as a stranger, gets nothing.
//!
//! A daemon whose queue of connections is full (another user flooding the
//! socket) is waited for, up to [`BUSY_WAIT`]: a non-blocking connect
//! fails at once with `EAGAIN` there, and that must not read as "no daemon
//! is running".

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::ownership::{Distrust, TrustedUsers};
use super::{CONTROL_VERSION, CommandError, ErrorKind, Reply, Request, RequestEnvelope, SendEvent};

/// Why a command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "no lanshare daemon is running (tried {tried}); start one with `share daemon` or `systemctl --user start lanshare`"
    )]
    NoDaemon {
        /// The socket paths tried.
        tried: String,
    },
    /// A daemon listens, but its queue of connections stayed full.
    #[error(
        "the daemon at {} is too busy to take the connection (its queue of connections stayed full for {} s); try again shortly",
        .0.display(),
        BUSY_WAIT.as_secs()
    )]
    Busy(PathBuf),
    /// The socket exists but we may not use it.
    #[error(
        "permission denied: add yourself to group lanshare to use {0} (run `sudo usermod -aG lanshare $USER`, then log out and back in)"
    )]
    Permission(PathBuf),
    /// The socket's directory or its server is not to be trusted: nothing
    /// was sent.
    #[error(
        "refusing to use the control socket {socket}: {why}, so another user could be posing as the daemon; nothing was sent. Remove it or fix its owner and mode, or pass --socket"
    )]
    Untrusted {
        /// The socket.
        socket: PathBuf,
        /// What is wrong.
        why: Distrust,
    },
    /// The daemon answered with an error.
    #[error(transparent)]
    Daemon(CommandError),
    /// The connection broke or the reply was malformed.
    #[error("lost contact with the daemon: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The machine-readable kind of this failure (for `--json` output).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoDaemon { .. } => ErrorKind::NoDaemon,
            Self::Busy(_) => ErrorKind::Busy,
            Self::Permission(_) | Self::Untrusted { .. } => ErrorKind::Permission,
            Self::Daemon(e) => e.kind,
            Self::Protocol(_) => ErrorKind::Control,
        }
    }
}

/// Connects to the first socket in `candidates` that answers, checking
/// that its directory and its server can be trusted. An untrusted one is
/// an error, not skipped: the user should hear about it.
pub async fn connect(candidates: &[PathBuf]) -> Result<(UnixStream, PathBuf), ClientError> {
    let trusted = TrustedUsers::of_this_process();
    let untrusted = |socket: &Path, why| ClientError::Untrusted {
        socket: socket.to_owned(),
        why,
    };
    for path in candidates {
        match trusted.check_directory(path) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(why) => return Err(untrusted(path, why)),
        }
        let stream = match connect_when_there_is_room(path, BUSY_WAIT).await {
            Ok(stream) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(ClientError::Permission(path.clone()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(ClientError::Busy(path.clone()));
            }
            Err(_) => continue,
        };
        let server = stream.peer_cred().map_err(|e| {
            ClientError::Protocol(format!("cannot tell who serves {}: {e}", path.display()))
        })?;
        trusted
            .check_server(path, server.uid())
            .map_err(|why| untrusted(path, why))?;
        return Ok((stream, path.clone()));
    }
    Err(ClientError::NoDaemon {
        tried: candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// How long a connect waits for room in a daemon's full queue of
/// connections before giving up.
pub const BUSY_WAIT: Duration = Duration::from_secs(10);

/// Connects to `path`; while its listener's queue of connections is full
/// (`EAGAIN`), tries again with growing pauses (5 ms to 200 ms) until
/// `patience` has passed, then returns that `WouldBlock` error.
async fn connect_when_there_is_room(
    path: &Path,
    patience: Duration,
) -> std::io::Result<UnixStream> {
    let give_up = tokio::time::Instant::now() + patience;
    let mut pause = Duration::from_millis(5);
    loop {
        match UnixStream::connect(path).await {
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && tokio::time::Instant::now() < give_up =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            result => return result,
        }
    }
}

/// Sends `request` and returns the final result, passing progress events
/// to `on_event`.
pub async fn call(
    socket: &[PathBuf],
    request: Request,
    on_event: impl FnMut(SendEvent),
) -> Result<serde_json::Value, ClientError> {
    call_with_files(socket, request, &[], on_event).await
}

/// Like [`call`], passing `files` (open descriptors) after the request;
/// the request must announce exactly that many ([`Request::fd_count`]).
pub async fn call_with_files(
    socket: &[PathBuf],
    request: Request,
    files: &[BorrowedFd<'_>],
    on_event: impl FnMut(SendEvent),
) -> Result<serde_json::Value, ClientError> {
    let (stream, _) = connect(socket).await?;
    let mut line = serde_json::to_vec(&RequestEnvelope {
        v: CONTROL_VERSION,
        request,
    })
    .map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    let mut stream = stream;
    stream
        .write_all(&line)
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    super::fds::send_fds(&stream, files)
        .await
        .map_err(|e| ClientError::Protocol(format!("cannot pass the open files: {e}")))?;
    finish(stream, on_event).await
}

/// Reads events and the final reply of a request already sent.
pub async fn finish(
    stream: UnixStream,
    mut on_event: impl FnMut(SendEvent),
) -> Result<serde_json::Value, ClientError> {
    let (read, _write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    loop {
        let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
        else {
            return Err(ClientError::Protocol(
                "the daemon closed the connection without answering (did it stop?)".into(),
            ));
        };
        match serde_json::from_str::<Reply>(&line) {
            Ok(Reply::Ok { data }) => return Ok(data),
            Ok(Reply::Error { message, kind }) => {
                return Err(ClientError::Daemon(CommandError::new(kind, message)));
            }
            Ok(Reply::Event { event }) => on_event(event),
            Err(e) => return Err(ClientError::Protocol(format!("malformed reply: {e}"))),
        }
    }
}

/// Whether `path` looks like a socket someone could be listening on.
pub fn exists(path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener on `path` with a queue of one connection, filled: the
    /// next non-blocking connect gets `EAGAIN`. Returns the listener and
    /// the connections that fill its queue.
    async fn full_listener(path: &Path) -> (std::os::unix::net::UnixListener, Vec<UnixStream>) {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
        let fd = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
        rustix::net::bind(&fd, &SocketAddrUnix::new(path).unwrap()).unwrap();
        rustix::net::listen(&fd, 1).unwrap();
        let listener = std::os::unix::net::UnixListener::from(fd);
        let mut queued = Vec::new();
        loop {
            match UnixStream::connect(path).await {
                Ok(stream) => queued.push(stream),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("cannot fill the queue: {e}"),
            }
        }
        (listener, queued)
    }

    #[tokio::test]
    async fn a_full_queue_is_waited_for_not_taken_for_a_missing_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("share.sock");
        let (listener, _queued) = full_listener(&path).await;
        let (accepted_tx, accepted_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let acceptor = std::thread::spawn(move || {
            go_rx.recv().unwrap();
            let first = listener.accept().unwrap();
            accepted_tx.send(()).unwrap();
            // Keeps the listener (and the client's queued connection) alive
            // until the client is through.
            (listener, first)
        });
        // join! polls the connect first: its first attempt meets the full
        // queue before the acceptor is told to make room.
        let (stream, ()) = tokio::join!(
            connect_when_there_is_room(&path, Duration::from_secs(30)),
            async {
                go_tx.send(()).unwrap();
            }
        );
        stream.expect("connected once there was room");
        accepted_rx.recv().unwrap();
        acceptor.join().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_that_stays_full_is_reported_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("share.sock");
        let (_listener, _queued) = full_listener(&path).await;
        let e = connect_when_there_is_room(&path, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        // Through the public entry point: busy, not "no daemon".
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let started = tokio::time::Instant::now();
        let e = connect(&[path]).await.unwrap_err();
        assert!(matches!(e, ClientError::Busy(_)), "{e}");
        assert_eq!(e.kind(), ErrorKind::Busy);
        assert!(started.elapsed() >= BUSY_WAIT);
    }
}
