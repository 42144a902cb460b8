//! `share send`: files and directories (opened here, as the user, and
//! passed to the daemon as open descriptors), `--text`, and `--queue`;
//! the progress bar and the result.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::output::{ask, errln, json, outln, parse};
use crate::control::client::{self, ClientError};
use crate::control::{CommandError, ErrorKind, Request, SendEntry, SendEvent};
use crate::outgoing::{SendResult, TextResult};
use crate::protocol::{HumanBytes, MAX_TEXT_LEN};
use crate::queue::QueuedSend;
use crate::transfer::exclude::Excludes;
use crate::transfer::source::{self, Layout};
use crate::transport::dial::Preference;

/// `share send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Device name, device-ID prefix, or HOST:PORT; a LocalSend device by
    /// its alias, fingerprint prefix, HOST:53317 or localsend://HOST:PORT.
    #[arg(required_unless_present = "choose")]
    pub peer: Option<String>,
    /// Files and directories to send.
    #[arg(required_unless_present_any = ["text", "choose"])]
    pub paths: Vec<PathBuf>,
    /// Choose the device from a list, then send FILES (on a terminal, or
    /// in a dialog: the file manager's "Send to" entries use this).
    #[arg(
        long,
        value_name = "FILES",
        num_args = 1..,
        conflicts_with_all = ["peer", "paths", "text", "queue", "json"]
    )]
    pub choose: Vec<PathBuf>,
    /// Send this short text instead of files (at most 64 KiB; `-` reads
    /// it from stdin).
    #[arg(long, value_name = "TEXT", conflicts_with = "paths")]
    pub text: Option<String>,
    /// Queue the send and return at once; it goes out when the peer is
    /// reachable, even after a daemon restart (`share queue` lists it).
    #[arg(long, conflicts_with = "text")]
    pub queue: bool,
    /// With --queue: queue it even if no device of that name has been
    /// seen yet (without it, an unknown name is refused as a likely typo).
    #[arg(long, requires = "queue")]
    pub wait_for_peer: bool,
    /// Leave out what matches PATTERN inside the directories sent
    /// (gitignore-like: `*.log`, `target/`, `/build`, `**/cache`);
    /// repeatable.
    #[arg(long, value_name = "PATTERN", conflicts_with = "text")]
    pub exclude: Vec<String>,
    /// Fail if anything inside a directory cannot be read or its name
    /// cannot be sent, instead of skipping it with a warning.
    #[arg(long, conflicts_with = "text")]
    pub strict: bool,
    /// Transport: race QUIC and TCP (auto), or force one.
    #[arg(long, value_enum, default_value_t = TransportArg::Auto)]
    pub transport: TransportArg,
    /// The PIN a LocalSend receiver asks for.
    #[arg(long, value_name = "PIN")]
    pub pin: Option<String>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--transport` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TransportArg {
    /// QUIC with TCP fallback.
    Auto,
    /// QUIC only.
    Quic,
    /// TCP+TLS only.
    Tcp,
}

impl SendArgs {
    /// The PEER argument (present unless `--choose` was given).
    fn peer(&self) -> &str {
        self.peer.as_deref().unwrap_or_default()
    }
}

impl From<TransportArg> for Preference {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Auto => Self::Auto,
            TransportArg::Quic => Self::Quic,
            TransportArg::Tcp => Self::Tcp,
        }
    }
}

/// `share send ...`.
pub(super) async fn send(sockets: &[PathBuf], args: SendArgs) -> Result<()> {
    if !args.choose.is_empty() {
        return super::choose::send(sockets, args).await;
    }
    if let Some(text) = &args.text {
        return send_text(sockets, &args, text).await;
    }
    send_files(sockets, args).await
}

/// `share send PEER PATHS...` (also with `--queue`).
pub(super) async fn send_files(sockets: &[PathBuf], args: SendArgs) -> Result<()> {
    // Walk the tree and open every file here, with the user's own
    // permissions; the daemon gets open files, never paths (the system
    // service cannot read home directories, and must never read a file
    // for a user who could not). A file inside a directory that the user
    // cannot read is skipped with a warning (fails the send if --strict);
    // one named as an argument fails here, named, before anything is
    // sent. (`main` raised the open-file limit for `share send` before any
    // thread started.)
    let options = source::WalkOptions {
        strict: args.strict,
        exclude: Excludes::new(&args.exclude)?,
    };
    let paths = args.paths.clone();
    let walk_options = options.clone();
    let (layout, files) = tokio::task::spawn_blocking(move || {
        let mut layout = source::walk(&paths, &walk_options)?;
        let files = layout.open_files()?;
        Ok::<_, source::SourceError>((layout, files))
    })
    .await
    .context("internal error: the file scan stopped")??;
    if args.queue {
        return queue_send(sockets, &args, options, &layout, &files).await;
    }
    let (entries, skipped) = request_layout(&layout);
    let request = Request::Send {
        peer: args.peer().to_owned(),
        entries,
        skipped,
        transport: args.transport.into(),
        retry_for_s: None,
        pin: args.pin.clone(),
    };
    let fds = crate::control::fds::borrow_all(&files);
    let mut progress = SendProgress::new(!args.json);
    let result =
        client::call_with_files(sockets, request, &fds, |event| progress.event(&event)).await;
    progress.finish();
    send_result(result?, args.json)
}

/// The layout as the control request carries it: entries (matched in
/// order by the passed files) and the skipped specials as text.
fn request_layout(layout: &source::Layout) -> (Vec<SendEntry>, Vec<String>) {
    let entries = layout
        .entries
        .iter()
        .map(|e| SendEntry {
            path: e.path.clone(),
            dir: e.dir,
        })
        .collect();
    let skipped = layout.skipped.iter().map(ToString::to_string).collect();
    (entries, skipped)
}

/// `share send` result.
fn send_result(data: serde_json::Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(&data);
    }
    let r: SendResult = parse(data)?;
    outln!("{}", sent_line(&r));
    Ok(())
}

/// The line `share send` ends with: time and rate from the first byte of
/// data (the receiver's accept), then how long it took in all when the
/// wait for the connection and the accept was noticeable.
fn sent_line(r: &SendResult) -> String {
    let moving = r.transfer_seconds.unwrap_or(r.seconds);
    let rate = if moving > 0.0 {
        format!(", {}/s", HumanBytes((r.bytes_sent as f64 / moving) as u64))
    } else {
        String::new()
    };
    let waited = r.seconds - moving;
    let total = if waited >= 0.5 {
        format!(
            " ({:.1} s in all, with connecting and the wait for accept)",
            r.seconds
        )
    } else {
        String::new()
    };
    format!(
        "sent {} file{} ({}) to {} over {} in {:.2} s{rate}{total}",
        r.files,
        if r.files == 1 { "" } else { "s" },
        HumanBytes(r.bytes),
        r.peer,
        r.transport,
        moving
    )
}

/// The progress bar of a transfer: bar, bytes, rate, time left.
pub(super) fn transfer_style() -> ProgressStyle {
    ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Progress display for `share send` on a terminal.
struct SendProgress {
    bar: Option<ProgressBar>,
}

/// A line for the progress bar, [escaped](crate::safe_text::printable)
/// like every other line the CLI prints.
fn escaped(line: String) -> String {
    crate::safe_text::printable(&line).into_owned()
}

impl SendProgress {
    /// Shows progress only if `enabled` and stderr is a terminal.
    fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_message("preparing…");
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Self { bar }
    }

    /// Updates the display for one event.
    fn event(&mut self, event: &SendEvent) {
        let Some(bar) = &self.bar else {
            match event {
                SendEvent::Prepared { skipped, .. } => {
                    for s in skipped {
                        errln!("warning: skipped {s}");
                    }
                }
                SendEvent::Retrying { in_s, reason, .. } => {
                    errln!("interrupted: {reason}; resuming in {in_s} s");
                }
                _ => {}
            }
            return;
        };
        match event {
            SendEvent::Prepared { bytes, skipped, .. } => {
                for s in skipped {
                    bar.println(escaped(format!("warning: skipped {s}")));
                }
                bar.set_length(*bytes);
            }
            SendEvent::Connected { peer, transport } => {
                bar.set_message(escaped(format!("connected to {peer} over {transport}")));
            }
            SendEvent::Waiting { peer, .. } => {
                bar.set_message(escaped(format!("waiting for {peer} to accept…")));
            }
            SendEvent::Retrying { in_s, reason, .. } => {
                bar.println(escaped(format!(
                    "interrupted: {reason}; resuming in {in_s} s"
                )));
            }
            SendEvent::Progress { bytes_done, bytes } => {
                if bar.length() != Some(*bytes) || bar.position() == 0 && *bytes_done > 0 {
                    bar.set_style(transfer_style());
                    bar.set_length(*bytes);
                }
                bar.set_position(*bytes_done);
            }
        }
    }

    /// Removes the bar.
    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Reads the text of `share send --text`: the argument, or stdin for `-`,
/// refusing more than [`MAX_TEXT_LEN`] bytes without reading further.
fn text_argument(text: &str) -> Result<String> {
    let invalid = |message: String| CommandError::new(ErrorKind::Invalid, message);
    let text = if text == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .take(MAX_TEXT_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .context("cannot read the text from stdin")?;
        if bytes.len() > MAX_TEXT_LEN {
            return Err(invalid(format!(
                "the text on stdin is more than {MAX_TEXT_LEN} bytes (64 KiB), the limit for texts; send it as a file instead"
            ))
            .into());
        }
        String::from_utf8(bytes)
            .map_err(|_| invalid("stdin is not UTF-8 text; send it as a file instead".into()))?
    } else {
        text.to_owned()
    };
    crate::intake::text::check_text(&text).map_err(|reason| invalid(reason.to_string()))?;
    Ok(text)
}

/// `share send PEER --text TEXT`.
async fn send_text(sockets: &[PathBuf], args: &SendArgs, text: &str) -> Result<()> {
    let text = text_argument(text)?;
    let request = Request::SendText {
        peer: args.peer().to_owned(),
        text,
        transport: args.transport.into(),
        pin: args.pin.clone(),
    };
    let mut progress = SendProgress::new(!args.json);
    let result = client::call(sockets, request, |event| progress.event(&event)).await;
    progress.finish();
    match result {
        Ok(data) if args.json => json(&data),
        Ok(data) => {
            let r: TextResult = parse(data)?;
            outln!(
                "sent text ({}) to {} over {} in {:.2} s",
                HumanBytes(r.bytes),
                r.peer,
                r.transport,
                r.seconds
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// `share send --queue PEER PATH...`: hand the open files and the paths to
/// the daemon, which keeps them until the peer is reachable.
async fn queue_send(
    sockets: &[PathBuf],
    args: &SendArgs,
    walk: source::WalkOptions,
    layout: &Layout,
    files: &[std::fs::File],
) -> Result<()> {
    let roots = args
        .paths
        .iter()
        .map(|p| std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let (entries, skipped) = request_layout(layout);
    for s in &layout.skipped {
        errln!("warning: skipped {s}");
    }
    let fds = crate::control::fds::borrow_all(files);
    let request = |wait_for_peer| Request::QueueSend {
        peer: args.peer().to_owned(),
        entries: entries.clone(),
        skipped: skipped.clone(),
        transport: args.transport.into(),
        roots: roots.clone(),
        wait_for_peer,
        walk: walk.clone(),
        pin: args.pin.clone(),
    };
    let first = client::call_with_files(sockets, request(args.wait_for_peer), &fds, |_| {}).await;
    let data = match first {
        // A name never seen is likely a typo: on a terminal, ask.
        Err(ClientError::Daemon(e))
            if e.kind == ErrorKind::NotFound
                && !args.json
                && std::io::stdin().is_terminal()
                && std::io::stderr().is_terminal() =>
        {
            errln!("{}", e.message);
            let yes = ask(&format!(
                "Queue it anyway, until a device called \"{}\" appears? [y/N] ",
                args.peer()
            ))
            .await?;
            if !yes {
                return Err(e.into());
            }
            client::call_with_files(sockets, request(true), &fds, |_| {}).await?
        }
        other => other?,
    };
    if args.json {
        return json(&data);
    }
    let q: QueuedSend = parse(data)?;
    outln!(
        "queued send {} to {}: {} ({} file{}); it goes out when {} is reachable (`share queue` lists it)",
        q.id,
        q.peer,
        q.names.join(", "),
        q.files,
        if q.files == 1 { "" } else { "s" },
        q.peer
    );
    Ok(())
}
