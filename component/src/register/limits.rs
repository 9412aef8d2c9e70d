//! Limits on registration commands, so that one account cannot fill the
//! database or keep it busy (`[register]` in `deploy/nudge.example.toml`):
//! a rate per account (a keyed GCRA limiter from `governor`: the whole
//! minute's allowance at once, then evenly spread, so that a client's burst
//! at start passes) and a cap on the registrations an account holds, which
//! the store enforces in the same statement as the insert.
//!
//! The answers are stanza errors of the command, which goes from the user's
//! client to us; no XMPP server disables anything for them. Over the rate:
//! `wait` / `policy-violation` (RFC 6120 §8.3.3.12 lets that condition be
//! `wait`): the account broke a local policy, and retrying later works.
//! Over the cap: `modify` / `policy-violation`: retrying does not help until
//! the account unregisters something, and the text says so.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RegisterConfig;
use crate::xmpp::stanza::{DefinedCondition, ErrorType, StanzaError};

/// Every this many checks, accounts whose allowance is full again are
/// forgotten, so that the limiter's memory follows the active accounts.
const FORGET_EVERY: u64 = 1024;

/// The registration limits of one instance.
pub struct RegisterLimits {
    per_account: DefaultKeyedRateLimiter<String>,
    max_per_account: u32,
    checks: AtomicU64,
}

/// Why a registration command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("too many registration commands from {account}; retry in {} s", retry_after.as_secs().max(1))]
    TooFrequent {
        account: String,
        retry_after: Duration,
    },
    #[error("{account} already has {max} registrations, the most allowed: unregister one first")]
    TooMany { account: String, max: u32 },
}

impl LimitError {
    /// The command's answer.
    pub fn to_stanza_error(&self) -> StanzaError {
        let kind = match self {
            LimitError::TooFrequent { .. } => ErrorType::Wait,
            LimitError::TooMany { .. } => ErrorType::Modify,
        };
        StanzaError::new(kind, DefinedCondition::PolicyViolation).with_text(self.to_string())
    }
}

impl RegisterLimits {
    pub fn new(config: &RegisterConfig) -> Self {
        let rate = NonZeroU32::new(config.per_account_per_minute).unwrap_or(NonZeroU32::MIN);
        RegisterLimits {
            per_account: RateLimiter::keyed(Quota::per_minute(rate)),
            max_per_account: config.max_per_account.max(1),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one command of `account` (a bare JID) against its rate.
    pub fn check_rate(&self, account: &str) -> Result<(), LimitError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.per_account.retain_recent();
            self.per_account.shrink_to_fit();
        }
        self.per_account
            .check_key(&account.to_owned())
            .map_err(|not_until| LimitError::TooFrequent {
                account: account.to_owned(),
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    /// Registrations one account may hold.
    pub fn max_per_account(&self) -> u32 {
        self.max_per_account
    }

    /// The refusal for an account at its cap.
    pub fn too_many(&self, account: &str) -> LimitError {
        LimitError::TooMany {
            account: account.to_owned(),
            max: self.max_per_account,
        }
    }
}

impl Default for RegisterLimits {
    fn default() -> Self {
        Self::new(&RegisterConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32) -> RegisterLimits {
        RegisterLimits::new(&RegisterConfig {
            per_account_per_minute: per_minute,
            max_per_account: 5,
        })
    }

    #[test]
    fn the_minute_allowance_passes_at_once_then_waits_per_account() {
        let l = limits(3);
        for _ in 0..3 {
            l.check_rate("alice@example.org").unwrap();
        }
        let Err(LimitError::TooFrequent { retry_after, .. }) = l.check_rate("alice@example.org")
        else {
            panic!("fourth command within the minute passed");
        };
        assert!(
            retry_after > Duration::from_secs(10) && retry_after <= Duration::from_secs(20),
            "{retry_after:?}"
        );
        l.check_rate("bob@example.org").unwrap();
    }

    #[test]
    fn answers_tell_wait_from_modify() {
        let l = limits(1);
        l.check_rate("a@b").unwrap();
        let e = l.check_rate("a@b").unwrap_err().to_stanza_error();
        assert_eq!(
            (e.kind, e.condition),
            (ErrorType::Wait, DefinedCondition::PolicyViolation)
        );
        assert!(e.text.unwrap().contains("retry in"));
        let e = l.too_many("a@b").to_stanza_error();
        assert_eq!(
            (e.kind, e.condition),
            (ErrorType::Modify, DefinedCondition::PolicyViolation)
        );
        assert!(e.text.unwrap().contains("5 registrations"));
    }
}
