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

#[cfg(test)]
mod tests {
    //! In-memory handshakes: a rustls client and server pumped into each
    //! other, no sockets.

    use std::sync::Arc;

    use rustls::client::ResolvesClientCert;
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use rustls::{AlertDescription, ClientConnection, Connection, ServerConnection};

    use super::*;
    use crate::identity::Identity;
    use crate::protocol::{ALPN, ALPN_METADATA};
    use crate::transport::tls::{SERVER_NAME, client_config, provider, server_config};

    /// Which side failed, and how.
    #[derive(Debug)]
    enum Failure {
        Client(rustls::Error),
        Server(rustls::Error),
    }

    /// Moves everything `from` wants to send into `to`; `Err` is `to`'s
    /// error processing it. Returns whether any bytes moved.
    fn deliver(from: &mut Connection, to: &mut Connection) -> Result<bool, rustls::Error> {
        let mut bytes = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut bytes).unwrap();
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets()?;
        }
        Ok(!bytes.is_empty())
    }

    /// Runs the handshake to completion or to the first error. After an
    /// error, the failing side's alert is still delivered to the other
    /// side, whose error (if any) is returned second.
    fn handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> (Result<(), Failure>, Connection, Connection) {
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let mut c = Connection::from(ClientConnection::new(Arc::new(client), name).unwrap());
        let mut s = Connection::from(ServerConnection::new(Arc::new(server)).unwrap());
        for _ in 0..16 {
            let to_server = match deliver(&mut c, &mut s) {
                Ok(moved) => moved,
                Err(e) => return (Err(Failure::Server(e)), c, s),
            };
            let to_client = match deliver(&mut s, &mut c) {
                Ok(moved) => moved,
                Err(e) => return (Err(Failure::Client(e)), c, s),
            };
            if !to_server && !to_client {
                assert!(
                    !c.is_handshaking() && !s.is_handshaking(),
                    "handshake stalled"
                );
                return (Ok(()), c, s);
            }
        }
        panic!("handshake did not finish");
    }

    /// What the other side makes of the failing side's alert.
    fn alert_seen_by(failed: Failure, c: &mut Connection, s: &mut Connection) -> rustls::Error {
        let other = match failed {
            Failure::Client(_) => deliver(c, s),
            Failure::Server(_) => deliver(s, c),
        };
        other.expect_err("the peer's alert is an error")
    }

    fn peer_id(conn: &Connection) -> DeviceId {
        DeviceId::from_cert_der(&conn.peer_certificates().unwrap()[0])
    }

    /// Always presents `cert` and signs with `key`, whether or not they
    /// belong together (rustls' own helpers refuse a mismatched pair,
    /// which is exactly what an attacker would not use).
    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);

    impl Fixed {
        fn new(cert: &Identity, key: &Identity) -> Arc<Self> {
            let signer = provider().key_provider.load_private_key(key.key()).unwrap();
            Arc::new(Self(Arc::new(CertifiedKey::new(
                vec![cert.cert().clone()],
                signer,
            ))))
        }
    }

    impl ResolvesClientCert for Fixed {
        fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }

        fn has_certs(&self) -> bool {
            true
        }
    }

    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    fn impostor_client(resolver: Arc<Fixed>, pin: Option<DeviceId>) -> rustls::ClientConfig {
        let verifier = match pin {
            Some(id) => PeerVerifier::pinned(provider(), id),
            None => PeerVerifier::any(provider()),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(resolver);
        config.alpn_protocols = vec![ALPN.to_vec()];
        config
    }

    fn is_bad_signature(e: &rustls::Error) -> bool {
        matches!(
            e,
            rustls::Error::InvalidCertificate(CertificateError::BadSignature)
        )
    }

    /// A client presenting `chain` and signing with `key`.
    fn presenting(
        chain: Vec<CertificateDer<'static>>,
        key: &rcgen::KeyPair,
    ) -> rustls::ClientConfig {
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signer = provider().key_provider.load_private_key(der).unwrap();
        impostor_client(
            Arc::new(Fixed(Arc::new(CertifiedKey::new(chain, signer)))),
            None,
        )
    }

    /// A self-signed certificate from `params` with a new key of `alg`.
    fn certificate(
        params: rcgen::CertificateParams,
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> (CertificateDer<'static>, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.der().clone(), key)
    }

    fn params() -> rcgen::CertificateParams {
        rcgen::CertificateParams::new(vec!["lanshare.invalid".to_string()]).unwrap()
    }

    /// Whether Bob's server accepts a client presenting `chain` / `key`.
    fn accepted(chain: Vec<CertificateDer<'static>>, key: &rcgen::KeyPair) -> bool {
        let bob = Identity::generate().unwrap();
        let (result, _, _) = handshake(presenting(chain, key), server_config(&bob).unwrap());
        result.is_ok()
    }

    /// PROTOCOL.md §2.1: what a verifier accepts besides the reference's
    /// own certificates, and what it refuses.
    #[test]
    fn the_certificate_profile_of_the_spec() {
        let date = rcgen::date_time_ymd;
        let mut expired = params();
        (expired.not_before, expired.not_after) = (date(1990, 1, 1), date(2000, 1, 1));
        let mut not_yet = params();
        not_yet.not_before = date(2100, 1, 1);
        let mut ca = params();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let extension = |critical: bool| {
            let mut p = params();
            let mut e =
                rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 1], vec![5, 0]);
            e.set_criticality(critical);
            p.custom_extensions.push(e);
            p
        };
        let ed25519 = &rcgen::PKCS_ED25519;
        for (what, p, alg) in [
            ("expired", expired, ed25519),
            ("not yet valid", not_yet, ed25519),
            ("marked as a CA", ca, ed25519),
            (
                "an unknown non-critical extension",
                extension(false),
                ed25519,
            ),
            ("ECDSA P-256", params(), &rcgen::PKCS_ECDSA_P256_SHA256),
            ("ECDSA P-384", params(), &rcgen::PKCS_ECDSA_P384_SHA384),
        ] {
            let (cert, key) = certificate(p, alg);
            assert!(accepted(vec![cert], &key), "{what} was refused");
        }
        let (cert, key) = certificate(extension(true), ed25519);
        assert!(
            !accepted(vec![cert], &key),
            "an unknown critical extension was accepted"
        );
        let (cert, key) = certificate(params(), ed25519);
        let (other, _) = certificate(params(), ed25519);
        assert!(
            !accepted(vec![cert, other], &key),
            "a chain of two was accepted"
        );
    }

    /// A peer that knows only `lanshare/1` (an older version), on either
    /// side, gets `lanshare/1`: no metadata is sent on that connection.
    #[test]
    fn an_older_peer_negotiates_lanshare_1() {
        let alice = Identity::generate().unwrap();
        let bob = Identity::generate().unwrap();
        let old = |alpns: &mut Vec<Vec<u8>>| *alpns = vec![ALPN.to_vec()];
        let mut old_client = client_config(&alice, None).unwrap();
        old(&mut old_client.alpn_protocols);
        let mut old_server = server_config(&bob).unwrap();
        old(&mut old_server.alpn_protocols);
        for (client, server) in [
            (old_client, server_config(&bob).unwrap()),
            (client_config(&alice, None).unwrap(), old_server),
        ] {
            let (result, c, s) = handshake(client, server);
            result.unwrap();
            assert_eq!(c.alpn_protocol(), Some(ALPN));
            assert_eq!(s.alpn_protocol(), Some(ALPN));
        }
    }

    #[test]
    fn mutual_handshake_proves_both_device_ids() {
        let alice = Identity::generate().unwrap();
        let bob = Identity::generate().unwrap();
        for pin in [None, Some(bob.id())] {
            let (result, c, s) = handshake(
                client_config(&alice, pin).unwrap(),
                server_config(&bob).unwrap(),
            );
            result.unwrap();
            assert_eq!(peer_id(&c), bob.id());
            assert_eq!(peer_id(&s), alice.id());
            assert_eq!(c.alpn_protocol(), Some(ALPN_METADATA));
            assert_eq!(s.alpn_protocol(), Some(ALPN_METADATA));
            assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
            assert_eq!(
                c.negotiated_cipher_suite().map(|s| s.suite()),
                Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
            );
        }
    }

    #[test]
    fn client_pinned_to_another_device_refuses_the_server() {
        let alice = Identity::generate().unwrap();
        let bob = Identity::generate().unwrap();
        let carol = Identity::generate().unwrap();
        let (result, mut c, mut s) = handshake(
            client_config(&alice, Some(carol.id())).unwrap(),
            server_config(&bob).unwrap(),
        );
        let failed = result.unwrap_err();
        assert!(
            matches!(
                &failed,
                Failure::Client(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure
                ))
            ),
            "{failed:?}"
        );
        let seen = alert_seen_by(failed, &mut c, &mut s);
        assert!(crate::transport::tls::is_identity_error(&seen), "{seen:?}");
    }

    #[test]
    fn client_without_a_certificate_is_refused() {
        let bob = Identity::generate().unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerVerifier::any(provider())))
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        let (result, _, _) = handshake(config, server_config(&bob).unwrap());
        assert!(
            matches!(
                result,
                Err(Failure::Server(rustls::Error::NoCertificatesPresented))
            ),
            "{result:?}"
        );
    }

    #[test]
    fn client_replaying_a_victims_certificate_is_refused_by_signature() {
        let victim = Identity::generate().unwrap();
        let impostor = Identity::generate().unwrap();
        let bob = Identity::generate().unwrap();
        // Sanity: rustls' consistency check alone would stop a naive attempt.
        assert!(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PeerVerifier::any(provider())))
                .with_client_auth_cert(vec![victim.cert().clone()], impostor.key())
                .is_err()
        );
        let (result, mut c, mut s) = handshake(
            impostor_client(Fixed::new(&victim, &impostor), Some(bob.id())),
            server_config(&bob).unwrap(),
        );
        let failed = result.unwrap_err();
        assert!(
            matches!(&failed, Failure::Server(e) if is_bad_signature(e)),
            "{failed:?}"
        );
        let seen = alert_seen_by(failed, &mut c, &mut s);
        assert_eq!(
            seen,
            rustls::Error::AlertReceived(AlertDescription::DecryptError)
        );
        assert!(crate::transport::tls::is_identity_error(&seen));

        // Control: the same resolver with the matching key is accepted.
        let (result, _, s) = handshake(
            impostor_client(Fixed::new(&victim, &victim), Some(bob.id())),
            server_config(&bob).unwrap(),
        );
        result.unwrap();
        assert_eq!(peer_id(&s), victim.id());
    }

    #[test]
    fn server_replaying_a_victims_certificate_is_refused_by_signature() {
        let victim = Identity::generate().unwrap();
        let impostor = Identity::generate().unwrap();
        let alice = Identity::generate().unwrap();
        let impostor_server = |resolver: Arc<Fixed>| {
            let mut config = rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_client_cert_verifier(Arc::new(PeerVerifier::any(provider())))
                .with_cert_resolver(resolver);
            config.alpn_protocols = vec![ALPN.to_vec()];
            config
        };
        // The client pins the victim: the certificate matches the pin, only
        // the handshake signature can expose the impostor.
        let (result, mut c, mut s) = handshake(
            client_config(&alice, Some(victim.id())).unwrap(),
            impostor_server(Fixed::new(&victim, &impostor)),
        );
        let failed = result.unwrap_err();
        assert!(
            matches!(&failed, Failure::Client(e) if is_bad_signature(e)),
            "{failed:?}"
        );
        let seen = alert_seen_by(failed, &mut c, &mut s);
        assert_eq!(
            seen,
            rustls::Error::AlertReceived(AlertDescription::DecryptError)
        );

        // Control: with the victim's real key the same setup succeeds.
        let (result, c, _) = handshake(
            client_config(&alice, Some(victim.id())).unwrap(),
            impostor_server(Fixed::new(&victim, &victim)),
        );
        result.unwrap();
        assert_eq!(peer_id(&c), victim.id());
    }
}
