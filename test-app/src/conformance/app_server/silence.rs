//! Rows `silent-to-*`: stanzas that must not (iq result, iq error: RFC
//! 6120 §8.2.3) or should not (message, presence) be answered. An App
//! Server that answers an error with an error can loop with a server
//! that bounces it. The App Server's own pings are answered by the
//! session and are not counted here.

use std::time::Duration;

use super::row;
use super::session::Session;
use super::stanzas::iq;
use crate::conformance::Row;
use crate::conformance::xml::{Condition, Element, ErrorType, ns, stanza_error};

/// How long the App Server must stay silent.
const QUIET: Duration = Duration::from_secs(2);

/// What the kit sends for each row.
#[derive(Clone, Copy)]
enum Probe {
    Result,
    Error,
    Message,
    Presence,
}

const PROBES: &[(&str, Probe)] = &[
    ("silent-to-result", Probe::Result),
    ("silent-to-error", Probe::Error),
    ("silent-to-message", Probe::Message),
    ("silent-to-presence", Probe::Presence),
];

/// Runs the silence checks.
pub async fn check(s: &mut Session) -> Vec<Row> {
    let mut rows = Vec::new();
    for (rid, probe) in PROBES {
        let r = row(rid);
        if let Err(why) = s.connected().await {
            rows.push(r.skipped(why));
            continue;
        }
        // Late answers to earlier requests are not this row's business.
        let _ = s.quiet(Duration::from_millis(200), &[]).await;
        let id = s.id("silent");
        let user = format!("alice@{}/phone", s.user_domain);
        let domain = s.domain.clone();
        let el = match probe {
            Probe::Result => iq("result", &id, &s.user_domain.clone(), &domain),
            Probe::Error => iq("error", &id, &s.user_domain.clone(), &domain).with_child(
                stanza_error(ns::COMPONENT, ErrorType::Cancel, Condition::ItemNotFound),
            ),
            Probe::Message => Element::new("message", ns::COMPONENT)
                .with_attr("id", &id)
                .with_attr("from", &user)
                .with_attr("to", &domain)
                .with_attr("type", "chat")
                .with_child(Element::new("body", ns::COMPONENT).with_text("hello push service")),
            Probe::Presence => Element::new("presence", ns::COMPONENT)
                .with_attr("id", &id)
                .with_attr("from", &user)
                .with_attr("to", &domain),
        };
        if let Err(e) = s.send(&el).await {
            rows.push(r.skipped(format!("could not send: {e}")));
            continue;
        }
        let got = s.quiet(QUIET, &[id]).await;
        let r = match probe {
            Probe::Message | Probe::Presence => r.with_note(
                "RFC 6120 does not forbid answering a message or presence; a push service has no use for them, and an answer to a bounce can loop, so the kit asks for silence.",
            ),
            _ => r,
        };
        if got.is_empty() {
            rows.push(r.pass(format!("nothing within {} s", QUIET.as_secs()), "silent"));
        } else {
            let what: Vec<String> = got
                .iter()
                .map(|e| {
                    let xml = e.to_xml(ns::COMPONENT);
                    xml.chars().take(200).collect()
                })
                .collect();
            rows.push(r.fail(format!("answered: {}", what.join(" | ")), "answered"));
        }
    }
    rows
}
