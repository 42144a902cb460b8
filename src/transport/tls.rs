//! rustls configurations shared by both transports.
//!
//! TLS 1.3 only, the ring provider only (no aws-lc), ALPN `lanshare/1.1`
//! then `lanshare/1` (an older peer picks the latter),
//! mandatory client certificates, and the [`PeerVerifier`] on both sides.
//! Keeping this in one place is what guarantees the TCP fallback is exactly
//! as strict as QUIC.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;

use super::TransportError;
use crate::identity::verifier::PeerVerifier;
use crate::identity::{DeviceId, Identity};
use crate::protocol::{ALPN_METADATA, ALPNS};

/// The one crypto provider lanshare uses: ring, with the TLS 1.3 suite
/// `TLS_AES_128_GCM_SHA256` preferred. ring's default order puts
/// AES-256-GCM first; on a LAN the cipher runs over every byte of a
/// multi-gigabyte transfer, and AES-128-GCM does the same job with 10 AES
/// rounds instead of 14 at the full security level of the mandatory TLS 1.3
/// suite. AES-256-GCM and ChaCha20-Poly1305 remain allowed.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

fn setup(e: rustls::Error) -> TransportError {
    TransportError::Setup(format!("invalid TLS configuration: {e}"))
}

/// Server side: accept any device that proves its key; the transfer layer
/// decides what it may do.
pub fn server_config(identity: &Identity) -> Result<rustls::ServerConfig, TransportError> {
    let provider = provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .with_client_cert_verifier(Arc::new(PeerVerifier::any(provider)))
        .with_single_cert(vec![identity.cert().clone()], identity.key())
        .map_err(setup)?;
    config.alpn_protocols = ALPNS.iter().map(|a| a.to_vec()).collect();
    // No session resumption: every connection proves its identity afresh.
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// Client side, optionally pinned to the device we mean to reach.
pub fn client_config(
    identity: &Identity,
    expected: Option<DeviceId>,
) -> Result<rustls::ClientConfig, TransportError> {
    let provider = provider();
    let verifier = match expected {
        Some(id) => PeerVerifier::pinned(provider.clone(), id),
        None => PeerVerifier::any(provider.clone()),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![identity.cert().clone()], identity.key())
        .map_err(setup)?;
    config.alpn_protocols = ALPNS.iter().map(|a| a.to_vec()).collect();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Whether a connection that negotiated `alpn` carries entry metadata.
pub fn has_metadata(alpn: Option<&[u8]>) -> bool {
    alpn == Some(ALPN_METADATA)
}

/// The name sent as SNI. Irrelevant to pinning, but it must parse.
pub const SERVER_NAME: &str = "lanshare.invalid";

/// The device ID of the first certificate in a peer chain.
pub fn peer_id(certs: Option<&[CertificateDer<'_>]>) -> Option<DeviceId> {
    certs
        .and_then(|c| c.first())
        .map(|c| DeviceId::from_cert_der(c))
}

/// Classifies a rustls error: certificate and signature problems are
/// identity failures, the rest are treated as connectivity problems.
pub fn is_identity_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
                    | rustls::AlertDescription::CertificateRequired
                    | rustls::AlertDescription::DecryptError
                    | rustls::AlertDescription::UnsupportedCertificate
                    | rustls::AlertDescription::CertificateUnknown
                    | rustls::AlertDescription::AccessDenied
            )
    )
}
