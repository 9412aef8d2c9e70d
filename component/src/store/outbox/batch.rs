//! Group commit of the outbox's row writes ([`Outbox::merge`] and
//! [`Outbox::insert_new`], `component/src/store/outbox.rs`). Each publish
//! merged into a pending push is a row write that must be committed before
//! the publish is answered `result`; one transaction per write made the
//! database's commit rate the limit of publishes per second (on SQLite
//! every commit is a WAL append and a lock round). Here writes that arrive
//! while a commit is under way wait for it and then go together, in one
//! transaction of their own.
//!
//! - No added delay: a write that finds no writer running starts one, which
//!   takes what is queued at once (just that write, when idle). Writes that
//!   arrive meanwhile form the next batch, at most [`MAX_BATCH`] rows.
//! - The same rows as one at a time: a batch runs its statements in the
//!   order the writes arrived, each with its own `RETURNING seq`, so that
//!   several merges of one node get the seqs sequential writes would.
//! - Every waiter is answered with its own result, and only after the
//!   commit that made its row durable. A statement that fails rolls the
//!   batch back; its rows are then written one transaction each, so that a
//!   row the database refuses fails alone and the others are written as if
//!   they had not been batched. A failure of the batch as a whole (the
//!   connection, the commit, a database that is locked, full or read-only)
//!   answers each of its waiters with that error.
//! - The writer is a task of its own, so a waiter that stops waiting (its
//!   publish timed out) neither loses the rows of the others nor leaves a
//!   half-written batch; its own row is written all the same, as a write
//!   already sent to the database would be.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Row;
use tokio::sync::oneshot;

use super::super::batches::Batches;
use super::super::{Pool, StoreError};

/// Binds a row's values to the insert of `outbox.rs` (`$1` node … `$9`
/// device), with `$4` (created_at) = `now`.
macro_rules! bind {
    ($query:expr, $row:expr, $now:expr) => {
        $query
            .bind(&$row.node)
            .bind(&$row.json)
            .bind($row.important)
            .bind($now)
            .bind($row.expires_at)
            .bind($row.due_at_ms)
            .bind($row.received_us)
            .bind($row.claimed_by.as_deref().unwrap_or(""))
            .bind($row.device.as_deref())
    };
}

/// The most rows one transaction writes.
pub const MAX_BATCH: usize = 128;

/// A row to write: an owned copy of what `outbox.rs` binds.
pub(in crate::store) struct RowWrite {
    /// The statement (an upsert of one row, `RETURNING seq`).
    pub sql: &'static str,
    pub node: String,
    pub json: String,
    pub important: i32,
    pub received_us: i64,
    pub due_at_ms: i64,
    pub expires_at: i64,
    /// The claimer of a new row; `None` for none ('').
    pub claimed_by: Option<Arc<str>>,
    /// A stateless push's device, as JSON.
    pub device: Option<String>,
}

/// What a write is answered: the row's `seq`, when the statement returned
/// one.
type Answer = Result<Option<i64>, StoreError>;

struct Job {
    row: RowWrite,
    answer: oneshot::Sender<Answer>,
}

/// How many transactions and rows the writer committed
/// ([`super::Outbox::commit_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions committed (a batch of one included).
    pub transactions: u64,
    /// Rows written in them.
    pub rows: u64,
}

/// The group-commit writer of one outbox handle and its clones.
pub(in crate::store) struct Batcher {
    pool: Pool,
    /// One writer at a time: a batch's rows commit in the order they came.
    queue: Batches<Job>,
    transactions: AtomicU64,
    rows: AtomicU64,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Batcher {
    pub(in crate::store) fn new(pool: Pool) -> Self {
        Batcher {
            pool,
            queue: Batches::new(1, MAX_BATCH),
            transactions: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        }
    }

    /// What was committed so far.
    pub(in crate::store) fn stats(&self) -> CommitStats {
        CommitStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
        }
    }

    /// Writes `row` with the next batch and waits for its commit. Call
    /// within a Tokio runtime (the writer is a task).
    pub(in crate::store) async fn write(self: &Arc<Self>, row: RowWrite) -> Answer {
        let (answer, answered) = oneshot::channel();
        if self.queue.push(Job { row, answer }) {
            tokio::spawn(self.clone().run());
        }
        answered.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Writes batches until the queue is empty.
    async fn run(self: Arc<Self>) {
        let mut writer = self.queue.worker();
        while let Some(batch) = writer.next_batch() {
            self.write_batch(batch).await;
        }
    }

    async fn write_batch(&self, batch: Vec<Job>) {
        let (rows, answers): (Vec<RowWrite>, Vec<oneshot::Sender<Answer>>) =
            batch.into_iter().map(|j| (j.row, j.answer)).unzip();
        if let ([row], [_]) = (rows.as_slice(), answers.as_slice()) {
            let result = self.write_alone(row).await;
            if let Some(answer) = answers.into_iter().next() {
                // A waiter that stopped waiting needs no answer.
                let _ = answer.send(result);
            }
            return;
        }
        match self.write_together(&rows).await {
            Ok(seqs) => {
                for (answer, seq) in answers.into_iter().zip(seqs) {
                    let _ = answer.send(Ok(seq));
                }
            }
            // A statement refused: which row it was, and whether the others
            // would have gone through alone, is found by writing them alone.
            // Not when the database as a whole is unavailable (locked, full,
            // read-only, shutting down): each row would wait out the same
            // condition again, one after the other.
            Err(sqlx::Error::Database(e)) if !concerns_every_row(e.as_ref()) => {
                for (row, answer) in rows.iter().zip(answers) {
                    let result = self.write_alone(row).await;
                    let _ = answer.send(result);
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for answer in answers {
                    let _ = answer.send(Err(StoreError::Batch(e.clone())));
                }
            }
        }
    }

    /// One row, one transaction (the statement's own).
    async fn write_alone(&self, row: &RowWrite) -> Answer {
        let now = crate::store::now();
        let seq = on_pool!(&self.pool, |p| {
            bind!(sqlx::query(row.sql), row, now)
                .fetch_optional(p)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?
        });
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(1, Ordering::Relaxed);
        Ok(seq)
    }

    /// Every row in one transaction, in order; their seqs once committed.
    async fn write_together(&self, rows: &[RowWrite]) -> Result<Vec<Option<i64>>, sqlx::Error> {
        let now = crate::store::now();
        let seqs = on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            let mut seqs = Vec::with_capacity(rows.len());
            for row in rows {
                let seq: Option<i64> = bind!(sqlx::query(row.sql), row, now)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                seqs.push(seq);
            }
            tx.commit().await?;
            seqs
        });
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(
            u64::try_from(rows.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(seqs)
    }
}

/// Whether a database error is one of the database as a whole rather than
/// of a statement's row: SQLite's busy, locked, read-only, I/O, corrupt,
/// full and cannot-open codes (primary code, the low byte of the extended
/// one sqlx reports); PostgreSQL's connection (08), resources (53),
/// operator intervention (57) and lock-not-available (55P03) states.
fn concerns_every_row(e: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = e.code() else {
        return false;
    };
    if let Ok(n) = code.parse::<u32>() {
        // SQLite: SQLITE_BUSY 5, LOCKED 6, READONLY 8, IOERR 10,
        // CORRUPT 11, FULL 13, CANTOPEN 14.
        return matches!(n & 0xff, 5 | 6 | 8 | 10 | 11 | 13 | 14);
    }
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57") || code == "55P03"
}
