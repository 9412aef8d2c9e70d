//! The Web Push endpoint: a stand-in for a browser's push service (RFC 8030
//! delivery, RFC 8291 `aes128gcm` encryption, RFC 8292 VAPID), so that
//! Nudge's Web Push backend can be tested end to end without a browser or a
//! vendor's push service.
//!
//! # Subscriptions
//! A browser subscribes through its push service and hands the application
//! an endpoint URL and two keys. Here [`crate::TestApp::webpush_subscribe`]
//! (or `POST /api/webpush/subscriptions` on the control port) plays both
//! parts: it makes a P-256 key pair and a 16-byte auth secret, keeps the
//! private key, and returns a [`WebPushSubscription`]: the endpoint
//! `https://127.0.0.1:PORT/webpush/ID` on the test-app's own Web Push TLS
//! port (HTTP/2 and HTTP/1.1 by ALPN; the APNs port offers HTTP/2 alone, as
//! Apple's does, so it cannot carry this endpoint too), the keys as
//! unpadded base64url, and the device token Nudge stores for it:
//!
//! `<endpoint>#p256dh=<base64url>&auth=<base64url>`
//!
//! Pushes are recorded under that whole token, so
//! [`crate::TestApp::wait_for_push`] takes the subscription's `token`.
//! [`crate::TestApp::webpush_unsubscribe`] ends a subscription: later pushes
//! to it get 410, as from a browser that dropped it.
//! [`crate::TestApp::webpush_subscribe_with`] takes a name (see Faults) and
//! the application server key the subscription is for, as a browser's
//! `pushManager.subscribe({applicationServerKey})` does.
//!
//! # Checks on `POST /webpush/{id}`, in order (the first failure answers)
//! 1. path `/webpush/{id}` (404 `NotFound`) and method `POST` (405
//!    `MethodNotAllowed`); a subscription with that id (404 `NotFound`; an
//!    ended one: 410 `Gone`).
//! 2. `TTL`: present (400 `MissingTtl`), a non-negative integer (400
//!    `BadTtl`). `Urgency`, when sent: `very-low`, `low`, `normal` or `high`
//!    (400 `BadUrgency`). `Topic`, when sent: at most 32 characters of the
//!    base64url alphabet (400 `BadTopic`).
//! 3. `Content-Encoding`: present (400 `MissingContentEncoding`) and
//!    `aes128gcm` (415 `UnsupportedContentEncoding`; the older draft's
//!    `aesgcm` too).
//! 4. `Authorization: vapid t=<JWT>, k=<key>`: present (401
//!    `MissingAuthorization`), in that scheme (401 `BadAuthorization`), `k`
//!    an uncompressed P-256 point in base64url (401 `BadVapidKey`), `t` a JWT
//!    whose ES256 signature verifies with `k` (401 `BadVapidToken`,
//!    `BadVapidSignature`); its claims: `aud` the endpoint's origin (403
//!    `BadAudience`), `exp` in the future (403 `Expired`) and at most 24 hours
//!    ahead (403 `ExpiryTooFar`; missing: 403 `MissingExpiry`), `sub` a
//!    `mailto:` or `https:` URI (403 `BadSubject`); for a subscription made
//!    for an application server key ([`SubscribeOptions`]), `k` is that key
//!    (403 `VapidKeyMismatch`, as a browser's push service answers).
//! 5. the body: at most 4096 bytes (413 `PayloadTooLarge`), and it decrypts
//!    with the subscription's private key and auth secret (400
//!    `DecryptionFailed`). A push without a body is legal in RFC 8030 but
//!    Nudge always sends one, so it fails here too.
//! 6. the subscription's fault, if any (see below).
//!
//! Success is `201 Created` with a `Location` (the message's URL) and the
//! `TTL` echoed. Errors carry `{"code", "reason", "message"}`, the message
//! saying what was wrong. Every request to a subscription is recorded
//! ([`crate::RecordedPush`], provider [`crate::Provider::WebPush`]) with the
//! decrypted plaintext as its payload (JSON, or a JSON string when it is not
//! JSON), the headers `ttl`, `urgency`, `topic` and the VAPID claims
//! `vapid-aud`, `vapid-sub`, and [`crate::AuthMethod::Vapid`] with `k`.
//!
//! # Faults
//! Set per token (the subscription's whole token string) or for the whole
//! mock ([`crate::Provider::WebPush`]), or by name: a subscription made with
//! [`crate::TestApp::webpush_subscribe_named`] gets an id that starts with
//! the name, and the name prefixes of [`crate::faults`] apply to that id
//! (`dead`, `badd`, `c001`*N*, `fa11`*N*, `de1a`*N*).
//!
//! | fault | answer |
//! |---|---|
//! | `Dead` | 410 `Gone` (the browser unsubscribed) |
//! | `BadToken` | 404 `NotFound` (no such subscription) |
//! | `Throttle` | 429 `TooManyRequests` with `Retry-After` |
//! | `FailTimes` | 503 `ServiceUnavailable`, then accepted |
//! | `FailUntil` | 503 `ServiceUnavailable` until then |
//! | `Delay` | the answer comes late |
//! | `NotForTopic` | 403 `Forbidden` (the subscription was made for another VAPID key) |
//! | `Respond` | the status and reason given |

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use web_push_native::p256;
use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;

use crate::faults::Action;
use crate::recorder::{AuthMethod, NewPush, Provider};
use crate::stats::inc;
use crate::{Shared, unix_now};

/// The largest encrypted body accepted (RFC 8030's minimum for push
/// services, and what browsers' services take).
pub const MAX_BODY: usize = 4096;
/// Bodies larger than this are not read at all; they are too large anyway.
const READ_LIMIT: usize = 1 << 20;
/// The longest a VAPID token may be valid ahead of the request (RFC 8292).
const MAX_EXPIRY_SECS: u64 = 24 * 3600;
/// Clock skew allowed on `exp`'s upper bound.
const EXP_SKEW_SECS: u64 = 60;
/// The longest subscription name accepted.
const MAX_NAME: usize = 64;
/// RFC 8030's limit on a `Topic`.
const MAX_TOPIC: usize = 32;
/// The path every endpoint starts with.
pub(crate) const PATH_PREFIX: &str = "/webpush/";

/// A subscription as a browser would hand it to an application, plus the
/// device token Nudge stores for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebPushSubscription {
    /// The push endpoint (`https://127.0.0.1:PORT/webpush/ID`).
    pub endpoint: String,
    /// The subscription's public key: an uncompressed P-256 point, base64url
    /// without padding.
    pub p256dh: String,
    /// The 16-byte auth secret, base64url without padding.
    pub auth: String,
    /// `<endpoint>#p256dh=<p256dh>&auth=<auth>`: the device token.
    pub token: String,
}

/// Why a subscription could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebPushError {
    /// A name must be 1 to 64 characters of `A-Z a-z 0-9 - _`.
    #[error("bad subscription name {0:?}: 1 to 64 characters of A-Z a-z 0-9 - _")]
    BadName(String),
    /// An application server key must be a 65-byte uncompressed P-256
    /// point in base64url or base64.
    #[error("bad application server key {0:?}: a 65-byte uncompressed P-256 point in base64url")]
    BadApplicationServerKey(String),
}

/// How to make a subscription; the default is a plain one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeOptions {
    /// Starts the subscription's id (`NAME-` then random hex), so that a
    /// fault prefix in it applies; 1 to 64 characters of
    /// `A-Z a-z 0-9 - _`. Without one the id is random hex starting with
    /// `0`, which matches no prefix.
    pub name: Option<String>,
    /// The VAPID public key the subscription is for, as a browser's
    /// `applicationServerKey` (base64url or base64, a 65-byte uncompressed
    /// P-256 point). Pushes signed with another key are refused with 403
    /// `VapidKeyMismatch`. Without one any key is accepted.
    pub application_server_key: Option<String>,
}

/// What the mock keeps about one subscription.
struct Subscription {
    secret: p256::SecretKey,
    auth: [u8; 16],
    token: String,
    application_server_key: Option<Vec<u8>>,
}

#[derive(Default)]
struct Inner {
    live: HashMap<String, Arc<Subscription>>,
    /// Ended subscriptions: id to token.
    gone: HashMap<String, String>,
}

/// The subscriptions of one test-app.
#[derive(Default)]
pub(crate) struct WebPushState {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for WebPushState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushState").finish_non_exhaustive()
    }
}

/// Whether `name` may start a subscription id (it becomes part of a path).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A fresh P-256 private key.
fn new_secret_key() -> p256::SecretKey {
    loop {
        // Fails only for zero or a value at or above the group order
        // (probability about 2^-32); draw again then.
        if let Ok(key) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            return key;
        }
    }
}

impl WebPushState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a plain subscription under `base_url` (the Web Push port's
    /// URL): a random id that matches no fault prefix, any VAPID key.
    pub fn subscribe_plain(&self, base_url: &str) -> WebPushSubscription {
        let mut random: [u8; 16] = rand::random();
        random[0] &= 0x0f;
        self.insert(base_url, hex::encode(random), None)
    }

    /// Makes a subscription under `base_url` (the Web Push port's URL), as
    /// `options` say.
    pub fn subscribe(
        &self,
        base_url: &str,
        options: &SubscribeOptions,
    ) -> Result<WebPushSubscription, WebPushError> {
        let key = match &options.application_server_key {
            None => None,
            Some(k) => Some(
                decode_key(k)
                    .filter(|key| key.len() == 65 && key[0] == 0x04)
                    .ok_or_else(|| WebPushError::BadApplicationServerKey(k.clone()))?,
            ),
        };
        let mut random: [u8; 16] = rand::random();
        let id = match &options.name {
            Some(n) if !valid_name(n) => return Err(WebPushError::BadName(n.clone())),
            Some(n) => format!("{n}-{}", hex::encode(random)),
            None => {
                random[0] &= 0x0f;
                hex::encode(random)
            }
        };
        Ok(self.insert(base_url, id, key))
    }

    fn insert(
        &self,
        base_url: &str,
        id: String,
        application_server_key: Option<Vec<u8>>,
    ) -> WebPushSubscription {
        let secret = new_secret_key();
        let public = secret.public_key().to_encoded_point(false);
        let auth: [u8; 16] = rand::random();
        let endpoint = format!("{base_url}{PATH_PREFIX}{id}");
        let p256dh = URL_SAFE_NO_PAD.encode(public.as_bytes());
        let auth_b64 = URL_SAFE_NO_PAD.encode(auth);
        let token = format!("{endpoint}#p256dh={p256dh}&auth={auth_b64}");
        self.lock().live.insert(
            id,
            Arc::new(Subscription {
                secret,
                auth,
                token: token.clone(),
                application_server_key,
            }),
        );
        WebPushSubscription {
            endpoint,
            p256dh,
            auth: auth_b64,
            token,
        }
    }

    /// Ends the subscription whose id, endpoint or token is given; later
    /// pushes to it get 410. False when there was no such live subscription.
    pub fn unsubscribe(&self, id_endpoint_or_token: &str) -> bool {
        let before_fragment = id_endpoint_or_token
            .split('#')
            .next()
            .unwrap_or(id_endpoint_or_token);
        let id = before_fragment
            .rsplit_once(PATH_PREFIX)
            .map_or(before_fragment, |(_, id)| id);
        let mut inner = self.lock();
        match inner.live.remove(id) {
            Some(sub) => {
                inner.gone.insert(id.to_owned(), sub.token.clone());
                true
            }
            None => false,
        }
    }
}

/// Why a push was refused: the status, a short reason and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Rejection {
    #[error("no such subscription")]
    NotFound,
    #[error("method {0} not allowed; push with POST")]
    MethodNotAllowed(String),
    #[error("the subscription has ended")]
    Gone,
    #[error("the TTL header is required (RFC 8030)")]
    MissingTtl,
    #[error("TTL {0:?} is not a non-negative integer")]
    BadTtl(String),
    #[error("Urgency {0:?} is not one of very-low, low, normal, high")]
    BadUrgency(String),
    #[error("Topic {0:?} is not at most 32 characters of the base64url alphabet")]
    BadTopic(String),
    #[error("the Content-Encoding header is required (aes128gcm, RFC 8291)")]
    MissingContentEncoding,
    #[error("Content-Encoding {0:?} is not supported; use aes128gcm (RFC 8291)")]
    UnsupportedContentEncoding(String),
    #[error("the Authorization header is required (vapid t=<JWT>, k=<key>, RFC 8292)")]
    MissingAuthorization,
    #[error("Authorization is not `vapid t=<JWT>, k=<key>`: {0}")]
    BadAuthorization(&'static str),
    #[error("the VAPID key k is not an uncompressed P-256 point in base64url")]
    BadVapidKey,
    #[error("the VAPID token t is not a JWT: {0}")]
    BadVapidToken(String),
    #[error("the VAPID token's signature does not verify with k: {0}")]
    BadVapidSignature(String),
    #[error("the VAPID aud {found:?} is not this endpoint's origin {expected:?}")]
    BadAudience {
        expected: String,
        found: Option<String>,
    },
    #[error("the VAPID token has no integer exp")]
    MissingExpiry,
    #[error("the VAPID token expired at {exp} (now {now})")]
    Expired { exp: i64, now: u64 },
    #[error("the VAPID exp {exp} is more than 24 hours after now ({now})")]
    ExpiryTooFar { exp: i64, now: u64 },
    #[error("the VAPID sub {0:?} is not a mailto: or https: URI")]
    BadSubject(Option<String>),
    #[error("the body is larger than {MAX_BODY} bytes")]
    PayloadTooLarge,
    #[error("the body does not decrypt with the subscription's keys: {0}")]
    DecryptionFailed(String),
    #[error("too many pushes for this subscription; retry after {0} s")]
    TooManyRequests(u64),
    #[error("the push service is unavailable")]
    ServiceUnavailable,
    #[error("the subscription was made for another application server key")]
    Forbidden,
    #[error("the VAPID key k is not the application server key the subscription was made for")]
    VapidKeyMismatch,
    #[error("{reason}")]
    Respond { status: u16, reason: String },
}

impl Rejection {
    fn status(&self) -> u16 {
        match self {
            Rejection::NotFound => 404,
            Rejection::MethodNotAllowed(_) => 405,
            Rejection::Gone => 410,
            Rejection::MissingTtl
            | Rejection::BadTtl(_)
            | Rejection::BadUrgency(_)
            | Rejection::BadTopic(_)
            | Rejection::MissingContentEncoding
            | Rejection::DecryptionFailed(_) => 400,
            Rejection::UnsupportedContentEncoding(_) => 415,
            Rejection::MissingAuthorization
            | Rejection::BadAuthorization(_)
            | Rejection::BadVapidKey
            | Rejection::BadVapidToken(_)
            | Rejection::BadVapidSignature(_) => 401,
            Rejection::BadAudience { .. }
            | Rejection::MissingExpiry
            | Rejection::Expired { .. }
            | Rejection::ExpiryTooFar { .. }
            | Rejection::BadSubject(_)
            | Rejection::Forbidden
            | Rejection::VapidKeyMismatch => 403,
            Rejection::PayloadTooLarge => 413,
            Rejection::TooManyRequests(_) => 429,
            Rejection::ServiceUnavailable => 503,
            Rejection::Respond { status, .. } => *status,
        }
    }

    /// The short name recorded as the push's `reason` and counted in the
    /// stats as `webpush/<reason>`.
    fn reason(&self) -> &str {
        match self {
            Rejection::NotFound => "NotFound",
            Rejection::MethodNotAllowed(_) => "MethodNotAllowed",
            Rejection::Gone => "Gone",
            Rejection::MissingTtl => "MissingTtl",
            Rejection::BadTtl(_) => "BadTtl",
            Rejection::BadUrgency(_) => "BadUrgency",
            Rejection::BadTopic(_) => "BadTopic",
            Rejection::MissingContentEncoding => "MissingContentEncoding",
            Rejection::UnsupportedContentEncoding(_) => "UnsupportedContentEncoding",
            Rejection::MissingAuthorization => "MissingAuthorization",
            Rejection::BadAuthorization(_) => "BadAuthorization",
            Rejection::BadVapidKey => "BadVapidKey",
            Rejection::BadVapidToken(_) => "BadVapidToken",
            Rejection::BadVapidSignature(_) => "BadVapidSignature",
            Rejection::BadAudience { .. } => "BadAudience",
            Rejection::MissingExpiry => "MissingExpiry",
            Rejection::Expired { .. } => "Expired",
            Rejection::ExpiryTooFar { .. } => "ExpiryTooFar",
            Rejection::BadSubject(_) => "BadSubject",
            Rejection::PayloadTooLarge => "PayloadTooLarge",
            Rejection::DecryptionFailed(_) => "DecryptionFailed",
            Rejection::TooManyRequests(_) => "TooManyRequests",
            Rejection::ServiceUnavailable => "ServiceUnavailable",
            Rejection::Forbidden => "Forbidden",
            Rejection::VapidKeyMismatch => "VapidKeyMismatch",
            Rejection::Respond { reason, .. } => reason,
        }
    }

    fn response(&self) -> Response<Full<Bytes>> {
        let status = self.status();
        let body = json!({
            "code": status,
            "reason": self.reason(),
            "message": self.to_string(),
        });
        let mut b = Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/json");
        if let Rejection::TooManyRequests(secs) = self {
            b = b.header("retry-after", secs.to_string());
        }
        if status == 401 {
            b = b.header("www-authenticate", "vapid");
        }
        b.body(Full::new(Bytes::from(body.to_string())))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

/// A VAPID header that verified: its claims and key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vapid {
    aud: String,
    sub: String,
    /// `k` as sent.
    k: String,
    /// `k` decoded: the uncompressed P-256 point.
    key: Vec<u8>,
}

/// Decodes base64url with or without padding.
fn b64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// Splits `vapid t=…, k=…` into `t` and `k` (any order, optional quotes).
fn vapid_params(value: &str) -> Result<(&str, &str), Rejection> {
    let value = value.trim();
    let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("vapid") {
        return Err(Rejection::BadAuthorization(
            "the scheme is not vapid (the older WebPush scheme with Crypto-Key is not accepted)",
        ));
    }
    let (mut t, mut k) = (None, None);
    for param in params.split(',') {
        let Some((name, v)) = param.split_once('=') else {
            if param.trim().is_empty() {
                continue;
            }
            return Err(Rejection::BadAuthorization("a parameter is not name=value"));
        };
        let v = v.trim().trim_matches('"');
        match name.trim().to_ascii_lowercase().as_str() {
            "t" => t = Some(v),
            "k" => k = Some(v),
            _ => {}
        }
    }
    match (t, k) {
        (Some(t), Some(k)) => Ok((t, k)),
        (None, _) => Err(Rejection::BadAuthorization("no t parameter")),
        (_, None) => Err(Rejection::BadAuthorization("no k parameter")),
    }
}

/// Checks the `Authorization` header for a push to an endpoint of
/// `origin`; on success the claims and `k` as sent.
fn check_vapid(
    authorization: Option<&str>,
    origin: &str,
    now: u64,
) -> Result<Vapid, (Rejection, Option<String>)> {
    let value = authorization.ok_or((Rejection::MissingAuthorization, None))?;
    let (t, k) = vapid_params(value).map_err(|r| (r, None))?;
    let key_sent = Some(k.to_owned());
    let fail = |r: Rejection| (r, key_sent.clone());
    let key = b64url(k)
        .filter(|key| key.len() == 65 && key[0] == 0x04)
        .ok_or_else(|| fail(Rejection::BadVapidKey))?;
    let parsed = crate::jwt::parse(t).map_err(|e| fail(Rejection::BadVapidToken(e.to_string())))?;
    parsed
        .verify_es256(&key)
        .map_err(|e| fail(Rejection::BadVapidSignature(e.to_string())))?;
    let aud = parsed.claim_str("aud");
    if aud != Some(origin) {
        return Err(fail(Rejection::BadAudience {
            expected: origin.to_owned(),
            found: aud.map(str::to_owned),
        }));
    }
    let exp = parsed
        .claim_i64("exp")
        .ok_or_else(|| fail(Rejection::MissingExpiry))?;
    if u64::try_from(exp).map_or(true, |e| e <= now) {
        return Err(fail(Rejection::Expired { exp, now }));
    }
    if u64::try_from(exp).is_ok_and(|e| e > now + MAX_EXPIRY_SECS + EXP_SKEW_SECS) {
        return Err(fail(Rejection::ExpiryTooFar { exp, now }));
    }
    let sub = parsed.claim_str("sub");
    match sub {
        Some(s) if s.starts_with("mailto:") || s.starts_with("https:") => Ok(Vapid {
            aud: origin.to_owned(),
            sub: s.to_owned(),
            k: k.to_owned(),
            key,
        }),
        other => Err(fail(Rejection::BadSubject(other.map(str::to_owned)))),
    }
}

/// Checks `TTL`, `Urgency`, `Topic` and `Content-Encoding`.
fn check_headers(h: &BTreeMap<String, String>, encoding: Option<&str>) -> Result<(), Rejection> {
    let ttl = h.get("ttl").ok_or(Rejection::MissingTtl)?;
    if ttl.trim().parse::<u64>().is_err() {
        return Err(Rejection::BadTtl(ttl.clone()));
    }
    if let Some(u) = h.get("urgency")
        && !matches!(u.as_str(), "very-low" | "low" | "normal" | "high")
    {
        return Err(Rejection::BadUrgency(u.clone()));
    }
    if let Some(t) = h.get("topic")
        && (t.is_empty()
            || t.len() > MAX_TOPIC
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err(Rejection::BadTopic(t.clone()));
    }
    match encoding {
        None => Err(Rejection::MissingContentEncoding),
        Some(e) if e.trim().eq_ignore_ascii_case("aes128gcm") => Ok(()),
        Some(e) => Err(Rejection::UnsupportedContentEncoding(e.to_owned())),
    }
}

/// The `aes128gcm` header: salt (16), record size (4), key id length (1).
const HEADER_LEN: usize = 21;
/// The smallest record size RFC 8188 allows (a 16-byte tag, a delimiter
/// and one byte).
const MIN_RECORD_SIZE: u32 = 18;
/// RFC 8291: the key id is the sender's uncompressed P-256 public key.
const KEY_ID_LEN: u8 = 65;

/// Decrypts an `aes128gcm` body for `sub`. The header is checked here
/// first: the decryption library splits the records by the header's record
/// size without checking it, and a size of 0 would make it panic.
fn decrypt(sub: &Subscription, body: &[u8]) -> Result<Vec<u8>, Rejection> {
    let fail = |why: &str| Rejection::DecryptionFailed(why.to_owned());
    let header = body
        .get(..HEADER_LEN)
        .ok_or_else(|| fail("shorter than the aes128gcm header"))?;
    let record_size = u32::from_be_bytes([header[16], header[17], header[18], header[19]]);
    if record_size < MIN_RECORD_SIZE {
        return Err(fail("record size below 18 (RFC 8188)"));
    }
    if header[20] != KEY_ID_LEN {
        return Err(fail(
            "the key id is not a 65-byte P-256 public key (RFC 8291)",
        ));
    }
    // At least one record: the 16-byte tag and the delimiter. The library
    // reads no record at all as an empty message.
    if body.len() < HEADER_LEN + usize::from(KEY_ID_LEN) + 17 {
        return Err(fail("no record after the header"));
    }
    let auth = web_push_native::Auth::from(sub.auth);
    web_push_native::decrypt(body.to_vec(), &sub.secret, &auth)
        .map_err(|e| Rejection::DecryptionFailed(e.to_string()))
}

/// The plaintext as recorded: JSON when it is JSON, else a JSON string.
fn payload_value(plain: &[u8]) -> Value {
    serde_json::from_slice(plain)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(plain).into_owned()))
}

/// The request as far as it was understood, for recording.
struct Seen {
    headers: BTreeMap<String, String>,
    payload: Value,
    auth: AuthMethod,
}

fn created(location: &str, ttl: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::CREATED)
        .header("location", location)
        .header("ttl", ttl)
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Serves one request on the Web Push port.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = Instant::now();
    inc(&shared.stats.webpush_requests);
    let early = |r: Rejection| {
        shared.stats.reject(format!("webpush/{}", r.reason()));
        Ok(r.response())
    };
    let Some(id) = req
        .uri()
        .path()
        .strip_prefix(PATH_PREFIX)
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .map(str::to_owned)
    else {
        return early(Rejection::NotFound);
    };
    if req.method() != Method::POST {
        return early(Rejection::MethodNotAllowed(req.method().to_string()));
    }
    let found = {
        let inner = shared.webpush.lock();
        match inner.live.get(&id) {
            Some(sub) => Ok(sub.clone()),
            None => Err(inner.gone.get(&id).cloned()),
        }
    };
    let http_version = format!("{:?}", req.version());
    let mut seen = Seen {
        headers: ["ttl", "urgency", "topic"]
            .into_iter()
            .filter_map(|name| {
                req.headers().get(name).map(|v| {
                    (
                        name.to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
            })
            .collect(),
        payload: Value::Null,
        auth: AuthMethod::None,
    };
    let (status, reason, resp, token) = match found {
        Err(None) => return early(Rejection::NotFound),
        Err(Some(token)) => {
            let r = Rejection::Gone;
            shared.stats.reject(format!("webpush/{}", r.reason()));
            (r.status(), Some(r.reason().to_owned()), r.response(), token)
        }
        Ok(sub) => {
            let encoding = req
                .headers()
                .get(hyper::header::CONTENT_ENCODING)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let authorization = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let body = Limited::new(req.into_body(), READ_LIMIT)
                .collect()
                .await
                .ok()
                .map(|b| b.to_bytes());
            let outcome = check(
                &shared,
                &sub,
                &id,
                encoding.as_deref(),
                authorization.as_deref(),
                body.as_ref(),
                &mut seen,
            )
            .await;
            match outcome {
                Ok(()) => {
                    inc(&shared.stats.accepted);
                    let location = format!(
                        "{}{PATH_PREFIX}message/{}",
                        shared.urls.webpush,
                        hex::encode(rand::random::<[u8; 16]>())
                    );
                    let ttl = seen.headers.get("ttl").cloned().unwrap_or_default();
                    (201, None, created(&location, ttl.trim()), sub.token.clone())
                }
                Err(r) => {
                    shared.stats.reject(format!("webpush/{}", r.reason()));
                    (
                        r.status(),
                        Some(r.reason().to_owned()),
                        r.response(),
                        sub.token.clone(),
                    )
                }
            }
        }
    };
    shared.recorder.record_at(
        NewPush {
            provider: Provider::WebPush,
            token,
            environment: None,
            headers: seen.headers,
            payload: seen.payload,
            status,
            reason,
            auth: seen.auth,
            http_version,
            warnings: Vec::new(),
            validate_only: false,
        },
        arrived,
    );
    Ok(resp)
}

async fn check(
    shared: &Shared,
    sub: &Subscription,
    id: &str,
    encoding: Option<&str>,
    authorization: Option<&str>,
    body: Option<&Bytes>,
    seen: &mut Seen,
) -> Result<(), Rejection> {
    // 2, 3. Headers.
    check_headers(&seen.headers, encoding)?;

    // 4. VAPID.
    match check_vapid(authorization, &shared.urls.webpush, unix_now()) {
        Ok(vapid) => {
            seen.headers.insert("vapid-aud".into(), vapid.aud);
            seen.headers.insert("vapid-sub".into(), vapid.sub);
            seen.auth = AuthMethod::Vapid { key: Some(vapid.k) };
            if sub
                .application_server_key
                .as_ref()
                .is_some_and(|expected| *expected != vapid.key)
            {
                return Err(Rejection::VapidKeyMismatch);
            }
        }
        Err((r, key)) => {
            if authorization.is_some() {
                seen.auth = AuthMethod::Vapid { key };
            }
            return Err(r);
        }
    }

    // 5. Body.
    let body = body.ok_or(Rejection::PayloadTooLarge)?;
    if body.len() > MAX_BODY {
        return Err(Rejection::PayloadTooLarge);
    }
    let plain = decrypt(sub, body)?;
    seen.payload = payload_value(&plain);

    // 6. Faults.
    let decision = shared
        .faults
        .decide_named(Provider::WebPush, &sub.token, id);
    if let Some(d) = decision.delay {
        tokio::time::sleep(d).await;
    }
    match decision.action {
        Action::Accept => Ok(()),
        Action::Dead => Err(Rejection::Gone),
        Action::BadToken => Err(Rejection::NotFound),
        Action::Throttle { retry_after_secs } => Err(Rejection::TooManyRequests(retry_after_secs)),
        Action::Fail | Action::Unavailable => Err(Rejection::ServiceUnavailable),
        Action::NotForTopic => Err(Rejection::Forbidden),
        Action::Respond { status, reason } => Err(Rejection::Respond { status, reason }),
    }
}

/// Reads a subscription key as browsers may give it: base64url or standard
/// base64, padded or not.
pub fn decode_key(s: &str) -> Option<Vec<u8>> {
    let bare = s.trim_end_matches('=');
    URL_SAFE_NO_PAD.decode(bare).ok().or_else(|| {
        STANDARD
            .decode(format!("{bare}{}", "=".repeat((4 - bare.len() % 4) % 4)))
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(key: &ring::signature::EcdsaKeyPair, claims: &Value) -> String {
        let rng = ring::rand::SystemRandom::new();
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ES256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = key.sign(&rng, signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn key_pair() -> ring::signature::EcdsaKeyPair {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    #[test]
    fn vapid_claims() {
        use ring::signature::KeyPair;
        let kp = key_pair();
        let k = URL_SAFE_NO_PAD.encode(kp.public_key().as_ref());
        let origin = "https://127.0.0.1:1";
        let now = 1_000_000;
        let header = |claims: Value| format!("vapid t={}, k={k}", sign(&kp, &claims));
        let ok = header(json!({"aud": origin, "exp": now + 3600, "sub": "mailto:a@b"}));
        let vapid = check_vapid(Some(&ok), origin, now).unwrap();
        let key = vapid.k.clone();
        assert_eq!(
            (vapid.sub.as_str(), key.as_str()),
            ("mailto:a@b", k.as_str())
        );
        // Parameters in the other order, quoted, the scheme in capitals.
        let (t, _) = vapid_params(&ok).unwrap();
        let swapped = format!("Vapid k=\"{k}\",t=\"{t}\"");
        assert!(check_vapid(Some(&swapped), origin, now).is_ok());

        let reason = |h: &str| {
            check_vapid(Some(h), origin, now)
                .unwrap_err()
                .0
                .reason()
                .to_owned()
        };
        assert_eq!(
            reason(&header(
                json!({"aud": "https://x", "exp": now + 60, "sub": "mailto:a"})
            )),
            "BadAudience"
        );
        assert_eq!(
            reason(&header(
                json!({"aud": origin, "exp": now - 1, "sub": "mailto:a"})
            )),
            "Expired"
        );
        assert_eq!(
            reason(&header(
                json!({"aud": origin, "exp": now + 90_000, "sub": "mailto:a"})
            )),
            "ExpiryTooFar"
        );
        assert_eq!(
            reason(&header(json!({"aud": origin, "sub": "mailto:a"}))),
            "MissingExpiry"
        );
        assert_eq!(
            reason(&header(
                json!({"aud": origin, "exp": now + 60, "sub": "a@b"})
            )),
            "BadSubject"
        );
        assert_eq!(
            reason(&header(json!({"aud": origin, "exp": now + 60}))),
            "BadSubject"
        );
        let other = URL_SAFE_NO_PAD.encode(key_pair().public_key().as_ref());
        assert_eq!(
            reason(&format!("vapid t={t}, k={other}")),
            "BadVapidSignature"
        );
        assert_eq!(reason(&format!("vapid t={t}, k=AAAA")), "BadVapidKey");
        assert_eq!(reason(&format!("vapid t=x.y, k={k}")), "BadVapidToken");
        assert_eq!(reason(&format!("WebPush {t}")), "BadAuthorization");
        assert_eq!(reason(&format!("vapid k={k}")), "BadAuthorization");
        assert_eq!(
            check_vapid(None, origin, now).unwrap_err().0,
            Rejection::MissingAuthorization
        );
    }

    #[test]
    fn headers() {
        let h = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let enc = Some("aes128gcm");
        assert_eq!(check_headers(&h(&[("ttl", "60")]), enc), Ok(()));
        assert_eq!(check_headers(&h(&[]), enc), Err(Rejection::MissingTtl));
        assert_eq!(
            check_headers(&h(&[("ttl", "-1")]), enc)
                .unwrap_err()
                .reason(),
            "BadTtl"
        );
        assert_eq!(
            check_headers(&h(&[("ttl", "0"), ("urgency", "urgent")]), enc)
                .unwrap_err()
                .reason(),
            "BadUrgency"
        );
        let long = "a".repeat(33);
        assert_eq!(
            check_headers(&h(&[("ttl", "0"), ("topic", &long)]), enc)
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            check_headers(
                &h(&[("ttl", "0"), ("topic", "chat-1"), ("urgency", "high")]),
                enc
            ),
            Ok(())
        );
        assert_eq!(
            check_headers(&h(&[("ttl", "0")]), None),
            Err(Rejection::MissingContentEncoding)
        );
        assert_eq!(
            check_headers(&h(&[("ttl", "0")]), Some("aesgcm"))
                .unwrap_err()
                .status(),
            415
        );
    }

    fn with_name(name: &str) -> SubscribeOptions {
        SubscribeOptions {
            name: Some(name.into()),
            ..SubscribeOptions::default()
        }
    }

    #[test]
    fn subscriptions_decrypt_what_is_encrypted_for_them() {
        let state = WebPushState::default();
        let s = state
            .subscribe("https://127.0.0.1:9", &SubscribeOptions::default())
            .unwrap();
        assert!(s.endpoint.starts_with("https://127.0.0.1:9/webpush/0"));
        assert_eq!(
            s.token,
            format!("{}#p256dh={}&auth={}", s.endpoint, s.p256dh, s.auth)
        );
        let public = decode_key(&s.p256dh).unwrap();
        let auth = decode_key(&s.auth).unwrap();
        assert_eq!((public.len(), public[0], auth.len()), (65, 4, 16));
        let body = web_push_native::encrypt(
            b"{\"a\":1}".to_vec(),
            &p256::PublicKey::from_sec1_bytes(&public).unwrap(),
            &web_push_native::Auth::from(<[u8; 16]>::try_from(auth.as_slice()).unwrap()),
        )
        .unwrap();
        let id = s.endpoint.rsplit('/').next().unwrap();
        let sub = state.lock().live.get(id).cloned().unwrap();
        assert_eq!(
            payload_value(&decrypt(&sub, &body).unwrap()),
            json!({"a": 1})
        );
        // Any change to the body, and bodies too short to be one, fail
        // without a panic.
        let mut tampered = body.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(decrypt(&sub, &tampered).is_err());
        for n in 0..body.len() {
            assert!(decrypt(&sub, &body[..n]).is_err(), "{n}");
        }
        // Record sizes the library cannot split by, a key id of another
        // length.
        for rs in [0u32, 1, 17] {
            let mut bad = body.clone();
            bad[16..20].copy_from_slice(&rs.to_be_bytes());
            assert_eq!(decrypt(&sub, &bad).unwrap_err().status(), 400);
        }
        let mut bad = body.clone();
        bad[20] = 64;
        assert!(decrypt(&sub, &bad).is_err());

        let named = state.subscribe("https://h", &with_name("dead")).unwrap();
        assert!(named.endpoint.starts_with("https://h/webpush/dead-"));
        assert_eq!(
            state.subscribe("https://h", &with_name("a/b")),
            Err(WebPushError::BadName("a/b".into()))
        );
        assert!(state.unsubscribe(&named.token));
        assert!(!state.unsubscribe(&named.token));
        assert!(state.unsubscribe(id));
        assert!(state.lock().gone.contains_key(id));
    }

    #[test]
    fn keys_in_every_base64_form() {
        let bytes: Vec<u8> = (0u8..65).map(|i| i.wrapping_mul(37)).collect();
        for engine in [
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
        ] {
            assert_eq!(decode_key(&engine.encode(&bytes)), Some(bytes.clone()));
        }
        assert_eq!(decode_key("!!"), None);
    }
}
