//! The `Hello` exchange that authenticates a link.
//!
//! TLS proves which key the peer holds, but in TLS 1.3 a client finishes
//! its handshake before the server has judged the client's certificate. So
//! the dialer treats a link as authenticated only once the server's `Hello`
//! arrives, and the server answers `Hello` only after its own checks (the
//! protocol version, and that the peer is not presenting a new key under
//! the name of a device the user trusts).
//!
//! The peer's name enters here, so it is cleaned here, once, on both
//! sides, into a [`PeerName`] (its short device ID if nothing is left):
//! everything above sees the cleaned name in [`PeerHello`], and the
//! impostor check compares what the user sees.

use super::framed::{Framed, RecvError};
use crate::identity::trust::TrustStore;
use crate::protocol::{ErrorCode, Message, VERSION};
use crate::safe_text::PeerName;
use crate::transfer::TransferError;
use crate::transport::dial::AuthFailure;

/// What the peer told us about itself.
#[derive(Debug, Clone)]
pub struct PeerHello {
    /// Its protocol version.
    pub version: u16,
    /// Its human-readable name, cleaned.
    pub name: PeerName,
}

/// Dialer side: send our `Hello`, wait for the peer's.
pub async fn client(framed: &mut Framed, our_name: &str) -> Result<PeerHello, AuthFailure> {
    let hello = Message::Hello {
        version: VERSION,
        name: our_name.into(),
    };
    framed
        .send(&hello)
        .await
        .map_err(|e| AuthFailure::Failed(e.to_string()))?;
    match framed.recv().await {
        Ok(Message::Hello { version, name }) if version == VERSION => Ok(PeerHello {
            version,
            name: name.clean_name(&framed.link().peer.short()),
        }),
        Ok(Message::Hello { version, .. }) => {
            let reason = format!(
                "the peer speaks protocol version {version}, this device speaks {VERSION}; update lanshare on both"
            );
            refuse(framed, &reason).await;
            Err(AuthFailure::Refused(reason))
        }
        Ok(Message::Error { code, message }) => {
            Err(AuthFailure::Refused(code.report(&message.clean())))
        }
        Ok(other) => Err(AuthFailure::Refused(format!(
            "the peer answered {} instead of Hello",
            kind(&other)
        ))),
        Err(e) if e.is_identity() => Err(AuthFailure::Refused(format!(
            "the peer refused this device's identity: {e}"
        ))),
        Err(e) => Err(AuthFailure::Failed(e.to_string())),
    }
}

/// Acceptor side: wait for the dialer's `Hello` (no longer than
/// [`Link::hello_wait`](crate::transport::Link::hello_wait)), check it,
/// answer ours.
pub async fn server(
    framed: &mut Framed,
    our_name: &str,
    trust: &TrustStore,
) -> Result<PeerHello, TransferError> {
    let peer_id = framed.link().peer;
    let wait = framed.link().hello_wait();
    let (version, name) = match framed.recv_within(wait).await {
        Ok(Message::Hello { version, name }) => (version, name.clean_name(&peer_id.short())),
        Ok(other) => {
            let e = TransferError::Protocol(format!("expected Hello, got {}", kind(&other)));
            framed.send_error(&e).await;
            return Err(e);
        }
        Err(RecvError::Decode(d)) => {
            let e = TransferError::Protocol(d.to_string());
            framed.send_error(&e).await;
            return Err(e);
        }
        Err(e @ RecvError::OverBudget(_)) => {
            let e = TransferError::from(e);
            framed.send_error(&e).await;
            return Err(e);
        }
        Err(e) => return Err(e.into()),
    };
    if version != VERSION {
        let e = TransferError::Peer {
            peer: name.clone(),
            code: ErrorCode::Refused,
            message: format!(
                "protocol version {version} is not supported (this device speaks {VERSION})"
            )
            .into(),
        };
        refuse(framed, &e.to_string()).await;
        return Err(e);
    }
    if let Some(trusted) = trust.impostor_of(&name, &peer_id) {
        tracing::warn!(
            claimed_name = %name,
            presented = %peer_id,
            trusted = %trusted.id,
            "REFUSED: a device presents a different identity under the name of a trusted device (impostor, or the device was reinstalled; if so, untrust and trust it again)"
        );
        let reason =
            format!("identity mismatch: \"{name}\" is trusted here with a different device ID");
        refuse(framed, &reason).await;
        return Err(TransferError::Rejected {
            peer: name,
            reason: reason.into(),
        });
    }
    framed
        .send(&Message::Hello {
            version: VERSION,
            name: our_name.into(),
        })
        .await?;
    Ok(PeerHello { version, name })
}

async fn refuse(framed: &mut Framed, reason: &str) {
    let message = Message::Error {
        code: ErrorCode::Refused,
        message: reason.into(),
    };
    let _ = framed.send(&message).await;
}

/// Short name of a message type, for error messages.
pub fn kind(message: &Message) -> &'static str {
    match message {
        Message::Hello { .. } => "Hello",
        Message::Offer(_) => "Offer",
        Message::Accept { .. } => "Accept",
        Message::Reject { .. } => "Reject",
        Message::Data { .. } => "Data",
        Message::BlockValue { .. } => "BlockValue",
        Message::Done => "Done",
        Message::Error { .. } => "Error",
        Message::PairRequest => "PairRequest",
        Message::PairConfirm { .. } => "PairConfirm",
        Message::Text { .. } => "Text",
        Message::Probe { .. } => "Probe",
        Message::Echo { .. } => "Echo",
        Message::ProbeResult { .. } => "ProbeResult",
        Message::Metadata(_) => "Metadata",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceId;
    use crate::transport::{Link, TransportKind};

    /// Runs `client` (as device `a`, named `a_name`) against `server` (as
    /// `b`, with `trust`) over an in-memory link.
    async fn hello(
        a_name: &str,
        trust: &TrustStore,
    ) -> (
        Result<PeerHello, AuthFailure>,
        Result<PeerHello, TransferError>,
    ) {
        let (a, b) = (DeviceId::from_cert_der(b"a"), DeviceId::from_cert_der(b"b"));
        let (to_b, to_a) = Link::pipe(a, b, TransportKind::Tcp, [0; 8]);
        let (mut to_b, mut to_a) = (Framed::new(to_b), Framed::new(to_a));
        tokio::join!(client(&mut to_b, a_name), server(&mut to_a, "bob", trust))
    }

    #[tokio::test]
    async fn names_arrive_cleaned_on_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let trust = TrustStore::load(dir.path()).unwrap();
        let (ours, theirs) = hello(" lap\u{1b}[31mtop\n", &trust).await;
        assert_eq!(ours.unwrap().name.as_str(), "bob");
        assert_eq!(theirs.unwrap().name.as_str(), "lap[31mtop");
    }

    #[tokio::test]
    async fn a_trusted_name_with_another_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let trust = TrustStore::load(dir.path()).unwrap();
        trust
            .trust(
                DeviceId::from_cert_der(b"the real laptop"),
                &"laptop".into(),
            )
            .unwrap();
        // Control characters do not get an impostor past the check.
        let (ours, theirs) = hello("lap\u{7}top", &trust).await;
        match ours {
            Err(AuthFailure::Refused(reason)) => {
                assert!(reason.contains("identity mismatch"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(matches!(theirs, Err(TransferError::Rejected { .. })));
    }
}
