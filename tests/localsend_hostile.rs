//! Hostile LocalSend clients against the daemon's HTTPS server, on
//! loopback: each gets a clear refusal, nothing is written outside (or,
//! unless complete and verified, inside) the download directory, the
//! daemon keeps serving native and LocalSend peers, and its memory and
//! descriptors stay bounded.
//!
//! The clients are written here with tokio-rustls and raw HTTP/1.1 bytes,
//! so they can send what no well-behaved client would. Attack traffic
//! comes from other loopback addresses (127.0.0.2...) where the per-address
//! limits matter, and the well-behaved peers from 127.0.0.1.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanshare::identity::Identity;
use lanshare::localsend::tls::{self, KIND};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::common::{TestDaemon, assert_same_file, eventually, random_file, tree};
use crate::localsend::{localsend_addr, localsend_daemon, succeeded};

/// A LocalSend client identity.
fn client_identity() -> Identity {
    Identity::generate_kind(&KIND).unwrap()
}

/// The LocalSend server address of a daemon.
fn server(daemon: &TestDaemon) -> SocketAddr {
    localsend_addr(daemon)
        .trim_start_matches("localsend://")
        .parse()
        .unwrap()
}

/// A TCP connection to `to` from loopback address `from`.
async fn tcp_from(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// A TLS connection presenting `identity`'s certificate (or none).
async fn tls_from(
    from: IpAddr,
    to: SocketAddr,
    config: rustls::ClientConfig,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = tcp_from(from, to).await?;
    let name = rustls::pki_types::ServerName::try_from(tls::SERVER_NAME).unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

fn localhost(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

/// Presents `cert` but signs with another identity's key (an impostor,
/// when they differ).
#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl Fixed {
    fn new(cert: &Identity, key: &Identity) -> Arc<Self> {
        let signer = lanshare::transport::tls::provider()
            .key_provider
            .load_private_key(key.key())
            .unwrap();
        Arc::new(Self(Arc::new(rustls::sign::CertifiedKey::new(
            vec![cert.cert().clone()],
            signer,
        ))))
    }
}

impl rustls::client::ResolvesClientCert for Fixed {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client configuration that takes its certificate from `resolver`.
fn client_with(resolver: Arc<Fixed>) -> rustls::ClientConfig {
    let provider = lanshare::transport::tls::provider();
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(
            lanshare::identity::verifier::PeerVerifier::any(provider),
        ))
        .with_client_cert_resolver(resolver)
}

/// A client as a LocalSend app: its own certificate, any server.
async fn app(from: IpAddr, to: SocketAddr, identity: &Identity) -> TlsStream<TcpStream> {
    tls_from(from, to, tls::client_config(identity, None).unwrap())
        .await
        .unwrap()
}

/// Writes `head` (request line and headers, without the final blank line)
/// and `body`, and reads the answer: status and body.
async fn exchange(
    stream: &mut TlsStream<TcpStream>,
    head: &str,
    body: &[u8],
) -> io::Result<(u16, String)> {
    stream
        .write_all(format!("{head}\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    read_answer(stream).await
}

async fn read_answer(stream: &mut TlsStream<TcpStream>) -> io::Result<(u16, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A JSON `POST` on a fresh connection.
async fn post_json(
    from: IpAddr,
    to: SocketAddr,
    identity: &Identity,
    path: &str,
    body: &Value,
) -> (u16, String) {
    let mut stream = app(from, to, identity).await;
    let body = serde_json::to_vec(body).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
        body.len()
    );
    exchange(&mut stream, &head, &body).await.unwrap()
}

fn info(identity: &Identity) -> Value {
    json!({"alias": "mallory", "version": "2.2", "fingerprint": identity.id().to_hex(),
           "port": 53317, "protocol": "https", "deviceType": "mobile"})
}

fn offer(identity: &Identity, files: Value) -> Value {
    json!({"info": info(identity), "files": files})
}

fn one_file(name: &str, size: u64, sha256: Option<&str>) -> Value {
    let mut file =
        json!({"id": "f", "fileName": name, "size": size, "fileType": "application/octet-stream"});
    if let Some(sha) = sha256 {
        file["sha256"] = json!(sha);
    }
    json!({ "f": file })
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An accepted session: its ID and the token of file `f`.
async fn session(
    from: IpAddr,
    to: SocketAddr,
    identity: &Identity,
    files: Value,
) -> (String, String) {
    let (status, body) = post_json(
        from,
        to,
        identity,
        "/api/localsend/v2/prepare-upload",
        &offer(identity, files),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    (
        answer["sessionId"].as_str().unwrap().to_owned(),
        answer["files"]["f"].as_str().unwrap().to_owned(),
    )
}

fn upload_path(session: &str, token: &str) -> String {
    format!("/api/localsend/v2/upload?sessionId={session}&fileId=f&token={token}")
}

/// The daemon's resident memory (KiB) and open descriptors.
fn usage(daemon: &TestDaemon) -> (u64, usize) {
    let pid = daemon.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

/// What is next to the download directory (the daemon's own files).
fn beside_downloads(daemon: &TestDaemon) -> Vec<String> {
    let parent = daemon.download.parent().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Nothing new next to the download directory since `before`, and nothing
/// in it but `expected` (its entries, hidden ones included).
fn only_in_downloads(daemon: &TestDaemon, before: &[String], expected: &[&str]) {
    assert_eq!(
        beside_downloads(daemon),
        before,
        "written next to the download directory"
    );
    assert_eq!(tree(&daemon.download), expected);
}

/// A native and a LocalSend send still go through.
fn still_serves(receiver: &TestDaemon, dir: &Path) {
    let peer = TestDaemon::builder("peer")
        .accept("all")
        .args(&["--localsend", "--localsend-port", "0"])
        .spawn();
    let file = dir.join("proof.bin");
    random_file(&file, 100_000, 42);
    let out = peer.cli(&["send", &receiver.addr(), file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "native: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = peer.cli(&["send", &localsend_addr(receiver), file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "LocalSend: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_file(&file, &receiver.download.join("proof.bin"));
    assert_same_file(&file, &receiver.download.join("proof (1).bin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_proven_certificate_are_refused_in_the_handshake() {
    let receiver = localsend_daemon("nas", "all", &[]);
    let to = server(&receiver);
    // No client certificate at all.
    let anonymous =
        rustls::ClientConfig::builder_with_provider(lanshare::transport::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                lanshare::identity::verifier::PeerVerifier::any(
                    lanshare::transport::tls::provider(),
                ),
            ))
            .with_no_client_auth();
    // TLS 1.3: the client finishes first, the refusal comes next.
    if let Ok(mut stream) = tls_from(localhost(1), to, anonymous).await {
        let answer = exchange(&mut stream, "GET /api/localsend/v2/info HTTP/1.1", b"").await;
        assert!(
            answer.is_err(),
            "answered without a client certificate: {answer:?}"
        );
    }
    // A victim's certificate presented with another key (an impostor):
    // the handshake signature gives it away.
    let victim = client_identity();
    let impostor = client_identity();
    let mut stream = tls_from(
        localhost(1),
        to,
        client_with(Fixed::new(&victim, &impostor)),
    )
    .await
    .ok();
    if let Some(stream) = &mut stream {
        let answer = exchange(stream, "GET /api/localsend/v2/info HTTP/1.1", b"").await;
        assert!(answer.is_err(), "answered an impostor: {answer:?}");
    }
    // The same resolver with the matching key works: the refusal above is
    // the signature's doing.
    let mut honest = tls_from(localhost(1), to, client_with(Fixed::new(&victim, &victim)))
        .await
        .unwrap();
    let (status, _) = exchange(&mut honest, "GET /api/localsend/v2/info HTTP/1.1", b"")
        .await
        .unwrap();
    assert_eq!(status, 200);
    // A proper client is answered.
    let me = client_identity();
    let mut stream = app(localhost(1), to, &me).await;
    let (status, body) = exchange(&mut stream, "GET /api/localsend/v2/info HTTP/1.1", b"")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_is_listed_only_with_its_own_certificates_fingerprint() {
    let receiver = localsend_daemon("nas", "ask", &[]);
    let to = server(&receiver);
    let victim = client_identity();
    let mallory = client_identity();
    // Mallory claims the victim's fingerprint: answered, not listed.
    let mut claim = info(&victim);
    claim["alias"] = json!("victim-phone");
    let (status, _) = post_json(
        localhost(2),
        to,
        &mallory,
        "/api/localsend/v2/register",
        &claim,
    )
    .await;
    assert_eq!(status, 200);
    let receiver = tokio::task::spawn_blocking(move || {
        let peers = receiver.json(&["peers"]);
        assert_eq!(
            peers,
            json!([]),
            "a register with a claimed fingerprint was listed"
        );
        receiver
    })
    .await
    .unwrap();
    // An honest register is listed (and shows that registers are read).
    let (status, _) = post_json(
        localhost(2),
        to,
        &mallory,
        "/api/localsend/v2/register",
        &info(&mallory),
    )
    .await;
    assert_eq!(status, 200);
    let peers = tokio::task::spawn_blocking(move || {
        let peers = receiver.json(&["peers"]);
        drop(receiver);
        peers
    })
    .await
    .unwrap();
    let listed: Vec<&Value> = peers.as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 1, "{peers}");
    assert_eq!(listed[0]["localsend"]["fingerprint"], mallory.id().to_hex());
    assert_eq!(listed[0]["name"], "mallory");
    assert!(
        !peers.to_string().contains(&victim.id().to_hex()),
        "a claimed fingerprint was listed: {peers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_and_oversized_offers_are_refused_before_anyone_is_asked() {
    let receiver = localsend_daemon("nas", "all", &[]);
    let before_files = beside_downloads(&receiver);
    let to = server(&receiver);
    let me = client_identity();
    let prepare = "/api/localsend/v2/prepare-upload";
    for name in [
        "../../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "dir/\u{1b}[31mred",
        "a//b",
        "",
    ] {
        let (status, body) = post_json(
            localhost(3),
            to,
            &me,
            prepare,
            &offer(&me, one_file(name, 1, None)),
        )
        .await;
        assert_eq!(status, 400, "{name:?}: {body}");
        assert!(body.contains("message"), "{name:?}: a reason: {body}");
    }
    // Sizes near 2^63: over the offer limit.
    let (status, body) = post_json(
        localhost(3),
        to,
        &me,
        prepare,
        &offer(&me, one_file("big", (1 << 63) - 1, None)),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    let two = json!({
        "a": {"id": "a", "fileName": "a", "size": u64::MAX / 2 + 1, "fileType": "x"},
        "b": {"id": "b", "fileName": "b", "size": u64::MAX / 2 + 1, "fileType": "x"},
    });
    let (status, body) = post_json(localhost(3), to, &me, prepare, &offer(&me, two)).await;
    assert!(matches!(status, 400 | 413), "{status}: {body}");
    // 10^6 files (some 40 MB of JSON): refused by its length, unread.
    let (before, _) = usage(&receiver);
    let mut stream = app(localhost(3), to, &me).await;
    let head = format!(
        "POST {prepare} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 41000000"
    );
    let (status, _) = exchange(&mut stream, &head, b"").await.unwrap();
    assert_eq!(status, 413);
    // 100 001 files fit the body limit: refused while parsed.
    let mut files = serde_json::Map::new();
    for i in 0..100_001 {
        files.insert(
            i.to_string(),
            json!({"id": i.to_string(), "fileName": format!("f{i}"), "size": 0}),
        );
    }
    let started = Instant::now();
    let (status, body) = post_json(
        localhost(3),
        to,
        &me,
        prepare,
        &offer(&me, Value::Object(files)),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // A 100 MB body: refused by its length, then without one (chunked).
    let mut stream = app(localhost(3), to, &me).await;
    let head = format!(
        "POST {prepare} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100000000"
    );
    let (status, _) = exchange(&mut stream, &head, b"").await.unwrap();
    assert_eq!(status, 413);
    let mut stream = app(localhost(3), to, &me).await;
    stream
        .write_all(
            format!("POST {prepare} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let chunk = vec![b' '; 1 << 20];
    let mut refused = None;
    for _ in 0..100 {
        let sent = async {
            stream
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            stream.write_all(&chunk).await?;
            stream.write_all(b"\r\n").await
        }
        .await;
        if sent.is_err() {
            break;
        }
    }
    if let Ok(answer) = read_answer(&mut stream).await {
        refused = Some(answer.0);
    }
    assert!(matches!(refused, Some(413) | None), "{refused:?}");
    let (after, _) = usage(&receiver);
    assert!(
        after < before + 400_000,
        "memory grew from {before} KiB to {after} KiB"
    );
    let receiver = tokio::task::spawn_blocking(move || {
        assert!(receiver.transfers().is_empty(), "nothing reached the user");
        only_in_downloads(&receiver, &before_files, &[]);
        receiver
    })
    .await
    .unwrap();
    drop(receiver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_the_store_keeps_for_itself_arrives_under_a_mapped_name() {
    // As for native offers: a top-level `.lanshare-` name would collide with
    // the store's own files, so it lands percent-encoded, never as given.
    let receiver = localsend_daemon("nas", "all", &[]);
    let before_files = beside_downloads(&receiver);
    let to = server(&receiver);
    let me = client_identity();
    let (sid, token) = session(
        localhost(3),
        to,
        &me,
        one_file(".lanshare-x.part", 5, Some(&sha256_hex(b"hello"))),
    )
    .await;
    let mut stream = app(localhost(3), to, &me).await;
    let head = format!(
        "POST {} HTTP/1.1\r\nContent-Length: 5",
        upload_path(&sid, &token)
    );
    let (status, body) = exchange(&mut stream, &head, b"hello").await.unwrap();
    assert_eq!(status, 200, "{body}");
    tokio::task::spawn_blocking(move || {
        only_in_downloads(&receiver, &before_files, &["%2Elanshare-x.part"]);
        assert_eq!(
            std::fs::read(receiver.download.join("%2Elanshare-x.part")).unwrap(),
            b"hello"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_break_their_promises_are_refused_and_never_placed() {
    let receiver = localsend_daemon("nas", "all", &[]);
    let before_files = beside_downloads(&receiver);
    let to = server(&receiver);
    let me = client_identity();
    let content = b"0123456789".to_vec();
    let sha = sha256_hex(&content);

    // Longer than announced (Content-Length).
    let (sid, token) = session(localhost(4), to, &me, one_file("long", 10, None)).await;
    let mut stream = app(localhost(4), to, &me).await;
    let head = format!(
        "POST {} HTTP/1.1\r\nContent-Length: 11",
        upload_path(&sid, &token)
    );
    let (status, _) = exchange(&mut stream, &head, b"0123456789X").await.unwrap();
    assert_eq!(status, 400);

    // Shorter than announced: the connection ends early.
    let (sid, token) = session(localhost(4), to, &me, one_file("short", 10, None)).await;
    let mut stream = app(localhost(4), to, &me).await;
    let head = format!(
        "POST {} HTTP/1.1\r\nContent-Length: 10",
        upload_path(&sid, &token)
    );
    stream
        .write_all(format!("{head}\r\nHost: x\r\n\r\n01234").as_bytes())
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    drop(stream);

    // Chunked, longer than the file.
    let (sid, token) =
        eventually_session(localhost(4), to, &me, one_file("chunky", 10, None)).await;
    let mut stream = app(localhost(4), to, &me).await;
    let head = format!(
        "POST {} HTTP/1.1\r\nTransfer-Encoding: chunked",
        upload_path(&sid, &token)
    );
    let (status, _) = exchange(&mut stream, &head, b"b\r\n0123456789X\r\n0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status, 400);

    // Broken chunk framing.
    let (sid, token) = session(localhost(4), to, &me, one_file("broken", 10, None)).await;
    let mut stream = app(localhost(4), to, &me).await;
    let head = format!(
        "POST {} HTTP/1.1\r\nTransfer-Encoding: chunked",
        upload_path(&sid, &token)
    );
    let answer = exchange(&mut stream, &head, b"zz\r\n0123456789\r\n0\r\n\r\n").await;
    assert!(matches!(answer, Ok((400, _)) | Err(_)), "{answer:?}");

    // A wrong SHA-256: 422 twice, the third try right.
    let wrong = sha256_hex(b"something else");
    let (sid, token) = session(localhost(4), to, &me, one_file("checked", 10, Some(&sha))).await;
    for (body, expect) in [
        (&b"01234567X9"[..], 422),
        (b"0123X56789", 422),
        (&content[..], 200),
    ] {
        let mut stream = app(localhost(4), to, &me).await;
        let head = format!(
            "POST {} HTTP/1.1\r\nContent-Length: 10",
            upload_path(&sid, &token)
        );
        let (status, _) = exchange(&mut stream, &head, body).await.unwrap();
        assert_eq!(status, expect);
    }
    // Three wrong tries: 422, then the file is failed (403 for a fourth).
    let (sid, token) = session(localhost(4), to, &me, one_file("never", 10, Some(&wrong))).await;
    for expect in [422, 422, 422, 403] {
        let mut stream = app(localhost(4), to, &me).await;
        let head = format!(
            "POST {} HTTP/1.1\r\nContent-Length: 10",
            upload_path(&sid, &token)
        );
        let (status, _) = exchange(&mut stream, &head, &content).await.unwrap();
        assert_eq!(status, expect);
    }

    let receiver = tokio::task::spawn_blocking(move || {
        eventually("every session ended", Duration::from_secs(30), || {
            receiver
                .transfers()
                .iter()
                .all(|t| t["state"] != "active" && t["state"] != "pending")
                .then_some(())
        });
        // Only the file that arrived intact is there.
        only_in_downloads(&receiver, &before_files, &["checked"]);
        assert_eq!(
            std::fs::read(receiver.download.join("checked")).unwrap(),
            b"0123456789"
        );
        receiver
    })
    .await
    .unwrap();
    drop(receiver);
}

/// [`session`], retrying while the previous session still holds the slot
/// (409), which it frees once its failed upload is noticed.
async fn eventually_session(
    from: IpAddr,
    to: SocketAddr,
    identity: &Identity,
    files: Value,
) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(70);
    loop {
        let (status, body) = post_json(
            from,
            to,
            identity,
            "/api/localsend/v2/prepare-upload",
            &offer(identity, files.clone()),
        )
        .await;
        if status == 200 {
            let answer: Value = serde_json::from_str(&body).unwrap();
            return (
                answer["sessionId"].as_str().unwrap().to_owned(),
                answer["files"]["f"].as_str().unwrap().to_owned(),
            );
        }
        assert_eq!(status, 409, "{body}");
        assert!(Instant::now() < deadline, "the slot stayed taken");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_only_work_from_their_sender() {
    let receiver = localsend_daemon("nas", "all", &[]);
    let before_files = beside_downloads(&receiver);
    let to = server(&receiver);
    let me = client_identity();
    let other = client_identity();
    let (sid, token) = session(localhost(5), to, &me, one_file("mine", 3, None)).await;
    let attempts = [
        (
            localhost(5),
            &me,
            format!("/api/localsend/v2/upload?sessionId={sid}&fileId=f&token=wrong"),
        ),
        (
            localhost(5),
            &me,
            format!("/api/localsend/v2/upload?sessionId=nope&fileId=f&token={token}"),
        ),
        (localhost(6), &me, upload_path(&sid, &token)),
        (localhost(5), &other, upload_path(&sid, &token)),
    ];
    for (from, who, path) in attempts {
        let mut stream = app(from, to, who).await;
        let head = format!("POST {path} HTTP/1.1\r\nContent-Length: 3");
        let (status, _) = exchange(&mut stream, &head, b"abc").await.unwrap();
        assert_eq!(status, 403, "{from} {path}");
    }
    let mut stream = app(localhost(5), to, &me).await;
    let head = "POST /api/localsend/v2/upload?sessionId=x HTTP/1.1\r\nContent-Length: 0";
    assert_eq!(exchange(&mut stream, head, b"").await.unwrap().0, 400);
    // The rightful sender still can.
    let mut stream = app(localhost(5), to, &me).await;
    let head = format!(
        "POST {} HTTP/1.1\r\nContent-Length: 3",
        upload_path(&sid, &token)
    );
    assert_eq!(exchange(&mut stream, &head, b"abc").await.unwrap().0, 200);
    tokio::task::spawn_blocking(move || {
        only_in_downloads(&receiver, &before_files, &["mine"]);
        assert_eq!(
            std::fs::read(receiver.download.join("mine")).unwrap(),
            b"abc"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_and_bounded() {
    let receiver = localsend_daemon("nas", "all", &[]);
    let before_files = beside_downloads(&receiver);
    let to = server(&receiver);
    let me = client_identity();
    let (_, fds_before) = usage(&receiver);

    // 500 idle connections from one address: 16 are kept, the rest closed.
    let mut idle = Vec::new();
    for _ in 0..500 {
        if let Ok(stream) = tcp_from(localhost(7), to).await {
            idle.push(stream);
        }
    }
    let (rss, fds) = usage(&receiver);
    assert!(
        fds < fds_before + 40,
        "{fds} descriptors (was {fds_before})"
    );
    assert!(rss < 200_000, "{rss} KiB");

    // Slow-loris: a head one byte at a time, a body that stops.
    let mut slow_head = app(localhost(8), to, &me).await;
    let (sid, token) = session(localhost(9), to, &me, one_file("slow", 1000, None)).await;
    let mut slow_body = app(localhost(9), to, &me).await;
    slow_body
        .write_all(
            format!(
                "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc",
                upload_path(&sid, &token)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let head_cut = async {
        for b in b"GET /api/localsend/v2/info HTTP/1.1\r\nHost: x\r\n"
            .iter()
            .cycle()
        {
            if slow_head.write_all(&[*b]).await.is_err() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        started.elapsed()
    };
    let body_cut = async {
        // The server answers the stalled upload (408) or closes.
        let answer = read_answer(&mut slow_body).await;
        (answer.map(|a| a.0).ok(), started.elapsed())
    };

    // Meanwhile a well-behaved peer on another address is served.
    let me2 = client_identity();
    let mut good = app(localhost(1), to, &me2).await;
    let (status, _) = exchange(&mut good, "GET /api/localsend/v2/info HTTP/1.1", b"")
        .await
        .unwrap();
    assert_eq!(status, 200);

    let (head_after, (body_status, body_after)) = tokio::join!(head_cut, body_cut);
    assert!(
        head_after < Duration::from_secs(20),
        "a slow head lasted {head_after:?}"
    );
    assert!(
        body_after < Duration::from_secs(45),
        "a stalled body lasted {body_after:?}"
    );
    assert!(matches!(body_status, Some(408) | None), "{body_status:?}");
    drop(idle);
    tokio::task::spawn_blocking(move || {
        only_in_downloads(&receiver, &before_files, &[]);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_the_pin_is_rate_limited_for_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[localsend]\nenabled = true\nport = 0\npin = \"8642\"\n",
    )
    .unwrap();
    let receiver = tokio::task::spawn_blocking(move || {
        TestDaemon::builder("nas")
            .accept("all")
            .args(&["--config", config.to_str().unwrap()])
            .spawn()
    })
    .await
    .unwrap();
    let to = server(&receiver);
    let me = client_identity();
    let body = offer(&me, one_file("x", 1, None));
    let path = |pin: &str| format!("/api/localsend/v2/prepare-upload?pin={pin}");
    assert_eq!(
        post_json(
            localhost(10),
            to,
            &me,
            "/api/localsend/v2/prepare-upload",
            &body
        )
        .await
        .0,
        401
    );
    for guess in 0..3 {
        let (status, _) =
            post_json(localhost(10), to, &me, &path(&format!("{guess:04}")), &body).await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        post_json(localhost(10), to, &me, &path("0003"), &body)
            .await
            .0,
        429,
        "one address, locked out"
    );
    // Guesses from many addresses hit the global limit; then even the
    // right PIN waits.
    let mut statuses = Vec::new();
    for n in 11..30 {
        statuses.push(
            post_json(localhost(n), to, &me, &path("1111"), &body)
                .await
                .0,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        post_json(localhost(31), to, &me, &path("8642"), &body)
            .await
            .0,
        429
    );
    assert!(receiver.transfers().is_empty(), "no guess reached the user");
    let dir2 = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking(move || {
        // Native peers are not affected.
        let peer = TestDaemon::builder("peer").accept("all").spawn();
        let file = dir2.path().join("n.bin");
        random_file(&file, 1000, 1);
        let out = peer.cli(&["send", &receiver.addr(), file.to_str().unwrap()]);
        assert!(out.status.success());
        assert_same_file(&file, &receiver.download.join("n.bin"));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_serving_after_the_corpus() {
    let receiver = localsend_daemon("nas", "all", &[]);
    let before_files = beside_downloads(&receiver);
    let to = server(&receiver);
    let me = client_identity();
    // A burst of garbage: not HTTP, not TLS, half requests.
    for junk in [
        &b"\x16\x03\x01\x00\x05hello"[..],
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x00\x00\x00",
    ] {
        if let Ok(mut tcp) = tcp_from(localhost(12), to).await {
            let _ = tcp.write_all(junk).await;
        }
    }
    let mut stream = app(localhost(12), to, &me).await;
    let (status, _) = exchange(&mut stream, "GARBAGE\x01 / HTTP/1.1", b"")
        .await
        .unwrap_or((0, String::new()));
    assert!(matches!(status, 0 | 400), "{status}");
    let dir = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking(move || {
        only_in_downloads(&receiver, &before_files, &[]);
        still_serves(&receiver, dir.path());
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_fingerprint_of_a_trusted_device_is_not_trusted() {
    let trusted = client_identity();
    let mallory = client_identity();
    let receiver = localsend_daemon("nas", "ask", &["--offer-timeout", "3"]);
    let before_files = beside_downloads(&receiver);
    let to = server(&receiver);
    // The receiver trusts `trusted`'s certificate hash.
    let hex = trusted.id().to_hex();
    let receiver = tokio::task::spawn_blocking(move || {
        succeeded(&receiver.cli(&["trust", &hex]));
        receiver
    })
    .await
    .unwrap();
    // Mallory writes that hash in its offer, under another name: the
    // offer waits for consent (and expires), it is not auto-accepted.
    let mut claim = offer(&trusted, one_file("x", 1, None));
    claim["info"]["alias"] = json!("mallory");
    let started = Instant::now();
    let (status, body) = post_json(
        localhost(13),
        to,
        &mallory,
        "/api/localsend/v2/prepare-upload",
        &claim,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("expired"), "{body}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "it waited for consent"
    );
    // The trusted device itself is accepted at once.
    let (status, body) = post_json(
        localhost(14),
        to,
        &trusted,
        "/api/localsend/v2/prepare-upload",
        &offer(&trusted, one_file("x", 1, None)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tokio::task::spawn_blocking(move || {
        let transfers = receiver.transfers();
        assert!(
            transfers
                .iter()
                .any(|t| t["peer"] == "mallory" && t["state"] == "rejected"),
            "{transfers:?}"
        );
        // The accepted session is staged, hidden; nothing is visible yet.
        assert_eq!(beside_downloads(&receiver), before_files);
        assert!(
            tree(&receiver.download)
                .iter()
                .all(|p| p.starts_with(".lanshare-")),
            "{:?}",
            tree(&receiver.download)
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_offer_at_a_time_and_chunked_uploads_are_decoded() {
    let receiver = localsend_daemon("nas", "ask", &[]);
    let to = server(&receiver);
    let me = client_identity();
    let other = client_identity();
    // v1 info, as <= 1.17 apps probe it.
    let mut stream = app(localhost(15), to, &me).await;
    let (status, body) = exchange(&mut stream, "GET /api/localsend/v1/info HTTP/1.1", b"")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"deviceType\":\"headless\""), "{body}");
    // While one offer waits for consent, another sender is told 409.
    let content = b"chunked content, with its hash".to_vec();
    let sha = sha256_hex(&content);
    let files = one_file("c.txt", content.len() as u64, Some(&sha));
    let waiting = {
        let files = files.clone();
        let me = me.clone();
        tokio::spawn(async move { session(localhost(15), to, &me, files).await })
    };
    let receiver = tokio::task::spawn_blocking(move || {
        receiver.wait_transfer("the offer waits", |t| t["state"] == "pending");
        receiver
    })
    .await
    .unwrap();
    let (status, body) = post_json(
        localhost(16),
        to,
        &other,
        "/api/localsend/v2/prepare-upload",
        &offer(&other, one_file("y", 1, None)),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let receiver = tokio::task::spawn_blocking(move || {
        let offer = receiver.wait_transfer("pending", |t| t["state"] == "pending");
        receiver.accept_offer(&offer);
        receiver
    })
    .await
    .unwrap();
    let (sid, token) = waiting.await.unwrap();
    // A chunked upload in uneven chunks.
    let mut stream = app(localhost(15), to, &me).await;
    let head = format!(
        "POST {} HTTP/1.1\r\nTransfer-Encoding: chunked",
        upload_path(&sid, &token)
    );
    let mut body = Vec::new();
    for piece in content.chunks(7) {
        body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        body.extend_from_slice(piece);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let (status, answer) = exchange(&mut stream, &head, &body).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    tokio::task::spawn_blocking(move || {
        assert_eq!(
            std::fs::read(receiver.download.join("c.txt")).unwrap(),
            content
        );
    })
    .await
    .unwrap();
}
