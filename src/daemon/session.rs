//! What an incoming connection is for, decided by the first message
//! after `Hello`: a `Text`, a `PairRequest`, or (anything else) a file
//! transfer, whose receiver answers a non-`Offer` with a protocol error.
//!
//! Each kind of session runs in its own module; this is the one place
//! that knows the list, so adding a kind is one arm here.

use super::Shared;
use crate::protocol::Message;
use crate::transfer::framed::{Framed, RecvError};
use crate::transfer::receive;

impl Shared {
    /// Serves an authenticated incoming link whose first message after
    /// the `Hello` exchange was `first`.
    pub(super) async fn serve_session(
        &self,
        framed: &mut Framed,
        peer_name: &str,
        first: Result<Message, RecvError>,
    ) {
        match first {
            Ok(Message::Text { text }) => self.receive_text(framed, peer_name, text).await,
            Ok(Message::PairRequest) => self.serve_pairing(framed, peer_name).await,
            first => receive::receive_first(framed, peer_name, &self.receive, first).await,
        }
    }
}
