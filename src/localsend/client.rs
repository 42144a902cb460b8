//! Requests to LocalSend peers: one connection per exchange, our
//! certificate presented, theirs pinned when we know it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Request, StatusCode, header};

use super::http::{self, ClientBody, ClientError, Connection};
use super::tls;
use crate::identity::{DeviceId, Identity};

/// Largest answer body kept (answers are small JSON documents).
pub const MAX_ANSWER: usize = 1 << 20;

/// How long a short exchange (`register`, `cancel`) may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// An answer from a peer.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its body (at most [`MAX_ANSWER`] bytes).
    pub body: Bytes,
    /// The fingerprint the peer proved.
    pub fingerprint: DeviceId,
}

/// Connects to `addr` as `identity`, pinned to `expected` if given.
///
/// # Errors
/// [`ClientError`]; [`ClientError::Identity`] also when the TLS
/// configuration cannot be built from `identity`.
pub async fn connect(
    identity: &Identity,
    addr: SocketAddr,
    expected: Option<DeviceId>,
) -> Result<Connection, ClientError> {
    let config = tls::client_config(identity, expected).map_err(|e| ClientError::Identity {
        addr,
        reason: e.to_string(),
    })?;
    http::connect(addr, Arc::new(config)).await
}

/// A `POST` of `path_and_query` with an optional JSON body.
///
/// # Errors
/// [`ClientError::Http`] if the request cannot be built.
pub fn post_request(
    addr: SocketAddr,
    path_and_query: &str,
    json: Option<Vec<u8>>,
) -> Result<Request<ClientBody>, ClientError> {
    let builder = Request::builder()
        .method(Method::POST)
        .uri(path_and_query)
        .header(header::HOST, addr.to_string());
    let request = match json {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(http::json_body(body)),
        None => builder.body(http::json_body(Vec::new())),
    };
    request.map_err(|e| ClientError::Http {
        addr,
        reason: e.to_string(),
    })
}

/// One `POST` on a connection of its own, within [`EXCHANGE_TIMEOUT`].
///
/// # Errors
/// [`ClientError`].
pub async fn post(
    identity: &Identity,
    addr: SocketAddr,
    expected: Option<DeviceId>,
    path_and_query: &str,
    json: Option<Vec<u8>>,
) -> Result<Answer, ClientError> {
    let exchange = async {
        let mut connection = connect(identity, addr, expected).await?;
        let request = post_request(addr, path_and_query, json)?;
        let (status, body) = connection.send(request, MAX_ANSWER).await?;
        Ok(Answer {
            status,
            body,
            fingerprint: connection.fingerprint,
        })
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout { addr })?
}
