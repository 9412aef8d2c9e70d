//! The APNs request for one notification: push type, priority, topic
//! suffix and the JSON payload.
//!
//! An important notification (a message for a person) becomes an alert with
//! `mutable-content: 1`, so that a Notification Service Extension can fetch
//! and decrypt the real message; anything else becomes a silent
//! `content-available` wake-up at priority 5, which iOS may coalesce or
//! delay. An app configured for VoIP gets every push as `voip` (PushKit):
//! the app must then report a call for each, so that is opt-in per app.
//! Sender and body leave the server only when the XMPP server sent them and
//! the app's configuration allows it: they pass through Apple.

use serde_json::{Map, Value};

use crate::Notification;

/// Apple's limit for alert and background payloads.
pub const MAX_PAYLOAD: usize = 4096;
/// Apple's limit for VoIP payloads.
pub const MAX_VOIP_PAYLOAD: usize = 5120;

/// The value of `apns-push-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushType {
    Alert,
    Background,
    Voip,
}

impl PushType {
    pub fn header(self) -> &'static str {
        match self {
            PushType::Alert => "alert",
            PushType::Background => "background",
            PushType::Voip => "voip",
        }
    }

    /// `apns-priority`: 10 delivers at once; 5 lets iOS save power, and is
    /// the only value Apple accepts for background pushes.
    pub fn priority(self) -> u8 {
        match self {
            PushType::Alert | PushType::Voip => 10,
            PushType::Background => 5,
        }
    }
}

/// The per-app choices that shape a payload.
#[derive(Debug, Clone)]
pub(crate) struct PayloadSettings {
    pub voip: bool,
    pub include_sender: bool,
    pub include_body: bool,
    /// Alert text when the body is not forwarded (or not sent).
    pub alert_body: String,
    /// `aps.sound` of alerts; empty for none.
    pub sound: String,
}

/// A payload ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApnsPayload {
    pub push_type: PushType,
    pub body: Vec<u8>,
}

/// Why no payload could be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payload of {size} bytes exceeds the {limit}-byte limit of {push_type} pushes")]
pub(crate) struct PayloadTooLarge {
    pub size: usize,
    pub limit: usize,
    pub push_type: &'static str,
}

/// Builds the payload for `n`. A forwarded body that does not fit is cut
/// to fit ([`crate::fit`]); only a payload too large without any body is
/// refused.
pub(crate) fn build(
    settings: &PayloadSettings,
    n: &Notification,
) -> Result<ApnsPayload, PayloadTooLarge> {
    let push_type = if settings.voip {
        PushType::Voip
    } else if n.is_important() {
        PushType::Alert
    } else {
        PushType::Background
    };
    let limit = match push_type {
        PushType::Voip => MAX_VOIP_PAYLOAD,
        _ => MAX_PAYLOAD,
    };
    let sender = n
        .last_message_sender
        .as_deref()
        .filter(|_| settings.include_sender);
    let body = n
        .last_message_body
        .as_deref()
        .filter(|_| settings.include_body);

    let rendered = crate::fit::longest_fitting(body, |body| {
        let json = render(settings, push_type, n, sender, body);
        if json.len() <= limit {
            Ok(json)
        } else {
            Err(json.len())
        }
    });
    match rendered {
        Ok(body) => Ok(ApnsPayload { push_type, body }),
        Err(size) => Err(PayloadTooLarge {
            size,
            limit,
            push_type: push_type.header(),
        }),
    }
}

fn render(
    settings: &PayloadSettings,
    push_type: PushType,
    n: &Notification,
    sender: Option<&str>,
    body: Option<&str>,
) -> Vec<u8> {
    let mut aps = Map::new();
    match push_type {
        PushType::Alert => {
            let mut alert = Map::new();
            if let Some(sender) = sender {
                alert.insert("title".into(), sender.into());
            }
            alert.insert("body".into(), body.unwrap_or(&settings.alert_body).into());
            aps.insert("alert".into(), alert.into());
            if !settings.sound.is_empty() {
                aps.insert("sound".into(), settings.sound.as_str().into());
            }
            aps.insert("mutable-content".into(), 1.into());
        }
        PushType::Background => {
            aps.insert("content-available".into(), 1.into());
        }
        // PushKit delivers the whole dictionary to the app; `aps` stays
        // empty.
        PushType::Voip => {}
    }
    let mut root = Map::new();
    root.insert("aps".into(), aps.into());
    // Custom keys read by existing iOS clients' extensions (Siskin's
    // userInfo keys `sender`, `unread-messages`; `body` for VoIP, whose
    // payload has no alert to carry it).
    if let Some(count) = n.message_count {
        root.insert("unread-messages".into(), count.into());
    }
    if let Some(sender) = sender {
        root.insert("sender".into(), sender.into());
    }
    if push_type == PushType::Voip {
        if let Some(body) = body {
            root.insert("body".into(), body.into());
        }
        root.insert("important".into(), n.is_important().into());
    }
    Value::Object(root).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> PayloadSettings {
        PayloadSettings {
            voip: false,
            include_sender: false,
            include_body: false,
            alert_body: "New message".into(),
            sound: "default".into(),
        }
    }

    fn important() -> Notification {
        Notification {
            message_count: Some(1),
            last_message_sender: Some("juliet@capulet.example/balcony".into()),
            last_message_body: Some("Wherefore art thou?".into()),
            fields: vec![],
        }
    }

    fn parse(p: &ApnsPayload) -> Value {
        serde_json::from_slice(&p.body).unwrap()
    }

    #[test]
    fn important_is_a_mutable_alert_without_private_data_by_default() {
        let p = build(&settings(), &important()).unwrap();
        assert_eq!(p.push_type, PushType::Alert);
        assert_eq!(p.push_type.header(), "alert");
        assert_eq!(p.push_type.priority(), 10);
        assert_eq!(
            parse(&p),
            json!({
                "aps": {"alert": {"body": "New message"}, "sound": "default", "mutable-content": 1},
                "unread-messages": 1
            })
        );
    }

    #[test]
    fn sender_and_body_only_when_allowed() {
        let mut s = settings();
        s.include_sender = true;
        s.include_body = true;
        s.sound = String::new();
        let v = parse(&build(&s, &important()).unwrap());
        assert_eq!(v["aps"]["alert"]["title"], "juliet@capulet.example/balcony");
        assert_eq!(v["aps"]["alert"]["body"], "Wherefore art thou?");
        assert_eq!(v["sender"], "juliet@capulet.example/balcony");
        assert!(v["aps"].get("sound").is_none());

        // Allowed but not sent: nothing invented.
        let n = Notification {
            last_message_body: Some("x".into()),
            ..Default::default()
        };
        let v = parse(&build(&s, &n).unwrap());
        assert!(v["aps"]["alert"].get("title").is_none());
        assert!(v.get("sender").is_none());
        assert!(v.get("unread-messages").is_none());
    }

    #[test]
    fn unimportant_is_a_silent_background_push() {
        for n in [
            Notification::default(),
            Notification {
                message_count: Some(3),
                last_message_sender: Some("romeo@montague.example".into()),
                ..Default::default()
            },
        ] {
            let mut s = settings();
            s.include_body = true;
            let p = build(&s, &n).unwrap();
            assert_eq!(p.push_type, PushType::Background);
            assert_eq!(p.push_type.priority(), 5);
            let v = parse(&p);
            assert_eq!(v["aps"], json!({"content-available": 1}));
        }
    }

    #[test]
    fn voip_apps_send_voip_pushes() {
        let mut s = settings();
        s.voip = true;
        s.include_body = true;
        let p = build(&s, &important()).unwrap();
        assert_eq!(p.push_type, PushType::Voip);
        assert_eq!(p.push_type.header(), "voip");
        assert_eq!(p.push_type.priority(), 10);
        let v = parse(&p);
        assert_eq!(v["aps"], json!({}));
        assert_eq!(v["body"], "Wherefore art thou?");
        assert_eq!(v["important"], true);
        let p = build(&s, &Notification::default()).unwrap();
        assert_eq!(p.push_type, PushType::Voip);
        assert_eq!(parse(&p)["important"], false);
    }

    #[test]
    fn long_bodies_are_cut_to_fit() {
        let mut s = settings();
        s.include_body = true;
        for unit in ["a", "é", "\"", "\u{1}", "😀"] {
            let n = Notification {
                last_message_body: Some(unit.repeat(5000)),
                ..Default::default()
            };
            let p = build(&s, &n).unwrap();
            assert!(p.body.len() <= MAX_PAYLOAD, "{unit}: {}", p.body.len());
            assert!(p.body.len() > MAX_PAYLOAD - 200, "{unit}: cut too much");
            let body = parse(&p)["aps"]["alert"]["body"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(body.ends_with('…'));
        }
        s.voip = true;
        let n = Notification {
            last_message_body: Some("a".repeat(5000)),
            ..Default::default()
        };
        let p = build(&s, &n).unwrap();
        assert!(p.body.len() <= MAX_VOIP_PAYLOAD && p.body.len() > MAX_PAYLOAD);
    }

    #[test]
    fn too_large_without_body_is_refused() {
        let mut s = settings();
        s.include_sender = true;
        let n = Notification {
            last_message_sender: Some("x".repeat(5000)),
            last_message_body: Some("hi".into()),
            ..Default::default()
        };
        let err = build(&s, &n).unwrap_err();
        assert_eq!(err.limit, MAX_PAYLOAD);
        assert!(err.size > MAX_PAYLOAD);
    }
}
