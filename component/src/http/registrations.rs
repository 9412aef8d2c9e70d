//! The registration API: app backends that register their users' devices
//! server-side (as gorush's and mod_push_appserver's HTTP APIs offer)
//! create, update, read and delete registrations here, and hand the answer's
//! `jid`, `node` and `secret` to the device, which enables push on its XMPP
//! server with them. Described for clients in `docs/openapi.json`.
//!
//! | operation | route | answer |
//! |---|---|---|
//! | create or update | `POST /v1/apps/{app}/registrations` | 200, the registration |
//! | read | `GET /v1/apps/{app}/registrations/{node}` | 200, the registration |
//! | new token | `PUT /v1/apps/{app}/registrations/{node}` | 200, the registration |
//! | delete | `DELETE /v1/apps/{app}/registrations/{node}` | 204 |
//!
//! The model is the store's (`store/mod.rs`): a registration is one
//! account's (`owner`) device (`device_id`), optionally for one room
//! (`muc`), of one app. Creating it again with the same identity answers the
//! same node and secret with the new token, as the XMPP commands do
//! (`register/conversations.rs`), so that a backend can simply POST on every
//! app start. The node is the store's choice, never the caller's. Every way
//! in shares the checks of `register/`: the token is checked by the app's
//! backend ([`crate::register::check_token`]), every change counts against
//! the owner's rate and a new registration against its cap (`[register]`,
//! `register/limits.rs`). Changes go through the store, which drops this
//! instance's cached rows; on PostgreSQL its trigger tells the other
//! instances (`store/listen.rs`).
//!
//! Security model: the caller is an app's backend, not a user. Each request
//! carries `Authorization: Bearer <key>`, and a key of `[http.api_keys]`
//! manages exactly its app's registrations, whichever way they were made
//! (the backend speaks for the app, as the operator's CLI does for all).
//! Keys are compared as SHA-256 digests in constant time
//! ([`ApiKeys::authorize`]), every configured key each time, so that the
//! time of an answer tells neither the key's length nor how much of it
//! matched nor which app it belongs to. The answers tell nothing to whoever
//! holds no key: no key, a wrong key, an unknown app and an app without keys
//! all get the same 401. A key of another app gets 404 `unknown_app` for
//! every path under the app it does not manage, so it cannot learn whether
//! that app or any node of it exists. Nodes and secrets are 128 and 144
//! random bits. Keys travel in clear over plain HTTP: the listener stays on
//! loopback (the default) or behind a TLS proxy.
//!
//! Every failure is JSON, `{"error": "<code>", "message": "..."}`, with a
//! code of the closed [`ErrorCode`] and a message that says what to fix;
//! [`ApiError`]'s `IntoResponse` is the one place that maps a failure to
//! its status. Bodies are read by this file, not by axum's extractors, so
//! that no plain-text rejection ever answers, and only after the key is
//! checked, so that a caller without a key learns nothing from them.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post, put};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::HttpState;
use crate::config::HttpConfig;
use crate::register::limits::LimitError;
use crate::store::{NewRegistration, Registration, StoreError};
use crate::xmpp::jid::Jid;

/// The largest request body read; a registration is a few hundred bytes
/// (a token is at most `nudge_plugins::MAX_TOKEN_LEN`, 4 KiB).
pub const BODY_LIMIT: usize = 16 * 1024;

/// The name the API's registrations carry in the store's `dialect` column.
pub const DIALECT: &str = "http-api";

/// The longest `device_id` taken, as the Conversations dialect's.
const MAX_DEVICE_ID_LEN: usize = 256;

/// How long a client is asked to wait when the database does not answer.
const DATABASE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// One operation of the API: the single list the router is built from
/// ([`routes`]) and that `docs/openapi.json` is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Create a registration, or update the token of the same identity's.
    CreateRegistration,
    /// Read a registration.
    ShowRegistration,
    /// Give a registration a new token (and APNs environment).
    UpdateRegistration,
    /// Delete a registration.
    DeleteRegistration,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 4] = [
        Operation::CreateRegistration,
        Operation::ShowRegistration,
        Operation::UpdateRegistration,
        Operation::DeleteRegistration,
    ];

    /// The HTTP method.
    pub fn method(self) -> Method {
        match self {
            Operation::CreateRegistration => Method::POST,
            Operation::ShowRegistration => Method::GET,
            Operation::UpdateRegistration => Method::PUT,
            Operation::DeleteRegistration => Method::DELETE,
        }
    }

    /// The route, in the syntax axum and OpenAPI share.
    pub fn path(self) -> &'static str {
        match self {
            Operation::CreateRegistration => "/v1/apps/{app}/registrations",
            _ => "/v1/apps/{app}/registrations/{node}",
        }
    }

    /// The `operationId` in `docs/openapi.json`.
    pub fn operation_id(self) -> &'static str {
        match self {
            Operation::CreateRegistration => "createRegistration",
            Operation::ShowRegistration => "showRegistration",
            Operation::UpdateRegistration => "updateRegistration",
            Operation::DeleteRegistration => "deleteRegistration",
        }
    }

    fn handler(self) -> MethodRouter<HttpState> {
        match self {
            Operation::CreateRegistration => post(create),
            Operation::ShowRegistration => get(show),
            Operation::UpdateRegistration => put(update),
            Operation::DeleteRegistration => axum::routing::delete(delete),
        }
    }
}

/// The routes of this file: every [`Operation`], a JSON 405 (with `Allow`)
/// for other methods on their paths, and a JSON 404 for any other path
/// under `/v1/`.
pub fn routes() -> Router<HttpState> {
    let mut by_path: BTreeMap<&'static str, Vec<Operation>> = BTreeMap::new();
    for op in Operation::ALL {
        by_path.entry(op.path()).or_default().push(op);
    }
    let mut router = Router::new();
    for (path, ops) in by_path {
        let allow = ops
            .iter()
            .map(|op| op.method().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let methods = ops
            .iter()
            .fold(MethodRouter::new(), |m, op| m.merge(op.handler()))
            .fallback(move || std::future::ready(ApiError::MethodNotAllowed(allow.clone())));
        router = router.route(path, methods);
    }
    router.route(
        "/v1/{*rest}",
        any(|| std::future::ready(ApiError::NoSuchRoute)),
    )
}

/// The closed vocabulary of the `error` member of a failure's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 401: no key, a malformed `Authorization` header, or a key of no
    /// app, whatever the app in the path.
    Unauthorized,
    /// 404: the key is another app's: it does not manage the app the path
    /// names (whether that app exists or not).
    UnknownApp,
    /// 404: the app has no registration with that node.
    UnknownNode,
    /// 404: no such route.
    NotFound,
    /// 405: the route does not take that method.
    MethodNotAllowed,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 413: the body is larger than [`BODY_LIMIT`].
    BodyTooLarge,
    /// 400: the body is not JSON.
    MalformedJson,
    /// 400: the body is JSON, but not an object.
    InvalidBody,
    /// 400: the body has a member the operation does not take.
    UnknownField,
    /// 400: a required member is missing.
    MissingField,
    /// 400: a member has the wrong type or an unusable value.
    InvalidField,
    /// 400: `owner` or `muc` is not a bare JID.
    InvalidJid,
    /// 400: the app's provider would refuse the token.
    InvalidToken,
    /// 409: the owner holds as many registrations as `[register]` allows.
    RegistrationCap,
    /// 429: too many changes for the owner; `Retry-After` says when.
    RateLimited,
    /// 503: the database does not answer; `Retry-After` says when to try.
    DatabaseUnavailable,
}

impl ErrorCode {
    /// Every code, in the order `docs/openapi.json` lists them.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::Unauthorized,
        ErrorCode::UnknownApp,
        ErrorCode::UnknownNode,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::BodyTooLarge,
        ErrorCode::MalformedJson,
        ErrorCode::InvalidBody,
        ErrorCode::UnknownField,
        ErrorCode::MissingField,
        ErrorCode::InvalidField,
        ErrorCode::InvalidJid,
        ErrorCode::InvalidToken,
        ErrorCode::RegistrationCap,
        ErrorCode::RateLimited,
        ErrorCode::DatabaseUnavailable,
    ];

    #[cfg(test)]
    /// The position of this code in [`Self::ALL`]; a `match` without a
    /// wildcard, so that a new code does not compile until it has one.
    fn position(self) -> usize {
        match self {
            ErrorCode::Unauthorized => 0,
            ErrorCode::UnknownApp => 1,
            ErrorCode::UnknownNode => 2,
            ErrorCode::NotFound => 3,
            ErrorCode::MethodNotAllowed => 4,
            ErrorCode::UnsupportedMediaType => 5,
            ErrorCode::BodyTooLarge => 6,
            ErrorCode::MalformedJson => 7,
            ErrorCode::InvalidBody => 8,
            ErrorCode::UnknownField => 9,
            ErrorCode::MissingField => 10,
            ErrorCode::InvalidField => 11,
            ErrorCode::InvalidJid => 12,
            ErrorCode::InvalidToken => 13,
            ErrorCode::RegistrationCap => 14,
            ErrorCode::RateLimited => 15,
            ErrorCode::DatabaseUnavailable => 16,
        }
    }

    /// The code as the body carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownApp => "unknown_app",
            ErrorCode::UnknownNode => "unknown_node",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::InvalidJid => "invalid_jid",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::RegistrationCap => "registration_cap",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
        }
    }

    /// The HTTP status a failure of this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::UnknownApp | ErrorCode::UnknownNode | ErrorCode::NotFound => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MalformedJson
            | ErrorCode::InvalidBody
            | ErrorCode::UnknownField
            | ErrorCode::MissingField
            | ErrorCode::InvalidField
            | ErrorCode::InvalidJid
            | ErrorCode::InvalidToken => StatusCode::BAD_REQUEST,
            ErrorCode::RegistrationCap => StatusCode::CONFLICT,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::DatabaseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Why a request failed; its `Display` is the body's `message`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "a valid API key for this app is needed: send \"Authorization: Bearer <key>\" with a key of [http.api_keys] for the app in the path"
    )]
    Unauthorized,
    #[error(
        "this API key does not manage an app named {0:?}; use the app the key is configured for in [http.api_keys]"
    )]
    UnknownApp(String),
    #[error("app {app:?} has no registration with node {node:?}")]
    UnknownNode { app: String, node: String },
    #[error("no such route; the API's routes are in docs/openapi.json")]
    NoSuchRoute,
    #[error("this route takes {0}")]
    MethodNotAllowed(String),
    #[error("send the body as JSON with \"Content-Type: application/json\"")]
    UnsupportedMediaType,
    #[error("the body is larger than {BODY_LIMIT} bytes")]
    BodyTooLarge,
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body must be a JSON object")]
    InvalidBody,
    #[error("unknown field {field:?}; this operation takes {takes}")]
    UnknownField { field: String, takes: String },
    #[error("missing field {0:?}")]
    MissingField(&'static str),
    #[error("field {field:?}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("field {field:?}: {value:?} is not a bare JID (local@domain, no resource)")]
    InvalidJid { field: &'static str, value: String },
    #[error("field \"token\": {0}")]
    InvalidToken(nudge_plugins::InvalidTokenFormat),
    #[error(transparent)]
    RegistrationCap(LimitError),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    #[error("the database does not answer; retry later")]
    DatabaseUnavailable,
}

impl ApiError {
    /// The code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::UnknownApp(_) => ErrorCode::UnknownApp,
            ApiError::UnknownNode { .. } => ErrorCode::UnknownNode,
            ApiError::NoSuchRoute => ErrorCode::NotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            ApiError::BodyTooLarge => ErrorCode::BodyTooLarge,
            ApiError::MalformedJson(_) => ErrorCode::MalformedJson,
            ApiError::InvalidBody => ErrorCode::InvalidBody,
            ApiError::UnknownField { .. } => ErrorCode::UnknownField,
            ApiError::MissingField(_) => ErrorCode::MissingField,
            ApiError::InvalidField { .. } => ErrorCode::InvalidField,
            ApiError::InvalidJid { .. } => ErrorCode::InvalidJid,
            ApiError::InvalidToken(_) => ErrorCode::InvalidToken,
            ApiError::RegistrationCap(_) => ErrorCode::RegistrationCap,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::DatabaseUnavailable => ErrorCode::DatabaseUnavailable,
        }
    }

    /// A store failure: logged here, answered 503.
    fn database(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "registration API: the store failed");
        ApiError::DatabaseUnavailable
    }

    /// A refusal of `[register]`'s limits.
    fn limit(e: LimitError) -> ApiError {
        tracing::warn!(error = %e, "registration API: request refused");
        match e {
            LimitError::TooFrequent { retry_after, .. } => ApiError::RateLimited {
                message: e.to_string(),
                retry_after,
            },
            LimitError::TooMany { .. } => ApiError::RegistrationCap(e),
        }
    }
}

/// The body of every failure.
#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
}

/// The one place a failure becomes a response: status, headers, body.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let mut headers = HeaderMap::new();
        match &self {
            ApiError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"nudge\""),
                );
            }
            ApiError::MethodNotAllowed(allow) => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    headers.insert(header::ALLOW, v);
                }
            }
            ApiError::RateLimited { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, retry_after_secs(*retry_after));
            }
            ApiError::DatabaseUnavailable => {
                headers.insert(header::RETRY_AFTER, retry_after_secs(DATABASE_RETRY_AFTER));
            }
            _ => {}
        }
        let body = ErrorBody {
            error: code.as_str(),
            message: self.to_string(),
        };
        (code.status(), headers, axum::Json(body)).into_response()
    }
}

/// Whole seconds for `Retry-After`, rounded up (at least 1).
fn retry_after_secs(d: Duration) -> HeaderValue {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

/// The API keys of `[http.api_keys]`, kept as SHA-256 digests.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    /// One entry per key: its app and its digest.
    keys: Vec<(String, [u8; 32])>,
}

impl ApiKeys {
    /// The keys of the configuration.
    pub fn from_config(config: &HttpConfig) -> Self {
        let keys = config
            .api_keys
            .iter()
            .flat_map(|(app, keys)| keys.iter().map(move |k| (app.clone(), digest(k))))
            .collect();
        ApiKeys { keys }
    }

    /// Whether the `Authorization` header's key manages `app`: `Ok` when it
    /// does, [`ApiError::UnknownApp`] when it is a key of other apps only,
    /// [`ApiError::Unauthorized`] otherwise (no key, a malformed header, a
    /// key of no app). Every configured key is compared, each in constant
    /// time over fixed-size digests.
    pub fn authorize(&self, app: &str, authorization: Option<&[u8]>) -> Result<(), ApiError> {
        let Some(presented) = authorization.and_then(bearer_token) else {
            return Err(ApiError::Unauthorized);
        };
        let presented = digest(presented);
        let mut for_app = Choice::from(0);
        let mut for_other = Choice::from(0);
        for (key_app, key) in &self.keys {
            let matches = key.ct_eq(&presented);
            if key_app == app {
                for_app |= matches;
            } else {
                for_other |= matches;
            }
        }
        if bool::from(for_app) {
            Ok(())
        } else if bool::from(for_other) {
            Err(ApiError::UnknownApp(app.to_owned()))
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

fn digest(key: impl AsRef<[u8]>) -> [u8; 32] {
    Sha256::digest(key.as_ref()).into()
}

/// The credentials of `Bearer <credentials>` (the scheme is
/// case-insensitive, RFC 7235 §2.1); `None` for another scheme or none.
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// A registration as the API answers it: what the device needs (`jid`,
/// `node`, `secret`) and what identifies it. The token is not echoed.
#[derive(Debug, Serialize)]
struct RegistrationView {
    jid: String,
    node: String,
    secret: Option<String>,
    owner: String,
    device_id: String,
    muc: Option<String>,
    environment: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl RegistrationView {
    fn new(component_jid: &str, reg: &Registration) -> Self {
        RegistrationView {
            jid: component_jid.to_owned(),
            node: reg.node.clone(),
            secret: reg.secret.clone(),
            owner: reg.owner.clone(),
            device_id: reg.device_id.clone(),
            muc: (!reg.muc.is_empty()).then(|| reg.muc.clone()),
            environment: (!reg.environment.is_empty()).then(|| reg.environment.clone()),
            created_at: reg.created_at,
            updated_at: reg.updated_at,
        }
    }
}

/// The route's parameters, or the JSON 404 axum's rejection would not be.
fn params<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p).map_err(|_| ApiError::NoSuchRoute)
}

/// Checks the request's key for `app`.
fn authorize(state: &HttpState, app: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    state.api_keys.authorize(app, authorization)
}

/// A request body's members, read by hand so that each failure has its
/// code: the content type, the size, the syntax, then each member.
struct Body {
    members: Map<String, Value>,
}

impl Body {
    /// Reads the body of `request`, which may carry only `takes`.
    async fn read(request: Request, takes: &[&str]) -> Result<Body, ApiError> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
            return Err(ApiError::BodyTooLarge);
        }
        // The only failure of a bounded read that anyone hears about is the
        // limit: a client that went away reads no answer.
        let bytes: Bytes = axum::body::to_bytes(request.into_body(), BODY_LIMIT)
            .await
            .map_err(|_| ApiError::BodyTooLarge)?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        let Value::Object(members) = value else {
            return Err(ApiError::InvalidBody);
        };
        if let Some(field) = members.keys().find(|k| !takes.contains(&k.as_str())) {
            return Err(ApiError::UnknownField {
                field: field.clone(),
                takes: takes.join(", "),
            });
        }
        Ok(Body { members })
    }

    /// A string member that must be there and not be empty.
    fn required(&mut self, field: &'static str) -> Result<String, ApiError> {
        self.optional(field)?.ok_or(ApiError::MissingField(field))
    }

    /// The device token: `token`, or for a Web Push app `subscription`, a
    /// browser's `PushSubscription.toJSON()` (`endpoint`, `keys.p256dh`,
    /// `keys.auth`), turned into the token form (README, "Web Push").
    fn token(&mut self, provider: Option<&str>) -> Result<String, ApiError> {
        let Some(subscription) = self.members.remove("subscription") else {
            return self.required("token");
        };
        if self.members.contains_key("token") {
            return Err(ApiError::InvalidField {
                field: "subscription",
                reason: "give either token or subscription, not both".into(),
            });
        }
        if provider != Some(nudge_plugins::webpush::PROVIDER) {
            return Err(ApiError::InvalidField {
                field: "subscription",
                reason: "only for an app whose provider is webpush; send token".into(),
            });
        }
        let invalid = |reason: String| ApiError::InvalidField {
            field: "subscription",
            reason,
        };
        let text = |v: Option<&Value>, name: &str| match v {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(invalid(format!("{name} must be a non-empty string"))),
        };
        let endpoint = text(subscription.get("endpoint"), "endpoint")?;
        let keys = subscription.get("keys");
        let p256dh = text(keys.and_then(|k| k.get("p256dh")), "keys.p256dh")?;
        let auth = text(keys.and_then(|k| k.get("auth")), "keys.auth")?;
        nudge_plugins::webpush::Subscription::from_parts(&endpoint, &p256dh, &auth)
            .map(|s| s.to_token())
            .map_err(|e| invalid(e.to_string()))
    }

    /// A string member that may be missing or `null`; empty counts as
    /// missing.
    fn optional(&mut self, field: &'static str) -> Result<Option<String>, ApiError> {
        match self.members.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::InvalidField {
                field,
                reason: "must be a string".into(),
            }),
        }
    }
}

/// The normalised bare JID in `field`. [`Jid::parse`] trusts the XMPP
/// server to have prepared what it sends; a backend's JID has had no such
/// check, so the local part is also held to RFC 7622's limits here: at
/// most 1023 bytes, no spaces or controls, none of `"&'/:<>@`.
fn bare_jid(field: &'static str, value: &str) -> Result<Jid, ApiError> {
    let invalid = || ApiError::InvalidJid {
        field,
        value: value.to_owned(),
    };
    let jid = Jid::parse(value).map_err(|_| invalid())?;
    let local_ok = jid.local().is_none_or(|l| {
        l.len() <= 1023
            && !l
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "\"&'/:<>@".contains(c))
    });
    if jid.resource().is_some() || !local_ok {
        return Err(invalid());
    }
    Ok(jid)
}

/// The APNs environment a body names, if any.
fn environment(value: Option<String>) -> Result<Option<nudge_plugins::Environment>, ApiError> {
    value
        .map(|v| {
            v.parse().map_err(
                |e: nudge_plugins::UnknownEnvironment| ApiError::InvalidField {
                    field: "environment",
                    reason: e.to_string(),
                },
            )
        })
        .transpose()
}

/// The provider of `app`'s backend.
fn provider<'s>(state: &'s HttpState, app: &str) -> Option<&'s str> {
    state.dispatcher.backends().get(app).map(|b| b.provider())
}

/// The token checked by `app`'s backend.
fn token(state: &HttpState, app: &str, token: String) -> Result<String, ApiError> {
    crate::register::check_token(state.dispatcher.backends(), app, &token)
        .map_err(ApiError::InvalidToken)?;
    Ok(token)
}

/// `app`'s registration of `node`; another app's is no registration.
async fn find(state: &HttpState, app: &str, node: &str) -> Result<Registration, ApiError> {
    let unknown = || ApiError::UnknownNode {
        app: app.to_owned(),
        node: node.to_owned(),
    };
    let found = state
        .store
        .find(node)
        .await
        .map_err(ApiError::database)?
        .ok_or_else(unknown)?;
    if found.app != app {
        return Err(unknown());
    }
    Ok(Registration::clone(&found))
}

/// Counts a change against the owner's rate (`[register]`).
fn check_rate(state: &HttpState, owner: &str) -> Result<(), ApiError> {
    state
        .store
        .register_limits()
        .check_rate(owner)
        .map_err(ApiError::limit)
}

fn answer(state: &HttpState, reg: &Registration) -> Response {
    axum::Json(RegistrationView::new(&state.config.component.domain, reg)).into_response()
}

/// `POST /v1/apps/{app}/registrations`: `owner`, `device_id`, `token`,
/// optional `muc` and `environment`.
async fn create(
    State(state): State<HttpState>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let app = params(path)?;
    authorize(&state, &app, request.headers())?;
    let mut body = Body::read(
        request,
        &[
            "owner",
            "device_id",
            "token",
            "subscription",
            "muc",
            "environment",
        ],
    )
    .await?;
    let owner = body.required("owner")?;
    let owner = bare_jid("owner", &owner)?;
    if owner.local().is_none() {
        return Err(ApiError::InvalidJid {
            field: "owner",
            value: owner.bare(),
        });
    }
    let device_id = body.required("device_id")?;
    if device_id.len() > MAX_DEVICE_ID_LEN {
        return Err(ApiError::InvalidField {
            field: "device_id",
            reason: format!("longer than {MAX_DEVICE_ID_LEN} bytes"),
        });
    }
    let token = token(&state, &app, body.token(provider(&state, &app))?)?;
    let muc = match body.optional("muc")? {
        Some(room) => bare_jid("muc", &room)?.bare(),
        None => String::new(),
    };
    let environment = environment(body.optional("environment")?)?;
    let owner = owner.bare();
    check_rate(&state, &owner)?;
    let new = NewRegistration {
        owner,
        device_id,
        muc,
        app,
        token,
        with_secret: true,
        dialect: DIALECT,
        second_token: String::new(),
        environment,
    };
    let limits = state.store.register_limits();
    let Some(reg) = state
        .store
        .register_within(&new, limits.max_per_account().into())
        .await
        .map_err(ApiError::database)?
    else {
        return Err(ApiError::limit(limits.too_many(&new.owner)));
    };
    crate::register::log_registered(&reg);
    Ok(answer(&state, &reg))
}

/// `GET /v1/apps/{app}/registrations/{node}`.
async fn show(
    State(state): State<HttpState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (app, node) = params(path)?;
    authorize(&state, &app, &headers)?;
    let reg = find(&state, &app, &node).await?;
    Ok(answer(&state, &reg))
}

/// `PUT /v1/apps/{app}/registrations/{node}`: `token`, optional
/// `environment` (absent: the app's configured endpoint).
async fn update(
    State(state): State<HttpState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let (app, node) = params(path)?;
    authorize(&state, &app, request.headers())?;
    let mut body = Body::read(request, &["token", "subscription", "environment"]).await?;
    let token = token(&state, &app, body.token(provider(&state, &app))?)?;
    let environment = environment(body.optional("environment")?)?;
    let reg = find(&state, &app, &node).await?;
    check_rate(&state, &reg.owner)?;
    let reg = state
        .store
        .update_token(&app, &node, &token, environment)
        .await
        .map_err(ApiError::database)?
        .ok_or(ApiError::UnknownNode { app, node })?;
    crate::register::log_registered(&reg);
    Ok(answer(&state, &reg))
}

/// `DELETE /v1/apps/{app}/registrations/{node}`.
async fn delete(
    State(state): State<HttpState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (app, node) = params(path)?;
    authorize(&state, &app, &headers)?;
    let reg = find(&state, &app, &node).await?;
    check_rate(&state, &reg.owner)?;
    let removed = state
        .store
        .unregister_node(&reg.owner, &app, &node, &reg.dialect)
        .await
        .map_err(ApiError::database)?;
    if !removed {
        return Err(ApiError::UnknownNode { app, node });
    }
    tracing::info!(owner = %reg.owner, %app, %node, "registration deleted over HTTP");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "app-a-key-0123456789abcdef";
    const KEY_A2: &str = "app-a-rotated-key-0123456789";
    const KEY_B: &str = "app-b-key-0123456789abcdef";

    fn keys() -> ApiKeys {
        let mut config = HttpConfig::default();
        config
            .api_keys
            .insert("a".into(), vec![KEY_A.into(), KEY_A2.into()]);
        config.api_keys.insert("b".into(), vec![KEY_B.into()]);
        config.api_keys.insert("keyless".into(), vec![]);
        ApiKeys::from_config(&config)
    }

    fn auth(keys: &ApiKeys, app: &str, header: &str) -> Result<(), ErrorCode> {
        keys.authorize(app, Some(header.as_bytes()))
            .map_err(|e| e.code())
    }

    #[test]
    fn a_key_manages_its_app_only() {
        let k = keys();
        assert_eq!(auth(&k, "a", &format!("Bearer {KEY_A}")), Ok(()));
        assert_eq!(auth(&k, "a", &format!("bearer  {KEY_A2} ")), Ok(()));
        assert_eq!(auth(&k, "b", &format!("Bearer {KEY_B}")), Ok(()));
        assert_eq!(
            auth(&k, "b", &format!("Bearer {KEY_A}")),
            Err(ErrorCode::UnknownApp)
        );
        assert_eq!(
            auth(&k, "nosuchapp", &format!("Bearer {KEY_A}")),
            Err(ErrorCode::UnknownApp),
            "another app's key learns nothing about which apps exist"
        );
    }

    #[test]
    fn near_misses_are_unauthorized() {
        let k = keys();
        let prefix = &KEY_A[..KEY_A.len() - 1];
        for header in [
            format!("Bearer {prefix}"),
            format!("Bearer {KEY_A}x"),
            format!("Bearer {}", KEY_A.to_uppercase()),
            format!("Basic {KEY_A}"),
            KEY_A.to_owned(),
            "Bearer ".to_owned(),
            "Bearer".to_owned(),
            String::new(),
        ] {
            assert_eq!(
                auth(&k, "a", &header),
                Err(ErrorCode::Unauthorized),
                "{header:?}"
            );
        }
        assert_eq!(
            k.authorize("a", None).map_err(|e| e.code()),
            Err(ErrorCode::Unauthorized)
        );
        assert_eq!(
            k.authorize("a", Some(b"Bearer \xff\xfe"))
                .map_err(|e| e.code()),
            Err(ErrorCode::Unauthorized),
            "bytes that are not UTF-8 are a wrong key, not a panic"
        );
    }

    #[test]
    fn apps_without_keys_and_unknown_apps_answer_as_a_wrong_key() {
        let k = keys();
        for app in ["keyless", "nosuchapp"] {
            assert_eq!(
                auth(&k, app, "Bearer some-key-nobody-configured-0123"),
                Err(ErrorCode::Unauthorized)
            );
        }
        assert_eq!(
            ApiKeys::default()
                .authorize("a", Some(b"Bearer x"))
                .map_err(|e| e.code()),
            Err(ErrorCode::Unauthorized)
        );
    }

    #[test]
    fn the_digests_compared_are_fixed_size_whatever_the_key_length() {
        // The constant-time comparison is over digests: a key's length
        // cannot show in how long a comparison takes.
        let k = keys();
        assert!(k.keys.iter().all(|(_, d)| d.len() == 32));
        assert_eq!(digest("x").len(), digest(KEY_A.repeat(100)).len());
    }

    #[test]
    fn every_code_has_a_distinct_name_and_an_error_status() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{code:?}"
            );
        }
    }

    #[test]
    fn all_lists_every_code_once() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.position(), i, "{code:?}");
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(100)), "1");
        assert_eq!(retry_after_secs(Duration::from_millis(2100)), "3");
        assert_eq!(retry_after_secs(Duration::from_secs(4)), "4");
    }
}
