//! TLS 1.3 certificates made from node keys, and the verifiers that admit only fabric members.
//!
//! A node's TLS certificate is self-signed with its Ed25519 node key and carries its membership
//! certificate in a private X.509 extension. The handshake proves possession of the key; the
//! verifier then checks the embedded membership certificate against the fabric's admin key.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use weft_core::{MembershipCert, NodeId, SecretKey, wire};

use crate::trust::{PeerInfo, Trust};

/// OID of the X.509 extension that carries the membership certificate.
pub const MEMBERSHIP_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 7, 1];
const ED25519_OID: &str = "1.3.101.112";
pub(crate) const ALPN: &[u8] = b"weft/1";
pub(crate) const SERVER_NAME: &str = "weft";

/// Build the self-signed TLS certificate for `key`, embedding `membership` when the node has one.
pub(crate) fn make_certificate(
    key: &SecretKey,
    membership: Option<&MembershipCert>,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), rcgen::Error> {
    let pkcs8 = PrivatePkcs8KeyDer::from(key.to_pkcs8_der());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)?;
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, key.public().to_hex());
    if let Some(cert) = membership {
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                MEMBERSHIP_EXTENSION_OID,
                wire::encode(cert),
            ));
    }
    let cert = params.self_signed(&key_pair)?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
}

/// Why a presented certificate is not a member's.
#[derive(Debug, thiserror::Error)]
pub enum PeerCertError {
    /// Not parseable X.509.
    #[error("unparseable certificate: {0}")]
    Unparseable(String),
    /// A key type other than Ed25519.
    #[error("certificate key is not Ed25519")]
    NotEd25519,
    /// No membership extension (a self-made key).
    #[error("certificate carries no membership certificate for any fabric")]
    NoMembership,
    /// The extension does not decode.
    #[error("membership extension is malformed: {0}")]
    Malformed(String),
}

/// Extract the node key and membership certificate from a TLS certificate, without judging them.
pub fn peer_from_certificate(der: &[u8]) -> Result<(NodeId, MembershipCert), PeerCertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PeerCertError::Unparseable(e.to_string()))?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        return Err(PeerCertError::NotEd25519);
    }
    let key: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| PeerCertError::NotEd25519)?;
    let oid = MEMBERSHIP_EXTENSION_OID
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(".");
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)
        .ok_or(PeerCertError::NoMembership)?;
    let membership: MembershipCert =
        wire::decode(ext.value).map_err(|e| PeerCertError::Malformed(e.to_string()))?;
    Ok((NodeId(key), membership))
}

/// Verifies peers (servers and clients alike) against the fabric's trust anchor.
#[derive(Debug)]
pub(crate) struct MemberVerifier {
    trust: Arc<Trust>,
    provider: Arc<CryptoProvider>,
    /// Whether a client may connect without a certificate (as a guest that can only join).
    allow_guests: bool,
}

impl MemberVerifier {
    pub(crate) fn new(
        trust: Arc<Trust>,
        provider: Arc<CryptoProvider>,
        allow_guests: bool,
    ) -> Self {
        MemberVerifier {
            trust,
            provider,
            allow_guests,
        }
    }

    fn check(&self, der: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let (id, cert) =
            peer_from_certificate(der).map_err(|e| rustls::Error::General(e.to_string()))?;
        self.trust
            .check_cert(&cert, &id, crate::now_ms())
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

impl ServerCertVerifier for MemberVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![rustls::SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for MemberVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.allow_guests
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![rustls::SignatureScheme::ED25519]
    }
}

/// Read the verified peer out of an established connection (None for a guest).
pub(crate) fn connection_peer(conn: &quinn::Connection) -> Option<PeerInfo> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let (id, cert) = peer_from_certificate(certs.first()?).ok()?;
    Some(PeerInfo { id, cert })
}
