//! Compact JSON Web Tokens: the two kinds the mocks check and the helpers to
//! make them.
//!
//! APNs token authentication uses ES256 JWTs signed with the team's `.p8`
//! key; Google's OAuth JWT-bearer grant uses RS256 assertions signed with the
//! service account's RSA key. Both are checked with `ring` (already in the
//! tree through rustls) rather than a JWT crate, because the mocks must
//! report *why* a token is wrong in the provider's own words, which needs the
//! header, the claims and the signature checked as separate steps.
//!
//! The signing helpers ([`sign_es256`], [`sign_rs256`]) exist so that tests
//! and tools can make tokens the mocks accept (or, with the wrong key, tokens
//! they must refuse) without another dependency.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair, UnparsedPublicKey};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

/// Why a token could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three dot-separated base64url parts, or a part is not JSON.
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    /// The header names another algorithm than the one required.
    #[error("JWT algorithm {found:?}, expected {expected}")]
    WrongAlgorithm {
        expected: &'static str,
        found: Option<String>,
    },
    /// The signature does not verify with the expected key.
    #[error("bad JWT signature")]
    BadSignature,
    /// A signing key could not be read.
    #[error("bad signing key: {0}")]
    BadKey(String),
}

/// A JWT whose parts have been decoded but whose signature is not yet
/// checked.
#[derive(Debug, Clone)]
pub struct Parsed<'a> {
    /// The decoded header object.
    pub header: Value,
    /// The decoded claims object.
    pub claims: Value,
    /// `header.claims`, the bytes the signature covers.
    pub signed_part: &'a str,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Decodes base64url with or without `=` padding. gcp_auth pads its JWT
/// segments (it uses the padded URL-safe alphabet) and Google accepts that,
/// so the mock must too.
fn b64url(part: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed("segment is not base64url"))
}

/// Splits and decodes a compact JWT without checking its signature.
pub fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("expected three dot-separated parts"));
    };
    let header: Value = serde_json::from_slice(&b64url(h)?)
        .map_err(|_| JwtError::Malformed("header is not JSON"))?;
    let claims: Value = serde_json::from_slice(&b64url(c)?)
        .map_err(|_| JwtError::Malformed("claims are not JSON"))?;
    if !header.is_object() || !claims.is_object() {
        return Err(JwtError::Malformed("header or claims not a JSON object"));
    }
    Ok(Parsed {
        header,
        claims,
        signed_part: &token[..h.len() + 1 + c.len()],
        signature: b64url(s)?,
    })
}

impl Parsed<'_> {
    fn check_alg(&self, expected: &'static str) -> Result<(), JwtError> {
        match self.header.get("alg").and_then(Value::as_str) {
            Some(alg) if alg == expected => Ok(()),
            other => Err(JwtError::WrongAlgorithm {
                expected,
                found: other.map(str::to_owned),
            }),
        }
    }

    /// Checks an ES256 signature against an uncompressed P-256 public key
    /// (the 65-byte `04 || x || y` point).
    pub fn verify_es256(&self, public_key: &[u8]) -> Result<(), JwtError> {
        self.check_alg("ES256")?;
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_key)
            .verify(self.signed_part.as_bytes(), &self.signature)
            .map_err(|_| JwtError::BadSignature)
    }

    /// Checks an RS256 signature against a DER `RSAPublicKey` (PKCS#1).
    pub fn verify_rs256(&self, public_key_der: &[u8]) -> Result<(), JwtError> {
        self.check_alg("RS256")?;
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_key_der)
            .verify(self.signed_part.as_bytes(), &self.signature)
            .map_err(|_| JwtError::BadSignature)
    }

    /// A string claim, if present.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// An integer claim (seconds since the epoch for `iat`/`exp`), if
    /// present. Floats are truncated: some libraries write `iat` as a float.
    pub fn claim_i64(&self, name: &str) -> Option<i64> {
        let v = self.claims.get(name)?;
        v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
    }
}

fn pkcs8_der(key_pem: &str) -> Result<Vec<u8>, JwtError> {
    PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
        .map(|k| k.secret_pkcs8_der().to_vec())
        .map_err(|e| JwtError::BadKey(format!("not a PKCS#8 PEM key: {e}")))
}

fn encode(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Signs `claims` as an ES256 JWT with a PKCS#8 P-256 key (an APNs `.p8`),
/// with header `{"alg":"ES256","kid":key_id}` as Apple expects.
pub fn sign_es256(key_pem: &str, key_id: &str, claims: &Value) -> Result<String, JwtError> {
    let der = pkcs8_der(key_pem)?;
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
        .map_err(|e| JwtError::BadKey(e.to_string()))?;
    let header = serde_json::json!({"alg": "ES256", "kid": key_id});
    let signed = encode(&header, claims);
    let sig = key
        .sign(&rng, signed.as_bytes())
        .map_err(|_| JwtError::BadKey("ECDSA signing failed".into()))?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
}

/// Signs `claims` as an RS256 JWT with a PKCS#8 RSA key (a service
/// account's `private_key`), header `{"alg":"RS256","typ":"JWT"}` plus
/// `kid` when given.
pub fn sign_rs256(key_pem: &str, key_id: Option<&str>, claims: &Value) -> Result<String, JwtError> {
    let der = pkcs8_der(key_pem)?;
    let key = RsaKeyPair::from_pkcs8(&der).map_err(|e| JwtError::BadKey(e.to_string()))?;
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = key_id {
        header["kid"] = Value::String(kid.to_owned());
    }
    let signed = encode(&header, claims);
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signed.as_bytes(),
        &mut sig,
    )
    .map_err(|_| JwtError::BadKey("RSA signing failed".into()))?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_round_trip_and_tamper() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let jwt = sign_es256(
            &key.serialize_pem(),
            "KEY",
            &serde_json::json!({"iss": "T"}),
        )
        .unwrap();
        let parsed = parse(&jwt).unwrap();
        assert_eq!(parsed.header["kid"], "KEY");
        assert_eq!(parsed.claim_str("iss"), Some("T"));
        parsed.verify_es256(key.public_key_raw()).unwrap();
        assert_eq!(
            parsed.verify_es256(other.public_key_raw()),
            Err(JwtError::BadSignature)
        );
        assert!(matches!(
            parsed.verify_rs256(b"x"),
            Err(JwtError::WrongAlgorithm { .. })
        ));
    }

    #[test]
    fn padded_segments_are_accepted_and_garbage_is_not() {
        // gcp_auth encodes with the padded alphabet.
        let padded = format!(
            "{}.{}.{}",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"alg":"RS256"}"#),
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"a":1}"#),
            base64::engine::general_purpose::URL_SAFE.encode([1u8, 2, 3, 4])
        );
        let parsed = parse(&padded).unwrap();
        assert_eq!(parsed.claim_i64("a"), Some(1));
        assert_eq!(parsed.signature, vec![1, 2, 3, 4]);
        assert!(parse("a.b").is_err());
        assert!(parse("a.b.c.d").is_err());
        assert!(parse("!!.e30.e30").is_err());
    }
}
