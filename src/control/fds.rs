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

use super::budget::{Lease, Refusal};

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

/// Bytes read per `recvmsg`.
const CHUNK: usize = 16 * 1024;

/// Reads bytes and descriptors from the client with `recvmsg`, within the
/// connection's share of the budget ([`super::budget`]): request bytes
/// beyond the free share are reserved as the buffer grows, and before
/// each `recvmsg` descriptors are reserved and the kernel is offered room
/// for exactly that many. Descriptors a client attaches beyond that room
/// are discarded by the kernel (`MSG_CTRUNC`) and never enter the
/// daemon's descriptor table.
pub(crate) struct FdReader<'a> {
    /// Bytes received and not yet consumed.
    buf: Vec<u8>,
    /// `buf[..scanned]` holds no newline: each byte is looked at once, so
    /// a long line costs linear time, not quadratic.
    scanned: usize,
    /// Descriptors received so far, in order.
    fds: Vec<OwnedFd>,
    /// The client closed its side (or half-closed it).
    eof: bool,
    lease: &'a mut Lease,
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
    /// The budget of the connection's user, or of everyone, is spent.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Descriptors arrived that the daemon had no room for.
    #[error(
        "the daemon cannot take more open files now (its limit for passed files is reached); send fewer files at once, or try again later"
    )]
    Truncated,
    /// Descriptors arrived before the request line was complete.
    #[error("open files were passed before the request line ended")]
    EarlyDescriptors,
    /// The client sent more descriptors than its request announced.
    #[error("the client sent more open files than the {expected} its request announced")]
    TooMany {
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

impl<'a> FdReader<'a> {
    /// A reader charging what it holds to `lease`.
    pub(crate) fn new(lease: &'a mut Lease) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            fds: Vec::new(),
            eof: false,
            lease,
        }
    }

    /// Reads until a full line is buffered and returns it (without the
    /// newline); `None` if the client closed without sending one. The
    /// line's bytes are given back to the budget: the caller parses it at
    /// once.
    pub(crate) async fn read_line(
        &mut self,
        stream: &UnixStream,
        max_len: usize,
    ) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            if let Some(i) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + i;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                self.scanned = 0;
                self.lease.release_bytes();
                return Ok(Some(line));
            }
            self.scanned = self.buf.len();
            // Descriptors ride on the bytes after the line (see the module
            // docs), and the kernel ends a read after them.
            if !self.fds.is_empty() {
                return Err(ReadError::EarlyDescriptors);
            }
            if self.buf.len() > max_len {
                return Err(ReadError::TooLong(max_len));
            }
            if self.eof {
                return Ok(None);
            }
            self.lease.cover_bytes(self.buf.len() + CHUNK)?;
            let room = self.lease.reserve_fds_up_to(MAX_FDS_PER_MESSAGE);
            let got = self.fill(stream, room).await?;
            self.lease.release_fds(room.saturating_sub(got));
        }
    }

    /// Whether the client has closed (or half-closed) its side.
    pub(crate) fn saw_eof(&self) -> bool {
        self.eof
    }

    /// Reads until exactly `expected` descriptors arrived in total and
    /// returns them; the marker bytes that carried them are discarded.
    /// All `expected` are reserved from the budget first (the lease keeps
    /// them until it is dropped); a client that sends more is refused.
    pub(crate) async fn read_fds(
        mut self,
        stream: &UnixStream,
        expected: usize,
    ) -> Result<Vec<OwnedFd>, ReadError> {
        if self.fds.len() > expected {
            return Err(ReadError::TooMany { expected });
        }
        self.lease.reserve_fds(expected - self.fds.len())?;
        while self.fds.len() < expected {
            if self.eof {
                return Err(ReadError::Short {
                    got: self.fds.len(),
                    expected,
                });
            }
            self.buf.clear();
            let room = (expected - self.fds.len()).min(MAX_FDS_PER_MESSAGE);
            match self.fill(stream, room).await {
                Err(ReadError::Truncated) => return Err(ReadError::TooMany { expected }),
                other => other?,
            };
        }
        if self.fds.len() > expected {
            return Err(ReadError::TooMany { expected });
        }
        Ok(self.fds)
    }

    /// Descriptors received so far (for requests that announced none).
    pub(crate) fn received_fds(&self) -> usize {
        self.fds.len()
    }

    /// One `recvmsg` with room for `room` descriptors (already reserved):
    /// appends bytes to `buf` and descriptors to `fds`, and returns how
    /// many descriptors came. More than `room` can fit in the aligned
    /// control buffer; any excess must be reserved too, or the read fails.
    async fn fill(&mut self, stream: &UnixStream, room: usize) -> Result<usize, ReadError> {
        let mut chunk = [0u8; CHUNK];
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
        let space_len = match room.min(MAX_FDS_PER_MESSAGE) {
            0 => 0,
            n => rustix::cmsg_space!(ScmRights(n)),
        };
        loop {
            stream.readable().await?;
            let received = stream.try_io(Interest::READABLE, || {
                let mut control = RecvAncillaryBuffer::new(&mut space[..space_len]);
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
                    let got = fds.len();
                    if got > room && self.lease.reserve_fds(got - room).is_err() {
                        // Closed on the way out.
                        return Err(ReadError::Truncated);
                    }
                    self.fds.extend(fds);
                    if flags.contains(ReturnFlags::CTRUNC) {
                        return Err(ReadError::Truncated);
                    }
                    if n == 0 {
                        self.eof = true;
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(got);
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

    use super::super::budget::{Budget, Limits};
    use super::*;

    fn lease() -> Lease {
        Budget::new(Limits::for_open_files(1 << 20))
            .admit(0)
            .unwrap()
    }

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
        let mut lease = lease();
        let mut reader = FdReader::new(&mut lease);
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
        let mut lease = lease();
        let mut reader = FdReader::new(&mut lease);
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
        let mut lease = lease();
        let err = FdReader::new(&mut lease)
            .read_line(&server, 1000)
            .await
            .unwrap_err();
        assert!(matches!(err, ReadError::TooLong(1000)), "{err}");
    }

    /// Descriptors beyond what the budget allows are dropped by the
    /// kernel, not received and then closed; the read fails.
    #[tokio::test]
    async fn descriptors_beyond_the_budget_are_never_received() {
        let (client, server) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        let ten = vec![file.as_fd(); 10];
        {
            use tokio::io::AsyncWriteExt;
            let mut client = client;
            client.write_all(b"req\n").await.unwrap();
            send_fds(&client, &ten).await.unwrap();
        }
        let limits = Limits {
            fds_per_uid: 4,
            ..Limits::for_open_files(1 << 20)
        };
        let budget = Budget::new(limits);
        let mut lease = budget.admit(0).unwrap();
        let mut reader = FdReader::new(&mut lease);
        let result = match reader.read_line(&server, 16).await {
            Ok(_) => reader.read_fds(&server, 10).await.map(|_| ()),
            Err(e) => Err(e),
        };
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                ReadError::Truncated | ReadError::Refused(Refusal::Descriptors { .. })
            ),
            "{err}"
        );
        assert!(lease.fds_held() <= 4 + 2, "{}", lease.fds_held());
    }

    #[tokio::test]
    async fn descriptors_inside_the_request_line_are_refused() {
        let (client, server) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        {
            use tokio::io::AsyncWriteExt;
            let mut client = client;
            client.write_all(b"{\"v\":1,").await.unwrap();
            send_fds(&client, &[file.as_fd()]).await.unwrap();
            client.write_all(b"}\n").await.unwrap();
        }
        let mut lease = lease();
        let err = FdReader::new(&mut lease)
            .read_line(&server, 1000)
            .await
            .unwrap_err();
        assert!(matches!(err, ReadError::EarlyDescriptors), "{err}");
    }
}
