//! The data path's TLS: rustls configurations that authenticate both ends with the members'
//! libp2p-tls certificates (the member key signs the certificate's key, so the certificate names
//! a PeerId), TLS 1.3 only, AES-GCM only. libp2p-tls fixes ChaCha20-Poly1305 first, which runs
//! ~2.3x slower than AES-GCM on CPUs with AES instructions; these configurations are ours and
//! built on rustls's and libp2p-tls's public APIs (`certificate::{generate, parse}`).
//!
//! Authentication only: which PeerIds are members is the roster's, checked by the caller once
//! the handshake has named the peer.

use std::sync::Arc;

use libp2p::PeerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The data path's ALPN id: a TLS client of any other protocol on the shared port is refused in
/// the handshake.
pub const ALPN: &[u8] = b"deltafed-data/1";

/// The name the client sends; certificates are checked by PeerId, never by name.
const SERVER_NAME: &str = "deltafed";

fn provider() -> Arc<CryptoProvider> {
    let mut p = aws_lc_rs::default_provider();
    p.cipher_suites =
        vec![aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256, aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384];
    Arc::new(p)
}

/// Both configurations of one node, built once at start.
pub struct Configs {
    pub server: Arc<rustls::ServerConfig>,
    own: Arc<OwnCert>,
}

impl Configs {
    pub fn new(key: &libp2p::identity::Keypair) -> Result<Configs, rustls::Error> {
        let own = Arc::new(OwnCert::new(key)?);
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(MemberCert { expect: None }))
            .with_cert_resolver(own.clone());
        server.alpn_protocols = vec![ALPN.to_vec()];
        // One handshake per exchange; nothing to resume.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        Ok(Configs { server: Arc::new(server), own })
    }

    /// A client configuration that accepts only `peer`'s certificate.
    pub fn client_for(&self, peer: PeerId) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(MemberCert { expect: Some(peer) }))
            .with_client_cert_resolver(self.own.clone());
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.enable_sni = false;
        Ok(Arc::new(client))
    }
}

pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}

/// This node's libp2p-tls certificate and its key, offered in both roles. Given to rustls as a
/// resolver, not with `with_single_cert`: that one checks the certificate with webpki, which
/// refuses libp2p's critical extension (the member key's signature); `MemberCert` checks it.
#[derive(Debug)]
struct OwnCert(Arc<rustls::sign::CertifiedKey>);

impl OwnCert {
    fn new(key: &libp2p::identity::Keypair) -> Result<OwnCert, rustls::Error> {
        let (cert, private) =
            libp2p::tls::certificate::generate(key).map_err(|e| rustls::Error::General(format!("certificate: {e}")))?;
        let signing = provider().key_provider.load_private_key(private)?;
        Ok(OwnCert(Arc::new(rustls::sign::CertifiedKey::new(vec![cert], signing))))
    }
}

impl rustls::server::ResolvesServerCert for OwnCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl rustls::client::ResolvesClientCert for OwnCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The PeerId a connection's peer certificate names (set once the handshake completed).
pub fn peer_of(certs: Option<&[CertificateDer<'_>]>) -> Option<PeerId> {
    let cert = certs?.first()?;
    libp2p::tls::certificate::parse(cert).ok().map(|c| c.peer_id())
}

/// Verifies a libp2p-tls certificate: exactly one, self-signed, its extension signed by the
/// identity key it carries; for a client, naming the peer it meant to reach.
#[derive(Debug)]
struct MemberCert {
    expect: Option<PeerId>,
}

impl MemberCert {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General("exactly one certificate is expected".into()));
        }
        let cert = libp2p::tls::certificate::parse(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        match self.expect {
            Some(p) if p != cert.peer_id() => {
                Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
            }
            _ => Ok(()),
        }
    }
}

/// The handshake-signature methods, the same for both roles: the two verifier traits declare
/// them separately.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("only TLS 1.3 is offered".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let bad = || rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
            libp2p::tls::certificate::parse(cert)
                .map_err(|_| bad())?
                .verify_signature(dss.scheme, message, dss.signature())
                .map_err(|_| bad())?;
            Ok(HandshakeSignatureValid::assertion())
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::ECDSA_NISTP384_SHA384,
                SignatureScheme::ED25519,
            ]
        }
    };
}

impl ServerCertVerifier for MemberCert {
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

    handshake_signatures!();
}

impl ClientCertVerifier for MemberCert {
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

    handshake_signatures!();
}
