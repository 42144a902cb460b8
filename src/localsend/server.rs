//! The LocalSend HTTPS server's routes.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/localsend/v1/info`, `GET /api/localsend/v2/info` | who we are |
//! | `POST /api/localsend/v2/register` | who we are; the caller is listed if its body's fingerprint is its certificate's |
//! | `POST /api/localsend/v2/prepare-upload[?pin=]` | see [`super::receive`]; the PIN is checked first |
//! | `POST /api/localsend/v2/upload?sessionId&fileId&token` | see [`super::receive`] |
//! | `POST /api/localsend/v2/cancel[?sessionId]` | ends a session of the caller's, or one of our sends to it |
//!
//! Everything else is 404 (lanshare offers no download API). Every answer
//! that refuses carries `{"message": ...}` as LocalSend 1.18's do.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::Semaphore;

use super::devices::Devices;
use super::http::{self, Caller, Handler, ServerBody};
use super::pin::{PinGate, Verdict};
use super::receive::{Prepared, Receiving};
use super::send::RemoteCancels;
use super::wire::{self, Device, Offer, SelfInfo};

/// Largest `register` body read.
pub const MAX_REGISTER_BODY: usize = 64 << 10;
/// Largest `prepare-upload` body read (100 000 files with their names).
pub const MAX_PREPARE_BODY: usize = 32 << 20;
/// `prepare-upload` bodies read and parsed at once (each may take some
/// hundred MB while parsed, so a flood of them must queue).
const PREPARE_BODIES: usize = 2;

/// The routes and what they use.
pub struct Server {
    me: SelfInfo,
    devices: Devices,
    receiving: Arc<Receiving>,
    pin: Mutex<PinGate>,
    remote_cancels: Arc<RemoteCancels>,
    max_files: usize,
    bodies: Semaphore,
}

impl Server {
    /// Routes answering as `me`, listing callers in `devices`, receiving
    /// with `receiving` (at most `max_files` files per offer), asking for
    /// `pin` if set, and passing cancels of our sends to `remote_cancels`.
    pub fn new(
        me: SelfInfo,
        devices: Devices,
        receiving: Arc<Receiving>,
        pin: Option<&str>,
        remote_cancels: Arc<RemoteCancels>,
        max_files: usize,
    ) -> Self {
        Self {
            me,
            devices,
            receiving,
            pin: Mutex::new(PinGate::new(pin, Instant::now())),
            remote_cancels,
            max_files,
            bodies: Semaphore::new(PREPARE_BODIES),
        }
    }

    async fn register(&self, caller: Caller, request: Request<Incoming>) -> Response<ServerBody> {
        let body = match http::read_body(request, MAX_REGISTER_BODY).await {
            Ok(body) => body,
            Err(e) => return refuse(e.status(), &e.to_string()),
        };
        match Device::parse(&body) {
            Ok(device) => self.heard(caller, &device),
            Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
        }
        http::json(StatusCode::OK, self.me.info())
    }

    /// Lists `caller` if what it says about itself names its certificate.
    fn heard(&self, caller: Caller, device: &Device) {
        if device.fingerprint != Some(caller.fingerprint) {
            tracing::debug!(ip = %caller.ip, alias = %device.alias,
                "LocalSend register whose fingerprint is not its certificate's; not listed");
            return;
        }
        let addr = std::net::SocketAddr::new(caller.ip, device.port);
        if self
            .devices
            .proven(caller.fingerprint, device, addr, Instant::now())
        {
            tracing::info!(alias = %device.alias, %addr, fingerprint = %caller.fingerprint.to_hex(),
                "found a LocalSend device");
        }
    }

    async fn prepare(
        self: &Arc<Self>,
        caller: Caller,
        request: Request<Incoming>,
    ) -> Response<ServerBody> {
        let query = wire::parse_query(request.uri().query().unwrap_or_default());
        let verdict = self
            .pin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(caller.ip, wire::query_value(&query, "pin"), Instant::now());
        match verdict {
            Verdict::Pass => {}
            Verdict::Missing => return refuse(StatusCode::UNAUTHORIZED, "PIN required"),
            Verdict::Wrong => {
                tracing::warn!(ip = %caller.ip, "LocalSend offer with a wrong PIN");
                return refuse(StatusCode::UNAUTHORIZED, "Invalid PIN");
            }
            Verdict::TooMany => return refuse(StatusCode::TOO_MANY_REQUESTS, "Too many requests"),
        }
        let offer = {
            let Ok(_permit) = self.bodies.acquire().await else {
                return refuse(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
            };
            let body = match http::read_body(request, MAX_PREPARE_BODY).await {
                Ok(body) => body,
                Err(e) => return refuse(e.status(), &e.to_string()),
            };
            match Offer::parse(&body, self.max_files) {
                Ok(offer) => offer,
                Err(e) => {
                    tracing::info!(ip = %caller.ip, "refused a LocalSend offer: {e}");
                    return refuse(StatusCode::BAD_REQUEST, &e.to_string());
                }
            }
        };
        self.heard(caller, &offer.sender);
        match self.receiving.prepare(caller, offer).await {
            Ok(Prepared::Session(answer)) => http::json(StatusCode::OK, answer.to_json()),
            Ok(Prepared::Nothing) => http::empty(StatusCode::NO_CONTENT),
            Err(e) => refuse(e.status(), &e.to_string()),
        }
    }

    async fn cancel(&self, caller: Caller, request: &Request<Incoming>) -> Response<ServerBody> {
        let query = wire::parse_query(request.uri().query().unwrap_or_default());
        let session = wire::query_value(&query, "sessionId");
        if !self.receiving.cancel(caller, session).await
            && let Some(session) = session
            && self.remote_cancels.cancel(caller.ip, session)
        {
            tracing::info!(ip = %caller.ip, "a LocalSend receiver cancelled our send");
        }
        http::empty(StatusCode::OK)
    }
}

impl Handler for Server {
    async fn handle(
        self: &Arc<Self>,
        caller: Caller,
        request: Request<Incoming>,
    ) -> Response<ServerBody> {
        let route = (request.method().clone(), request.uri().path().to_owned());
        match (&route.0, route.1.as_str()) {
            (&Method::GET, "/api/localsend/v2/info") => http::json(StatusCode::OK, self.me.info()),
            (&Method::GET, "/api/localsend/v1/info") => {
                http::json(StatusCode::OK, self.me.info_v1())
            }
            (&Method::POST, "/api/localsend/v2/register") => self.register(caller, request).await,
            (&Method::POST, "/api/localsend/v2/prepare-upload") => {
                self.prepare(caller, request).await
            }
            (&Method::POST, "/api/localsend/v2/upload") => {
                self.receiving.upload(caller, request).await
            }
            (&Method::POST, "/api/localsend/v2/cancel") => self.cancel(caller, &request).await,
            _ => refuse(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

fn refuse(status: StatusCode, message: &str) -> Response<ServerBody> {
    http::json(status, wire::error_body(message))
}
