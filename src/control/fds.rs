//! Passing open files from the CLI to the daemon (`SCM_RIGHTS`).
//!
//! Why: the system service runs as user `lanshare` with `ProtectHome=yes`,
//! so it cannot open anything in `/home`, and it must never read a file on
//! behalf of a user who could not read it. So the CLI opens every file with
//! the *user's* permissions and hands the daemon the open descriptors; the
//! daemon reads through them and never opens a user-supplied path.
//!
//! Framing on the stream socket: the client writes its JSON request line,
//! then sends the descriptors in batches of at most [`MAX_FDS_PER_MESSAGE`]
//! (the kernel's `SCM_MAX_FD`), each batch attached to one marker byte. The
//! daemon reads the whole request with `recvmsg` (never plain `read`, which
//! would silently drop attached descriptors), so it does not matter how the
//! kernel splits or joins the bytes. Tokio's `UnixStream` has no ancillary
//! API, so both sides wait for readiness with tokio and then call rustix's
//! `sendmsg` / `recvmsg` inside [`UnixStream::try_io`].

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Most descriptors the kernel accepts in one message (`SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// The byte each batch of descriptors rides on.
const MARKER: u8 = b'F';

/// How long the sender keeps retrying while the kernel refuses more
/// descriptors in flight (`ETOOMANYREFS`: the receiver has not caught up).
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(30);

/// Sends `files` in batches of [`MAX_FDS_PER_MESSAGE`]. The caller may
/// close its copies once this returns: the daemon holds its own.
pub async fn send_fds(stream: &UnixStream, files: &[BorrowedFd<'_>]) -> io::Result<()> {
    for batch in files.chunks(MAX_FDS_PER_MESSAGE) {
        let deadline = tokio::time::Instant::now() + IN_FLIGHT_RETRY;
        loop {
            stream.writable().await?;
            let sent = stream.try_io(Interest::WRITABLE, || {
                let mut space = [MaybeUninit::<u8>::uninit();
                    rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !control.push(SendAncillaryMessage::ScmRights(batch)) {
                    return Err(io::Error::other("descriptor batch too large"));
                }
                rustix::net::sendmsg(
                    stream,
                    &[IoSlice::new(&[MARKER])],
                    &mut control,
                    SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e)
                    if e.raw_os_error() == Some(rustix::io::Errno::TOOMANYREFS.raw_os_error())
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Reads bytes and descriptors from the client with `recvmsg`.
pub(crate) struct FdReader {
    /// Bytes received and not yet consumed.
    buf: Vec<u8>,
    /// Descriptors received so far, in order.
    fds: Vec<OwnedFd>,
    /// The client closed its side.
    eof: bool,
}

/// Why reading a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The request line is longer than allowed.
    #[error("request longer than {0} bytes")]
    TooLong(usize),
    /// The kernel dropped descriptors because the daemon has too many open.
    #[error(
        "the daemon cannot take more open files (its open-file limit is reached); send fewer files at once"
    )]
    Truncated,
    /// The client sent more descriptors than its request announced.
    #[error("the client sent {got} open files for {expected} announced")]
    TooMany {
        /// Received.
        got: usize,
        /// Announced.
        expected: usize,
    },
    /// The client closed before sending everything announced.
    #[error("the client hung up after {got} of {expected} open files")]
    Short {
        /// Received.
        got: usize,
        /// Announced.
        expected: usize,
    },
}

impl FdReader {
    pub(crate) fn new() -> Self {
        Self {
            buf: Vec::new(),
            fds: Vec::new(),
            eof: false,
        }
    }

    /// Reads until a full line is buffered and returns it (without the
    /// newline); `None` if the client closed without sending one.
    pub(crate) async fn read_line(
        &mut self,
        stream: &UnixStream,
        max_len: usize,
    ) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                return Ok(Some(line));
            }
            if self.buf.len() > max_len {
                return Err(ReadError::TooLong(max_len));
            }
            if self.eof {
                return Ok(None);
            }
            self.fill(stream).await?;
        }
    }

    /// Reads until exactly `expected` descriptors arrived in total and
    /// returns them; the marker bytes that carried them are discarded.
    pub(crate) async fn read_fds(
        mut self,
        stream: &UnixStream,
        expected: usize,
    ) -> Result<Vec<OwnedFd>, ReadError> {
        while self.fds.len() < expected {
            if self.eof {
                return Err(ReadError::Short {
                    got: self.fds.len(),
                    expected,
                });
            }
            self.buf.clear();
            self.fill(stream).await?;
        }
        if self.fds.len() > expected {
            return Err(ReadError::TooMany {
                got: self.fds.len(),
                expected,
            });
        }
        Ok(self.fds)
    }

    /// Descriptors received so far (for requests that announced none).
    pub(crate) fn received_fds(&self) -> usize {
        self.fds.len()
    }

    /// One `recvmsg`: appends bytes to `buf` and descriptors to `fds`.
    async fn fill(&mut self, stream: &UnixStream) -> Result<(), ReadError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            stream.readable().await?;
            let received = stream.try_io(Interest::READABLE, || {
                let mut space = [MaybeUninit::<u8>::uninit();
                    rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let msg = rustix::net::recvmsg(
                    stream,
                    &mut [IoSliceMut::new(&mut chunk)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
                )
                .map_err(io::Error::from)?;
                let mut fds = Vec::new();
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = message {
                        fds.extend(received);
                    }
                }
                Ok((msg.bytes, msg.flags, fds))
            });
            match received {
                Ok((n, flags, fds)) => {
                    self.fds.extend(fds);
                    if flags.contains(ReturnFlags::CTRUNC) {
                        return Err(ReadError::Truncated);
                    }
                    if n == 0 {
                        self.eof = true;
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Raises this process's soft open-file limit to its hard limit. `share
/// send` holds every file it sends open, and the daemon holds them until
/// the transfer ends; the usual soft limit of 1024 is far below what a
/// large directory needs, while the hard limit rarely is. Best effort.
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

/// Descriptor slots [`prepare_descriptor_table`] makes room for.
const PREGROWN_DESCRIPTORS: u64 = 16 << 10;

/// Raises this process's soft open-file limit to its hard limit (`share
/// send` and the daemon hold every file of a send open) and grows its
/// descriptor table to 16384 slots (or the limit, if lower). Call it
/// before any thread is started.
///
/// Why: the kernel grows a descriptor table by doubling it, and when
/// several threads share the table each growth waits for an RCU grace
/// period (`expand_fdtable` calls `synchronize_rcu`), which costs
/// milliseconds. Opening 2000 files in the CLI, or receiving them in the
/// daemon, went through six such growths and spent most of a small-file
/// send's time there. In a single-threaded process the growth is
/// immediate, and a table never shrinks. The cost is kernel memory:
/// about 130 KiB for 16384 slots. Best effort.
pub fn prepare_descriptor_table() {
    use rustix::process::{Resource, getrlimit};
    raise_open_file_limit();
    let slots = getrlimit(Resource::Nofile)
        .current
        .unwrap_or(PREGROWN_DESCRIPTORS)
        .min(PREGROWN_DESCRIPTORS);
    if let Ok(highest) = i32::try_from(slots.saturating_sub(1)) {
        // Duplicating onto the highest slot grows the table; closing the
        // duplicate (dropping it) keeps the size.
        let _ = rustix::io::fcntl_dupfd_cloexec(std::io::stderr(), highest);
    }
}

/// Borrows each file's descriptor.
pub fn borrow_all<T: AsFd>(files: &[T]) -> Vec<BorrowedFd<'_>> {
    files.iter().map(AsFd::as_fd).collect()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, Write};

    use super::*;

    #[tokio::test]
    async fn line_and_many_descriptors_arrive_in_order() {
        let (client, server) = UnixStream::pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<std::fs::File> = (0..600)
            .map(|i| {
                let path = dir.path().join(format!("f{i}"));
                let mut f = std::fs::File::create(&path).unwrap();
                write!(f, "{i}").unwrap();
                std::fs::File::open(&path).unwrap()
            })
            .collect();
        let sender = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut client = client;
            client.write_all(b"{\"hello\":1}\n").await.unwrap();
            send_fds(&client, &borrow_all(&files)).await.unwrap();
            drop(files);
            client
        });
        let mut reader = FdReader::new();
        let line = reader.read_line(&server, 1024).await.unwrap().unwrap();
        assert_eq!(line, b"{\"hello\":1}");
        let fds = reader.read_fds(&server, 600).await.unwrap();
        let _client = sender.await.unwrap();
        assert_eq!(fds.len(), 600);
        for (i, fd) in fds.into_iter().enumerate() {
            let mut f = std::fs::File::from(fd);
            f.rewind().unwrap();
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            assert_eq!(s, i.to_string());
        }
    }

    #[tokio::test]
    async fn hang_up_before_all_descriptors_is_reported() {
        let (client, server) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        {
            use tokio::io::AsyncWriteExt;
            let mut client = client;
            client.write_all(b"req\n").await.unwrap();
            send_fds(&client, &[file.as_fd()]).await.unwrap();
        }
        let mut reader = FdReader::new();
        reader.read_line(&server, 16).await.unwrap().unwrap();
        let err = reader.read_fds(&server, 2).await.unwrap_err();
        assert!(
            matches!(
                err,
                ReadError::Short {
                    got: 1,
                    expected: 2
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn overlong_request_is_refused() {
        let (client, server) = UnixStream::pair().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut client = client;
            let _ = client.write_all(&[b'x'; 100_000]).await;
        });
        let err = FdReader::new().read_line(&server, 1000).await.unwrap_err();
        assert!(matches!(err, ReadError::TooLong(1000)), "{err}");
    }
}
