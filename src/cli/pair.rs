//! `share pair`: start a pairing and compare the codes (interactively on
//! a terminal), confirm or decline one, list them.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::TransportArg;
use super::output::{ask, errln, json, outln, parse};
use crate::control::{Request, client};
use crate::pairing::{PairingInfo, PairingState};
use crate::peers::PeerLabel;

/// `share pair`.
#[derive(Debug, Args)]
pub struct PairArgs {
    /// Device to pair with: name, device-ID prefix, or HOST:PORT. Without
    /// it, lists pairing requests.
    #[arg(conflicts_with_all = ["list", "confirm", "reject"])]
    pub peer: Option<String>,
    /// List pairing requests and their codes.
    #[arg(long)]
    pub list: bool,
    /// Confirm pairing ID: this device shows the same code as the other.
    #[arg(long, value_name = "ID", conflicts_with_all = ["list", "reject"])]
    pub confirm: Option<String>,
    /// Decline pairing ID (the codes differ, or you did not ask for it).
    #[arg(long, value_name = "ID", conflicts_with = "list")]
    pub reject: Option<String>,
    /// With --confirm: return only when the other device has answered too.
    #[arg(long, requires = "confirm")]
    pub wait: bool,
    /// Transport for `share pair PEER`: race QUIC and TCP (auto), or force one.
    #[arg(long, value_enum, default_value_t = TransportArg::Auto)]
    pub transport: TransportArg,
    /// Print one JSON document on stdout (never asks interactively).
    #[arg(long)]
    pub json: bool,
}

/// `123456` as `123 456`, easier to compare aloud.
fn spaced(code: &str) -> String {
    match code.len() {
        6 => format!("{} {}", &code[..3], &code[3..]),
        _ => code.to_owned(),
    }
}

/// `share pair ...`.
pub(super) async fn pair(sockets: &[PathBuf], args: PairArgs) -> Result<()> {
    let call = |request| client::call(sockets, request, |_| {});
    if let Some(id) = args.confirm.clone().or(args.reject.clone()) {
        let accept = args.confirm.is_some();
        let data = call(Request::PairDecide {
            id,
            accept,
            wait: args.wait,
        })
        .await?;
        if args.json {
            return json(&data);
        }
        return report_decision(&parse(data)?, accept);
    }
    let Some(peer) = args.peer else {
        let data = call(Request::Pairings).await?;
        return if args.json {
            json(&data)
        } else {
            list_pairings(&parse::<Vec<PairingInfo>>(data)?)
        };
    };
    let data = call(Request::Pair {
        peer,
        transport: args.transport.into(),
    })
    .await?;
    if args.json {
        return json(&data);
    }
    let info: PairingInfo = parse(data)?;
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if info.already_trusted {
        errln!(
            "{} ({}) is already trusted here; pairing again only matters if it does not trust this device",
            info.peer,
            info.peer_id.short()
        );
    }
    outln!(
        "pairing with {}: code {}",
        PeerLabel::new(&info.peer, &info.peer_id, info.looks_like.as_ref()),
        spaced(&info.code)
    );
    if let Some(trusted) = &info.looks_like {
        errln!(
            "warning: {} is not the trusted device {} although its name looks alike; pair only if you expected a new device",
            info.peer_id.short(),
            trusted.short()
        );
    }
    if !interactive {
        outln!(
            "compare it with the code on {}; if they match, run `share pair --confirm {}` here and confirm on {} too (within {} s)",
            info.peer,
            info.id,
            info.peer,
            info.expires_in_s
        );
        return Ok(());
    }
    errln!(
        "{} lists this request under `share pair --list`; confirm it there too.",
        info.peer
    );
    let accept = ask(&format!(
        "Does {} show the code {}? [y/N] ",
        info.peer,
        spaced(&info.code)
    ))
    .await?;
    if accept {
        errln!("waiting for {} to confirm…", info.peer);
    }
    let data = call(Request::PairDecide {
        id: info.id,
        accept,
        wait: accept,
    })
    .await?;
    if !accept {
        // The user said the codes differ (or gave up): not a success.
        if info.already_trusted {
            bail!(
                "declined pairing with {}; it is still trusted from before (`share untrust {}` removes it)",
                info.peer,
                info.peer_id.short()
            );
        }
        bail!(
            "declined pairing with {}; this device does not trust it",
            info.peer
        );
    }
    report_decision(&parse(data)?, accept)
}

/// Prints where a pairing stands after this user's answer; fails if it
/// ended without pairing.
fn report_decision(info: &PairingInfo, accepted: bool) -> Result<()> {
    match info.state {
        PairingState::Paired => {
            outln!(
                "paired with {} ({}): both devices now trust each other",
                info.peer,
                info.peer_id
            );
            Ok(())
        }
        PairingState::Waiting if accepted => {
            outln!(
                "confirmed; waiting for {} to confirm code {} ({} s left; `share pair --list` shows the outcome)",
                info.peer,
                spaced(&info.code),
                info.expires_in_s
            );
            Ok(())
        }
        PairingState::Waiting | PairingState::Rejected if !accepted => {
            outln!("declined pairing with {}", info.peer);
            Ok(())
        }
        state => bail!(
            "pairing with {} {}: {}",
            info.peer,
            state.as_str(),
            info.reason.as_deref().unwrap_or("no reason given")
        ),
    }
}

fn list_pairings(list: &[PairingInfo]) -> Result<()> {
    if list.is_empty() {
        outln!("no pairing requests");
        return Ok(());
    }
    outln!("ID        DIR  STATE     PEER                      CODE     YOU  PEER  EXPIRES");
    let answer = |a: Option<bool>| match a {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    for p in list {
        let expires = if p.state.finished() {
            p.reason.as_deref().unwrap_or_default().to_owned()
        } else {
            format!("{} s", p.expires_in_s)
        };
        outln!(
            "{:8}  {:3}  {:8}  {:24}  {:7}  {:3}  {:4}  {}",
            p.id,
            p.direction.as_str(),
            p.state.as_str(),
            PeerLabel::new(&p.peer, &p.peer_id, p.looks_like.as_ref()),
            spaced(&p.code),
            answer(p.you_confirmed),
            answer(p.peer_confirmed),
            expires
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_spaced() {
        assert_eq!(spaced("012345"), "012 345");
        assert_eq!(spaced("12"), "12");
    }
}
