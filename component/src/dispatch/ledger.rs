//! Per app: when its provider last took a push, and when and why it last
//! failed. This is what `nudge status` (`GET /status`, `http/status.rs`)
//! shows an operator who asks "is the APNs key still good?", without a
//! metrics stack. Every provider request the dispatcher makes is recorded
//! here, once, where it is sent (`Dispatcher::send`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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

/// One app's slot: a delivery (the common case, on the publish path) is
/// two atomic stores; only a failure takes the lock for its reason.
#[derive(Debug, Default)]
struct AppSlot {
    /// Unix seconds of the last delivery; 0 for none yet.
    last_success_at: AtomicI64,
    delivered: AtomicU64,
    failed: AtomicU64,
    /// When and why the last failure.
    last_error: Mutex<Option<(i64, String)>>,
}

/// Every app's record, by app name: one slot per configured app, made
/// when the dispatcher is built.
#[derive(Debug, Default)]
pub struct Ledger {
    apps: HashMap<String, AppSlot>,
}

impl Ledger {
    /// A ledger with an empty record for each of `apps`.
    pub fn new<'a>(apps: impl IntoIterator<Item = &'a str>) -> Self {
        Ledger {
            apps: apps
                .into_iter()
                .map(|app| (app.to_owned(), AppSlot::default()))
                .collect(),
        }
    }

    /// Records one provider request of `app` that ended with `outcome` at
    /// unix second `at`. An app without a slot has no backend, so no
    /// request to record (`Dispatcher::send` answers it before sending).
    pub fn record(&self, app: &str, outcome: &Outcome, at: i64) {
        let Some(slot) = self.apps.get(app) else {
            return;
        };
        match outcome {
            Outcome::Delivered => {
                slot.last_success_at.fetch_max(at, Ordering::Relaxed);
                slot.delivered.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                slot.failed.fetch_add(1, Ordering::Relaxed);
                let mut last = slot.last_error.lock().unwrap_or_else(|e| e.into_inner());
                *last = Some((at, describe(other)));
            }
        }
    }

    /// A copy of every app's record.
    pub fn snapshot(&self) -> BTreeMap<String, AppRecord> {
        self.apps
            .iter()
            .map(|(app, slot)| {
                let last_error = slot
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let success = slot.last_success_at.load(Ordering::Relaxed);
                let record = AppRecord {
                    last_success_at: (success > 0).then_some(success),
                    last_error_at: last_error.as_ref().map(|(at, _)| *at),
                    last_error: last_error.map(|(_, why)| why),
                    delivered: slot.delivered.load(Ordering::Relaxed),
                    failed: slot.failed.load(Ordering::Relaxed),
                };
                (app.clone(), record)
            })
            .collect()
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
        let ledger = Ledger::new(["ios", "android"]);
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
