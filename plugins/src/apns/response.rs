//! What an APNs answer means for the push and the registration.
//!
//! The rule that matters most: only answers that say the token itself is
//! dead (410, `BadDeviceToken`, `DeviceTokenNotForTopic`) become
//! [`Outcome::InvalidToken`], because that removes the user's registration
//! and tells their server to disable push. Everything that may pass (5xx,
//! 429, network trouble) is transient or throttled; everything that is our
//! fault (bad payload, bad credentials) is rejected without blaming the
//! token.

use std::time::Duration;

use serde::Deserialize;

use crate::Outcome;

/// The decision taken from one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Done(Outcome),
    /// `403 ExpiredProviderToken`: sign a new provider token, retry once.
    RefreshProviderToken,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    reason: Option<String>,
}

/// APNs' `reason`, if the body is the JSON document APNs sends.
pub(crate) fn reason(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body).ok()?.reason
}

/// Maps a status, the `Retry-After` delay (if any) and the body to a
/// verdict.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Verdict {
    let reason = reason(body);
    // APNs' reason, else the start of whatever else answered (a proxy's
    // page), else a default.
    let said = |default: &str| match (&reason, body.is_empty()) {
        (Some(r), _) => r.clone(),
        (None, false) => crate::http::excerpt(body),
        (None, true) => default.to_owned(),
    };
    let outcome = match (status, reason.as_deref()) {
        (200, _) => Outcome::Delivered,
        (410, _) => Outcome::InvalidToken {
            reason: said("410 Unregistered"),
        },
        (400, Some(r @ ("BadDeviceToken" | "DeviceTokenNotForTopic"))) => Outcome::InvalidToken {
            reason: r.to_owned(),
        },
        (403, Some("ExpiredProviderToken")) => return Verdict::RefreshProviderToken,
        (429, _) => Outcome::Throttled { retry_after },
        (500..=599, _) => Outcome::Transient {
            reason: format!("{status} {}", said("server error")),
            retry_after,
        },
        _ => Outcome::Rejected {
            reason: format!("{status} {}", said("(no reason)")),
        },
    };
    Verdict::Done(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(reason: &str) -> Vec<u8> {
        format!(r#"{{"reason":"{reason}"}}"#).into_bytes()
    }

    fn outcome(status: u16, b: &[u8]) -> Outcome {
        match classify(status, None, b) {
            Verdict::Done(o) => o,
            other => panic!("{status}: {other:?}"),
        }
    }

    #[test]
    fn success() {
        assert_eq!(outcome(200, b""), Outcome::Delivered);
    }

    #[test]
    fn dead_tokens() {
        let o = outcome(
            410,
            br#"{"reason":"Unregistered","timestamp":1700000000000}"#,
        );
        assert_eq!(
            o,
            Outcome::InvalidToken {
                reason: "Unregistered".into()
            }
        );
        assert!(matches!(outcome(410, b""), Outcome::InvalidToken { .. }));
        assert!(matches!(
            outcome(400, &body("BadDeviceToken")),
            Outcome::InvalidToken { .. }
        ));
        assert!(matches!(
            outcome(400, &body("DeviceTokenNotForTopic")),
            Outcome::InvalidToken { .. }
        ));
    }

    #[test]
    fn expired_provider_token_asks_for_a_refresh() {
        assert_eq!(
            classify(403, None, &body("ExpiredProviderToken")),
            Verdict::RefreshProviderToken
        );
        // Other 403s are our credentials' fault, not retried.
        assert!(matches!(
            outcome(403, &body("InvalidProviderToken")),
            Outcome::Rejected { .. }
        ));
    }

    #[test]
    fn throttling_and_server_trouble_are_never_the_tokens_fault() {
        let delay = Some(Duration::from_secs(3));
        assert_eq!(
            classify(429, delay, &body("TooManyRequests")),
            Verdict::Done(Outcome::Throttled { retry_after: delay })
        );
        assert_eq!(
            classify(429, None, b"garbage"),
            Verdict::Done(Outcome::Throttled { retry_after: None })
        );
        for status in [500, 502, 503, 504, 599] {
            let o = outcome(status, &body("ServiceUnavailable"));
            assert!(matches!(o, Outcome::Transient { .. }), "{status}: {o:?}");
        }
        assert_eq!(
            classify(503, delay, b"<html>"),
            Verdict::Done(Outcome::Transient {
                reason: "503 <html>".into(),
                retry_after: delay
            })
        );
    }

    #[test]
    fn other_client_errors_are_rejected_with_the_reason() {
        for (status, reason) in [
            (400, "BadTopic"),
            (400, "PayloadEmpty"),
            (400, "TopicDisallowed"),
            (403, "BadCertificate"),
            (404, "BadPath"),
            (405, "MethodNotAllowed"),
            (413, "PayloadTooLarge"),
        ] {
            assert_eq!(
                outcome(status, &body(reason)),
                Outcome::Rejected {
                    reason: format!("{status} {reason}")
                }
            );
        }
        // Unparsable or unexpected answers are never a dead token.
        for (status, b) in [
            (400, &b"not json"[..]),
            (400, b"{\"reason\":5}"),
            (302, b""),
            (201, b""),
        ] {
            assert!(matches!(outcome(status, b), Outcome::Rejected { .. }));
        }
    }
}
