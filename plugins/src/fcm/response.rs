//! What an FCM v1 answer means for the push and the registration.
//!
//! FCM answers errors as a `google.rpc.Status`:
//! `{"error": {"code", "message", "status", "details": [...]}}`, where a
//! detail of type `google.firebase.fcm.v1.FcmError` carries the FCM
//! `errorCode` and one of type `google.rpc.BadRequest` may name the
//! offending field. Only answers that say the token is dead become
//! [`Outcome::InvalidToken`]: `UNREGISTERED`, or an `INVALID_ARGUMENT` that
//! names the token. A bare 404 (a wrong project or URL, a proxy's page)
//! is not enough: it would remove every registration of the app.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::Outcome;

/// The decision taken from one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Done(Outcome),
    /// `401`: the access token was refused; fetch another and retry once.
    RefreshAccessToken,
}

#[derive(Debug, Default, Deserialize)]
struct Envelope {
    error: Option<Status>,
}

#[derive(Debug, Default, Deserialize)]
struct Status {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

/// What could be read from an error body; every part optional.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorInfo {
    /// The `google.rpc.Code` name, e.g. `INVALID_ARGUMENT`.
    pub status: Option<String>,
    /// FCM's own `errorCode`, e.g. `UNREGISTERED`.
    pub error_code: Option<String>,
    pub message: Option<String>,
    /// Fields named by `google.rpc.BadRequest` violations.
    pub fields: Vec<String>,
}

impl ErrorInfo {
    pub(crate) fn parse(body: &[u8]) -> Self {
        let Some(status) = serde_json::from_slice::<Envelope>(body)
            .ok()
            .and_then(|e| e.error)
        else {
            return Self::default();
        };
        let mut info = ErrorInfo {
            status: status.status,
            message: status.message,
            ..Self::default()
        };
        for detail in &status.details {
            let kind = detail.get("@type").and_then(Value::as_str).unwrap_or("");
            if kind.ends_with("google.firebase.fcm.v1.FcmError") {
                if let Some(code) = detail.get("errorCode").and_then(Value::as_str) {
                    info.error_code = Some(code.to_owned());
                }
            } else if kind.ends_with("google.rpc.BadRequest") {
                let violations = detail.get("fieldViolations").and_then(Value::as_array);
                for v in violations.into_iter().flatten() {
                    if let Some(field) = v.get("field").and_then(Value::as_str) {
                        info.fields.push(field.to_owned());
                    }
                }
            }
        }
        info
    }

    /// An `INVALID_ARGUMENT` about the registration token itself.
    fn names_the_token(&self) -> bool {
        self.fields.iter().any(|f| f == "message.token")
            || self
                .message
                .as_deref()
                .is_some_and(|m| m.to_ascii_lowercase().contains("registration token"))
    }

    fn describe(&self, status: u16, body: &[u8]) -> String {
        let mut text = status.to_string();
        for part in [&self.error_code, &self.status, &self.message]
            .into_iter()
            .flatten()
        {
            text.push(' ');
            text.push_str(part);
        }
        if self.status.is_none() && self.message.is_none() && !body.is_empty() {
            text.push(' ');
            text.push_str(&crate::http::excerpt(body));
        }
        text
    }
}

/// Maps a status, the `Retry-After` delay (if any) and the body to a
/// verdict.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Verdict {
    if status == 200 {
        return Verdict::Done(Outcome::Delivered);
    }
    let info = ErrorInfo::parse(body);
    let reason = info.describe(status, body);
    let invalid_argument = info.status.as_deref() == Some("INVALID_ARGUMENT")
        || info.error_code.as_deref() == Some("INVALID_ARGUMENT");
    let outcome = match status {
        // Never for a 5xx: a server in trouble says nothing about tokens.
        400..=499 if info.error_code.as_deref() == Some("UNREGISTERED") => {
            Outcome::InvalidToken { reason }
        }
        400 if invalid_argument && info.names_the_token() => Outcome::InvalidToken { reason },
        401 => return Verdict::RefreshAccessToken,
        429 => Outcome::Throttled { retry_after },
        500..=599 => Outcome::Transient {
            reason,
            retry_after,
        },
        _ => Outcome::Rejected { reason },
    };
    Verdict::Done(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(code: u16, status: &str, message: &str, details: Value) -> Vec<u8> {
        json!({"error": {"code": code, "message": message, "status": status, "details": details}})
            .to_string()
            .into_bytes()
    }

    fn fcm_error(code: &str) -> Value {
        json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}])
    }

    fn outcome(status: u16, body: &[u8]) -> Outcome {
        match classify(status, None, body) {
            Verdict::Done(o) => o,
            v => panic!("{status}: {v:?}"),
        }
    }

    #[test]
    fn success() {
        assert_eq!(
            outcome(200, br#"{"name":"projects/p/messages/0:1"}"#),
            Outcome::Delivered
        );
    }

    #[test]
    fn unregistered_is_a_dead_token() {
        let body = error(
            404,
            "NOT_FOUND",
            "Requested entity was not found.",
            fcm_error("UNREGISTERED"),
        );
        let o = outcome(404, &body);
        assert!(
            matches!(&o, Outcome::InvalidToken { reason } if reason.contains("UNREGISTERED")),
            "{o:?}"
        );
    }

    #[test]
    fn unregistered_in_a_server_error_is_still_transient() {
        let body = error(503, "UNAVAILABLE", "x", fcm_error("UNREGISTERED"));
        assert!(matches!(outcome(503, &body), Outcome::Transient { .. }));
    }

    #[test]
    fn invalid_argument_naming_the_token_is_a_dead_token() {
        let by_message = error(
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            fcm_error("INVALID_ARGUMENT"),
        );
        assert!(matches!(
            outcome(400, &by_message),
            Outcome::InvalidToken { .. }
        ));
        let by_field = error(
            400,
            "INVALID_ARGUMENT",
            "Invalid value",
            json!([{"@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}]),
        );
        assert!(matches!(
            outcome(400, &by_field),
            Outcome::InvalidToken { .. }
        ));
    }

    #[test]
    fn other_invalid_arguments_are_our_fault() {
        let payload = error(
            400,
            "INVALID_ARGUMENT",
            "Invalid value at 'message.android.ttl'",
            json!([{"@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "message.android.ttl"}]}]),
        );
        assert!(matches!(outcome(400, &payload), Outcome::Rejected { .. }));
    }

    #[test]
    fn bare_404_is_not_a_dead_token() {
        for body in [
            &b""[..],
            b"<html>Not Found</html>",
            &error(
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                json!([]),
            ),
        ] {
            assert!(matches!(outcome(404, body), Outcome::Rejected { .. }));
        }
    }

    #[test]
    fn unauthenticated_asks_for_a_new_access_token() {
        let body = error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            json!([]),
        );
        assert_eq!(classify(401, None, &body), Verdict::RefreshAccessToken);
        assert_eq!(classify(401, None, b""), Verdict::RefreshAccessToken);
    }

    #[test]
    fn quota_is_throttling_with_its_delay() {
        let body = error(
            429,
            "RESOURCE_EXHAUSTED",
            "quota",
            fcm_error("QUOTA_EXCEEDED"),
        );
        let delay = Some(Duration::from_secs(42));
        assert_eq!(
            classify(429, delay, &body),
            Verdict::Done(Outcome::Throttled { retry_after: delay })
        );
    }

    #[test]
    fn server_trouble_is_transient() {
        for (status, name, code) in [
            (500, "INTERNAL", "INTERNAL"),
            (503, "UNAVAILABLE", "UNAVAILABLE"),
        ] {
            let body = error(status, name, "try later", fcm_error(code));
            let delay = Some(Duration::from_secs(5));
            let v = classify(status, delay, &body);
            assert!(
                matches!(&v, Verdict::Done(Outcome::Transient { retry_after, .. }) if *retry_after == delay),
                "{v:?}"
            );
        }
        assert!(matches!(
            outcome(502, b"<html>bad gateway"),
            Outcome::Transient { .. }
        ));
    }

    #[test]
    fn other_errors_are_rejected_with_the_reason() {
        let body = error(
            403,
            "PERMISSION_DENIED",
            "SenderId mismatch",
            fcm_error("SENDER_ID_MISMATCH"),
        );
        assert_eq!(
            outcome(403, &body),
            Outcome::Rejected {
                reason: "403 SENDER_ID_MISMATCH PERMISSION_DENIED SenderId mismatch".into()
            }
        );
        for (status, body) in [
            (400, &b"not json"[..]),
            (400, br#"{"error": "a string"}"#),
            (400, br#"{"error": {"details": "not a list"}}"#),
            (413, b""),
            (302, b""),
        ] {
            assert!(
                matches!(outcome(status, body), Outcome::Rejected { .. }),
                "{status}"
            );
        }
    }

    #[test]
    fn parsing_is_defensive() {
        assert_eq!(ErrorInfo::parse(b"\xff\xfe"), ErrorInfo::default());
        let odd = br#"{"error":{"details":[5, {"@type": 7}, {"@type":"x.google.rpc.BadRequest","fieldViolations":"no"}]}}"#;
        assert_eq!(ErrorInfo::parse(odd), ErrorInfo::default());
    }
}
