//! The credentials the mocks hand out and check: the APNs signing key
//! (`.p8`, key id, team id) and the FCM service account (RSA key and JSON).
//!
//! Everything is generated at start so that nothing secret-looking is ever
//! committed and every run gets fresh material. The APNs key is a P-256 key
//! made by rcgen (fast). The service account's RSA key is expensive to make
//! (a 2048-bit keygen takes a noticeable fraction of a second even
//! optimised), so it is made once per process and shared by every
//! [`crate::TestApp`] in that process; each instance still gets its own
//! `private_key_id` and `client_email`.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;
use ring::signature::{KeyPair, RsaKeyPair};
use serde::Serialize;

/// An APNs token-authentication key, as Apple's developer portal hands it
/// out: the `.p8` file (PKCS#8 PEM, P-256), its 10-character key id and the
/// 10-character team id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApnsCredentials {
    /// The `.p8` contents: `-----BEGIN PRIVATE KEY-----` PKCS#8 PEM.
    pub key_pem: String,
    /// The key id, the JWT header's `kid`.
    pub key_id: String,
    /// The team id, the JWT claims' `iss`.
    pub team_id: String,
}

impl ApnsCredentials {
    /// Makes a provider token (JWT) as an APNs client would: ES256, `kid` =
    /// key id, claims `iss` = team id and `iat` = `iat` (seconds since the
    /// epoch). For tests and tools; Nudge makes its own.
    pub fn provider_token(&self, iat: u64) -> Result<String, crate::jwt::JwtError> {
        crate::jwt::sign_es256(
            &self.key_pem,
            &self.key_id,
            &serde_json::json!({"iss": self.team_id, "iat": iat}),
        )
    }
}

/// A TLS client certificate and key that the mock APNs accepts for
/// certificate-based authentication (the older alternative to JWTs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApnsClientIdentity {
    /// The client certificate, PEM, issued by the test-app's CA.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
}

/// Why key material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("generating an EC key: {0}")]
    Ec(#[from] rcgen::Error),
    #[error("generating the RSA key: {0}")]
    Rsa(String),
}

/// The APNs key plus what the mock needs to check JWTs made with it.
#[derive(Debug)]
pub(crate) struct ApnsKey {
    pub credentials: ApnsCredentials,
    /// The uncompressed P-256 public point, for ES256 verification.
    pub public_key: Vec<u8>,
}

impl ApnsKey {
    pub fn generate(
        key_id: Option<String>,
        team_id: Option<String>,
    ) -> Result<Self, CredentialsError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        Ok(Self {
            credentials: ApnsCredentials {
                key_pem: key.serialize_pem(),
                key_id: key_id.unwrap_or_else(|| apple_id(10)),
                team_id: team_id.unwrap_or_else(|| apple_id(10)),
            },
            public_key: key.public_key_raw().to_vec(),
        })
    }
}

/// Apple's key and team ids are 10 characters of `[A-Z0-9]`.
fn apple_id(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

/// The RSA key pair shared by every instance in the process.
struct RsaMaterial {
    private_pem: String,
    /// DER `RSAPublicKey`, as ring's verifier wants it.
    public_der: Vec<u8>,
}

static RSA_KEY: OnceLock<Result<RsaMaterial, String>> = OnceLock::new();

fn rsa_material() -> Result<&'static RsaMaterial, CredentialsError> {
    RSA_KEY
        .get_or_init(generate_rsa)
        .as_ref()
        .map_err(|e| CredentialsError::Rsa(e.clone()))
}

fn generate_rsa() -> Result<RsaMaterial, String> {
    use rsa::Generate;
    use rsa::pkcs8::EncodePrivateKey;
    // The default size is 2048 bits, the smallest ring verifies and the
    // size Google issues.
    let key = rsa::PrivateKey::try_generate().map_err(|e| e.to_string())?;
    let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    let der = der.as_bytes();
    // Read it back with ring: proves the PKCS#8 is what gcp_auth (which
    // signs with ring) will accept, and gives the public key in the form
    // ring's verifier takes.
    let ring_key = RsaKeyPair::from_pkcs8(der).map_err(|e| e.to_string())?;
    Ok(RsaMaterial {
        private_pem: pem("PRIVATE KEY", der),
        public_der: ring_key.public_key().as_ref().to_vec(),
    })
}

/// PEM with 64-column lines, as Google writes `private_key`.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The FCM service account: what its JSON says and the public key the mock
/// checks assertions against.
#[derive(Debug, Clone)]
pub(crate) struct ServiceAccount {
    pub project_id: String,
    pub private_key_id: String,
    pub client_email: String,
    pub private_key_pem: String,
    pub public_key_der: Vec<u8>,
}

impl ServiceAccount {
    pub fn generate(project_id: &str) -> Result<Self, CredentialsError> {
        let rsa = rsa_material()?;
        let private_key_id = hex::encode(rand::random::<[u8; 20]>());
        Ok(Self {
            project_id: project_id.to_owned(),
            client_email: format!(
                "nudge-{}@{project_id}.iam.gserviceaccount.com",
                &private_key_id[..8]
            ),
            private_key_id,
            private_key_pem: rsa.private_pem.clone(),
            public_key_der: rsa.public_der.clone(),
        })
    }

    /// The service-account JSON Google's console would download, with
    /// `token_uri` pointing at the mock's token endpoint.
    pub fn json(&self, token_uri: &str) -> String {
        let value = serde_json::json!({
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": self.private_key_pem,
            "client_email": self.client_email,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!(
                "https://www.googleapis.com/robot/v1/metadata/x509/{}",
                self.client_email
            ),
            "universe_domain": "googleapis.com",
        });
        // Serialising a `Value` cannot fail; pretty output matches Google's.
        serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apns_ids_look_like_apples() {
        let k = ApnsKey::generate(None, Some("TEAM123456".into())).unwrap();
        assert_eq!(k.credentials.key_id.len(), 10);
        assert!(
            k.credentials
                .key_id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
        assert_eq!(k.credentials.team_id, "TEAM123456");
        assert!(
            k.credentials
                .key_pem
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        let jwt = k.credentials.provider_token(1).unwrap();
        crate::jwt::parse(&jwt)
            .unwrap()
            .verify_es256(&k.public_key)
            .unwrap();
    }

    #[test]
    fn service_account_key_signs_and_verifies() {
        let sa = ServiceAccount::generate("p").unwrap();
        let json: serde_json::Value = serde_json::from_str(&sa.json("http://x/token")).unwrap();
        assert_eq!(json["token_uri"], "http://x/token");
        assert_eq!(json["type"], "service_account");
        let jwt = crate::jwt::sign_rs256(
            json["private_key"].as_str().unwrap(),
            None,
            &serde_json::json!({"iss": sa.client_email}),
        )
        .unwrap();
        crate::jwt::parse(&jwt)
            .unwrap()
            .verify_rs256(&sa.public_key_der)
            .unwrap();
    }
}
