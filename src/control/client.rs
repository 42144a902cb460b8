//! The CLI side of the control socket.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{CONTROL_VERSION, Reply, Request, RequestEnvelope, SendEvent};

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
    /// The socket exists but we may not use it.
    #[error(
        "permission denied on {0}: add yourself to group lanshare (sudo usermod -aG lanshare $USER, then log in again)"
    )]
    Permission(PathBuf),
    /// The daemon answered with an error.
    #[error("{0}")]
    Daemon(String),
    /// The connection broke or the reply was malformed.
    #[error("lost contact with the daemon: {0}")]
    Protocol(String),
}

/// Connects to the first socket in `candidates` that answers.
pub async fn connect(candidates: &[PathBuf]) -> Result<(UnixStream, PathBuf), ClientError> {
    for path in candidates {
        match UnixStream::connect(path).await {
            Ok(stream) => return Ok((stream, path.clone())),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(ClientError::Permission(path.clone()));
            }
            Err(_) => {}
        }
    }
    Err(ClientError::NoDaemon {
        tried: candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Sends `request` and returns the final result, passing progress events
/// to `on_event`.
pub async fn call(
    socket: &[PathBuf],
    request: Request,
    mut on_event: impl FnMut(SendEvent),
) -> Result<serde_json::Value, ClientError> {
    let (stream, _) = connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(&RequestEnvelope {
        v: CONTROL_VERSION,
        request,
    })
    .map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    write
        .write_all(&line)
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
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
            Ok(Reply::Error { message }) => return Err(ClientError::Daemon(message)),
            Ok(Reply::Event { event }) => on_event(event),
            Err(e) => return Err(ClientError::Protocol(format!("malformed reply: {e}"))),
        }
    }
}

/// Whether `path` looks like a socket someone could be listening on.
pub fn exists(path: &Path) -> bool {
    path.exists()
}
