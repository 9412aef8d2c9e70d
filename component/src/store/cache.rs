//! The read-through cache in front of the registration table. Publishes
//! for a node come in bursts (one per message, neither server coalesces),
//! so caching the row keeps all but the first of a burst off the database.
//! Entries are removed on every change: the ones made through this instance
//! directly, and on PostgreSQL those of every writer (other instances, the
//! CLI, an operator's SQL) through the change listener
//! (`component/src/store/listen.rs`). Bounded by count so that RSS stays
//! flat however many devices are registered.
//!
//! A miss reads the database and then fills the cache; a change that lands
//! between the two must not be undone by the fill, or the publish path
//! would use the old row (the old token) until the entry is evicted. So the
//! cache keeps an epoch that every invalidation advances *before* it removes
//! the entry, and a fill checks the epoch it read before its database read
//! *after* inserting, taking its entry out again when the epoch moved. Either
//! the fill's check comes after the advance and sees it, or the fill's
//! insert comes before the removal and is removed by it: no order leaves
//! the old row cached. A fill that loses costs one more database read.
//! [`RegistrationCache::clear`] is an invalidation of every node, with the
//! same order (advance, then remove).
//!
//! Two safety nets for changes the cache may not hear about:
//! - While the cache is not *listening* (a PostgreSQL store whose change
//!   listener is not subscribed, or lost its connection) it serves nothing
//!   and keeps nothing: every lookup reads the database. Suspending clears
//!   it; resuming advances the epoch before it lets fills in again, so a
//!   row read while it could not hear about changes is never kept.
//! - An entry older than the maximum age (counted from before the database
//!   read that filled it) is a miss, whatever was heard.
//!
//! Nodes the database does not have are cached too (the *absent* entries):
//! a server that keeps publishing to a node nobody registered (a device
//! that unregistered, a stale subscription) would otherwise cost a database
//! read per publish, about as much CPU as a whole push. They follow the
//! same rules as rows: filled against the epoch read before the database
//! read, dropped by [`RegistrationCache::invalidate`] of their node (every
//! registration invalidates its node after writing it, on PostgreSQL every
//! writer's through the change listener), by [`RegistrationCache::clear`],
//! by not listening, and by the maximum age. A flood of random nodes cannot
//! grow memory: they have a count bound of their own
//! ([`ABSENT_CAPACITY`], apart from the rows', so that a flood does not
//! evict the rows in use), and nodes longer than [`ABSENT_MAX_NODE_LEN`]
//! are not kept (each then costs a read, as before).
//!
//! Memory: a cached row costs about 0.7 KB of RSS (the `Registration`
//! struct, ~350 bytes, its seven or so heap strings, the key, the entry and
//! the allocator's rounding), measured by filling the cache from a SQLite
//! database of 1M registrations; so the cache, not SQLite's page cache (2 MB
//! per connection by default), is what grows with the registrations. Its
//! capacity (`storage.cache_capacity`, `component/src/config.rs`) is the
//! bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use super::Registration;

/// The cached registrations of one store.
pub struct RegistrationCache {
    entries: Cache<String, Entry>,
    /// Nodes the database did not have, and when the read that found
    /// nothing began.
    absent: Cache<Box<str>, Instant>,
    /// Advanced by every invalidation; see the module documentation.
    epoch: AtomicU64,
    /// Whether changes of other writers reach [`Self::invalidate`]; while
    /// not, the cache serves and keeps nothing.
    listening: AtomicBool,
    /// Entries older than this are misses.
    max_age: Duration,
    /// `nudge_cache_hits_total` and `_misses_total` (`metrics.rs`).
    metrics: crate::metrics::CacheMetrics,
}

/// A cached row and when the database read that returned it began.
#[derive(Clone)]
struct Entry {
    reg: Arc<Registration>,
    read_at: Instant,
}

/// At most this many absent nodes are kept (fewer when the cache's
/// capacity is smaller): with nodes of up to [`ABSENT_MAX_NODE_LEN`] bytes
/// that bounds them to a few MB, however many random nodes are published to.
pub const ABSENT_CAPACITY: usize = 16_384;

/// Longer nodes are never kept as absent (nodes Nudge hands out have 22
/// characters; a client-chosen one is rarely longer than a UUID).
pub const ABSENT_MAX_NODE_LEN: usize = 128;

/// What the cache knows of a node ([`RegistrationCache::get`]).
#[derive(Debug, Clone)]
pub enum Cached {
    /// Its row.
    Found(Arc<Registration>),
    /// The database has no row for it.
    Absent,
    /// Nothing: the database must be read.
    Unknown,
}

#[cfg(test)]
impl Cached {
    /// The row, when it is one.
    pub fn row(self) -> Option<Arc<Registration>> {
        match self {
            Cached::Found(reg) => Some(reg),
            Cached::Absent | Cached::Unknown => None,
        }
    }
}

/// The cache's epoch, read before a database read that may fill the cache;
/// it also remembers when it was read, which is the age of the filled entry.
#[derive(Debug, Clone, Copy)]
pub struct Epoch {
    n: u64,
    at: Instant,
}

impl RegistrationCache {
    /// A cache of at most `capacity` rows (at least one), each kept at most
    /// `max_age`; it serves rows only while `listening` (see
    /// [`Self::set_listening`]).
    pub fn new(capacity: usize, max_age: Duration, listening: bool) -> Self {
        RegistrationCache {
            entries: Cache::new(capacity.max(1)),
            absent: Cache::new(capacity.clamp(1, ABSENT_CAPACITY)),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(listening),
            max_age,
            metrics: crate::metrics::CacheMetrics::new(),
        }
    }

    /// The same cache, empty, with another maximum age.
    pub fn with_max_age(&self, max_age: Duration) -> Self {
        let capacity = usize::try_from(self.entries.capacity()).unwrap_or(usize::MAX);
        RegistrationCache::new(capacity, max_age, self.is_listening())
    }

    /// The cached row of a node, or that it has none, unless what is
    /// cached is older than the maximum age or the cache is not listening.
    /// Each call counts as a hit or a miss (`metrics.rs`).
    pub fn get(&self, node: &str) -> Cached {
        let found = self.lookup(node);
        match found {
            Cached::Found(_) | Cached::Absent => self.metrics.hit(),
            Cached::Unknown => self.metrics.miss(),
        }
        found
    }

    fn lookup(&self, node: &str) -> Cached {
        if !self.is_listening() {
            return Cached::Unknown;
        }
        if let Some(entry) = self.entries.get(node) {
            if entry.read_at.elapsed() < self.max_age {
                return Cached::Found(entry.reg);
            }
            // Only an expired entry: a fresh fill may have replaced it.
            self.entries
                .remove_if(node, |e| e.read_at.elapsed() >= self.max_age);
            return Cached::Unknown;
        }
        if let Some(read_at) = self.absent.get(node) {
            if read_at.elapsed() < self.max_age {
                return Cached::Absent;
            }
            self.absent
                .remove_if(node, |at| at.elapsed() >= self.max_age);
        }
        Cached::Unknown
    }

    /// The epoch to hand to [`RegistrationCache::fill`] after reading the
    /// database.
    pub fn epoch(&self) -> Epoch {
        Epoch {
            n: self.epoch.load(Ordering::SeqCst),
            at: Instant::now(),
        }
    }

    /// Caches a row read from the database after `read_at` was taken,
    /// unless the registrations changed meanwhile or the cache is not
    /// listening.
    pub fn fill(&self, reg: Arc<Registration>, read_at: Epoch) {
        if !self.is_listening() {
            return;
        }
        let node = reg.node.clone();
        self.entries.insert(
            node.clone(),
            Entry {
                reg,
                read_at: read_at.at,
            },
        );
        // A suspension that came after the check above clears after it
        // stops listening, like an invalidation: either this sees it or the
        // clear removes the entry.
        if self.epoch.load(Ordering::SeqCst) != read_at.n || !self.is_listening() {
            // Possibly a fresher entry of a concurrent fill: losing it only
            // costs a database read.
            self.entries.remove(&node);
        }
    }

    /// Remembers that the database had no row for `node` in a read begun
    /// after `read_at` was taken, on the same terms as [`Self::fill`]:
    /// not when the registrations changed meanwhile (the change may be
    /// this node's registration) or the cache is not listening. Nodes
    /// longer than [`ABSENT_MAX_NODE_LEN`] are not kept.
    pub fn fill_absent(&self, node: &str, read_at: Epoch) {
        if !self.is_listening() || node.len() > ABSENT_MAX_NODE_LEN {
            return;
        }
        self.absent.insert(node.into(), read_at.at);
        // The same order argument as in `fill`: either this check sees the
        // invalidation's advance, or the invalidation's removal comes after
        // this insert.
        if self.epoch.load(Ordering::SeqCst) != read_at.n || !self.is_listening() {
            self.absent.remove(node);
        }
    }

    /// Forgets a node after its row changed in the database (written,
    /// updated or removed): its cached row, or that it had none.
    pub fn invalidate(&self, node: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.remove(node);
        self.absent.remove(node);
    }

    /// Forgets every node: changes may have been missed.
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
        self.absent.clear();
    }

    /// How many absent nodes are kept right now (expired ones included
    /// until they are looked up or evicted).
    #[cfg(test)]
    pub fn absent_len(&self) -> usize {
        self.absent.len()
    }

    /// Whether the cache serves rows: changes of every writer reach it.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Starts or stops serving rows. Stopping clears the cache (what it
    /// holds will not be invalidated any more); starting advances the epoch
    /// first, so that a fill whose read came before it is not kept (that
    /// read may predate a change nobody heard about).
    pub fn set_listening(&self, listening: bool) {
        if listening {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.listening.store(true, Ordering::SeqCst);
        } else {
            self.listening.store(false, Ordering::SeqCst);
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn reg(token: &str) -> Arc<Registration> {
        Arc::new(Registration {
            node: "n1".into(),
            secret: None,
            owner: "a@b".into(),
            domain: "b".into(),
            device_id: "d".into(),
            muc: String::new(),
            app: "app".into(),
            token: token.into(),
            created_at: 0,
            updated_at: 0,
            dialect: "conversations".into(),
            second_token: String::new(),
            environment: String::new(),
            options: Default::default(),
        })
    }

    fn token(cache: &RegistrationCache) -> Option<String> {
        cache.get("n1").row().map(|r| r.token.clone())
    }

    #[test]
    fn a_fill_from_before_an_invalidation_is_not_kept() {
        let cache = RegistrationCache::new(10, HOUR, true);
        // Read before the change, filled after it.
        let read_at = cache.epoch();
        cache.invalidate("n1");
        cache.fill(reg("old"), read_at);
        assert!(cache.get("n1").row().is_none());
        // Filled before the change: the invalidation removes it.
        let read_at = cache.epoch();
        cache.fill(reg("old"), read_at);
        cache.invalidate("n1");
        assert!(cache.get("n1").row().is_none());
        // Read after the change: kept.
        let read_at = cache.epoch();
        cache.fill(reg("new"), read_at);
        assert_eq!(token(&cache).as_deref(), Some("new"));
    }

    #[test]
    fn clear_forgets_every_node_and_fills_from_before_it() {
        let cache = RegistrationCache::new(10, HOUR, true);
        let read_at = cache.epoch();
        cache.fill(reg("old"), read_at);
        assert_eq!(token(&cache).as_deref(), Some("old"));
        cache.clear();
        assert!(cache.get("n1").row().is_none());
        // Read before the clear, filled after it.
        let read_at = cache.epoch();
        cache.clear();
        cache.fill(reg("old"), read_at);
        assert!(cache.get("n1").row().is_none());
        let read_at = cache.epoch();
        cache.fill(reg("new"), read_at);
        assert_eq!(token(&cache).as_deref(), Some("new"));
    }

    #[test]
    fn an_entry_older_than_the_max_age_is_a_miss() {
        let max_age = Duration::from_millis(200);
        let cache = RegistrationCache::new(10, max_age, true);
        let read_at = cache.epoch();
        cache.fill(reg("old"), read_at);
        let served = token(&cache);
        // Only a machine slower than the age could see it expired already.
        if read_at.at.elapsed() < max_age {
            assert_eq!(served.as_deref(), Some("old"));
        }
        std::thread::sleep(max_age);
        assert!(cache.get("n1").row().is_none());
        // A new fill is served again.
        let read_at = cache.epoch();
        cache.fill(reg("new"), read_at);
        let served = token(&cache);
        if read_at.at.elapsed() < max_age {
            assert_eq!(served.as_deref(), Some("new"));
        }
    }

    #[test]
    fn the_age_counts_from_before_the_read() {
        let cache = RegistrationCache::new(10, Duration::from_millis(50), true);
        let read_at = cache.epoch();
        // A slow database read.
        std::thread::sleep(Duration::from_millis(60));
        cache.fill(reg("old"), read_at);
        assert!(cache.get("n1").row().is_none());
    }

    #[test]
    fn a_zero_max_age_caches_nothing() {
        let cache = RegistrationCache::new(10, Duration::ZERO, true);
        let read_at = cache.epoch();
        cache.fill(reg("old"), read_at);
        assert!(cache.get("n1").row().is_none());
    }

    #[test]
    fn while_not_listening_nothing_is_served_or_kept() {
        let cache = RegistrationCache::new(10, HOUR, false);
        let read_at = cache.epoch();
        cache.fill(reg("old"), read_at);
        assert!(cache.get("n1").row().is_none());
        cache.set_listening(true);
        let read_at = cache.epoch();
        cache.fill(reg("old"), read_at);
        assert_eq!(token(&cache).as_deref(), Some("old"));
        // Losing the listener clears what was cached ...
        cache.set_listening(false);
        assert!(cache.get("n1").row().is_none());
        cache.set_listening(true);
        assert!(cache.get("n1").row().is_none(), "suspending did not clear");
    }

    #[test]
    fn a_read_from_before_listening_is_not_kept() {
        let cache = RegistrationCache::new(10, HOUR, false);
        // Read while the changes of others could not be heard ...
        let read_at = cache.epoch();
        cache.set_listening(true);
        // ... filled once they can: it may miss a change made in between.
        cache.fill(reg("old"), read_at);
        assert!(cache.get("n1").row().is_none());
        // A read while suspended, filled after resuming.
        let read_at = cache.epoch();
        cache.set_listening(false);
        cache.set_listening(true);
        cache.fill(reg("old"), read_at);
        assert!(cache.get("n1").row().is_none());
    }

    #[test]
    fn with_max_age_keeps_capacity_and_listening() {
        let cache = RegistrationCache::new(7, HOUR, false).with_max_age(Duration::ZERO);
        assert_eq!(cache.entries.capacity(), 7);
        assert!(!cache.is_listening());
        assert_eq!(cache.max_age, Duration::ZERO);
    }

    fn is_absent(cache: &RegistrationCache, node: &str) -> bool {
        matches!(cache.get(node), Cached::Absent)
    }

    #[test]
    fn an_absent_node_is_kept_until_its_node_changes() {
        let cache = RegistrationCache::new(10, HOUR, true);
        let read_at = cache.epoch();
        cache.fill_absent("n1", read_at);
        assert!(is_absent(&cache, "n1"));
        assert!(matches!(cache.get("n2"), Cached::Unknown));
        // A registration of the node: found at once.
        cache.invalidate("n1");
        assert!(matches!(cache.get("n1"), Cached::Unknown));
        // And a clear forgets absent nodes too.
        let read_at = cache.epoch();
        cache.fill_absent("n1", read_at);
        assert!(is_absent(&cache, "n1"));
        cache.clear();
        assert!(matches!(cache.get("n1"), Cached::Unknown));
    }

    #[test]
    fn an_absent_read_from_before_a_registration_is_not_kept() {
        let cache = RegistrationCache::new(10, HOUR, true);
        // The read found nothing, then the node was registered, then the
        // miss is cached.
        let read_at = cache.epoch();
        cache.invalidate("n1");
        cache.fill_absent("n1", read_at);
        assert!(matches!(cache.get("n1"), Cached::Unknown));
        assert_eq!(cache.absent_len(), 0);
    }

    #[test]
    fn absent_nodes_follow_listening_and_age() {
        let cache = RegistrationCache::new(10, HOUR, false);
        let read_at = cache.epoch();
        cache.fill_absent("n1", read_at);
        assert!(matches!(cache.get("n1"), Cached::Unknown));
        cache.set_listening(true);
        let read_at = cache.epoch();
        cache.fill_absent("n1", read_at);
        assert!(is_absent(&cache, "n1"));
        cache.set_listening(false);
        cache.set_listening(true);
        assert!(matches!(cache.get("n1"), Cached::Unknown));

        let cache = RegistrationCache::new(10, Duration::ZERO, true);
        let read_at = cache.epoch();
        cache.fill_absent("n1", read_at);
        assert!(matches!(cache.get("n1"), Cached::Unknown));
    }

    #[test]
    fn a_flood_of_random_nodes_stays_bounded() {
        let cache = RegistrationCache::new(1_000_000, HOUR, true);
        let read_at = cache.epoch();
        cache.fill(reg("kept"), read_at);
        for i in 0..(ABSENT_CAPACITY * 3) {
            cache.fill_absent(&format!("random-{i}"), read_at);
        }
        // quick_cache may hold a little over its nominal capacity while
        // it settles; never anywhere near the flood.
        assert!(
            cache.absent_len() <= ABSENT_CAPACITY + ABSENT_CAPACITY / 8,
            "{} absent nodes kept",
            cache.absent_len()
        );
        // The rows in use are not evicted by the flood.
        assert_eq!(token(&cache).as_deref(), Some("kept"));
        // Overlong nodes are not kept at all.
        let long = "x".repeat(ABSENT_MAX_NODE_LEN + 1);
        cache.fill_absent(&long, read_at);
        assert!(matches!(cache.get(&long), Cached::Unknown));
        // A small cache keeps few absent nodes.
        let small = RegistrationCache::new(4, HOUR, true);
        for i in 0..100 {
            small.fill_absent(&format!("random-{i}"), small.epoch());
        }
        assert!(small.absent_len() <= 8, "{}", small.absent_len());
    }
}
