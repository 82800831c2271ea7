//! TLS 1.3 configuration for both ends, from PEM: mutual authentication against the
//! user's own CA, with ring as the one crypto provider. There is no way to skip checks.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use x509_parser::prelude::FromDer;

use crate::identity::Identity;
use crate::invite::{ca_fingerprint, FINGERPRINT_BYTES};
use crate::{ALPN, ENROLL_ALPN};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("bad PEM in {what}: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// The crypto provider qchat uses everywhere (ring), named explicitly so that no other
/// provider pulled in by a feature can make rustls refuse to choose.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(what: &'static str) -> impl Fn(rustls_pki_types::pem::Error) -> TlsError {
    move |e| TlsError::Pem { what, detail: e.to_string() }
}

/// All certificates in a PEM text.
pub fn parse_certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs =
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(pem_error(what))?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what, detail: "no certificate found".into() });
    }
    Ok(certs)
}

/// The private key in a PEM text.
pub fn parse_key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(pem_error(what))
}

/// All CRLs in a PEM text.
pub fn parse_crls(pem: &str) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    CertificateRevocationListDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error("the CRL"))
}

fn roots(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem, "the CA certificate")? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// What the relay presents and whom it trusts.
pub struct ServerTls<'a> {
    /// The relay's certificate (and any intermediates), PEM.
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    /// The CA that client certificates must chain to.
    pub ca_pem: &'a str,
    /// Revoked client certificates (may be empty).
    pub crl_pem: &'a str,
}

/// The relay's TLS: its certificate (sent with the CA's, which a device that enrolls pins
/// by fingerprint), and client certificates from the CA, checked against the CRL.
///
/// A client certificate is checked whenever one is sent, but the handshake does not
/// demand one, because enrollment ([`ENROLL_ALPN`]) is how a device without a certificate
/// gets one. The relay refuses every chat connection (ALPN [`ALPN`]) without one before
/// reading a byte of it.
pub fn server_crypto(tls: &ServerTls<'_>) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(tls.ca_pem)?), provider.clone())
        .with_crls(parse_crls(tls.crl_pem)?)
        .only_check_end_entity_revocation()
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut chain = parse_certs(tls.cert_pem, "the relay certificate")?;
    chain.extend(parse_certs(tls.ca_pem, "the CA certificate")?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, parse_key(tls.key_pem, "the relay key")?)?;
    config.alpn_protocols = vec![ALPN.to_vec(), ENROLL_ALPN.to_vec()];
    Ok(config)
}

/// The TLS of a device that enrolls: no client certificate, and a relay accepted only if
/// its certificate chains to a CA (sent in its chain) whose fingerprint is the invite's.
/// The returned handle holds that CA once the handshake has passed.
pub fn enroll_crypto(fingerprint: [u8; FINGERPRINT_BYTES]) -> Result<(rustls::ClientConfig, Arc<PinnedCa>), TlsError> {
    let provider = provider();
    let pinned = Arc::new(PinnedCa { fingerprint, provider: provider.clone(), found: Default::default() });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(pinned.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![ENROLL_ALPN.to_vec()];
    Ok((config, pinned))
}

/// Verifies a relay against the CA an invite names by fingerprint: the CA must come in the
/// relay's chain, and the relay's certificate must verify against it as the only root
/// (signature, validity, server name), exactly as a client with that CA would check it.
#[derive(Debug)]
pub struct PinnedCa {
    fingerprint: [u8; FINGERPRINT_BYTES],
    provider: Arc<CryptoProvider>,
    found: std::sync::Mutex<Option<CertificateDer<'static>>>,
}

impl PinnedCa {
    /// The CA the relay's certificate chained to, as PEM, once verified.
    pub fn ca_pem(&self) -> Option<String> {
        let found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        found.as_ref().map(|der| certificate_pem(der))
    }
}

impl rustls::client::danger::ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| ca_fingerprint(c) == self.fingerprint)
            .ok_or(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified = inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Some(ca.clone().into_owned());
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A DER certificate as PEM text.
pub fn certificate_pem(der: &[u8]) -> String {
    let body = data_encoding::BASE64.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// A client's TLS: trust only the CA in the identity, present the identity's certificate.
pub fn client_crypto(identity: &Identity) -> Result<rustls::ClientConfig, TlsError> {
    client_crypto_with_alpn(identity, ALPN)
}

/// Like [`client_crypto`] with another ALPN (for tests of version mismatch).
pub fn client_crypto_with_alpn(identity: &Identity, alpn: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&identity.ca_pem)?)
        .with_client_auth_cert(
            parse_certs(&identity.cert_pem, "the user certificate")?,
            parse_key(&identity.key_pem, "the user key")?,
        )?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// The serial numbers of every certificate revoked by the CRLs in a PEM text.
pub fn revoked_serials(crl_pem: &str) -> Result<Vec<Vec<u8>>, TlsError> {
    let mut serials = Vec::new();
    for crl in parse_crls(crl_pem)? {
        let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(&crl)
            .map_err(|e| TlsError::Pem { what: "the CRL", detail: e.to_string() })?;
        serials.extend(parsed.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()));
    }
    Ok(serials)
}

/// The serial number of a DER certificate.
pub fn serial(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.raw_serial().to_vec())
}

/// The device a DER certificate names (its subject's organizational unit), if any: a
/// certificate from `qchat-certs user` names none.
pub fn device_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let ou = cert.subject().iter_organizational_unit().next()?;
    ou.as_str().ok().map(str::to_string)
}

/// The subject public key info (DER) of a DER certificate.
pub fn public_key(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

/// When a DER certificate was issued and when it ends (Unix seconds).
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp()))
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
