//! quinn-ceiling: the raw QUIC ceiling for the lanshare benchmark.
//!
//! Memory to memory, one stream, both ends in one process, over loopback,
//! with lanshare's own transport settings. Two modes:
//!
//! * `link` (default): both ends are `lanshare::transport::quic::QuicTransport`
//!   (the daemon's own endpoint code: socket2 UDP socket with 4 MiB buffers,
//!   15 s idle, 5 s keep-alive, 8 MiB stream window, 64 MiB send window,
//!   initial MTU 1452 with discovery up to `MAX_UDP_PAYLOAD`, 100 ms initial
//!   RTT, ACKs within 2 ms, rustls/ring TLS 1.3 with pinned identities).
//!   Data goes through the `Link` writer (`LinkWriter::write_bytes`, 1 MiB
//!   `Bytes`) and reader (1 MiB reads) exactly as the transfer code sees
//!   them.
//! * `raw`: quinn used directly with lanshare's own transport settings
//!   (`lanshare::transport::quic::transport_config`), the same lanshare TLS
//!   configs, and zero-copy `write_chunk(Bytes)` of 1 MiB /
//!   `read_chunk(usize::MAX, true)`: the best quinn can do with this config.
//!
//! The receiver checks every byte against the known pattern and the total
//! length; a mismatch exits 1. Output: one JSON line on stdout.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use lanshare::identity::Identity;
use lanshare::transport::quic::{MAX_UDP_PAYLOAD, QuicTransport};
use lanshare::transport::{Transport, UDP_BUFFER_SIZE, tls};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATTERN_LEN: usize = 1 << 20;

struct Args {
    bytes: u64,
    mode: String,
    chunk: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        bytes: 1 << 30,
        mode: "link".into(),
        chunk: 1 << 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bytes" => args.bytes = it.next().context("--bytes N")?.parse()?,
            "--mode" => args.mode = it.next().context("--mode link|raw")?,
            "--chunk" => args.chunk = it.next().context("--chunk N")?.parse()?,
            "-h" | "--help" => {
                println!(
                    "usage: quinn-ceiling [--bytes N (default 2^30)] [--mode link|raw] [--chunk N (default 2^20)]\n\
                     Sends N bytes memory-to-memory over one QUIC stream on 127.0.0.1 inside one process\n\
                     with lanshare's transport settings; prints one JSON line."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if args.chunk == 0 || args.chunk > PATTERN_LEN {
        bail!("--chunk must be 1..={PATTERN_LEN}");
    }
    Ok(args)
}

/// Deterministic pseudo-random pattern (xorshift64*), repeated over the stream.
fn pattern() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(PATTERN_LEN);
    while v.len() < PATTERN_LEN {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v
}

/// The pattern as shareable `Bytes` chunks of `chunk` bytes.
fn split(pat: &[u8], chunk: usize) -> Vec<Bytes> {
    let whole = Bytes::from(pat.to_vec());
    (0..PATTERN_LEN)
        .step_by(chunk)
        .map(|o| whole.slice(o..(o + chunk).min(PATTERN_LEN)))
        .collect()
}

/// Compares `data` received at stream offset `off` with the pattern.
fn check(pat: &[u8], mut off: u64, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        let p = (off % PATTERN_LEN as u64) as usize;
        let n = data.len().min(PATTERN_LEN - p);
        if data[..n] != pat[p..p + n] {
            return false;
        }
        data = &data[n..];
        off += n as u64;
    }
    true
}

/// utime + stime of this process, in seconds (USER_HZ = 100 on Linux).
fn cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (t(11) + t(12)) / 100.0
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Outcome {
    handshake: Duration,
    transfer: Duration,
    received: u64,
    verified: bool,
}

/// Through lanshare's own `QuicTransport` and `Link`.
async fn run_link(args: &Args, pat: Arc<Vec<u8>>) -> Result<Outcome> {
    use tokio::sync::{Semaphore, mpsc};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    let server_id = Identity::generate()?;
    let client_id = Identity::generate()?;
    let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let server = Arc::new(QuicTransport::bind(lo, &server_id, true)?);
    if let Some(w) = server.buffer_warning() {
        eprintln!("quinn-ceiling: {w}");
    }
    let addr = server.local_addr()?;
    let client = QuicTransport::bind(lo, &client_id, false)?;
    let (tx, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::spawn(server.clone().serve(
        tx,
        Arc::new(Semaphore::new(8)),
        cancel.clone(),
        tracker.clone(),
    ));

    let total = args.bytes;
    let t_hs = Instant::now();
    let mut link = client.connect(addr, Some(server_id.id())).await?;
    let handshake = t_hs.elapsed();

    let recv_pat = pat.clone();
    let receiver = tokio::spawn(async move {
        let mut link = rx.recv().await.context("no incoming link")?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        let mut ok = true;
        loop {
            let n = link.reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            ok &= check(&recv_pat, got, &buf[..n]);
            got += n as u64;
        }
        let end = Instant::now();
        // Tell the sender we are done, so it can close cleanly.
        link.writer.write_all(b"k").await?;
        link.finish().await?;
        anyhow::Ok((got, ok, end, link))
    });

    // Same call as lanshare's sender: `LinkWriter::write_bytes` (zero-copy on QUIC).
    let chunks = split(&pat, args.chunk);
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut i = 0usize;
    while sent < total {
        let mut c = chunks[i % chunks.len()].clone();
        if (c.len() as u64) > total - sent {
            c.truncate((total - sent) as usize);
        }
        sent += c.len() as u64;
        link.writer.write_bytes(c).await?;
        i += 1;
    }
    link.finish().await?;
    let mut ack = [0u8; 1];
    link.reader.read_exact(&mut ack).await?;
    let (got, ok, end, server_link) = receiver.await??;
    let transfer = end - t0;
    drop(server_link);
    drop(link);
    cancel.cancel();
    server.shutdown().await;
    client.shutdown().await;
    Ok(Outcome {
        handshake,
        transfer,
        received: got,
        verified: ok && got == total,
    })
}

// ---- raw mode: quinn directly, with lanshare's own transport settings ----

fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(UDP_BUFFER_SIZE)?;
    s.set_send_buffer_size(UDP_BUFFER_SIZE)?;
    if s.recv_buffer_size()? < UDP_BUFFER_SIZE || s.send_buffer_size()? < UDP_BUFFER_SIZE {
        eprintln!("quinn-ceiling: UDP buffers clamped by net.core.rmem_max/wmem_max");
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

async fn run_raw(args: &Args, pat: Arc<Vec<u8>>) -> Result<Outcome> {
    let server_id = Identity::generate()?;
    let client_id = Identity::generate()?;
    let transport = Arc::new(lanshare::transport::quic::transport_config()?);
    let mut server_cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(
        tls::server_config(&server_id)?,
    )?));
    server_cfg.transport_config(transport.clone());
    let mut client_cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(
        tls::client_config(&client_id, Some(server_id.id()))?,
    )?));
    client_cfg.transport_config(transport);
    let rt = quinn::default_runtime().context("no runtime")?;
    let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut endpoint_cfg = quinn::EndpointConfig::default();
    endpoint_cfg.max_udp_payload_size(MAX_UDP_PAYLOAD)?;
    let server = quinn::Endpoint::new(
        endpoint_cfg.clone(),
        Some(server_cfg),
        udp_socket(lo)?,
        rt.clone(),
    )?;
    let addr = server.local_addr()?;
    let client = quinn::Endpoint::new(endpoint_cfg, None, udp_socket(lo)?, rt)?;

    let total = args.bytes;
    let recv_pat = pat.clone();
    let srv = server.clone();
    let receiver = tokio::spawn(async move {
        let conn = srv.accept().await.context("no incoming")?.await?;
        let (mut send, mut recv) = conn.accept_bi().await?;
        let mut got = 0u64;
        let mut ok = true;
        while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
            ok &= check(&recv_pat, chunk.offset, &chunk.bytes);
            got += chunk.bytes.len() as u64;
        }
        let end = Instant::now();
        send.write_all(b"k").await?;
        send.finish()?;
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        anyhow::Ok((got, ok, end))
    });

    let t_hs = Instant::now();
    let conn = client
        .connect_with(client_cfg, addr, tls::SERVER_NAME)?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let handshake = t_hs.elapsed();
    // Pre-split the pattern into shareable chunks: write_chunk is zero-copy.
    let chunks = split(&pat, args.chunk);
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut i = 0usize;
    while sent < total {
        let mut c = chunks[i % chunks.len()].clone();
        if (c.len() as u64) > total - sent {
            c.truncate((total - sent) as usize);
        }
        sent += c.len() as u64;
        send.write_chunk(c).await?;
        i += 1;
    }
    send.finish()?;
    let mut ack = [0u8; 1];
    recv.read_exact(&mut ack).await?;
    let (got, ok, end) = receiver.await??;
    conn.close(quinn::VarInt::from_u32(0), b"done");
    client.wait_idle().await;
    server.close(quinn::VarInt::from_u32(0), b"done");
    Ok(Outcome {
        handshake,
        transfer: end - t0,
        received: got,
        verified: ok && got == total,
    })
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("quinn-ceiling: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quinn-ceiling: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let pat = Arc::new(pattern());
    let cpu0 = cpu_seconds();
    let result = rt.block_on(async {
        let fut = async {
            match args.mode.as_str() {
                "link" => run_link(&args, pat).await,
                "raw" => run_raw(&args, pat).await,
                m => bail!("unknown mode {m}"),
            }
        };
        tokio::time::timeout(Duration::from_secs(300), fut)
            .await
            .unwrap_or_else(|_| bail!("timed out after 300 s"))
    });
    let cpu = cpu_seconds() - cpu0;
    match result {
        Ok(o) => {
            let secs = o.transfer.as_secs_f64();
            println!(
                "{{\"mode\":\"{}\",\"bytes\":{},\"received\":{},\"verified\":{},\"seconds\":{:.6},\"handshake_ms\":{:.3},\"mib_s\":{:.1},\"cpu_seconds\":{:.3},\"peak_rss_kib\":{}}}",
                args.mode,
                args.bytes,
                o.received,
                o.verified,
                secs,
                o.handshake.as_secs_f64() * 1e3,
                o.received as f64 / (1u64 << 20) as f64 / secs,
                cpu,
                vm_hwm_kib()
            );
            if o.verified {
                std::process::ExitCode::SUCCESS
            } else {
                eprintln!("quinn-ceiling: verification FAILED");
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("quinn-ceiling: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
