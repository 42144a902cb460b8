//! `share send --exclude PATTERN`: gitignore-like patterns matched against
//! the entries found inside the directories a user sends.
//!
//! Pure string matching (no I/O), so the rules are unit-tested here. The
//! rules follow `.gitignore` where it makes sense for one command line:
//!
//! * `*` matches any run of characters within one name, `?` one character,
//!   `[abc]`, `[a-z]` and `[!a-z]` (or `[^a-z]`) one character of (not of) a
//!   set; `\` makes the next character literal.
//! * A pattern without a `/` (other than a trailing one) matches a name at
//!   any depth: `*.log`, `node_modules`.
//! * A pattern with a `/` matches the path below the directory that was
//!   named: `build/out` or `/build` match `proj/build/out` and `proj/build`
//!   when `proj` is sent; a leading `/` only anchors.
//! * `**` as a whole name matches any number of names, none included:
//!   `**/cache`, `a/**/b`; a trailing one, everything inside: `logs/**`.
//! * A trailing `/` matches directories only: `target/`.
//! * An excluded directory is not entered at all. Files and directories
//!   named as arguments are never excluded: the user asked for them.
//!
//! Negation (`!pattern`) is not supported: a pattern starting with `!` is
//! refused rather than silently read as a name (write `\!` for a name that
//! starts with `!`).

use serde::{Deserialize, Serialize};

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The empty string, or only `/`.
    #[error("--exclude needs a pattern, such as '*.log' or 'target/'")]
    Empty,
    /// `!pattern` (gitignore's negation).
    #[error(
        "--exclude {0:?}: negated patterns (!) are not supported; write \\! for a name starting with !"
    )]
    Negation(String),
    /// A `[` without its `]`, or a `\` at the end.
    #[error("--exclude {0:?}: unterminated [ ] set or trailing \\")]
    Malformed(String),
}

/// One character matcher of a name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `[...]`: inclusive ranges, negated or not.
    Set {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// One `/`-separated part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// `**`: any number of names.
    Any,
    /// A name pattern.
    Name(Vec<Token>),
}

/// One parsed `--exclude` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    parts: Vec<Part>,
    /// Matches at any depth (no `/` in the pattern).
    floating: bool,
    /// Matches directories only (trailing `/`).
    dir_only: bool,
}

/// The `--exclude` patterns of one send, as typed (kept as text so a
/// queued send can be walked again after a daemon restart).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Excludes {
    text: Vec<String>,
    patterns: Vec<Pattern>,
}

impl Excludes {
    /// Parses the patterns.
    ///
    /// # Errors
    /// The first pattern that is empty, negated or malformed.
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let parsed = patterns
            .iter()
            .map(|p| parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            text: patterns.to_vec(),
            patterns: parsed,
        })
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the entry at `below` (the path below the named directory,
    /// `/`-separated, never empty) is excluded.
    pub fn excludes(&self, below: &str, is_dir: bool) -> bool {
        let names: Vec<&str> = below.split('/').collect();
        self.patterns.iter().any(|p| {
            if p.dir_only && !is_dir {
                return false;
            }
            if p.floating {
                let last = names.last().copied().unwrap_or("");
                matches!(p.parts.first(), Some(Part::Name(tokens)) if name_matches(tokens, last))
            } else {
                path_matches(&p.parts, &names)
            }
        })
    }
}

impl TryFrom<Vec<String>> for Excludes {
    type Error = PatternError;

    fn try_from(text: Vec<String>) -> Result<Self, Self::Error> {
        Self::new(&text)
    }
}

impl From<Excludes> for Vec<String> {
    fn from(excludes: Excludes) -> Self {
        excludes.text
    }
}

fn parse(text: &str) -> Result<Pattern, PatternError> {
    if text.starts_with('!') {
        return Err(PatternError::Negation(text.to_owned()));
    }
    let dir_only = text.ends_with('/') && !text.ends_with("\\/");
    let body = text.strip_suffix('/').filter(|_| dir_only).unwrap_or(text);
    let anchored = body.starts_with('/');
    let body = body.strip_prefix('/').unwrap_or(body);
    if body.is_empty() {
        return Err(PatternError::Empty);
    }
    let floating = !anchored && !body.contains('/');
    let parts = body
        .split('/')
        .filter(|part| !part.is_empty())
        .map(|part| {
            if part == "**" {
                Ok(Part::Any)
            } else {
                tokens(part).map(Part::Name)
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|()| PatternError::Malformed(text.to_owned()))?;
    // `**` alone floats too: it matches everything.
    Ok(Pattern {
        floating: floating && parts != [Part::Any],
        parts,
        dir_only,
    })
}

fn tokens(part: &str) -> Result<Vec<Token>, ()> {
    let mut out = Vec::new();
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '\\' => Token::Literal(chars.next().ok_or(())?),
            '?' => Token::One,
            '*' => {
                if out.last() == Some(&Token::Star) {
                    continue;
                }
                Token::Star
            }
            '[' => {
                let mut negated = false;
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let c = chars.next().ok_or(())?;
                    match c {
                        '!' | '^' if first && !negated => {
                            negated = true;
                            continue;
                        }
                        ']' if !first => break,
                        _ => {}
                    }
                    first = false;
                    let lo = if c == '\\' {
                        chars.next().ok_or(())?
                    } else {
                        c
                    };
                    // A `-` between two characters makes a range.
                    let mut ahead = chars.clone();
                    if ahead.next() == Some('-') && ahead.clone().next().is_some_and(|n| n != ']') {
                        chars.next();
                        let hi = chars.next().ok_or(())?;
                        let hi = if hi == '\\' {
                            chars.next().ok_or(())?
                        } else {
                            hi
                        };
                        ranges.push((lo, hi));
                    } else {
                        ranges.push((lo, lo));
                    }
                }
                Token::Set { negated, ranges }
            }
            c => Token::Literal(c),
        });
    }
    Ok(out)
}

/// Whether one name matches one name pattern. Classic wildcard matching
/// with one backtracking point (the last `*`): linear-ish, never
/// exponential.
fn name_matches(tokens: &[Token], name: &str) -> bool {
    let chars: Vec<char> = name.chars().collect();
    let (mut t, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < chars.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, n));
                t += 1;
            }
            Some(token) if one_matches(token, chars[n]) => {
                t += 1;
                n += 1;
            }
            _ => match star {
                Some((st, sn)) => {
                    t = st + 1;
                    n = sn + 1;
                    star = Some((st, sn + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|token| *token == Token::Star)
}

fn one_matches(token: &Token, c: char) -> bool {
    match token {
        Token::Literal(l) => *l == c,
        Token::One => true,
        Token::Star => false,
        Token::Set { negated, ranges } => {
            ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)) != *negated
        }
    }
}

/// Whether the names of a path match the parts of an anchored pattern.
/// Memoised over (part, name) positions, so `**` cannot make it
/// exponential.
fn path_matches(parts: &[Part], names: &[&str]) -> bool {
    let mut memo = vec![None; (parts.len() + 1) * (names.len() + 1)];
    matches_from(parts, names, 0, 0, &mut memo)
}

fn matches_from(
    parts: &[Part],
    names: &[&str],
    p: usize,
    n: usize,
    memo: &mut [Option<bool>],
) -> bool {
    let key = p * (names.len() + 1) + n;
    if let Some(known) = memo[key] {
        return known;
    }
    let result = match parts.get(p) {
        None => n == names.len(),
        // A trailing `**` matches what is inside, not the directory itself.
        Some(Part::Any) => {
            let least = if p + 1 == parts.len() { n + 1 } else { n };
            (least..=names.len()).any(|skip| matches_from(parts, names, p + 1, skip, memo))
        }
        Some(Part::Name(tokens)) => {
            n < names.len()
                && name_matches(tokens, names[n])
                && matches_from(parts, names, p + 1, n + 1, memo)
        }
    };
    memo[key] = Some(result);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(patterns: &[&str]) -> Excludes {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        Excludes::new(&patterns).unwrap()
    }

    #[test]
    fn floating_names_match_at_any_depth() {
        let e = ex(&["*.log", "node_modules"]);
        assert!(e.excludes("a.log", false));
        assert!(e.excludes("sub/deep/b.log", false));
        assert!(e.excludes("x/node_modules", true));
        assert!(e.excludes("node_modules", false));
        assert!(!e.excludes("a.log.txt", false));
        assert!(!e.excludes("logs/a.txt", false));
        assert!(!e.excludes("node_modules2", true));
    }

    #[test]
    fn slashes_anchor_to_the_named_directory() {
        let e = ex(&["build/out", "/top"]);
        assert!(e.excludes("build/out", true));
        assert!(!e.excludes("sub/build/out", true));
        assert!(e.excludes("top", false));
        assert!(!e.excludes("sub/top", false));
    }

    #[test]
    fn double_star_spans_any_number_of_names() {
        let e = ex(&["**/cache", "logs/**", "a/**/b"]);
        assert!(e.excludes("cache", true));
        assert!(e.excludes("x/y/cache", true));
        assert!(e.excludes("logs/1/2.txt", false));
        assert!(!e.excludes("logs", true));
        assert!(e.excludes("a/b", false));
        assert!(e.excludes("a/x/y/b", false));
        assert!(!e.excludes("a/x/c", false));
        assert!(ex(&["**"]).excludes("any/thing", false));
    }

    #[test]
    fn trailing_slash_matches_directories_only() {
        let e = ex(&["target/"]);
        assert!(e.excludes("target", true));
        assert!(e.excludes("sub/target", true));
        assert!(!e.excludes("target", false));
    }

    #[test]
    fn wildcards_sets_and_escapes() {
        let e = ex(&["?.txt", "[abc]*.md", "[!0-9]x", "\\*lit", "f[\\]]"]);
        assert!(e.excludes("a.txt", false));
        assert!(!e.excludes("ab.txt", false));
        assert!(e.excludes("b-notes.md", false));
        assert!(!e.excludes("d.md", false));
        assert!(e.excludes("ax", false));
        assert!(!e.excludes("1x", false));
        assert!(e.excludes("*lit", false));
        assert!(!e.excludes("xlit", false));
        assert!(e.excludes("f]", false));
        assert!(ex(&["*"]).excludes("anything at all", false));
        assert!(ex(&["a*b*c"]).excludes("aXbYbZc", false));
        assert!(!ex(&["a*b*c"]).excludes("aXbYbZ", false));
        assert!(ex(&["[a-]"]).excludes("-", false));
        assert!(ex(&["\\!x"]).excludes("!x", false));
        assert!(ex(&["é?"]).excludes("éé", false));
    }

    #[test]
    fn bad_patterns_are_refused() {
        let bad = |p: &str| Excludes::new(&[p.to_owned()]).unwrap_err();
        assert_eq!(bad(""), PatternError::Empty);
        assert_eq!(bad("/"), PatternError::Empty);
        assert!(matches!(bad("!keep"), PatternError::Negation(_)));
        assert!(matches!(bad("[abc"), PatternError::Malformed(_)));
        assert!(matches!(bad("x\\"), PatternError::Malformed(_)));
        assert!(bad("!keep").to_string().contains("not supported"));
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = "*a".repeat(30) + "/**/".repeat(10).as_str() + "b";
        let e = ex(&[&pattern]);
        let long = "a".repeat(200);
        let path = vec![long.as_str(); 40].join("/");
        assert!(!e.excludes(&path, false));
    }

    #[test]
    fn round_trips_as_json_text() {
        let e = ex(&["*.log", "target/"]);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"["*.log","target/"]"#);
        let back: Excludes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        assert!(serde_json::from_str::<Excludes>(r#"["!x"]"#).is_err());
    }
}
