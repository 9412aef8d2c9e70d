//! The outbox's retry worker: delivers the pushes that were accepted but not
//! taken by the provider (failed for now, slow, deferred by a rate limit,
//! merged behind a push that was out), with exponential backoff and jitter
//! that honours a provider's Retry-After, until they are delivered or their
//! time to live runs out. It starts with the service, so a restart resumes
//! whatever the outbox holds. A row without a registration is sent to the
//! device it carries, if it is a stateless push's (`store/outbox.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::slots::RowClaim;
use super::{Carried, DispatchSettings, Dispatcher, Verdict, bump, millis};
use crate::store::{NodeForLog, QueuedPush, Registration, StoreError, now, now_ms};

/// Rows read per pass.
const BATCH: i64 = 256;
/// Longest sleep between passes when nothing wakes the worker.
const IDLE_PASS: Duration = Duration::from_millis(250);
/// How often expired rows are dropped and idle rate-limit keys forgotten.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// The delay before attempt `attempts + 1`: `retry_min` doubling per
/// failed attempt up to `retry_max`, with jitter, and never sooner than
/// the provider's Retry-After.
pub fn delay(
    settings: &DispatchSettings,
    attempts: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let backoff = ExponentialBuilder::new()
        .with_min_delay(settings.retry_min)
        .with_max_delay(settings.retry_max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts.saturating_sub(1) as usize)
        .unwrap_or(settings.retry_max);
    match retry_after {
        Some(wait) => wait.max(backoff.min(settings.retry_max)),
        None => backoff,
    }
}

/// Runs the worker until the task is aborted.
pub async fn run(dispatcher: Arc<Dispatcher>) {
    match dispatcher.outbox.nodes().await {
        Ok(nodes) => {
            if !nodes.is_empty() {
                info!(queued = nodes.len(), "resuming the outbox");
            }
            for node in &nodes {
                dispatcher.slots.set_queued(node, true);
            }
        }
        Err(e) => {
            error!(error = %e, "could not read the outbox at start-up; retrying in the passes")
        }
    }
    let permits = Arc::new(Semaphore::new(dispatcher.settings.outbox_concurrency));
    let mut housekept = Instant::now() - HOUSEKEEPING;
    let mut storage_failing = false;
    loop {
        if housekept.elapsed() >= HOUSEKEEPING {
            housekeeping(&dispatcher).await;
            housekept = Instant::now();
        }
        match pass(&dispatcher, &permits).await {
            Ok(more) => {
                if storage_failing {
                    info!("outbox readable again");
                    storage_failing = false;
                }
                if more {
                    continue;
                }
            }
            Err(e) => {
                if !storage_failing {
                    error!(error = %e, "cannot read the outbox; retrying every second");
                    storage_failing = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        tokio::select! {
            () = dispatcher.wake.notified() => {}
            () = tokio::time::sleep(IDLE_PASS) => {}
        }
    }
}

/// One pass over the due rows; true when there may be more due now.
///
/// Rows are claimed in the database first ([`crate::store::Outbox::claim_due`]:
/// several instances may share it), then in memory ([`Slots::claim_row`],
/// which keeps the pushes of one device in order on this instance). Only as
/// many rows are claimed as there are free permits: a claimed row that
/// waited behind slow sends could outlive its claim, and another instance
/// would send it too.
///
/// [`Slots::claim_row`]: super::slots::Slots::claim_row
async fn pass(
    dispatcher: &Arc<Dispatcher>,
    permits: &Arc<Semaphore>,
) -> Result<bool, crate::store::StoreError> {
    // Wait for a free permit, then take every free one (up to a batch):
    // only this pass takes permits, and each claimed row gets one.
    let Ok(mut free) = permits.clone().acquire_owned().await else {
        return Ok(false); // never closed
    };
    let more = u32::try_from(permits.available_permits())
        .unwrap_or(u32::MAX)
        .min(BATCH as u32 - 1);
    if let Ok(extra) = permits.clone().try_acquire_many_owned(more) {
        free.merge(extra);
    }
    let limit = free.num_permits() as i64;
    let until = now_ms() + millis(dispatcher.settings.claim_for());
    let rows = dispatcher.outbox.claim_due(now_ms(), until, limit).await?;
    let full = rows.len() as i64 == limit;
    let mut claimed = 0;
    for row in rows {
        match dispatcher.slots.claim_row(
            &row.node,
            row.notification.is_important(),
            row.received_us,
        ) {
            RowClaim::Claimed => {}
            RowClaim::Busy => {
                // Its device has a push out from this instance; the row
                // stays claimed until that send ends and reschedules it
                // (after the coalescing window), or until the claim time
                // if this instance dies.
                continue;
            }
            RowClaim::Stale => {
                dispatcher.row_delivered(&row.node, row.seq).await;
                continue;
            }
        }
        // One of the permits taken above (the claim's limit was their
        // number, so there is one per row).
        let Some(permit) = free.split(1) else {
            dispatcher.slots.finish(&row.node);
            break;
        };
        claimed += 1;
        let node = NodeForLog(&row.node);
        // The app is known once the registration is read (`deliver`).
        let span =
            info_span!("retry", node = %node, app = tracing::field::Empty, attempts = row.attempts);
        let out = dispatcher.background.enter();
        let delivery = deliver(dispatcher.clone(), row, Some(permit), false);
        tokio::spawn(
            async move {
                let _out = out;
                delivery.await
            }
            .instrument(span),
        );
    }
    Ok(full && claimed > 0)
}

/// Tries a node's row now, before its backoff ran out (an important
/// publish came: the provider may be back). A failure leaves the backoff as
/// it was; a row being sent already (from this instance or another), or
/// covered, is left alone.
pub(super) async fn try_early(dispatcher: Arc<Dispatcher>, node: String) {
    let row = match dispatcher.outbox.get(&node).await {
        Ok(Some(row)) => row,
        Ok(None) => return,
        Err(e) => {
            debug!(error = %e, "could not read a row to try early");
            return;
        }
    };
    if dispatcher
        .slots
        .claim_row(&node, row.notification.is_important(), row.received_us)
        != RowClaim::Claimed
    {
        return;
    }
    let now = now_ms();
    let until = now + millis(dispatcher.settings.claim_for());
    match dispatcher.outbox.claim(&node, row.seq, now, until).await {
        Ok(true) => {
            let _out = dispatcher.background.enter();
            deliver(dispatcher.clone(), row, None, true).await;
        }
        _ => {
            // Merged into meanwhile, out from another instance (which
            // settles it), or unreadable: the worker takes it when due.
            dispatcher.slots.finish(&node);
            dispatcher.wake.notify_one();
        }
    }
}

/// Delivers one claimed row (`early`: before it was due).
async fn deliver(
    dispatcher: Arc<Dispatcher>,
    row: QueuedPush,
    _permit: Option<OwnedSemaphorePermit>,
    early: bool,
) {
    let node = row.node.clone();
    let carried = Carried {
        seq: row.seq,
        attempts: row.attempts,
        early_of: early.then_some(row.due_at_ms),
    };
    let verdict = match registration_of(&dispatcher, &row).await {
        Ok(Some(reg)) => {
            tracing::Span::current().record("app", reg.app.as_str());
            // Counted against its limits (it is due, so it goes either
            // way): the next publish waits as after any push.
            let _ = dispatcher.check_limits(&reg, &reg.domain);
            let outcome = dispatcher.send(&reg, &row.notification).await;
            let verdict = dispatcher
                .settle(
                    &reg,
                    &row.notification,
                    row.received_us,
                    outcome,
                    Some(carried),
                )
                .await;
            if verdict == Verdict::Delivered && row.attempts > 0 {
                info!(
                    attempts = row.attempts,
                    waited_secs = now() - row.created_at,
                    "queued push delivered"
                );
            }
            verdict
        }
        Ok(None) => {
            info!("registration gone; dropping its queued push");
            bump(&dispatcher.stats.dropped_unregistered);
            dispatcher.drop_row(&node).await;
            Verdict::UnknownNode
        }
        Err(e) => {
            warn!(error = %e, "registration lookup failed; queued push retried later");
            let due = now_ms() + millis(delay(&dispatcher.settings, row.attempts + 1, None));
            dispatcher
                .reschedule(&node, row.attempts, due, "storage unavailable")
                .await;
            Verdict::StorageDown
        }
    };
    dispatcher.finish(&node, &verdict).await;
}

/// Whom a row is for: the node's registration, or, when there is none, the
/// stateless push's device the row carries. A registration wins: a row
/// cannot name another device than its node's.
async fn registration_of(
    dispatcher: &Dispatcher,
    row: &QueuedPush,
) -> Result<Option<Arc<Registration>>, StoreError> {
    match dispatcher.store.find(&row.node).await? {
        Some(reg) => Ok(Some(reg)),
        None => Ok(row.device.clone().map(Arc::new)),
    }
}

/// Drops expired rows (counted and logged) and forgets idle rate-limit keys.
async fn housekeeping(dispatcher: &Dispatcher) {
    match dispatcher.outbox.expire(now()).await {
        Ok(expired) => {
            for push in expired {
                dispatcher.stats.expired.fetch_add(1, Ordering::Relaxed);
                dispatcher.metrics.expired();
                dispatcher.slots.set_queued(&push.node, false);
                let node = NodeForLog(&push.node);
                warn!(%node, attempts = push.attempts, "queued push expired undelivered (outbox.ttl_secs)");
            }
        }
        Err(e) => debug!(error = %e, "could not expire outbox rows"),
    }
    dispatcher.limits.forget_idle();
    dispatcher.slots.forget_idle();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DispatchSettings {
        DispatchSettings {
            answer_within: Duration::from_millis(200),
            push_timeout: Duration::from_secs(10),
            ttl: Duration::from_secs(3600),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(300),
            outbox_concurrency: 16,
        }
    }

    #[test]
    fn delays_grow_with_jitter_up_to_the_cap() {
        let s = settings();
        for _ in 0..50 {
            let first = delay(&s, 1, None);
            assert!(first >= s.retry_min && first < s.retry_min * 2, "{first:?}");
            let third = delay(&s, 3, None);
            assert!(
                third >= s.retry_min * 4 && third < s.retry_min * 8,
                "{third:?}"
            );
            assert!(delay(&s, 60, None) <= s.retry_max * 2);
        }
    }

    #[test]
    fn retry_after_is_honoured() {
        let s = settings();
        assert!(delay(&s, 1, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
        // A short Retry-After does not undercut the backoff.
        assert!(delay(&s, 3, Some(Duration::from_millis(1))) >= s.retry_min * 4);
    }
}
