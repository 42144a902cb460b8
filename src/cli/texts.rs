//! Received texts: `share inbox` and `share receive --text`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;

use super::output::{json, local, outln, parse};
use crate::control::{Request, client};
use crate::intake::inbox::InboxText;
use crate::peers::PeerLabel;
use crate::safe_text::{CleanText, printable_lines};

/// `share inbox`.
pub(super) async fn inbox(sockets: &[PathBuf], as_json: bool) -> Result<()> {
    let data = client::call(sockets, Request::Inbox, |_| {}).await?;
    if as_json {
        return json(&data);
    }
    let texts: Vec<InboxText> = parse(data)?;
    if texts.is_empty() {
        outln!("no texts received");
        return Ok(());
    }
    outln!("ID        RECEIVED          NEW  FROM                      TEXT");
    for t in texts {
        let first = t.text.lines().next().unwrap_or("");
        let mut shown: String = first.chars().take(60).collect();
        if first.chars().count() > 60 || t.text.lines().nth(1).is_some() {
            shown.push('…');
        }
        let shown = CleanText::new(&shown);
        outln!(
            "{:8}  {:16}  {:3}  {:24}  {}",
            t.id,
            local(t.received),
            if t.read { "" } else { "*" },
            PeerLabel::new(&t.peer, &t.peer_id, t.looks_like.as_ref()),
            shown
        );
    }
    Ok(())
}

/// `share receive --text [--wait SECS]`.
pub(super) async fn receive_text(
    sockets: &[PathBuf],
    wait_s: Option<u64>,
    as_json: bool,
) -> Result<()> {
    let data = client::call(sockets, Request::ReceiveText { wait_s }, |_| {}).await?;
    if as_json {
        return json(&data);
    }
    let text: InboxText = parse(data)?;
    let mut out = std::io::stdout().lock();
    if out.is_terminal() {
        // Lines as lines, but no escape sequence reaches the terminal;
        // and a final newline for the prompt.
        let shown = printable_lines(&text.text);
        out.write_all(shown.as_bytes())?;
        if !shown.ends_with('\n') {
            out.write_all(b"\n")?;
        }
    } else {
        // Exact bytes for pipes and files.
        out.write_all(text.text.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}
