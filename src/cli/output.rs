//! What every command's output shares: lines for people that cannot carry
//! terminal escapes, stdout that reports a closed pipe instead of
//! panicking, one JSON document for `--json`, and the formats of times and
//! durations.
//!
//! Names, reasons and messages from peers arrive cleaned
//! ([`crate::safe_text`]); what else a line shows (local file names, the
//! daemon's messages quoting input) is escaped here, by [`outln!`] and
//! [`errln!`], so that no line a command prints for people holds a control
//! character, a bidirectional override or an invisible one.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use serde::de::DeserializeOwned;

use crate::control::client::ClientError;
use crate::control::{CommandError, ErrorKind, ResultStatus, io_kind, source_kind};
use crate::transfer::source::SourceError;

/// One line to stdout, [escaped](crate::safe_text::printable) (a line
/// feed in a value shows as `\n`, so one call is one line). Returns an
/// error instead of panicking when stdout is closed (`share peers | head
/// -1`); `main` treats a broken pipe as success.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(
            std::io::stdout().lock(),
            "{}",
            $crate::safe_text::printable(&format!($($arg)*))
        )?
    };
}
pub(super) use outln;

/// One line to stderr, escaped like [`outln!`].
macro_rules! errln {
    ($($arg:tt)*) => {
        eprintln!("{}", $crate::safe_text::printable(&format!($($arg)*)))
    };
}
pub(super) use errln;

/// An error as the one line `share` prints: the message, then each cause
/// the text so far does not already say. Many errors name their cause in
/// their own message (`cannot read x: No such file or directory`) and
/// also return it as their source; printed with `{:#}`, the cause came
/// twice.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Whether this run printed its `--json` document.
static DOCUMENT_PRINTED: AtomicBool = AtomicBool::new(false);

/// `--json` after a failure: unless the command printed its document
/// before failing (`share doctor` with a failed check), one document
/// saying so: `status` `failed`, the one-line `error` and its `kind`
/// (plus `peer` for `share send`), so stdout always holds exactly one.
pub(super) fn json_failure(error: &anyhow::Error, peer: Option<&str>) -> Result<()> {
    if DOCUMENT_PRINTED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut document = serde_json::json!({
        "status": ResultStatus::Failed,
        "error": error_line(error),
        "kind": failure_kind(error),
    });
    if let Some(peer) = peer {
        document["peer"] = peer.into();
    }
    json(&document)
}

/// The machine-readable kind of a command's failure: the daemon's, the
/// control socket's, or the CLI's own (a file that cannot be sent, a
/// local file).
pub(super) fn failure_kind(error: &anyhow::Error) -> ErrorKind {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<CommandError>() {
            return e.kind;
        }
        if let Some(e) = cause.downcast_ref::<SourceError>() {
            return source_kind(e);
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            return io_kind(e);
        }
    }
    ErrorKind::Failed
}

/// Asks `question` on stderr ([escaped](crate::safe_text::printable))
/// and reads the answer from stdin: yes only for `y` or `yes`.
pub(super) async fn ask(question: &str) -> Result<bool> {
    use anyhow::Context;
    eprint!("{}", crate::safe_text::printable(question));
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .context("internal error: the prompt stopped")?
    .context("cannot read the answer")?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

/// Lines of a table whose columns are as wide as their widest cell (as
/// shown, [escaped](crate::safe_text::printable)), two spaces apart; the
/// columns `right` names are aligned right, the last one is not padded.
pub(super) fn table(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> Vec<String> {
    let shown = |cell: &str| crate::safe_text::printable(cell).into_owned();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let rows: Vec<Vec<String>> = std::iter::once(&header)
        .chain(rows)
        .map(|row| row.iter().map(|c| shown(c)).collect())
        .collect();
    let mut widths = vec![0; header.len()];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let last = row.len().saturating_sub(1);
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, cell)| match i {
                    _ if right.contains(&i) => format!("{cell:>w$}", w = widths[i]),
                    _ if i == last => cell.clone(),
                    _ => format!("{cell:w$}", w = widths[i]),
                })
                .collect();
            cells.join("  ")
        })
        .collect()
}

/// The daemon's answer as the type the command expects.
pub(super) fn parse<T: DeserializeOwned>(data: serde_json::Value) -> Result<T> {
    Ok(serde_json::from_value(data)?)
}

/// `--json`: the document on one line, as serde wrote it (it escapes
/// control characters in strings itself).
pub(super) fn json(data: &impl serde::Serialize) -> Result<()> {
    use std::io::Write;
    DOCUMENT_PRINTED.store(true, Ordering::Relaxed);
    writeln!(std::io::stdout().lock(), "{}", serde_json::to_string(data)?)?;
    Ok(())
}

/// "12 s ago", "3 min ago", "2 h ago", "4 d ago".
pub(super) fn ago(seconds: u64) -> String {
    match seconds {
        0..=1 => "now".into(),
        2..=119 => format!("{seconds} s ago"),
        120..=7199 => format!("{} min ago", seconds / 60),
        7200..=172_799 => format!("{} h ago", seconds / 3600),
        _ => format!("{} d ago", seconds / 86_400),
    }
}

/// `YYYY-MM-DD HH:MM` in local time (the `TZ` variable, else
/// `/etc/localtime`) for seconds since the Unix epoch; UTC if the C
/// library cannot say.
pub(super) fn local(secs: u64) -> String {
    match local_time(secs) {
        Some(tm) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            i64::from(tm.tm_year) + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min
        ),
        None => format!("{} UTC", utc(secs)),
    }
}

/// The C library's broken-down local time of `secs` (`localtime_r(3)`,
/// which knows the system's time zone rules; Rust's standard library
/// has none).
#[allow(unsafe_code)]
fn local_time(secs: u64) -> Option<libc::tm> {
    let time = libc::time_t::try_from(secs).ok()?;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::uninit();
    // SAFETY: `localtime_r` reads `time` and writes only into `tm`, both
    // valid for the call; it is the thread-safe variant (no shared static
    // result). It returns null on failure, and `tm` is only read when it
    // returned non-null, i.e. after it filled it in.
    let filled = unsafe { libc::localtime_r(&time, tm.as_mut_ptr()) };
    if filled.is_null() {
        return None;
    }
    // SAFETY: see above: `localtime_r` succeeded, so `tm` is initialised.
    Some(unsafe { tm.assume_init() })
}

/// `YYYY-MM-DD HH:MM` (UTC) for seconds since the Unix epoch.
pub(super) fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_name_each_cause_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let named = anyhow::Error::new(io()).context(format!("cannot read /x: {}", io()));
        assert_eq!(error_line(&named), format!("cannot read /x: {}", io()));
        let unnamed = anyhow::Error::new(io()).context("cannot read /x");
        assert_eq!(error_line(&unnamed), format!("cannot read /x: {}", io()));
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_795_664_161), "2026-11-26 03:36");
    }

    /// Local time follows `TZ`; run in a child process (this test binary
    /// again), since setting the variable here would race other tests.
    #[test]
    fn local_times_follow_the_time_zone() {
        const CHILD: &str = "LANSHARE_TEST_LOCAL_TIME_CHILD";
        if std::env::var_os(CHILD).is_some() {
            // 2026-11-26 03:36 UTC.
            assert_eq!(local(1_795_664_161), "2026-11-26 09:06");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cli::output::tests::local_times_follow_the_time_zone",
            ])
            .env(CHILD, "1")
            .env("TZ", "IST-5:30")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn ages() {
        assert_eq!(ago(1), "now");
        assert_eq!(ago(59), "59 s ago");
        assert_eq!(ago(600), "10 min ago");
        assert_eq!(ago(7200), "2 h ago");
        assert_eq!(ago(3 * 86_400), "3 d ago");
    }
}
