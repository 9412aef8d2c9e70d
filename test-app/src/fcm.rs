//! The mock FCM HTTP v1 API, `POST /v1/projects/{project}/messages:send`,
//! plus the HTTPS form of the OAuth token endpoint (`POST /token`) on the
//! same TLS port.
//!
//! Checks, in order:
//! 1. path and method (404 `NOT_FOUND`, 405).
//! 2. `authorization: Bearer <access token>` issued by this test-app's token
//!    endpoint, not expired, not revoked → else 401 `UNAUTHENTICATED` (no
//!    FCM error code, as Google sends it), and for the service account's
//!    project → else 403 `PERMISSION_DENIED`.
//! 3. the body: JSON `{"message": {...}, "validate_only"?}` (400
//!    `INVALID_ARGUMENT`); the message has exactly one of `token`, `topic`,
//!    `condition`, only known fields, string-valued `data` without reserved
//!    keys, a valid `android.priority` and `android.ttl`; the payload (data
//!    keys and values plus notification texts) at most 4096 bytes.
//! 4. the token's fault, if any (see [`crate::faults`]).
//!
//! Errors use Google's shape:
//! `{"error":{"code":404,"message":"…","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::faults::Action;
use crate::oauth::TokenProblem;
use crate::recorder::{AuthMethod, NewPush, Provider};
use crate::stats::inc;

const MAX_PAYLOAD: usize = 4096;
const READ_LIMIT: usize = 1 << 20;
const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

/// Fields of an FCM v1 `Message`, in both the proto and the JSON (camel)
/// spelling, as Google's JSON parser accepts either.
const MESSAGE_FIELDS: &[&str] = &[
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "fcmOptions",
    "token",
    "topic",
    "condition",
];
const RESERVED_DATA_KEYS: &[&str] = &["from", "notification", "message_type"];

/// An FCM error answer.
struct FcmError {
    code: u16,
    status: &'static str,
    message: String,
    /// The FcmError `errorCode`, when Google sends one.
    error_code: Option<&'static str>,
    retry_after: Option<u64>,
}

impl FcmError {
    fn new(code: u16, status: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            status,
            message: message.into(),
            error_code: None,
            retry_after: None,
        }
    }

    fn fcm(mut self, error_code: &'static str) -> Self {
        self.error_code = Some(error_code);
        self
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "INVALID_ARGUMENT", message).fcm("INVALID_ARGUMENT")
    }

    /// The kind used for stats and the record.
    fn kind(&self) -> &'static str {
        self.error_code.unwrap_or(self.status)
    }

    fn body(&self) -> Value {
        let mut error = json!({
            "code": self.code,
            "message": self.message,
            "status": self.status,
        });
        if let Some(code) = self.error_code {
            error["details"] = json!([{"@type": FCM_ERROR_TYPE, "errorCode": code}]);
        }
        json!({ "error": error })
    }
}

fn json_response(status: u16, body: &Value, extra: &[(&str, String)]) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json; charset=UTF-8");
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn error_response(e: &FcmError) -> Response<Full<Bytes>> {
    let mut extra = Vec::new();
    if let Some(secs) = e.retry_after {
        extra.push(("retry-after", secs.to_string()));
    }
    if e.code == 401 {
        extra.push((
            "www-authenticate",
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"".to_owned(),
        ));
    }
    json_response(e.code, &e.body(), &extra)
}

/// Serves one request on the FCM TLS port.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/token" {
        return Ok(token_request(&shared, req).await);
    }
    inc(&shared.stats.fcm_requests);
    let early = |e: FcmError| {
        shared.stats.reject(format!("fcm/{}", e.kind()));
        Ok(error_response(&e))
    };
    let Some(project) = path
        .strip_prefix("/v1/projects/")
        .and_then(|rest| rest.strip_suffix("/messages:send"))
        .filter(|p| !p.is_empty() && !p.contains('/'))
        .map(str::to_owned)
    else {
        return early(FcmError::new(
            404,
            "NOT_FOUND",
            format!("The requested URL {path} was not found on this server."),
        ));
    };
    if req.method() != Method::POST {
        return early(FcmError::new(
            405,
            "METHOD_NOT_ALLOWED",
            format!("Method {} is not allowed for this resource.", req.method()),
        ));
    }
    let http_version = format!("{:?}", req.version());
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned());
    let body = match Limited::new(req.into_body(), READ_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return early(FcmError::invalid("Request payload size exceeds the limit.")),
    };
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    let message = request.as_ref().and_then(|r| r.get("message")).cloned();
    let validate_only = request
        .as_ref()
        .and_then(|r| r.get("validate_only").or_else(|| r.get("validateOnly")))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // The token the push is for, when the body says.
    let target = message.as_ref().and_then(|m| {
        if let Some(t) = m.get("token").and_then(Value::as_str) {
            Some(t.to_owned())
        } else if let Some(t) = m.get("topic").and_then(Value::as_str) {
            Some(format!("topic:{t}"))
        } else {
            m.get("condition")
                .and_then(Value::as_str)
                .map(|c| format!("condition:{c}"))
        }
    });

    let mut auth = AuthMethod::None;
    let result = check(
        &shared,
        &project,
        bearer.as_deref(),
        request.as_ref(),
        &mut auth,
        target.as_deref(),
    )
    .await;
    let (status, reason, resp) = match result {
        Ok(()) => {
            inc(&shared.stats.accepted);
            let id = if validate_only {
                "fake_message_id".to_owned()
            } else {
                format!(
                    "0:{}%{}",
                    crate::recorder::millis(std::time::SystemTime::now()) * 1000,
                    hex::encode(rand::random::<[u8; 8]>())
                )
            };
            let body = json!({"name": format!("projects/{project}/messages/{id}")});
            (200, None, json_response(200, &body, &[]))
        }
        Err(e) => {
            shared.stats.reject(format!("fcm/{}", e.kind()));
            (e.code, Some(e.kind().to_owned()), error_response(&e))
        }
    };
    match target {
        Some(token) => {
            shared.recorder.record(NewPush {
                provider: Provider::Fcm,
                token,
                environment: None,
                headers: Default::default(),
                payload: message.unwrap_or(Value::Null),
                status,
                reason,
                auth,
                http_version,
                warnings: Vec::new(),
                validate_only,
            });
        }
        None => tracing::debug!(status, "FCM request without a target, not recorded"),
    }
    Ok(resp)
}

async fn check(
    shared: &Shared,
    project: &str,
    bearer: Option<&str>,
    request: Option<&Value>,
    auth: &mut AuthMethod,
    target: Option<&str>,
) -> Result<(), FcmError> {
    // 2. Authentication.
    let unauthenticated = |what: &str| {
        FcmError::new(
            401,
            "UNAUTHENTICATED",
            format!(
                "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                 login cookie or other valid authentication credential. ({what})"
            ),
        )
    };
    let Some(bearer) = bearer else {
        return Err(unauthenticated("missing bearer token"));
    };
    let grant = shared.oauth.check(bearer).map_err(|p| match p {
        TokenProblem::Unknown => unauthenticated("unknown or revoked access token"),
        TokenProblem::Expired => unauthenticated("access token expired"),
    })?;
    *auth = AuthMethod::OAuth;
    if grant.project_id != project {
        return Err(FcmError::new(
            403,
            "PERMISSION_DENIED",
            format!(
                "Permission 'cloudmessaging.messages.create' denied on resource \
                 '//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist)."
            ),
        ));
    }

    // 3. The message.
    let request = request
        .and_then(Value::as_object)
        .ok_or_else(|| FcmError::new(400, "INVALID_ARGUMENT", "Invalid JSON payload received."))?;
    for key in request.keys() {
        if !["message", "validate_only", "validateOnly"].contains(&key.as_str()) {
            return Err(FcmError::new(
                400,
                "INVALID_ARGUMENT",
                format!(
                    "Invalid JSON payload received. Unknown name \"{key}\": Cannot find field."
                ),
            ));
        }
    }
    let message = request
        .get("message")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            FcmError::invalid("Request contains an invalid argument: message is required.")
        })?;
    check_message(message)?;
    let Some(target) = target else {
        return Err(FcmError::invalid("Request contains an invalid argument."));
    };
    if let Some(token) = message.get("token").and_then(Value::as_str)
        && (token.is_empty()
            || token.len() > 4096
            || !token
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_:.".contains(&c)))
    {
        return Err(FcmError::invalid(
            "The registration token is not a valid FCM registration token",
        ));
    }

    // 4. Faults (by token; topics and conditions have none).
    let decision = shared.faults.decide(Provider::Fcm, target);
    if let Some(d) = decision.delay {
        tokio::time::sleep(d).await;
    }
    match decision.action {
        Action::Accept => Ok(()),
        Action::Dead => Err(
            FcmError::new(404, "NOT_FOUND", "Requested entity was not found.").fcm("UNREGISTERED"),
        ),
        Action::BadToken => Err(FcmError::invalid(
            "The registration token is not a valid FCM registration token",
        )),
        Action::Throttle { retry_after_secs } => Err(FcmError {
            retry_after: Some(retry_after_secs),
            ..FcmError::new(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Send requests'.",
            )
            .fcm("QUOTA_EXCEEDED")
        }),
        Action::Fail | Action::Unavailable => {
            Err(
                FcmError::new(503, "UNAVAILABLE", "The service is currently unavailable.")
                    .fcm("UNAVAILABLE"),
            )
        }
        Action::NotForTopic => {
            Err(FcmError::new(403, "PERMISSION_DENIED", "SenderId mismatch")
                .fcm("SENDER_ID_MISMATCH"))
        }
        Action::Respond { status, reason } => {
            // A custom answer: the reason is the FCM error code and the
            // status string is derived from the HTTP code.
            let status_name = match status {
                400 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                _ => "INTERNAL",
            };
            Err(FcmError {
                code: status,
                status: status_name,
                message: reason,
                error_code: None,
                retry_after: None,
            })
        }
    }
}

fn check_message(m: &Map<String, Value>) -> Result<(), FcmError> {
    for key in m.keys() {
        if !MESSAGE_FIELDS.contains(&key.as_str()) {
            return Err(FcmError::new(
                400,
                "INVALID_ARGUMENT",
                format!(
                    "Invalid JSON payload received. Unknown name \"{key}\" at 'message': Cannot find field."
                ),
            ));
        }
    }
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|k| m.contains_key(**k))
        .count();
    if targets != 1 {
        return Err(FcmError::invalid(
            "Request contains an invalid argument: exactly one of token, topic or condition is required.",
        ));
    }
    let mut size = 0;
    if let Some(data) = m.get("data") {
        let data = data.as_object().ok_or_else(|| {
            FcmError::new(400, "INVALID_ARGUMENT", "Invalid value at 'message.data'")
        })?;
        for (k, v) in data {
            let Some(v) = v.as_str() else {
                return Err(FcmError::new(
                    400,
                    "INVALID_ARGUMENT",
                    format!("Invalid value at 'message.data[{k}].value' (TYPE_STRING)"),
                ));
            };
            let lower = k.to_ascii_lowercase();
            if RESERVED_DATA_KEYS.contains(&lower.as_str())
                || lower.starts_with("google.")
                || lower.starts_with("gcm.")
            {
                return Err(FcmError::invalid(format!("Invalid data payload key: {k}")));
            }
            size += k.len() + v.len();
        }
    }
    for n in [
        m.get("notification"),
        m.get("android").and_then(|a| a.get("notification")),
    ]
    .into_iter()
    .flatten()
    {
        let n = n.as_object().ok_or_else(|| {
            FcmError::new(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.notification'",
            )
        })?;
        for (k, v) in n {
            size += k.len() + v.as_str().map_or_else(|| v.to_string().len(), str::len);
        }
    }
    if let Some(android) = m.get("android") {
        let android = android.as_object().ok_or_else(|| {
            FcmError::new(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.android'",
            )
        })?;
        if let Some(p) = android.get("priority") {
            let ok = p
                .as_str()
                .is_some_and(|p| ["normal", "high", "NORMAL", "HIGH"].contains(&p));
            if !ok {
                return Err(FcmError::new(
                    400,
                    "INVALID_ARGUMENT",
                    format!(
                        "Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), {p}"
                    ),
                ));
            }
        }
        if let Some(ttl) = android.get("ttl") {
            let ok = ttl.as_str().is_some_and(|t| {
                t.strip_suffix('s')
                    .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok_and(|f| f >= 0.0))
            });
            if !ok {
                return Err(FcmError::new(
                    400,
                    "INVALID_ARGUMENT",
                    format!(
                        "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), {ttl}"
                    ),
                ));
            }
        }
    }
    if size > MAX_PAYLOAD {
        return Err(FcmError::invalid(format!(
            "Message is too big: payload of {size} bytes exceeds the {MAX_PAYLOAD}-byte limit"
        )));
    }
    Ok(())
}

/// The OAuth token endpoint on the TLS port.
async fn token_request(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return json_response(
            405,
            &json!({"error": "invalid_request", "error_description": "POST required"}),
            &[],
        );
    }
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_response(
                400,
                &json!({"error": "invalid_request", "error_description": "body too large"}),
                &[],
            );
        }
    };
    let answer = crate::oauth::token_endpoint(shared, &body);
    json_response(
        answer.status,
        &answer.body,
        &[("cache-control", "no-store".to_owned())],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(v: Value) -> Result<(), FcmError> {
        check_message(v.as_object().unwrap())
    }

    #[test]
    fn message_shape() {
        assert!(msg(json!({"token": "t", "data": {"a": "b"}})).is_ok());
        assert!(msg(json!({"token": "t", "topic": "x"})).is_err());
        assert!(msg(json!({"data": {"a": "b"}})).is_err());
        assert!(msg(json!({"token": "t", "bogus": 1})).is_err());
        assert!(msg(json!({"token": "t", "data": {"a": 1}})).is_err());
        assert!(msg(json!({"token": "t", "data": {"google.x": "1"}})).is_err());
        assert!(msg(json!({"token": "t", "android": {"priority": "urgent"}})).is_err());
        assert!(msg(json!({"token": "t", "android": {"priority": "high", "ttl": "30s"}})).is_ok());
        assert!(msg(json!({"token": "t", "android": {"ttl": "30"}})).is_err());
        let big = "x".repeat(4096);
        assert!(msg(json!({"token": "t", "data": {"k": big}})).is_err());
        let fits = "x".repeat(4095);
        assert!(msg(json!({"token": "t", "data": {"k": fits}})).is_ok());
    }

    #[test]
    fn error_shape() {
        let e = FcmError::new(404, "NOT_FOUND", "gone").fcm("UNREGISTERED");
        assert_eq!(
            e.body(),
            json!({"error": {"code": 404, "message": "gone", "status": "NOT_FOUND",
                "details": [{"@type": FCM_ERROR_TYPE, "errorCode": "UNREGISTERED"}]}})
        );
        assert_eq!(e.kind(), "UNREGISTERED");
    }
}
