//! What a push service's answer means for the push and the subscription.
//!
//! RFC 8030 push services answer a push with `201 Created`; a subscription
//! that is gone (the user revoked it, the browser profile was removed, the
//! distributor dropped it) is answered `404` or `410`, the only answers
//! that remove a registration. `429` asks us to slow down, a `5xx` is the
//! service's own trouble; both may carry `Retry-After`. `400` and `413` mean
//! a request we built wrongly (a header, a payload too large), `401` and
//! `403` a VAPID token or key the service refused: our side's problem,
//! never the user's, so the registration stays.

use std::time::Duration;

use crate::Outcome;
use crate::http::excerpt;

/// Maps a status, the `Retry-After` delay (if any) and the body (for the
/// reason) to an outcome.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
    let reason = || {
        if body.is_empty() {
            status.to_string()
        } else {
            format!("{status} {}", excerpt(body))
        }
    };
    match status {
        200..=299 => Outcome::Delivered,
        404 | 410 => Outcome::InvalidToken { reason: reason() },
        429 => Outcome::Throttled { retry_after },
        500..=599 => Outcome::Transient {
            reason: reason(),
            retry_after,
        },
        400 | 413 => Outcome::Rejected {
            reason: format!("request refused: {}", reason()),
        },
        401 | 403 => Outcome::Rejected {
            reason: format!("VAPID refused: {}", reason()),
        },
        // Other 4xx, 1xx and redirects (not followed: a push must reach the
        // subscription's own endpoint).
        _ => Outcome::Rejected { reason: reason() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_outcome() {
        let delay = Some(Duration::from_secs(30));
        let table: &[(u16, &str)] = &[
            (200, "delivered"),
            (201, "delivered"),
            (202, "delivered"),
            (204, "delivered"),
            (301, "rejected"),
            (307, "rejected"),
            (400, "rejected"),
            (401, "rejected"),
            (403, "rejected"),
            (404, "invalid_token"),
            (405, "rejected"),
            (410, "invalid_token"),
            (413, "rejected"),
            (429, "throttled"),
            (500, "transient"),
            (502, "transient"),
            (503, "transient"),
            (504, "transient"),
        ];
        for &(status, kind) in table {
            assert_eq!(classify(status, delay, b"").kind(), kind, "{status}");
        }
    }

    #[test]
    fn retry_after_is_kept_where_it_matters() {
        let delay = Some(Duration::from_secs(120));
        assert_eq!(
            classify(429, delay, b""),
            Outcome::Throttled { retry_after: delay }
        );
        assert_eq!(
            classify(503, delay, b"busy"),
            Outcome::Transient {
                reason: "503 busy".into(),
                retry_after: delay
            }
        );
        assert_eq!(
            classify(500, None, b""),
            Outcome::Transient {
                reason: "500".into(),
                retry_after: None
            }
        );
    }

    #[test]
    fn reasons_say_whose_fault() {
        let body = br#"{"code":401,"errno":109,"error":"Unauthorized","message":"Request did not validate"}"#;
        let Outcome::Rejected { reason } = classify(401, None, body) else {
            panic!("401 is rejected");
        };
        assert!(reason.starts_with("VAPID refused: 401 {"), "{reason}");
        let Outcome::Rejected { reason } = classify(413, None, b"") else {
            panic!("413 is rejected");
        };
        assert_eq!(reason, "request refused: 413");
        assert_eq!(
            classify(410, None, b"gone"),
            Outcome::InvalidToken {
                reason: "410 gone".into()
            }
        );
    }
}
