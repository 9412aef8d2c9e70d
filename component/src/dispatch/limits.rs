//! Rate limits on pushes, per registration and per publishing domain, so
//! that one chatty conversation or one misbehaving server cannot flood a
//! device or the provider quota every other user shares. Over a limit a
//! push is not dropped: the dispatcher defers it through the outbox until
//! the limit allows it, where later publishes merge into it.
//!
//! The stateless modes (`push/stateless/`) get limits of their own on top
//! ([`Limits::stateless`]): one push per token per interval (fpush's 20 s)
//! and a stricter rate per publishing domain, because there any server that
//! publishes to us can name any token.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::{LimitsConfig, StatelessLimitsConfig};

/// Keyed by a 64-bit hash of the node or domain, so that a check
/// allocates nothing (a collision merely shares a limit).
type KeyedLimiter = RateLimiter<u64, DefaultKeyedStateStore<u64>, DefaultClock>;

fn key(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

fn domain_key(domain: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for b in domain.bytes() {
        h.write_u8(b.to_ascii_lowercase());
    }
    h.finish()
}

/// The push rate limits.
pub struct Limits {
    per_registration: KeyedLimiter,
    per_domain: KeyedLimiter,
    clock: DefaultClock,
}

/// Which limit a push ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The registration's own rate (a stateless push's: its token's).
    Registration(Duration),
    /// The publishing domain's rate.
    Domain(Duration),
}

impl Limited {
    /// How long until the push is allowed.
    pub fn wait(self) -> Duration {
        match self {
            Limited::Registration(d) | Limited::Domain(d) => d,
        }
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    /// Limits as configured (`[limits]`).
    pub fn new(config: &LimitsConfig) -> Self {
        let per_registration = Quota::per_minute(nonzero(config.per_registration_per_minute))
            .allow_burst(nonzero(config.per_registration_burst));
        let per_domain = Quota::per_second(nonzero(config.per_domain_per_second))
            .allow_burst(nonzero(config.per_domain_burst));
        Limits {
            per_registration: RateLimiter::keyed(per_registration),
            per_domain: RateLimiter::keyed(per_domain),
            clock: DefaultClock::default(),
        }
    }

    /// Limits of a stateless mode: one push per token per
    /// `token_interval_secs`, and `per_domain_per_minute` (after a burst of
    /// `per_domain_burst`) per publishing domain. Checked with the token as
    /// the `node`.
    pub fn stateless(config: &StatelessLimitsConfig) -> Self {
        let per_token = Quota::with_period(Duration::from_secs(config.token_interval_secs.max(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::MIN);
        let per_domain = Quota::per_minute(nonzero(config.per_domain_per_minute))
            .allow_burst(nonzero(config.per_domain_burst));
        Limits {
            per_registration: RateLimiter::keyed(per_token),
            per_domain: RateLimiter::keyed(per_domain),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one push for `node` from `domain`, or says how long to wait.
    pub fn check(&self, node: &str, domain: &str) -> Result<(), Limited> {
        let now = self.clock.now();
        self.per_domain
            .check_key(&domain_key(domain))
            .map_err(|n| Limited::Domain(n.wait_time_from(now)))?;
        self.per_registration
            .check_key(&key(node))
            .map_err(|n| Limited::Registration(n.wait_time_from(now)))
    }

    /// Forgets keys whose limits are back to full, so that memory follows
    /// the active registrations, not every one ever seen.
    pub fn forget_idle(&self) {
        self.per_registration.retain_recent();
        self.per_registration.shrink_to_fit();
        self.per_domain.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_gets_its_burst_then_waits() {
        let limits = Limits::new(&LimitsConfig {
            per_registration_per_minute: 6,
            per_registration_burst: 3,
            per_domain_per_second: 1000,
            per_domain_burst: 1000,
        });
        for _ in 0..3 {
            assert_eq!(limits.check("n", "example.org"), Ok(()));
        }
        match limits.check("n", "example.org") {
            Err(Limited::Registration(d)) => {
                assert!(
                    d > Duration::from_secs(5) && d <= Duration::from_secs(10),
                    "{d:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Another registration is not affected.
        assert_eq!(limits.check("m", "example.org"), Ok(()));
    }

    #[test]
    fn a_stateless_token_gets_one_push_per_interval() {
        // The defaults: fpush's one push per token per 20 s.
        let limits = Limits::stateless(&StatelessLimitsConfig::default());
        assert_eq!(limits.check("token1", "example.org"), Ok(()));
        match limits.check("token1", "example.org") {
            Err(Limited::Registration(d)) => {
                assert!(
                    d > Duration::from_secs(19) && d <= Duration::from_secs(20),
                    "{d:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(limits.check("token2", "example.org"), Ok(()));
        // The domain's burst, then its rate.
        let limits = Limits::stateless(&StatelessLimitsConfig {
            token_interval_secs: 20,
            per_domain_per_minute: 60,
            per_domain_burst: 2,
        });
        assert_eq!(limits.check("a", "example.org"), Ok(()));
        assert_eq!(limits.check("b", "example.org"), Ok(()));
        assert!(matches!(
            limits.check("c", "example.org"),
            Err(Limited::Domain(d)) if d <= Duration::from_secs(1)
        ));
        assert_eq!(limits.check("c", "other.example"), Ok(()));
    }

    #[test]
    fn a_domain_is_limited_across_its_registrations() {
        let limits = Limits::new(&LimitsConfig {
            per_registration_per_minute: 600,
            per_registration_burst: 100,
            per_domain_per_second: 1,
            per_domain_burst: 2,
        });
        assert_eq!(limits.check("a", "Example.org"), Ok(()));
        assert_eq!(limits.check("b", "example.org"), Ok(()));
        assert!(matches!(
            limits.check("c", "example.org"),
            Err(Limited::Domain(_))
        ));
        assert_eq!(limits.check("c", "other.example"), Ok(()));
    }
}
