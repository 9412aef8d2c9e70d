//! What a publish looks like (XEP-0357 §7): one message with a body to the
//! offline owner, then a chat state alone, then a burst of ten.
//!
//! The first publish fills the envelope rows (to, node, from,
//! publish-options, item id) and the summary rows; the values are those
//! [`super::classify`] derives, the same the fixtures test checks.

use std::time::Duration;

use serde_json::json;

use super::classify::{self, From, OptionsCopy};
use super::{Ctx, PUBLISH_WAIT, QUIET, Row, ServerError, judge, row};

/// Every row of the group.
pub(super) async fn run(ctx: &mut Ctx) -> Result<Vec<Row>, ServerError> {
    let mut rows = Vec::new();
    let reg = ctx.fresh_registration().await?;
    let body = ctx.send_message(true).await?;
    let Some(publish) = ctx.component.next_publish(&reg.node, PUBLISH_WAIT).await else {
        rows.push(judge(
            "publish-offline",
            false,
            format!("no publish within {} s", PUBLISH_WAIT.as_secs()),
            false,
        ));
        for id in [
            "publish-to",
            "publish-node",
            "publish-from",
            "publish-options",
            "publish-item-id",
            "summary-form",
            "summary-form-type",
            "summary-message-count",
            "summary-last-message-sender",
            "summary-last-message-body",
            "summary-unset-fields",
        ] {
            rows.push(row(id).skipped("no publish to look at"));
        }
        rows.extend(no_body_and_burst(ctx).await?);
        return Ok(rows);
    };
    let iq = &publish.iq;
    rows.push(judge("publish-offline", true, "published", true));

    let to = iq.attr("to").unwrap_or("");
    rows.push(judge(
        "publish-to",
        to == ctx.opts.domain,
        format!("to='{to}'"),
        to == ctx.opts.domain,
    ));
    // next_publish matched the node; say so.
    let node = publish.node().unwrap_or("");
    rows.push(judge(
        "publish-node",
        node == reg.node,
        "node = the enabled node",
        node == reg.node,
    ));
    let from = From::of(iq.attr("from"), &ctx.opts.owner.jid);
    rows.push(judge(
        "publish-from",
        true,
        format!("from='{}'", iq.attr("from").unwrap_or("")),
        from.value(),
    ));
    let copy = OptionsCopy::of(iq, &reg.form);
    rows.push(judge(
        "publish-options",
        copy == OptionsCopy::Verbatim,
        match copy {
            OptionsCopy::Verbatim => "the <enable/> form, field for field",
            OptionsCopy::Altered => "publish-options differ from the <enable/> form",
            OptionsCopy::Absent => "no publish-options",
        },
        copy.value(),
    ));
    let item_id = classify::item(iq).and_then(|i| i.attr("id"));
    rows.push(judge(
        "publish-item-id",
        true,
        match item_id {
            Some(id) => format!("<item id='{id}'>"),
            None => "<item/> without id".into(),
        },
        if item_id.is_some() {
            "present"
        } else {
            "absent"
        },
    ));

    let summary = classify::summary_form(iq);
    rows.push(judge(
        "summary-form",
        summary.is_some(),
        if summary.is_some() {
            "urn:xmpp:push:summary form present"
        } else {
            "no summary form"
        },
        if summary.is_some() {
            "present"
        } else {
            "absent"
        },
    ));
    let form_type = classify::form_type(summary);
    rows.push(judge(
        "summary-form-type",
        true,
        format!("type='{form_type}'"),
        form_type,
    ));
    let count = classify::message_count(summary);
    rows.push(judge(
        "summary-message-count",
        true,
        format!("message-count: {count}"),
        count,
    ));
    let sender = classify::last_message_sender(summary, &ctx.sender.full_jid);
    rows.push(judge(
        "summary-last-message-sender",
        true,
        format!(
            "last-message-sender: {sender} (sender {})",
            ctx.sender.full_jid
        ),
        sender,
    ));
    let body_value = classify::last_message_body(summary, &body);
    rows.push(judge(
        "summary-last-message-body",
        true,
        format!("last-message-body: {body_value}"),
        body_value,
    ));
    let unset = classify::unset_fields(summary);
    rows.push(judge(
        "summary-unset-fields",
        true,
        format!("summary fields without a value: {unset}"),
        unset,
    ));
    rows.extend(no_body_and_burst(ctx).await?);
    Ok(rows)
}

/// publish-no-body and publish-burst, each on a registration of its own.
async fn no_body_and_burst(ctx: &mut Ctx) -> Result<Vec<Row>, ServerError> {
    let mut rows = Vec::new();

    let reg = ctx.fresh_registration().await?;
    ctx.send_message(false).await?;
    let published = ctx.component.next_publish(&reg.node, QUIET).await.is_some();
    rows.push(judge(
        "publish-no-body",
        true,
        if published {
            "a chat state alone was published"
        } else {
            "no publish for a chat state alone"
        },
        if published {
            "published"
        } else {
            "not-published"
        },
    ));

    let reg = ctx.fresh_registration().await?;
    for _ in 0..10 {
        ctx.send_message(true).await?;
    }
    let burst = ctx
        .component
        .publishes_until_quiet(&reg.node, QUIET, Duration::from_secs(20))
        .await;
    let spread = match (burst.first(), burst.last()) {
        (Some(a), Some(b)) => b.at.duration_since(a.at).as_millis(),
        _ => 0,
    };
    rows.push(
        judge(
            "publish-burst",
            true,
            format!("{} publishes for 10 messages, within {spread} ms", burst.len()),
            json!(burst.len()),
        )
        .with_note(if burst.len() == 10 {
            "No coalescing: one publish per message. Coalescing, if any, is the App Server's job."
        } else {
            "The server coalesced or dropped publishes: an App Server cannot count messages from publishes."
        }),
    );
    Ok(rows)
}
