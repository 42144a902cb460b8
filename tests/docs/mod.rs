//! The documentation against the code: what the Markdown files say about
//! commands, flags, config keys and each other must stay true.
//!
//! - every relative link in a `*.md` file names an existing file, and its
//!   `#anchor` an existing heading;
//! - every `share …` command shown in the docs parses with the real clap
//!   definitions (no removed command, flag or value);
//! - the `--help` blocks of `docs/cli.md` are exactly what clap prints
//!   (regenerate them with `LANSHARE_UPDATE_DOCS=1 cargo test --locked
//!   --test tests docs::help`);
//! - the config keys table of `docs/configuration.md` lists exactly the
//!   keys of the config file, each with its real flag and default;
//! - ARCHITECTURE.md's module map lists exactly the crate's modules, and
//!   every source path the docs name exists;
//! - the `--json` examples and table headers the docs show have the shape
//!   of real output;
//! - no file names the absolute path of the checkout (paths are relative).

mod commands;
mod config;
mod help;
mod markdown;
mod output;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use markdown::{anchors, code_spans, link_targets, only_code, parse_markdown, table_after};

/// The repository root.
pub(super) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file of the repository, relative to the root (build output,
/// caches and hidden directories other than `.ci` excluded).
fn repo_files() -> Vec<PathBuf> {
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
            } else {
                out.push(path.strip_prefix(root()).unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root(), &mut out);
    out
}

/// Every Markdown file of the repository.
pub(super) fn markdown_files() -> Vec<PathBuf> {
    repo_files()
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
        .collect()
}

pub(super) fn read(rel: &Path) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap()
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

/// A path on the machine that built a file means nothing elsewhere (and
/// says who built it); paths in the tree are relative. This catches the
/// checkout the tests run in, which on CI is the repository itself.
#[test]
fn no_file_names_the_checkouts_absolute_path() {
    let here = root().to_str().unwrap();
    let mut found = Vec::new();
    for file in repo_files() {
        // Binary files are not text and name no paths.
        if let Ok(text) = std::fs::read_to_string(root().join(&file))
            && text.contains(here)
        {
            found.push(file.display().to_string());
        }
    }
    assert!(
        found.is_empty(),
        "files naming {here}; use a path relative to the repository:\n{}",
        found.join("\n")
    );
}

/// What `cargo install` builds carries no debug info (a 63 MB binary with
/// line tables), and the profile the benchmark README profiles with adds
/// the line tables back, under its own name.
#[test]
fn release_builds_ship_without_debug_info_and_profiling_has_its_own_profile() {
    let manifest: toml::Table = read(Path::new("Cargo.toml")).parse().unwrap();
    let profiles = manifest["profile"].as_table().unwrap();
    let release = profiles["release"].as_table().unwrap();
    let debug = release.get("debug").cloned();
    assert!(
        matches!(
            debug,
            None | Some(toml::Value::Boolean(false)) | Some(toml::Value::Integer(0))
        ),
        "[profile.release] debug = {debug:?}"
    );
    let strip = release.get("strip").and_then(toml::Value::as_str);
    assert!(
        matches!(strip, Some("debuginfo" | "symbols")),
        "[profile.release] strip = {strip:?}: the dependencies' and std's debug info stay in the binary"
    );
    let profiling = profiles["profiling"].as_table().unwrap();
    assert_eq!(profiling["inherits"].as_str(), Some("release"));
    assert_eq!(profiling["debug"].as_str(), Some("line-tables-only"));
    assert_eq!(profiling["strip"].as_str(), Some("none"));
    let bench = read(Path::new("bench/README.md"));
    assert!(
        bench.contains("--profile profiling") && bench.contains("target/profiling/share"),
        "bench/README.md's Profiling section builds with the profiling profile"
    );
}
