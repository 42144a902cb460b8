//! Durability of received data (issue 17). The receiver flushes every file
//! and directory of a transfer before any final name appears and before the
//! sender hears `Done`, scoped to the transfer's own files, and a disk that
//! fails to store the data fails the transfer with a clear reason.
//!
//! The order is observed through the store's flush seam
//! ([`lanshare::store::Flush`]): a [`Recorder`] in front of the real calls
//! notes each call, the file it was for, and which final names the
//! download directory showed at that moment. Errors are injected through
//! the same seam, and once for real (root): a file system on a loop device
//! whose backing store runs out of space after the file system accepted
//! the data, as thin-provisioned storage does, so the error only shows at
//! writeback.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanshare::identity::Identity;
use lanshare::identity::trust::TrustStore;
use lanshare::intake::inbox::Inbox;
use lanshare::intake::{AcceptPolicy, Intake, Sender, Settings};
use lanshare::protocol::hash::block_hash;
use lanshare::protocol::{
    DEFAULT_BLOCK_SIZE, Entry, EntryKind, ErrorCode, Manifest, ManifestLimits,
};
use lanshare::registry::{Direction, NewTransfer, Registry};
use lanshare::store::{DownloadDir, Flush, StoreError, SystemFlush, plan};
use lanshare::transfer::TransferError;
use lanshare::transfer::framed::Framed;
use lanshare::transfer::receive::Receiver;
use lanshare::transfer::resume::ResumeStore;
use lanshare::transfer::{handshake, send, source};
use lanshare::transport::admission::{HandshakeLimits, Handshakes};
use lanshare::transport::quic::QuicTransport;
use lanshare::transport::{Transport, TransportKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common::{TestDaemon, assert_same_file, random_file, tree};
use crate::transfer::failure;

const MIB: usize = 1 << 20;

/// Which seam call an [`Event`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    StartWriteback,
    WaitWriteback,
    SyncFile,
    SyncDir,
}

/// One call through the seam.
#[derive(Debug, Clone)]
struct Event {
    call: Call,
    /// The file or directory, from `/proc/self/fd`.
    path: PathBuf,
    /// The final (not hidden) names in the download directory just then.
    visible: Vec<String>,
}

/// Records every call, then makes it for real ([`SystemFlush`]), unless
/// `fail` says to fail it; `gate` can hold the sync of the download
/// directory itself (the last step of a commit) until the test opens it.
#[derive(Debug)]
struct Recorder {
    download: PathBuf,
    events: Mutex<Vec<Event>>,
    fail: Option<(Call, &'static str, i32)>,
    gate: Mutex<Option<Gate>>,
}

/// Holds the download directory's sync: tells the test it was reached,
/// then waits for the test.
#[derive(Debug)]
struct Gate {
    reached: oneshot::Sender<()>,
    open: std::sync::mpsc::Receiver<()>,
}

impl Recorder {
    fn new(download: &Path) -> Self {
        Self {
            download: download.to_owned(),
            events: Mutex::new(Vec::new()),
            fail: None,
            gate: Mutex::new(None),
        }
    }

    /// Fails calls of kind `call` on paths ending in `suffix` with `errno`.
    fn failing(download: &Path, call: Call, suffix: &'static str, errno: i32) -> Self {
        Self {
            fail: Some((call, suffix, errno)),
            ..Self::new(download)
        }
    }

    fn record(&self, call: Call, fd: BorrowedFd<'_>) -> io::Result<()> {
        let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        let mut visible: Vec<String> = std::fs::read_dir(&self.download)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        visible.sort();
        if call == Call::SyncDir
            && path == self.download
            && let Some(gate) = self.gate.lock().unwrap().take()
        {
            gate.reached.send(()).unwrap();
            gate.open.recv().unwrap();
        }
        let fail = matches!(self.fail, Some((c, suffix, _)) if c == call && path.ends_with(suffix));
        self.events.lock().unwrap().push(Event {
            call,
            path,
            visible,
        });
        match self.fail {
            Some((_, _, errno)) if fail => Err(io::Error::from_raw_os_error(errno)),
            _ => Ok(()),
        }
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

impl Flush for Recorder {
    fn start_writeback(&self, file: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        self.record(Call::StartWriteback, file)?;
        SystemFlush.start_writeback(file, offset, len)
    }
    fn wait_writeback(&self, file: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        self.record(Call::WaitWriteback, file)?;
        SystemFlush.wait_writeback(file, offset, len)
    }
    fn sync_file(&self, file: BorrowedFd<'_>) -> io::Result<()> {
        self.record(Call::SyncFile, file)?;
        SystemFlush.sync_file(file)
    }
    fn sync_dir(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        self.record(Call::SyncDir, dir)?;
        SystemFlush.sync_dir(dir)
    }
}

/// A temporary directory on a disk, not tmpfs (tmpfs has no writeback to
/// start, so the store skips it): below cargo's target directory.
fn disk_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let fs = rustix::fs::statfs(dir.path()).unwrap();
    assert_ne!(
        fs.f_type as i64, 0x0102_1994,
        "CARGO_TARGET_TMPDIR is on tmpfs; these tests need a disk-backed target directory"
    );
    dir
}

/// The path below the staging directory (`""` for the staging directory
/// itself), or `None` for paths elsewhere.
fn staged(path: &Path) -> Option<String> {
    let text = path.to_str()?;
    let at = text.find(".part")?;
    Some(
        text[at + ".part".len()..]
            .trim_start_matches('/')
            .to_owned(),
    )
}

/// Files and directories of a tree of `files` files (a big one, an empty
/// one, small ones in nested directories), with their contents.
fn offer(files: usize, big: usize) -> (Manifest, Vec<Vec<u8>>) {
    let mut entries = vec![Entry {
        path: "album".into(),
        kind: EntryKind::Directory,
    }];
    let mut contents = vec![Vec::new()];
    let mut add = |path: String, content: Vec<u8>| {
        entries.push(Entry {
            path,
            kind: EntryKind::File {
                size: content.len() as u64,
                tag: *blake3::hash(&content).as_bytes(),
            },
        });
        contents.push(content);
    };
    let pattern = |len: usize, seed: usize| -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 31 + seed * 7) % 251) as u8)
            .collect()
    };
    add("album/sub/big.bin".into(), pattern(big, 1));
    add("album/empty.txt".into(), Vec::new());
    for i in 0..files {
        add(
            format!("album/many/{:02}/{i}.txt", i % 10),
            pattern(4096, i),
        );
    }
    add("note.txt".into(), b"a note".to_vec());
    entries.push(Entry {
        path: "album/nothing".into(),
        kind: EntryKind::Directory,
    });
    contents.push(Vec::new());
    (
        Manifest {
            entries,
            ..Manifest::default()
        },
        contents,
    )
}

/// Stages `manifest` and writes every block with its value, as the
/// receiver does; returns what `write` returned first if it failed.
fn receive_all(
    dl: &DownloadDir,
    manifest: &Manifest,
    contents: &[Vec<u8>],
) -> Result<lanshare::store::Staging, StoreError> {
    let plan = plan(manifest, 64).unwrap();
    let mut staging = dl.stage(&plan, manifest, "durable1")?;
    let bs = DEFAULT_BLOCK_SIZE as usize;
    for (i, content) in contents.iter().enumerate() {
        if !matches!(manifest.entries[i].kind, EntryKind::File { .. }) {
            continue;
        }
        for (b, block) in content.chunks(bs).enumerate() {
            for (c, chunk) in block.chunks(256 << 10).enumerate() {
                staging.write(i as u32, (b * bs + c * (256 << 10)) as u64, chunk)?;
            }
            let value = block_hash(block, content.len() as u64, bs as u32, b as u64);
            staging.block_value(i as u32, b as u64, &value)?;
        }
    }
    Ok(staging)
}

#[test]
fn commit_syncs_every_file_and_directory_before_any_final_name_appears() {
    let tmp = disk_tempdir();
    let download = tmp.path().join("dl");
    let recorder = Arc::new(Recorder::new(&download));
    let dl = DownloadDir::open_with(&download, recorder.clone()).unwrap();
    let (manifest, contents) = offer(300, 20 * MIB + 5);
    let staging = receive_all(&dl, &manifest, &contents).unwrap();
    assert_eq!(staging.commit().unwrap(), ["album", "note.txt"]);
    let events = recorder.events();

    // Every file synced exactly once, every directory at least once.
    let mut files: Vec<String> = events
        .iter()
        .filter(|e| e.call == Call::SyncFile)
        .filter_map(|e| staged(&e.path))
        .collect();
    files.sort();
    let mut expected: Vec<String> = manifest
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .map(|e| e.path.clone())
        .collect();
    expected.sort();
    assert_eq!(files, expected);
    let dirs: Vec<String> = events
        .iter()
        .filter(|e| e.call == Call::SyncDir)
        .filter_map(|e| staged(&e.path))
        .collect();
    for dir in [
        "",
        "album",
        "album/sub",
        "album/many",
        "album/many/07",
        "album/nothing",
    ] {
        assert!(
            dirs.iter().any(|d| d == dir),
            "directory {dir:?} never synced: {dirs:?}"
        );
    }

    // All of it before any final name appeared.
    for e in events.iter().filter(|e| staged(&e.path).is_some()) {
        assert!(e.visible.is_empty(), "{e:?} after a final name appeared");
    }
    // Then the renames, and last the download directory, once.
    let last = events.last().unwrap();
    assert_eq!((last.call, &last.path), (Call::SyncDir, &download));
    assert_eq!(last.visible, ["album", "note.txt"]);
    assert_eq!(events.iter().filter(|e| e.path == download).count(), 1);

    // The big file went to the disk while it arrived: writeback started
    // and awaited before its final sync.
    let big = |call| {
        events
            .iter()
            .position(|e| e.call == call && e.path.ends_with("album/sub/big.bin"))
    };
    let (start, wait, sync) = (
        big(Call::StartWriteback),
        big(Call::WaitWriteback),
        big(Call::SyncFile),
    );
    assert!(
        start < wait && wait < sync && start.is_some(),
        "{start:?} {wait:?} {sync:?}"
    );
    // Small files are left to their sync.
    assert!(
        !events
            .iter()
            .any(|e| e.call == Call::StartWriteback && e.path.ends_with(".txt"))
    );

    for (entry, content) in manifest.entries.iter().zip(&contents) {
        if matches!(entry.kind, EntryKind::File { .. }) {
            assert_eq!(&std::fs::read(download.join(&entry.path)).unwrap(), content);
        }
    }
}

/// A disk error reported by a file's sync (a failing disk's `EIO`), by
/// the writeback of data still arriving (thin-provisioned storage out of
/// space: `ENOSPC`), or by the sync of the final names fails the commit
/// with a message that says what failed and what to do, and no final name
/// appears (except when it was the last step, the names themselves).
#[test]
fn a_disk_error_at_any_flush_fails_with_a_clear_reason() {
    let cases = [
        (
            Call::SyncFile,
            "many/03/13.txt",
            libc::EIO,
            "\"album/many/03/13.txt\"",
            "Input/output error",
        ),
        (
            Call::SyncDir,
            "album/many",
            libc::EIO,
            "\"album/many\"",
            "Input/output error",
        ),
        (
            Call::WaitWriteback,
            "big.bin",
            libc::ENOSPC,
            "\"album/sub/big.bin\"",
            "No space left on device",
        ),
    ];
    for (call, suffix, errno, what, why) in cases {
        let tmp = disk_tempdir();
        let download = tmp.path().join("dl");
        let recorder = Arc::new(Recorder::failing(&download, call, suffix, errno));
        let dl = DownloadDir::open_with(&download, recorder).unwrap();
        let (manifest, contents) = offer(30, 20 * MIB);
        let err = receive_all(&dl, &manifest, &contents)
            .and_then(|staging| staging.commit().map(|_| ()))
            .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StoreError::Flush { .. }), "{call:?}: {err:?}");
        assert_eq!(err.is_no_space(), errno == libc::ENOSPC, "{message}");
        assert!(
            message.contains(&format!("the disk failed to store {what}"))
                && message.contains(why)
                && message.contains("nothing was saved under its final name"),
            "{call:?}: {message}"
        );
        assert_eq!(tree(&download), Vec::<String>::new(), "{call:?}");
    }

    // The last step: the names are in place (complete and synced), but
    // the transfer still fails, because their entries may not be durable.
    let tmp = disk_tempdir();
    let download = tmp.path().join("dl");
    let recorder = Arc::new(Recorder::failing(&download, Call::SyncDir, "dl", libc::EIO));
    let dl = DownloadDir::open_with(&download, recorder).unwrap();
    let (manifest, contents) = offer(3, 10);
    let err = receive_all(&dl, &manifest, &contents)
        .unwrap()
        .commit()
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "the disk failed to store the new names in {}",
            download.display()
        )),
        "{err}"
    );
}

/// The receiving daemon's side of one transfer, in this process, with
/// `flush` as its store's seam; the sender is the real sender too.
struct Session {
    rt: tokio::runtime::Runtime,
    receiver: QuicTransport,
    receiver_id: Identity,
    receiving: Arc<Receiver>,
    /// The receiver's transfer table.
    registry: Registry,
    _state: tempfile::TempDir,
}

impl Session {
    fn new(download: &Path, flush: Arc<dyn Flush>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = tempfile::tempdir().unwrap();
        let receiver_id = Identity::generate().unwrap();
        let receiver = {
            let _rt = rt.enter();
            QuicTransport::bind("127.0.0.1:0".parse().unwrap(), &receiver_id, true).unwrap()
        };
        let registry = Registry::default();
        let intake = Intake::new(
            Settings {
                policy: AcceptPolicy::All,
                offer_timeout: Duration::from_secs(10),
                limits: ManifestLimits::default(),
            },
            Arc::new(DownloadDir::open_with(download, flush).unwrap()),
            TrustStore::load(state.path()).unwrap(),
            registry.clone(),
            Arc::new(Inbox::open(state.path()).unwrap()),
        );
        let receiving = Arc::new(Receiver::new(
            Arc::new(intake),
            ResumeStore::new(state.path()),
        ));
        Self {
            rt,
            receiver,
            receiver_id,
            receiving,
            registry,
            _state: state,
        }
    }

    /// Sends `path` from a fresh sender in its own task; `watch` gets the
    /// sender's result, the moment `send::send` returns it, as a future,
    /// and runs next to the transfer.
    fn send<T, F>(self, path: &Path, watch: impl FnOnce(SenderTask) -> F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let Self {
            rt,
            receiver,
            receiver_id,
            receiving: ours,
            ..
        } = self;
        let path = path.to_owned();
        rt.block_on(async move {
            let receiver = Arc::new(receiver);
            let addr: SocketAddr = receiver.local_addr().unwrap();
            let (links, mut incoming) = mpsc::channel(1);
            let cancel = CancellationToken::new();
            tokio::spawn(receiver.clone().serve(
                links,
                Handshakes::new(HandshakeLimits::default()),
                cancel.clone(),
                TaskTracker::new(),
            ));
            let receiving = tokio::spawn(async move {
                let mut framed = Framed::new(incoming.recv().await.unwrap());
                let state = tempfile::tempdir().unwrap();
                let trust = TrustStore::load(state.path()).unwrap();
                let hello = handshake::server(&mut framed, "bob", &trust).await.unwrap();
                let sender = Sender {
                    id: framed.link().peer,
                    address: framed.link().remote.ip(),
                    name: hello.name,
                    transport: TransportKind::Quic,
                };
                ours.receive(&mut framed, &sender).await;
                framed.into_link().close(Duration::from_secs(5)).await;
            });
            let (result_tx, sending) = oneshot::channel();
            let sender_task = tokio::spawn(async move {
                let sender = QuicTransport::bind(
                    "127.0.0.1:0".parse().unwrap(),
                    &Identity::generate().unwrap(),
                    false,
                )
                .unwrap();
                let link = sender.connect(addr, Some(receiver_id.id())).await.unwrap();
                let mut framed = Framed::new(link);
                handshake::client(&mut framed, "alice").await.unwrap();
                let source = source::scan(&[path], &source::WalkOptions::default()).unwrap();
                let registry = Registry::default();
                let handle = registry.start(NewTransfer {
                    direction: Direction::Out,
                    peer: "bob".into(),
                    peer_id: receiver_id.id(),
                    files: source.manifest.file_count(),
                    bytes: source.manifest.total_bytes(),
                    transport: TransportKind::Quic,
                    names: Vec::new(),
                });
                let (events, _) = mpsc::unbounded_channel();
                let result = send::send(
                    &mut framed,
                    &"bob".into(),
                    &source,
                    &handle,
                    Duration::from_secs(10),
                    events,
                )
                .await;
                result_tx.send(result).unwrap();
                framed.into_link().close(Duration::from_secs(5)).await;
            });
            let watched = watch(sending).await;
            sender_task.await.unwrap();
            receiving.await.unwrap();
            cancel.cancel();
            watched
        })
    }
}

/// The sender's result in a [`Session`], as soon as `send::send` returns.
type SenderTask = oneshot::Receiver<Result<(), TransferError>>;

/// The receiver answers `Done` only once every file and directory of the
/// transfer, the final names included, is flushed. The recorder holds the
/// very last flush (the download directory's, after the renames); while
/// it is held, `Done` must not arrive. A receiver that sent `Done` before
/// (or while) committing is caught here: the sender would finish within
/// the observation window (a reply on loopback takes well under a
/// millisecond); a correct one cannot finish at all until the gate opens.
#[test]
fn done_reaches_the_sender_only_after_everything_is_flushed() {
    let tmp = disk_tempdir();
    let download = tmp.path().join("dl");
    let src = tmp.path().join("src");
    let recorder = Arc::new(Recorder::new(&download));
    let (reached, at_gate) = oneshot::channel();
    let (open, gate) = std::sync::mpsc::channel();
    *recorder.gate.lock().unwrap() = Some(Gate {
        reached,
        open: gate,
    });
    for i in 0..50 {
        let dir = src.join(format!("d{}", i % 5));
        std::fs::create_dir_all(&dir).unwrap();
        random_file(&dir.join(format!("f{i}")), 4096 + i, i as u64);
    }
    random_file(&src.join("big.bin"), 12 * MIB, 99);
    let session = Session::new(&download, recorder.clone());
    let result = session.send(&src, |mut sending| async move {
        tokio::select! {
            r = &mut sending => panic!("the sender finished before the final flush: {r:?}"),
            r = at_gate => r.unwrap(),
        }
        let early = tokio::time::timeout(Duration::from_millis(500), &mut sending).await;
        assert!(
            early.is_err(),
            "Done arrived while the final flush was held: {early:?}"
        );
        open.send(()).unwrap();
        sending.await.unwrap()
    });
    result.unwrap();
    let events = recorder.events();
    let last = events.last().unwrap();
    assert_eq!((last.call, &last.path), (Call::SyncDir, &download));
    let synced: Vec<String> = events
        .iter()
        .filter(|e| e.call == Call::SyncFile)
        .filter_map(|e| staged(&e.path))
        .collect();
    assert_eq!(synced.len(), 51, "{synced:?}");
    assert!(synced.iter().any(|p| p == "src/big.bin"));
    assert_same_file(&src.join("big.bin"), &download.join("src/big.bin"));
}

/// A disk error while flushing reaches the sender as the receiver's
/// reason, and the receiver keeps nothing: no final name, no staging data.
#[test]
fn a_flush_error_fails_the_transfer_on_both_sides_with_the_reason() {
    let tmp = disk_tempdir();
    let download = tmp.path().join("dl");
    let src = tmp.path().join("report.pdf");
    random_file(&src, 3 * MIB, 5);
    let recorder = Arc::new(Recorder::failing(
        &download,
        Call::SyncFile,
        "report.pdf",
        libc::EIO,
    ));
    let session = Session::new(&download, recorder);
    let registry = session.registry.clone();
    let result = session.send(&src, |sending| async move { sending.await.unwrap() });
    match result {
        Err(TransferError::Peer { code, message, .. }) => {
            assert_eq!(code, ErrorCode::Io);
            assert!(
                message.contains("the disk failed to store \"report.pdf\": Input/output error"),
                "{message}"
            );
        }
        other => panic!("expected the receiver's disk error, got {other:?}"),
    }
    let theirs = registry.list();
    assert_eq!(theirs.len(), 1);
    assert!(
        theirs[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("the disk failed to store")),
        "{theirs:?}"
    );
    assert_eq!(tree(&download), Vec::<String>::new());
}

/// A loop device whose backing file lives on a tmpfs smaller than the
/// device, with ext4 on it: the file system accepts more data than the
/// storage below can hold, so writeback fails with `ENOSPC`, as on
/// thin-provisioned storage. Torn down on drop (also when the test fails).
struct ThinDisk {
    root: PathBuf,
    mnt: PathBuf,
    loop_dev: Option<String>,
    mounted: Vec<PathBuf>,
}

impl ThinDisk {
    fn new(backing_mib: u32, device_mib: u32) -> Self {
        let root = tempfile::Builder::new()
            .prefix("lanshare-thin-")
            .tempdir()
            .unwrap()
            .keep();
        let mut disk = Self {
            mnt: root.join("mnt"),
            root,
            loop_dev: None,
            mounted: Vec::new(),
        };
        let backing = disk.root.join("backing");
        std::fs::create_dir(&backing).unwrap();
        std::fs::create_dir(&disk.mnt).unwrap();
        disk.run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={backing_mib}m"),
                "tmpfs",
                s(&backing),
            ],
        );
        disk.mounted.push(backing.clone());
        let img = backing.join("img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(u64::from(device_mib) << 20)
            .unwrap();
        let dev = disk.run("losetup", &["--find", "--show", s(&img)]);
        disk.loop_dev = Some(dev.trim().to_owned());
        // Everything mkfs writes (inode tables, journal) is written now,
        // so only data written later can find the backing store full.
        disk.run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
                dev.trim(),
            ],
        );
        disk.run("mount", &[dev.trim(), s(&disk.mnt)]);
        disk.mounted.push(disk.mnt.clone());
        disk
    }

    fn run(&self, cmd: &str, args: &[&str]) -> String {
        let out = std::process::Command::new(cmd).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for ThinDisk {
    fn drop(&mut self) {
        let quiet = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        // The file system, then the device under it, then its backing.
        let mut mounted = std::mem::take(&mut self.mounted);
        if mounted.last() == Some(&self.mnt) {
            crate::common::unmount(&self.mnt);
            mounted.pop();
        }
        if let Some(dev) = self.loop_dev.take() {
            quiet("losetup", &["-d", &dev]);
        }
        for dir in mounted {
            crate::common::unmount(&dir);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// For real: the storage under the receiver's file system runs out of
/// space after the file system accepted the data. The transfer fails with
/// the disk's error as the reason on both sides, nothing appears under a
/// final name, and the partial data is removed.
#[test]
#[ignore = "needs root: a loop device and mounts"]
fn storage_that_fails_at_writeback_fails_the_transfer_with_the_reason() {
    let disk = ThinDisk::new(40, 256);
    let alice = TestDaemon::start("alice");
    let bob = TestDaemon::builder("bob")
        .accept("all")
        .download_dir(&disk.mnt.join("dl"))
        .spawn();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("big.bin");
    random_file(&file, 96 * MIB, 17);
    let out = crate::transfer::share_within(
        &alice,
        &["send", &bob.addr(), s(&file)],
        Duration::from_secs(60),
    );
    let (code, stderr) = failure(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the disk failed to store \"big.bin\"")
            && (stderr.contains("No space left on device")
                || stderr.contains("Input/output error")),
        "{stderr}"
    );
    let theirs = bob.wait_transfer("the failed transfer", |t| t["state"] == "failed");
    assert!(
        theirs["reason"]
            .as_str()
            .unwrap()
            .contains("the disk failed to store"),
        "{theirs}"
    );
    assert_eq!(tree(&disk.mnt.join("dl")), Vec::<String>::new());
    drop(bob);
    drop(disk);
}
