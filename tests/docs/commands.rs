//! Every `share …` command the docs show is one the CLI accepts.

use clap::{CommandFactory, Parser};
use lanshare::cli::Cli;

use super::markdown::{code_spans, parse_markdown};
use super::{markdown_files, read};

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
