//! The documentation against the code: what the Markdown files say about
//! commands, flags, config keys and each other must stay true.
//!
//! - every relative link in a `*.md` file names an existing file, and its
//!   `#anchor` an existing heading;
//! - every `share …` command shown in the docs parses with the real clap
//!   definitions (no removed command, flag or value);
//! - the `--help` blocks of `docs/cli.md` are exactly what clap prints
//!   (regenerate them with `LANSHARE_UPDATE_DOCS=1 cargo test --locked
//!   --test tests docs::`);
//! - the config keys table of `docs/configuration.md` lists exactly the
//!   keys of the config file, each with its real flag and default.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use lanshare::cli::Cli;

/// The repository root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every Markdown file of the repository, relative to the root (build
/// output, caches and hidden directories other than `.ci` excluded).
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let skip = name == "target" || (name.starts_with('.') && name != ".ci");
                if !skip {
                    walk(&path, out);
                }
            } else if name.ends_with(".md") {
                out.push(path.strip_prefix(root()).unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root(), &mut out);
    out
}

fn read(rel: &Path) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap()
}

/// A Markdown file split into prose (code blocks blanked, so nothing in a
/// block counts as a link or heading) and its fenced code blocks.
struct Markdown {
    prose: String,
    /// (info string, lines) of each fenced block.
    blocks: Vec<(String, Vec<String>)>,
}

fn parse_markdown(text: &str) -> Markdown {
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
fn code_span_ranges(prose: &str) -> Vec<(usize, usize)> {
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
fn code_spans(prose: &str) -> Vec<String> {
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
fn without_code_spans(prose: &str) -> String {
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
fn slug(heading: &str) -> String {
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
fn anchors(md: &Markdown) -> BTreeSet<String> {
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
fn link_targets(prose: &str) -> Vec<String> {
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

#[test]
fn relative_links_in_markdown_point_to_existing_files_and_anchors() {
    let files = markdown_files();
    assert!(files.iter().any(|f| f == Path::new("README.md")));
    let mut broken = Vec::new();
    for file in &files {
        let md = parse_markdown(&read(file));
        for target in link_targets(&md.prose) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            if path.starts_with('/') {
                broken.push(format!("{}: {target}: absolute path", file.display()));
                continue;
            }
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !root().join(&resolved).exists() {
                broken.push(format!("{}: {target}: no such file", file.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let is_md = resolved.extension().is_some_and(|e| e == "md");
                if is_md && !anchors(&parse_markdown(&read(&resolved))).contains(anchor) {
                    broken.push(format!("{}: {target}: no such heading", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Sample values for the placeholders the docs write in upper case, where
/// the argument has a type clap checks.
const PLACEHOLDERS: &[(&str, &str)] = &[
    ("PORT", "47000"),
    ("ADDR", "::"),
    ("SECS", "5"),
    ("N", "5"),
    ("SHELL", "bash"),
];

/// The `share …` invocations the docs show: lines of code blocks (after
/// a `host$ ` prompt) and inline code spans, as argument vectors. Shell
/// syntax ends a command (`|`, `>`, `&`, `;`, `#`); a leading `sudo` or
/// `VAR=value` is dropped and `cargo run --release --` counts as `share`.
/// Synopsis notation is expanded: `[X]` as X, `a|b` as a, `PATH...` as
/// PATH.
fn share_commands(text: &str) -> Vec<Shown> {
    let md = parse_markdown(text);
    let mut candidates: Vec<(String, bool)> = code_spans(&md.prose)
        .into_iter()
        .map(|span| (span.replace("\\|", "|"), true))
        .collect();
    // Help output (`Usage: share …`) shows synopses, not commands.
    let is_help = |lines: &[String]| lines.iter().any(|l| l.starts_with("Usage: share"));
    for (_, lines) in md.blocks.iter().filter(|(_, lines)| !is_help(lines)) {
        for line in lines {
            let line = line.trim();
            // `laptop$ share …`, `$ share …`
            let line = match line.split_once("$ ") {
                Some((prompt, rest)) if !prompt.contains(' ') => rest,
                _ => line,
            };
            candidates.push((line.to_owned(), false));
        }
    }
    let mut out = Vec::new();
    for (candidate, inline) in candidates {
        let mut words = split_words(&candidate);
        while words
            .first()
            .is_some_and(|w| w == "sudo" || (w.contains('=') && !w.starts_with('-')))
        {
            words.remove(0);
        }
        if words.starts_with(&[
            "cargo".into(),
            "run".into(),
            "--release".into(),
            "--".into(),
        ]) {
            words.splice(0..4, ["share".to_owned()]);
        }
        if words.first().map(String::as_str) != Some("share") || words.len() < 2 {
            continue;
        }
        let end = words
            .iter()
            .position(|w| {
                ["|", "||", "&&", "&", ";", ">", "2>", "<"].contains(&w.as_str())
                    || w.starts_with('#')
            })
            .unwrap_or(words.len());
        words.truncate(end);
        let mut elided = false;
        let mut args = Vec::new();
        for word in words {
            if word == "…" || word == "..." {
                elided = true;
                continue;
            }
            let word = word.trim_start_matches('[').trim_end_matches(']');
            let word = word.strip_suffix("...").unwrap_or(word);
            let word = match word.split_once('|') {
                Some((first, _)) => first,
                None => word,
            };
            let word = PLACEHOLDERS
                .iter()
                .find(|(p, _)| *p == word)
                .map_or(word, |(_, v)| v);
            if !word.is_empty() {
                args.push(word.to_owned());
            }
        }
        out.push(Shown {
            text: candidate,
            args,
            elided,
            inline,
        });
    }
    out
}

/// A `share` command as the docs show it.
struct Shown {
    /// As written.
    text: String,
    /// As parsed, placeholders filled in.
    args: Vec<String>,
    /// Part of it is left out (`share send … --json`).
    elided: bool,
    /// An inline code span, which may name a command without its
    /// arguments (`share send --queue`); a code block line is a whole
    /// command.
    inline: bool,
}

/// Whether `shown` is a command the CLI accepts.
fn check_shown(shown: &Shown) -> Result<(), String> {
    use clap::error::ErrorKind;
    if shown.elided {
        return check_names(&shown.args);
    }
    let Err(e) = Cli::try_parse_from(&shown.args) else {
        return Ok(());
    };
    let incomplete = matches!(
        e.kind(),
        ErrorKind::MissingRequiredArgument
            | ErrorKind::MissingSubcommand
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) || (e.kind() == ErrorKind::InvalidValue
        && shown.args.last().is_some_and(|a| a.starts_with("--")));
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Ok(()),
        _ if incomplete && shown.inline => check_names(&shown.args),
        _ => Err(e.render().to_string()),
    }
}

/// Splits a command line into words, keeping quoted parts together.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Checks an elided command (`share send … --json`): its subcommands and
/// flags exist, whatever the values.
fn check_names(args: &[String]) -> Result<(), String> {
    let mut cmd = Cli::command();
    cmd.build();
    let globals: Vec<clap::Arg> = cmd.get_arguments().cloned().collect();
    let mut current = cmd;
    let mut words = args[1..].iter().peekable();
    while let Some(word) = words.next() {
        if let Some(flag) = word.strip_prefix("--") {
            let flag = flag.split_once('=').map_or(flag, |(f, _)| f);
            let arg = current
                .get_arguments()
                .chain(globals.iter())
                .find(|a| a.get_long() == Some(flag))
                .ok_or_else(|| format!("no flag --{flag} on `{}`", current.get_name()))?;
            if arg.get_action().takes_values() && !word.contains('=') {
                words.next();
            }
        } else if let Some(sub) = current.find_subcommand(word) {
            current = sub.clone();
        }
    }
    Ok(())
}

#[test]
fn every_share_command_in_the_docs_parses() {
    let mut bad = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        for shown in share_commands(&read(&file)) {
            checked += 1;
            if let Err(e) = check_shown(&shown) {
                let e = e.lines().next().unwrap_or_default().to_owned();
                bad.push(format!("{}: `{}`: {e}", file.display(), shown.text));
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} commands found: is the scan broken?"
    );
    assert!(
        bad.is_empty(),
        "commands the CLI does not accept:\n{}",
        bad.join("\n")
    );
}

/// `share --help` and the `--help` of every subcommand, by command line
/// (`share peers add`), as `docs/cli.md` shows them. The options every
/// command has (`--socket`, `-h`, `-V`) are shown once, under `share`;
/// the `help` subcommand is left out, and environment values are hidden
/// so the text does not depend on who runs the test.
fn help_texts() -> Vec<(String, String)> {
    fn text(cmd: &mut clap::Command) -> String {
        let help = cmd.render_long_help().to_string();
        let lines: Vec<&str> = help.lines().map(str::trim_end).collect();
        lines.join("\n").trim().to_owned()
    }
    fn visit(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = format!("{path} {}", sub.get_name());
            let mut shown = sub.clone().mut_args(|a| {
                let shared = a.is_global_set() || matches!(a.get_id().as_str(), "help" | "version");
                a.hide(shared)
            });
            out.push((name.clone(), text(&mut shown)));
            visit(sub, &name, out);
        }
    }
    let mut cmd = Cli::command()
        .disable_help_subcommand(true)
        .mut_arg("socket", |a| a.hide_env_values(true));
    cmd.build();
    let mut out = vec![("share".to_owned(), text(&mut cmd.clone()))];
    visit(&cmd, "share", &mut out);
    out
}

/// The generated blocks of `text`: command line -> (range of the block's
/// body, body).
fn help_blocks(text: &str) -> BTreeMap<String, (std::ops::Range<usize>, String)> {
    let mut blocks = BTreeMap::new();
    let mut rest = 0;
    while let Some(at) = text[rest..].find("<!-- BEGIN ") {
        let begin = rest + at;
        let line_end = begin + text[begin..].find('\n').unwrap();
        let marker = &text[begin + "<!-- BEGIN ".len()..line_end];
        let name = marker
            .strip_suffix(" --help -->")
            .unwrap_or_else(|| panic!("bad marker {marker:?}"))
            .to_owned();
        let end_marker = format!("<!-- END {name} --help -->");
        let end = line_end + text[line_end..].find(&end_marker).expect(&end_marker);
        let body = text[line_end + 1..end].to_owned();
        assert!(
            blocks
                .insert(name.clone(), (line_end + 1..end, body))
                .is_none(),
            "{name} twice"
        );
        rest = end;
    }
    blocks
}

#[test]
fn cli_reference_shows_what_help_prints() {
    let path = root().join("docs/cli.md");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let blocks = help_blocks(&text);
    let expected = help_texts();
    let missing: Vec<&str> = expected
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| !blocks.contains_key(*name))
        .collect();
    let unknown: Vec<&String> = blocks
        .keys()
        .filter(|name| !expected.iter().any(|(n, _)| n == *name))
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/cli.md: add a section with `<!-- BEGIN … --help -->` / `<!-- END … --help -->` \
         markers for {missing:?}; remove the sections of {unknown:?}, which no longer exist"
    );
    let mut stale = Vec::new();
    // From the end, so earlier ranges stay valid while replacing.
    let mut replacements: Vec<_> = expected
        .iter()
        .filter_map(|(name, help)| {
            let (range, body) = &blocks[name];
            let want = format!("```text\n{help}\n```\n");
            (*body != want).then(|| (range.clone(), want, name))
        })
        .collect();
    replacements.sort_by_key(|(range, _, _)| std::cmp::Reverse(range.start));
    for (range, want, name) in replacements {
        stale.push(name.clone());
        text.replace_range(range, &want);
    }
    if stale.is_empty() {
        return;
    }
    if std::env::var_os("LANSHARE_UPDATE_DOCS").is_some() {
        std::fs::write(&path, text).unwrap();
        eprintln!("docs/cli.md: updated {stale:?}");
        return;
    }
    panic!(
        "docs/cli.md shows an outdated --help for {stale:?}; regenerate with \
         `LANSHARE_UPDATE_DOCS=1 cargo test --locked --test tests docs::cli_reference`, \
         then check that the text around each block still fits"
    );
}

/// The names of a struct's fields as serde sees them (what a config file
/// may set), read from the derive's `deserialize_struct` call.
fn serde_fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor, value};

    struct Introspect<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Introspect<'_> {
        type Error = value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, value::Error> {
            Err(value::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, value::Error> {
            *self.0 = fields;
            Err(value::Error::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Introspect(&mut fields));
    fields
}

/// The rows of the first table after `heading` in `text`, as cells.
fn table_after(text: &str, heading: &str) -> Vec<Vec<String>> {
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
fn only_code(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}

#[test]
fn config_keys_table_matches_the_config_file_and_the_flags() {
    use lanshare::config::{Config, Env, FileConfig};

    let text = read(Path::new("docs/configuration.md"));
    let rows = table_after(&text, "## Keys and flags");
    let documented: Vec<&str> = rows.iter().map(|r| only_code(&r[0]).unwrap()).collect();
    let keys = serde_fields::<FileConfig>();
    assert!(keys.len() > 10, "introspection found only {keys:?}");
    let keys: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(
        documented.iter().copied().collect::<BTreeSet<_>>(),
        keys,
        "docs/configuration.md: the keys table must list exactly the config file's keys"
    );

    // Flags: each one documented exists on `share daemon` (or globally),
    // and every daemon flag but --config is in the table.
    let mut cmd = Cli::command();
    cmd.build();
    let daemon = cmd.find_subcommand("daemon").unwrap();
    let flags: BTreeSet<String> = daemon
        .get_arguments()
        .chain(cmd.get_arguments())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .filter(|f| !["--help", "--version", "--config"].contains(&f.as_str()))
        .collect();
    let mut in_table = BTreeSet::new();
    for row in &rows {
        for word in row[3].split(|c: char| c == '`' || c == ',' || c.is_whitespace()) {
            if word.starts_with("--") {
                assert!(flags.contains(word), "{}: no flag {word}", row[0]);
                in_table.insert(word.to_owned());
            }
        }
    }
    assert_eq!(
        in_table, flags,
        "every daemon flag belongs in the keys table"
    );

    // Defaults written as a value: setting the key to it changes nothing.
    let env = Env {
        home: Some("/home/u".into()),
        xdg_runtime_dir: Some("/run/user/1000".into()),
        uid: 1000,
        ..Env::default()
    };
    let default = format!(
        "{:?}",
        Config::resolve(FileConfig::default(), &env).unwrap()
    );
    let mut checked = 0;
    for row in &rows {
        let (key, cell) = (only_code(&row[0]).unwrap(), &row[2]);
        let Some(value) = only_code(cell) else {
            continue;
        };
        let file: FileConfig = toml::from_str(&format!("{key} = {value}"))
            .unwrap_or_else(|e| panic!("{key}: default {value} is not a valid value: {e}"));
        let set = format!("{:?}", Config::resolve(file, &env).unwrap());
        assert_eq!(set, default, "{key}: the default is not {value}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} defaults checked");

    // The example file is valid.
    let md = parse_markdown(&text);
    for (info, lines) in md.blocks.iter().filter(|(info, _)| info == "toml") {
        toml::from_str::<FileConfig>(&lines.join("\n"))
            .unwrap_or_else(|e| panic!("docs/configuration.md: invalid {info} example: {e}"));
    }
}

#[test]
fn architecture_lists_exactly_the_crate_modules() {
    let lib = read(Path::new("src/lib.rs"));
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .map(str::to_owned)
        .collect();
    let text = read(Path::new("ARCHITECTURE.md"));
    let listed: BTreeSet<String> = table_after(&text, "## Module map")
        .iter()
        .map(|r| only_code(&r[0]).unwrap().to_owned())
        .collect();
    assert_eq!(
        listed, modules,
        "ARCHITECTURE.md's module map vs src/lib.rs"
    );
}

#[test]
fn source_paths_named_in_the_docs_exist() {
    const TREE: &[&str] = &[
        "src/",
        "tests/",
        "systemd/",
        "packaging/",
        "bench/",
        "certs/",
        ".ci/",
    ];
    // Written by the benchmark, not in the repository.
    const GENERATED: &[&str] = &["bench/results/", "bench/.cache/"];
    let mut missing = Vec::new();
    for file in markdown_files() {
        let md = parse_markdown(&read(&file));
        for span in code_spans(&md.prose) {
            let is_path = TREE.iter().any(|p| span.starts_with(p))
                && !GENERATED.iter().any(|p| span.starts_with(p))
                && !span.contains(|c: char| c.is_whitespace() || "*<>$".contains(c));
            if is_path && !root().join(&span).exists() {
                missing.push(format!("{}: `{span}`", file.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths that do not exist:\n{}",
        missing.join("\n")
    );
}
