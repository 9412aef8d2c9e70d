//! The stanzas the kit sends, built from the live captures of Prosody 0.12
//! and ejabberd 23.01 (`captures/` here: the kit's own copies of
//! `component/tests/fixtures/`, so that the binary builds from this crate
//! alone; `tests/conformance_tables.rs` checks the copies stay the same),
//! so that an App Server is checked against what real servers publish,
//! with only the node, secret, id and addresses replaced.

use crate::conformance::xml::{Element, ns, submit_form};

/// Prosody's publish with a sender and a body.
const PROSODY_PUBLISH: &str = include_str!("captures/prosody-publish-body-sender.xml");
/// ejabberd's publish with an empty `<notification/>`.
const EJABBERD_EMPTY: &str = include_str!("captures/ejabberd-publish-empty.xml");

/// Which captured publish to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capture {
    /// `prosody-publish-body-sender.xml`.
    Prosody,
    /// `ejabberd-publish-empty.xml`.
    EjabberdEmpty,
}

/// A registration the kit holds on the App Server.
#[derive(Clone, Debug)]
pub struct Registration {
    /// The pubsub node.
    pub node: String,
    /// The publish-options secret, for dialects that have one.
    pub secret: Option<String>,
    /// The device token the kit registered (the test-app's fault key).
    pub token: String,
    /// The device id (Conversations) or client-chosen node (v1) the kit sent.
    pub client_node: String,
}

/// A captured publish to `node`, with `secret` in its publish-options (the
/// secret field removed when `None`).
pub fn publish(
    capture: Capture,
    id: &str,
    from: &str,
    to: &str,
    node: &str,
    secret: Option<&str>,
) -> Element {
    let text = match capture {
        Capture::Prosody => PROSODY_PUBLISH,
        Capture::EjabberdEmpty => EJABBERD_EMPTY,
    };
    let text = text
        .trim()
        .replace("{NODE}", &escape(node))
        .replace("{SECRET}", &escape(secret.unwrap_or_default()));
    let mut el = match Element::parse(&text) {
        Ok(el) => el,
        // The fixtures are part of the build; should one stop parsing, a
        // hand-made publish of the same shape keeps the run going.
        Err(_) => fallback(node, secret.unwrap_or_default()),
    };
    el.set_attr("id", id);
    el.set_attr("from", from);
    el.set_attr("to", to);
    if secret.is_none() {
        strip_secret(&mut el);
    }
    retag(&mut el);
    el
}

/// A registration's publish (Prosody's capture).
pub fn publish_to(reg: &Registration, id: &str, from: &str, to: &str) -> Element {
    publish(
        Capture::Prosody,
        id,
        from,
        to,
        &reg.node,
        reg.secret.as_deref(),
    )
}

/// Removes the `secret` field from the publish-options.
fn strip_secret(iq: &mut Element) {
    for pubsub in iq.children.iter_mut() {
        for options in pubsub.children.iter_mut() {
            if options.name != "publish-options" {
                continue;
            }
            for form in options.children.iter_mut() {
                form.children.retain(|f| f.attr("var") != Some("secret"));
            }
        }
        pubsub
            .children
            .retain(|c| c.name != "publish-options" || c.children.iter().any(has_fields_but_type));
    }
}

fn has_fields_but_type(form: &Element) -> bool {
    form.children
        .iter()
        .any(|f| f.attr("var").is_some_and(|v| v != "FORM_TYPE"))
}

/// The fixtures are `jabber:client`-less top-level iqs: put them in the
/// component namespace so they serialise without an xmlns.
fn retag(el: &mut Element) {
    if el.ns.is_empty() || el.ns == ns::CLIENT {
        el.ns = ns::COMPONENT.to_owned();
    }
}

fn fallback(node: &str, secret: &str) -> Element {
    Element::new("iq", ns::COMPONENT)
        .with_attr("type", "set")
        .with_child(
            Element::new("pubsub", ns::PUBSUB)
                .with_child(
                    Element::new("publish", ns::PUBSUB)
                        .with_attr("node", node)
                        .with_child(
                            Element::new("item", ns::PUBSUB)
                                .with_child(Element::new("notification", ns::PUSH)),
                        ),
                )
                .with_child(options(secret)),
        )
}

/// `<publish-options>` with `secret`.
pub fn options(secret: &str) -> Element {
    Element::new("publish-options", ns::PUBSUB).with_child(submit_form(
        Some("http://jabber.org/protocol/pubsub#publish-options"),
        &[("secret", secret)],
    ))
}

/// A publish with no item and no notification (`publish-malformed`).
pub fn malformed_publish(id: &str, from: &str, to: &str, reg: &Registration) -> Element {
    let mut pubsub = Element::new("pubsub", ns::PUBSUB)
        .with_child(Element::new("publish", ns::PUBSUB).with_attr("node", &reg.node));
    if let Some(secret) = &reg.secret {
        pubsub = pubsub.with_child(options(secret));
    }
    Element::new("iq", ns::COMPONENT)
        .with_attr("type", "set")
        .with_attr("id", id)
        .with_attr("from", from)
        .with_attr("to", to)
        .with_child(pubsub)
}

/// A Prosody publish whose body is `body_len` bytes of text
/// (`survives-oversize`).
pub fn oversize_publish(
    id: &str,
    from: &str,
    to: &str,
    node: &str,
    secret: Option<&str>,
    body_len: usize,
) -> Element {
    let mut el = publish(Capture::Prosody, id, from, to, node, secret);
    let body = "x".repeat(body_len);
    set_field(&mut el, "last-message-body", &body);
    el
}

fn set_field(el: &mut Element, var: &str, value: &str) {
    if el.name == "field" && el.attr("var") == Some(var) {
        for v in el.children.iter_mut() {
            v.text = value.to_owned();
        }
        return;
    }
    for c in el.children.iter_mut() {
        set_field(c, var, value);
    }
}

/// Escapes text for an attribute or text node of the fixtures.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// An iq of `tag` to the domain.
pub fn iq(kind: &str, id: &str, from: &str, to: &str) -> Element {
    Element::new("iq", ns::COMPONENT)
        .with_attr("type", kind)
        .with_attr("id", id)
        .with_attr("from", from)
        .with_attr("to", to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::xml::{FieldValue, form_field};

    fn options_form(el: &Element) -> Option<&Element> {
        el.child("pubsub", ns::PUBSUB)?
            .child("publish-options", ns::PUBSUB)?
            .child("x", ns::DATA_FORMS)
    }

    #[test]
    fn captures_get_the_kits_node_secret_and_addresses() {
        let el = publish(
            Capture::Prosody,
            "p1",
            "localhost",
            "push.example.org",
            "n<1>",
            Some("s&1"),
        );
        assert_eq!(el.attr("id"), Some("p1"));
        assert_eq!(el.attr("from"), Some("localhost"));
        assert_eq!(el.attr("to"), Some("push.example.org"));
        let publish = el
            .child("pubsub", ns::PUBSUB)
            .and_then(|p| p.child("publish", ns::PUBSUB))
            .expect("publish");
        assert_eq!(publish.attr("node"), Some("n<1>"));
        let form = options_form(&el).expect("publish-options");
        assert_eq!(form_field(form, "secret"), Some(FieldValue::Value("s&1")));
        // Written into the component stream without a stray xmlns.
        let xml = el.to_xml(ns::COMPONENT);
        assert!(xml.starts_with("<iq "), "{xml}");
        assert!(!xml.contains("xmlns=''"), "{xml}");
        assert_eq!(
            Element::parse(&xml).ok().map(|e| e.children),
            Some(el.children)
        );
    }

    #[test]
    fn no_secret_means_no_publish_options() {
        let el = publish(Capture::EjabberdEmpty, "p2", "localhost", "push", "n", None);
        assert!(options_form(&el).is_none(), "{el:?}");
        let notification = el
            .child("pubsub", ns::PUBSUB)
            .and_then(|p| p.child("publish", ns::PUBSUB))
            .and_then(|p| p.child("item", ns::PUBSUB))
            .and_then(|i| i.child("notification", ns::PUSH))
            .expect("notification");
        assert!(notification.children.is_empty(), "ejabberd's is empty");
    }

    #[test]
    fn the_oversize_publish_carries_its_body() {
        let el = oversize_publish("p3", "localhost", "push", "n", Some("s"), 1000);
        let xml = el.to_xml(ns::COMPONENT);
        assert!(xml.contains(&"x".repeat(1000)));
        assert!(xml.len() > 1000 && xml.len() < 3000, "{}", xml.len());
    }
}
