//! What a publish looks like (XEP-0357 §7): one message with a body to the
//! offline owner, then a chat state alone, then a burst of ten.
//!
//! The first publish fills the envelope rows (to, node, from,
//! publish-options, item id) and the summary rows; the values are those
//! [`super::classify`] derives, the same the fixtures test checks.

use std::time::Duration;

use serde_json::json;

use super::classify::{self, From, OptionsCopy};
use super::{Ctx, Group, PUBLISH_WAIT, QUIET, Row, ServerError, judge, row};
use crate::conformance::xml::Element;

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
        // The rows the first publish would have filled: the group's, but
        // for this one and the two later scenarios'.
        for id in Group::Publish.rows().iter().filter(|id| {
            !matches!(
                **id,
                "publish-offline" | "publish-no-body" | "publish-burst"
            )
        }) {
            rows.push(row(id).skipped("no publish to look at"));
        }
        rows.extend(no_body_and_burst(ctx).await?);
        return Ok(rows);
    };
    rows.push(judge("publish-offline", true, "published", true));
    let expected = Expected {
        domain: &ctx.opts.domain,
        owner: &ctx.opts.owner.jid,
        sender_full: &ctx.sender.full_jid,
        node: &reg.node,
        form: &reg.form,
        body: &body,
    };
    rows.extend(publish_rows(&publish.iq, &expected));
    rows.extend(no_body_and_burst(ctx).await?);
    Ok(rows)
}

/// What a publish is checked against.
struct Expected<'a> {
    /// The component domain (the enabled jid).
    domain: &'a str,
    /// The owner's bare JID.
    owner: &'a str,
    /// The sender's full JID.
    sender_full: &'a str,
    /// The enabled node.
    node: &'a str,
    /// The form sent with `<enable/>`.
    form: &'a Element,
    /// The message body sent.
    body: &'a str,
}

/// The envelope and summary rows for the publish of one message with a
/// body.
fn publish_rows(iq: &Element, e: &Expected<'_>) -> Vec<Row> {
    let mut rows = Vec::new();

    let to = iq.attr("to").unwrap_or("");
    rows.push(judge(
        "publish-to",
        to == e.domain,
        format!("to='{to}'"),
        to == e.domain,
    ));
    let node = classify::publish_el(iq)
        .and_then(|p| p.attr("node"))
        .unwrap_or("");
    rows.push(judge(
        "publish-node",
        node == e.node,
        "node = the enabled node",
        node == e.node,
    ));
    let from = From::of(iq.attr("from"), e.owner);
    rows.push(judge(
        "publish-from",
        true,
        format!("from='{}'", iq.attr("from").unwrap_or("")),
        from.value(),
    ));
    let copy = OptionsCopy::of(iq, e.form);
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
    let sender = classify::last_message_sender(summary, e.sender_full);
    rows.push(judge(
        "summary-last-message-sender",
        true,
        format!("last-message-sender: {sender} (sender {})", e.sender_full),
        sender,
    ));
    let body_value = classify::last_message_body(summary, e.body);
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
    rows
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::Verdict;
    use crate::conformance::xml::submit_form;

    fn fixture(name: &str, node: &str, secret: &str) -> Element {
        let path = format!(
            "{}/../component/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let xml = std::fs::read_to_string(&path).unwrap();
        Element::parse(&xml.replace("{NODE}", node).replace("{SECRET}", secret)).unwrap()
    }

    fn rows(iq: &Element, node: &str, secret: &str) -> Vec<Row> {
        let form = submit_form(Some(classify::PUBLISH_OPTIONS), &[("secret", secret)]);
        publish_rows(
            iq,
            &Expected {
                domain: "push.localhost",
                owner: "alice@localhost",
                sender_full: "bob@localhost/phone",
                node,
                form: &form,
                body: "Hello offline alice",
            },
        )
    }

    fn get<'a>(rows: &'a [Row], id: &str) -> &'a Row {
        rows.iter().find(|r| r.id == id).unwrap()
    }

    #[test]
    fn the_ejabberd_capture_passes_and_reads_as_documented() {
        let iq = fixture("ejabberd-publish-summary.xml", "n1", "s1");
        let rows = rows(&iq, "n1", "s1");
        assert!(rows.iter().all(|r| r.verdict != Verdict::Fail), "{rows:?}");
        assert_eq!(get(&rows, "publish-from").value, "domain");
        assert_eq!(get(&rows, "publish-options").value, "verbatim");
        assert_eq!(get(&rows, "summary-form-type").value, "submit");
        assert_eq!(get(&rows, "summary-message-count").value, "absent");
        assert_eq!(get(&rows, "summary-last-message-sender").value, "full-jid");
        assert_eq!(get(&rows, "summary-last-message-body").value, "body");
        assert_eq!(get(&rows, "summary-unset-fields").value, "absent");
        assert_eq!(get(&rows, "publish-item-id").value, "absent");
    }

    #[test]
    fn the_prosody_capture_reads_as_documented() {
        let iq = fixture("prosody-publish-important.xml", "n1", "s1");
        let rows = rows(&iq, "n1", "s1");
        assert!(rows.iter().all(|r| r.verdict != Verdict::Fail), "{rows:?}");
        assert_eq!(get(&rows, "summary-form-type").value, "form");
        assert_eq!(get(&rows, "summary-message-count").value, "1");
        assert_eq!(get(&rows, "summary-last-message-sender").value, "empty");
        assert_eq!(
            get(&rows, "summary-last-message-body").value,
            "static:New Message!"
        );
        assert_eq!(get(&rows, "summary-unset-fields").value, "empty");
    }

    #[test]
    fn a_changed_secret_fails_publish_options() {
        let iq = fixture("ejabberd-publish-summary.xml", "n1", "other");
        let rows = rows(&iq, "n1", "s1");
        let failed: Vec<&str> = rows
            .iter()
            .filter(|r| r.verdict == Verdict::Fail)
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(failed, ["publish-options"]);
        assert_eq!(get(&rows, "publish-options").value, "altered");
    }

    #[test]
    fn another_node_fails_publish_node() {
        let iq = fixture("prosody-publish-body-sender.xml", "n2", "s1");
        let rows = rows(&iq, "n1", "s1");
        let failed: Vec<&str> = rows
            .iter()
            .filter(|r| r.verdict == Verdict::Fail)
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(failed, ["publish-node"]);
    }
}
