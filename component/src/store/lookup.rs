//! Batched registration lookups: the misses of the registration cache
//! (`cache.rs`) that wait at the same time are read with one query.
//!
//! A cold lookup costs far more than its row: each query is a hand-off to
//! the database (on SQLite, to sqlx's worker thread and back, two thread
//! wake-ups) and most of its CPU time is that hand-off, not the B-tree
//! walk. At 10k publishes/s spread over a million registrations nearly
//! every publish misses, and one query each saturated the store at about
//! 8k lookups/s on the project's 2-core VM (docs/benchmarks.md). So, as
//! the outbox does with its writes (`outbox/batch.rs`):
//!
//! - No added delay: a lookup that finds fewer than [`READERS`] readers
//!   running starts one, which takes what is queued at once (just that
//!   node, when idle). Lookups that arrive meanwhile go together with the
//!   next query: `WHERE node IN (…)` of at most [`MAX_BATCH`] nodes.
//! - Each waiter gets its own node's row (or none), and fills the cache
//!   itself with the epoch it read before it queued, so the cache's rules
//!   (`cache.rs`) hold as for a lookup of its own.
//! - A failed query answers each of its waiters with the error.
//! - A reader is a task of its own: a waiter that stops waiting leaves the
//!   others' query alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use tokio::sync::oneshot;

use super::batches::Batches;
use super::{Pool, Registration, StoreError};

/// The most nodes one query reads.
pub const MAX_BATCH: usize = 64;
/// Queries at once (the SQLite pool has four connections; the outbox's
/// writer and the retry worker use the others).
pub const READERS: usize = 2;

/// `SELECT … WHERE node IN ($1, …, $n)` for n = 1 ..= [`MAX_BATCH`]
/// (index n - 1); built once, and prepared once per connection by sqlx.
static QUERIES: LazyLock<Vec<String>> = LazyLock::new(|| {
    (1..=MAX_BATCH)
        .map(|n| {
            let params: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
            format!(
                concat!(
                    "SELECT ",
                    columns!(),
                    " FROM registrations WHERE node IN ({})"
                ),
                params.join(", ")
            )
        })
        .collect()
});

type Answer = Result<Option<Registration>, StoreError>;

struct Job {
    node: String,
    answer: oneshot::Sender<Answer>,
}

/// How many queries read how many lookups
/// ([`super::RegistrationStore::lookup_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Queries made.
    pub queries: u64,
    /// Lookups they answered.
    pub lookups: u64,
}

/// The batched reader of one store and its clones.
pub(super) struct Lookups {
    pool: Pool,
    queue: Batches<Job>,
    queries: AtomicU64,
    lookups: AtomicU64,
}

impl Lookups {
    pub(super) fn new(pool: Pool) -> Self {
        Lookups {
            pool,
            queue: Batches::new(READERS, MAX_BATCH),
            queries: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
        }
    }

    /// What was read so far.
    pub(super) fn stats(&self) -> LookupStats {
        LookupStats {
            queries: self.queries.load(Ordering::Relaxed),
            lookups: self.lookups.load(Ordering::Relaxed),
        }
    }

    /// The registration of `node` in the database, read with the lookups
    /// queued with it. Call within a Tokio runtime (readers are tasks).
    pub(super) async fn find(self: &Arc<Self>, node: &str) -> Answer {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            node: node.to_owned(),
            answer,
        };
        if self.queue.push(job) {
            tokio::spawn(self.clone().run());
        }
        answered.await.map_err(|_| StoreError::ReaderGone)?
    }

    /// Reads batches until the queue is empty.
    async fn run(self: Arc<Self>) {
        let mut reader = self.queue.worker();
        while let Some(batch) = reader.next_batch() {
            self.read_batch(batch).await;
        }
    }

    async fn read_batch(&self, batch: Vec<Job>) {
        // One bind per distinct node (a burst may look one node up twice).
        let mut nodes: Vec<&str> = batch.iter().map(|j| j.node.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let Some(sql) = QUERIES.get(nodes.len().saturating_sub(1)) else {
            return; // never: a batch has 1 ..= MAX_BATCH nodes
        };
        let rows: Result<Vec<Registration>, sqlx::Error> = on_pool!(&self.pool, |p| {
            let mut q = sqlx::query_as(sql.as_str());
            for node in &nodes {
                q = q.bind(*node);
            }
            q.fetch_all(p).await
        });
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.lookups
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        match rows {
            Ok(rows) => {
                let by_node: HashMap<String, Registration> =
                    rows.into_iter().map(|r| (r.node.clone(), r)).collect();
                for job in batch {
                    // A node asked twice gets its row twice.
                    let row = by_node.get(&job.node).cloned();
                    let _ = job.answer.send(Ok(row));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for job in batch {
                    let _ = job.answer.send(Err(StoreError::Lookup(e.clone())));
                }
            }
        }
    }
}
