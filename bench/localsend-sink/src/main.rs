//! localsend-sink: a LocalSend receiver that discards, for the benchmark of
//! lanshare's LocalSend sender (`bench/run.sh --localsend`).
//!
//! It answers `info` and `register`, accepts every `prepare-upload` (a
//! token for every file), and reads every `upload` body to its end,
//! checking only that its length is the size the offer announced, then
//! answers 200. Nothing touches a disk, so what is timed is the sender:
//! reading and hashing its files, TLS and HTTP.
//!
//! Usage: `localsend-sink PORT STATE_DIR`. It prints one JSON line
//! (`{"port": ..., "fingerprint": ...}`) once it listens, then serves on
//! 127.0.0.1 until SIGTERM or SIGINT.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use lanshare::localsend::http::{self, Caller, Handler, ServerBody};
use lanshare::localsend::tls;
use lanshare::localsend::wire::{self, Offer, Offered, PrepareResponse, SelfInfo};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accepts everything, keeps nothing.
struct Sink {
    me: SelfInfo,
    /// Token -> announced size, for the uploads of accepted offers.
    sizes: Mutex<HashMap<String, u64>>,
}

impl Handler for Sink {
    async fn handle(
        self: &Arc<Self>,
        _caller: Caller,
        request: Request<Incoming>,
    ) -> Response<ServerBody> {
        match request.uri().path() {
            "/api/localsend/v2/info" | "/api/localsend/v2/register" => {
                http::json(StatusCode::OK, self.me.info())
            }
            "/api/localsend/v2/prepare-upload" => self.prepare(request).await,
            "/api/localsend/v2/upload" => self.upload(request).await,
            "/api/localsend/v2/cancel" => http::empty(StatusCode::OK),
            _ => http::empty(StatusCode::NOT_FOUND),
        }
    }
}

impl Sink {
    async fn prepare(&self, request: Request<Incoming>) -> Response<ServerBody> {
        let Ok(body) = http::read_body(request, 32 << 20).await else {
            return http::empty(StatusCode::BAD_REQUEST);
        };
        let Ok(offer) = Offer::parse(&body, wire::MAX_FILES) else {
            return http::empty(StatusCode::BAD_REQUEST);
        };
        let Offered::Files(files) = offer.offered else {
            return http::empty(StatusCode::NO_CONTENT);
        };
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        let mut tokens = std::collections::BTreeMap::new();
        for (n, file) in files.into_iter().enumerate() {
            let token = format!("t{}-{n}", sizes.len());
            sizes.insert(token.clone(), file.size);
            tokens.insert(file.id, token);
        }
        let answer = PrepareResponse {
            session_id: "sink".into(),
            files: tokens,
        };
        http::json(StatusCode::OK, answer.to_json())
    }

    async fn upload(&self, request: Request<Incoming>) -> Response<ServerBody> {
        let query = wire::parse_query(request.uri().query().unwrap_or_default());
        let token = wire::query_value(&query, "token")
            .unwrap_or_default()
            .to_owned();
        let Some(size) = self
            .sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token)
        else {
            return http::empty(StatusCode::FORBIDDEN);
        };
        let mut body = request.into_body();
        let mut got = 0u64;
        loop {
            match http::next_frame(&mut body).await {
                Ok(Some(chunk)) => got += chunk.len() as u64,
                Ok(None) => break,
                Err(e) => return http::empty(e.status()),
            }
        }
        if got == size {
            http::empty(StatusCode::OK)
        } else {
            http::empty(StatusCode::BAD_REQUEST)
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .context("usage: localsend-sink PORT STATE_DIR")?
        .parse()?;
    let state = PathBuf::from(
        args.next()
            .context("usage: localsend-sink PORT STATE_DIR")?,
    );
    let identity = tls::load_identity(&state)?;
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    let port = listener.local_addr()?.port();
    let me = SelfInfo {
        alias: "sink".into(),
        fingerprint: identity.id(),
        port,
    };
    let sink = Arc::new(Sink {
        me,
        sizes: Mutex::new(HashMap::new()),
    });
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let config = Arc::new(tls::server_config(&identity)?);
    tracker.spawn(http::serve(
        listener,
        config,
        sink,
        cancel.clone(),
        tracker.clone(),
    ));
    println!(
        "{}",
        serde_json::json!({"port": port, "fingerprint": identity.id().to_hex()})
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    cancel.cancel();
    Ok(())
}
