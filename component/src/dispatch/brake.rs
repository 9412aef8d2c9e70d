//! The brake on mass removal. A provider calls a token dead for reasons
//! that are not the device's: APNs answers `BadDeviceToken` to a sandbox
//! token sent to the production endpoint, and a wrong topic or Firebase
//! project makes every token look foreign. Removing on such verdicts would
//! delete every registration of the app that gets a publish, and the users'
//! servers would turn off push for all of them.
//!
//! So when more than `dead_tokens` distinct tokens of one app are declared
//! dead within `window_secs`, removals stop for that app: registrations are
//! kept, publishes answered `wait`, the held removals recorded
//! (`store/brake.rs`) and an error logged that names the likely causes,
//! until the window passes without that many or an operator releases the
//! brake (`nudge brake release APP [--apply]`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::error;

use crate::config::BrakeConfig;
use crate::store::{BrakeStore, HeldRemoval, StoreError, now};

/// Whether a dead token's registration may be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Remove it.
    Remove,
    /// Keep it; the removal was recorded for the operator.
    Hold,
}

#[derive(Debug, Default)]
struct AppWindow {
    /// Distinct dead tokens in the window, oldest first.
    dead: VecDeque<(Instant, String)>,
    /// When the brake engaged (epoch seconds), while it is engaged.
    engaged_at: Option<i64>,
}

/// The brake, per app.
pub struct Brake {
    limit: usize,
    window: Duration,
    store: BrakeStore,
    apps: Mutex<HashMap<String, AppWindow>>,
}

impl Brake {
    /// A brake as configured (`[brake]`), recording in `store`.
    pub fn new(config: &BrakeConfig, store: BrakeStore) -> Self {
        Brake {
            limit: usize::try_from(config.dead_tokens).unwrap_or(usize::MAX),
            window: Duration::from_secs(config.window_secs),
            store,
            apps: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a dead-token verdict for `node` of `app` and decides.
    pub async fn decide(
        &self,
        node: &str,
        app: &str,
        token: &str,
        reason: &str,
    ) -> Result<Decision, StoreError> {
        let (engaged_at, newly, count) = {
            let mut apps = self.lock();
            let w = apps.entry(app.to_owned()).or_default();
            let now_i = Instant::now();
            while w
                .dead
                .front()
                .is_some_and(|(at, _)| now_i.duration_since(*at) > self.window)
            {
                w.dead.pop_front();
            }
            if !w.dead.iter().any(|(_, t)| t == token) {
                w.dead.push_back((now_i, token.to_owned()));
            }
            if w.dead.len() <= self.limit {
                w.engaged_at = None;
                return Ok(Decision::Remove);
            }
            let newly = w.engaged_at.is_none();
            let engaged_at = *w.engaged_at.get_or_insert_with(now);
            (engaged_at, newly, w.dead.len())
        };
        if newly {
            error!(
                %app, dead_tokens = count, window_secs = self.window.as_secs(),
                "removal brake engaged for app {app}: {count} distinct tokens declared dead within {} s; \
                 keeping these registrations and answering `wait` instead of removing them. \
                 Likely cause: the app's endpoint does not match its tokens (APNs sandbox vs production), \
                 a wrong APNs topic / bundle id or FCM project, or wrong credentials. \
                 Check the app's configuration; `nudge brake status` lists the held removals, \
                 `nudge brake release {app} --apply` removes them, `nudge brake release {app}` discards them",
                self.window.as_secs()
            );
            self.store.engage(app, engaged_at).await?;
        }
        // Released by an operator since it engaged: start counting afresh.
        if let Some(record) = self.store.record(app).await?
            && record.released_at >= engaged_at
        {
            if let Some(w) = self.lock().get_mut(app) {
                w.dead.clear();
                w.engaged_at = None;
            }
            return Ok(Decision::Remove);
        }
        self.store
            .hold(&HeldRemoval {
                node: node.to_owned(),
                app: app.to_owned(),
                token: token.to_owned(),
                reason: reason.to_owned(),
                held_at: now(),
            })
            .await?;
        Ok(Decision::Hold)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AppWindow>> {
        self.apps.lock().unwrap_or_else(|e| e.into_inner())
    }
}
