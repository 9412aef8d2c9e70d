//! Per app: when its provider last took a push, and when and why it last
//! failed. This is what `nudge status` (`GET /status`, `http/status.rs`)
//! shows an operator who asks "is the APNs key still good?", without a
//! metrics stack. Every provider request the dispatcher makes is recorded
//! here, once, where it is sent (`Dispatcher::send`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use nudge_plugins::Outcome;
use serde::{Deserialize, Serialize};

/// The last success and the last failure of one app's provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    /// Unix seconds of the last push the provider took.
    pub last_success_at: Option<i64>,
    /// Unix seconds of the last push the provider did not take.
    pub last_error_at: Option<i64>,
    /// That failure: the outcome's kind (`transient`, `throttled`,
    /// `rejected`, `invalid_token`) and the provider's reason.
    pub last_error: Option<String>,
    /// Pushes the provider took since this process started.
    pub delivered: u64,
    /// Pushes it did not take since this process started.
    pub failed: u64,
}

/// Every app's record, by app name.
#[derive(Debug, Default)]
pub struct Ledger {
    apps: Mutex<BTreeMap<String, AppRecord>>,
}

impl Ledger {
    /// Records one provider request of `app` that ended with `outcome` at
    /// unix second `at`.
    pub fn record(&self, app: &str, outcome: &Outcome, at: i64) {
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        if !apps.contains_key(app) {
            apps.insert(app.to_owned(), AppRecord::default());
        }
        let Some(record) = apps.get_mut(app) else {
            return;
        };
        match outcome {
            Outcome::Delivered => {
                record.last_success_at = Some(at);
                record.delivered += 1;
            }
            other => {
                record.last_error_at = Some(at);
                record.last_error = Some(describe(other));
                record.failed += 1;
            }
        }
    }

    /// A copy of every app's record.
    pub fn snapshot(&self) -> BTreeMap<String, AppRecord> {
        self.apps.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Delivered => "delivered".into(),
        Outcome::InvalidToken { reason }
        | Outcome::Transient { reason, .. }
        | Outcome::Rejected { reason } => format!("{}: {reason}", outcome.kind()),
        Outcome::Throttled { retry_after } => match retry_after {
            Some(d) => format!("throttled: retry after {} s", d.as_secs()),
            None => "throttled".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_success_and_the_last_failure_apart() {
        let ledger = Ledger::default();
        ledger.record("ios", &Outcome::Delivered, 10);
        ledger.record(
            "ios",
            &Outcome::Transient {
                reason: "503".into(),
                retry_after: None,
            },
            11,
        );
        ledger.record("ios", &Outcome::Delivered, 12);
        ledger.record(
            "android",
            &Outcome::Rejected {
                reason: "bad key".into(),
            },
            13,
        );
        let apps = ledger.snapshot();
        let ios = &apps["ios"];
        assert_eq!(ios.last_success_at, Some(12));
        assert_eq!(ios.last_error_at, Some(11));
        assert_eq!(ios.last_error.as_deref(), Some("transient: 503"));
        assert_eq!((ios.delivered, ios.failed), (2, 1));
        let android = &apps["android"];
        assert_eq!(android.last_success_at, None);
        assert_eq!(android.last_error.as_deref(), Some("rejected: bad key"));
    }
}
