//! The daemon side of the control socket.
//!
//! Binding is careful about the classic Unix-socket pitfalls: the parent
//! directory is created private (0700) when we create it, a socket file
//! left behind by a crashed daemon is removed only after checking that
//! nobody answers on it (so a second daemon never steals a live socket),
//! and the socket is chmod-ed right after `bind`: 0600 for a user daemon,
//! 0660 for the system service ([`SocketAccess::Group`]), whose runtime
//! directory is 0750 so nobody outside the group can reach the socket even
//! in the instant between `bind` and `chmod`.
//!
//! Who is calling comes from `SO_PEERCRED` and is logged with every
//! command. Requests are read with `recvmsg` so that open files passed
//! along with `share send` are received ([`super::fds`]).
//!
//! What clients may make the daemon hold (connections, request bytes,
//! passed descriptors) is bounded per user and in total
//! (the `budget` module); a connection beyond its user's share gets a
//! one-line refusal and is closed at once. A client that sends no
//! complete request within two minutes, or leaves a reply unread for a
//! minute, is dropped.
//!
//! Each connection carries one request. A client may half-close its side
//! after the request (`socat`, `nc -N`, shell pipes): it still gets every
//! reply. If the client goes away entirely while a long command runs
//! (Ctrl-C on `share send`), the command's cancellation token fires so
//! the transfer is stopped cleanly instead of orphaned. "Away" is a read
//! error, a failed write, or, after a half-close, the hang-up of the
//! whole connection (`EPOLLHUP`, watched on a duplicate of the socket).
//!
//! A `subscribe` request turns its connection into a stream of events
//! ([`super::events`]) until the client leaves; it keeps its connection's
//! place in the budget meanwhile.

use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::budget::{Budget, Lease, Limits};
use super::events::{EventStream, Topic};
use super::fds::{FdReader, ReadError};
use super::ownership::{Distrust, check_own_directory};
use super::{
    CONTROL_VERSION, CommandError, ErrorKind, MAX_REQUEST_LEN, Reply, Request, RequestEnvelope,
    Response, SendEvent,
};
use crate::transport::BoxFuture;

/// How long a client may take to send its request (and the open files
/// that come with it) after connecting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one reply line may wait for a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors setting up the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another daemon answers on the socket.
    #[error(
        "another lanshare daemon is already running on {0}; stop it first or pick another --socket"
    )]
    InUse(PathBuf),
    /// The socket's directory is not private to the daemon.
    #[error(
        "refusing to put the control socket in {dir}: {why}, so other users could reach or replace the socket; use a directory of your own with mode 0700 (or remove this one and let the daemon create it)"
    )]
    UnsafeDirectory {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        why: Distrust,
    },
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket; remove it or pick another --socket")]
    NotASocket(PathBuf),
    /// Filesystem or socket error.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Who sent a command (from `SO_PEERCRED`).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The caller's user ID.
    pub uid: u32,
    /// The caller's process ID, if known.
    pub pid: Option<i32>,
}

/// Who may connect to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketAccess {
    /// Mode 0600: only the daemon's own user (and root).
    Owner,
    /// Mode 0660: also the daemon's group (`lanshare` for the system
    /// service). Only safe inside a directory the world cannot enter.
    Group,
}

impl SocketAccess {
    /// The system service's socket (in `RUNTIME_DIRECTORY`, or anywhere
    /// under `/run/lanshare`) is shared with the group; any other socket
    /// belongs to its user alone.
    pub fn for_socket(socket: &Path, runtime_directory: Option<&Path>) -> Self {
        let in_runtime_dir = runtime_directory.is_some_and(|d| socket.parent() == Some(d));
        if in_runtime_dir || socket.starts_with("/run/lanshare") {
            Self::Group
        } else {
            Self::Owner
        }
    }

    fn mode(self) -> u32 {
        match self {
            Self::Owner => 0o600,
            Self::Group => 0o660,
        }
    }
}

/// Executes control requests; implemented by the daemon.
pub trait Handler: Send + Sync + 'static {
    /// Runs `request`, streaming progress to `events`; `cancel` fires if
    /// the client disconnects. `files` are the open files the client passed
    /// ([`Request::fd_count`] of them, in order). Returns the request's
    /// result, or why it failed.
    fn handle(
        &self,
        request: Request,
        caller: Caller,
        files: Vec<std::fs::File>,
        events: mpsc::UnboundedSender<SendEvent>,
        cancel: CancellationToken,
    ) -> BoxFuture<'_, Result<Response, CommandError>>;

    /// Opens a subscription to `topics` for `caller` (a `subscribe`
    /// request), or says why not.
    fn subscribe(&self, topics: &[Topic], caller: Caller) -> Result<EventStream, CommandError>;
}

/// A bound control socket; removes its file on drop.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    budget: Arc<Budget>,
}

impl ControlSocket {
    /// Binds `path` with mode 0600.
    pub async fn bind(path: &Path) -> Result<Self, ControlError> {
        Self::bind_with(path, SocketAccess::Owner).await
    }

    /// Binds `path` with the mode `access` calls for.
    pub async fn bind_with(path: &Path, access: SocketAccess) -> Result<Self, ControlError> {
        let io = |action, source| ControlError::Io {
            action,
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let unsafe_dir = |why| ControlError::UnsafeDirectory {
            dir: dir.to_owned(),
            why,
        };
        let exists = check_own_directory(dir, access == SocketAccess::Group).map_err(unsafe_dir)?;
        if !exists {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io("create directory for", e))?;
            // The umask may have taken bits away, never added any; the
            // directory is ours unless someone raced us to it.
            check_own_directory(dir, false).map_err(unsafe_dir)?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).await.is_ok() {
                    return Err(ControlError::InUse(path.to_owned()));
                }
                tracing::info!(path = %path.display(), "removing stale control socket");
                std::fs::remove_file(path).map_err(|e| io("remove stale socket", e))?;
            }
            Ok(_) => return Err(ControlError::NotASocket(path.to_owned())),
            Err(_) => {}
        }
        let listener = UnixListener::bind(path).map_err(|e| io("bind", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode()))
            .map_err(|e| io("set permissions on", e))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            budget: Budget::new(Limits::for_this_process()),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until `shutdown`.
    pub async fn serve(
        self,
        handler: Arc<dyn Handler>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        loop {
            let stream = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors (EMFILE) is the likely cause:
                        // back off instead of spinning on the ready listener.
                        tracing::warn!("control accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let caller = match stream.peer_cred() {
                Ok(cred) => Caller {
                    uid: cred.uid(),
                    pid: cred.pid(),
                },
                Err(e) => {
                    tracing::warn!("cannot read control client credentials: {e}");
                    continue;
                }
            };
            let lease = match self.budget.admit(caller.uid) {
                Ok(lease) => lease,
                Err(refusal) => {
                    tracing::debug!(uid = caller.uid, pid = ?caller.pid, "control connection refused: {refusal}");
                    refuse(&stream, &refusal.to_string());
                    continue;
                }
            };
            let handler = handler.clone();
            let cancel = shutdown.child_token();
            tracker.spawn(async move {
                if let Err(e) = serve_one(stream, caller, lease, handler, cancel).await {
                    tracing::debug!("control connection ended: {e}");
                }
            });
        }
    }
}

/// Answers a connection that was not admitted with one error line, if the
/// socket takes it at once (it is new, so its buffer is empty), and closes.
fn refuse(stream: &UnixStream, message: &str) {
    let refusal = Reply::<Response>::outcome(Err(CommandError::new(ErrorKind::Busy, message)));
    if let Ok(mut line) = serde_json::to_vec(&refusal) {
        line.push(b'\n');
        let _ = stream.try_write(&line);
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve_one(
    stream: UnixStream,
    caller: Caller,
    mut lease: Lease,
    handler: Arc<dyn Handler>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let read = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&stream, &mut lease)).await;
    let (request, files, half_closed) = match read {
        Ok(Ok(Some(read))) => read,
        Ok(Ok(None)) => return Ok(()),
        Err(_) => {
            tracing::info!(uid = caller.uid, pid = ?caller.pid, "control client sent no complete request in time");
            return Ok(());
        }
        Ok(Err(refused)) => {
            tracing::info!(uid = caller.uid, pid = ?caller.pid, "refused control request: {refused}");
            let (_, mut write) = stream.into_split();
            return write_reply(&mut write, &Reply::<Response>::outcome(Err(refused))).await;
        }
    };
    let command = command_name(&request);
    tracing::info!(
        uid = caller.uid,
        pid = ?caller.pid,
        command,
        files = files.len(),
        "control command"
    );
    let (reader, mut write) = stream.into_split();
    let client = Client::new(reader, half_closed);
    if let Request::Subscribe { topics } = &request {
        // The lease (this connection's place in the budget) is held until
        // the subscription ends.
        return match handler.subscribe(topics, caller) {
            Ok(events) => super::events::serve(events, client, write, cancel).await,
            Err(e) => {
                tracing::info!(uid = caller.uid, "refused a subscription: {}", e.message);
                write_reply(&mut write, &Reply::<Response>::outcome(Err(e))).await
            }
        };
    }
    let mut client = client;

    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let work = handler.handle(request, caller, files, events_tx, cancel.clone());
    tokio::pin!(work);
    let mut client_gone = false;
    let went_away = || {
        tracing::info!(uid = caller.uid, pid = ?caller.pid, command, "control client went away; its command is cancelled");
        cancel.cancel();
        true
    };
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            Some(event) = events_rx.recv() => {
                if !client_gone && write_reply(&mut write, &Reply::<Response>::Event { event }).await.is_err() {
                    client_gone = went_away();
                }
            }
            () = client.gone(), if !client_gone => client_gone = went_away(),
        }
    };
    // The command's descriptors are closed by now; what it still holds
    // (a queued send's files) is bounded by the queue.
    drop(lease);
    while let Ok(event) = events_rx.try_recv() {
        if client_gone {
            break;
        }
        write_reply(&mut write, &Reply::<Response>::Event { event }).await?;
    }
    if client_gone {
        return Ok(());
    }
    write_reply(&mut write, &Reply::<Response>::outcome(result)).await?;
    write.shutdown().await
}

/// The client's side of a connection while its command runs: it sends
/// nothing after its request, so the only news is that it went away.
pub(super) enum Client {
    /// Its side is open: a read returns EOF or an error when it goes.
    Open(OwnedReadHalf),
    /// It half-closed its side after the request and still reads the
    /// replies; gone once the whole connection hangs up (`EPOLLHUP`),
    /// which tokio reports as "write closed". Watched on a registration of
    /// its own (a duplicate of the socket), whose "writable" readiness can
    /// be cleared so that waiting for the hang-up does not spin.
    HalfClosed(Option<UnixStream>),
}

impl Client {
    pub(super) fn new(reader: OwnedReadHalf, half_closed: bool) -> Self {
        if half_closed {
            Self::half_closed(&reader)
        } else {
            Self::Open(reader)
        }
    }

    fn half_closed(reader: &OwnedReadHalf) -> Self {
        let watch = rustix::io::fcntl_dupfd_cloexec(reader.as_ref().as_fd(), 0)
            .map_err(std::io::Error::from)
            .and_then(|dup| UnixStream::from_std(std::os::unix::net::UnixStream::from(dup)));
        match watch {
            Ok(watch) => Self::HalfClosed(Some(watch)),
            Err(e) => {
                // Then a vanished client is noticed only when a reply
                // cannot be written.
                tracing::debug!("cannot watch a half-closed control client: {e}");
                Self::HalfClosed(None)
            }
        }
    }

    /// Resolves once the client has gone away. Cancel-safe.
    pub(super) async fn gone(&mut self) {
        let mut probe = [0u8; 64];
        loop {
            match self {
                Self::Open(reader) => match reader.read(&mut probe).await {
                    // Bytes after the request mean nothing; ignore them.
                    Ok(n) if n > 0 => {}
                    Ok(_) => *self = Self::half_closed(reader),
                    Err(_) => return,
                },
                Self::HalfClosed(Some(watch)) => match watch.ready(Interest::WRITABLE).await {
                    Ok(ready) if ready.is_write_closed() => return,
                    Ok(_) => {
                        // Clears "writable" until the socket's state changes.
                        let _ = watch.try_io(Interest::WRITABLE, || {
                            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                        });
                    }
                    Err(_) => return,
                },
                Self::HalfClosed(None) => std::future::pending::<()>().await,
            }
        }
    }
}

/// Reads one request line and the open files it announces, and whether
/// the client half-closed its side after them. `Ok(None)` when the client
/// left without asking anything; `Err` is the refusal to send back.
async fn read_request(
    stream: &UnixStream,
    lease: &mut Lease,
) -> Result<Option<(Request, Vec<std::fs::File>, bool)>, CommandError> {
    let mut reader = FdReader::new(lease);
    let line = match reader.read_line(stream, MAX_REQUEST_LEN).await {
        Ok(Some(line)) => line,
        Ok(None) => return Ok(None),
        Err(e) => return Err(read_error("cannot read the request", &e)),
    };
    let request = match serde_json::from_slice::<RequestEnvelope>(&line) {
        Ok(env) if env.v == CONTROL_VERSION => env.request,
        Ok(env) => {
            return Err(CommandError::invalid(format!(
                "the CLI speaks control version {}, the daemon {CONTROL_VERSION}; use the same lanshare version for both",
                env.v
            )));
        }
        Err(e) => return Err(CommandError::invalid(format!("malformed request: {e}"))),
    };
    drop(line);
    check_numbers(&request)?;
    let expected = request.fd_count();
    if expected > crate::protocol::MAX_ENTRIES {
        return Err(CommandError::invalid(format!(
            "too many files ({expected}); one transfer may hold at most {}",
            crate::protocol::MAX_ENTRIES
        )));
    }
    if expected == 0 {
        if reader.received_fds() > 0 {
            return Err(CommandError::invalid(
                "open files were passed with a command that takes none",
            ));
        }
        return Ok(Some((request, Vec::new(), reader.saw_eof())));
    }
    let fds = reader
        .read_fds(stream, expected)
        .await
        .map_err(|e| read_error("cannot receive the files to send", &e))?;
    Ok(Some((
        request,
        fds.into_iter().map(std::fs::File::from).collect(),
        false,
    )))
}

/// A reading failure as the client is told: "busy" when a budget is
/// spent (try again later), "invalid" when the request was.
fn read_error(what: &str, error: &ReadError) -> CommandError {
    let kind = match error {
        ReadError::Refused(_) | ReadError::Truncated => ErrorKind::Busy,
        _ => ErrorKind::Invalid,
    };
    CommandError::new(kind, format!("{what}: {error}"))
}

/// Refuses numbers the daemon cannot use: a raw client can send any
/// `u64`, and `retry_for_s = 2^64-1` once panicked a worker computing its
/// deadline. (`wait_s` and `limit` are clamped where they are used.)
fn check_numbers(request: &Request) -> Result<(), CommandError> {
    if let Request::Send {
        retry_for_s: Some(retry),
        ..
    } = request
        && *retry > crate::config::MAX_RETRY_S
    {
        return Err(CommandError::invalid(format!(
            "retry_for_s {retry} is out of range: at most {} (interrupted transfers are forgotten after a day)",
            crate::config::MAX_RETRY_S
        )));
    }
    Ok(())
}

/// Writes one reply line, giving up on a client that does not read it
/// within [`WRITE_TIMEOUT`].
/// Writes one reply line, giving up on a client that does not read it
/// within [`WRITE_TIMEOUT`].
pub(super) async fn write_reply<E: serde::Serialize>(
    write: &mut OwnedWriteHalf,
    reply: &Reply<Response, E>,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&line)).await {
        Ok(written) => written,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client reads no replies",
        )),
    }
}

fn command_name(request: &Request) -> &'static str {
    match request {
        Request::Id => "id",
        Request::Status => "status",
        Request::Peers => "peers",
        Request::Transfers => "transfers",
        Request::Send { .. } => "send",
        Request::Accept { .. } => "accept",
        Request::Reject { .. } => "reject",
        Request::Cancel { .. } => "cancel",
        Request::Clean => "clean",
        Request::Trust { .. } => "trust",
        Request::Untrust { .. } => "untrust",
        Request::Doctor { .. } => "doctor",
        Request::PeersAdd { .. } => "peers add",
        Request::PeersRemove { .. } => "peers remove",
        Request::Pair { .. } => "pair",
        Request::Pairings => "pairings",
        Request::PairDecide { .. } => "pair_decide",
        Request::History { .. } => "history",
        Request::QueueSend { .. } => "queue_send",
        Request::Queue => "queue",
        Request::QueueCancel { .. } => "queue_cancel",
        Request::SendText { .. } => "send_text",
        Request::Inbox => "inbox",
        Request::ReceiveText { .. } => "receive_text",
        Request::Subscribe { .. } => "subscribe",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_socket_is_shared_with_the_group() {
        let run = Path::new("/run/lanshare");
        assert_eq!(
            SocketAccess::for_socket(&run.join("share.sock"), Some(run)),
            SocketAccess::Group
        );
        assert_eq!(
            SocketAccess::for_socket(&run.join("share.sock"), None),
            SocketAccess::Group
        );
        let custom = Path::new("/srv/ls/run");
        assert_eq!(
            SocketAccess::for_socket(&custom.join("share.sock"), Some(custom)),
            SocketAccess::Group
        );
        assert_eq!(
            SocketAccess::for_socket(Path::new("/run/user/1000/lanshare/share.sock"), None),
            SocketAccess::Owner
        );
        assert_eq!(
            SocketAccess::for_socket(Path::new("/tmp/x/share.sock"), Some(custom)),
            SocketAccess::Owner
        );
        assert_eq!(SocketAccess::Group.mode(), 0o660);
        assert_eq!(SocketAccess::Owner.mode(), 0o600);
    }

    #[tokio::test]
    async fn bind_sets_the_mode_and_refuses_a_live_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/share.sock");
        let socket = ControlSocket::bind_with(&path, SocketAccess::Group)
            .await
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        assert!(matches!(
            ControlSocket::bind(&path).await,
            Err(ControlError::InUse(_))
        ));
        drop(socket);
        assert!(!path.exists(), "socket removed on drop");
    }
}
