//! The mock of Google's OAuth 2 token endpoint (`token_uri` in the service
//! account JSON) and the store of the access tokens it issued.
//!
//! It implements the one grant a service account uses, RFC 7523's JWT
//! bearer grant: `POST` form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
//! and `assertion=<RS256 JWT>`. The assertion is checked as Google does:
//! signature against the service account's public key (and `kid`, when
//! present, against `private_key_id`), `iss` = `client_email`, `aud` = the
//! token endpoint, a `scope` that grants FCM (`firebase.messaging` or
//! `cloud-platform`), and a lifetime of at most an hour around now. The
//! answer is Google's: `{"access_token","expires_in","token_type":"Bearer"}`
//! or `{"error","error_description"}` with status 400 (401 for an unknown
//! client).
//!
//! Issued tokens are opaque random strings; the FCM mock accepts them until
//! they expire (lifetime settable, so tests can force expiry) or are
//! revoked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Shared;
use crate::stats::inc;

/// The `grant_type` of the JWT-bearer grant.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const FCM_SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/firebase.messaging",
    "https://www.googleapis.com/auth/cloud-platform",
];
/// Clock skew tolerated on `iat`, as Google does for slightly fast clients.
const SKEW_SECS: i64 = 60;

/// What an issued access token grants.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub project_id: String,
    expires: Instant,
}

/// Why a bearer token is refused by the FCM mock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    Unknown,
    Expired,
}

#[derive(Debug)]
pub(crate) struct Tokens {
    issued: Mutex<HashMap<String, Grant>>,
    lifetime_ms: AtomicU64,
}

impl Tokens {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            issued: Mutex::new(HashMap::new()),
            lifetime_ms: AtomicU64::new(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Grant>> {
        self.issued.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_lifetime(&self, lifetime: Duration) {
        self.lifetime_ms.store(
            u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn lifetime(&self) -> Duration {
        Duration::from_millis(self.lifetime_ms.load(Ordering::Relaxed))
    }

    fn issue(&self, project_id: &str) -> (String, Duration) {
        let token = format!("ya29.mock-{}", hex::encode(rand::random::<[u8; 24]>()));
        let lifetime = self.lifetime();
        let mut issued = self.lock();
        // Drop long-expired grants so that a long run does not grow without
        // bound; a recently expired one is kept to answer "expired", not
        // "unknown".
        let now = Instant::now();
        issued.retain(|_, g| g.expires + Duration::from_secs(3600) > now);
        issued.insert(
            token.clone(),
            Grant {
                project_id: project_id.to_owned(),
                expires: now + lifetime,
            },
        );
        (token, lifetime)
    }

    pub fn check(&self, token: &str) -> Result<Grant, TokenProblem> {
        match self.lock().get(token) {
            None => Err(TokenProblem::Unknown),
            Some(g) if g.expires <= Instant::now() => Err(TokenProblem::Expired),
            Some(g) => Ok(g.clone()),
        }
    }

    pub fn revoke_all(&self) {
        self.lock().clear();
    }
}

/// The token endpoint's answer: status and JSON body.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Value,
}

fn refuse(shared: &Shared, status: u16, error: &str, description: &str) -> Answer {
    shared.stats.reject(format!("oauth/{error}"));
    tracing::debug!(error, description, "token request refused");
    Answer {
        status,
        body: json!({"error": error, "error_description": description}),
    }
}

/// Handles one token request; `body` is the form-encoded request body.
pub(crate) fn token_endpoint(shared: &Shared, body: &[u8]) -> Answer {
    let mut grant_type = None;
    let mut assertion = None;
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "grant_type" => grant_type = Some(v.into_owned()),
            "assertion" => assertion = Some(v.into_owned()),
            _ => {}
        }
    }
    match grant_type.as_deref() {
        Some(GRANT_TYPE) => {}
        Some(other) => {
            return refuse(
                shared,
                400,
                "unsupported_grant_type",
                &format!("Invalid grant_type: {other}"),
            );
        }
        None => {
            return refuse(
                shared,
                400,
                "invalid_request",
                "Missing required parameter: grant_type",
            );
        }
    }
    let Some(assertion) = assertion else {
        return refuse(
            shared,
            400,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let Ok(jwt) = crate::jwt::parse(&assertion) else {
        return refuse(shared, 400, "invalid_grant", "Invalid JWT: malformed");
    };
    let sa = &shared.service_account;
    if jwt.claim_str("iss") != Some(sa.client_email.as_str()) {
        // Google answers an unknown service account with invalid_client.
        return refuse(
            shared,
            401,
            "invalid_client",
            "The OAuth client was not found.",
        );
    }
    if let Some(kid) = jwt.header.get("kid").and_then(Value::as_str)
        && kid != sa.private_key_id
    {
        return refuse(shared, 400, "invalid_grant", "Invalid JWT Signature.");
    }
    if jwt.verify_rs256(&sa.public_key_der).is_err() {
        return refuse(shared, 400, "invalid_grant", "Invalid JWT Signature.");
    }
    if !jwt
        .claim_str("aud")
        .is_some_and(|aud| shared.token_urls.iter().any(|u| u == aud))
    {
        return refuse(
            shared,
            400,
            "invalid_grant",
            "Invalid JWT: Failed audience check.",
        );
    }
    let now = crate::unix_now() as i64;
    let timing_ok = match (jwt.claim_i64("iat"), jwt.claim_i64("exp")) {
        (Some(iat), Some(exp)) => {
            exp > iat && exp - iat <= 3600 && iat <= now + SKEW_SECS && exp > now
        }
        _ => false,
    };
    if !timing_ok {
        return refuse(
            shared,
            400,
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let scope = jwt.claim_str("scope").unwrap_or("");
    if !scope.split_whitespace().any(|s| FCM_SCOPES.contains(&s)) {
        return refuse(
            shared,
            400,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    }
    let (token, lifetime) = shared.oauth.issue(&sa.project_id);
    inc(&shared.stats.oauth_tokens_issued);
    Answer {
        status: 200,
        body: json!({
            "access_token": token,
            // Whole seconds as Google sends; a sub-second lifetime rounds up
            // so that clients do not read 0 as "never expires".
            "expires_in": lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0),
            "token_type": "Bearer",
        }),
    }
}
