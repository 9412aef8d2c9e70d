//! Fault injection per device token: what the mocks answer instead of a
//! success, so that the reliability tests can watch Nudge handle dead
//! tokens, throttling, provider outages and slow providers.
//!
//! A fault comes from one of three places, checked in this order:
//! 1. set explicitly for the token ([`crate::TestApp::set_fault`] or `PUT
//!    /api/faults/{token}`);
//! 2. set for every token of one mock, as a provider-wide outage
//!    ([`crate::TestApp::set_provider_fault`] or `PUT
//!    /api/provider-faults/{apns|fcm|webpush}`);
//! 3. the token's name (a prefix, case-insensitive). The prefixes are
//!    hex-only so they work for APNs tokens, which are hex. For Web Push the
//!    name is the subscription's id (the last path segment of its
//!    endpoint), since its token is a URL:
//!
//! | prefix | fault | APNs answer | FCM answer | Web Push answer |
//! |---|---|---|---|---|
//! | `dead` | [`Fault::Dead`] | 410 `Unregistered` + `timestamp` | 404 `UNREGISTERED` | 410 `Gone` |
//! | `badd` | [`Fault::BadToken`] | 400 `BadDeviceToken` | 400 `INVALID_ARGUMENT` | 404 `NotFound` |
//! | `c001`*N* | [`Fault::Throttle`], Retry-After *N* s (default 1) | 429 `TooManyRequests` | 429 `QUOTA_EXCEEDED` | 429 `TooManyRequests` |
//! | `fa11`*N* | [`Fault::FailTimes`] *N* (default 1), then success | 500 `InternalServerError` | 503 `UNAVAILABLE` | 503 `ServiceUnavailable` |
//! | `de1a`*N* | [`Fault::Delay`] *N* ms (default 1000), then the normal answer | | | |
//!
//! [`crate::webpush`] lists the Web Push answer to every fault.
//!
//! *N* is the run of decimal digits right after the prefix (at most 5), so
//! `fa113` followed by non-digits fails three times; pad the rest of an
//! APNs token with `f`s (`fa113fff…`). Tokens from
//! [`crate::random_apns_token`] start with `0` and never match a prefix.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::recorder::Provider;

/// What a mock does for one device token instead of (or before) accepting
/// the push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The token is gone for good (app uninstalled): APNs 410
    /// `Unregistered` with a `timestamp`, FCM 404 `UNREGISTERED`, Web Push
    /// 410 `Gone`.
    Dead,
    /// The token is malformed or for another environment: APNs 400
    /// `BadDeviceToken`, FCM 400 `INVALID_ARGUMENT`, Web Push 404 `NotFound`.
    BadToken,
    /// Too many pushes for this device: APNs 429 `TooManyRequests`, FCM 429
    /// `QUOTA_EXCEEDED`, Web Push 429, all with `Retry-After` (real APNs sends no
    /// Retry-After; it is added so a backend can be tested honouring it).
    Throttle { retry_after_secs: u64 },
    /// The provider fails the next `n` pushes for this token (APNs 500
    /// `InternalServerError`, FCM 503 `UNAVAILABLE`, Web Push 503
    /// `ServiceUnavailable`), then accepts them.
    FailTimes(u32),
    /// The provider is down until this instant (APNs 503
    /// `ServiceUnavailable`, FCM 503 `UNAVAILABLE`, Web Push 503
    /// `ServiceUnavailable`), then accepts pushes:
    /// an outage of a given length, whatever the number of attempts.
    FailUntil(Instant),
    /// The answer (whatever it is) comes after this delay.
    Delay(Duration),
    /// The token belongs to another app: APNs 400 `DeviceTokenNotForTopic`,
    /// FCM 403 `SENDER_ID_MISMATCH`, Web Push 403 `Forbidden` (made for
    /// another VAPID key).
    NotForTopic,
    /// Any other answer: the status and APNs reason / FCM error code given.
    Respond { status: u16, reason: String },
}

/// The JSON form of a [`Fault`] on the control API, e.g.
/// `{"kind":"throttle","retry_after_secs":5}` or
/// `{"kind":"fail_times","times":3}`. `{"kind":"fail_for","ms":10000}` is
/// a [`Fault::FailUntil`] ending that long after it is set; read back, it
/// shows the milliseconds left.
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
    FailFor {
        ms: u64,
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<FaultSpec> for Fault {
    fn from(spec: FaultSpec) -> Self {
        match spec {
            FaultSpec::Dead => Fault::Dead,
            FaultSpec::BadToken => Fault::BadToken,
            FaultSpec::Throttle { retry_after_secs } => Fault::Throttle { retry_after_secs },
            FaultSpec::FailTimes { times } => Fault::FailTimes(times),
            FaultSpec::FailFor { ms } => Fault::FailUntil(
                Instant::now()
                    .checked_add(Duration::from_millis(ms))
                    // Beyond what Instant can hold: a year is forever here.
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86_400)),
            ),
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
            Fault::FailUntil(until) => FaultSpec::FailFor {
                ms: millis(until.saturating_duration_since(Instant::now())),
            },
            Fault::Delay(d) => FaultSpec::Delay { ms: millis(*d) },
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
    /// A [`Fault::FailUntil`] outage still in force.
    Unavailable,
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
    /// Faults for every token of one mock.
    provider: HashMap<Provider, Fault>,
    /// Failures already served per token for `FailTimes`, whether the fault
    /// was set explicitly or comes from the name.
    failures: HashMap<String, u32>,
    /// Failures already served per token for a provider-wide `FailTimes`
    /// (each token fails that many times).
    provider_failures: HashMap<(Provider, String), u32>,
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

    /// Sets (replaces) the fault for every token of one mock and restarts
    /// its per-token failure counts.
    pub fn set_provider(&self, provider: Provider, fault: Fault) {
        let mut inner = self.lock();
        inner.provider_failures.retain(|(p, _), _| *p != provider);
        inner.provider.insert(provider, fault);
    }

    /// Removes the provider-wide fault of one mock.
    pub fn clear_provider(&self, provider: Provider) {
        let mut inner = self.lock();
        inner.provider_failures.retain(|(p, _), _| *p != provider);
        inner.provider.remove(&provider);
    }

    /// The provider-wide faults in force.
    pub fn list_providers(&self) -> Vec<(Provider, Fault)> {
        let inner = self.lock();
        let mut v: Vec<_> = inner
            .provider
            .iter()
            .map(|(p, f)| (*p, f.clone()))
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v
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

    /// Decides what to do with one request to `provider` for `token`,
    /// counting it against a `FailTimes` budget.
    pub fn decide(&self, provider: Provider, token: &str) -> Decision {
        self.decide_named(provider, token, token)
    }

    /// [`decide`](Self::decide) for a token whose name prefix is read from
    /// `name` instead of the token itself (Web Push: the subscription id,
    /// as the token starts with the endpoint URL).
    pub fn decide_named(&self, provider: Provider, token: &str, name: &str) -> Decision {
        let mut inner = self.lock();
        let (fault, provider_wide) = match inner.explicit.get(token) {
            Some(f) => (Some(f.clone()), false),
            None => match inner.provider.get(&provider) {
                Some(f) => (Some(f.clone()), true),
                None => (Fault::from_token_name(name), false),
            },
        };
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
                let served = if provider_wide {
                    inner
                        .provider_failures
                        .entry((provider, token.to_owned()))
                        .or_insert(0)
                } else {
                    inner.failures.entry(token.to_owned()).or_insert(0)
                };
                if *served < n {
                    *served += 1;
                    Action::Fail
                } else {
                    Action::Accept
                }
            }
            Fault::FailUntil(until) if Instant::now() < until => Action::Unavailable,
            Fault::FailUntil(_) => Action::Accept,
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
        assert_eq!(f.decide(Provider::Apns, "fa112x").action, Action::Fail);
        assert_eq!(f.decide(Provider::Apns, "fa112x").action, Action::Fail);
        assert_eq!(f.decide(Provider::Apns, "fa112x").action, Action::Accept);
        f.set("fa112x", Fault::Dead);
        assert_eq!(f.decide(Provider::Apns, "fa112x").action, Action::Dead);
        f.clear("fa112x");
        // Clearing restarts the name's failure budget.
        assert_eq!(f.decide(Provider::Apns, "fa112x").action, Action::Fail);
        assert_eq!(f.decide(Provider::Apns, "0abc").action, Action::Accept);
    }

    #[test]
    fn fail_until_ends_by_time() {
        let f = Faults::default();
        f.set("t", FaultSpec::FailFor { ms: 150 }.into());
        // However many attempts come meanwhile.
        for _ in 0..5 {
            assert_eq!(f.decide(Provider::Fcm, "t").action, Action::Unavailable);
        }
        let left = match FaultSpec::from(&f.list()[0].1) {
            FaultSpec::FailFor { ms } => ms,
            other => panic!("{other:?}"),
        };
        assert!(left <= 150 && left > 0, "{left}");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(f.decide(Provider::Fcm, "t").action, Action::Accept);
        assert_eq!(
            FaultSpec::from(&f.list()[0].1),
            FaultSpec::FailFor { ms: 0 }
        );
    }

    #[test]
    fn provider_wide_faults() {
        let f = Faults::default();
        f.set_provider(Provider::Fcm, Fault::FailTimes(2));
        // Each token gets its own budget; the other mock is untouched.
        for token in ["a", "b"] {
            assert_eq!(f.decide(Provider::Fcm, token).action, Action::Fail);
            assert_eq!(f.decide(Provider::Fcm, token).action, Action::Fail);
            assert_eq!(f.decide(Provider::Fcm, token).action, Action::Accept);
        }
        assert_eq!(f.decide(Provider::Apns, "a").action, Action::Accept);
        // A token's own fault wins over the provider's; the provider's wins
        // over the token's name.
        f.set("a", Fault::Dead);
        assert_eq!(f.decide(Provider::Fcm, "a").action, Action::Dead);
        f.set_provider(Provider::Fcm, FaultSpec::FailFor { ms: 60_000 }.into());
        assert_eq!(f.decide(Provider::Fcm, "dead1").action, Action::Unavailable);
        assert_eq!(f.list_providers().len(), 1);
        f.clear_provider(Provider::Fcm);
        assert_eq!(f.decide(Provider::Fcm, "dead1").action, Action::Dead);
        assert_eq!(f.decide(Provider::Fcm, "b").action, Action::Accept);
        f.set_provider(Provider::Apns, Fault::BadToken);
        f.reset();
        assert!(f.list_providers().is_empty());
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
