//! Hears about changes to the registration table made by any writer, so
//! that instances sharing one PostgreSQL agree on what they cache. Without
//! it an invalidation only reaches the instance that made the change: after
//! a device re-registered through one instance the others kept pushing to
//! the old token, and `nudge registrations remove` (a separate process)
//! reached none of them.
//!
//! A trigger on the table (`migrations/postgres/0003_registration_changes.sql`)
//! notifies channel [`CHANNEL`] with the changed node for every row any
//! writer inserts, updates or deletes, and with [`EVERY_NODE`] for a
//! `TRUNCATE`. One task per store listens on a connection of the store's
//! pool and invalidates what it hears.
//!
//! Notifications are not queued for a listener that is gone: those sent
//! while its connection is down are lost. So the cache serves nothing
//! unless the listener is subscribed (`RegistrationCache::set_listening`
//! in `component/src/store/cache.rs`): it starts out not listening, stops
//! (and is cleared) the moment the connection is seen lost, and resumes
//! only once the `LISTEN` on a new connection is active. A connection that
//! dies silently is not seen lost until TCP gives up; the maximum entry age
//! (`[storage] cache_max_age_secs`) bounds what that costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::cache::RegistrationCache;

/// The notification channel of registration changes; the payload is the
/// node whose row changed.
pub const CHANNEL: &str = "nudge_registrations";

/// The payload that stands for every node (a `TRUNCATE`); never a node,
/// which is base64url.
pub const EVERY_NODE: &str = "*";

/// The first wait before subscribing again after a failure; doubled per
/// failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The running listener of one store, from
/// [`RegistrationStore::listen_for_changes`](super::RegistrationStore::listen_for_changes).
/// Stops on drop or [`ChangeListener::stop`]; the store's cache then serves
/// nothing any more (it would not hear about changes).
#[derive(Debug)]
pub struct ChangeListener {
    task: JoinHandle<()>,
    state: watch::Receiver<State>,
    /// Notifications received so far.
    heard: Arc<AtomicU64>,
}

/// What the listener task tells its handle.
#[derive(Debug, Clone, Copy, Default)]
struct State {
    /// The `LISTEN` is active: the cache serves rows.
    listening: bool,
    /// How many times a `LISTEN` became active.
    subscriptions: u64,
}

impl ChangeListener {
    /// Starts listening on a connection of `pool`, invalidating `cache`.
    pub(super) fn spawn(pool: PgPool, cache: Arc<RegistrationCache>) -> Self {
        let (tx, rx) = watch::channel(State::default());
        let heard = Arc::new(AtomicU64::new(0));
        let shared = Shared {
            cache,
            state: tx,
            heard: heard.clone(),
        };
        ChangeListener {
            task: tokio::spawn(run(pool, shared)),
            state: rx,
            heard,
        }
    }

    /// Waits until the listener is subscribed (the cache serves rows from
    /// then on); `false` when it stopped first. Waits as long as the
    /// database cannot be reached: bound it with a timeout if needed.
    pub async fn listening(&self) -> bool {
        let mut state = self.state.clone();
        state.wait_for(|s| s.listening).await.is_ok()
    }

    /// Whether the listener is subscribed right now.
    pub fn is_listening(&self) -> bool {
        self.state.borrow().listening
    }

    /// How many times the listener subscribed: 1 after the first time, one
    /// more after each lost connection it came back from.
    pub fn subscriptions(&self) -> u64 {
        self.state.borrow().subscriptions
    }

    /// How many change notifications the listener received (this
    /// instance's own changes included).
    pub fn notifications(&self) -> u64 {
        self.heard.load(Ordering::Relaxed)
    }

    /// Stops listening, and waits until the task is gone (its connection
    /// goes back to the pool, so that closing the pool does not wait).
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for ChangeListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the task shares with the cache and the handle; dropping it (the
/// task ends, or is aborted) stops the cache from serving.
struct Shared {
    cache: Arc<RegistrationCache>,
    state: watch::Sender<State>,
    heard: Arc<AtomicU64>,
}

impl Shared {
    fn subscribed(&self) -> u64 {
        self.cache.set_listening(true);
        let mut subscriptions = 0;
        self.state.send_modify(|s| {
            s.listening = true;
            s.subscriptions += 1;
            subscriptions = s.subscriptions;
        });
        subscriptions
    }

    fn unsubscribed(&self) {
        self.cache.set_listening(false);
        self.state.send_modify(|s| s.listening = false);
    }

    fn changed(&self, node: &str) {
        self.heard.fetch_add(1, Ordering::Relaxed);
        if node == EVERY_NODE {
            self.cache.clear();
        } else {
            self.cache.invalidate(node);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.unsubscribed();
    }
}

/// Why a subscription ended.
enum Lost {
    /// The connection was closed under it (server restart, terminated
    /// backend, network).
    Connection,
    /// Receiving failed otherwise.
    Error(sqlx::Error),
}

/// Subscribes, hands every notification to the cache, and subscribes again
/// when the connection is lost; ends only when the pool is closed (or the
/// task is aborted).
async fn run(pool: PgPool, shared: Shared) {
    let mut backoff = MIN_BACKOFF;
    // A failure was logged and no subscription has worked since: log no
    // more (a loss is always logged, and sets it).
    let mut failing = false;
    loop {
        let mut listener = match subscribe(&pool).await {
            Ok(listener) => listener,
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                if failing {
                    debug!(%error, ?backoff, "still cannot listen for registration changes");
                } else {
                    warn!(%error, "cannot listen for registration changes; the registration cache serves nothing until it can");
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let since = Instant::now();
        let subscriptions = shared.subscribed();
        if subscriptions == 1 {
            info!(channel = CHANNEL, "listening for registration changes");
        } else {
            info!(
                channel = CHANNEL,
                subscriptions, "listening for registration changes again"
            );
        }
        let lost = loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => shared.changed(notification.payload()),
                Ok(None) => break Lost::Connection,
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => break Lost::Error(error),
            }
        };
        // Notifications sent from now until the next subscription are lost.
        shared.unsubscribed();
        drop(listener);
        match lost {
            Lost::Connection => warn!(
                "lost the connection that listens for registration changes; the registration cache is cleared and serves nothing until it listens again"
            ),
            Lost::Error(error) => warn!(
                %error,
                "listening for registration changes failed; the registration cache is cleared and serves nothing until it listens again"
            ),
        }
        failing = true;
        if since.elapsed() < MAX_BACKOFF {
            // A subscription that keeps dying at once must not spin.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            backoff = MIN_BACKOFF;
        }
    }
}

/// A listener on a connection of `pool` whose `LISTEN` is active.
async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Report a lost connection at once rather than after reconnecting: the
    // cache must stop serving for the whole time nothing is heard, and
    // `subscribe` is where it learns that the `LISTEN` is active again.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
