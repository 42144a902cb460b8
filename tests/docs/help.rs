//! The `--help` blocks of `docs/cli.md` are what clap prints.

use std::collections::BTreeMap;

use clap::CommandFactory;
use lanshare::cli::Cli;

use super::root;

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
         `LANSHARE_UPDATE_DOCS=1 cargo test --locked --test tests docs::help`, \
         then check that the text around each block still fits"
    );
}
