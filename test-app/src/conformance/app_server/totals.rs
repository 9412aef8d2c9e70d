//! Rows judged over the whole run: `answer-in-time` (every publish
//! answered well inside ejabberd's 32 s, docs/answers.md) and
//! `one-answer-per-iq` (RFC 6120 §8.2.3), after a settle period so that
//! late duplicates are counted.

use std::time::Duration;

use super::row;
use super::session::Session;
use crate::conformance::Row;

/// How long the kit listens after the last check for late answers.
const SETTLE: Duration = Duration::from_secs(2);
/// The deadline a publish's answer must meet.
const IN_TIME: Duration = Duration::from_secs(30);

/// Judges the run-wide rows.
pub async fn check(s: &mut Session) -> Vec<Row> {
    if s.is_up() {
        let _ = s.quiet(SETTLE, &[]).await;
    }
    let mut rows = Vec::new();
    let r = row("answer-in-time")
        .with_note("XEP-0357 sets no deadline; ejabberd 23.01 gives up after 32 s and drops a late answer (docs/answers.md).");
    if s.publishes.is_empty() {
        rows.push(
            r.skipped(
                s.broken
                    .clone()
                    .unwrap_or_else(|| "no publish was sent".into()),
            ),
        );
    } else {
        let late: Vec<String> = s
            .publishes
            .iter()
            .filter(|(_, took)| took.is_none_or(|t| t > IN_TIME))
            .map(|(id, took)| match took {
                Some(t) => format!("{id} ({} ms)", t.as_millis()),
                None => format!("{id} (unanswered)"),
            })
            .collect();
        let slowest = s
            .publishes
            .iter()
            .filter_map(|(_, t)| *t)
            .max()
            .unwrap_or_default();
        rows.push(r.judged(
            late.is_empty(),
            if late.is_empty() {
                format!("{} publishes, slowest answer {} ms", s.publishes.len(), slowest.as_millis())
            } else {
                format!("late or unanswered: {}", late.join(", "))
            },
            serde_json::json!({"publishes": s.publishes.len(), "slowest_ms": slowest.as_millis() as u64, "late": late.len()}),
        ));
    }
    let r = row("one-answer-per-iq");
    if s.broken.is_some() {
        rows.push(r.skipped(s.broken.clone().unwrap_or_default()));
    } else {
        let twice = s.answered_twice();
        rows.push(r.judged(
            twice.is_empty(),
            if twice.is_empty() {
                "every iq answered at most once".to_owned()
            } else {
                let list: Vec<String> = twice.iter().map(|(id, n)| format!("{id} ×{n}")).collect();
                format!("answered more than once: {}", list.join(", "))
            },
            twice.len(),
        ));
    }
    rows
}
