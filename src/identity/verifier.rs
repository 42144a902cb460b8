//! TLS certificate verifiers that turn a handshake into a proven device ID.
//!
//! lanshare devices use self-signed certificates, so there is no CA to
//! check. What matters is (a) that the peer holds the private key of the
//! certificate it presents — proven by the TLS 1.3 handshake signature,
//! which these verifiers *always* check with the provider's algorithms —
//! and (b) that the certificate's hash is the device ID we expect.
//!
//! A "blind" verifier that returns `HandshakeSignatureValid::assertion()`
//! without checking would accept an impostor replaying a victim's
//! certificate without its key. [`PeerVerifier`] never does that.
//!
//! On the server side any well-formed certificate is accepted at the TLS
//! layer; the transfer layer decides what an unknown device may do
//! (consent, trust). On the client side the dialer can pin the expected
//! device ID (from the mDNS TXT `id` or the trust store), and a mismatch
//! fails the handshake.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::DeviceId;

/// Verifies a peer's self-signed certificate and handshake signature,
/// optionally pinning the expected device ID.
#[derive(Debug)]
pub struct PeerVerifier {
    provider: Arc<CryptoProvider>,
    expected: Option<DeviceId>,
}

impl PeerVerifier {
    /// Accepts any device whose handshake signature is valid.
    pub fn any(provider: Arc<CryptoProvider>) -> Self {
        Self {
            provider,
            expected: None,
        }
    }

    /// Accepts only the device `id` (and only with a valid signature).
    pub fn pinned(provider: Arc<CryptoProvider>, id: DeviceId) -> Self {
        Self {
            provider,
            expected: Some(id),
        }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "lanshare peers present a single self-signed certificate".into(),
            ));
        }
        // Reject garbage early; the signature check parses it again.
        webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if let Some(expected) = self.expected {
            let got = DeviceId::from_cert_der(end_entity);
            if got != expected {
                tracing::warn!(expected = %expected, got = %got, "peer presented an unexpected certificate");
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        Ok(())
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}
