//! Coalescing: which registrations have a push out, waiting, or just sent,
//! so that a burst of publishes for one device becomes the first push at
//! once plus one trailing push, not one push per publish.
//!
//! Both servers publish once per message and registration, in bursts of up
//! to two dozen within a fraction of a second (`docs/answers.md`). The first
//! publish of a burst is sent at once. The ones that come while it is out,
//! or within `dispatch.coalesce_ms` after it went out, are merged into the
//! node's outbox row, which goes out as one trailing push when that window
//! has passed (and the push before it is done): a device gets at most one
//! push per window, carrying the newest summary. An important publish never
//! waits behind a silent push: it goes out at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a new publish for a node should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Send it now (this caller owns a send of the node until
    /// [`Slots::finish`]).
    Send,
    /// Merge it into the node's outbox row; the pending push carries it. A
    /// new row is due after the given wait (the rest of the window).
    Merge(Duration),
    /// Merge it into the node's outbox row, then deliver the row now (an
    /// important publish for a node whose row waits for a retry).
    MergeAndFlush,
}

/// Whether a node's outbox row may be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowClaim {
    /// Yes; the caller owns a send of the node until [`Slots::finish`].
    Claimed,
    /// A send of the node is out; the row goes after it, so that the
    /// pushes of one device stay in order.
    Busy,
    /// A push carrying a newer publish already went out: the row is
    /// covered and is cleared, not sent.
    Stale,
}

#[derive(Debug, Default)]
struct Slot {
    /// Sends of this node out right now.
    sending: u32,
    /// Whether one of them is important.
    important_sending: bool,
    /// Whether the node has (or is about to have) an outbox row.
    queued: bool,
    /// When the last push went out, and whether it was important.
    last_push: Option<(Instant, bool)>,
    /// The newest publish (by `received_us`) a push has carried: a merge of
    /// an older one that comes late (publishes are handled concurrently) is
    /// already covered and must not be pushed after it.
    sent_upto: i64,
    /// Held while a publish is merged into the node's row and while the
    /// row is cleared after a delivery, so that a late merge of an older
    /// publish can neither slip between its check and its write nor
    /// re-create a row a newer push has just cleared.
    rows: Arc<tokio::sync::Mutex<()>>,
}

/// The nodes with a push out, queued or just sent, on this instance.
#[derive(Debug)]
pub struct Slots {
    window: Duration,
    map: Mutex<HashMap<String, Slot>>,
}

impl Slots {
    /// Slots that coalesce publishes within `window` of a push.
    pub fn new(window: Duration) -> Self {
        Slots {
            window,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Decides what a publish for `node` (read at `received_us`) does, and
    /// takes a send if so.
    pub fn begin(&self, node: &str, important: bool, received_us: i64) -> Begin {
        let now = Instant::now();
        let mut map = self.lock();
        // No allocation for a node already tracked (the common case in a
        // burst).
        if !map.contains_key(node) {
            map.insert(node.to_owned(), Slot::default());
        }
        let Some(slot) = map.get_mut(node) else {
            return Begin::Send;
        };
        // The rest of the window after the last push; zero when none.
        let hold = slot.last_push.map_or(Duration::ZERO, |(at, _)| {
            self.window.saturating_sub(now - at)
        });
        let last_was_important = slot.last_push.is_some_and(|(_, i)| i);
        if slot.sending > 0 {
            if important && !slot.important_sending {
                slot.sending += 1;
                slot.important_sending = true;
                slot.last_push = Some((now, true));
                slot.sent_upto = slot.sent_upto.max(received_us);
                return Begin::Send;
            }
            slot.queued = true;
            return Begin::Merge(hold);
        }
        if slot.queued {
            // A row waits (for the window, or for a retry after a failure).
            return if important && (hold.is_zero() || !last_was_important) {
                Begin::MergeAndFlush
            } else {
                Begin::Merge(hold)
            };
        }
        // Within the window of a push: held, unless this is important and
        // that push was not.
        let beside_silent = important && !last_was_important;
        if !hold.is_zero() && !beside_silent {
            slot.queued = true;
            return Begin::Merge(hold);
        }
        slot.sending = 1;
        slot.important_sending = important;
        slot.last_push = Some((now, important));
        slot.sent_upto = slot.sent_upto.max(received_us);
        Begin::Send
    }

    /// The lock on the node's outbox row (see [`Slot`]).
    pub fn row_lock(&self, node: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.lock().entry(node.to_owned()).or_default().rows.clone()
    }

    /// Whether a push already carried a publish newer than one read at
    /// `received_us` (which then needs no push of its own).
    pub fn superseded(&self, node: &str, received_us: i64) -> bool {
        self.lock()
            .get(node)
            .is_some_and(|s| s.sent_upto > received_us)
    }

    /// Takes a send of a node's outbox row (importance `important`,
    /// newest publish read at `received_us`).
    pub fn claim_row(&self, node: &str, important: bool, received_us: i64) -> RowClaim {
        let mut map = self.lock();
        let slot = map.entry(node.to_owned()).or_default();
        slot.queued = true;
        if slot.sending > 0 {
            return RowClaim::Busy;
        }
        if received_us < slot.sent_upto {
            return RowClaim::Stale;
        }
        slot.sending = 1;
        slot.important_sending = important;
        slot.last_push = Some((Instant::now(), important));
        slot.sent_upto = received_us;
        RowClaim::Claimed
    }

    /// Marks that the node has an outbox row (or not).
    pub fn set_queued(&self, node: &str, queued: bool) {
        let mut map = self.lock();
        if queued {
            map.entry(node.to_owned()).or_default().queued = true;
        } else if let Some(slot) = map.get_mut(node) {
            slot.queued = false;
        }
    }

    /// A send taken by [`Slots::begin`] or [`Slots::claim_row`] is done.
    /// `Some(wait)` when the node still has a row to deliver: the rest of
    /// the window, after which it may go.
    pub fn finish(&self, node: &str) -> Option<Duration> {
        let mut map = self.lock();
        let slot = map.get_mut(node)?;
        slot.sending = slot.sending.saturating_sub(1);
        if slot.sending > 0 {
            return None;
        }
        slot.important_sending = false;
        if !slot.queued {
            return None;
        }
        Some(slot.last_push.map_or(Duration::ZERO, |(at, _)| {
            self.window.saturating_sub(at.elapsed())
        }))
    }

    /// A send taken by [`Slots::begin`] was not made after all (the
    /// publish was refused): gives it back without starting a window.
    pub fn cancel(&self, node: &str) -> Option<Duration> {
        if let Some(slot) = self.lock().get_mut(node)
            && slot.sending == 1
        {
            slot.last_push = None;
        }
        self.finish(node)
    }

    /// Forgets nodes with nothing out, nothing queued and no push within
    /// the window (or the last few seconds, for late merges), so that
    /// memory follows the active devices.
    pub fn forget_idle(&self) {
        let window = self.window.max(Duration::from_secs(10));
        self.lock().retain(|_, s| {
            s.sending > 0 || s.queued || s.last_push.is_some_and(|(at, _)| at.elapsed() < window)
        });
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

    const WINDOW: Duration = Duration::from_secs(60);

    fn is_merge(b: Begin) -> bool {
        matches!(b, Begin::Merge(_))
    }

    #[test]
    fn a_burst_is_one_send_then_merges_until_the_window_passes() {
        let slots = Slots::new(WINDOW);
        assert_eq!(slots.begin("n", true, 1), Begin::Send);
        for _ in 0..20 {
            assert!(is_merge(slots.begin("n", true, 1)));
        }
        // The send is done; the merged row goes when the window has passed.
        let wait = slots.finish("n").expect("a row is owed");
        assert!(wait > Duration::from_secs(59), "{wait:?}");
        assert_eq!(slots.claim_row("n", true, 1), RowClaim::Claimed);
        assert_eq!(
            slots.claim_row("n", true, 1),
            RowClaim::Busy,
            "one row send at a time"
        );
        slots.set_queued("n", false);
        assert_eq!(slots.finish("n"), None);
        // Right after a push, the next publish waits for the window too.
        assert!(is_merge(slots.begin("n", true, 1)));
    }

    #[test]
    fn without_a_window_every_publish_after_a_push_is_sent() {
        let slots = Slots::new(Duration::ZERO);
        assert_eq!(slots.begin("n", false, 1), Begin::Send);
        assert_eq!(slots.finish("n"), None);
        assert_eq!(slots.begin("n", false, 3), Begin::Send);
        slots.finish("n");
        // A publish read before the last push's is covered by it.
        assert!(slots.superseded("n", 2));
        slots.set_queued("n", true);
        assert_eq!(slots.claim_row("n", true, 2), RowClaim::Stale);
        assert!(!slots.superseded("n", 4));
        assert!(!slots.superseded("other", 1));
    }

    #[test]
    fn important_never_waits_behind_silent() {
        let slots = Slots::new(WINDOW);
        assert_eq!(slots.begin("n", false, 1), Begin::Send);
        assert_eq!(slots.begin("n", true, 1), Begin::Send);
        // A second important one merges behind the first.
        assert!(is_merge(slots.begin("n", true, 1)));
        assert!(slots.finish("n").is_none());
        assert!(slots.finish("n").is_some());

        // Within the window of a silent push, an important one goes at once.
        let slots = Slots::new(WINDOW);
        assert_eq!(slots.begin("m", false, 1), Begin::Send);
        assert_eq!(slots.finish("m"), None);
        assert_eq!(slots.begin("m", true, 2), Begin::Send);
    }

    #[test]
    fn a_row_waiting_for_a_retry_is_flushed_by_an_important_publish() {
        let slots = Slots::new(WINDOW);
        slots.set_queued("n", true);
        assert!(is_merge(slots.begin("n", false, 1)));
        assert_eq!(slots.begin("n", true, 1), Begin::MergeAndFlush);
        assert_eq!(slots.finish("other"), None);
    }
}
