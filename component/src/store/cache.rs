//! The read-through cache in front of the registration table. Publishes
//! for a node come in bursts (one per message, neither server coalesces),
//! so caching the row keeps all but the first of a burst off the database.
//! Entries are removed on every change made through this instance
//! (re-register, unregister, dead token); bounded by count so that RSS stays
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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::sync::Cache;

use super::Registration;

pub struct RegistrationCache {
    entries: Cache<String, Arc<Registration>>,
    /// Advanced by every invalidation; see the module documentation.
    epoch: AtomicU64,
}

/// The cache's epoch, read before a database read that may fill the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(u64);

impl RegistrationCache {
    pub fn new(capacity: usize) -> Self {
        RegistrationCache {
            entries: Cache::new(capacity.max(1)),
            epoch: AtomicU64::new(0),
        }
    }

    pub fn get(&self, node: &str) -> Option<Arc<Registration>> {
        self.entries.get(node)
    }

    /// The epoch to hand to [`RegistrationCache::fill`] after reading the
    /// database.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::SeqCst))
    }

    /// Caches a row read from the database after `read_at` was taken,
    /// unless the registrations changed meanwhile.
    pub fn fill(&self, reg: Arc<Registration>, read_at: Epoch) {
        let node = reg.node.clone();
        self.entries.insert(node.clone(), reg);
        if self.epoch() != read_at {
            // Possibly a fresher entry of a concurrent fill: losing it only
            // costs a database read.
            self.entries.remove(&node);
        }
    }

    /// Forgets every node (the database may have changed behind our back).
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    /// Forgets a node after its row changed in the database.
    pub fn invalidate(&self, node: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        })
    }

    #[test]
    fn a_fill_from_before_an_invalidation_is_not_kept() {
        let cache = RegistrationCache::new(10);
        // Read before the change, filled after it.
        let read_at = cache.epoch();
        cache.invalidate("n1");
        cache.fill(reg("old"), read_at);
        assert!(cache.get("n1").is_none());
        // Filled before the change: the invalidation removes it.
        let read_at = cache.epoch();
        cache.fill(reg("old"), read_at);
        cache.invalidate("n1");
        assert!(cache.get("n1").is_none());
        // Read after the change: kept.
        let read_at = cache.epoch();
        cache.fill(reg("new"), read_at);
        assert_eq!(cache.get("n1").unwrap().token, "new");
    }
}
