//! The one ES256 JSON Web Token signer both token-signing backends share:
//! APNs' provider token (`apns/jwt.rs`) and Web Push's VAPID token
//! (`webpush/vapid.rs`). Signed with ring directly: the common JWT crates
//! pull aws-lc, OpenSSL or a vulnerable `rsa` (plugins/README.md).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::EcdsaKeyPair;

/// `base64url(header).base64url(claims).base64url(signature)`, signed with
/// `key`, which must be a `ECDSA_P256_SHA256_FIXED_SIGNING` key pair: FIXED
/// signing gives the raw `r||s` form JWS wants, not DER.
pub(crate) fn es256(
    key: &EcdsaKeyPair,
    rng: &SystemRandom,
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> Result<String, ring::error::Unspecified> {
    let mut jwt = URL_SAFE_NO_PAD.encode(header.to_string());
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = key.sign(rng, jwt.as_bytes())?;
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
    Ok(jwt)
}
