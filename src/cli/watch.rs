//! `share transfers --watch` and `share peers --watch`: live views driven
//! by the daemon's events ([`crate::control::events`]), not by polling.
//!
//! On a terminal the table is redrawn in place (cursor up over the last
//! frame, each line rewritten and cleared to its end), cut to the
//! terminal's width and height so that a long name never wraps and throws
//! the line count off. With `--json`, each event is printed as it comes,
//! one JSON document per line. Otherwise (a pipe, a log) the transfers view
//! prints a row per change of state and the peers view the whole table
//! per change. The views run until Ctrl-C, or fail when the daemon stops.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use unicode_width::UnicodeWidthChar;

use super::render;
use crate::control::events::{Event, Subscription, Topic};
use crate::peers::PeerInfo;
use crate::registry::TransferInfo;

/// Redraw interval of the peers view's "seen N s ago" column (a local
/// clock: no request goes to the daemon).
const AGES_EVERY: Duration = Duration::from_secs(1);

/// How the view is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Redrawn in place.
    Terminal,
    /// One JSON document per event.
    Json,
    /// Appended lines.
    Lines,
}

impl Mode {
    fn pick(as_json: bool) -> Self {
        if as_json {
            Self::Json
        } else if std::io::stdout().is_terminal() {
            Self::Terminal
        } else {
            Self::Lines
        }
    }
}

/// `share transfers --watch`.
pub(super) async fn transfers(sockets: &[PathBuf], as_json: bool) -> Result<()> {
    let mode = Mode::pick(as_json);
    let mut events = Subscription::open(sockets, &[Topic::Transfers]).await?;
    let mut view = TransfersView::default();
    let mut screen = Screen::default();
    loop {
        let event = events.next().await?;
        if mode == Mode::Json {
            print(&serde_json::to_string(&event)?)?;
            continue;
        }
        let changed = view.apply(&event);
        match mode {
            Mode::Terminal => screen.draw(&render::transfer_table(&view.list))?,
            _ => match (&event, changed) {
                (Event::Snapshot { .. }, _) => {
                    for line in render::transfer_table(&view.list) {
                        print(&line)?;
                    }
                }
                (_, Some(row)) => print(&render::transfer_row(&row))?,
                _ => {}
            },
        }
    }
}

/// `share peers --watch`.
pub(super) async fn peers(sockets: &[PathBuf], as_json: bool) -> Result<()> {
    let mode = Mode::pick(as_json);
    let mut events = Subscription::open(sockets, &[Topic::Peers]).await?;
    let mut peers: Vec<PeerInfo> = Vec::new();
    let mut screen = Screen::default();
    let mut ages = tokio::time::interval(AGES_EVERY);
    loop {
        let event = tokio::select! {
            event = events.next() => Some(event?),
            _ = ages.tick(), if mode == Mode::Terminal => None,
        };
        if let Some(event) = event {
            if mode == Mode::Json {
                print(&serde_json::to_string(&event)?)?;
                continue;
            }
            match event {
                Event::Snapshot {
                    peers: Some(now), ..
                }
                | Event::Peers { peers: now } => peers = now,
                _ => continue,
            }
            if mode == Mode::Lines {
                for line in render::peer_table(&peers) {
                    print(&line)?;
                }
                print("")?;
                continue;
            }
        }
        age(&mut peers, SystemTime::now());
        screen.draw(&render::peer_table(&peers))?;
    }
}

/// Recomputes "seen N s ago" from each peer's last-seen time.
fn age(peers: &mut [PeerInfo], now: SystemTime) {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for p in peers {
        p.last_seen_s = now.saturating_sub(p.last_seen);
    }
}

fn print(line: &str) -> Result<()> {
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

/// The transfers as the view shows them.
#[derive(Default)]
struct TransfersView {
    list: Vec<TransferInfo>,
}

impl TransfersView {
    /// Folds in `event`; returns the transfer whose state changed, if one
    /// did.
    fn apply(&mut self, event: &Event) -> Option<TransferInfo> {
        match event {
            Event::Snapshot {
                transfers: Some(list),
                ..
            } => {
                self.list.clone_from(list);
                None
            }
            Event::Transfer { transfer, .. } => {
                match self.list.iter_mut().find(|t| t.id == transfer.id) {
                    Some(known) if known.state == transfer.state => {
                        *known = transfer.clone();
                        return None;
                    }
                    Some(known) => *known = transfer.clone(),
                    None => self.list.push(transfer.clone()),
                }
                Some(transfer.clone())
            }
            Event::Progress {
                id,
                bytes_done,
                bytes_sent,
                ..
            } => {
                if let Some(t) = self.list.iter_mut().find(|t| &t.id == id) {
                    t.bytes_done = *bytes_done;
                    t.bytes_sent = *bytes_sent;
                }
                None
            }
            _ => None,
        }
    }
}

/// A region at the bottom of the terminal that is redrawn in place.
#[derive(Default)]
struct Screen {
    /// Lines of the last frame.
    drawn: usize,
}

impl Screen {
    /// Replaces the last frame with `lines`, fitted to the terminal.
    fn draw(&mut self, lines: &[String]) -> Result<()> {
        let (width, height) = terminal_size();
        let frame = self.frame(lines, width, height);
        let mut out = std::io::stdout().lock();
        out.write_all(frame.as_bytes())?;
        out.flush()?;
        Ok(())
    }

    /// The bytes that replace the last frame with `lines`: at most
    /// `height - 1` lines (the newest rows kept), each at most `width`
    /// columns.
    fn frame(&mut self, lines: &[String], width: usize, height: usize) -> String {
        let room = height.saturating_sub(1).max(2);
        let mut shown: Vec<String> = Vec::with_capacity(room);
        if lines.len() > room {
            // The header, a note, and the newest rows.
            let hidden = lines.len() - room + 1;
            shown.push(lines[0].clone());
            shown.push(format!(
                "… {hidden} more above (the full list: without --watch)"
            ));
            shown.extend(lines[lines.len() - (room - 2)..].iter().cloned());
        } else {
            shown.extend(lines.iter().cloned());
        }
        let mut frame = String::new();
        if self.drawn > 0 {
            // Column 1 of the first line of the last frame.
            frame.push_str(&format!("\x1b[{}F", self.drawn));
        }
        for line in &shown {
            frame.push_str(&fit(line, width));
            frame.push_str("\x1b[K\n");
        }
        // Whatever the last frame had below this one.
        frame.push_str("\x1b[J");
        self.drawn = shown.len();
        frame
    }
}

/// The terminal's columns and rows (80 x 24 when unknown).
fn terminal_size() -> (usize, usize) {
    match rustix::termios::tcgetwinsize(std::io::stdout()) {
        Ok(size) if size.ws_col > 0 && size.ws_row > 0 => {
            (usize::from(size.ws_col), usize::from(size.ws_row))
        }
        _ => (80, 24),
    }
}

/// `line` cut to `width` display columns, with `…` where it was cut.
fn fit(line: &str, width: usize) -> String {
    let mut used = 0;
    let mut out = String::with_capacity(line.len().min(width * 4));
    let total: usize = line.chars().map(|c| c.width().unwrap_or(0)).sum();
    if total <= width {
        return line.to_owned();
    }
    for c in line.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceId;
    use crate::registry::State;

    #[test]
    fn frames_overwrite_the_previous_one() {
        let mut screen = Screen::default();
        let first = screen.frame(&["a".into(), "b".into(), "c".into()], 80, 24);
        assert_eq!(first, "a\x1b[K\nb\x1b[K\nc\x1b[K\n\x1b[J");
        let second = screen.frame(&["x".into()], 80, 24);
        assert_eq!(second, "\x1b[3Fx\x1b[K\n\x1b[J");
        let third = screen.frame(&["y".into(), "z".into()], 80, 24);
        assert!(third.starts_with("\x1b[1Fy"));
    }

    #[test]
    fn frames_fit_the_terminal() {
        let mut screen = Screen::default();
        let lines: Vec<String> = (0..30).map(|i| format!("row {i}")).collect();
        let frame = screen.frame(&lines, 80, 10);
        let shown: Vec<&str> = frame.split("\x1b[K\n").collect();
        assert_eq!(screen.drawn, 9);
        assert_eq!(shown[0], "row 0", "the header stays");
        assert!(shown[1].starts_with("… 22 more above"));
        assert_eq!(shown[8], "row 29", "the newest rows are shown");
        assert_eq!(fit("photos-from-the-trip", 10), "photos-fr…");
        assert_eq!(fit("日本語のファイル", 7), "日本語…");
        assert_eq!(fit("short", 10), "short");
    }

    #[test]
    fn the_view_follows_snapshots_changes_and_progress() {
        let mut view = TransfersView::default();
        let snapshot = Event::Snapshot {
            transfers: Some(vec![TransferInfo::example("aa", State::Done)]),
            peers: None,
        };
        assert_eq!(view.apply(&snapshot), None);
        let new = Event::Transfer {
            transfer: TransferInfo::example("bb", State::Pending),
            trusted: Some(false),
        };
        assert_eq!(view.apply(&new).map(|t| t.id), Some("bb".into()));
        let active = Event::Transfer {
            transfer: TransferInfo::example("bb", State::Active),
            trusted: Some(false),
        };
        assert!(view.apply(&active).is_some());
        assert_eq!(view.apply(&active), None, "no change of state");
        let progress = Event::Progress {
            id: "bb".into(),
            bytes_done: 60,
            bytes_sent: 60,
            bytes: 100,
        };
        view.apply(&progress);
        assert_eq!(
            view.list
                .iter()
                .map(|t| (t.id.as_str(), t.bytes_done))
                .collect::<Vec<_>>(),
            [("aa", 0), ("bb", 60)]
        );
    }

    #[test]
    fn ages_come_from_the_last_seen_time() {
        let mut peers = vec![PeerInfo {
            name: "desk".into(),
            id: DeviceId::from_cert_der(b"desk"),
            addresses: Vec::new(),
            tcp_port: None,
            trusted: false,
            source: crate::discovery::PeerSource::Manual,
            last_seen_s: 0,
            last_seen: 1000,
            looks_like: None,
            protocol: crate::peers::Protocol::Lanshare,
            localsend: None,
        }];
        age(&mut peers, UNIX_EPOCH + Duration::from_secs(1042));
        assert_eq!(peers[0].last_seen_s, 42);
    }
}
