//! Connecting to a peer: dial, `Hello`, and the impostor check, in one
//! place for every outgoing session (sends, texts, pairing, trust, the
//! queue's and the doctor's probes, remembered peers).
//!
//! A link is authenticated once the peer's `Hello` arrives
//! ([`crate::transfer::handshake`]); on top of that, a device that uses
//! the name of a trusted device with another identity is refused
//! ([`TrustStore::impostor_of`]), so an address typed by the user, which
//! carries no expected identity, cannot lead to an impostor.

use std::net::SocketAddr;
use std::time::Duration;

use crate::identity::DeviceId;
use crate::identity::trust::TrustStore;
use crate::safe_text::PeerName;
use crate::transfer::framed::Framed;
use crate::transfer::handshake::{self, PeerHello};
use crate::transport::dial::{AuthFailure, DialError, Dialer, Preference, Target};
use crate::transport::{Link, TransportKind};

/// How long [`Connector::identify`] waits for the peer to close after
/// our clean close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Dials peers for this device.
pub struct Connector {
    dialer: Dialer,
    /// This device's name, sent in our `Hello`.
    name: String,
    trust: TrustStore,
}

/// An authenticated link to a peer, ready for a session.
pub struct Connected {
    /// The link, framed.
    pub framed: Framed,
    /// What the peer said about itself (name cleaned).
    pub hello: PeerHello,
    /// The transport that won the race.
    pub transport: TransportKind,
}

/// Who answered at a target.
#[derive(Debug, Clone)]
pub struct Answered {
    /// Its device ID.
    pub id: DeviceId,
    /// Its name (cleaned).
    pub name: PeerName,
    /// The address that answered.
    pub remote: SocketAddr,
    /// The transport that answered.
    pub transport: TransportKind,
}

/// Why [`Connector::identify`] learned nothing.
#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    /// Nothing within the time allowed.
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The dial failed.
    #[error(transparent)]
    Dial(#[from] DialError),
}

impl Connector {
    /// Dials with `dialer`, introducing this device as `name`.
    pub fn new(dialer: Dialer, name: String, trust: TrustStore) -> Self {
        Self {
            dialer,
            name,
            trust,
        }
    }

    /// Paths on which QUIC is remembered as broken (`share status`).
    pub fn broken_paths(&self) -> usize {
        self.dialer.broken_paths()
    }

    /// Connects to `target` over the transports `preference` allows and
    /// exchanges `Hello`.
    ///
    /// # Errors
    /// Unreachable, refused by the peer, or refused here as an impostor.
    pub async fn open(
        &self,
        target: &Target,
        preference: Preference,
    ) -> Result<Connected, DialError> {
        let ((framed, hello), transport) = self
            .dialer
            .dial(target, preference, |link| self.authenticate(link))
            .await?;
        Ok(Connected {
            framed,
            hello,
            transport,
        })
    }

    /// Who answers at `target` (within `limit`): connect, `Hello`, clean
    /// close.
    ///
    /// # Errors
    /// No answer in time, or the dial failed.
    pub async fn identify(
        &self,
        target: &Target,
        preference: Preference,
        limit: Duration,
    ) -> Result<Answered, IdentifyError> {
        let connected = tokio::time::timeout(limit, self.open(target, preference))
            .await
            .map_err(|_| IdentifyError::Timeout(limit))??;
        let link = connected.framed.into_link();
        let answered = Answered {
            id: link.peer,
            name: connected.hello.name,
            remote: link.remote,
            transport: connected.transport,
        };
        link.close(CLOSE_WAIT).await;
        Ok(answered)
    }

    /// The dialer's side of `Hello`, then the impostor check: the step
    /// that makes a link usable, whichever transport wins.
    async fn authenticate(&self, link: Link) -> Result<(Framed, PeerHello), AuthFailure> {
        let mut framed = Framed::new(link);
        let hello = handshake::client(&mut framed, &self.name).await?;
        let peer = framed.link().peer;
        if let Some(trusted) = self.trust.impostor_of(&hello.name, &peer) {
            tracing::warn!(name = %hello.name, presented = %peer, trusted = %trusted.id,
                "REFUSED: a device uses the name of a trusted device with a different identity");
            framed.into_link().abort("identity mismatch");
            return Err(AuthFailure::Refused(format!(
                "identity mismatch: \"{}\" is trusted with ID {} but this device has ID {}",
                hello.name,
                trusted.id.short(),
                peer.short()
            )));
        }
        Ok((framed, hello))
    }
}
