//! Fault injection per device token: what the mocks answer instead of a
//! success, so that the reliability tests can watch Nudge handle dead
//! tokens, throttling, provider outages and slow providers.
//!
//! A fault comes from one of two places, checked in this order:
//! 1. set explicitly ([`crate::TestApp::set_fault`] or `PUT
//!    /api/faults/{token}`);
//! 2. the token's name (a prefix, case-insensitive). The prefixes are
//!    hex-only so they work for APNs tokens, which are hex:
//!
//! | prefix | fault | APNs answer | FCM answer |
//! |---|---|---|---|
//! | `dead` | [`Fault::Dead`] | 410 `Unregistered` + `timestamp` | 404 `UNREGISTERED` |
//! | `badd` | [`Fault::BadToken`] | 400 `BadDeviceToken` | 400 `INVALID_ARGUMENT` |
//! | `c001`*N* | [`Fault::Throttle`], Retry-After *N* s (default 1) | 429 `TooManyRequests` | 429 `QUOTA_EXCEEDED` |
//! | `fa11`*N* | [`Fault::FailTimes`] *N* (default 1), then success | 500 `InternalServerError` | 503 `UNAVAILABLE` |
//! | `de1a`*N* | [`Fault::Delay`] *N* ms (default 1000), then the normal answer | | |
//!
//! *N* is the run of decimal digits right after the prefix (at most 5), so
//! `fa113` followed by non-digits fails three times; pad the rest of an
//! APNs token with `f`s (`fa113fff…`). Tokens from
//! [`crate::random_apns_token`] start with `0` and never match a prefix.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a mock does for one device token instead of (or before) accepting
/// the push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The token is gone for good (app uninstalled): APNs 410
    /// `Unregistered` with a `timestamp`, FCM 404 `UNREGISTERED`.
    Dead,
    /// The token is malformed or for another environment: APNs 400
    /// `BadDeviceToken`, FCM 400 `INVALID_ARGUMENT`.
    BadToken,
    /// Too many pushes for this device: APNs 429 `TooManyRequests`, FCM 429
    /// `QUOTA_EXCEEDED`, both with `Retry-After` (real APNs sends no
    /// Retry-After; it is added so a backend can be tested honouring it).
    Throttle { retry_after_secs: u64 },
    /// The provider fails the next `n` pushes for this token (APNs 500
    /// `InternalServerError`, FCM 503 `UNAVAILABLE`), then accepts them.
    FailTimes(u32),
    /// The answer (whatever it is) comes after this delay.
    Delay(Duration),
    /// The token belongs to another app: APNs 400 `DeviceTokenNotForTopic`,
    /// FCM 403 `SENDER_ID_MISMATCH`.
    NotForTopic,
    /// Any other answer: the status and APNs reason / FCM error code given.
    Respond { status: u16, reason: String },
}

/// The JSON form of a [`Fault`] on the control API, e.g.
/// `{"kind":"throttle","retry_after_secs":5}` or
/// `{"kind":"fail_times","times":3}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultSpec {
    Dead,
    BadToken,
    Throttle {
        #[serde(default = "one")]
        retry_after_secs: u64,
    },
    FailTimes {
        times: u32,
    },
    Delay {
        ms: u64,
    },
    NotForTopic,
    Respond {
        status: u16,
        reason: String,
    },
}

fn one() -> u64 {
    1
}

impl From<FaultSpec> for Fault {
    fn from(spec: FaultSpec) -> Self {
        match spec {
            FaultSpec::Dead => Fault::Dead,
            FaultSpec::BadToken => Fault::BadToken,
            FaultSpec::Throttle { retry_after_secs } => Fault::Throttle { retry_after_secs },
            FaultSpec::FailTimes { times } => Fault::FailTimes(times),
            FaultSpec::Delay { ms } => Fault::Delay(Duration::from_millis(ms)),
            FaultSpec::NotForTopic => Fault::NotForTopic,
            FaultSpec::Respond { status, reason } => Fault::Respond { status, reason },
        }
    }
}

impl From<&Fault> for FaultSpec {
    fn from(fault: &Fault) -> Self {
        match fault {
            Fault::Dead => FaultSpec::Dead,
            Fault::BadToken => FaultSpec::BadToken,
            Fault::Throttle { retry_after_secs } => FaultSpec::Throttle {
                retry_after_secs: *retry_after_secs,
            },
            Fault::FailTimes(times) => FaultSpec::FailTimes { times: *times },
            Fault::Delay(d) => FaultSpec::Delay {
                ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
            Fault::NotForTopic => FaultSpec::NotForTopic,
            Fault::Respond { status, reason } => FaultSpec::Respond {
                status: *status,
                reason: reason.clone(),
            },
        }
    }
}

impl Fault {
    /// The fault a token's name asks for, if any (see the module docs).
    pub fn from_token_name(token: &str) -> Option<Fault> {
        let lower = token.get(..4)?.to_ascii_lowercase();
        let digits = || -> Option<u64> {
            let rest = &token[4..];
            let n = rest.bytes().take(5).take_while(u8::is_ascii_digit).count();
            rest[..n].parse().ok()
        };
        match lower.as_str() {
            "dead" => Some(Fault::Dead),
            "badd" => Some(Fault::BadToken),
            "c001" => Some(Fault::Throttle {
                retry_after_secs: digits().unwrap_or(1),
            }),
            "fa11" => Some(Fault::FailTimes(
                digits().map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            )),
            "de1a" => Some(Fault::Delay(Duration::from_millis(
                digits().unwrap_or(1000),
            ))),
            _ => None,
        }
    }
}

/// What a mock must do for one request, decided by [`Faults::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Accept the push (after `delay`, if any).
    Accept,
    Dead,
    BadToken,
    Throttle {
        retry_after_secs: u64,
    },
    /// One of the failures of a [`Fault::FailTimes`].
    Fail,
    NotForTopic,
    Respond {
        status: u16,
        reason: String,
    },
}

/// The decision for one request: wait this long, then do that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub delay: Option<Duration>,
    pub action: Action,
}

#[derive(Debug, Default)]
struct Inner {
    explicit: HashMap<String, Fault>,
    /// Failures already served per token for `FailTimes`, whether the fault
    /// was set explicitly or comes from the name.
    failures: HashMap<String, u32>,
}

/// The faults in force and the per-token state they need.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    inner: Mutex<Inner>,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain data behind;
        // keep serving rather than poisoning every later request.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets (replaces) the fault for a token and restarts its failure count.
    pub fn set(&self, token: &str, fault: Fault) {
        let mut inner = self.lock();
        inner.failures.remove(token);
        inner.explicit.insert(token.to_owned(), fault);
    }

    /// Removes an explicit fault. A fault from the token's name stays.
    pub fn clear(&self, token: &str) {
        let mut inner = self.lock();
        inner.failures.remove(token);
        inner.explicit.remove(token);
    }

    /// Forgets every explicit fault and failure count.
    pub fn reset(&self) {
        *self.lock() = Inner::default();
    }

    /// The explicit faults in force.
    pub fn list(&self) -> Vec<(String, Fault)> {
        let inner = self.lock();
        let mut v: Vec<_> = inner
            .explicit
            .iter()
            .map(|(t, f)| (t.clone(), f.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Decides what to do with one request for `token`, counting it against
    /// a `FailTimes` budget.
    pub fn decide(&self, token: &str) -> Decision {
        let mut inner = self.lock();
        let fault = inner
            .explicit
            .get(token)
            .cloned()
            .or_else(|| Fault::from_token_name(token));
        let Some(fault) = fault else {
            return Decision {
                delay: None,
                action: Action::Accept,
            };
        };
        let action = match fault {
            Fault::Dead => Action::Dead,
            Fault::BadToken => Action::BadToken,
            Fault::Throttle { retry_after_secs } => Action::Throttle { retry_after_secs },
            Fault::FailTimes(n) => {
                let served = inner.failures.entry(token.to_owned()).or_insert(0);
                if *served < n {
                    *served += 1;
                    Action::Fail
                } else {
                    Action::Accept
                }
            }
            Fault::Delay(d) => {
                return Decision {
                    delay: Some(d),
                    action: Action::Accept,
                };
            }
            Fault::NotForTopic => Action::NotForTopic,
            Fault::Respond { status, reason } => Action::Respond { status, reason },
        };
        Decision {
            delay: None,
            action,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names() {
        assert_eq!(Fault::from_token_name("deadbeef"), Some(Fault::Dead));
        assert_eq!(Fault::from_token_name("DEADBEEF"), Some(Fault::Dead));
        assert_eq!(Fault::from_token_name("baddcafe"), Some(Fault::BadToken));
        assert_eq!(
            Fault::from_token_name("c0017fff"),
            Some(Fault::Throttle {
                retry_after_secs: 7
            })
        );
        assert_eq!(
            Fault::from_token_name("c001ffff"),
            Some(Fault::Throttle {
                retry_after_secs: 1
            })
        );
        assert_eq!(
            Fault::from_token_name("fa113abc"),
            Some(Fault::FailTimes(3))
        );
        assert_eq!(
            Fault::from_token_name("de1a250f"),
            Some(Fault::Delay(Duration::from_millis(250)))
        );
        // Only five digits are read, so a long numeric tail stays bounded.
        assert_eq!(
            Fault::from_token_name("de1a1234567890"),
            Some(Fault::Delay(Duration::from_millis(12345)))
        );
        assert_eq!(Fault::from_token_name("0dead"), None);
        assert_eq!(Fault::from_token_name("dea"), None);
        assert_eq!(Fault::from_token_name("é"), None);
    }

    #[test]
    fn fail_times_then_accept_and_explicit_wins() {
        let f = Faults::default();
        assert_eq!(f.decide("fa112x").action, Action::Fail);
        assert_eq!(f.decide("fa112x").action, Action::Fail);
        assert_eq!(f.decide("fa112x").action, Action::Accept);
        f.set("fa112x", Fault::Dead);
        assert_eq!(f.decide("fa112x").action, Action::Dead);
        f.clear("fa112x");
        // Clearing restarts the name's failure budget.
        assert_eq!(f.decide("fa112x").action, Action::Fail);
        assert_eq!(f.decide("0abc").action, Action::Accept);
    }

    #[test]
    fn spec_json_round_trip() {
        let spec: FaultSpec = serde_json::from_str(r#"{"kind":"fail_times","times":3}"#).unwrap();
        assert_eq!(Fault::from(spec), Fault::FailTimes(3));
        let spec: FaultSpec = serde_json::from_str(r#"{"kind":"throttle"}"#).unwrap();
        assert_eq!(
            Fault::from(spec.clone()),
            Fault::Throttle {
                retry_after_secs: 1
            }
        );
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({"kind":"throttle","retry_after_secs":1})
        );
        assert!(serde_json::from_str::<FaultSpec>(r#"{"kind":"nope"}"#).is_err());
    }
}
