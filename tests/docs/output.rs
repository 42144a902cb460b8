//! The output the docs show has the shape of real output, which two
//! loopback daemons produce: every key path of a `--json` example of
//! `docs/cli.md` is in the real document and the other way round, and
//! every table header shown after a `$ share peers` (`transfers`, …)
//! prompt in any Markdown file is the one the command prints.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::markdown::parse_markdown;
use super::{markdown_files, read};
use crate::common::{TestDaemon, random_file};

/// Keys the daemon writes only in some cases (a `reason` once something
/// did not succeed, a doctor check's `fix` when there is something to do,
/// the reach test's `errors` when a connection failed, its `unresolved`
/// for a name that names no single device, a transfer's `partial_bytes`
/// when it kept partial data, `expires_in_s` for an offer waiting for a
/// decision, a pairing's `already_trusted`). The docs say so next to each
/// example; an example may show them or not.
const SOMETIMES: &[&str] = &[
    "reason",
    "fix",
    "errors",
    "partial_bytes",
    "expires_in_s",
    "unresolved",
    "already_trusted",
];

/// Every key path of `value`: `a.b`, with `[]` for array elements (the
/// union over all elements).
fn key_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                out.insert(path.clone());
                key_paths(v, &path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

fn paths(value: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    key_paths(value, "", &mut out);
    out
}

/// The `json` code blocks under each `### share …` heading of cli.md.
fn examples(text: &str) -> Vec<(String, Vec<Value>)> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    let mut block: Option<Vec<&str>> = None; // inside a json block
    let mut in_other = false; // inside another fenced block
    for line in text.lines() {
        let fence = line.trim_start().starts_with("```");
        match (&mut block, fence) {
            (Some(lines), false) => lines.push(line),
            (Some(lines), true) => {
                let value: Value = serde_json::from_str(&lines.join("\n"))
                    .unwrap_or_else(|e| panic!("docs/cli.md: invalid JSON example: {e}"));
                out.last_mut()
                    .expect("a JSON example before any command")
                    .1
                    .push(value);
                block = None;
            }
            (None, true) if !in_other && line.trim() == "```json" => block = Some(Vec::new()),
            (None, true) => in_other = !in_other,
            (None, false) if !in_other => {
                if let Some(heading) = line.strip_prefix("### ") {
                    out.push((heading.to_owned(), Vec::new()));
                }
            }
            (None, false) => {}
        }
    }
    out
}

#[test]
fn documented_output_has_the_shape_of_real_output() {
    let desktop = TestDaemon::start("desktop");
    let laptop = TestDaemon::builder("laptop").spawn();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.pdf");
    random_file(&file, 200_000, 1);
    let file = file.to_str().unwrap();

    let added = laptop.cli(&["peers", "add", &desktop.addr()]);
    assert!(added.status.success(), "{added:?}");
    let failed = laptop.cli(&["send", "127.0.0.1:1", file, "--json"]);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let text = laptop.json(&["send", "desktop", "--text", "Grüße ✓"]);
    laptop.json(&["send", "--queue", "127.0.0.1:1", file]);
    // An offer to the laptop (which asks), taken by `share receive`.
    let offering = std::process::Command::new(crate::common::share_bin())
        .args(["send", &laptop.addr(), file])
        .env("SHARE_SOCKET", &desktop.socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    laptop.wait_transfer("an offer", |t| t["state"] == "pending");
    let received = laptop.json(&["receive", "--yes-untrusted"]);
    assert!(offering.wait_with_output().unwrap().status.success());
    let real: Vec<(&str, usize, Value)> = vec![
        ("share receive", 0, received),
        ("share id", 0, laptop.json(&["id"])),
        ("share status", 0, laptop.json(&["status"])),
        ("share peers", 0, laptop.json(&["peers"])),
        ("share send", 0, laptop.json(&["send", "desktop", file])),
        ("share send", 1, text),
        (
            "share send",
            2,
            serde_json::from_slice(&failed.stdout).unwrap(),
        ),
        ("share transfers", 0, desktop.json(&["transfers"])),
        ("share history", 0, desktop.json(&["history"])),
        ("share inbox", 0, desktop.json(&["inbox"])),
        ("share pair", 0, laptop.json(&["pair", "desktop"])),
        ("share doctor", 0, laptop.json(&["doctor", "desktop"])),
        ("share queue", 0, laptop.json(&["queue"])),
    ];

    let tables: Vec<(&str, String)> = vec![
        ("peers", header(&laptop, &["peers"])),
        ("transfers", header(&desktop, &["transfers"])),
        ("history", header(&desktop, &["history"])),
        ("inbox", header(&desktop, &["inbox"])),
        ("queue", header(&laptop, &["queue"])),
        ("pair --list", header(&laptop, &["pair", "--list"])),
    ];
    check_table_headers(&tables);

    let docs = examples(&read(Path::new("docs/cli.md")));
    let mut wrong = Vec::new();
    for (section, index, output) in &real {
        let example = docs
            .iter()
            .find(|(heading, _)| heading == section)
            .and_then(|(_, values)| values.get(*index))
            .unwrap_or_else(|| panic!("docs/cli.md: no JSON example {index} under {section}"));
        let (shown, actual) = (paths(example), paths(output));
        let optional = |p: &&String| {
            let last = p.rsplit(['.', ']']).next().unwrap_or_default();
            !SOMETIMES.contains(&last)
        };
        let invented: Vec<_> = shown.difference(&actual).filter(optional).collect();
        let missing: Vec<_> = actual.difference(&shown).filter(optional).collect();
        if !invented.is_empty() || !missing.is_empty() {
            wrong.push(format!(
                "{section} (example {index}): not in real output {invented:?}, \
                 not in the example {missing:?}\n  real: {output}"
            ));
        }
    }
    assert!(wrong.is_empty(), "docs/cli.md:\n{}", wrong.join("\n"));
}

/// The first line `share ARGS` prints: a table's header.
fn header(daemon: &TestDaemon, args: &[&str]) -> String {
    let out = daemon.cli(args);
    assert!(out.status.success(), "share {args:?}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

/// Tables whose columns are as wide as their widest value.
const SIZED_TO_CONTENT: &[&str] = &["transfers"];

/// In every code block, the line after `host$ share COMMAND` is that
/// command's real header.
fn check_table_headers(tables: &[(&str, String)]) {
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        for (_, lines) in parse_markdown(&read(&file)).blocks {
            for pair in lines.windows(2) {
                let Some((_, command)) = pair[0].split_once("$ share ") else {
                    continue;
                };
                let Some((_, real)) = tables.iter().find(|(c, _)| *c == command.trim()) else {
                    continue;
                };
                checked += 1;
                // Its columns are as wide as their values: the same
                // column names, in order.
                let same = if SIZED_TO_CONTENT.contains(&command.trim()) {
                    pair[1].split_whitespace().eq(real.split_whitespace())
                } else {
                    pair[1].trim_end() == real
                };
                if !same {
                    wrong.push(format!(
                        "{}: after `share {command}`:\n  shown: {}\n  real:  {real}",
                        file.display(),
                        pair[1].trim_end()
                    ));
                }
            }
        }
    }
    assert!(checked >= 4, "only {checked} table headers found");
    assert!(wrong.is_empty(), "table headers:\n{}", wrong.join("\n"));
}
