//! A second component connection for the domain the kit already holds:
//! what several App Server instances, or a restart without a gap, meet
//! (docs/answers.md, "Several connections for one component domain").

use std::time::Duration;

use super::component::{Component, ComponentError, Event};
use super::{Ctx, QUIET, Row, ServerError, judge};

/// Messages sent to see where the publishes go.
const MESSAGES: usize = 6;

/// second-connection.
pub(super) async fn run(ctx: &mut Ctx) -> Result<Vec<Row>, ServerError> {
    let reg = ctx.fresh_registration().await?;
    let second = Component::connect(&ctx.opts.component, &ctx.opts.domain, &ctx.opts.secret).await;
    let mut second = match second {
        Err(ComponentError::Refused(condition)) => {
            let first_open = ctx.component.is_open();
            return Ok(vec![
                judge(
                    "second-connection",
                    true,
                    format!(
                        "refused with stream error {condition}; the first connection {}",
                        if first_open {
                            "stays"
                        } else {
                            "was closed too"
                        }
                    ),
                    format!("refused:{condition}"),
                )
                .with_note(
                    "One connection per domain: a second App Server instance can only stand by.",
                ),
            ]);
        }
        Err(e) => {
            return Ok(vec![judge(
                "second-connection",
                true,
                format!("refused without a stream error: {e}"),
                "refused:none",
            )]);
        }
        Ok(c) => c,
    };
    // Whether the first connection was replaced.
    let kicked = ctx
        .component
        .events_for(Duration::from_secs(1))
        .await
        .into_iter()
        .find_map(|e| match e {
            Event::StreamError(c) => Some(c),
            _ => None,
        });
    for _ in 0..MESSAGES {
        ctx.send_message(true).await?;
    }
    let on_second = second
        .publishes_until_quiet(&reg.node, QUIET, Duration::from_secs(15))
        .await
        .len();
    let on_first = if ctx.component.is_open() {
        ctx.component
            .publishes_until_quiet(
                &reg.node,
                Duration::from_millis(500),
                Duration::from_secs(5),
            )
            .await
            .len()
    } else {
        0
    };
    let (observed, note) = match &kicked {
        Some(c) => (
            format!(
                "accepted; the first connection got stream error {c}; publishes: {on_second} of {MESSAGES} on the new one"
            ),
            "The new connection replaces the old one: a restart can hand over without a gap, but two live instances push each other out.".to_owned(),
        ),
        None => (
            format!(
                "accepted beside the first; publishes: {on_first} on the first, {on_second} on the second, of {MESSAGES}"
            ),
            if on_first > 0 && on_second > 0 {
                "Both connections stay and publishes are split between them: every instance must be able to handle any registration.".to_owned()
            } else {
                "Both connections stay; publishes went to one of them.".to_owned()
            },
        ),
    };
    // Keep whichever connection is alive as the run's component.
    if ctx.component.is_open() {
        second.close().await;
    } else {
        std::mem::swap(&mut ctx.component, &mut second);
    }
    Ok(vec![
        judge("second-connection", true, observed, "accepted").with_note(note),
    ])
}
