//! The registration's life cycle as the spec defines it: the component's
//! handshake (XEP-0114), `<enable/>` (XEP-0357 §5) and `<disable/>`
//! (XEP-0357 §6).

use std::time::Duration;

use serde_json::json;

use super::component::{Component, ComponentError, Event};
use super::{Ctx, QUIET, Row, ServerError, judge};

/// component-wrong-secret: a second connection with a wrong secret must be
/// refused with a stream error.
pub(super) async fn wrong_secret(ctx: &mut Ctx) -> Result<Vec<Row>, ServerError> {
    let wrong = format!("{}-wrong", ctx.opts.secret);
    let row = match Component::connect(&ctx.opts.component, &ctx.opts.domain, &wrong).await {
        Err(ComponentError::Refused(condition)) => judge(
            "component-wrong-secret",
            true,
            format!("refused: stream error {condition}"),
            condition,
        ),
        Err(ComponentError::Closed) => judge(
            "component-wrong-secret",
            false,
            "the connection was closed without a stream error",
            "closed",
        ),
        Err(e) => judge(
            "component-wrong-secret",
            false,
            format!("no stream error: {e}"),
            "error",
        ),
        Ok(mut c) => {
            c.close().await;
            judge(
                "component-wrong-secret",
                false,
                "the handshake with a wrong secret was accepted",
                "accepted",
            )
        }
    };
    Ok(vec![row])
}

/// enable, enable-silent.
pub(super) async fn enable(ctx: &mut Ctx) -> Result<Vec<Row>, ServerError> {
    let mut owner = ctx.owner_login(false).await?;
    ctx.disable(&mut owner, None).await?;
    // Whatever the clean-up caused has arrived before the watch starts.
    let _ = ctx.component.events_for(Duration::from_millis(300)).await;
    let (_reg, outcome) = ctx.enable(&mut owner).await?;
    let seen = ctx.component.events_for(Duration::from_secs(1)).await;
    owner.close().await;
    let names: Vec<String> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Publish(_) => Some("publish".to_owned()),
            Event::Other(el) => Some(el.name.clone()),
            _ => None,
        })
        .collect();
    Ok(vec![
        judge(
            "enable",
            outcome == "result",
            format!("<enable/> answered {outcome}"),
            outcome,
        ),
        judge(
            "enable-silent",
            true,
            if names.is_empty() {
                "nothing reached the App Server".to_owned()
            } else {
                format!("the App Server got: {}", names.join(", "))
            },
            json!(names.len()),
        ),
    ])
}

/// disable: `<disable jid node/>` answered result, and no publish after.
pub(super) async fn disable(ctx: &mut Ctx) -> Result<Vec<Row>, ServerError> {
    let reg = ctx.fresh_registration().await?;
    // The registration works before it is disabled.
    let before = ctx.probe(&reg.node, super::PUBLISH_WAIT).await?;
    let mut owner = ctx.owner_login(false).await?;
    let outcome = ctx.disable(&mut owner, Some(&reg.node)).await?;
    owner.close().await;
    let after = ctx.probe(&reg.node, QUIET).await?;
    let row = match (before.is_some(), outcome.as_str(), after.is_some()) {
        (false, _, _) => {
            return Err(ServerError::Step(
                "no publish for the registration before <disable/>".into(),
            ));
        }
        (true, "result", false) => judge(
            "disable",
            true,
            "<disable/> answered result; the next message was not published",
            outcome,
        ),
        (true, "result", true) => judge(
            "disable",
            false,
            "<disable/> answered result, but the next message was still published",
            outcome,
        ),
        (true, _, published) => judge(
            "disable",
            false,
            format!(
                "<disable/> answered {outcome}; the next message was {}published",
                if published { "" } else { "not " }
            ),
            outcome,
        ),
    };
    Ok(vec![row])
}
