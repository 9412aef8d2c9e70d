//! The queue behind the store's batched work: the batched lookups
//! (`lookup.rs`) and the outbox's group commit (`outbox/batch.rs`). Both
//! follow one rule: no added delay. A job that finds fewer than the most
//! workers running starts one, which takes what is queued at once (just
//! that job, when idle); jobs that arrive meanwhile go together in the next
//! batch. What a batch does is the caller's; this file keeps the count of
//! workers and the jobs honest, also when a worker's task panics or is
//! dropped at runtime shutdown.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

struct Queue<J> {
    jobs: VecDeque<J>,
    /// Workers running (each takes what is queued until it is empty).
    workers: usize,
}

/// Jobs waiting for a worker, taken in batches.
pub(super) struct Batches<J> {
    queue: Mutex<Queue<J>>,
    most_workers: usize,
    most_per_batch: usize,
}

impl<J> Batches<J> {
    /// A queue served by at most `most_workers` workers at once, each
    /// taking at most `most_per_batch` jobs at a time.
    pub(super) fn new(most_workers: usize, most_per_batch: usize) -> Self {
        Batches {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                workers: 0,
            }),
            most_workers: most_workers.max(1),
            most_per_batch: most_per_batch.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<J>> {
        // Never held across a panic of ours; a poisoned queue is still
        // consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`. True when the caller must start a worker (counted
    /// from now on), which then takes batches with [`Batches::worker`].
    pub(super) fn push(&self, job: J) -> bool {
        let mut queue = self.lock();
        queue.jobs.push_back(job);
        let start = queue.workers < self.most_workers;
        if start {
            queue.workers += 1;
        }
        start
    }

    /// The started worker's handle on the queue.
    pub(super) fn worker(&self) -> Worker<'_, J> {
        Worker {
            batches: self,
            finished: false,
        }
    }
}

/// A running worker: takes batches until the queue is empty. Dropped
/// before that (a panic, an abort at runtime shutdown), it gives its count
/// back, and when it was the last one drops the queued jobs, so that their
/// waiters are answered (their senders gone) rather than left waiting for
/// nobody.
pub(super) struct Worker<'a, J> {
    batches: &'a Batches<J>,
    finished: bool,
}

impl<J> Worker<'_, J> {
    /// The next batch, oldest jobs first; `None` when the queue is empty,
    /// and the worker is then no longer counted.
    pub(super) fn next_batch(&mut self) -> Option<Vec<J>> {
        let mut queue = self.batches.lock();
        if queue.jobs.is_empty() {
            queue.workers -= 1;
            self.finished = true;
            return None;
        }
        let n = queue.jobs.len().min(self.batches.most_per_batch);
        Some(queue.jobs.drain(..n).collect())
    }
}

impl<J> Drop for Worker<'_, J> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let orphans = {
            let mut queue = self.batches.lock();
            queue.workers -= 1;
            if queue.workers == 0 {
                std::mem::take(&mut queue.jobs)
            } else {
                VecDeque::new()
            }
        };
        drop(orphans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_go_in_batches_to_at_most_the_workers_allowed() {
        let batches = Batches::new(2, 3);
        assert!(batches.push(1), "idle: the first job starts a worker");
        assert!(batches.push(2), "a second worker may start");
        assert!(!batches.push(3), "two run: the job waits for them");
        for job in 4..=7 {
            assert!(!batches.push(job));
        }
        let mut a = batches.worker();
        assert_eq!(a.next_batch(), Some(vec![1, 2, 3]));
        let mut b = batches.worker();
        assert_eq!(b.next_batch(), Some(vec![4, 5, 6]));
        assert_eq!(b.next_batch(), Some(vec![7]));
        assert_eq!(b.next_batch(), None);
        assert_eq!(a.next_batch(), None);
        assert!(batches.push(8), "both stopped: a new job starts one again");
    }

    #[test]
    fn the_last_worker_dropped_early_drops_the_queue() {
        let batches = Batches::new(2, 1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        assert!(batches.push(tx.clone()));
        assert!(batches.push(tx.clone()));
        assert!(!batches.push(tx));
        let mut a = batches.worker();
        let first = a.next_batch();
        let b = batches.worker();
        drop(a);
        drop(first);
        assert_eq!(
            rx.try_recv(),
            Err(std::sync::mpsc::TryRecvError::Empty),
            "a worker still runs: the queued job is kept"
        );
        drop(b);
        assert_eq!(
            rx.try_recv(),
            Err(std::sync::mpsc::TryRecvError::Disconnected),
            "the last worker gone: every queued job dropped"
        );
        assert!(
            batches.push(std::sync::mpsc::channel().0),
            "and the next job starts a worker"
        );
    }
}
