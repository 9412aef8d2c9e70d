//! Turns what a publish carried into the rows' machine-readable values.
//!
//! Pure functions over [`Element`]s, so that the values the kit reports
//! for a live server can be checked against the captured publishes in
//! `component/tests/fixtures/` without a server: the distinctions are the
//! ones App Servers trip over (docs/answers.md): empty versus absent
//! summary fields, the real body versus a server's static text, who the
//! publish comes from.

use crate::conformance::xml::{Element, FieldValue, form_field, ns};

/// The summary form's FORM_TYPE (XEP-0357 §7).
pub const SUMMARY: &str = "urn:xmpp:push:summary";
/// The publish-options form's FORM_TYPE.
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// The summary fields XEP-0357 names.
const SUMMARY_FIELDS: [&str; 4] = [
    "message-count",
    "pending-subscription-count",
    "last-message-sender",
    "last-message-body",
];

/// The `<publish/>` of a publish iq.
pub fn publish_el(iq: &Element) -> Option<&Element> {
    iq.child("pubsub", ns::PUBSUB)?.child("publish", ns::PUBSUB)
}

/// The `<item/>`.
pub fn item(iq: &Element) -> Option<&Element> {
    publish_el(iq)?.child("item", ns::PUBSUB)
}

/// The summary form inside `<notification/>`, if any.
pub fn summary_form(iq: &Element) -> Option<&Element> {
    item(iq)?
        .child("notification", ns::PUSH)?
        .children_named("x", ns::DATA_FORMS)
        .find(|x| form_field(x, "FORM_TYPE") == Some(FieldValue::Value(SUMMARY)))
}

/// The publish-options form, if any.
pub fn publish_options(iq: &Element) -> Option<&Element> {
    iq.child("pubsub", ns::PUBSUB)?
        .child("publish-options", ns::PUBSUB)?
        .child("x", ns::DATA_FORMS)
}

/// Who a publish comes from, against the owner's JID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum From {
    /// The owner's server domain.
    Domain,
    /// The owner's bare JID (the XEP-0357 §7 example).
    BareJid,
    /// One of the owner's full JIDs.
    FullJid,
    /// Anything else (or no `from`).
    Other(String),
}

impl From {
    /// Classifies `from` for owner `bare` (`user@domain`).
    pub fn of(from: Option<&str>, bare: &str) -> From {
        let domain = bare.split_once('@').map(|(_, d)| d).unwrap_or(bare);
        match from {
            Some(f) if f == domain => From::Domain,
            Some(f) if f == bare => From::BareJid,
            Some(f) if f.strip_prefix(bare).is_some_and(|r| r.starts_with('/')) => From::FullJid,
            other => From::Other(other.unwrap_or("").to_owned()),
        }
    }

    /// The row value.
    pub fn value(&self) -> &'static str {
        match self {
            From::Domain => "domain",
            From::BareJid => "bare-jid",
            From::FullJid => "full-jid",
            From::Other(_) => "other",
        }
    }
}

/// The fields of a form as (var, values), FORM_TYPE included, sorted:
/// what "the same form" means when comparing (types and labels aside).
fn fields(form: &Element) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = form
        .children_named("field", ns::DATA_FORMS)
        .map(|f| {
            (
                f.attr("var").unwrap_or("").to_owned(),
                f.children_named("value", ns::DATA_FORMS)
                    .map(|v| v.text.clone())
                    .collect(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Whether the enable form came back in publish-options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionsCopy {
    /// Same fields, same values.
    Verbatim,
    /// There, but different.
    Altered,
    /// No publish-options.
    Absent,
}

impl OptionsCopy {
    /// Compares the publish's publish-options with the enable's form.
    pub fn of(iq: &Element, enabled: &Element) -> OptionsCopy {
        match publish_options(iq) {
            None => OptionsCopy::Absent,
            Some(form) if fields(form) == fields(enabled) => OptionsCopy::Verbatim,
            Some(_) => OptionsCopy::Altered,
        }
    }

    /// The row value.
    pub fn value(self) -> &'static str {
        match self {
            OptionsCopy::Verbatim => "verbatim",
            OptionsCopy::Altered => "altered",
            OptionsCopy::Absent => "absent",
        }
    }
}

/// `message-count`.
pub fn message_count(summary: Option<&Element>) -> String {
    match summary.and_then(|f| form_field(f, "message-count")) {
        None => "absent".into(),
        Some(FieldValue::Empty) => "empty".into(),
        Some(FieldValue::Value(v)) => v.to_owned(),
    }
}

/// `last-message-sender`, against the sender's full JID.
pub fn last_message_sender(summary: Option<&Element>, sender_full: &str) -> String {
    let bare = sender_full.split('/').next().unwrap_or(sender_full);
    match summary.and_then(|f| form_field(f, "last-message-sender")) {
        None => "absent".into(),
        Some(FieldValue::Empty) => "empty".into(),
        Some(FieldValue::Value(v)) if v == sender_full => "full-jid".into(),
        Some(FieldValue::Value(v)) if v == bare => "bare-jid".into(),
        Some(FieldValue::Value(v)) if v.starts_with(&format!("{bare}/")) => "full-jid".into(),
        Some(FieldValue::Value(v)) => format!("other:{v}"),
    }
}

/// `last-message-body`, against the body sent.
pub fn last_message_body(summary: Option<&Element>, body: &str) -> String {
    match summary.and_then(|f| form_field(f, "last-message-body")) {
        None => "absent".into(),
        Some(FieldValue::Empty) => "empty".into(),
        Some(FieldValue::Value(v)) if v == body => "body".into(),
        Some(FieldValue::Value(v)) => format!("static:{v}"),
    }
}

/// How the summary fields without a value appear: "empty" (present, no
/// value), "absent", "mixed", or "none" when every field has a value.
pub fn unset_fields(summary: Option<&Element>) -> &'static str {
    let Some(form) = summary else {
        return "absent";
    };
    let (mut empty, mut absent) = (0, 0);
    for var in SUMMARY_FIELDS {
        match form_field(form, var) {
            None => absent += 1,
            Some(FieldValue::Empty) => empty += 1,
            Some(FieldValue::Value(_)) => {}
        }
    }
    match (empty, absent) {
        (0, 0) => "none",
        (_, 0) => "empty",
        (0, _) => "absent",
        _ => "mixed",
    }
}

/// The summary form's `type` attribute.
pub fn form_type(summary: Option<&Element>) -> String {
    match summary {
        None => "absent".into(),
        Some(f) => f.attr("type").unwrap_or("absent").to_owned(),
    }
}

/// What repeating one answer did to a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every probe was published.
    Kept,
    /// Publishes stopped after the first answer.
    Disabled,
    /// Publishes stopped after N answers.
    DisabledAfter(u32),
    /// Not even the first probe was published.
    NoPublish,
}

impl Outcome {
    /// From the number of publishes seen for `probes` messages sent, one
    /// message at a time, stopping at the first that was not published.
    pub fn of(publishes: u32, probes: u32) -> Outcome {
        match publishes {
            0 => Outcome::NoPublish,
            p if p >= probes => Outcome::Kept,
            1 => Outcome::Disabled,
            p => Outcome::DisabledAfter(p),
        }
    }

    /// The row value.
    pub fn value(self) -> String {
        match self {
            Outcome::Kept => "kept".into(),
            Outcome::Disabled => "disabled".into(),
            Outcome::DisabledAfter(n) => format!("disabled-after-{n}"),
            Outcome::NoPublish => "no-publish".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "bob@localhost/phone";

    fn fixture(name: &str) -> Element {
        let path = format!(
            "{}/../component/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let xml = std::fs::read_to_string(&path).unwrap();
        Element::parse(
            &xml.replace("{NODE}", "n1")
                .replace("{SECRET}", "s3")
                .replace("<iq ", "<iq xmlns='jabber:component:accept' "),
        )
        .unwrap()
    }

    fn enable_form() -> Element {
        crate::conformance::xml::submit_form(Some(PUBLISH_OPTIONS), &[("secret", "s3")])
    }

    #[test]
    fn prosody_summary_has_empty_fields() {
        let iq = fixture("prosody-publish-body-sender.xml");
        let summary = summary_form(&iq);
        assert_eq!(form_type(summary), "form");
        assert_eq!(message_count(summary), "1");
        assert_eq!(last_message_sender(summary, BOB), "full-jid");
        assert_eq!(
            last_message_body(summary, "Secret plans <&> 'quoted'"),
            "body"
        );
        assert_eq!(unset_fields(summary), "empty");
        assert_eq!(From::of(iq.attr("from"), "alice@localhost"), From::Domain);
        assert_eq!(OptionsCopy::of(&iq, &enable_form()), OptionsCopy::Verbatim);
        assert!(item(&iq).unwrap().attr("id").is_none());
    }

    #[test]
    fn prosody_static_body_and_silent_push() {
        let important = fixture("prosody-publish-important.xml");
        let s = summary_form(&important);
        assert_eq!(last_message_body(s, "hello"), "static:New Message!");
        assert_eq!(last_message_sender(s, BOB), "empty");
        let silent = fixture("prosody-publish-silent.xml");
        assert_eq!(last_message_body(summary_form(&silent), "hello"), "empty");
    }

    #[test]
    fn ejabberd_summary_leaves_fields_out() {
        let iq = fixture("ejabberd-publish-summary.xml");
        let summary = summary_form(&iq);
        assert_eq!(form_type(summary), "submit");
        assert_eq!(message_count(summary), "absent");
        assert_eq!(last_message_sender(summary, BOB), "full-jid");
        assert_eq!(last_message_body(summary, "Hello offline alice"), "body");
        assert_eq!(unset_fields(summary), "absent");
        let empty = fixture("ejabberd-publish-empty.xml");
        assert!(summary_form(&empty).is_none());
        assert_eq!(unset_fields(summary_form(&empty)), "absent");
        assert_eq!(form_type(summary_form(&empty)), "absent");
    }

    #[test]
    fn altered_and_absent_publish_options() {
        let iq = fixture("ejabberd-publish-summary.xml");
        let other = crate::conformance::xml::submit_form(Some(PUBLISH_OPTIONS), &[("secret", "x")]);
        assert_eq!(OptionsCopy::of(&iq, &other), OptionsCopy::Altered);
        let bare = Element::parse(
            "<iq xmlns='jabber:component:accept' type='set'><pubsub \
             xmlns='http://jabber.org/protocol/pubsub'><publish node='n1'/></pubsub></iq>",
        )
        .unwrap();
        assert_eq!(OptionsCopy::of(&bare, &other), OptionsCopy::Absent);
    }

    #[test]
    fn from_kinds() {
        let owner = "alice@localhost";
        assert_eq!(From::of(Some("alice@localhost"), owner), From::BareJid);
        assert_eq!(From::of(Some("alice@localhost/x"), owner), From::FullJid);
        assert_eq!(From::of(Some("alice@localhostx"), owner).value(), "other");
        assert_eq!(From::of(None, owner).value(), "other");
    }

    #[test]
    fn disabled_after_n() {
        assert_eq!(Outcome::of(21, 21).value(), "kept");
        assert_eq!(Outcome::of(1, 21).value(), "disabled");
        assert_eq!(Outcome::of(16, 21).value(), "disabled-after-16");
        assert_eq!(Outcome::of(0, 21).value(), "no-publish");
    }
}
