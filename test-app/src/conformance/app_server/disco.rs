//! Rows `disco-info`, `disco-push-identity` and `iq-unknown`: the App
//! Server answers iq gets to its domain (RFC 6120 §8.2.3), and says it is
//! a push service the way Siskin looks for one (identity pubsub/push,
//! feature urn:xmpp:push:0; fixture `prosody-disco-info.xml` is the query
//! a client sends).

use super::row;
use super::session::{Answer, Condition, ErrorType, Outcome, Session};
use crate::conformance::Row;
use crate::conformance::xml::{Element, ns};

/// How long the kit waits for the (optional) software version.
const VERSION_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the disco and unknown-iq checks (and asks the software version).
pub async fn check(s: &mut Session) -> Vec<Row> {
    let mut rows = vec![
        row("disco-info"),
        row("disco-push-identity"),
        row("iq-unknown"),
    ];
    if let Err(why) = s.connected().await {
        return rows.into_iter().map(|r| r.skipped(why.clone())).collect();
    }
    let from = format!("alice@{}/phone", s.user_domain);
    let id = s.id("disco");
    let query = super::stanzas::iq("get", &id, &from, &s.domain.clone())
        .with_attr("xml:lang", "en")
        .with_child(Element::new("query", ns::DISCO_INFO));
    let out = s.request(&query).await;
    let info = rows.remove(0);
    let ident = rows.remove(0);
    let unknown = rows.remove(0);
    let mut done = Vec::new();
    match &out {
        Outcome::Answered(Answer::Result(el), _) => {
            done.push(info.pass(out.describe(), "result"));
            let q = el.child("query", ns::DISCO_INFO);
            let identity = q.is_some_and(|q| {
                q.children_named("identity", ns::DISCO_INFO)
                    .any(|i| i.attr("category") == Some("pubsub") && i.attr("type") == Some("push"))
            });
            let feature = q.is_some_and(|q| {
                q.children_named("feature", ns::DISCO_INFO)
                    .any(|f| f.attr("var") == Some(ns::PUSH))
            });
            done.push(ident.judged(
                identity && feature,
                format!(
                    "identity pubsub/push: {identity}; feature {}: {feature}",
                    ns::PUSH
                ),
                serde_json::json!({"identity": identity, "feature": feature}),
            ));
        }
        other => {
            done.push(info.fail(other.describe(), other.value()));
            done.push(ident.fail("no disco#info result", serde_json::Value::Null));
        }
    }
    // The software's name and version for the report (XEP-0092); no row.
    let id = s.id("version");
    let query = super::stanzas::iq("get", &id, &from, &s.domain.clone())
        .with_child(Element::new("query", ns::VERSION));
    if let Outcome::Answered(Answer::Result(el), _) = s.request_within(&query, VERSION_LIMIT).await
    {
        let text = |name: &str| {
            el.child("query", ns::VERSION)
                .and_then(|q| q.child(name, ns::VERSION))
                .map(|c| c.text.trim().to_owned())
                .filter(|t| !t.is_empty())
        };
        s.software = match (text("name"), text("version")) {
            (Some(n), Some(v)) => Some(format!("{n} {v}")),
            (Some(n), None) => Some(n),
            _ => None,
        };
    }
    let id = s.id("unknown");
    let query = super::stanzas::iq("get", &id, &from, &s.domain.clone())
        .with_child(Element::new("query", "urn:example:nudge-kit:unknown"));
    let out = s.request(&query).await;
    let answered_error = out
        .answer()
        .is_some_and(|a| matches!(a, Answer::Error { .. }));
    let unknown = unknown.judged(answered_error, out.describe(), out.value());
    let unknown = match out.answer() {
        Some(a) if a.is(ErrorType::Cancel, Condition::ServiceUnavailable)
            || a.is(ErrorType::Cancel, Condition::FeatureNotImplemented) =>
        {
            unknown
        }
        Some(Answer::Error { .. }) => unknown.with_note(
            "RFC 6120 §8.4 suggests service-unavailable or feature-not-implemented; any error satisfies the MUST",
        ),
        _ => unknown,
    };
    done.push(unknown);
    done
}
