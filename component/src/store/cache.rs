//! The read-through cache in front of the registration table. Publishes
//! for a node come in bursts (one per message, neither server coalesces),
//! so caching the row keeps all but the first of a burst off the database.
//! Entries are removed on every change made through this instance
//! (re-register, unregister, dead token); bounded by count so that RSS stays
//! flat however many devices are registered.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::Registration;

pub struct RegistrationCache {
    entries: Cache<String, Arc<Registration>>,
}

impl RegistrationCache {
    pub fn new(capacity: usize) -> Self {
        RegistrationCache {
            entries: Cache::new(capacity.max(1)),
        }
    }

    pub fn get(&self, node: &str) -> Option<Arc<Registration>> {
        self.entries.get(node)
    }

    pub fn insert(&self, reg: Arc<Registration>) {
        self.entries.insert(reg.node.clone(), reg);
    }

    pub fn remove(&self, node: &str) {
        self.entries.remove(node);
    }
}
