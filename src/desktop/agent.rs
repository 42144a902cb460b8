//! What the agent shows and does, as a pure state machine: daemon events
//! and the user's clicks in, notifications and commands out.
//!
//! The rules, per incoming transfer:
//!
//! - an offer waiting for consent gets one notification with Accept and
//!   Reject (and "Always accept from this device"); it is then updated in
//!   place (same notification ID) with progress and the outcome, so an
//!   offer never stacks up several notifications;
//! - a transfer accepted without asking (a trusted sender) shows nothing
//!   until it is done: one "received" notification;
//! - "received" opens the folder when clicked; a failure of something the
//!   user saw is reported; the same offer seen twice (the daemon repeats
//!   waiting offers after a resync) is shown once.
//!
//! Outgoing transfers are left to the `share send` that started them.
//! Names and reasons from peers arrive [cleaned](crate::safe_text); local
//! paths and messages are made printable here, and bodies are escaped for
//! servers that interpret markup.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::control::events::Event;
use crate::describe::{names_preview, what, who};
use crate::identity::DeviceId;
use crate::protocol::HumanBytes;
use crate::registry::{Direction, State, TransferInfo, TransferKind};
use crate::safe_text::printable;

/// Action keys (the labels are what the user sees).
pub const ACCEPT: &str = "accept";
/// See [`ACCEPT`].
pub const REJECT: &str = "reject";
/// See [`ACCEPT`].
pub const ALWAYS: &str = "always";
/// See [`ACCEPT`].
pub const OPEN: &str = "open";
/// The action of a click on the notification itself.
pub const DEFAULT: &str = "default";

/// What the sender is told when the user presses Reject.
pub const REJECT_REASON: &str = "declined by the receiving user";

/// Progress updates of one notification are at least this far apart.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Finished transfers whose "received" notification can still be
/// clicked to open the folder.
const KEEP_FINISHED: usize = 32;

/// What the notification server can do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caps {
    /// It shows action buttons (capability `actions`).
    pub actions: bool,
    /// It interprets markup in bodies (`body-markup`), so peer text must
    /// be escaped.
    pub markup: bool,
}

impl Caps {
    /// From `GetCapabilities` (and the server's name, for the log).
    pub fn from_server(_server: &str, capabilities: &[String]) -> Self {
        let has = |c: &str| capabilities.iter().any(|x| x == c);
        Self {
            actions: has("actions"),
            markup: has("body-markup"),
        }
    }
}

/// Notification urgency (the `urgency` hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Background information.
    Low = 0,
    /// Most notifications.
    Normal = 1,
    /// Waits for the user (an offer): stays until answered.
    Critical = 2,
}

/// One notification's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// One line, plain text.
    pub summary: String,
    /// Details (escaped for markup when the server uses it).
    pub body: String,
    /// Buttons: key and label.
    pub actions: Vec<(String, String)>,
    /// Percent done, for servers that draw a bar.
    pub progress: Option<u8>,
    /// Urgency.
    pub urgency: Urgency,
    /// The `category` hint.
    pub category: &'static str,
    /// Stay after an action is invoked (so the same notification can be
    /// updated with progress).
    pub resident: bool,
    /// Do not keep in the notification history.
    pub transient: bool,
}

impl Note {
    /// A notification in `category` with no buttons and normal urgency,
    /// kept in the server's history.
    pub fn new(summary: String, body: String, category: &'static str) -> Self {
        Self {
            summary,
            body,
            actions: Vec::new(),
            progress: None,
            urgency: Urgency::Normal,
            category,
            resident: false,
            transient: false,
        }
    }
}

/// What the agent asks its I/O side to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Show `note` for `transfer`, replacing that transfer's notification
    /// if it has one; report the ID with [`Agent::shown`].
    Show {
        /// Transfer ID.
        transfer: String,
        /// Content.
        note: Note,
    },
    /// `share accept`.
    Accept {
        /// Transfer ID.
        transfer: String,
    },
    /// `share reject` with a reason.
    Reject {
        /// Transfer ID.
        transfer: String,
        /// What the sender is told.
        reason: String,
    },
    /// `share trust` of the sender, then `share accept`.
    TrustAndAccept {
        /// Transfer ID.
        transfer: String,
        /// The sender.
        peer_id: DeviceId,
    },
    /// Show these files in the file manager.
    Open {
        /// Absolute paths.
        paths: Vec<PathBuf>,
    },
}

/// One incoming transfer the agent knows of.
struct Tracked {
    info: TransferInfo,
    /// Its notification, while one is on screen.
    note: Option<u32>,
    /// Shown as an offer (so its outcome is reported).
    offered: bool,
    /// The user pressed a button on it.
    answered: bool,
    /// When progress was last shown, and at what percentage.
    progress_shown: Option<(Instant, u8)>,
}

impl Tracked {
    fn new(info: TransferInfo, offered: bool) -> Self {
        Self {
            info,
            note: None,
            offered,
            answered: false,
            progress_shown: None,
        }
    }
}

/// The agent's state.
pub struct Agent {
    caps: Caps,
    transfers: HashMap<String, Tracked>,
    /// Notification ID -> transfer ID.
    notes: HashMap<u32, String>,
    /// Finished transfers, oldest first (bounded by [`KEEP_FINISHED`]).
    finished: VecDeque<String>,
}

impl Agent {
    /// An agent for a server with `caps`.
    pub fn new(caps: Caps) -> Self {
        Self {
            caps,
            transfers: HashMap::new(),
            notes: HashMap::new(),
            finished: VecDeque::new(),
        }
    }

    /// The notification currently showing `transfer`, if any.
    pub fn note_of(&self, transfer: &str) -> Option<u32> {
        self.transfers.get(transfer).and_then(|t| t.note)
    }

    /// The server showed `transfer`'s notification as `id`.
    pub fn shown(&mut self, transfer: &str, id: u32) {
        if let Some(t) = self.transfers.get_mut(transfer) {
            if let Some(old) = t.note.replace(id)
                && old != id
            {
                self.notes.remove(&old);
            }
            self.notes.insert(id, transfer.to_owned());
        }
    }

    /// Folds in one daemon event.
    pub fn on_event(&mut self, event: Event, now: Instant) -> Vec<Op> {
        match event {
            Event::Snapshot { transfers, .. } => {
                // After a reconnect or a lag: catch up on what changed for
                // the transfers we follow.
                let mut ops = Vec::new();
                for info in transfers.unwrap_or_default() {
                    if self
                        .transfers
                        .get(&info.id)
                        .is_some_and(|t| t.info.state != info.state)
                    {
                        ops.extend(self.on_transfer(info, now));
                    }
                }
                ops
            }
            Event::Offer { transfer, trusted } => self.on_offer(transfer, trusted),
            Event::Transfer { transfer, .. } => self.on_transfer(transfer, now),
            Event::Progress {
                id,
                bytes_done,
                bytes,
                ..
            } => self.on_progress(&id, bytes_done, bytes, now),
            Event::Peers { .. } | Event::Lagged { .. } => Vec::new(),
        }
    }

    fn on_offer(&mut self, info: TransferInfo, trusted: bool) -> Vec<Op> {
        if info.direction != Direction::In || info.state != State::Pending {
            return Vec::new();
        }
        if self.transfers.get(&info.id).is_some_and(|t| t.offered) {
            return Vec::new();
        }
        let summary = format!("{} wants to send you {}", info.peer, what(&info));
        let mut body = String::new();
        if info.kind == TransferKind::Files {
            body.push_str(&names_preview(&info.names));
            body.push('\n');
        }
        body.push_str(&format!("From {}", who(&info, trusted)));
        let mut body = self.escape(&body);
        let mut actions = Vec::new();
        if self.caps.actions {
            actions.push((ACCEPT.to_owned(), "Accept".to_owned()));
            actions.push((REJECT.to_owned(), "Reject".to_owned()));
            if !trusted {
                actions.push((
                    ALWAYS.to_owned(),
                    "Always accept from this device".to_owned(),
                ));
            }
        } else {
            body.push_str(&self.escape(&format!(
                "\nAccept with `share accept {}`, or `share reject {}`",
                info.id, info.id
            )));
        }
        let transfer = info.id.clone();
        self.transfers
            .insert(transfer.clone(), Tracked::new(info, true));
        vec![Op::Show {
            transfer,
            note: Note {
                actions,
                urgency: Urgency::Critical,
                resident: true,
                ..Note::new(summary, body, "transfer")
            },
        }]
    }

    fn on_transfer(&mut self, info: TransferInfo, now: Instant) -> Vec<Op> {
        if info.direction != Direction::In {
            return Vec::new();
        }
        let id = info.id.clone();
        if let Some(t) = self.transfers.get(&id)
            && t.info.state == info.state
            && !matches!(info.state, State::Pending | State::Active)
        {
            // Its end was already shown.
            return Vec::new();
        }
        match info.state {
            State::Pending => {
                if let Some(t) = self.transfers.get_mut(&id) {
                    t.info = info;
                }
                Vec::new()
            }
            State::Active => {
                let Some(t) = self.transfers.get_mut(&id) else {
                    // Accepted without asking: nothing to show until done.
                    self.transfers.insert(id, Tracked::new(info, false));
                    return Vec::new();
                };
                let was = t.info.state;
                t.info = info;
                if was == State::Active || t.note.is_none() {
                    return Vec::new();
                }
                let (done, total) = (t.info.bytes_done, t.info.bytes);
                self.progress_note(&id, done, total, now)
            }
            State::Done => {
                let note = self.done_note(&info);
                self.finish(info);
                vec![Op::Show { transfer: id, note }]
            }
            State::Failed | State::Rejected | State::Cancelled => {
                // Report the end of what is on screen, and the failure of
                // a transfer that was accepted without asking. An offer
                // refused before it was shown, or one the user dismissed,
                // stays quiet: a stranger cannot make the desktop chatty.
                let report = self.transfers.get(&id).is_some_and(|t| {
                    t.note.is_some() || (info.state == State::Failed && !t.offered)
                });
                let note = report.then(|| self.ended_note(&info));
                self.finish(info);
                note.map(|note| Op::Show { transfer: id, note })
                    .into_iter()
                    .collect()
            }
        }
    }

    fn on_progress(&mut self, id: &str, done: u64, total: u64, now: Instant) -> Vec<Op> {
        let Some(t) = self.transfers.get_mut(id) else {
            return Vec::new();
        };
        t.info.bytes_done = done;
        if t.note.is_none() || t.info.state != State::Active {
            return Vec::new();
        }
        self.progress_note(id, done, total, now)
    }

    fn progress_note(&mut self, id: &str, done: u64, total: u64, now: Instant) -> Vec<Op> {
        let Some(t) = self.transfers.get_mut(id) else {
            return Vec::new();
        };
        let percent = percent(done, total);
        if let Some((at, shown)) = t.progress_shown
            && (now.duration_since(at) < PROGRESS_EVERY || shown == percent)
        {
            return Vec::new();
        }
        t.progress_shown = Some((now, percent));
        let summary = format!("Receiving {} from {}", what(&t.info), t.info.peer);
        let body = format!(
            "{} of {} ({percent} %)",
            HumanBytes(done),
            HumanBytes(total)
        );
        vec![Op::Show {
            transfer: id.to_owned(),
            note: Note {
                progress: Some(percent),
                resident: true,
                transient: true,
                ..Note::new(summary, body, "transfer")
            },
        }]
    }

    fn done_note(&self, info: &TransferInfo) -> Note {
        let peer = &info.peer;
        let (summary, body, actions) = match info.kind {
            TransferKind::Text => (
                format!("Text from {peer}"),
                self.escape(&format!(
                    "{}\nRead it with `share receive --text`",
                    names_preview(&info.names)
                )),
                Vec::new(),
            ),
            TransferKind::Files => {
                let folder = info
                    .saved
                    .first()
                    .and_then(|p| p.parent())
                    .map(|p| printable(&p.to_string_lossy()).into_owned())
                    .unwrap_or_else(|| "the download folder".to_owned());
                let names: Vec<String> = info
                    .saved
                    .iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect();
                let mut actions = Vec::new();
                if self.caps.actions && !info.saved.is_empty() {
                    actions.push((DEFAULT.to_owned(), "Open folder".to_owned()));
                    actions.push((OPEN.to_owned(), "Open folder".to_owned()));
                }
                (
                    format!("Received {} from {peer}", what(info)),
                    self.escape(&format!("Saved to {folder}: {}", names_preview(&names))),
                    actions,
                )
            }
        };
        Note {
            actions,
            ..Note::new(summary, body, "transfer.complete")
        }
    }

    fn ended_note(&self, info: &TransferInfo) -> Note {
        let peer = &info.peer;
        let reason = info.reason.as_deref().unwrap_or("no reason given");
        let summary = match info.state {
            State::Rejected => format!("Offer from {peer} declined"),
            State::Cancelled => format!("Transfer from {peer} cancelled"),
            _ => format!("Receiving from {peer} failed"),
        };
        Note {
            transient: true,
            ..Note::new(summary, self.escape(reason), "transfer.error")
        }
    }

    /// Records a final state; the transfer stays clickable for a while.
    fn finish(&mut self, info: TransferInfo) {
        let id = info.id.clone();
        match self.transfers.get_mut(&id) {
            Some(t) => t.info = info,
            None => {
                self.transfers.insert(id.clone(), Tracked::new(info, false));
            }
        }
        if !self.finished.contains(&id) {
            self.finished.push_back(id);
        }
        while self.finished.len() > KEEP_FINISHED {
            if let Some(old) = self.finished.pop_front()
                && let Some(t) = self.transfers.remove(&old)
                && let Some(note) = t.note
            {
                self.notes.remove(&note);
            }
        }
    }

    /// The user chose `key` on notification `id`.
    pub fn on_action(&mut self, id: u32, key: &str) -> Vec<Op> {
        let Some(transfer) = self.notes.get(&id).cloned() else {
            return Vec::new();
        };
        let Some(t) = self.transfers.get_mut(&transfer) else {
            return Vec::new();
        };
        match (t.info.state, key) {
            (State::Pending, ACCEPT | REJECT | ALWAYS) if !t.answered => {
                t.answered = true;
                vec![match key {
                    ACCEPT => Op::Accept { transfer },
                    REJECT => Op::Reject {
                        transfer,
                        reason: REJECT_REASON.to_owned(),
                    },
                    _ => Op::TrustAndAccept {
                        transfer,
                        peer_id: t.info.peer_id,
                    },
                }]
            }
            (State::Done, OPEN | DEFAULT) if !t.info.saved.is_empty() => vec![Op::Open {
                paths: t.info.saved.clone(),
            }],
            _ => Vec::new(),
        }
    }

    /// Notification `id` is gone from the screen: dismissed (then the
    /// transfer's later news, but its success, stays quiet), or closed by
    /// the server right after the user pressed a button on it (then the
    /// progress replaces it all the same).
    pub fn on_closed(&mut self, id: u32) {
        let Some(transfer) = self.notes.get(&id).cloned() else {
            return;
        };
        let Some(t) = self.transfers.get_mut(&transfer) else {
            self.notes.remove(&id);
            return;
        };
        if t.answered && matches!(t.info.state, State::Pending | State::Active) {
            return;
        }
        self.notes.remove(&id);
        if t.note == Some(id) {
            t.note = None;
        }
    }

    /// A command the user asked for failed (the offer expired meanwhile,
    /// the daemon went away): say so on the transfer's notification.
    pub fn on_command_failed(&mut self, transfer: &str, message: &str) -> Vec<Op> {
        let Some(t) = self.transfers.get_mut(transfer) else {
            return Vec::new();
        };
        t.answered = false;
        let note = Note {
            transient: true,
            ..Note::new(
                format!("Could not answer {}", t.info.peer),
                self.escape(&printable(message)),
                "transfer.error",
            )
        };
        vec![Op::Show {
            transfer: transfer.to_owned(),
            note,
        }]
    }

    /// `text` as the server wants bodies: markup-escaped if it reads
    /// markup.
    fn escape(&self, text: &str) -> String {
        if !self.caps.markup {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&apos;"),
                c => out.push(c),
            }
        }
        out
    }
}

/// Whole percent of `done` in `total` (100 for an empty transfer).
fn percent(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 100;
    }
    u8::try_from((u128::from(done.min(total)) * 100 / u128::from(total)) as u64).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: Caps = Caps {
        actions: true,
        markup: true,
    };

    fn offer(id: &str, state: State) -> TransferInfo {
        TransferInfo {
            files: 2,
            bytes: 1000,
            names: vec!["a.txt".into(), "b.txt".into()],
            ..TransferInfo::example(id, state)
        }
    }

    fn done(id: &str) -> TransferInfo {
        TransferInfo {
            bytes_done: 1000,
            saved: vec!["/dl/a.txt".into(), "/dl/b (1).txt".into()],
            ..offer(id, State::Done)
        }
    }

    /// Runs `ops` as the I/O side would: notification IDs from 1 up, each
    /// transfer keeping its ID. Returns the notes shown, with their IDs.
    fn show(agent: &mut Agent, ops: Vec<Op>, next: &mut u32) -> Vec<(u32, Note)> {
        let mut shown = Vec::new();
        for op in ops {
            let Op::Show { transfer, note } = op else {
                panic!("expected notifications only, got {op:?}");
            };
            let id = agent.note_of(&transfer).unwrap_or_else(|| {
                *next += 1;
                *next
            });
            agent.shown(&transfer, id);
            shown.push((id, note));
        }
        shown
    }

    /// `event` in, and its notifications shown.
    fn feed(agent: &mut Agent, event: Event, now: Instant, next: &mut u32) -> Vec<(u32, Note)> {
        let ops = agent.on_event(event, now);
        show(agent, ops, next)
    }

    fn event(transfer: TransferInfo) -> Event {
        Event::Transfer {
            transfer,
            trusted: Some(false),
        }
    }

    /// Offer `id` from an untrusted laptop.
    fn offered(id: &str) -> Event {
        Event::Offer {
            transfer: offer(id, State::Pending),
            trusted: false,
        }
    }

    #[test]
    fn an_offer_is_one_notification_from_question_to_received() {
        let mut agent = Agent::new(FULL);
        let mut ids = 0;
        let t0 = Instant::now();
        let first = feed(&mut agent, offered("aa"), t0, &mut ids);
        assert_eq!(first.len(), 1);
        let (id, note) = &first[0];
        assert_eq!(note.summary, "laptop wants to send you 2 files (1000 B)");
        let keys: Vec<&str> = note.actions.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, [ACCEPT, REJECT, ALWAYS]);
        assert_eq!(note.urgency, Urgency::Critical);
        // The same offer again (after a resync): nothing new.
        assert!(agent.on_event(offered("aa"), t0).is_empty());

        assert_eq!(
            agent.on_action(*id, ACCEPT),
            [Op::Accept {
                transfer: "aa".into()
            }]
        );
        assert!(agent.on_action(*id, ACCEPT).is_empty(), "answered once");
        // GNOME closes a notification whose button was pressed.
        agent.on_closed(*id);
        let progress = feed(&mut agent, event(offer("aa", State::Active)), t0, &mut ids);
        assert_eq!(progress[0].0, *id, "progress replaces the offer");
        assert_eq!(progress[0].1.progress, Some(0));
        let sample = |done| Event::Progress {
            id: "aa".into(),
            bytes_done: done,
            bytes_sent: done,
            bytes: 1000,
        };
        let soon = t0 + Duration::from_millis(300);
        assert!(
            agent.on_event(sample(400), soon).is_empty(),
            "at most once a second"
        );
        let later = t0 + PROGRESS_EVERY;
        let shown = feed(&mut agent, sample(500), later, &mut ids);
        assert_eq!((shown[0].0, shown[0].1.progress), (*id, Some(50)));
        assert_eq!(shown[0].1.body, "500 B of 1000 B (50 %)");

        let end = feed(&mut agent, event(done("aa")), later, &mut ids);
        assert_eq!(end[0].0, *id, "the result replaces it too");
        assert_eq!(end[0].1.summary, "Received 2 files (1000 B) from laptop");
        assert_eq!(end[0].1.body, "Saved to /dl: a.txt, b (1).txt");
        assert_eq!(
            agent.on_action(*id, OPEN),
            [Op::Open {
                paths: vec!["/dl/a.txt".into(), "/dl/b (1).txt".into()]
            }]
        );
        // A snapshot after a reconnect does not show it again.
        let snapshot = Event::Snapshot {
            transfers: Some(vec![done("aa")]),
            peers: None,
        };
        assert!(agent.on_event(snapshot, later).is_empty());
        assert_eq!(ids, 1, "one notification for the whole offer");
    }

    #[test]
    fn reject_and_always_become_requests() {
        let mut agent = Agent::new(FULL);
        let mut ids = 0;
        let now = Instant::now();
        for id in ["aa", "bb"] {
            feed(&mut agent, offered(id), now, &mut ids);
        }
        assert_eq!(
            agent.on_action(1, REJECT),
            [Op::Reject {
                transfer: "aa".into(),
                reason: REJECT_REASON.into()
            }]
        );
        assert_eq!(
            agent.on_action(2, ALWAYS),
            [Op::TrustAndAccept {
                transfer: "bb".into(),
                peer_id: DeviceId::from_cert_der(b"laptop")
            }]
        );
        let declined = TransferInfo {
            reason: Some(REJECT_REASON.into()),
            ..offer("aa", State::Rejected)
        };
        let shown = feed(&mut agent, event(declined), now, &mut ids);
        assert_eq!(shown[0].0, 1);
        assert_eq!(shown[0].1.summary, "Offer from laptop declined");
        // A failed answer (the offer expired meanwhile) is said.
        let failed = agent.on_command_failed("bb", "transfer bb is rejected");
        assert!(matches!(&failed[..], [Op::Show { transfer, .. }] if transfer == "bb"));
    }

    #[test]
    fn a_trusted_sender_gets_only_the_received_notification() {
        let mut agent = Agent::new(FULL);
        let now = Instant::now();
        assert!(
            agent
                .on_event(event(offer("aa", State::Active)), now)
                .is_empty()
        );
        let sample = Event::Progress {
            id: "aa".into(),
            bytes_done: 500,
            bytes_sent: 500,
            bytes: 1000,
        };
        assert!(agent.on_event(sample, now + PROGRESS_EVERY).is_empty());
        let ops = agent.on_event(event(done("aa")), now);
        assert!(
            matches!(&ops[..], [Op::Show { note, .. }] if note.summary.starts_with("Received"))
        );
        // A trusted transfer that fails is reported; an untrusted offer
        // refused before it was shown is not.
        agent.on_event(event(offer("bb", State::Active)), now);
        let failed = TransferInfo {
            reason: Some("link lost".into()),
            ..offer("bb", State::Failed)
        };
        assert_eq!(agent.on_event(event(failed), now).len(), 1);
        let refused = offer("cc", State::Rejected);
        assert!(agent.on_event(event(refused), now).is_empty());
        let outgoing = TransferInfo {
            direction: Direction::Out,
            ..done("dd")
        };
        assert!(agent.on_event(event(outgoing), now).is_empty());
    }

    #[test]
    fn a_dismissed_offer_stays_quiet_until_it_succeeds() {
        let mut agent = Agent::new(FULL);
        let mut ids = 0;
        let now = Instant::now();
        feed(&mut agent, offered("aa"), now, &mut ids);
        agent.on_closed(1);
        let expired = TransferInfo {
            reason: Some("offer expired".into()),
            ..offer("aa", State::Rejected)
        };
        assert!(agent.on_event(event(expired), now).is_empty());

        feed(&mut agent, offered("bb"), now, &mut ids);
        agent.on_closed(2);
        // Accepted in a terminal: no progress, but the result is news.
        assert!(
            agent
                .on_event(event(offer("bb", State::Active)), now)
                .is_empty()
        );
        let end = feed(&mut agent, event(done("bb")), now, &mut ids);
        assert_eq!(end[0].0, 3, "a new notification");
    }

    #[test]
    fn text_from_peers_is_escaped_for_the_server() {
        let mut agent = Agent::new(FULL);
        let hostile = TransferInfo {
            peer: "<b>lap</b>".into(),
            names: vec!["a&b.txt".into()],
            files: 1,
            ..offer("aa", State::Pending)
        };
        let ops = agent.on_event(
            Event::Offer {
                transfer: hostile.clone(),
                trusted: false,
            },
            Instant::now(),
        );
        let [Op::Show { note, .. }] = &ops[..] else {
            panic!("{ops:?}")
        };
        assert!(
            note.body
                .starts_with("a&amp;b.txt\nFrom &lt;b&gt;lap&lt;/b&gt; ("),
            "{}",
            note.body
        );
        assert!(
            !note.summary.chars().any(char::is_control),
            "{}",
            note.summary
        );

        // Without markup or buttons: plain text, and the command to run.
        let mut plain = Agent::new(Caps::default());
        let ops = plain.on_event(
            Event::Offer {
                transfer: hostile,
                trusted: false,
            },
            Instant::now(),
        );
        let [Op::Show { note, .. }] = &ops[..] else {
            panic!("{ops:?}")
        };
        assert!(note.actions.is_empty());
        assert!(note.body.contains("<b>lap</b>"));
        assert!(
            note.body
                .ends_with("Accept with `share accept aa`, or `share reject aa`")
        );
    }

    #[test]
    fn finished_transfers_are_forgotten_beyond_a_bound() {
        let mut agent = Agent::new(FULL);
        let now = Instant::now();
        for i in 0..KEEP_FINISHED + 10 {
            agent.on_event(event(done(&format!("t{i}"))), now);
        }
        assert_eq!(agent.transfers.len(), KEEP_FINISHED);
        assert!(!agent.transfers.contains_key("t0"));
    }

    #[test]
    fn percent_is_whole_and_bounded() {
        assert_eq!(percent(0, 0), 100);
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(5, 3), 100);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }
}
