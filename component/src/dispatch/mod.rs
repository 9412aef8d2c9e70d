//! Dispatch: from an authorized publish to the device's push backend, and
//! from the provider's outcome to what becomes of the publish.
//!
//! The one place a push is sent. A publish is answered within
//! `dispatch.answer_within_ms`: if the provider has taken the push by then,
//! with what it said; if not (slow, down, throttled, or a rate limit defers
//! it), the push is written to the outbox and the publish answered `result`,
//! and the retry worker ([`retry`]) delivers it later. Neither Prosody nor
//! ejabberd re-sends a publish (`docs/answers.md`), so an accepted push
//! must never be lost, and a transient failure must never reach the user's
//! server as an error that disables push.
//!
//! - [`slots`]: coalescing, one push out per device plus a trailing one;
//! - [`limits`]: rate limits per registration and publishing domain, and
//!   the stricter ones of the stateless modes (per token and domain);
//! - [`brake`]: the brake on mass removal of dead tokens;
//! - [`verdict`]: what became of a publish, and its answer;
//! - [`retry`]: the outbox's retry worker;
//! - [`ledger`]: per app, the provider's last success and last failure.
//!
//! A stateless push (`push/stateless/`: Monal's fpush mode, MongooseIM's)
//! takes the same path with a [`Registration`] built from its publish: its
//! outbox row carries that device, and a dead token has no row to remove
//! (its publish is answered `item-not-found` all the same).

pub mod backends;
pub mod brake;
pub mod ledger;
pub mod limits;
pub mod retry;
pub mod slots;
pub mod verdict;

pub use backends::{Backends, ResolveError};
pub use verdict::Verdict;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nudge_plugins::{Notification, Outcome};
use tokio::sync::Notify;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::Config;
use crate::store::{Outbox, Registration, RegistrationStore, now, now_ms};
use brake::{Brake, Decision};
use limits::Limits;
use slots::{Begin, Slots};

/// The dispatcher's timing settings.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Longest wait before a publish is answered (`dispatch.answer_within_ms`).
    pub answer_within: Duration,
    /// Longest wait for one provider request (`dispatch.push_timeout_secs`).
    pub push_timeout: Duration,
    /// How long an accepted push is retried (`outbox.ttl_secs`).
    pub ttl: Duration,
    /// First and longest retry delay (`outbox.retry_min_ms`, `retry_max_secs`).
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Deliveries from the outbox at once (`outbox.concurrency`).
    pub outbox_concurrency: usize,
}

impl DispatchSettings {
    /// The settings of a configuration.
    pub fn from_config(config: &Config) -> Self {
        DispatchSettings {
            answer_within: Duration::from_millis(config.dispatch.answer_within_ms),
            push_timeout: Duration::from_secs(config.dispatch.push_timeout_secs),
            ttl: Duration::from_secs(config.outbox.ttl_secs),
            retry_min: Duration::from_millis(config.outbox.retry_min_ms),
            retry_max: Duration::from_secs(config.outbox.retry_max_secs),
            outbox_concurrency: config.outbox.concurrency,
        }
    }

    /// How long a row claimed for a send is left alone: past the push
    /// timeout, so that a crash mid-send leaves it to be retried.
    fn claim_for(&self) -> Duration {
        self.push_timeout + Duration::from_secs(2)
    }
}

/// Counts of what the dispatcher did since start-up, for logs and the
/// operator.
#[derive(Debug, Default)]
pub struct DispatchStats {
    /// Pushes the provider took.
    pub delivered: AtomicU64,
    /// Publishes answered with the push in the outbox.
    pub queued: AtomicU64,
    /// Publishes merged into a pending push.
    pub coalesced: AtomicU64,
    /// Pushes deferred by a rate limit.
    pub limited: AtomicU64,
    /// Failed attempts that were scheduled for a retry.
    pub retries: AtomicU64,
    /// Queued pushes dropped because their time to live ran out.
    pub expired: AtomicU64,
    /// Queued pushes dropped because the registration went away.
    pub dropped_unregistered: AtomicU64,
    /// Pushes the provider refused outright.
    pub rejected: AtomicU64,
    /// Registrations removed for a dead token.
    pub removed: AtomicU64,
    /// Removals held back by the brake.
    pub held: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The outbox row a send carries, if any: a delivery removes the row only
/// if nothing was merged into it meanwhile.
#[derive(Debug, Clone, Copy)]
struct Carried {
    seq: i64,
    attempts: u32,
    /// For an early attempt (an important publish trying a row before its
    /// backoff ran out): when the row was due. A failure then leaves the
    /// backoff as it was instead of counting an attempt.
    early_of: Option<i64>,
}

/// Sends pushes and decides what becomes of each publish.
pub struct Dispatcher {
    backends: Backends,
    store: RegistrationStore,
    outbox: Outbox,
    settings: DispatchSettings,
    slots: Slots,
    limits: Limits,
    /// The stateless modes' own limits, by dialect name.
    stateless_limits: Vec<(&'static str, Limits)>,
    brake: Brake,
    /// Wakes the retry worker when a row is due now.
    wake: Notify,
    /// Stamps publishes in the order they were read.
    clock: ReceivedClock,
    /// Sends out (fresh and from the outbox).
    background: Arc<Background>,
    /// What happened so far.
    pub stats: DispatchStats,
    /// Per app: the provider's last success and last failure.
    pub ledger: ledger::Ledger,
    /// The Prometheus handles (`metrics.rs`).
    pub metrics: crate::metrics::DispatchMetrics,
}

impl Dispatcher {
    /// A dispatcher for the configured apps.
    pub fn new(backends: Backends, store: RegistrationStore, config: &Config) -> Arc<Self> {
        let ledger = ledger::Ledger::new(backends.apps());
        Arc::new(Dispatcher {
            metrics: crate::metrics::DispatchMetrics::new(&backends),
            backends,
            outbox: store.outbox(),
            brake: Brake::new(&config.brake, store.brake()),
            store,
            settings: DispatchSettings::from_config(config),
            slots: Slots::new(Duration::from_millis(config.dispatch.coalesce_ms)),
            limits: Limits::new(&config.limits),
            stateless_limits: [
                ("fpush", config.dialects.fpush.as_ref().map(|c| &c.limits)),
                (
                    "mongooseim",
                    config.dialects.mongooseim.as_ref().map(|c| &c.limits),
                ),
            ]
            .into_iter()
            .filter_map(|(dialect, limits)| Some((dialect, Limits::stateless(limits?))))
            .collect(),
            wake: Notify::new(),
            clock: ReceivedClock::default(),
            background: Arc::default(),
            stats: DispatchStats::default(),
            ledger,
        })
    }

    /// The configured apps.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The timing settings.
    pub fn settings(&self) -> &DispatchSettings {
        &self.settings
    }

    /// Waits until no send is out, for at most `limit`; says whether none
    /// is.
    pub async fn background_idle(&self, limit: Duration) -> bool {
        self.background.idle(limit).await
    }

    /// Admits a publish for `node` in the order the stream delivered it,
    /// before its registration is looked up: this decides whether it is
    /// sent or merged into the pending push (publishes are then handled
    /// concurrently, so the order is fixed here, on the reader's path).
    pub fn admit(self: &Arc<Self>, node: &str, important: bool) -> Admission {
        let received_us = self.clock.next();
        Admission {
            begin: self.slots.begin(node, important, received_us),
            received_us,
            node: node.to_owned(),
            dispatcher: self.clone(),
            owns_send: true,
        }
    }

    /// Pushes an authorized publish for `reg`, sent by `domain`.
    pub async fn publish(
        self: &Arc<Self>,
        admission: Admission,
        reg: Arc<Registration>,
        notification: Notification,
        domain: &str,
    ) -> Verdict {
        let span = info_span!("publish", node = %reg.node_for_log(), app = %reg.app);
        self.publish_inner(admission, reg, notification, domain)
            .instrument(span)
            .await
    }

    async fn publish_inner(
        self: &Arc<Self>,
        mut admission: Admission,
        reg: Arc<Registration>,
        notification: Notification,
        domain: &str,
    ) -> Verdict {
        if self.backends.get(&reg.app).is_none() {
            error!("registration names an app that is not configured; keeping it");
            return Verdict::NoBackend;
        }
        let received = admission.received_us;
        match admission.begin {
            Begin::Send => {}
            Begin::Merge(wait) => {
                bump(&self.stats.coalesced);
                self.metrics.coalesced();
                let due = now_ms() + millis(wait);
                return self.queue(&reg, &notification, received, due).await;
            }
            Begin::MergeAndFlush => {
                // The row waits for a retry: an important message tries now
                // (the provider may be back) rather than after the backoff.
                bump(&self.stats.coalesced);
                self.metrics.coalesced();
                // Unless the row waits for a rate limit, which an
                // important message must not jump either: the limits bound
                // what reaches a device (and, for a stateless token, what
                // anyone may push to it).
                let (due, flush) = match self.check_limits(&reg, domain) {
                    Err(limited) => (now_ms() + millis(limited.wait()), false),
                    Ok(()) => (now_ms(), true),
                };
                let verdict = self.queue(&reg, &notification, received, due).await;
                if verdict == Verdict::Queued && flush {
                    tokio::spawn(
                        retry::try_early(self.clone(), reg.node.clone()).in_current_span(),
                    );
                }
                return verdict;
            }
        }
        if let Err(limited) = self.check_limits(&reg, domain) {
            drop(admission);
            bump(&self.stats.limited);
            self.metrics.rate_limited();
            debug!(
                ?limited,
                "rate limit: deferring the push through the outbox"
            );
            let due = now_ms() + millis(limited.wait());
            return self.queue(&reg, &notification, received, due).await;
        }
        // From here the send's own bookkeeping finishes the slot.
        admission.owns_send = false;
        self.send_fresh(reg, notification, received).await
    }

    /// Takes one push of `reg` from `domain` from the rate limits: a
    /// stateless push's mode's own (per token and domain) first, then
    /// `[limits]`.
    fn check_limits(&self, reg: &Registration, domain: &str) -> Result<(), limits::Limited> {
        if reg.is_stateless() {
            for (dialect, limits) in &self.stateless_limits {
                if *dialect == reg.dialect {
                    limits.check(&format!("{}\0{}", reg.app, reg.token), domain)?;
                }
            }
        }
        self.limits.check(&reg.node, domain)
    }

    /// Merges a publish into the node's outbox row (new rows due at
    /// `due_at_ms`).
    async fn queue(
        &self,
        reg: &Registration,
        notification: &Notification,
        received_us: i64,
        due_at_ms: i64,
    ) -> Verdict {
        let node = &reg.node;
        match self
            .outbox
            .merge(
                node,
                notification,
                stateless_device(reg),
                received_us,
                due_at_ms,
                self.expires_at(),
            )
            .await
        {
            Ok(_) => {
                self.slots.set_queued(node, true);
                bump(&self.stats.queued);
                if due_at_ms <= now_ms() {
                    self.wake.notify_one();
                }
                Verdict::Queued
            }
            Err(e) => {
                error!(error = %e, "could not write the push to the outbox");
                Verdict::StorageDown
            }
        }
    }

    /// Sends a push this publish owns the slot for, answering within
    /// `answer_within`: a send still out then is made durable in the outbox
    /// and finishes in a task of its own.
    async fn send_fresh(
        self: &Arc<Self>,
        reg: Arc<Registration>,
        notification: Notification,
        received_us: i64,
    ) -> Verdict {
        let notification = Arc::new(notification);
        let mut sending = Box::pin(self.clone().send_owned(reg.clone(), notification.clone()));
        if let Ok(outcome) = tokio::time::timeout(self.settings.answer_within, &mut sending).await {
            // Boxed, as below: a push waiting for its provider is what
            // every push in flight holds, and the paths after the answer
            // (settling, the outbox) would otherwise add their size to it.
            let verdict =
                Box::pin(self.settle(&reg, &notification, received_us, outcome, None)).await;
            Box::pin(self.finish(&reg.node, &verdict)).await;
            return verdict;
        }
        // Not taken in time: make it durable, then let the send finish on
        // its own. A row that is there already holds publishes merged
        // since, which are newer; it will be delivered after this send.
        let due = now_ms() + millis(self.settings.claim_for());
        let inserted = Box::pin(self.outbox.insert_new(
            &reg.node,
            &notification,
            stateless_device(&reg),
            received_us,
            due,
            self.expires_at(),
        ))
        .await;
        let carried = match &inserted {
            Ok(Some(seq)) => {
                self.slots.set_queued(&reg.node, true);
                Some(Carried {
                    seq: *seq,
                    attempts: 0,
                    early_of: None,
                })
            }
            _ => None,
        };
        let out = self.background.enter();
        let this = self.clone();
        tokio::spawn(
            async move {
                let _out = out;
                let outcome = sending.await;
                let verdict = this
                    .settle(&reg, &notification, received_us, outcome, carried)
                    .await;
                this.finish(&reg.node, &verdict).await;
            }
            .in_current_span(),
        );
        match inserted {
            Ok(_) => {
                debug!("provider slow: answered, the push finishes in the background");
                bump(&self.stats.queued);
                Verdict::Queued
            }
            Err(e) => {
                error!(error = %e, "could not write a slow push to the outbox");
                Verdict::StorageDown
            }
        }
    }

    /// [`Dispatcher::send`] owning what it needs, so that a send can move
    /// to a task of its own halfway.
    async fn send_owned(
        self: Arc<Self>,
        reg: Arc<Registration>,
        notification: Arc<Notification>,
    ) -> Outcome {
        self.send(&reg, &notification).await
    }

    /// One provider request, bounded by the push timeout.
    async fn send(&self, reg: &Registration, notification: &Notification) -> Outcome {
        let Some(backend) = self.backends.get(&reg.app) else {
            return Outcome::Rejected {
                reason: format!("no backend for app {}", reg.app),
            };
        };
        let device = reg.device();
        let started = std::time::Instant::now();
        let outcome = match tokio::time::timeout(
            self.settings.push_timeout,
            backend.send(&device, notification),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Transient {
                reason: format!("no answer within {:?}", self.settings.push_timeout),
                retry_after: None,
            },
        };
        self.ledger.record(&reg.app, &outcome, now());
        self.metrics
            .provider_request(&reg.app, &outcome, started.elapsed());
        outcome
    }

    /// Acts on a provider's outcome for a push of `reg`, carrying the
    /// outbox row `carried` if any, and says what became of it.
    async fn settle(
        &self,
        reg: &Registration,
        notification: &Notification,
        received_us: i64,
        outcome: Outcome,
        carried: Option<Carried>,
    ) -> Verdict {
        let mut reg = std::borrow::Cow::Borrowed(reg);
        let mut outcome = outcome;
        // At most one more send: to the new token of a device that
        // registered again while its old token was being declared dead.
        for resend in [true, false] {
            debug!(outcome = outcome.kind(), "push outcome");
            match outcome {
                Outcome::Delivered => {
                    bump(&self.stats.delivered);
                    if let Some(c) = carried {
                        self.row_delivered(&reg.node, c.seq).await;
                    }
                    return Verdict::Delivered;
                }
                Outcome::Throttled { .. } | Outcome::Transient { .. } => {
                    let (why, retry_after) = match &outcome {
                        Outcome::Transient {
                            reason,
                            retry_after,
                        } => (reason.as_str(), *retry_after),
                        Outcome::Throttled { retry_after } => ("throttled", *retry_after),
                        _ => ("", None),
                    };
                    warn!(
                        outcome = outcome.kind(),
                        reason = why,
                        ?retry_after,
                        "push failed for now; queued for a retry"
                    );
                    return Box::pin(self.retry_later(
                        &reg,
                        notification,
                        received_us,
                        carried,
                        retry_after,
                        why,
                    ))
                    .await;
                }
                Outcome::Rejected { reason } => {
                    error!(outcome = "rejected", %reason, "provider rejected the push request; not retried");
                    bump(&self.stats.rejected);
                    if carried.is_some() {
                        self.drop_row(&reg.node).await;
                    }
                    return Verdict::ProviderRejected;
                }
                Outcome::InvalidToken { reason } => {
                    match Box::pin(self.dead_token(&reg, &reason, carried)).await {
                        DeadToken::Settled(verdict) => return verdict,
                        DeadToken::NewToken(fresh) if resend => {
                            info!("device registered a new token meanwhile; pushing to it");
                            outcome = self.send(&fresh, notification).await;
                            reg = std::borrow::Cow::Owned(*fresh);
                        }
                        DeadToken::NewToken(_) => {
                            return self
                                .retry_later(
                                    &reg,
                                    notification,
                                    received_us,
                                    carried,
                                    None,
                                    &reason,
                                )
                                .await;
                        }
                    }
                }
            }
        }
        Verdict::ProviderUnavailable
    }

    /// The provider declared `reg`'s token dead.
    async fn dead_token(
        &self,
        reg: &Registration,
        reason: &str,
        carried: Option<Carried>,
    ) -> DeadToken {
        match self
            .brake
            .decide(&reg.node, &reg.app, &reg.token, reason)
            .await
        {
            Ok(Decision::Remove) => {}
            Ok(Decision::Hold) => {
                bump(&self.stats.held);
                self.metrics.removal_held(&reg.app);
                warn!(outcome = "invalid_token", %reason, "token declared dead, removal held by the brake; registration kept");
                if let Some(c) = carried {
                    // Kept for when the operator has fixed the app.
                    let due = now_ms() + millis(self.settings.retry_max);
                    self.reschedule(&reg.node, c.attempts + 1, due, reason)
                        .await;
                }
                return DeadToken::Settled(Verdict::RemovalHeld);
            }
            Err(e) => {
                error!(error = %e, "removal brake: storage failed; keeping the registration");
                return DeadToken::Settled(Verdict::StorageDown);
            }
        }
        if reg.is_stateless() {
            // Nothing registered to remove: the publish is answered
            // `item-not-found`, and the server disables the node.
            warn!(outcome = "invalid_token", %reason, "provider says the token of a stateless push is dead");
            self.drop_row(&reg.node).await;
            return DeadToken::Settled(Verdict::TokenDead);
        }
        match self.store.remove_dead_token(&reg.node, &reg.token).await {
            Ok(true) => {
                bump(&self.stats.removed);
                self.metrics.registration_removed(&reg.app);
                warn!(outcome = "invalid_token", %reason, "provider says the token is dead; registration removed");
                self.drop_row(&reg.node).await;
                DeadToken::Settled(Verdict::TokenDead)
            }
            // Not removed: the device registered again with a new token,
            // or the registration is gone already.
            Ok(false) => match self.store.find(&reg.node).await {
                Ok(Some(fresh)) if fresh.token != reg.token => {
                    DeadToken::NewToken(Box::new(Registration::clone(&fresh)))
                }
                Ok(Some(_)) => DeadToken::Settled(Verdict::StorageDown),
                Ok(None) => {
                    self.drop_row(&reg.node).await;
                    DeadToken::Settled(Verdict::TokenDead)
                }
                Err(e) => {
                    error!(error = %e, "registration lookup failed");
                    DeadToken::Settled(Verdict::StorageDown)
                }
            },
            Err(e) => {
                // Not removed: answer `wait`; the next push retries the
                // removal rather than leaving a half state.
                error!(error = %e, "could not remove the registration of a dead token");
                DeadToken::Settled(Verdict::StorageDown)
            }
        }
    }

    /// A push failed for now: the outbox retries it.
    async fn retry_later(
        &self,
        reg: &Registration,
        notification: &Notification,
        received_us: i64,
        carried: Option<Carried>,
        retry_after: Option<Duration>,
        why: &str,
    ) -> Verdict {
        let node = &reg.node;
        let (attempts, due) = match carried {
            // The provider is still failing: back to the backoff it had.
            Some(Carried {
                attempts,
                early_of: Some(was_due),
                ..
            }) => (
                attempts,
                was_due.max(now_ms() + millis(self.settings.retry_min)),
            ),
            _ => {
                let attempts = carried.map_or(0, |c| c.attempts) + 1;
                let wait = retry::delay(&self.settings, attempts, retry_after);
                (attempts, now_ms() + millis(wait))
            }
        };
        bump(&self.stats.retries);
        self.metrics.retried();
        // A row that is there already is merged into, not replaced: it
        // holds publishes merged while this push was out (newer, and the
        // merge keeps the newest), or, with several instances, another
        // instance's row, whose send must then not count for this summary
        // (the merge bumps its `seq`).
        if carried.is_none()
            && let Err(e) = self
                .outbox
                .merge(
                    node,
                    notification,
                    stateless_device(reg),
                    received_us,
                    due,
                    self.expires_at(),
                )
                .await
        {
            error!(error = %e, "could not write the push to the outbox");
            return Verdict::StorageDown;
        }
        self.slots.set_queued(node, true);
        self.reschedule(node, attempts, due, why).await;
        bump(&self.stats.queued);
        Verdict::Queued
    }

    async fn reschedule(&self, node: &str, attempts: u32, due_at_ms: i64, why: &str) {
        if let Err(e) = self.outbox.retry_at(node, attempts, due_at_ms, why).await {
            // The row keeps its claim time and is retried then.
            error!(error = %e, "could not reschedule a queued push");
        }
    }

    /// The push carrying row `seq` was delivered.
    async fn row_delivered(&self, node: &str, seq: i64) {
        let row = self.slots.row_lock(node);
        let _row = row.lock().await;
        match self.outbox.delivered(node, seq).await {
            Ok(true) => self.slots.set_queued(node, false),
            Ok(false) => {
                // Publishes were merged in while it was out: the trailing
                // push is due now.
                if let Err(e) = self.outbox.reschedule(node, now_ms()).await {
                    error!(error = %e, "could not schedule a trailing push");
                }
                self.wake.notify_one();
            }
            Err(e) => {
                error!(error = %e, "could not clear a delivered push from the outbox; it may be sent twice")
            }
        }
    }

    async fn drop_row(&self, node: &str) {
        match self.outbox.remove(node).await {
            Ok(_) => self.slots.set_queued(node, false),
            Err(e) => error!(error = %e, "could not clear a push from the outbox"),
        }
    }

    /// A send of `node` is done. After a delivery, a row merged meanwhile
    /// goes out next, once the coalescing window has passed; after a
    /// failure the row keeps its backoff.
    async fn finish(&self, node: &str, verdict: &Verdict) {
        if let Some(wait) = self.slots.finish(node)
            && *verdict == Verdict::Delivered
        {
            if let Err(e) = self.outbox.reschedule(node, now_ms() + millis(wait)).await {
                error!(error = %e, "could not schedule a trailing push");
            }
            self.wake.notify_one();
        }
    }

    fn expires_at(&self) -> i64 {
        now() + i64::try_from(self.settings.ttl.as_secs()).unwrap_or(i64::MAX / 2)
    }
}

/// A publish admitted in stream order ([`Dispatcher::admit`]). Dropped
/// without being pushed (unknown node, wrong secret, storage down), it
/// gives back the send it took.
pub struct Admission {
    dispatcher: Arc<Dispatcher>,
    node: String,
    begin: Begin,
    received_us: i64,
    owns_send: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.owns_send
            && self.begin == Begin::Send
            && self.dispatcher.slots.cancel(&self.node).is_some()
        {
            self.dispatcher.wake.notify_one();
        }
    }
}

/// Counts the sends out, so that a stop can let them finish.
#[derive(Default)]
struct Background {
    out: AtomicUsize,
    idle: Notify,
}

/// One send out; counted until dropped.
pub(crate) struct Out(Arc<Background>);

impl Drop for Out {
    fn drop(&mut self) {
        if self.0.out.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Background {
    fn enter(self: &Arc<Self>) -> Out {
        self.out.fetch_add(1, Ordering::SeqCst);
        Out(self.clone())
    }

    async fn idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so that no wake-up is missed.
            notified.as_mut().enable();
            if self.out.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.out.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

/// Epoch microseconds, strictly increasing within the process: the order
/// in which publishes were read, kept with their outbox rows.
#[derive(Default)]
struct ReceivedClock {
    last: AtomicI64,
}

impl ReceivedClock {
    fn next(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2));
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}

/// What a dead-token verdict came to.
enum DeadToken {
    Settled(Verdict),
    /// The registration has a new token: push to it instead.
    NewToken(Box<Registration>),
}

/// The device an outbox row of `reg` carries: a stateless push's own (it
/// has no registration to look up at the retry), none for a registered one.
fn stateless_device(reg: &Registration) -> Option<&Registration> {
    reg.is_stateless().then_some(reg)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}
