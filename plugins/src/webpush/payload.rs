//! The JSON a Web Push carries before it is encrypted: the summary the
//! user's XMPP server sent, and nothing more.
//!
//! A web client's service worker gets this object from the push event
//! (`event.data.json()`). Its keys are the summary form's field names
//! (`message-count`, `last-message-sender`, `last-message-body`, and any
//! other field the server put in the form), so that a client reads the same
//! names whichever XMPP server is in front. `message-count` is a number,
//! every other value a string; empty fields (Prosody sends every field,
//! empty when unset) are left out. The push service only ever sees the
//! ciphertext, so no setting withholds the body here as the APNs and FCM
//! ones do.
//!
//! A Web Push message holds at most 4096 bytes of ciphertext (RFC 8030),
//! which is 3993 bytes of plaintext in one aes128gcm record (RFC 8291). A
//! body that does not fit is cut (`fit.rs`), never the push refused.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::Notification;
use crate::fit;

/// The longest plaintext that fits one push: 4096 bytes of ciphertext less
/// the aes128gcm header (86 bytes with a P-256 key id), the padding
/// delimiter (1) and the tag (16).
pub const MAX_PLAINTEXT: usize = 4096 - 86 - 1 - 16;

/// The fields written from the typed summary rather than the raw form.
const MESSAGE_COUNT: &str = "message-count";
const SENDER: &str = "last-message-sender";
const BODY: &str = "last-message-body";

/// Why a payload could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Even with the body cut to nothing the summary is too large.
    #[error("the summary is {0} bytes even without its body, more than {MAX_PLAINTEXT}")]
    TooLarge(usize),
}

/// The plaintext JSON for `notification`, at most [`MAX_PLAINTEXT`] bytes.
pub fn build(notification: &Notification) -> Result<Vec<u8>, PayloadError> {
    let mut fields: BTreeMap<&str, Value> = BTreeMap::new();
    for (var, value) in &notification.fields {
        if value.is_empty() || matches!(var.as_str(), "FORM_TYPE" | MESSAGE_COUNT | SENDER | BODY) {
            continue;
        }
        // A field given twice: the first wins, as the typed fields do.
        fields
            .entry(var.as_str())
            .or_insert_with(|| Value::String(value.clone()));
    }
    if let Some(count) = notification.message_count {
        fields.insert(MESSAGE_COUNT, Value::from(count));
    }
    if let Some(sender) = non_empty(&notification.last_message_sender) {
        fields.insert(SENDER, Value::String(sender.to_owned()));
    }
    let render = |body: Option<&str>| {
        let mut object = fields.clone();
        if let Some(body) = body {
            object.insert(BODY, Value::String(body.to_owned()));
        }
        // A map of strings and numbers always serialises.
        let bytes = serde_json::to_vec(&object).unwrap_or_default();
        if bytes.len() <= MAX_PLAINTEXT {
            Ok(bytes)
        } else {
            Err(bytes.len())
        }
    };
    fit::longest_fitting(non_empty(&notification.last_message_body), render)
        .map_err(PayloadError::TooLarge)
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    fn prosody(body: &str) -> Notification {
        Notification {
            message_count: Some(3),
            last_message_sender: Some("juliet@capulet.example/balcony".into()),
            last_message_body: (!body.is_empty()).then(|| body.to_owned()),
            fields: vec![
                ("message-count".into(), "3".into()),
                (
                    "last-message-sender".into(),
                    "juliet@capulet.example/balcony".into(),
                ),
                ("last-message-body".into(), body.into()),
                ("pending-subscription-count".into(), String::new()),
            ],
            ..Notification::default()
        }
    }

    #[test]
    fn the_summary_and_nothing_more() {
        let out = build(&prosody("Wherefore art thou?")).unwrap();
        assert_eq!(
            parse(&out),
            json!({
                "message-count": 3,
                "last-message-sender": "juliet@capulet.example/balcony",
                "last-message-body": "Wherefore art thou?",
            })
        );
        // A chat state: Prosody's empty body field is left out.
        assert_eq!(
            parse(&build(&prosody("")).unwrap()),
            json!({"message-count": 3, "last-message-sender": "juliet@capulet.example/balcony"})
        );
        // ejabberd's unimportant event: no form at all.
        assert_eq!(build(&Notification::default()).unwrap(), b"{}");
    }

    #[test]
    fn other_fields_go_by_their_name() {
        let n = Notification {
            fields: vec![
                ("FORM_TYPE".into(), "urn:xmpp:push:summary".into()),
                ("last-message-priority".into(), "high".into()),
                ("x-custom".into(), "first".into()),
                ("x-custom".into(), "second".into()),
            ],
            ..Notification::default()
        };
        assert_eq!(
            parse(&build(&n).unwrap()),
            json!({"last-message-priority": "high", "x-custom": "first"})
        );
    }

    #[test]
    fn typed_fields_win_over_the_raw_form() {
        // The typed count is the one the server's number parsed to; a
        // malformed raw value never reaches the client.
        let n = Notification {
            message_count: None,
            fields: vec![("message-count".into(), "lots".into())],
            ..Notification::default()
        };
        assert_eq!(build(&n).unwrap(), b"{}");
    }

    #[test]
    fn a_long_body_is_cut_to_fit() {
        let long = "é".repeat(5000);
        let out = build(&prosody(&long)).unwrap();
        assert!(out.len() <= MAX_PLAINTEXT);
        assert!(out.len() > MAX_PLAINTEXT - 8, "{}", out.len());
        let v = parse(&out);
        let body = v["last-message-body"].as_str().unwrap();
        assert!(body.ends_with('…') && body.starts_with("éé"));
        assert_eq!(v["message-count"], 3);
    }

    #[test]
    fn a_summary_too_large_without_its_body_is_refused() {
        let n = Notification {
            fields: vec![("x-huge".into(), "x".repeat(MAX_PLAINTEXT))],
            ..Notification::default()
        };
        assert!(matches!(build(&n), Err(PayloadError::TooLarge(size)) if size > MAX_PLAINTEXT));
    }
}
