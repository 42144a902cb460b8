//! The examples and test vectors of `PROTOCOL.md`, checked against the
//! codec, the block hashes and the pairing code straight from the
//! document's text: the specification a second implementation is written
//! from cannot drift from what this one does without a test failing.
//!
//! A checked block is a fenced code block right after a line
//! `<!-- example: NAME -->` (frames) or `<!-- vector: NAME -->` (other
//! values). On each line of an example, the leading two-digit hex numbers
//! are bytes and the rest is commentary.

use bytes::BytesMut;

use super::hash::{block_hash, file_hash};
use super::{
    BlockRange, Entry, EntryKind, EntryMeta, ErrorCode, Manifest, Message, Mtime, decode, encode,
};

/// The specification, as compiled in (no file access at test time).
const SPEC: &str = include_str!("../../PROTOCOL.md");

/// The fenced blocks marked `<!-- KIND: NAME -->`, as (name, text), in
/// the document's order.
pub(crate) fn marked(kind: &str) -> Vec<(&'static str, &'static str)> {
    let marker = format!("<!-- {kind}: ");
    let mut found = Vec::new();
    let mut rest = SPEC;
    while let Some(at) = rest.find(&marker) {
        let after = &rest[at + marker.len()..];
        let (name, after) = after.split_once(" -->").expect("a marker ends with -->");
        let after = after.trim_start_matches('\n');
        let body = after
            .strip_prefix("```\n")
            .unwrap_or_else(|| panic!("{kind} {name:?} is not followed by a fenced block"));
        let (text, after) = body.split_once("\n```").expect("the fenced block ends");
        found.push((name, text));
        rest = after;
    }
    found
}

/// The one block marked `<!-- vector: NAME -->`.
pub(crate) fn vector(name: &str) -> &'static str {
    let all = marked("vector");
    let mut matching = all.iter().filter(|(n, _)| *n == name);
    let (_, text) = matching
        .next()
        .unwrap_or_else(|| panic!("PROTOCOL.md has no vector {name:?}"));
    assert!(matching.next().is_none(), "vector {name:?} appears twice");
    text
}

/// The leading two-digit hex numbers of `line`, and the rest of it.
pub(crate) fn leading_bytes(line: &str) -> (Vec<u8>, &str) {
    let mut bytes = Vec::new();
    let mut rest = line.trim_start();
    loop {
        let token_end = rest.find(' ').unwrap_or(rest.len());
        let token = &rest[..token_end];
        match (token.len(), u8::from_str_radix(token, 16)) {
            (2, Ok(byte)) if token.bytes().all(|b| b.is_ascii_hexdigit()) => {
                bytes.push(byte);
                rest = rest[token_end..].trim_start();
            }
            _ => return (bytes, rest),
        }
    }
}

/// A vector line `label   value`: the label, and the value's leading
/// bytes (or the value itself, when it is no bytes).
fn labelled(line: &str) -> (&str, Vec<u8>, &str) {
    let (label, value) = line
        .split_once("  ")
        .unwrap_or_else(|| panic!("vector line without a label: {line:?}"));
    let (bytes, rest) = leading_bytes(value);
    (label.trim(), bytes, rest.trim())
}

fn value_32(bytes: Vec<u8>) -> [u8; 32] {
    bytes.try_into().expect("a 32-byte value")
}

/// What each example decodes to.
fn expected(name: &str) -> Vec<Message> {
    let hello = blake3::hash(b"hello");
    let nonce = *b"0123456789abcdef";
    match name {
        "hello" => vec![Message::Hello {
            version: 1,
            name: "laptop".into(),
        }],
        "offer" => vec![Message::Offer(Manifest {
            entries: vec![
                Entry {
                    path: "docs".into(),
                    kind: EntryKind::Directory,
                },
                Entry {
                    path: "docs/hi.txt".into(),
                    kind: EntryKind::File {
                        size: 5,
                        tag: [0xaa; 32],
                    },
                },
            ],
            block_size: 1 << 20,
        })],
        "accept" => vec![Message::Accept {
            need: vec![BlockRange {
                file: 1,
                first: 0,
                count: 1,
            }],
        }],
        "accept-nothing" => vec![Message::Accept { need: vec![] }],
        "data" => vec![Message::Data {
            file: 1,
            offset: 0,
            data: bytes::Bytes::from_static(b"hello"),
        }],
        "block-value" => vec![Message::BlockValue {
            file: 1,
            block: 0,
            value: *hello.as_bytes(),
        }],
        "done" => vec![Message::Done],
        "error" => vec![Message::Error {
            code: ErrorCode::Refused,
            message: "version mismatch".into(),
        }],
        "pairing" => vec![
            Message::PairRequest,
            Message::PairConfirm { accepted: true },
        ],
        "metadata" => vec![Message::Metadata(vec![
            EntryMeta::default(),
            EntryMeta {
                mtime: Some(Mtime {
                    sec: 1_700_000_000,
                    nsec: 500_000_000,
                }),
                executable: true,
            },
        ])],
        "text" => vec![Message::Text {
            text: "hi \u{2713}".into(),
        }],
        "probe" => vec![
            Message::Probe { port: 47000, nonce },
            Message::Echo { nonce },
            Message::ProbeResult {
                quic: false,
                tcp: true,
            },
        ],
        other => panic!("PROTOCOL.md has an example {other:?} that no test checks"),
    }
}

/// Every example in the document, byte for byte, both ways; and the
/// document still has every example the test knows.
#[test]
fn every_example_in_the_spec_decodes_and_encodes_to_its_bytes() {
    let examples = marked("example");
    for (name, text) in &examples {
        let bytes: Vec<u8> = text.lines().flat_map(|l| leading_bytes(l).0).collect();
        let messages = expected(name);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut decoded = Vec::new();
        while let Some(m) = decode(&mut buf).unwrap_or_else(|e| panic!("example {name}: {e}")) {
            decoded.push(m);
        }
        assert!(buf.is_empty(), "example {name}: bytes left over");
        assert_eq!(decoded, messages, "example {name}");
        let mut encoded = BytesMut::new();
        for m in &messages {
            encode(m, &mut encoded).unwrap();
        }
        assert_eq!(encoded.to_vec(), bytes, "example {name}");
    }
    let names: Vec<&str> = examples.iter().map(|(n, _)| *n).collect();
    for name in [
        "hello",
        "offer",
        "accept",
        "accept-nothing",
        "data",
        "block-value",
        "done",
        "error",
        "pairing",
        "text",
        "probe",
        "metadata",
    ] {
        assert!(
            names.contains(&name),
            "PROTOCOL.md lost the example {name:?}"
        );
    }
}

/// §5.5: every block value of the multi-block file, the two parent nodes
/// and the root.
#[test]
fn the_block_values_vector_is_the_hash_tree_of_its_file() {
    let file: Vec<u8> = (0..3 * 65_536 + 5).map(|i: u32| (i % 251) as u8).collect();
    let block_size = 65_536u32;
    let mut blocks = Vec::new();
    let mut parents = Vec::new();
    let mut root = None;
    for line in vector("block-values").lines() {
        let (label, bytes, _) = labelled(line);
        let value = value_32(bytes);
        match label.split_once(' ') {
            Some(("block", n)) => {
                assert_eq!(n.parse::<usize>().unwrap(), blocks.len(), "blocks in order");
                blocks.push(value);
            }
            Some(("parent", _)) => parents.push(value),
            Some(("file", "hash")) => root = Some(value),
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert_eq!(blocks.len(), 4);
    for (i, (chunk, value)) in file.chunks(block_size as usize).zip(&blocks).enumerate() {
        let ours = block_hash(chunk, file.len() as u64, block_size, i as u64);
        assert_eq!(&ours, value, "block {i}");
    }
    let merge = |l: &[u8; 32], r: &[u8; 32]| {
        blake3::hazmat::merge_subtrees_non_root(l, r, blake3::hazmat::Mode::Hash)
    };
    assert_eq!(
        parents,
        [merge(&blocks[0], &blocks[1]), merge(&blocks[2], &blocks[3])]
    );
    let root = root.expect("the file hash");
    assert_eq!(root, *blake3::hash(&file).as_bytes());
    assert_eq!(
        file_hash(&blocks, file.len() as u64, block_size),
        Some(root)
    );
}

/// §6.4: exporter output to pairing code.
#[test]
fn the_pairing_code_vector() {
    let lines: Vec<_> = vector("pairing-code").lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let (bytes, code) = leading_bytes(line);
        let exporter: [u8; 8] = bytes.try_into().expect("8 exporter bytes");
        let shown = format!(
            "{:0width$}",
            super::pairing_code(exporter),
            width = super::PAIRING_CODE_DIGITS as usize
        );
        assert_eq!(shown, code.trim(), "{line}");
    }
}
