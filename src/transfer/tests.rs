//! The sessions against each other, without sockets: a sender and a
//! receiver joined by an in-memory [`Link`](crate::transport::Link).
//! Where the other side must misbehave (stop half way, send a bad block)
//! it is played frame by frame.
//!
//! Waits for consent run under tokio's paused clock, so a 120 s expiry
//! takes no real time. Tests that move data run on the real clock under a
//! [`bounded`] deadline instead: the receiver's disk writer is a blocking
//! task, during which a paused clock never advances, so a session that
//! wrongly waits for a frame would hang rather than time out.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::framed::Framed;
use super::kept::{self, KeepPolicy};
use super::source::Source;
use super::testing::{
    Bob, OFFER_TIMEOUT, alice_as_sender, bob_keeping, bob_receiving, bob_restarted, framed_pipe,
    framed_pipe_without_metadata, outgoing, random_file, source_of,
};
use super::{STOP_GRACE, SessionEvent, TransferError, send, text};
use crate::intake::AcceptPolicy;
use crate::outgoing::retry::AttemptError;
use crate::protocol::hash::block_hash;
use crate::protocol::{BlockRange, EntryMeta, ErrorCode, MAX_DATA_CHUNK, Message};
use crate::registry::{Decision, Registry, State, TransferInfo};

/// How long the sender waits for consent (as the send service allows).
const CONSENT: Duration = Duration::from_secs(150);

/// `session` within a minute of real time: a hang is a failure.
async fn bounded<T>(session: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), session)
        .await
        .expect("the sessions hung")
}

/// Runs a real sender of `source` against Bob's receiver over one pipe;
/// returns the sender's result and its registry entry.
async fn send_to(bob: &Bob, source: &Source) -> (Result<(), TransferError>, TransferInfo) {
    send_over(framed_pipe(), bob, source).await
}

/// [`send_to`] over the given pipe.
async fn send_over(
    (mut ours, mut theirs): (Framed, Framed),
    bob: &Bob,
    source: &Source,
) -> (Result<(), TransferError>, TransferInfo) {
    let registry = Registry::default();
    let handle = outgoing(&registry, source);
    let (events, _) = mpsc::unbounded_channel();
    let sending = async {
        let result = send::send(&mut ours, &"bob".into(), source, &handle, CONSENT, events).await;
        ours.into_link().close(Duration::from_secs(1)).await;
        result
    };
    let receiving = async {
        bob.receiver.receive(&mut theirs, &alice_as_sender()).await;
        theirs.into_link().close(Duration::from_secs(1)).await;
    };
    let (result, ()) = tokio::join!(sending, receiving);
    (result, registry.list().remove(0))
}

/// The receiver's transfers.
fn incoming(bob: &Bob) -> Vec<TransferInfo> {
    bob.registry.list()
}

/// Everything in Bob's download directory, hidden entries included.
fn downloads(bob: &Bob) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&bob.downloads)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn files_and_folders_arrive_byte_identical() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("photos");
    std::fs::create_dir_all(tree.join("2024")).unwrap();
    let big = random_file(&tree.join("2024/big.bin"), (3 << 20) + 7, 1);
    let small = random_file(&tree.join("note.txt"), 17, 2);
    let empty = random_file(&src.path().join("empty.bin"), 0, 3);
    let source = source_of(&[tree, src.path().join("empty.bin")]);
    let bob = bob_receiving(AcceptPolicy::All);

    let (result, ours) = bounded(send_to(&bob, &source)).await;
    result.unwrap();
    assert_eq!(ours.bytes_sent, (3 << 20) + 7 + 17);
    let got = |rel: &str| std::fs::read(bob.downloads.join(rel)).unwrap();
    assert!(got("photos/2024/big.bin") == big, "big.bin differs");
    assert_eq!(got("photos/note.txt"), small);
    assert_eq!(got("empty.bin"), empty);
    assert_eq!(downloads(&bob), ["empty.bin", "photos"]);
    let theirs = incoming(&bob);
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].state, State::Done);
    assert_eq!(theirs[0].bytes_done, (3 << 20) + 7 + 17);
    assert_eq!(theirs[0].names, ["photos", "empty.bin"]);
}

/// A script (setuid too), a plain file and an empty one, with old
/// modification times, nanoseconds included.
fn files_with_metadata(dir: &std::path::Path) -> Vec<(std::path::PathBuf, SystemTime)> {
    use std::os::unix::fs::PermissionsExt;
    let mut made = Vec::new();
    for (name, mode, secs, len) in [
        ("run.sh", 0o4755, 1_000_000_000, 100),
        ("notes.txt", 0o644, 1_234_567_890, (2 << 20) + 3),
        ("empty", 0o700, 86_400, 0),
    ] {
        let path = dir.join(name);
        random_file(&path, len, secs);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let mtime = SystemTime::UNIX_EPOCH + Duration::new(secs, 123_456_789);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        made.push((path, mtime));
    }
    made
}

fn mode_and_mtime(path: &std::path::Path) -> (u32, SystemTime) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).unwrap();
    (meta.permissions().mode() & 0o7777, meta.modified().unwrap())
}

/// Between peers that negotiated it, each file keeps its modification
/// time and an executable file arrives executable (where the receiver's
/// own mode lets read), never setuid.
#[tokio::test]
async fn modification_times_and_the_executable_bit_arrive() {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("tools");
    std::fs::create_dir(&dir).unwrap();
    let made = files_with_metadata(&dir);
    let source = source_of(&[dir]);
    let bob = bob_receiving(AcceptPolicy::All);
    let (result, _) = bounded(send_to(&bob, &source)).await;
    result.unwrap();
    let got = |name: &str| mode_and_mtime(&bob.downloads.join("tools").join(name));
    let (script, script_time) = got("run.sh");
    let (notes, notes_time) = got("notes.txt");
    let (empty, empty_time) = got("empty");
    assert_eq!(script_time, made[0].1);
    assert_eq!(notes_time, made[1].1);
    assert_eq!(empty_time, made[2].1);
    // The receiver's files are 0640: executable adds x where r is.
    assert_eq!(script, 0o750, "run.sh arrived {script:o}");
    assert_eq!(empty, 0o750, "empty arrived {empty:o}");
    assert_eq!(notes, 0o640, "notes.txt arrived {notes:o}");
}

/// A peer that did not negotiate metadata (an older version) gets the
/// same content with no Metadata frame: the files get the receiver's
/// defaults, as before.
#[tokio::test]
async fn older_peers_transfer_without_metadata() {
    let src = tempfile::tempdir().unwrap();
    let made = files_with_metadata(src.path());
    let source = source_of(&[made[0].0.clone()]);
    let bob = bob_receiving(AcceptPolicy::All);
    let before = SystemTime::now() - Duration::from_secs(1);
    let (result, _) = bounded(send_over(framed_pipe_without_metadata(), &bob, &source)).await;
    result.unwrap();
    let (mode, mtime) = mode_and_mtime(&bob.downloads.join("run.sh"));
    assert_eq!(mode, 0o640);
    assert!(mtime >= before, "{mtime:?}");
    assert_eq!(
        std::fs::read(bob.downloads.join("run.sh")).unwrap(),
        std::fs::read(&made[0].0).unwrap()
    );
}

/// Metadata for another number of entries than the Offer's, and
/// Metadata on a link that did not negotiate it, break the protocol.
#[tokio::test]
async fn metadata_that_does_not_fit_the_offer_or_the_link_is_a_protocol_error() {
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("a"), 10, 1);
    let source = source_of(&[src.path().join("a")]);
    for (pipe, count) in [(framed_pipe(), 2), (framed_pipe_without_metadata(), 1)] {
        let bob = bob_receiving(AcceptPolicy::All);
        let (mut alice, mut theirs) = pipe;
        let playing = async {
            let metadata = vec![EntryMeta::default(); count];
            alice.send(&Message::Metadata(metadata)).await.unwrap();
            // The receiver may already have hung up.
            let _ = alice.send(&Message::Offer(source.manifest.clone())).await;
            alice.recv().await
        };
        let receiving = async {
            bob.receiver.receive(&mut theirs, &alice_as_sender()).await;
            drop(theirs);
        };
        let (answer, ()) = bounded(async { tokio::join!(playing, receiving) }).await;
        assert!(
            matches!(
                answer,
                Ok(Message::Error {
                    code: ErrorCode::Protocol,
                    ..
                })
            ),
            "{count}: {answer:?}"
        );
        assert_eq!(downloads(&bob), Vec::<String>::new());
    }
}

#[tokio::test]
async fn an_offer_waits_for_the_user_and_goes_ahead_when_accepted() {
    let src = tempfile::tempdir().unwrap();
    let data = random_file(&src.path().join("a.bin"), 100_000, 4);
    let source = source_of(&[src.path().join("a.bin")]);
    let bob = bob_receiving(AcceptPolicy::Ask);
    let user = async {
        loop {
            if let Some(offer) = incoming(&bob)
                .into_iter()
                .find(|t| t.state == State::Pending)
            {
                bob.registry
                    .decide(&offer.id[..4], Decision::Accept)
                    .unwrap();
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    let ((result, _), ()) = bounded(async { tokio::join!(send_to(&bob, &source), user) }).await;
    result.unwrap();
    assert_eq!(std::fs::read(bob.downloads.join("a.bin")).unwrap(), data);
    assert_eq!(incoming(&bob)[0].state, State::Done);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_offer_expires_as_rejected_and_writes_nothing() {
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("a.bin"), 1000, 5);
    let source = source_of(&[src.path().join("a.bin")]);
    let bob = bob_receiving(AcceptPolicy::Ask);
    let started = tokio::time::Instant::now();

    let (result, ours) = send_to(&bob, &source).await;
    let waited = started.elapsed();
    match result {
        Err(TransferError::Rejected { reason, .. }) => {
            assert!(reason.contains("expired"), "{reason}");
        }
        other => panic!("expected an expiry, got {other:?}"),
    }
    assert!(waited >= OFFER_TIMEOUT && waited < CONSENT, "{waited:?}");
    assert_eq!(
        ours.state,
        State::Active,
        "the send service records the end"
    );
    assert_eq!(incoming(&bob)[0].state, State::Rejected);
    assert_eq!(downloads(&bob), Vec::<String>::new());
}

#[tokio::test]
async fn a_trusted_sender_is_accepted_without_asking() {
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("a.bin"), 1000, 6);
    let source = source_of(&[src.path().join("a.bin")]);
    let bob = bob_receiving(AcceptPolicy::Trusted);
    // Not trusted yet: refused at once.
    let (result, _) = bounded(send_to(&bob, &source)).await;
    assert!(
        matches!(&result, Err(TransferError::Rejected { reason, .. }) if reason.contains("trusted")),
        "{result:?}"
    );
    bob.trust
        .trust(super::testing::alice(), &"alice".into())
        .unwrap();
    let (result, _) = bounded(send_to(&bob, &source)).await;
    result.unwrap();
    assert!(bob.downloads.join("a.bin").exists());
}

#[tokio::test]
async fn a_cancel_between_frames_stops_both_sides_and_leaves_nothing() {
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("big.bin"), 16 << 20, 7);
    let source = source_of(&[src.path().join("big.bin")]);
    let bob = bob_receiving(AcceptPolicy::All);
    let (mut ours, mut theirs) = framed_pipe();
    let registry = Registry::default();
    let handle = outgoing(&registry, &source);
    let (events, mut accepted) = mpsc::unbounded_channel();
    let sending =
        async { send::send(&mut ours, &"bob".into(), &source, &handle, CONSENT, events).await };
    // The user cancels as soon as data flows.
    let cancel = async {
        while let Some(event) = accepted.recv().await {
            if event == SessionEvent::Accepted {
                handle.cancelled().cancel();
            }
        }
    };
    let alice = alice_as_sender();
    let receiving = bob.receiver.receive(&mut theirs, &alice);
    let (result, (), ()) = bounded(async { tokio::join!(sending, cancel, receiving) }).await;
    assert!(
        matches!(result, Err(TransferError::Cancelled)),
        "{result:?}"
    );
    assert!(
        handle.bytes_sent() < 16 << 20,
        "cancelled after everything was sent"
    );
    let theirs = incoming(&bob);
    assert_eq!(theirs[0].state, State::Cancelled, "{theirs:?}");
    assert_eq!(downloads(&bob), Vec::<String>::new(), "partial data kept");
}

/// Asserts that a send ended with the receiver's `Error(Paused)`, which
/// the send service retries.
fn assert_paused_by_peer(result: Result<(), TransferError>) {
    let error = result.unwrap_err();
    assert!(
        matches!(
            &error,
            TransferError::Peer {
                code: ErrorCode::Paused,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(AttemptError::Transfer(error).retryable());
}

/// Waits (polling: there is no event for it) until Bob has verified
/// `bytes` of his one incoming transfer.
async fn until_bob_verified(bob: &Bob, bytes: u64) {
    while incoming(bob).first().is_none_or(|t| t.bytes_done < bytes) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Bob's daemon stops (SIGTERM) while data flows: the transfer pauses
/// instead of ending as cancelled. Alice is told `Error(Paused)`, which
/// she retries; Bob keeps the verified blocks and the resume record, and
/// after his restart the same offer is accepted without asking again and
/// resumes from them.
#[tokio::test]
async fn a_stopping_receiver_pauses_the_transfer_and_the_retry_resumes() {
    let src = tempfile::tempdir().unwrap();
    let path: PathBuf = src.path().join("big.bin");
    let content = random_file(&path, 32 << 20, 10);
    let source = source_of(&[path]);
    let bob = bob_receiving(AcceptPolicy::All);
    let (mut ours, mut theirs) = framed_pipe();
    let registry = Registry::default();
    let handle = outgoing(&registry, &source);
    let (events, _) = mpsc::unbounded_channel();
    let sending = async {
        let result = send::send(&mut ours, &"bob".into(), &source, &handle, CONSENT, events).await;
        ours.into_link().close(Duration::from_secs(1)).await;
        result
    };
    let stop = async {
        until_bob_verified(&bob, 2 << 20).await;
        bob.registry.stop_all();
    };
    let receiving = async {
        bob.receiver.receive(&mut theirs, &alice_as_sender()).await;
        theirs.into_link().interrupt(STOP_GRACE).await;
    };
    let (result, (), ()) = bounded(async { tokio::join!(sending, stop, receiving) }).await;
    assert_paused_by_peer(result);
    let paused = &incoming(&bob)[0];
    assert_eq!(paused.state, State::Failed, "{paused:?}");
    let kept = paused.bytes_done;
    assert!(kept < content.len() as u64, "finished before the stop");
    let staged = downloads(&bob);
    assert!(
        staged.len() == 1 && staged[0].starts_with(".lanshare-"),
        "{staged:?}"
    );
    assert!(
        bob.resume_files().iter().any(|f| f.ends_with(".json")),
        "{:?}",
        bob.resume_files()
    );

    // Bob asks before accepting, but not again for a resume.
    let bob = bob_restarted(bob, AcceptPolicy::Ask);
    let (result, ours) = bounded(send_to(&bob, &source)).await;
    result.unwrap();
    assert!(
        ours.bytes_sent <= content.len() as u64 - kept,
        "sent {} again after {kept} were kept",
        ours.bytes_sent
    );
    assert!(std::fs::read(bob.downloads.join("big.bin")).unwrap() == content);
    assert_eq!(downloads(&bob), ["big.bin"]);
    assert_eq!(bob.resume_files(), Vec::<String>::new());
}

/// Bob's daemon stops while an offer waits for his user: Alice is told
/// the offer is paused, which she retries (Bob's user is asked again once
/// his service is back), not that it was cancelled.
#[tokio::test]
async fn a_stop_while_an_offer_waits_pauses_it() {
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("a.bin"), 1000, 12);
    let source = source_of(&[src.path().join("a.bin")]);
    let bob = bob_receiving(AcceptPolicy::Ask);
    let stop = async {
        while incoming(&bob)
            .first()
            .is_none_or(|t| t.state != State::Pending)
        {
            tokio::task::yield_now().await;
        }
        bob.registry.stop_all();
    };
    let ((result, _), ()) = bounded(async { tokio::join!(send_to(&bob, &source), stop) }).await;
    assert_paused_by_peer(result);
    let theirs = &incoming(&bob)[0];
    assert_eq!(theirs.state, State::Failed, "{theirs:?}");
    assert!(
        theirs
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("stopped before the offer was answered")),
        "{theirs:?}"
    );
    assert_eq!(downloads(&bob), Vec::<String>::new());
}

/// Alice's daemon stops while data flows: she tells Bob `Error(Paused)`,
/// not `Cancelled`, so Bob keeps what he verified, and the same offer from
/// her restarted daemon carries only the rest.
#[tokio::test]
async fn a_stopping_sender_pauses_the_transfer_and_the_receiver_keeps_its_data() {
    let src = tempfile::tempdir().unwrap();
    let path: PathBuf = src.path().join("big.bin");
    let content = random_file(&path, 32 << 20, 11);
    let source = source_of(&[path]);
    let bob = bob_receiving(AcceptPolicy::All);
    let (mut ours, mut theirs) = framed_pipe();
    let registry = Registry::default();
    let handle = outgoing(&registry, &source);
    let (events, _) = mpsc::unbounded_channel();
    let sending = async {
        let result = send::send(&mut ours, &"bob".into(), &source, &handle, CONSENT, events).await;
        ours.into_link().interrupt(STOP_GRACE).await;
        result
    };
    let stop = async {
        until_bob_verified(&bob, 2 << 20).await;
        registry.stop_all();
    };
    let receiving = async {
        bob.receiver.receive(&mut theirs, &alice_as_sender()).await;
        theirs.into_link().close(Duration::from_secs(1)).await;
    };
    let (result, (), ()) = bounded(async { tokio::join!(sending, stop, receiving) }).await;
    assert!(matches!(result, Err(TransferError::Stopping)), "{result:?}");
    let paused = &incoming(&bob)[0];
    assert_eq!(paused.state, State::Failed, "{paused:?}");
    assert!(
        paused
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("alice paused the transfer")),
        "{paused:?}"
    );
    let kept = paused.bytes_done;
    assert!(kept < content.len() as u64, "finished before the stop");
    assert_eq!(downloads(&bob).len(), 1, "{:?}", downloads(&bob));

    let (result, ours) = bounded(send_to(&bob, &source)).await;
    result.unwrap();
    assert!(
        ours.bytes_sent <= content.len() as u64 - kept,
        "sent {} again after {kept} were kept",
        ours.bytes_sent
    );
    assert!(std::fs::read(bob.downloads.join("big.bin")).unwrap() == content);
    assert_eq!(bob.resume_files(), Vec::<String>::new());
}

/// Plays a sender that offers `source` and sends only `blocks` of file 0:
/// each with its right value, or a wrong one where `bad` says so; then it
/// reads what the receiver says, and hangs up. Returns the blocks the
/// receiver asked for and its last message (if any before the hang-up).
async fn partial_sender(
    framed: &mut Framed,
    source: &Source,
    content: &[u8],
    blocks: &[(u64, bool)],
) -> (Vec<BlockRange>, Option<Message>) {
    framed
        .send(&Message::Offer(source.manifest.clone()))
        .await
        .unwrap();
    let Message::Accept { need } = framed.recv().await.unwrap() else {
        panic!("not accepted");
    };
    let bs = u64::from(source.manifest.block_size);
    for &(block, bad) in blocks {
        let start = block * bs;
        let end = ((block + 1) * bs).min(content.len() as u64);
        let mut offset = start;
        while offset < end {
            let len = (end - offset).min(MAX_DATA_CHUNK as u64);
            let data = Bytes::copy_from_slice(&content[offset as usize..(offset + len) as usize]);
            framed
                .send(&Message::Data {
                    file: 0,
                    offset,
                    data,
                })
                .await
                .unwrap();
            offset += len;
        }
        let mut value = block_hash(
            &content[start as usize..end as usize],
            content.len() as u64,
            source.manifest.block_size,
            block,
        );
        if bad {
            value[0] ^= 1;
        }
        framed
            .send(&Message::BlockValue {
                file: 0,
                block,
                value,
            })
            .await
            .unwrap();
    }
    let last = if blocks.iter().any(|(_, bad)| *bad) {
        framed.recv().await.ok()
    } else {
        None
    };
    (need, last)
}

/// Bob receiving from a [`partial_sender`], then from a real sender of the
/// same offer: what the first attempt ended with, and the bytes the real
/// sender had to send.
async fn interrupted_then_resumed(
    bob: &Bob,
    source: &Source,
    content: &[u8],
    blocks: &[(u64, bool)],
) -> (Vec<BlockRange>, Option<Message>, u64) {
    let (mut ours, mut theirs) = framed_pipe();
    let first = async {
        let answer = partial_sender(&mut ours, source, content, blocks).await;
        drop(ours);
        answer
    };
    let alice = alice_as_sender();
    let receiving = bob.receiver.receive(&mut theirs, &alice);
    let ((need, last), ()) = tokio::join!(first, receiving);
    drop(theirs);
    assert_eq!(incoming(bob)[0].state, State::Failed);
    let (result, ours) = send_to(bob, source).await;
    result.unwrap();
    (need, last, ours.bytes_sent)
}

#[tokio::test]
async fn an_interrupted_transfer_resumes_with_only_the_missing_blocks() {
    let src = tempfile::tempdir().unwrap();
    let path: PathBuf = src.path().join("video.bin");
    let content = random_file(&path, (3 << 20) + 5, 8);
    // One offer, kept for both attempts, as the send service keeps it.
    let source = source_of(&[path]);
    let bs = u64::from(source.manifest.block_size);
    assert!(content.len() as u64 > 2 * bs, "needs at least three blocks");
    let bob = bob_receiving(AcceptPolicy::All);

    let (need, _, resent) = bounded(interrupted_then_resumed(
        &bob,
        &source,
        &content,
        &[(0, false)],
    ))
    .await;
    let blocks = (content.len() as u64).div_ceil(bs);
    assert_eq!(
        need,
        [BlockRange {
            file: 0,
            first: 0,
            count: blocks
        }],
        "the first attempt asks for everything"
    );
    assert_eq!(resent, content.len() as u64 - bs, "block 0 was sent again");
    assert_eq!(
        std::fs::read(bob.downloads.join("video.bin")).unwrap(),
        content
    );
    assert_eq!(incoming(&bob)[1].state, State::Done);
}

#[tokio::test]
async fn a_block_that_fails_verification_is_refused_and_fetched_again() {
    let src = tempfile::tempdir().unwrap();
    let path: PathBuf = src.path().join("video.bin");
    let content = random_file(&path, (3 << 20) + 5, 9);
    let source = source_of(&[path]);
    let bs = u64::from(source.manifest.block_size);
    let bob = bob_receiving(AcceptPolicy::All);

    let blocks = [(0, false), (1, true)];
    let (_, last, resent) =
        bounded(interrupted_then_resumed(&bob, &source, &content, &blocks)).await;
    assert!(
        matches!(
            last,
            Some(Message::Error {
                code: ErrorCode::Integrity,
                ..
            })
        ),
        "{last:?}"
    );
    let first = &incoming(&bob)[0];
    assert!(
        first.reason.as_deref().is_some_and(|r| r.contains("block")),
        "{first:?}"
    );
    // Block 0 was verified and kept; the bad block 1 and the rest came again.
    assert_eq!(resent, content.len() as u64 - bs);
    assert_eq!(
        std::fs::read(bob.downloads.join("video.bin")).unwrap(),
        content
    );
}

/// Sends `text` to Bob's receiver; returns the sender's result.
/// Bob receiving block 0 of `source` from a [`partial_sender`] that then
/// hangs up: an interrupted transfer that keeps one block.
async fn interrupted_after_one_block(bob: &Bob, source: &Source, content: &[u8]) {
    let (mut ours, mut theirs) = framed_pipe();
    let first = async {
        partial_sender(&mut ours, source, content, &[(0, false)]).await;
        drop(ours);
    };
    let alice = alice_as_sender();
    let ((), ()) = tokio::join!(first, bob.receiver.receive(&mut theirs, &alice));
}

/// Issue 16 item 7: what an interrupted transfer keeps is listed on the
/// transfer, totalled, and dropped by `share cancel ID`.
#[tokio::test]
async fn kept_partial_data_is_listed_and_dropped_on_request() {
    let src = tempfile::tempdir().unwrap();
    let path: PathBuf = src.path().join("video.bin");
    let content = random_file(&path, (3 << 20) + 5, 10);
    let source = source_of(&[path]);
    let bob = bob_receiving(AcceptPolicy::All);
    bounded(interrupted_after_one_block(&bob, &source, &content)).await;

    let kept = bob.receiver.kept();
    assert_eq!(kept.summary().transfers, 1);
    assert_eq!(kept.summary().bytes, 1 << 20);
    let listed = kept::annotate(bob.registry.list(), &kept.list());
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].state, State::Failed);
    assert_eq!(listed[0].partial_bytes, Some(1 << 20));
    assert_eq!(downloads(&bob).len(), 1, "the staging directory");

    let id = &listed[0].id;
    let dropped = bob.receiver.drop_kept(&id[..4]).await.unwrap().unwrap();
    assert_eq!(
        (dropped.transfer.as_str(), dropped.bytes),
        (id.as_str(), 1 << 20)
    );
    assert_eq!(downloads(&bob), Vec::<String>::new());
    assert_eq!(kept.summary().transfers, 0);
    assert!(
        kept::annotate(bob.registry.list(), &kept.list())[0]
            .partial_bytes
            .is_none()
    );
    assert!(bob.receiver.drop_kept(id).await.unwrap().is_none());
    // Nothing is resumed: the same offer is a new transfer.
    let (result, ours) = bounded(send_to(&bob, &source)).await;
    result.unwrap();
    assert_eq!(ours.bytes_sent, content.len() as u64);
}

/// Issue 14 item 3: partial data of a sender that is not trusted expires
/// sooner; right away when its limit is 0, while a trusted device's stays.
#[tokio::test]
async fn a_strangers_partial_data_expires_sooner_than_a_trusted_devices() {
    let src = tempfile::tempdir().unwrap();
    let path: PathBuf = src.path().join("video.bin");
    let content = random_file(&path, (2 << 20) + 5, 11);
    let source = source_of(&[path]);
    let keep = KeepPolicy {
        untrusted_for: Duration::ZERO,
        ..KeepPolicy::default()
    };
    let bob = bob_keeping(AcceptPolicy::All, keep);
    bounded(interrupted_after_one_block(&bob, &source, &content)).await;
    assert_eq!(incoming(&bob)[0].state, State::Failed);
    assert_eq!(
        downloads(&bob),
        Vec::<String>::new(),
        "a stranger's data stayed"
    );
    assert_eq!(bob.receiver.kept().summary().transfers, 0);

    bob.trust
        .trust(super::testing::alice(), &"alice".into())
        .unwrap();
    bounded(interrupted_after_one_block(&bob, &source, &content)).await;
    assert_eq!(
        downloads(&bob).len(),
        1,
        "a trusted device's data was dropped"
    );
    assert_eq!(bob.receiver.kept().summary().bytes, 1 << 20);
}

/// All kept data together stays under the cap: the oldest goes first.
#[tokio::test]
async fn kept_partial_data_stays_under_the_cap() {
    let src = tempfile::tempdir().unwrap();
    let keep = KeepPolicy {
        max_bytes: 3 << 20,
        ..KeepPolicy::default()
    };
    let bob = bob_keeping(AcceptPolicy::All, keep);
    let mut ids = Vec::new();
    for n in 0..4 {
        let path: PathBuf = src.path().join(format!("video{n}.bin"));
        let content = random_file(&path, (2 << 20) + 5, 20 + n);
        bounded(interrupted_after_one_block(
            &bob,
            &source_of(&[path]),
            &content,
        ))
        .await;
        ids.push(incoming(&bob)[n as usize].id.clone());
    }
    let kept = bob.receiver.kept();
    assert_eq!(kept.summary().bytes, 3 << 20);
    let mut left: Vec<String> = kept.list().into_iter().map(|(_, r)| r.transfer).collect();
    left.sort();
    let mut newest = ids[1..].to_vec();
    newest.sort();
    assert_eq!(left, newest, "the oldest should have gone");
}

async fn text_to(bob: &Bob, text: &str) -> Result<(), TransferError> {
    let (mut ours, mut theirs) = framed_pipe();
    let registry = Registry::default();
    let handle = registry.start(crate::registry::NewTransfer {
        direction: crate::registry::Direction::Out,
        peer: "bob".into(),
        peer_id: super::testing::bob(),
        files: 0,
        bytes: text.len() as u64,
        transport: crate::transport::TransportKind::Quic,
        names: Vec::new(),
    });
    let (events, _) = mpsc::unbounded_channel();
    let sending = async {
        let result = text::send(&mut ours, &"bob".into(), text, &handle, CONSENT, &events).await;
        ours.into_link().close(Duration::from_secs(1)).await;
        result
    };
    let receiving = async {
        let Ok(Message::Text { text }) = theirs.recv().await else {
            panic!("no text");
        };
        text::receive(&mut theirs, bob.receiver.intake(), &alice_as_sender(), text).await;
        theirs.into_link().close(Duration::from_secs(1)).await;
    };
    let (result, ()) = tokio::join!(sending, receiving);
    result
}

#[tokio::test(start_paused = true)]
async fn a_text_lands_in_the_inbox_exactly_as_sent() {
    let bob = bob_receiving(AcceptPolicy::All);
    let text = "grüße\n\tzweite Zeile ✓";
    text_to(&bob, text).await.unwrap();
    let inbox = bob.receiver.intake().inbox().list().unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        (inbox[0].text.as_str(), inbox[0].peer.as_str()),
        (text, "alice")
    );
    let theirs = incoming(&bob);
    assert_eq!(theirs[0].state, State::Done);
    assert_eq!(theirs[0].names, ["text: grüße…"]);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_text_expires_and_is_not_stored() {
    let bob = bob_receiving(AcceptPolicy::Ask);
    let result = text_to(&bob, "hello").await;
    assert!(
        matches!(&result, Err(TransferError::Rejected { reason, .. }) if reason.contains("text expired")),
        "{result:?}"
    );
    assert!(bob.receiver.intake().inbox().list().unwrap().is_empty());
    assert_eq!(incoming(&bob)[0].state, State::Rejected);
}
