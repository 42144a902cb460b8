//! What a short text may be ([`check_text`]: not empty, at most
//! [`MAX_TEXT_LEN`] bytes, whichever protocol carries it) and how it is
//! shown in listings ([`preview`]).

use crate::protocol::MAX_TEXT_LEN;
use crate::safe_text::CleanText;

/// Characters of a text shown in `share transfers` and the history.
const PREVIEW_CHARS: usize = 40;

/// Why a text cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Nothing to send.
    #[error("the text is empty; nothing to send")]
    Empty,
    /// More than [`MAX_TEXT_LEN`] bytes.
    #[error(
        "the text is {0} bytes, more than the limit of {MAX_TEXT_LEN} bytes (64 KiB); send it as a file instead"
    )]
    TooLong(usize),
}

/// Checks a text before it is sent (by the CLI, and again by the daemon):
/// not empty, at most [`MAX_TEXT_LEN`] bytes.
///
/// # Errors
/// Why it cannot be sent.
pub fn check_text(text: &str) -> Result<(), TextError> {
    if text.is_empty() {
        return Err(TextError::Empty);
    }
    if text.len() > MAX_TEXT_LEN {
        return Err(TextError::TooLong(text.len()));
    }
    Ok(())
}

/// The first line of `text`, shortened and cleaned, for listings.
pub fn preview(text: &str) -> CleanText {
    let line = text.lines().next().unwrap_or("");
    let mut out: String = line.chars().take(PREVIEW_CHARS).collect();
    if line.chars().count() > PREVIEW_CHARS || text.lines().nth(1).is_some() {
        out.push('…');
    }
    CleanText::new(&format!("text: {out}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_previews() {
        assert_eq!(check_text(""), Err(TextError::Empty));
        assert!(check_text(&"é".repeat(MAX_TEXT_LEN / 2)).is_ok());
        let err = check_text(&"x".repeat(MAX_TEXT_LEN + 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("65537 bytes"), "{err}");
        assert_eq!(preview("hello"), "text: hello");
        assert_eq!(preview("one\ntwo"), "text: one…");
        assert_eq!(
            preview(&"ü".repeat(50)).as_str(),
            format!("text: {}…", "ü".repeat(40))
        );
        assert_eq!(preview("a\tb\u{1b}[31m"), "text: a b[31m");
    }
}
