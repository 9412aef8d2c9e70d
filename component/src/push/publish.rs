//! Parsing the XEP-0357 publish: `pubsub/publish[@node]/item/notification`
//! with the optional `urn:xmpp:push:summary` form, and the
//! `publish-options` form carrying the secret.
//!
//! What real servers send (live captures in `tests/fixtures/`): Prosody
//! always includes the summary with every field, empty ones as empty
//! elements; ejabberd sends a bare `<notification/>` for unimportant events.
//! `<item>` has no id. publish-options is the client's `<enable/>` form,
//! copied verbatim, and absent when the client gave none.
//!
//! A Tigase server (or Prosody with its Tigase-compatible module) may put
//! more into the notification (fixtures `tests/fixtures/tigase-*.xml`):
//! `<encrypted xmlns='tigase:push:encrypt:0' iv='…'>` with a ciphertext
//! instead of the summary (attribute `type='voip'` for a call), and
//! `<jingle xmlns='tigase:push:jingle:0' action='propose' sid='…'>` with
//! `<media/>` children for a call proposal.

use nudge_plugins::{Call, EncryptedPayload, Notification};

use crate::xmpp::Element;
use crate::xmpp::dataform::DataForm;
use crate::xmpp::ns;

/// A push request from a user's server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    pub node: String,
    /// The `secret` field of publish-options, if any.
    pub secret: Option<String>,
    pub notification: Notification,
    /// Every publish-options field but `FORM_TYPE` and `secret`, for
    /// dialects that carry more there (Monal's `pushModule`, MongooseIM's
    /// `device_id`).
    pub options: Vec<(String, String)>,
}

/// Why a publish is malformed (`modify`/`bad-request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("publish without a node")]
    MissingNode,
    #[error("publish without an item/notification ({0})")]
    MissingNotification(&'static str),
}

impl PublishRequest {
    /// Reads a publish from the `<pubsub/>` payload of an iq set; `None`
    /// when the pubsub request is not a publish.
    pub fn from_pubsub(pubsub: &Element) -> Option<Result<PublishRequest, PublishError>> {
        let publish = pubsub.get_child("publish", ns::PUBSUB)?;
        Some(Self::parse(pubsub, publish))
    }

    fn parse(pubsub: &Element, publish: &Element) -> Result<PublishRequest, PublishError> {
        let node = publish
            .get_attr("node")
            .filter(|n| !n.is_empty())
            .ok_or(PublishError::MissingNode)?
            .to_owned();
        let item = publish
            .get_child("item", ns::PUBSUB)
            .ok_or(PublishError::MissingNotification("no <item/>"))?;
        let notification_el =
            item.get_child("notification", ns::PUSH)
                .ok_or(PublishError::MissingNotification(
                    "no <notification xmlns='urn:xmpp:push:0'/>",
                ))?;
        let summary = notification_el
            .children
            .iter()
            .filter_map(DataForm::from_element)
            .find(|f| f.form_type() == Some(ns::PUSH_SUMMARY));
        let mut notification = summary.map(notification_from).unwrap_or_default();
        let encrypted_el = notification_el.get_child("encrypted", ns::PUSH_ENCRYPT);
        notification.encrypted = encrypted_el.and_then(encrypted_from);
        let voip_encrypted = encrypted_el.is_some_and(|e| e.get_attr("type") == Some("voip"));
        notification.call = notification_el
            .get_child("jingle", ns::PUSH_JINGLE)
            .and_then(call_from)
            .or_else(|| voip_encrypted.then(Call::default));

        let options = pubsub
            .get_child("publish-options", ns::PUBSUB)
            .and_then(|po| po.children.iter().find_map(DataForm::from_element));
        let mut secret = None;
        let mut extra = Vec::new();
        if let Some(form) = options {
            for f in form.fields {
                let value = f.values.into_iter().next().unwrap_or_default();
                match f.var.as_str() {
                    "FORM_TYPE" => {}
                    "secret" => secret = Some(value),
                    _ => extra.push((f.var, value)),
                }
            }
        }
        Ok(PublishRequest {
            node,
            secret,
            notification,
            options: extra,
        })
    }
}

fn notification_from(form: DataForm) -> Notification {
    // The form is consumed: its values move into `fields`, and only the
    // interpreted ones are copied out.
    let fields: Vec<(String, String)> = form
        .fields
        .into_iter()
        .filter(|f| f.var != "FORM_TYPE")
        .map(|f| (f.var, f.values.into_iter().next().unwrap_or_default()))
        .collect();
    let non_empty = |var: &str| {
        fields
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    Notification {
        message_count: non_empty("message-count").and_then(|v| v.parse().ok()),
        last_message_sender: non_empty("last-message-sender").map(str::to_owned),
        last_message_body: non_empty("last-message-body").map(str::to_owned),
        fields,
        ..Notification::default()
    }
}

/// The ciphertext and iv of an `<encrypted/>`; `None` when either is
/// missing or not base64 (then the push is a plain wake-up).
fn encrypted_from(el: &Element) -> Option<EncryptedPayload> {
    use base64::Engine;
    let base64 = |text: &str| {
        let text: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(&text)
            .ok()
            .filter(|bytes| !bytes.is_empty())
            .map(|_| text)
    };
    Some(EncryptedPayload {
        data: base64(&el.text)?,
        iv: base64(el.get_attr("iv")?)?,
    })
}

/// A `<jingle/>` that proposes a call; other actions (accept, reject from
/// the user's own devices) are not calls.
fn call_from(el: &Element) -> Option<Call> {
    if el.get_attr("action") != Some("propose") {
        return None;
    }
    Some(Call {
        sid: el.get_attr("sid").map(str::to_owned),
        media: el
            .children
            .iter()
            .filter(|c| c.name == "media")
            .map(|c| c.text.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::reader::{StanzaReader, StreamItem};

    /// A fixture's publish, read as the stream reader reads it.
    async fn fixture(name: &str) -> PublishRequest {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let xml = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .replace("{NODE}", "node1")
            .replace("{SECRET}", "secret1");
        let stream = format!(
            "<stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' id='1'>{}",
            xml.trim()
        );
        let mut reader = StanzaReader::new(stream.as_bytes(), 1 << 20);
        loop {
            match reader.next().await {
                Ok(StreamItem::Stanza(el)) => {
                    let pubsub = el.get_child("pubsub", ns::PUBSUB).expect("pubsub");
                    return PublishRequest::from_pubsub(pubsub)
                        .expect("a publish")
                        .expect("a valid publish");
                }
                Ok(_) => continue,
                Err(e) => panic!("{name}: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn importance_of_each_servers_publishes() {
        for (name, important) in [
            ("prosody-publish-important.xml", true),
            ("prosody-publish-body-sender.xml", true),
            ("prosody-publish-silent.xml", false),
            ("ejabberd-publish-summary.xml", true),
            ("ejabberd-publish-empty.xml", false),
            // include_body: false, include_sender: true: no body field.
            ("ejabberd-publish-sender-only.xml", true),
        ] {
            let publish = fixture(name).await;
            assert_eq!(
                publish.notification.is_important(),
                important,
                "{name}: {:?}",
                publish.notification
            );
        }
    }

    #[tokio::test]
    async fn a_prosody_sender_with_an_empty_body_is_not_important() {
        let mut publish = fixture("prosody-publish-silent.xml").await;
        // push_notification_with_sender on a chat state: the body field is
        // there, empty.
        publish.notification.last_message_sender = Some("juliet@capulet.lit/balcony".into());
        assert!(!publish.notification.is_important());
    }

    #[tokio::test]
    async fn tigase_ciphertext_is_kept_as_sent() {
        let publish = fixture("tigase-encrypted.xml").await;
        let encrypted = publish.notification.encrypted.clone().expect("encrypted");
        assert_eq!(encrypted.iv, "q6Z0mXc3bNQ9y0lh");
        assert!(encrypted.data.starts_with("3q2+7wG5"));
        assert!(publish.notification.is_important());
        assert_eq!(publish.notification.call, None);
        assert_eq!(publish.secret, None);
    }

    #[tokio::test]
    async fn a_jingle_proposal_is_a_call() {
        let publish = fixture("tigase-jingle.xml").await;
        let call = publish.notification.call.clone().expect("a call");
        assert_eq!(call.sid.as_deref(), Some("a73sjjvkla37jfea"));
        assert_eq!(call.media, ["audio", "video"]);
        assert!(publish.notification.is_important());
    }

    #[test]
    fn extensions_that_do_not_check_out_are_ignored() {
        let encrypted = |text: &str, iv: Option<&str>| {
            let mut el = Element::new("encrypted", ns::PUSH_ENCRYPT).text(text);
            if let Some(iv) = iv {
                el = el.attr("iv", iv);
            }
            encrypted_from(&el)
        };
        assert!(encrypted("c2VjcmV0", Some("aXY=")).is_some());
        assert!(encrypted("c2VjcmV0", None).is_none(), "no iv");
        assert!(encrypted("not base64!", Some("aXY=")).is_none());
        assert!(encrypted("", Some("aXY=")).is_none(), "empty");
        let jingle = |action: &str| {
            call_from(&Element::new("jingle", ns::PUSH_JINGLE).attr("action", action))
        };
        assert!(jingle("propose").is_some());
        assert!(jingle("accept").is_none());
        assert!(jingle("retract").is_none());
    }
}
