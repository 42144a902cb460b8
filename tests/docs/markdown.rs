//! Just enough Markdown for the checks: fenced blocks, inline code spans,
//! headings and their GitHub anchors, links and tables.

use std::collections::{BTreeMap, BTreeSet};

/// A Markdown file split into prose (code blocks blanked, so nothing in a
/// block counts as a link or heading) and its fenced code blocks.
pub(super) struct Markdown {
    pub(super) prose: String,
    /// (info string, lines) of each fenced block.
    pub(super) blocks: Vec<(String, Vec<String>)>,
}

pub(super) fn parse_markdown(text: &str) -> Markdown {
    let mut prose = String::new();
    let mut blocks = Vec::new();
    let mut open: Option<(String, String, Vec<String>)> = None; // (fence, info, lines)
    for line in text.lines() {
        let trimmed = line.trim_start();
        match &mut open {
            Some((fence, _, lines)) => {
                if trimmed.starts_with(fence.as_str()) && trimmed.trim_end() == fence.as_str() {
                    let (_, info, lines) = open.take().unwrap();
                    blocks.push((info, lines));
                } else {
                    lines.push(line.to_owned());
                }
                prose.push('\n');
            }
            None => {
                let fence: String = trimmed.chars().take_while(|&c| c == '`').collect();
                if fence.len() >= 3 {
                    let info = trimmed[fence.len()..].trim().to_owned();
                    open = Some((fence, info, Vec::new()));
                    prose.push('\n');
                } else {
                    prose.push_str(line);
                    prose.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "unclosed code block");
    Markdown { prose, blocks }
}

/// The inline code spans of `prose` as (start, end) byte ranges including
/// the backticks (CommonMark: a run of n backticks closes at the next run
/// of exactly n; a span never crosses a blank line).
pub(super) fn code_span_ranges(prose: &str) -> Vec<(usize, usize)> {
    let bytes = prose.as_bytes();
    let run_at = |i: usize| bytes[i..].iter().take_while(|&&b| b == b'`').count();
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let n = run_at(i);
        let mut j = i + n;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let m = run_at(j);
                if m == n {
                    close = Some(j);
                    break;
                }
                j += m;
            } else if bytes[j..].starts_with(b"\n\n") {
                break;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                ranges.push((i, j + n));
                i = j + n;
            }
            None => i += n,
        }
    }
    ranges
}

/// The text of each inline code span, line breaks as spaces.
pub(super) fn code_spans(prose: &str) -> Vec<String> {
    code_span_ranges(prose)
        .into_iter()
        .map(|(start, end)| {
            prose[start..end]
                .trim_matches('`')
                .replace('\n', " ")
                .trim()
                .to_owned()
        })
        .collect()
}

/// Prose with code spans blanked, so `[x](y)` inside code is no link.
pub(super) fn without_code_spans(prose: &str) -> String {
    let mut out = String::with_capacity(prose.len());
    let mut at = 0;
    for (start, end) in code_span_ranges(prose) {
        out.push_str(&prose[at..start]);
        at = end;
    }
    out.push_str(&prose[at..]);
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as `-`.
pub(super) fn slug(heading: &str) -> String {
    let mut text = heading.to_owned();
    // [label](target) -> label
    while let Some(open) = text.find("](") {
        let Some(close) = text[open..].find(')') else {
            break;
        };
        text.replace_range(open..open + close + 1, "");
    }
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a file defines: its headings (with GitHub's `-1`, `-2`
/// suffixes for repeats) and explicit `<a id="…">`.
pub(super) fn anchors(md: &Markdown) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in md.prose.lines() {
        if let Some(rest) = line.strip_prefix('#') {
            let heading = rest.trim_start_matches('#').trim();
            let base = slug(heading);
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            });
            *n += 1;
        }
        let mut rest = line;
        while let Some(at) = rest.find("<a id=\"") {
            let tail = &rest[at + 7..];
            let end = tail.find('"').unwrap();
            out.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    out
}

/// The targets of the inline links `[text](target)` in `prose`.
pub(super) fn link_targets(prose: &str) -> Vec<String> {
    let text = without_code_spans(prose);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("](") {
        let tail = &rest[at + 2..];
        let Some(end) = tail.find(')') else { break };
        out.push(tail[..end].trim().to_owned());
        rest = &tail[end..];
    }
    out
}

/// The rows of the first table after `heading` in `text`, as cells.
pub(super) fn table_after(text: &str, heading: &str) -> Vec<Vec<String>> {
    let at = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no heading {heading:?}"));
    text[at..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The text of a cell that is exactly one code span.
pub(super) fn only_code(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}
