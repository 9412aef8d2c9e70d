//! The mock APNs provider API: `POST /3/device/{token}` over HTTP/2 and
//! TLS, checked the way Apple documents it, answered with Apple's statuses
//! and `{"reason": …}` bodies.
//!
//! Apple runs two environments on two hosts (production
//! `api.push.apple.com`, sandbox `api.sandbox.push.apple.com`); a sender
//! must pick the one that issued the token. The mock serves both on one
//! port under path prefixes: `/sandbox/3/device/{token}` is the sandbox,
//! `/production/3/device/{token}` and the bare `/3/device/{token}` are
//! production. Each recorded push carries the environment it reached
//! ([`crate::RecordedPush::environment`]) beside its `apns-topic` and
//! `apns-push-type` headers, so a test can tell where a sender routed it.
//!
//! Checks, in order (the first failure answers):
//! 1. `apns-id`, when sent, is a UUID (`BadMessageId`); the answer echoes it
//!    or carries a fresh one, like Apple.
//! 2. method `POST` (405 `MethodNotAllowed`), path `/3/device/{token}` (404
//!    `BadPath`, 400 `MissingDeviceToken`).
//! 3. authentication: `authorization: bearer <JWT>` (ES256, `kid` = the key
//!    id, `iss` = the team id, signature against the generated key, `iat` no
//!    older than `apns_jwt_max_age` and not in the future) → 403
//!    `InvalidProviderToken` / `ExpiredProviderToken`, optionally 429
//!    `TooManyProviderTokenUpdates`; without one, a TLS client certificate
//!    issued by the test-app's CA; neither → 403 `MissingProviderToken`.
//! 4. the device token is hex, even length, at most 200 digits (400
//!    `BadDeviceToken`).
//! 5. `apns-push-type` known (400 `InvalidPushType`); `apns-topic` present
//!    (400 `MissingTopic`, except with a certificate: its topic is the
//!    default), ending in the suffix its push type requires (`.voip`,
//!    `.complication`, …; 400 `BadTopic`), and for an allowed app (400
//!    `TopicDisallowed`); `apns-priority` 10, 5 or 1 (400 `BadPriority`);
//!    `apns-expiration` an integer (400 `BadExpirationDate`);
//!    `apns-collapse-id` at most 64 bytes (400 `BadCollapseId`).
//! 6. payload: not empty (400 `PayloadEmpty`), at most 4096 bytes, 5120 for
//!    VoIP (413 `PayloadTooLarge`), a JSON object (400 `BadPayload`; Apple
//!    documents no reason for malformed JSON, this one is the mock's).
//! 7. the token's fault, if any (see [`crate::faults`]).
//!
//! Apple accepts some requests that are almost surely a sender's bug; the
//! mock records a warning for those ([`crate::RecordedPush::warnings`]) and,
//! with `apns_strict`, rejects them: no `apns-push-type` (`InvalidPushType`),
//! a background push at priority 10 (`BadPriority`), a background push
//! without `content-available: 1` or with an alert (`BadPayload`), an
//! `apns-expiration` below 10⁹ that is a duration rather than a date
//! (`BadExpirationDate`), a payload without `aps` (`BadPayload`).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::faults::Action;
use crate::recorder::{ApnsEnvironment, AuthMethod, NewPush, Provider};
use crate::stats::inc;
use crate::{Shared, unix_now};

const MAX_PAYLOAD: usize = 4096;
const MAX_VOIP_PAYLOAD: usize = 5120;
/// Bodies larger than this are not read at all; they are too large anyway.
const READ_LIMIT: usize = 1 << 20;
const MAX_TOKEN_HEX: usize = 200;
/// A JWT `iat` this far in the future is refused (clock skew allowance).
const IAT_FUTURE_SKEW: u64 = 60;

/// What the mock knows about one TLS connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    /// The client presented a certificate that chains to the test-app's CA.
    pub client_cert: bool,
}

/// A JWT that verified once; later requests with the same string only
/// re-check its age. Apple does the same, and it keeps signature checks
/// (tens of microseconds each) off the hot path of a benchmark.
#[derive(Debug, Clone)]
struct Verified {
    iat: u64,
}

/// Per-instance APNs state.
#[derive(Debug, Default)]
pub(crate) struct ApnsState {
    jwts: Mutex<HashMap<String, Verified>>,
    /// When the newest distinct JWT was first seen, for
    /// `TooManyProviderTokenUpdates`.
    last_new_jwt: Mutex<Option<Instant>>,
}

/// A failure to answer with: status, Apple reason, extra body fields,
/// extra headers.
struct Reject {
    status: u16,
    reason: Cow<'static, str>,
    timestamp: Option<u64>,
    retry_after: Option<u64>,
}

fn reject(status: u16, reason: &'static str) -> Reject {
    Reject {
        status,
        reason: Cow::Borrowed(reason),
        timestamp: None,
        retry_after: None,
    }
}

fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode_upper(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|c| c.is_ascii_hexdigit()))
}

fn response(
    status: u16,
    apns_id: &str,
    body: Option<Value>,
    retry_after: Option<u64>,
) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("apns-id", apns_id);
    if let Some(secs) = retry_after {
        b = b.header("retry-after", secs.to_string());
    }
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Full::new(Bytes::from(v.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    // The parts above are all valid, so building cannot fail; fall back to
    // a bare 500 rather than panic if that ever changes.
    b.body(body)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// The push type's required topic suffix, or `None` for an unknown type.
fn topic_suffix(push_type: &str) -> Option<&'static str> {
    Some(match push_type {
        "alert" | "background" | "mdm" | "widgets" | "controls" => "",
        "voip" => ".voip",
        "complication" => ".complication",
        "fileprovider" => ".pushkit.fileprovider",
        "liveactivity" => ".push-type.liveactivity",
        "location" => ".location-query",
        "pushtotalk" => ".voip-ptt",
        _ => return None,
    })
}

/// The request as far as it was understood, for recording.
struct Seen {
    token: String,
    headers: BTreeMap<String, String>,
    payload: Value,
    auth: AuthMethod,
    warnings: Vec<String>,
}

/// Serves one request on an APNs connection.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = std::time::Instant::now();
    inc(&shared.stats.apns_requests);
    let http_version = format!("{:?}", req.version());
    let given_id = req
        .headers()
        .get("apns-id")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let apns_id = given_id
        .clone()
        .filter(|id| is_uuid(id))
        .unwrap_or_else(uuid_v4);
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("apns-"))
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();

    // Requests that name no device are answered and counted, not recorded.
    let early = |status: u16, reason: &'static str| {
        shared.stats.reject(format!("apns/{reason}"));
        Ok(response(
            status,
            &apns_id,
            Some(json!({"reason": reason})),
            None,
        ))
    };
    if given_id.is_some_and(|id| !is_uuid(&id)) {
        return early(400, "BadMessageId");
    }
    let (environment, path) = ApnsEnvironment::from_path(req.uri().path());
    let Some(token) = path.strip_prefix("/3/device/") else {
        return early(404, "BadPath");
    };
    if token.contains('/') {
        return early(404, "BadPath");
    }
    if req.method() != Method::POST {
        return early(405, "MethodNotAllowed");
    }
    if token.is_empty() {
        return early(400, "MissingDeviceToken");
    }
    let token = token.to_owned();
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());

    let body = match Limited::new(req.into_body(), READ_LIMIT).collect().await {
        Ok(b) => Some(b.to_bytes()),
        Err(_) => None,
    };
    let mut seen = Seen {
        token,
        headers,
        payload: Value::Null,
        auth: AuthMethod::None,
        warnings: Vec::new(),
    };
    if let Some(b) = &body {
        seen.payload = serde_json::from_slice(b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned()));
    }

    let outcome = check(
        &shared,
        &conn,
        authorization.as_deref(),
        body.as_ref(),
        &mut seen,
    )
    .await;
    let (status, reason, resp) = match outcome {
        Ok(()) => {
            inc(&shared.stats.accepted);
            (200, None, response(200, &apns_id, None, None))
        }
        Err(r) => {
            shared.stats.reject(format!("apns/{}", r.reason));
            let mut body = json!({"reason": r.reason});
            if let Some(ts) = r.timestamp {
                body["timestamp"] = json!(ts);
            }
            (
                r.status,
                Some(r.reason.into_owned()),
                response(r.status, &apns_id, Some(body), r.retry_after),
            )
        }
    };
    shared.recorder.record_at(
        NewPush {
            provider: Provider::Apns,
            token: seen.token,
            environment: Some(environment),
            headers: seen.headers,
            payload: seen.payload,
            status,
            reason,
            auth: seen.auth,
            http_version,
            warnings: seen.warnings,
            validate_only: false,
        },
        arrived,
    );
    Ok(resp)
}

async fn check(
    shared: &Shared,
    conn: &ConnInfo,
    authorization: Option<&str>,
    body: Option<&Bytes>,
    seen: &mut Seen,
) -> Result<(), Reject> {
    let cfg = &shared.config;
    // 3. Authentication.
    match authorization {
        Some(value) => {
            let Some(jwt) = value
                .strip_prefix("bearer ")
                .or_else(|| value.strip_prefix("Bearer "))
                .map(str::trim)
            else {
                seen.auth = AuthMethod::Jwt { key_id: None };
                return Err(reject(403, "InvalidProviderToken"));
            };
            match check_jwt(shared, jwt) {
                // A verified token's kid is the configured key id.
                Ok(()) => {
                    seen.auth = AuthMethod::Jwt {
                        key_id: Some(shared.apns_key.credentials.key_id.clone()),
                    }
                }
                Err(r) => {
                    // Slow path only: decode the header to record which
                    // key the client named.
                    seen.auth = AuthMethod::Jwt {
                        key_id: crate::jwt::parse(jwt).ok().and_then(|p| {
                            p.header
                                .get("kid")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        }),
                    };
                    return Err(r);
                }
            }
        }
        None if conn.client_cert => seen.auth = AuthMethod::Certificate,
        None => return Err(reject(403, "MissingProviderToken")),
    }

    // 4. Device token format.
    let t = &seen.token;
    if !t.len().is_multiple_of(2)
        || t.len() > MAX_TOKEN_HEX
        || !t.bytes().all(|c| c.is_ascii_hexdigit())
    {
        return Err(reject(400, "BadDeviceToken"));
    }

    // 5. Headers.
    let strict = cfg.apns_strict;
    let h = &seen.headers;
    let push_type = match h.get("apns-push-type") {
        Some(pt) => {
            if topic_suffix(pt).is_none() {
                return Err(reject(400, "InvalidPushType"));
            }
            Some(pt.clone())
        }
        None => {
            if strict {
                return Err(reject(400, "InvalidPushType"));
            }
            seen.warnings.push(
                "no apns-push-type (Apple requires it for watchOS and recommends it everywhere)"
                    .into(),
            );
            None
        }
    };
    let suffix = push_type.as_deref().and_then(topic_suffix).unwrap_or("");
    let topic = match h.get("apns-topic") {
        Some(t) => t.clone(),
        // A certificate connection pushes to the certificate's topic.
        None if matches!(seen.auth, AuthMethod::Certificate) => match cfg.apns_topics.first() {
            Some(first) => format!("{first}{suffix}"),
            None => return Err(reject(400, "MissingTopic")),
        },
        None => return Err(reject(400, "MissingTopic")),
    };
    let Some(app) = topic.strip_suffix(suffix) else {
        return Err(reject(400, "BadTopic"));
    };
    if app.is_empty() || app.contains(char::is_whitespace) {
        return Err(reject(400, "BadTopic"));
    }
    if !cfg.apns_topics.is_empty() && !cfg.apns_topics.iter().any(|t| t == app) {
        return Err(reject(400, "TopicDisallowed"));
    }
    let priority = match h.get("apns-priority").map(String::as_str) {
        None => 10,
        Some("10") => 10,
        Some("5") => 5,
        Some("1") => 1,
        Some(_) => return Err(reject(400, "BadPriority")),
    };
    let background = push_type.as_deref() == Some("background");
    if background && priority == 10 {
        if strict {
            return Err(reject(400, "BadPriority"));
        }
        seen.warnings
            .push("background push at priority 10 (Apple requires 5 for background pushes)".into());
    }
    if let Some(exp) = h.get("apns-expiration") {
        let exp: u64 = exp.parse().map_err(|_| reject(400, "BadExpirationDate"))?;
        if exp != 0 && exp < 1_000_000_000 {
            if strict {
                return Err(reject(400, "BadExpirationDate"));
            }
            seen.warnings.push(format!(
                "apns-expiration {exp} is a date in 1970-2001: a duration sent instead of now + TTL"
            ));
        }
    }
    if h.get("apns-collapse-id").is_some_and(|c| c.len() > 64) {
        return Err(reject(400, "BadCollapseId"));
    }

    // 6. Payload.
    let Some(body) = body else {
        return Err(reject(413, "PayloadTooLarge"));
    };
    if body.is_empty() {
        return Err(reject(400, "PayloadEmpty"));
    }
    let limit = if push_type.as_deref() == Some("voip") {
        MAX_VOIP_PAYLOAD
    } else {
        MAX_PAYLOAD
    };
    if body.len() > limit {
        return Err(reject(413, "PayloadTooLarge"));
    }
    let Some(obj) = seen.payload.as_object() else {
        return Err(reject(400, "BadPayload"));
    };
    let mut payload_warnings = Vec::new();
    match obj.get("aps") {
        None => payload_warnings.push("payload has no \"aps\" dictionary".to_owned()),
        Some(aps) if background => {
            if aps.get("content-available").and_then(Value::as_i64) != Some(1) {
                payload_warnings.push(
                    "background push without \"content-available\": 1 does not wake the app".into(),
                );
            }
            if aps.get("alert").is_some() {
                payload_warnings.push("background push with an alert".into());
            }
        }
        Some(_) => {}
    }
    if !payload_warnings.is_empty() {
        if strict {
            return Err(reject(400, "BadPayload"));
        }
        seen.warnings.extend(payload_warnings);
    }

    // 7. Faults.
    let decision = shared.faults.decide(Provider::Apns, &seen.token);
    if let Some(d) = decision.delay {
        tokio::time::sleep(d).await;
    }
    match decision.action {
        Action::Accept => Ok(()),
        Action::Dead => Err(Reject {
            timestamp: Some(unix_now() * 1000),
            ..reject(410, "Unregistered")
        }),
        Action::BadToken => Err(reject(400, "BadDeviceToken")),
        Action::Throttle { retry_after_secs } => Err(Reject {
            retry_after: Some(retry_after_secs),
            ..reject(429, "TooManyRequests")
        }),
        Action::Fail => Err(reject(500, "InternalServerError")),
        Action::Unavailable => Err(reject(503, "ServiceUnavailable")),
        Action::NotForTopic => Err(reject(400, "DeviceTokenNotForTopic")),
        Action::Respond { status, reason } => Err(Reject {
            reason: Cow::Owned(reason),
            ..reject(status, "")
        }),
    }
}

fn check_jwt(shared: &Shared, jwt: &str) -> Result<(), Reject> {
    let cfg = &shared.config;
    let now = unix_now();
    let cached = shared
        .apns
        .jwts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(jwt)
        .cloned();
    let verified = match cached {
        Some(v) => v,
        None => {
            let parsed = crate::jwt::parse(jwt).map_err(|_| reject(403, "InvalidProviderToken"))?;
            let key = &shared.apns_key;
            if parsed.header.get("kid").and_then(Value::as_str)
                != Some(key.credentials.key_id.as_str())
            {
                return Err(reject(403, "InvalidProviderToken"));
            }
            if parsed.claim_str("iss") != Some(key.credentials.team_id.as_str()) {
                return Err(reject(403, "InvalidProviderToken"));
            }
            parsed
                .verify_es256(&key.public_key)
                .map_err(|_| reject(403, "InvalidProviderToken"))?;
            let iat = parsed
                .claim_i64("iat")
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| reject(403, "InvalidProviderToken"))?;
            let v = Verified { iat };
            if iat <= now + IAT_FUTURE_SKEW
                && now.saturating_sub(iat) <= cfg.apns_jwt_max_age.as_secs()
            {
                // Only a token that is usable now counts as an update.
                if let Some(min) = cfg.apns_min_token_refresh {
                    let mut last = shared
                        .apns
                        .last_new_jwt
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if last.is_some_and(|t| t.elapsed() < min) {
                        return Err(reject(429, "TooManyProviderTokenUpdates"));
                    }
                    *last = Some(Instant::now());
                }
                let mut jwts = shared.apns.jwts.lock().unwrap_or_else(|e| e.into_inner());
                // Bounded: a run that somehow makes many tokens just pays
                // for re-verification.
                if jwts.len() > 10_000 {
                    jwts.clear();
                }
                jwts.insert(jwt.to_owned(), v.clone());
                shared.stats.jwt_seen(jwt);
            }
            v
        }
    };
    if verified.iat > now + IAT_FUTURE_SKEW {
        return Err(reject(403, "InvalidProviderToken"));
    }
    if now.saturating_sub(verified.iat) > cfg.apns_jwt_max_age.as_secs() {
        return Err(reject(403, "ExpiredProviderToken"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        let id = uuid_v4();
        assert!(is_uuid(&id), "{id}");
        assert!(is_uuid("123e4567-e89b-12d3-a456-4266554400a0"));
        assert!(!is_uuid("123e4567e89b12d3a4564266554400a0"));
        assert!(!is_uuid("123e4567-e89b-12d3-a456-4266554400ag"));
    }

    #[test]
    fn suffixes() {
        assert_eq!(topic_suffix("voip"), Some(".voip"));
        assert_eq!(topic_suffix("alert"), Some(""));
        assert_eq!(topic_suffix("Alert"), None);
    }
}
