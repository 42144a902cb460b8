//! The sessions against the rules of `PROTOCOL.md` that a second
//! implementation relies on, played frame by frame over an in-memory link:
//! the order of data and values (§5.5, §6 step 4), what follows the last
//! value, what a side does when its peer falls silent or never answers
//! (§6.6), and how an unknown error code is reported (§5.6).

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::framed::RecvError;
use super::testing::{Bob, alice_as_sender, bob_receiving, framed_pipe, outgoing, source_of};
use super::{TransferError, send};
use crate::intake::AcceptPolicy;
use crate::outgoing::retry::AttemptError;
use crate::protocol::hash::block_hash;
use crate::protocol::{Entry, EntryKind, ErrorCode, Manifest, Message};
use crate::registry::{Registry, State};
use crate::safe_text::PeerName;

/// The block size of the offers here: the smallest allowed.
const BS: usize = 1 << 16;

/// `session` within a minute of real time: a hang is a failure.
async fn bounded<T>(session: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), session)
        .await
        .expect("the sessions hung")
}

/// One file of `content` in 64 KiB blocks.
fn offer_of(content: &[u8]) -> Manifest {
    Manifest {
        entries: vec![Entry {
            path: "f.bin".into(),
            kind: EntryKind::File {
                size: content.len() as u64,
                tag: *blake3::hash(content).as_bytes(),
            },
        }],
        block_size: BS as u32,
    }
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A frame of file 0's data: `content[from..to]`.
fn data(content: &[u8], from: usize, to: usize) -> Message {
    Message::Data {
        file: 0,
        offset: from as u64,
        data: Bytes::copy_from_slice(&content[from..to]),
    }
}

/// The value of block `block` of file 0.
fn value(content: &[u8], block: usize) -> Message {
    let end = ((block + 1) * BS).min(content.len());
    Message::BlockValue {
        file: 0,
        block: block as u64,
        value: block_hash(
            &content[block * BS..end],
            content.len() as u64,
            BS as u32,
            block as u64,
        ),
    }
}

/// Block `block` of file 0 in one frame, then its value.
fn block(content: &[u8], block: usize) -> [Message; 2] {
    let end = ((block + 1) * BS).min(content.len());
    [data(content, block * BS, end), value(content, block)]
}

/// Bob (accepting everything) receives `content`'s offer from a sender
/// played by hand: it sends `frames` once accepted, then waits for Bob's
/// answer, which is returned (`None`: Bob hung up without one).
async fn answer_to(bob: &Bob, content: &[u8], frames: &[Message]) -> Option<Message> {
    let (mut alice, mut theirs) = framed_pipe();
    let playing = async {
        alice
            .send(&Message::Offer(offer_of(content)))
            .await
            .unwrap();
        let accept = alice.recv().await.unwrap();
        assert!(matches!(accept, Message::Accept { .. }), "{accept:?}");
        for frame in frames {
            if alice.send(frame).await.is_err() {
                break;
            }
        }
        let answer = alice.recv().await.ok();
        drop(alice);
        answer
    };
    let receiving = async {
        bob.receiver.receive(&mut theirs, &alice_as_sender()).await;
        drop(theirs);
    };
    tokio::join!(playing, receiving).0
}

fn is_protocol_error(answer: &Option<Message>) -> bool {
    matches!(
        answer,
        Some(Message::Error {
            code: ErrorCode::Protocol,
            ..
        })
    )
}

/// Blocks out of the `Accept`'s order are an error the moment they arrive:
/// never accepted, never waited out.
#[tokio::test]
async fn blocks_out_of_order_are_a_protocol_error_at_once() {
    let three = content(2 * BS + 5);
    let [b0, v0] = block(&three, 0);
    let [b1, v1] = block(&three, 1);
    let [b2, v2] = block(&three, 2);
    let cases: [(&str, Vec<Message>); 4] = [
        (
            "reverse order",
            vec![
                b2.clone(),
                v2.clone(),
                b1.clone(),
                v1,
                b0.clone(),
                v0.clone(),
            ],
        ),
        ("a later block that starts on a boundary", vec![b1.clone()]),
        (
            "interleaved blocks",
            vec![data(&three, 0, 10), data(&three, BS, BS + 10)],
        ),
        ("a block skipped", vec![b0, v0, b2, v2]),
    ];
    for (case, frames) in cases {
        let bob = bob_receiving(AcceptPolicy::All);
        let answer = bounded(answer_to(&bob, &three, &frames)).await;
        assert!(is_protocol_error(&answer), "{case}: {answer:?}");
        let theirs = bob.registry.list();
        assert_eq!(theirs[0].state, State::Failed, "{case}");
        assert!(
            std::fs::read_dir(&bob.downloads).unwrap().next().is_none(),
            "{case}: data kept"
        );
    }
}

/// Whatever follows the last requested value is not read: the answer is
/// `Done` and the file is in place.
#[tokio::test]
async fn frames_after_the_last_value_change_nothing() {
    let two = content(BS + 7);
    let mut frames: Vec<Message> = [block(&two, 0), block(&two, 1)].concat();
    frames.push(data(&two, 0, 10));
    let bob = bob_receiving(AcceptPolicy::All);
    let answer = bounded(answer_to(&bob, &two, &frames)).await;
    assert_eq!(answer, Some(Message::Done));
    assert_eq!(std::fs::read(bob.downloads.join("f.bin")).unwrap(), two);
}

/// A sender that falls silent while it owes a frame is told so with
/// `Error(Io)` (which it retries), not left with a silent close; before
/// its offer too.
#[tokio::test]
async fn a_silent_sender_gets_an_error_not_a_silent_close() {
    let two = content(BS + 7);
    let mut bob = bob_receiving(AcceptPolicy::All);
    bob.receiver.set_message_timeout(Duration::from_millis(200));
    // Half of block 0, then nothing.
    let answer = bounded(answer_to(&bob, &two, &[data(&two, 0, 10)])).await;
    assert!(
        matches!(
            answer,
            Some(Message::Error {
                code: ErrorCode::Io,
                ..
            })
        ),
        "{answer:?}"
    );
    // Nothing at all after Hello.
    let (mut alice, mut theirs) = framed_pipe();
    let sender = alice_as_sender();
    let receiving = bob.receiver.receive(&mut theirs, &sender);
    let (answer, ()) = bounded(async { tokio::join!(alice.recv(), receiving) }).await;
    assert!(
        matches!(
            answer,
            Ok(Message::Error {
                code: ErrorCode::Io,
                ..
            })
        ),
        "{answer:?}"
    );
}

/// A sender whose offer gets no answer within its consent wait withdraws
/// it (`Error(Cancelled)`) and does not try again: the receiving user has
/// been asked once.
#[tokio::test(start_paused = true)]
async fn an_unanswered_offer_is_withdrawn_and_not_retried() {
    let src = tempfile::tempdir().unwrap();
    super::testing::random_file(&src.path().join("a.bin"), 1000, 1);
    let source = source_of(&[src.path().join("a.bin")]);
    let (mut alice, mut bob) = framed_pipe();
    let registry = Registry::default();
    let handle = outgoing(&registry, &source);
    let (events, _) = mpsc::unbounded_channel();
    let consent = Duration::from_secs(150);
    let bob_name = PeerName::from("bob");
    let sending = send::send(&mut alice, &bob_name, &source, &handle, consent, events);
    // Bob reads the offer, then never answers.
    let silent = async {
        assert!(matches!(bob.recv().await, Ok(Message::Metadata(_))));
        assert!(matches!(bob.recv().await, Ok(Message::Offer(_))));
        bob.recv_within(Duration::from_secs(3600)).await
    };
    let (result, told) = tokio::join!(sending, silent);
    let e = result.unwrap_err();
    assert!(
        matches!(e, TransferError::NoAnswer { waited: 150, .. }),
        "{e:?}"
    );
    assert!(
        matches!(
            told,
            Ok(Message::Error {
                code: ErrorCode::Cancelled,
                ..
            })
        ),
        "{told:?}"
    );
    assert!(!AttemptError::Transfer(e).retryable());
    // A transfer that timed out between frames, by contrast, is retried.
    assert!(AttemptError::Transfer(TransferError::from(RecvError::Timeout(30))).retryable());
}

/// An error code this side does not know is reported with its number.
#[tokio::test]
async fn an_unknown_error_code_is_reported_with_its_number() {
    let two = content(BS + 7);
    let bob = bob_receiving(AcceptPolicy::All);
    let stop = Message::Error {
        code: ErrorCode::Other(42),
        message: "gremlins".into(),
    };
    let answer = bounded(answer_to(&bob, &two, &[stop])).await;
    assert_eq!(answer, None, "an Error is never answered");
    let reason = bob.registry.list()[0].reason.clone().unwrap();
    assert!(reason.contains("error code 42: gremlins"), "{reason}");
}
