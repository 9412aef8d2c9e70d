//! Coalescing: which registrations have a push out or waiting right now, so
//! that a burst of publishes for one device becomes the first push at once
//! plus one trailing push, not one push per publish.
//!
//! Both servers publish once per message and registration, in bursts of up
//! to two dozen within milliseconds (`tests/fixtures/README.md`). The first
//! publish of a burst is sent at once; the ones that come while it is out
//! are merged into the node's outbox row, which the retry worker delivers
//! as soon as the push before it is done. An important publish never waits
//! behind a silent push: it goes out at once beside it.

use std::collections::HashMap;
use std::sync::Mutex;

/// What a new publish for a node should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Send it now (this caller owns a send of the node until
    /// [`Slots::finish`]).
    Send,
    /// Merge it into the node's outbox row; the pending push carries it.
    Merge,
    /// Merge it into the node's outbox row, then deliver the row now (an
    /// important publish for a node whose row is waiting to be retried).
    MergeAndFlush,
}

#[derive(Debug, Default)]
struct Slot {
    /// Sends of this node out right now.
    sending: u32,
    /// Whether one of them is important.
    important_sending: bool,
    /// Whether the node has (or is about to have) an outbox row.
    queued: bool,
}

/// The nodes with a push out or queued, on this instance.
#[derive(Debug, Default)]
pub struct Slots {
    map: Mutex<HashMap<String, Slot>>,
}

impl Slots {
    /// Decides what a publish for `node` does, and takes a send if so.
    pub fn begin(&self, node: &str, important: bool) -> Begin {
        let mut map = self.lock();
        let slot = map.entry(node.to_owned()).or_default();
        if slot.sending > 0 {
            if important && !slot.important_sending {
                slot.sending += 1;
                slot.important_sending = true;
                Begin::Send
            } else {
                slot.queued = true;
                Begin::Merge
            }
        } else if slot.queued {
            if important {
                Begin::MergeAndFlush
            } else {
                Begin::Merge
            }
        } else {
            slot.sending = 1;
            slot.important_sending = important;
            Begin::Send
        }
    }

    /// Takes a send of a node's outbox row; false while a send of the node
    /// is out (the row waits for it, so pushes of one device stay in order).
    pub fn claim_row(&self, node: &str) -> bool {
        let mut map = self.lock();
        let slot = map.entry(node.to_owned()).or_default();
        slot.queued = true;
        if slot.sending > 0 {
            return false;
        }
        slot.sending = 1;
        true
    }

    /// Marks that the node has an outbox row (or not).
    pub fn set_queued(&self, node: &str, queued: bool) {
        let mut map = self.lock();
        if queued {
            map.entry(node.to_owned()).or_default().queued = true;
        } else if let Some(slot) = map.get_mut(node) {
            slot.queued = false;
            if slot.sending == 0 {
                map.remove(node);
            }
        }
    }

    /// A send taken by [`Slots::begin`] or [`Slots::claim_row`] is done;
    /// returns whether the node still has a row to deliver.
    pub fn finish(&self, node: &str) -> bool {
        let mut map = self.lock();
        let Some(slot) = map.get_mut(node) else {
            return false;
        };
        slot.sending = slot.sending.saturating_sub(1);
        if slot.sending == 0 {
            slot.important_sending = false;
            if !slot.queued {
                map.remove(node);
                return false;
            }
        }
        slot.queued
    }

    /// Nodes tracked, for tests and the operator.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no node is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding this lock leaves plain counters behind,
        // which stay usable.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_send_then_merges() {
        let slots = Slots::default();
        assert_eq!(slots.begin("n", false), Begin::Send);
        for _ in 0..20 {
            assert_eq!(slots.begin("n", false), Begin::Merge);
        }
        // The send is done; the merged row is still owed.
        assert!(slots.finish("n"));
        assert!(slots.claim_row("n"));
        assert!(!slots.claim_row("n"), "one row send at a time");
        slots.set_queued("n", false);
        assert!(!slots.finish("n"));
        assert!(slots.is_empty());
    }

    #[test]
    fn important_never_waits_behind_silent() {
        let slots = Slots::default();
        assert_eq!(slots.begin("n", false), Begin::Send);
        assert_eq!(slots.begin("n", true), Begin::Send);
        // A second important one merges behind the first.
        assert_eq!(slots.begin("n", true), Begin::Merge);
        assert!(slots.finish("n"));
        assert!(slots.finish("n"));
    }

    #[test]
    fn a_waiting_row_is_flushed_by_an_important_publish() {
        let slots = Slots::default();
        slots.set_queued("n", true);
        assert_eq!(slots.begin("n", false), Begin::Merge);
        assert_eq!(slots.begin("n", true), Begin::MergeAndFlush);
        assert!(!slots.finish("other"));
    }
}
