//! The publishes of one phase: written pipelined (at most `window` in
//! flight, optionally paced at `rate` per second), each reply matched to
//! its publish by stanza id, and, when the phase waits for pushes, each
//! request at the mock APNs matched to its publish by the device token
//! (`crate::seed::device_of_token`): a device then gets a new publish only
//! once the push of its previous one arrived, so an arrival belongs to the
//! one publish of its device that is out.
//!
//! A phase ends when every publish is complete (answered, and pushed when
//! waited for); it fails when nothing happens for `stall`, or when Nudge's
//! stream ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nudge_test_app::Arrival;
use tokio::io::AsyncWriteExt;

use crate::external::{BenchError, Harness};
use crate::xmpp::{Answer, publish};

/// No device's publish out (in [`run`]'s per-device slots).
const FREE: u32 = u32::MAX;
/// A publish's state bits in [`run`].
const REPLIED: u8 = 1;
const PUSHED: u8 = 2;
const DONE: u8 = 4;

/// What the publishes of a phase go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nodes {
    /// The seeded registrations (`crate::seed::node`).
    Registered,
    /// Nodes nobody registered (`bench-unknown-<i>`): Nudge answers
    /// `item-not-found`.
    Unknown,
}

/// One phase of publishes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The device (or unknown node) of each publish, in sending order.
    pub targets: Vec<u32>,
    pub nodes: Nodes,
    /// Publishes in flight at most (see `await_push` for when one ends).
    pub window: usize,
    /// Publishes per second, spread evenly; `None`: as fast as the window
    /// lets them go.
    pub rate: Option<u64>,
    /// A publish stays in flight until its push reached the mock with a
    /// 2xx (or it was answered with an error), and a device has at most one
    /// publish out; this gives publish → provider latencies.
    pub await_push: bool,
    /// Give up when nothing arrives for this long.
    pub stall: Duration,
}

/// What a phase measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// First publish written to the last one complete.
    pub elapsed: Duration,
    /// Publish written → its reply read, per reply.
    pub reply_latency: Vec<Duration>,
    /// Publish written → its push's request arriving at the mock (2xx
    /// only), when the plan waits for pushes.
    pub push_latency: Vec<Duration>,
    /// Replies per answer (`result`, `item-not-found`, …).
    pub answers: BTreeMap<String, usize>,
    /// Every request the mock saw during the phase, in arrival order.
    pub arrivals: Vec<Arrival>,
    /// When each publish was written.
    pub sent_at: Vec<Instant>,
    /// The `message-count` each publish carried (per device: 1, 2, …).
    pub counts: Vec<u32>,
}

impl Outcome {
    /// Replies of the phase.
    pub fn replies(&self) -> usize {
        self.answers.values().sum()
    }

    /// Requests the mock accepted (2xx).
    pub fn delivered(&self) -> usize {
        self.arrivals
            .iter()
            .filter(|a| (200..300).contains(&a.status))
            .count()
    }

    /// Requests the mock refused.
    pub fn refused(&self) -> usize {
        self.arrivals.len() - self.delivered()
    }
}

/// Runs one phase on `h`; see the module docs.
pub async fn run(h: &mut Harness, plan: &Plan) -> Result<Outcome, BenchError> {
    let n = plan.targets.len();
    let slots = plan.targets.iter().max().map_or(0, |&m| m as usize + 1);
    // Per device: the publish that is out (await_push) and the last count.
    let mut out = vec![FREE; slots];
    let mut count = vec![0u32; slots];
    let mut state = vec![0u8; n];
    let mut o = Outcome {
        sent_at: Vec::with_capacity(n),
        counts: Vec::with_capacity(n),
        reply_latency: Vec::with_capacity(n),
        push_latency: Vec::with_capacity(if plan.await_push { n } else { 0 }),
        ..Outcome::default()
    };
    let window = plan.window.max(1);
    let (mut in_flight, mut done) = (0usize, 0usize);
    let mut buf = String::with_capacity(128 * 1024);
    let begin = Instant::now();
    let due = |i: usize| {
        plan.rate
            .map(|r| begin + Duration::from_secs_f64(i as f64 / r.max(1) as f64))
    };

    while done < n {
        // Write what the window, the devices and the pace allow.
        let mut wait_until = None;
        while o.sent_at.len() < n && in_flight < window {
            let i = o.sent_at.len();
            let dev = plan.targets[i];
            if plan.await_push && out[dev as usize] != FREE {
                break;
            }
            if let Some(t) = due(i)
                && t > Instant::now()
            {
                wait_until = Some(t);
                break;
            }
            count[dev as usize] += 1;
            let (node, secret) = match plan.nodes {
                Nodes::Registered => (crate::seed::node(dev), crate::seed::secret(dev)),
                Nodes::Unknown => (format!("bench-unknown-{dev}"), "none".to_owned()),
            };
            buf.push_str(&publish(i, &node, &secret, count[dev as usize]));
            o.sent_at.push(Instant::now());
            o.counts.push(count[dev as usize]);
            out[dev as usize] = i as u32;
            in_flight += 1;
            if buf.len() > 64 * 1024 || plan.rate.is_some() {
                flush(h, &mut buf).await?;
            }
        }
        flush(h, &mut buf).await?;

        let pace = async {
            match wait_until {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        // The publish an event concerns, if any.
        let mut touched = None;
        tokio::select! {
            reply = h.stream.replies.recv() => {
                let Some(reply) = reply else {
                    let what = stream_ended(&mut h.child);
                    return Err(h.fail(what));
                };
                let i = reply.index;
                if i >= o.sent_at.len() || state[i] & REPLIED != 0 {
                    return Err(h.fail(format!("a reply to no publish out: p{i}")));
                }
                state[i] |= REPLIED;
                o.reply_latency.push(reply.at.duration_since(o.sent_at[i]));
                let key = match reply.answer {
                    Answer::Result => "result".to_owned(),
                    Answer::Error(condition) => {
                        // No push will come for a refused publish.
                        state[i] |= PUSHED;
                        condition
                    }
                };
                *o.answers.entry(key).or_default() += 1;
                touched = Some(i);
            }
            arrival = h.arrivals.recv() => {
                let Some(a) = arrival else {
                    return Err(h.fail("the mock APNs stopped"));
                };
                if plan.await_push
                    && (200..300).contains(&a.status)
                    && let Some(dev) = crate::seed::device_of_token(&a.token)
                    && let Some(&i) = out.get(dev as usize)
                    && i != FREE
                    && state[i as usize] & PUSHED == 0
                {
                    let i = i as usize;
                    state[i] |= PUSHED;
                    o.push_latency.push(a.at.duration_since(o.sent_at[i]));
                    touched = Some(i);
                }
                o.arrivals.push(a);
            }
            () = pace => {}
            () = tokio::time::sleep(plan.stall) => {
                return Err(h.fail(format!(
                    "stalled: {} of {n} publishes written, {done} complete, nothing for {:?}",
                    o.sent_at.len(),
                    plan.stall
                )));
            }
        }
        // Complete: answered, and pushed when waited for.
        if let Some(i) = touched {
            let complete = state[i] & REPLIED != 0 && (!plan.await_push || state[i] & PUSHED != 0);
            if complete {
                state[i] |= DONE;
                let dev = plan.targets[i] as usize;
                if out[dev] == i as u32 {
                    out[dev] = FREE;
                }
                in_flight -= 1;
                done += 1;
            }
        }
    }
    o.elapsed = begin.elapsed();
    Ok(o)
}

async fn flush(h: &Harness, buf: &mut String) -> Result<(), BenchError> {
    if buf.is_empty() {
        return Ok(());
    }
    h.stream
        .writer
        .lock()
        .await
        .write_all(buf.as_bytes())
        .await
        .map_err(|e| h.fail(format!("writing publishes: {e}")))?;
    buf.clear();
    Ok(())
}

fn stream_ended(child: &mut crate::child::NudgeChild) -> String {
    match child.exited() {
        Some(status) => format!("nudge exited ({status})"),
        None => "Nudge's stream ended".to_owned(),
    }
}

/// After a phase: receives the mock's requests into `o.arrivals` until
/// `done` says so (asked after each one) or `timeout` passes; whether
/// `done` held.
pub async fn collect_arrivals(
    h: &mut Harness,
    o: &mut Outcome,
    timeout: Duration,
    mut done: impl FnMut(&Harness, &Arrival) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, h.arrivals.recv()).await {
            Ok(Some(a)) => {
                let finished = done(h, &a);
                o.arrivals.push(a);
                if finished {
                    return true;
                }
            }
            Ok(None) | Err(_) => return false,
        }
    }
}

/// The `message-count` a recorded push carries (the APNs payload's
/// `unread-messages`), read back from the mock's record by id.
pub fn pushed_count(h: &Harness, id: u64) -> Option<u32> {
    let filter = nudge_test_app::PushFilter {
        after_id: Some(id.saturating_sub(1)),
        ..Default::default()
    };
    h.app
        .pushes(filter)
        .into_iter()
        .find(|p| p.id == id)
        .and_then(|p| p.payload.get("unread-messages")?.as_u64())
        .and_then(|c| u32::try_from(c).ok())
}
