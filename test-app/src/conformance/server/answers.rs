//! The server's reaction to each answer an App Server can give a publish
//! (XEP-0357 §7.1 leaves it to the server; docs/answers.md records what
//! Prosody and ejabberd do).
//!
//! Each answer gets its own registration. A probe is one message and the
//! publish it causes, answered the way the row says; probes repeat until
//! one is not published (the registration is disabled) or the cap is
//! reached, which tells "disabled at once" from "disabled after N errors"
//! (Prosody's `push_max_errors`) from "kept".

use std::time::Duration;

use serde_json::json;

use super::classify::Outcome;
use super::component::{Answer, Condition, ErrorType, Event};
use super::{Ctx, PUBLISH_WAIT, QUIET, Row, ServerError, judge, row};

/// Messages sent per error answer: 20 answered, the 21st tells whether the
/// 20th disabled it.
const PROBES: u32 = 21;
/// With `--quick`.
const QUICK_PROBES: u32 = 4;
/// Time a server gets to act on an answer before the next message: the
/// answer and the next message race otherwise (ejabberd handles them in
/// different processes).
const SETTLE: Duration = Duration::from_millis(500);
/// Longer than ejabberd's 32 s iq timeout (docs/answers.md).
const NO_ANSWER_WAIT: Duration = Duration::from_secs(40);

/// The error answers, in row order.
const ERRORS: [(&str, Answer); 5] = [
    (
        "answer-wait",
        Answer::Error(ErrorType::Wait, Condition::ResourceConstraint),
    ),
    (
        "answer-cancel",
        Answer::Error(ErrorType::Cancel, Condition::ItemNotFound),
    ),
    (
        "answer-auth",
        Answer::Error(ErrorType::Auth, Condition::Forbidden),
    ),
    (
        "answer-modify",
        Answer::Error(ErrorType::Modify, Condition::BadRequest),
    ),
    ("answer-bare-error", Answer::BareError),
];

fn describe(answer: Answer) -> String {
    match answer {
        Answer::Result => "result".into(),
        Answer::Error(t, c) => format!("error type {} ({})", t.as_str(), c.as_str()),
        Answer::BareError => "<iq type='error'/> without <error/>".into(),
        Answer::Silence => "no answer".into(),
    }
}

/// Sends up to `probes` messages answered with `answer`, one at a time,
/// until one is not published.
async fn repeat(ctx: &mut Ctx, answer: Answer, probes: u32) -> Result<Outcome, ServerError> {
    let reg = ctx.fresh_registration().await?;
    ctx.answer(answer);
    let mut published = 0;
    for i in 0..probes {
        let wait = if i == 0 { PUBLISH_WAIT } else { QUIET };
        if ctx.probe(&reg.node, wait).await?.is_none() {
            break;
        }
        published += 1;
        tokio::time::sleep(SETTLE).await;
    }
    ctx.answer(Answer::Result);
    Ok(Outcome::of(published, probes))
}

fn outcome_row(id: &str, answer: Answer, outcome: Outcome, probes: u32) -> Row {
    let observed = match outcome {
        Outcome::Kept => format!(
            "answered {} {probes} times: every message still published",
            describe(answer)
        ),
        Outcome::Disabled => format!(
            "answered {} once: the next message was not published",
            describe(answer)
        ),
        Outcome::DisabledAfter(n) => format!(
            "answered {} {n} times: publishes stopped after that",
            describe(answer)
        ),
        Outcome::NoPublish => "not even the first message was published".into(),
    };
    let note = match outcome {
        Outcome::Disabled => {
            "This server disables at the first such error: an App Server must answer it only when the registration is really gone."
        }
        Outcome::DisabledAfter(_) => {
            "This server counts such errors and disables after a threshold; a result in between resets the count (docs/answers.md)."
        }
        _ => "",
    };
    let r = judge(id, true, observed, outcome.value());
    if note.is_empty() {
        r
    } else {
        r.with_note(note)
    }
}

/// answer-result, the five error answers, answer-none.
pub(super) async fn run(ctx: &mut Ctx) -> Result<Vec<Row>, ServerError> {
    let mut rows = Vec::new();
    let probes = if ctx.opts.quick { QUICK_PROBES } else { PROBES };

    let outcome = repeat(ctx, Answer::Result, 3).await?;
    rows.push(outcome_row("answer-result", Answer::Result, outcome, 3));

    for (id, answer) in ERRORS {
        let outcome = repeat(ctx, answer, probes).await?;
        let mut r = outcome_row(id, answer, outcome, probes);
        if ctx.opts.quick && outcome == Outcome::Kept {
            r = r.with_note(format!(
                "--quick: only {probes} messages; a server that disables after more errors shows as kept"
            ));
        }
        rows.push(r);
    }

    rows.push(no_answer(ctx).await?);
    Ok(rows)
}

/// answer-none: one publish left unanswered for 40 s, then another message.
async fn no_answer(ctx: &mut Ctx) -> Result<Row, ServerError> {
    let wait = if ctx.opts.quick {
        Duration::from_secs(5)
    } else {
        NO_ANSWER_WAIT
    };
    let reg = ctx.fresh_registration().await?;
    ctx.answer(Answer::Silence);
    if ctx.probe(&reg.node, PUBLISH_WAIT).await?.is_none() {
        ctx.answer(Answer::Result);
        return Ok(
            row("answer-none").note_only("the first message was not published", "no-publish")
        );
    }
    // Anything the server sends meanwhile: a retry of the publish, an
    // error, a stream error on timeout.
    let during = ctx.component.events_for(wait).await;
    ctx.answer(Answer::Result);
    let retries = during
        .iter()
        .filter(|e| matches!(e, Event::Publish(p) if p.node() == Some(reg.node.as_str())))
        .count();
    let stream_error = during.iter().find_map(|e| match e {
        Event::StreamError(c) => Some(c.clone()),
        _ => None,
    });
    if !ctx.component.is_open() {
        ctx.reconnect().await?;
    }
    let after = ctx.probe(&reg.node, PUBLISH_WAIT).await?.is_some();
    let value = if after { "kept" } else { "disabled" };
    let mut seen = format!(
        "no answer for {} s: {retries} re-sent publish(es)",
        wait.as_secs()
    );
    if let Some(c) = stream_error {
        seen.push_str(&format!(", stream error {c}"));
    }
    seen.push_str(if after {
        "; the next message was published"
    } else {
        "; the next message was not published"
    });
    Ok(judge("answer-none", true, seen, json!(value)).with_note(
        "A server's timeout, if any, is invisible to the App Server: answer every publish well inside the shortest one (ejabberd: 32 s, docs/answers.md).",
    ))
}
