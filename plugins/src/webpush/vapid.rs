//! VAPID (RFC 8292): how a push service knows which application server
//! sends a push, so that a subscription made for one server's key cannot be
//! used by another.
//!
//! Each request carries `Authorization: vapid t=<JWT>, k=<public key>`. The
//! JWT is ES256, its claims `aud` (the origin of the endpoint), `exp` (at
//! most 24 hours ahead; 12 here) and `sub` (the operator's contact, a
//! `mailto:` or `https:` URL). One token per audience serves every push to
//! that push service until half its lifetime is gone, so a busy origin costs
//! one signature every six hours.
//!
//! Signed with `ring`, as the APNs provider token is (`apns/jwt.rs`);
//! web-push-native's own VAPID feature is left off, since it pulls in an
//! RSA crate with a known timing flaw.
//!
//! The key pair comes from the configuration as the 32-byte private scalar
//! in base64url (what the usual `generate-vapid-keys` tools print, and what
//! [`generate_vapid_key`] returns) or as a PEM file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::HeaderValue;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use web_push_native::p256;

use super::subscription::decode_base64_any;
use crate::clock::Clock;

/// How long a VAPID token is valid (RFC 8292 allows at most 24 hours).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Audiences whose tokens are kept; past this, stale ones are dropped.
const MAX_CACHED_AUDIENCES: usize = 4096;

/// Why a VAPID key or token could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VapidError {
    /// The private key text is not base64.
    #[error("the VAPID private key is not base64url")]
    Base64,
    /// The private key is not a valid P-256 scalar of 32 bytes.
    #[error("the VAPID private key must be a P-256 private key of 32 bytes: {0}")]
    Key(String),
    /// A PEM file without a usable key.
    #[error(
        "the VAPID key file holds no P-256 private key (PKCS#8 `BEGIN PRIVATE KEY`, \
         SEC1 `BEGIN EC PRIVATE KEY`, or the base64url private key): {0}"
    )]
    Pem(String),
    /// The key file could not be read.
    #[error("cannot read the VAPID key file {path}: {why}")]
    Read {
        /// The file.
        path: String,
        /// The system's reason.
        why: String,
    },
    /// `vapid_subject` is neither a `mailto:` nor an `https:` URL.
    #[error("vapid_subject must be a mailto: or https: URL, not {0:?}")]
    Subject(String),
    /// The system's random number generator failed.
    #[error("no randomness for a VAPID key or signature")]
    Random,
    /// Signing failed.
    #[error("signing the VAPID token failed")]
    Sign,
}

/// The application server's VAPID key pair.
pub struct VapidKey {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    public_b64: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material; the public key is what identifies it.
        f.debug_struct("VapidKey")
            .field("public", &self.public_b64)
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// The key from its 32-byte private scalar in base64 (url-safe or
    /// standard, padded or not).
    pub fn from_base64(private: &str) -> Result<Self, VapidError> {
        let scalar = decode_base64_any(private.trim()).ok_or(VapidError::Base64)?;
        Self::from_scalar(&scalar)
    }

    /// The key from its raw 32-byte private scalar.
    pub fn from_scalar(scalar: &[u8]) -> Result<Self, VapidError> {
        if scalar.len() != 32 {
            return Err(VapidError::Key(format!("{} bytes", scalar.len())));
        }
        let secret = p256::SecretKey::from_slice(scalar)
            .map_err(|_| VapidError::Key("out of range".into()))?;
        let public = uncompressed(&secret.public_key());
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            scalar,
            &public,
            &rng,
        )
        .map_err(|e| VapidError::Key(e.to_string()))?;
        Ok(Self::with(key, rng))
    }

    /// The key from a PEM document: PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1
    /// (`BEGIN EC PRIVATE KEY`, what `openssl ecparam -genkey` writes).
    pub fn from_pem(pem: &[u8]) -> Result<Self, VapidError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| VapidError::Pem(e.to_string()))?;
        match der {
            PrivateKeyDer::Pkcs8(pkcs8) => {
                let rng = SystemRandom::new();
                let key = EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8.secret_pkcs8_der(),
                    &rng,
                )
                .map_err(|e| VapidError::Key(e.to_string()))?;
                Ok(Self::with(key, rng))
            }
            PrivateKeyDer::Sec1(sec1) => Self::from_scalar(sec1_scalar(sec1.secret_sec1_der())?),
            _ => Err(VapidError::Pem("not an EC key".into())),
        }
    }

    /// The key from a file: a PEM document, or the base64url private key
    /// alone (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, VapidError> {
        let bytes = std::fs::read(path).map_err(|e| VapidError::Read {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        if bytes.windows(10).any(|w| w == b"-----BEGIN") {
            return Self::from_pem(&bytes);
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| VapidError::Base64)?;
        Self::from_base64(text)
    }

    fn with(key: EcdsaKeyPair, rng: SystemRandom) -> Self {
        let public_b64 = URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
        Self {
            key,
            rng,
            public_b64,
        }
    }

    /// The public key, uncompressed, in unpadded base64url: the
    /// `applicationServerKey` a web client passes to `pushManager.subscribe`.
    pub fn public_key_base64(&self) -> &str {
        &self.public_b64
    }

    /// Signs a token for `aud`, expiring at `exp` (UNIX seconds).
    pub fn sign(&self, aud: &str, exp: u64, sub: &str) -> Result<String, VapidError> {
        let header = serde_json::json!({ "typ": "JWT", "alg": "ES256" });
        let claims = serde_json::json!({ "aud": aud, "exp": exp, "sub": sub });
        let jwt = crate::jws::es256(&self.key, &self.rng, &header, &claims)
            .map_err(|_| VapidError::Sign)?;
        Ok(jwt)
    }
}

/// The private scalar of a SEC1 `ECPrivateKey` of P-256: `SEQUENCE {
/// INTEGER 1, OCTET STRING (32 bytes), … }`, always short-form lengths at
/// this size.
fn sec1_scalar(der: &[u8]) -> Result<&[u8], VapidError> {
    const PREFIX: [u8; 5] = [0x02, 0x01, 0x01, 0x04, 0x20];
    match der {
        [0x30, len, rest @ ..] if *len < 0x80 && rest.len() >= 37 && rest[..5] == PREFIX => {
            Ok(&rest[5..37])
        }
        _ => Err(VapidError::Pem("not a P-256 EC PRIVATE KEY".into())),
    }
}

/// A public key as its 65-byte uncompressed encoding.
fn uncompressed(public: &p256::PublicKey) -> Vec<u8> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    public.to_encoded_point(false).as_bytes().to_vec()
}

/// Makes a new VAPID key pair: `(private, public)`, both unpadded
/// base64url (the private key the 32-byte scalar, the public key the
/// uncompressed point), for `nudge vapid generate`.
pub fn generate_vapid_key() -> Result<(String, String), VapidError> {
    let rng = SystemRandom::new();
    // A random 32-byte string is a valid scalar but with negligible
    // probability (zero, or not below the group order); try again then.
    for _ in 0..16 {
        let mut scalar = [0u8; 32];
        rng.fill(&mut scalar).map_err(|_| VapidError::Random)?;
        if let Ok(secret) = p256::SecretKey::from_slice(&scalar) {
            return Ok((
                URL_SAFE_NO_PAD.encode(scalar),
                URL_SAFE_NO_PAD.encode(uncompressed(&secret.public_key())),
            ));
        }
    }
    Err(VapidError::Random)
}

/// Checks a `sub` claim: a `mailto:` address or an `https:` URL.
pub fn check_subject(subject: &str) -> Result<(), VapidError> {
    let bad = || VapidError::Subject(subject.to_owned());
    let url = reqwest::Url::parse(subject).map_err(|_| bad())?;
    match url.scheme() {
        "mailto" if url.path().contains('@') => Ok(()),
        "https" if url.host_str().is_some() => Ok(()),
        _ => Err(bad()),
    }
}

#[derive(Debug, Clone)]
struct Cached {
    header: HeaderValue,
    exp: u64,
}

/// The `Authorization` headers of one application server, one cached per
/// audience.
#[derive(Debug)]
pub struct Vapid {
    key: VapidKey,
    subject: String,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Vapid {
    /// The signer for `key` with contact `subject` (checked).
    pub fn new(key: VapidKey, subject: &str, clock: Arc<dyn Clock>) -> Result<Self, VapidError> {
        check_subject(subject)?;
        Ok(Self {
            key,
            subject: subject.to_owned(),
            clock,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The key pair.
    pub fn key(&self) -> &VapidKey {
        &self.key
    }

    /// `vapid t=<jwt>, k=<public key>` for pushes to `origin`
    /// (`scheme://host[:port]`): the cached one while more than half its
    /// lifetime remains, else a new one.
    pub fn header(&self, origin: &str) -> Result<HeaderValue, VapidError> {
        let now = self.clock.unix_secs();
        let lifetime = TOKEN_LIFETIME.as_secs();
        let usable = |c: &Cached| {
            // A clock that went back leaves `exp` too far ahead, which a
            // push service may refuse: sign anew then as well.
            c.exp > now + lifetime / 2 && c.exp <= now + lifetime
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(origin).filter(|c| usable(c)) {
            return Ok(c.header.clone());
        }
        let exp = now + lifetime;
        let jwt = self.key.sign(origin, exp, &self.subject)?;
        // base64url, dots, and a fixed text: always a valid header value.
        let header = HeaderValue::from_str(&format!(
            "vapid t={jwt}, k={}",
            self.key.public_key_base64()
        ))
        .map_err(|_| VapidError::Sign)?;
        if cache.len() >= MAX_CACHED_AUDIENCES && !cache.contains_key(origin) {
            cache.retain(|_, c| usable(c));
            if cache.len() >= MAX_CACHED_AUDIENCES {
                cache.clear();
            }
        }
        cache.insert(
            origin.to_owned(),
            Cached {
                header: header.clone(),
                exp,
            },
        );
        Ok(header)
    }

    /// How many audiences have a token cached.
    pub fn cached_audiences(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    /// Splits `vapid t=…, k=…` and checks the signature against `k`.
    fn verify(header: &HeaderValue) -> (serde_json::Value, serde_json::Value, String) {
        let text = header.to_str().unwrap();
        let rest = text.strip_prefix("vapid t=").unwrap();
        let (jwt, k) = rest.split_once(", k=").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(sig.len(), 64, "raw r||s");
        let public = URL_SAFE_NO_PAD.decode(k).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("the VAPID signature verifies with k");
        (decode(parts[0]), decode(parts[1]), k.to_owned())
    }

    #[test]
    fn token_verifies_and_has_the_claims() {
        let (private, public) = generate_vapid_key().unwrap();
        let clock = Arc::new(ManualClock::new());
        let key = VapidKey::from_base64(&private).unwrap();
        assert_eq!(key.public_key_base64(), public);
        let vapid = Vapid::new(key, "mailto:ops@push.example", clock.clone()).unwrap();
        let header = vapid.header("https://push.example.net").unwrap();
        let (h, claims, k) = verify(&header);
        assert_eq!(h, serde_json::json!({"typ": "JWT", "alg": "ES256"}));
        assert_eq!(
            claims,
            serde_json::json!({
                "aud": "https://push.example.net",
                "exp": clock.unix_secs() + 12 * 3600,
                "sub": "mailto:ops@push.example",
            })
        );
        assert_eq!(k, public);
    }

    #[test]
    fn known_key_gives_its_public_key() {
        // A key pair made with `openssl ecparam -name prime256v1 -genkey`,
        // its scalar and point (`openssl ec -text`) in base64url.
        const PRIVATE: &str = "1QqhmWPVkGODQg9UvAfQxhFdNkOmtLAmRMCp2VXuhDY";
        const PUBLIC: &str = "BBUWaOC4Oa_N0lOYQYKeiuwAtS7Tk8UgNVXwd978qEdufc8U9JNc-qoaI8D2lZiE9MsTiUYvbM7SINfuZLp3lP8";
        let key = VapidKey::from_base64(PRIVATE).unwrap();
        assert_eq!(key.public_key_base64(), PUBLIC);
        // Padded and standard base64 of the same scalar give the same key.
        let scalar = URL_SAFE_NO_PAD.decode(PRIVATE).unwrap();
        let std = base64::engine::general_purpose::STANDARD.encode(&scalar);
        assert_eq!(
            VapidKey::from_base64(&std).unwrap().public_key_base64(),
            PUBLIC
        );
    }

    #[test]
    fn pem_keys_load() {
        let pem = crate::apns::jwt::tests::test_p8();
        let key = VapidKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(key.public_key_base64())
                .unwrap()
                .len(),
            65
        );
        // SEC1, as `openssl ecparam -name prime256v1 -genkey -noout` writes:
        // the same scalar as the base64 form gives the same public key.
        let (private, public) = generate_vapid_key().unwrap();
        let scalar = URL_SAFE_NO_PAD.decode(&private).unwrap();
        let mut sec1 = vec![0x30, 0x25, 0x02, 0x01, 0x01, 0x04, 0x20];
        sec1.extend_from_slice(&scalar);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&sec1);
        let pem = format!("-----BEGIN EC PRIVATE KEY-----\n{b64}\n-----END EC PRIVATE KEY-----\n");
        assert_eq!(
            VapidKey::from_pem(pem.as_bytes())
                .unwrap()
                .public_key_base64(),
            public
        );
    }

    #[test]
    fn key_files_hold_pem_or_base64() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = generate_vapid_key().unwrap();
        let b64 = dir.path().join("vapid.key");
        std::fs::write(&b64, format!("{private}\n")).unwrap();
        assert_eq!(
            VapidKey::from_file(&b64).unwrap().public_key_base64(),
            public
        );
        let pem = dir.path().join("vapid.pem");
        std::fs::write(&pem, crate::apns::jwt::tests::test_p8()).unwrap();
        assert!(VapidKey::from_file(&pem).is_ok());
        let missing = dir.path().join("none");
        assert!(matches!(
            VapidKey::from_file(&missing),
            Err(VapidError::Read { .. })
        ));
    }

    #[test]
    fn bad_keys_and_subjects_are_refused() {
        assert_eq!(VapidKey::from_base64("!!").err(), Some(VapidError::Base64));
        assert!(matches!(
            VapidKey::from_base64(&URL_SAFE_NO_PAD.encode([1u8; 31])),
            Err(VapidError::Key(_))
        ));
        // Zero and the all-ones string are not valid scalars.
        for bad in [[0u8; 32], [0xff; 32]] {
            assert!(matches!(
                VapidKey::from_base64(&URL_SAFE_NO_PAD.encode(bad)),
                Err(VapidError::Key(_))
            ));
        }
        assert!(matches!(
            VapidKey::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(VapidError::Key(_))
        ));
        assert!(matches!(
            VapidKey::from_pem(b"nothing"),
            Err(VapidError::Pem(_))
        ));
        for ok in ["mailto:ops@push.example", "https://push.example/contact"] {
            assert_eq!(check_subject(ok), Ok(()), "{ok}");
        }
        for bad in ["", "ops@push.example", "mailto:", "http://push.example"] {
            assert!(check_subject(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_cached_per_audience_until_half_their_life() {
        let (private, _) = generate_vapid_key().unwrap();
        let clock = Arc::new(ManualClock::new());
        let vapid = Vapid::new(
            VapidKey::from_base64(&private).unwrap(),
            "https://push.example/contact",
            clock.clone(),
        )
        .unwrap();
        let a = vapid.header("https://a.example").unwrap();
        let b = vapid.header("https://b.example:8443").unwrap();
        assert_ne!(a, b);
        assert_eq!(verify(&b).1["aud"], "https://b.example:8443");
        assert_eq!(vapid.cached_audiences(), 2);
        clock.advance(Duration::from_secs(6 * 3600 - 1));
        assert_eq!(vapid.header("https://a.example").unwrap(), a, "reused");
        clock.advance(Duration::from_secs(1));
        let a2 = vapid.header("https://a.example").unwrap();
        assert_ne!(a2, a, "replaced at half its lifetime");
        assert_eq!(verify(&a2).1["exp"], clock.unix_secs() + 12 * 3600);
        assert_eq!(vapid.header("https://a.example").unwrap(), a2);
        // A clock set back signs anew rather than send an `exp` more than
        // 12 hours ahead.
        clock.set(clock.now() - Duration::from_secs(3600));
        assert_ne!(vapid.header("https://a.example").unwrap(), a2);
    }

    #[test]
    fn the_cache_is_bounded() {
        let (private, _) = generate_vapid_key().unwrap();
        let clock = Arc::new(ManualClock::new());
        let vapid = Vapid::new(
            VapidKey::from_base64(&private).unwrap(),
            "mailto:a@b.example",
            clock,
        )
        .unwrap();
        for i in 0..MAX_CACHED_AUDIENCES + 10 {
            vapid.header(&format!("https://h{i}.example")).unwrap();
        }
        assert!(vapid.cached_audiences() <= MAX_CACHED_AUDIENCES);
    }
}
