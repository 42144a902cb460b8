//! Which characters act instead of being read, and the two ways of
//! neutralising them: [`clean`] (remove, for text kept as a value) and
//! [`printable`] (escape visibly, for what is written out as it is).

use std::borrow::Cow;
use std::fmt::Write as _;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Most combining marks kept on one base character. Real text needs a few
/// (Vietnamese stacks two, some scripts three or four); hundreds of them
/// ("Zalgo" text) spill over the lines above and below in a terminal.
pub const MAX_MARKS: usize = 4;

/// Characters that end a line or move the cursor like whitespace does:
/// tab, line feed, vertical tab, form feed, carriage return, next line
/// (U+0085), line and paragraph separators (U+2028, U+2029). Log viewers
/// and terminals start a new line at several of them.
fn is_break(c: char) -> bool {
    matches!(c, '\u{9}'..='\u{d}' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// Unicode space separators (general category Zs), shown as one space.
fn is_space(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// Characters that are not shown as themselves:
///
/// * control characters: C0 (U+0000–U+001F), DEL (U+007F) and C1
///   (U+0080–U+009F), which start terminal escapes (ESC, CSI, OSC) and
///   break lines;
/// * Unicode's default-ignorable code points (DerivedCoreProperties.txt):
///   zero-width space, non-joiner and joiner, word joiner, soft hyphen,
///   the byte-order mark, variation selectors, Hangul fillers, tag
///   characters, invisible operators, and the bidirectional marks,
///   embeddings, overrides and isolates (U+061C, U+200E, U+200F,
///   U+202A–U+202E, U+2066–U+2069), which reorder what the reader sees
///   (`gpj.exe` shown as `exe.jpg`);
/// * the interlinear annotation characters (U+FFF9–U+FFFB), which hide
///   the text between them in some renderers;
/// * line and paragraph separators (U+2028, U+2029).
pub fn is_hidden(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{ad}'
            | '\u{34f}'
            | '\u{61c}'
            | '\u{115f}'..='\u{1160}'
            | '\u{17b4}'..='\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fffb}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}'
    )
}

/// `raw` as a value that is safe to show and to log:
///
/// 1. line breaks, tabs and every Unicode space become one ASCII space;
///    runs of spaces become one, and spaces at either end go;
/// 2. every other [hidden](is_hidden) character is removed;
/// 3. the result is in Unicode NFC, with at most [`MAX_MARKS`] combining
///    marks on any character;
/// 4. it is cut to at most `max_bytes` bytes, at a character boundary.
///
/// Cleaning is idempotent: cleaning clean text (with the same or a larger
/// bound) changes nothing.
pub fn clean(raw: &str, max_bytes: usize) -> String {
    // Hidden characters go before normalising: one between a letter and
    // its accent would otherwise keep them from composing.
    let mut visible = String::with_capacity(raw.len());
    // A space waits until something follows it, so none ends the text.
    let mut space = false;
    for c in raw.chars() {
        if is_break(c) || is_space(c) {
            space = !visible.is_empty();
        } else if !is_hidden(c) {
            if space {
                visible.push(' ');
                space = false;
            }
            visible.push(c);
        }
    }
    let mut out = String::with_capacity(visible.len().min(max_bytes));
    let mut marks = 0;
    for c in visible.nfc() {
        if is_combining_mark(c) {
            marks += 1;
            if marks > MAX_MARKS {
                continue;
            }
        } else {
            marks = 0;
        }
        if out.len() + c.len_utf8() > max_bytes {
            break;
        }
        out.push(c);
    }
    // Cutting may have left a space at the end.
    out.truncate(out.trim_end().len());
    out
}

/// `text` with every [hidden](is_hidden) character written as a visible
/// escape (`\n`, `\r`, `\t`, or `\u{1b}`), so a log line stays one line
/// and a terminal prints what it is given instead of obeying it. Borrowed
/// when nothing needed escaping. For text written out as it is (logs,
/// terminal output); values kept for later are [`clean`]ed instead.
pub fn printable(text: &str) -> Cow<'_, str> {
    escape(text, |_| false)
}

/// [`printable`], except that line feeds and tabs stay: for showing a
/// multi-line text (a received text on a terminal) as lines.
pub fn printable_lines(text: &str) -> Cow<'_, str> {
    escape(text, |c| c == '\n' || c == '\t')
}

fn escape(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| is_hidden(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            c if keep(c) || !is_hidden(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Writing to a String cannot fail.
            c => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn controls_and_escapes_are_removed() {
        // A reject reason that forges a journal entry and recolours the
        // terminal; an OSC title change; C1 CSI.
        assert_eq!(
            clean("no\n<0>fake emerg\r\n\u{1b}[31mred\u{1b}[0m", 1024),
            "no <0>fake emerg [31mred[0m"
        );
        assert_eq!(clean("lap\u{1b}]0;pwned\u{7}top", 255), "lap]0;pwnedtop");
        assert_eq!(clean("a\u{9b}2Jb\u{7f}c\u{0}", 255), "a2Jbc");
    }

    #[test]
    fn invisible_and_bidi_characters_are_removed() {
        assert_eq!(clean("desk\u{200b}top\u{200d}", 255), "desktop");
        assert_eq!(clean("\u{feff}desktop\u{2060}", 255), "desktop");
        assert_eq!(clean("invoice\u{202e}fdp.exe", 255), "invoicefdp.exe");
        assert_eq!(clean("a\u{2066}b\u{2069}c\u{200e}d\u{61c}e", 255), "abcde");
        assert_eq!(clean("\u{3164}\u{115f}", 255), "");
        assert_eq!(clean("flag\u{e0067}\u{e007f}", 255), "flag");
        assert_eq!(clean("x\u{fff9}hidden\u{fffb}y", 255), "xhiddeny");
    }

    #[test]
    fn whitespace_is_one_space_and_trimmed() {
        assert_eq!(clean("  desktop  ", 255), "desktop");
        assert_eq!(clean("desktop\u{a0}", 255), "desktop");
        assert_eq!(clean("my\u{3000}\u{2003} desk\ttop", 255), "my desk top");
        assert_eq!(clean("line\u{2028}two\u{85}three", 255), "line two three");
        assert_eq!(clean("\n\n", 255), "");
    }

    #[test]
    fn text_is_nfc_with_few_marks() {
        assert_eq!(clean("cafe\u{301}", 255), "café");
        let zalgo = format!("a{}b", "\u{334}\u{335}\u{336}".repeat(20));
        let cleaned = clean(&zalgo, 255);
        assert_eq!(
            cleaned.chars().filter(|c| is_combining_mark(*c)).count(),
            MAX_MARKS
        );
        assert!(cleaned.starts_with('a') && cleaned.ends_with('b'));
        // Real text keeps its marks.
        assert_eq!(clean("Nguyễn", 255), "Nguyễn");
        assert_eq!(clean("日本語 ファイル", 255), "日本語 ファイル");
    }

    #[test]
    fn length_is_bounded_at_a_character_boundary() {
        assert_eq!(clean(&"é".repeat(200), 255).len(), 254);
        assert_eq!(clean("ab cd", 3), "ab");
        assert_eq!(clean("ab cd", 4), "ab c");
    }

    #[test]
    fn printable_escapes_visibly() {
        assert_eq!(printable("plain"), Cow::Borrowed("plain"));
        assert_eq!(
            printable("a\nb\r\tc\u{1b}[2J\u{202e}"),
            "a\\nb\\r\\tc\\u{1b}[2J\\u{202e}"
        );
        assert_eq!(printable_lines("one\n\ttwo\u{1b}"), "one\n\ttwo\\u{1b}");
        assert_eq!(printable("naïve 日本"), "naïve 日本");
    }

    proptest! {
        #[test]
        fn cleaned_text_has_nothing_hidden_and_is_stable(
            raw in proptest::collection::vec(any::<char>(), 0..80),
            max in 0usize..300,
        ) {
            let raw: String = raw.into_iter().collect();
            let once = clean(&raw, max);
            prop_assert!(once.len() <= max);
            prop_assert!(!once.chars().any(|c| is_hidden(c) || is_break(c)));
            prop_assert!(!once.starts_with(' ') && !once.ends_with(' '));
            prop_assert!(!once.contains("  "));
            prop_assert_eq!(clean(&once, max), once.clone());
            prop_assert_eq!(printable(&once), Cow::Borrowed(once.as_str()));
        }

        #[test]
        fn printable_text_has_no_hidden_characters(
            raw in proptest::collection::vec(any::<char>(), 0..80),
        ) {
            let raw: String = raw.into_iter().collect();
            prop_assert!(!printable(&raw).chars().any(is_hidden));
            prop_assert!(!printable_lines(&raw)
                .chars()
                .any(|c| is_hidden(c) && c != '\n' && c != '\t'));
        }
    }
}
