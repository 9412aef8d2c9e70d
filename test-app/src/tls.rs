//! The test-app's private PKI and the rustls server configurations built
//! from it.
//!
//! One throw-away CA is made at start (rcgen). It issues the server
//! certificate every TLS endpoint presents (valid for `localhost`,
//! `127.0.0.1` and `::1`) and the client certificate that the mock APNs
//! accepts for certificate-based authentication. Clients trust the CA
//! ([`crate::TestApp::ca_cert_pem`]), never the leaf: webpki refuses a CA
//! certificate used as an end-entity one, and a real provider also chains to
//! a CA.
//!
//! The configs name the ring provider explicitly instead of relying on a
//! process-wide default, so that the test-app works inside any test binary
//! whatever it (or nothing) installed.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};

use crate::credentials::ApnsClientIdentity;

/// Why the PKI or a TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The CA, the server identity and the APNs client identity.
pub(crate) struct Pki {
    pub ca_cert_pem: String,
    ca_der: CertificateDer<'static>,
    server_cert: CertificateDer<'static>,
    server_key: PrivatePkcs8KeyDer<'static>,
    pub client_identity: ApnsClientIdentity,
}

impl Pki {
    /// Makes a CA, a server certificate for `localhost`, the loopback
    /// addresses and `extra_ip`, and a client certificate named after the
    /// first APNs topic the way Apple names push certificates.
    pub fn generate(extra_ip: Option<IpAddr>, apns_topic: &str) -> Result<Self, TlsError> {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Nudge test-app CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, &ca_key);

        let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut server_params = CertificateParams::new(vec!["localhost".to_owned()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "Nudge test-app");
        let mut ips: Vec<IpAddr> =
            vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
        if let Some(ip) = extra_ip.filter(|ip| !ips.contains(ip) && !ip.is_unspecified()) {
            ips.push(ip);
        }
        server_params
            .subject_alt_names
            .extend(ips.into_iter().map(SanType::IpAddress));
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let client_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut client_params = CertificateParams::new(Vec::<String>::new())?;
        client_params.distinguished_name.push(
            DnType::CommonName,
            format!("Apple Push Services: {apns_topic}"),
        );
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &issuer)?;

        Ok(Self {
            ca_cert_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            server_cert: server_cert.der().clone(),
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
            client_identity: ApnsClientIdentity {
                cert_pem: client_cert.pem(),
                key_pem: client_key.serialize_pem(),
            },
        })
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.server_cert.clone(), self.ca_der.clone()]
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.server_key.clone_key())
    }

    /// APNs: HTTP/2 only (ALPN `h2` and nothing else, like Apple), and a
    /// client certificate is optional: a connection that presents one
    /// issued by the CA is certificate-authenticated, any other must carry
    /// JWTs.
    pub fn apns_server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Self::provider())
                .allow_unauthenticated()
                .build()?;
        let mut config = ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain(), self.key())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// The Web Push endpoint: HTTP/2 or HTTP/1.1, as browsers' push
    /// services offer both (the same configuration as FCM's).
    pub fn webpush_server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.fcm_server_config()
    }

    /// FCM and the HTTPS token endpoint: HTTP/2 or HTTP/1.1, like Google's
    /// front ends.
    pub fn fcm_server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain(), self.key())?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
