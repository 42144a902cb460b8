//! The log's field formatter: every value [`printable`], so one event is
//! one line whatever text it quotes.
//!
//! Under systemd each stderr line becomes a journal entry, and a line that
//! starts with `<N>` gets priority N; a line feed inside a logged value
//! would let whoever chose that value write entries of their own. Values
//! that came from peers are [`CleanText`](super::CleanText) already; this
//! catches the rest (file names, paths, errors quoting their input).

use std::fmt;

use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

use super::printable;

/// The field formatter for `tracing_subscriber::fmt().fmt_fields(..)`:
/// like the default (`message` bare, other fields as `name=value`,
/// separated by spaces), with each value escaped by [`printable`].
pub fn log_fields() -> impl for<'writer> FormatFields<'writer> + Send + Sync + 'static {
    debug_fn(write_field).delimited(" ")
}

fn write_field(writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    let value = format!("{value:?}");
    let value = printable(&value);
    match field.name() {
        "message" => writer.write_str(&value),
        name => write!(writer, "{name}={value}"),
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// A line feed and an escape sequence in a message, a `%` field and a
    /// `?` field all stay on the event's one line, escaped.
    #[test]
    fn one_event_is_one_line() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .fmt_fields(log_fields())
            .finish();
        let hostile = "x\n<0>forged\u{1b}[2J";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(reason = %hostile, path = ?hostile, "refused {hostile}");
        });
        let logged = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(logged.lines().count(), 1, "{logged:?}");
        assert!(!logged.contains('\u{1b}'), "{logged:?}");
        assert!(
            logged.contains(r"refused x\n<0>forged\u{1b}[2J reason=x\n<0>forged\u{1b}[2J"),
            "{logged:?}"
        );
    }
}
