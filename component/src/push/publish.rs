//! Parsing the XEP-0357 publish: `pubsub/publish[@node]/item/notification`
//! with the optional `urn:xmpp:push:summary` form, and the
//! `publish-options` form carrying the secret.
//!
//! What real servers send (live captures in `tests/fixtures/`): Prosody
//! always includes the summary with every field, empty ones as empty
//! elements; ejabberd sends a bare `<notification/>` for unimportant events.
//! `<item>` has no id. publish-options is the client's `<enable/>` form,
//! copied verbatim, and absent when the client gave none.

use nudge_plugins::Notification;

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
        let notification = summary.map(notification_from).unwrap_or_default();

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
    }
}
