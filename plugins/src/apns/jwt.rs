//! APNs provider authentication tokens: an ES256 JWT signed with the team's
//! .p8 key, cached and replaced at a fixed age.
//!
//! APNs wants the same token reused for 20–60 minutes: a token older than an
//! hour is answered `ExpiredProviderToken`, and replacing it more often than
//! every 20 minutes is answered `TooManyProviderTokenUpdates`. So one token
//! is signed per backend and reused by every push until it reaches
//! `refresh_after`; only an `ExpiredProviderToken` answer replaces it early,
//! and only if the rejected token is still the current one (a thousand
//! concurrent pushes rejected together must not sign a thousand tokens).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;

use reqwest::header::HeaderValue;

use crate::clock::Clock;

/// Why a provider token could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the APNs auth key is not a PKCS#8 PEM (BEGIN PRIVATE KEY): {0}")]
    Pem(String),
    #[error(
        "the APNs auth key is not a P-256 ECDSA PKCS#8 key with its public key: {0} \
         (Apple's .p8 files are; re-export with `openssl pkcs8 -topk8 -nocrypt`)"
    )]
    Key(String),
    #[error("signing the provider token failed")]
    Sign,
}

/// The team's signing key and the identifiers that go into every token.
pub(crate) struct SigningKey {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    key_id: String,
    team_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parses a .p8 (PKCS#8 PEM) P-256 key.
    pub(crate) fn from_pem(pem: &[u8], key_id: &str, team_id: &str) -> Result<Self, JwtError> {
        let der =
            PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| JwtError::Pem(e.to_string()))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| JwtError::Key(e.to_string()))?;
        Ok(Self {
            key,
            rng,
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
        })
    }

    /// Signs a token issued at `iat` (UNIX seconds):
    /// header `{"alg":"ES256","kid":KEY_ID}`, claims `{"iss":TEAM_ID,"iat":IAT}`.
    pub(crate) fn sign(&self, iat: u64) -> Result<String, JwtError> {
        let header = serde_json::json!({ "alg": "ES256", "kid": self.key_id });
        let claims = serde_json::json!({ "iss": self.team_id, "iat": iat });
        let jwt = crate::jws::es256(&self.key, &self.rng, &header, &claims)
            .map_err(|_| JwtError::Sign)?;
        Ok(jwt)
    }
}

/// The youngest and oldest ages Apple allows a token to be replaced at.
pub const MIN_REFRESH: Duration = Duration::from_secs(20 * 60);
pub const MAX_REFRESH: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Clone)]
struct Cached {
    jwt: Jwt,
    iat: u64,
}

/// A provider token and its `authorization` header value, built once per
/// token rather than per push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Jwt {
    /// The signed token.
    pub token: Arc<str>,
    /// `bearer <token>`.
    pub header: HeaderValue,
}

impl Jwt {
    fn new(token: String) -> Result<Self, JwtError> {
        // A JWT is base64url and dots: always a valid header value.
        let header =
            HeaderValue::from_str(&format!("bearer {token}")).map_err(|_| JwtError::Sign)?;
        Ok(Jwt {
            token: token.into(),
            header,
        })
    }
}

/// The current provider token of one app, shared by all its pushes.
#[derive(Debug)]
pub(crate) struct ProviderToken {
    key: SigningKey,
    refresh_after: Duration,
    clock: Arc<dyn Clock>,
    cached: RwLock<Option<Cached>>,
}

impl ProviderToken {
    pub(crate) fn new(key: SigningKey, refresh_after: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            key,
            refresh_after,
            clock,
            cached: RwLock::new(None),
        }
    }

    /// The token to send now: the cached one while it is younger than
    /// `refresh_after`, else a new one.
    pub(crate) fn current(&self) -> Result<Jwt, JwtError> {
        let now = self.clock.unix_secs();
        if let Some(jwt) = self.fresh(now) {
            return Ok(jwt);
        }
        let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
        // Another push may have replaced it while we waited for the lock.
        if let Some(c) = cached.as_ref().filter(|c| self.is_fresh(c, now)) {
            return Ok(c.jwt.clone());
        }
        let jwt = Jwt::new(self.key.sign(now)?)?;
        tracing::debug!(key_id = %self.key.key_id, iat = now, "signed a new APNs provider token");
        *cached = Some(Cached {
            jwt: jwt.clone(),
            iat: now,
        });
        Ok(jwt)
    }

    /// APNs said `ExpiredProviderToken` for `rejected`: forget it, unless a
    /// newer token already replaced it.
    pub(crate) fn invalidate(&self, rejected: &str) {
        let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
        if cached.as_ref().is_some_and(|c| &*c.jwt.token == rejected) {
            *cached = None;
        }
    }

    fn fresh(&self, now: u64) -> Option<Jwt> {
        let cached = self.cached.read().unwrap_or_else(|e| e.into_inner());
        cached
            .as_ref()
            .filter(|c| self.is_fresh(c, now))
            .map(|c| c.jwt.clone())
    }

    fn is_fresh(&self, cached: &Cached, now: u64) -> bool {
        // A clock that went backwards makes `iat` lie in the future, which
        // APNs refuses: sign anew rather than keep it.
        now >= cached.iat && now - cached.iat < self.refresh_after.as_secs()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, KeyPair, UnparsedPublicKey};

    /// A fresh P-256 key as a .p8 PEM, the way Apple hands them out.
    pub(crate) fn test_p8() -> String {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn token_is_a_valid_es256_jwt() {
        let pem = test_p8();
        let key = SigningKey::from_pem(pem.as_bytes(), "KEY1234567", "TEAM123456").unwrap();
        let jwt = key.sign(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode(parts[0]),
            serde_json::json!({"alg": "ES256", "kid": "KEY1234567"})
        );
        assert_eq!(
            decode(parts[1]),
            serde_json::json!({"iss": "TEAM123456", "iat": 1_700_000_000u64})
        );
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(sig.len(), 64, "raw r||s, not DER");
        let public = key.key.public_key().as_ref().to_vec();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("signature verifies");
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(matches!(
            SigningKey::from_pem(b"not pem", "k", "t"),
            Err(JwtError::Pem(_))
        ));
        // Right PEM label, wrong content.
        let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            SigningKey::from_pem(junk.as_bytes(), "k", "t"),
            Err(JwtError::Key(_))
        ));
    }

    #[test]
    fn token_is_reused_until_its_age_limit() {
        let clock = Arc::new(ManualClock::new());
        let key = SigningKey::from_pem(test_p8().as_bytes(), "k", "t").unwrap();
        let tokens = ProviderToken::new(key, Duration::from_secs(50 * 60), clock.clone());
        let first = tokens.current().unwrap();
        clock.advance(Duration::from_secs(49 * 60 + 59));
        assert_eq!(tokens.current().unwrap(), first, "reused before 50 min");
        clock.advance(Duration::from_secs(1));
        let second = tokens.current().unwrap();
        assert_ne!(second, first, "replaced at 50 min");
        assert_eq!(tokens.current().unwrap(), second);
    }

    #[test]
    fn clock_going_back_signs_anew() {
        let clock = Arc::new(ManualClock::new());
        let key = SigningKey::from_pem(test_p8().as_bytes(), "k", "t").unwrap();
        let tokens = ProviderToken::new(key, Duration::from_secs(3000), clock.clone());
        let first = tokens.current().unwrap();
        clock.set(clock.now() - Duration::from_secs(120));
        assert_ne!(tokens.current().unwrap(), first);
    }

    #[test]
    fn invalidate_only_drops_the_rejected_token() {
        let clock = Arc::new(ManualClock::new());
        let key = SigningKey::from_pem(test_p8().as_bytes(), "k", "t").unwrap();
        let tokens = ProviderToken::new(key, Duration::from_secs(3000), clock.clone());
        let first = tokens.current().unwrap();
        tokens.invalidate("some older token");
        assert_eq!(
            tokens.current().unwrap(),
            first,
            "unrelated rejection kept it"
        );
        tokens.invalidate(&first.token);
        clock.advance(Duration::from_secs(1)); // a new iat, so a new token
        let second = tokens.current().unwrap();
        assert_ne!(second, first);
        // A late rejection of the first token must not drop the second.
        tokens.invalidate(&first.token);
        assert_eq!(tokens.current().unwrap(), second);
    }
}
