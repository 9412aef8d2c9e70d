//! The APNs request for one notification: which of the device's tokens it
//! goes to, push type, priority, topic variant and the JSON payload.
//!
//! An important notification (a message for a person) becomes an alert with
//! `mutable-content: 1`, so that a Notification Service Extension can fetch
//! and decrypt the real message; anything else becomes a silent
//! `content-available` wake-up at priority 5, which iOS may coalesce or
//! delay. A call (`tigase:push:jingle:0`) for a device with a VoIP token
//! (Siskin's `device-second-token`) becomes a PushKit `voip` push to that
//! token and the topic `<topic>.voip`; everything else goes to the normal
//! token. An app configured with `voip = true` gets every push as `voip`
//! (the app must then report a call for each, so that is opt-in per app).
//!
//! The custom keys follow the client's extension ([`ClientKind`], the
//! README's section per client): Nudge's generic keys, Monal's plain alert,
//! or Siskin's userInfo keys. Sender and body leave the server only when the
//! XMPP server sent them and the app's configuration allows it: they pass
//! through Apple. Ciphertext (`tigase:push:encrypt:0`, fixture
//! `component/tests/fixtures/tigase-encrypted.xml`) is forwarded whole as
//! `encrypted` + `iv`, or, when it does not fit, left out: the plain
//! wake-up still makes the app fetch the message.
//!
//! A stateless publish's [`PushOptions`](crate::PushOptions) (MongooseIM's
//! publish-options) may choose the topic (the app's own or its `.voip`
//! variant only), a silent push, the priority of an alert, the sound and
//! `mutable-content`.

use crate::json::JsonObject;

use crate::{Device, EncryptedPayload, Notification};

/// Apple's limit for alert and background payloads.
pub const MAX_PAYLOAD: usize = 4096;
/// Apple's limit for VoIP payloads.
pub const MAX_VOIP_PAYLOAD: usize = 5120;

/// The alert title of a Monal push without a forwarded sender: Monal's
/// extension replaces title and body with the message it fetches.
pub const MONAL_TITLE: &str = "New Message";

/// The payload shape an iOS client's notification service extension reads
/// (an APNs app's `payload` setting; the README's section per client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum ClientKind {
    /// Nudge's own keys: an alert or a background wake-up, with
    /// `unread-messages` and `sender` when allowed.
    #[default]
    Generic,
    /// Monal: an alert with title and body, `mutable-content: 1`,
    /// `sound: default`; its extension fetches the message itself.
    Monal,
    /// Siskin: userInfo keys `account`, `sender`, `body`,
    /// `unread-messages`, `nickname`, `encrypted`, `iv`.
    Siskin,
}

impl ClientKind {
    /// The name as configured (`generic`, `monal`, `siskin`).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Generic => "generic",
            ClientKind::Monal => "monal",
            ClientKind::Siskin => "siskin",
        }
    }
}

/// A `payload` name that is none of the known ones; it holds the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown payload {0:?} (generic, monal or siskin)")]
pub struct UnknownClientKind(pub String);

impl TryFrom<String> for ClientKind {
    type Error = UnknownClientKind;

    /// `generic`, `monal` or `siskin`, case-insensitive; anything else is
    /// handed back.
    fn try_from(name: String) -> Result<Self, Self::Error> {
        match name.to_ascii_lowercase().as_str() {
            "generic" => Ok(ClientKind::Generic),
            "monal" => Ok(ClientKind::Monal),
            "siskin" => Ok(ClientKind::Siskin),
            _ => Err(UnknownClientKind(name)),
        }
    }
}

impl std::str::FromStr for ClientKind {
    type Err = UnknownClientKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClientKind::try_from(s.to_owned())
    }
}

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

    /// [`Self::header`] as a header value (static: nothing built per push).
    pub fn header_value(self) -> reqwest::header::HeaderValue {
        reqwest::header::HeaderValue::from_static(self.header())
    }

    /// The default `apns-priority`: 10 delivers at once; 5 lets iOS save
    /// power, and is the only value Apple accepts for background pushes.
    pub fn priority(self) -> u8 {
        match self {
            PushType::Alert | PushType::Voip => 10,
            PushType::Background => 5,
        }
    }

    /// Apple's payload limit for this type.
    pub fn limit(self) -> usize {
        match self {
            PushType::Voip => MAX_VOIP_PAYLOAD,
            PushType::Alert | PushType::Background => MAX_PAYLOAD,
        }
    }
}

/// Which of a device's tokens a push goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recipient {
    /// [`Device::token`]: the app's normal push token.
    Token,
    /// [`Device::voip_token`]: the PushKit token, for calls.
    VoipToken,
}

/// The per-app choices that shape a payload.
#[derive(Debug, Clone)]
pub(crate) struct PayloadSettings {
    pub kind: ClientKind,
    /// The app's bundle id; a publish may pick it or its `.voip` variant.
    pub topic: String,
    pub voip: bool,
    pub include_sender: bool,
    pub include_body: bool,
    /// Alert text when the body is not forwarded (or not sent), and of
    /// every alert that carries ciphertext.
    pub alert_body: String,
    /// `aps.sound` of alerts; empty for none.
    pub sound: String,
}

/// A payload ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApnsPayload {
    pub recipient: Recipient,
    pub push_type: PushType,
    /// `apns-priority`.
    pub priority: u8,
    pub body: Vec<u8>,
    /// When the notification's ciphertext did not fit and was left out:
    /// the size the smallest payload with it would have had.
    pub ciphertext_dropped: Option<usize>,
}

/// Why no payload could be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payload of {size} bytes exceeds the {limit}-byte limit of {push_type} pushes")]
pub(crate) struct PayloadTooLarge {
    pub size: usize,
    pub limit: usize,
    pub push_type: &'static str,
}

/// The topic a publish asked for, when it is one this app may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChosenTopic {
    App,
    Voip,
}

/// The publish's `topic` option, honoured only when it is the app's own
/// topic or its `.voip` variant: a publisher must not pick another app of
/// the same team (one key signs for all of them).
fn chosen_topic(settings: &PayloadSettings, device: &Device) -> Option<ChosenTopic> {
    let topic = device.options.topic.as_deref()?;
    if topic == settings.topic {
        Some(ChosenTopic::App)
    } else if topic.strip_suffix(".voip") == Some(settings.topic.as_str()) {
        Some(ChosenTopic::Voip)
    } else {
        tracing::debug!(
            asked = topic,
            app_topic = %settings.topic,
            "APNs: ignoring a publish's topic that is not this app's"
        );
        None
    }
}

/// Builds the push for `n` to `device`. A forwarded body that does not fit
/// is cut to fit ([`crate::fit`]); ciphertext that does not fit is left out
/// ([`ApnsPayload::ciphertext_dropped`]); only a payload too large without
/// any body is refused.
pub(crate) fn build(
    settings: &PayloadSettings,
    device: &Device,
    n: &Notification,
) -> Result<ApnsPayload, PayloadTooLarge> {
    let options = &device.options;
    let call_to_voip_token =
        n.call.is_some() && device.voip_token.as_deref().is_some_and(|t| !t.is_empty());
    let voip = call_to_voip_token
        || match chosen_topic(settings, device) {
            Some(ChosenTopic::Voip) => true,
            Some(ChosenTopic::App) => false,
            None => settings.voip,
        };
    let push_type = if voip {
        PushType::Voip
    } else if options.silent == Some(true) || !n.is_important() {
        PushType::Background
    } else {
        PushType::Alert
    };
    let priority = match (push_type, options.high_priority) {
        // Background pushes must stay at 5 and calls at 10 whatever a
        // publish asks; an alert may be sent at 5 to save power.
        (PushType::Alert, Some(false)) => 5,
        _ => push_type.priority(),
    };
    let limit = push_type.limit();
    let sender = n
        .last_message_sender
        .as_deref()
        .filter(|_| settings.include_sender);
    let body = n
        .last_message_body
        .as_deref()
        .filter(|_| settings.include_body);

    let rendered = crate::fit::with_optional_ciphertext(
        n.encrypted.is_some(),
        body,
        |with_ciphertext, body| {
            let content = Content {
                sender,
                body,
                ciphertext: n.encrypted.as_ref().filter(|_| with_ciphertext),
            };
            let json = render(settings, device, n, push_type, &content);
            if json.len() <= limit {
                Ok(json)
            } else {
                Err(json.len())
            }
        },
    );
    match rendered {
        Ok(fitted) => Ok(ApnsPayload {
            recipient: if call_to_voip_token {
                Recipient::VoipToken
            } else {
                Recipient::Token
            },
            push_type,
            priority,
            body: fitted.bytes,
            ciphertext_dropped: fitted.ciphertext_dropped,
        }),
        Err(size) => Err(PayloadTooLarge {
            size,
            limit,
            push_type: push_type.header(),
        }),
    }
}

/// What one rendering carries of the notification.
struct Content<'a> {
    /// The sender, when sent and allowed.
    sender: Option<&'a str>,
    /// The body (maybe cut), when sent and allowed.
    body: Option<&'a str>,
    /// The ciphertext, when this rendering carries it.
    ciphertext: Option<&'a EncryptedPayload>,
}

fn render(
    settings: &PayloadSettings,
    device: &Device,
    n: &Notification,
    push_type: PushType,
    content: &Content<'_>,
) -> Vec<u8> {
    let options = &device.options;
    let mut aps = JsonObject::new();
    match push_type {
        PushType::Alert => {
            let mut alert = JsonObject::new();
            let title = match settings.kind {
                ClientKind::Monal => Some(content.sender.unwrap_or(MONAL_TITLE)),
                ClientKind::Generic | ClientKind::Siskin => content.sender,
            };
            if let Some(title) = title {
                alert.insert("title", title);
            }
            // With ciphertext the extension writes the text it decrypts;
            // until then (and if it cannot) the configured one shows.
            let text = match content.ciphertext {
                Some(_) => settings.alert_body.as_str(),
                None => content.body.unwrap_or(&settings.alert_body),
            };
            alert.insert("body", text);
            aps.insert("alert", alert);
            let sound = options.sound.as_deref().unwrap_or(&settings.sound);
            if !sound.is_empty() {
                aps.insert("sound", sound);
            }
            // Ciphertext is useless without the extension that decrypts it.
            if content.ciphertext.is_some() || options.mutable_content != Some(false) {
                aps.insert("mutable-content", 1);
            }
        }
        PushType::Background => {
            aps.insert("content-available", 1);
        }
        // PushKit delivers the whole dictionary to the app; `aps` stays
        // empty.
        PushType::Voip => {}
    }
    let mut root = JsonObject::new();
    root.insert("aps", aps);
    match settings.kind {
        ClientKind::Generic | ClientKind::Monal => {
            if let Some(count) = n.message_count {
                root.insert("unread-messages", count);
            }
            if let Some(sender) = content.sender {
                root.insert("sender", sender);
            }
            // A VoIP payload has no alert to carry the body.
            if push_type == PushType::Voip {
                if let Some(body) = content.body {
                    root.insert("body", body);
                }
                root.insert("important", n.is_important());
            }
        }
        ClientKind::Siskin => {
            // Siskin's extension finds the account by `account` (the
            // registering bare JID) and shows `sender`, `nickname`, `body`.
            if let Some(account) = &device.account {
                root.insert("account", account.as_str());
            }
            if let Some(sender) = content.sender {
                root.insert("sender", sender);
                let nickname = n
                    .fields
                    .iter()
                    .find(|(var, value)| var == "nickname" && !value.is_empty());
                if let Some((_, nickname)) = nickname {
                    root.insert("nickname", nickname.as_str());
                }
            }
            if let Some(body) = content.body {
                root.insert("body", body);
            }
            if let Some(count) = n.message_count {
                root.insert("unread-messages", count);
            }
        }
    }
    if let Some(call) = &n.call {
        if let Some(sid) = &call.sid {
            root.insert("sid", sid.as_str());
        }
        if !call.media.is_empty() {
            root.insert("media", call.media.as_slice());
        }
    }
    if let Some(ciphertext) = content.ciphertext {
        root.insert("encrypted", ciphertext.data.as_str());
        root.insert("iv", ciphertext.iv.as_str());
    }
    root.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Call, PushOptions};
    use serde_json::{Value, json};

    fn settings() -> PayloadSettings {
        PayloadSettings {
            kind: ClientKind::Generic,
            topic: "im.example.app".into(),
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
            ..Default::default()
        }
    }

    fn device() -> Device {
        Device {
            token: "ab".repeat(32),
            app: "ios".into(),
            account: Some("romeo@montague.example".into()),
            ..Default::default()
        }
    }

    fn build(s: &PayloadSettings, n: &Notification) -> Result<ApnsPayload, PayloadTooLarge> {
        super::build(s, &device(), n)
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
            // Prosody: the body field present and empty (a chat state).
            Notification {
                message_count: Some(3),
                last_message_sender: Some("romeo@montague.example".into()),
                fields: vec![
                    (
                        "last-message-sender".into(),
                        "romeo@montague.example".into(),
                    ),
                    ("last-message-body".into(), String::new()),
                ],
                ..Default::default()
            },
        ] {
            let mut s = settings();
            s.include_body = true;
            let p = build(&s, &n).unwrap();
            assert_eq!(p.push_type, PushType::Background);
            assert_eq!(p.priority, 5);
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

    fn encrypted(size: usize) -> Notification {
        Notification {
            encrypted: Some(EncryptedPayload {
                data: "A".repeat(size),
                iv: "q6Z0mXc3bNQ9y0lh".into(),
            }),
            ..Default::default()
        }
    }

    fn call() -> Notification {
        Notification {
            message_count: Some(1),
            last_message_sender: Some("juliet@capulet.example/balcony".into()),
            fields: vec![(
                "last-message-sender".into(),
                "juliet@capulet.example/balcony".into(),
            )],
            call: Some(Call {
                sid: Some("a73sjjvkla37jfea".into()),
                media: vec!["audio".into(), "video".into()],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn client_kinds_parse_and_hand_back_unknown_names() {
        assert_eq!(
            ClientKind::try_from("Siskin".to_owned()),
            Ok(ClientKind::Siskin)
        );
        assert_eq!("monal".parse(), Ok(ClientKind::Monal));
        assert_eq!("generic".parse(), Ok(ClientKind::Generic));
        assert_eq!(
            ClientKind::try_from("conversations".to_owned()),
            Err(UnknownClientKind("conversations".into()))
        );
        assert_eq!(ClientKind::default(), ClientKind::Generic);
    }

    #[test]
    fn monal_gets_a_titled_mutable_alert_and_silent_stays_background() {
        let mut s = settings();
        s.kind = ClientKind::Monal;
        let p = build(&s, &important()).unwrap();
        assert_eq!(p.push_type, PushType::Alert);
        let v = parse(&p);
        assert_eq!(
            v["aps"],
            json!({
                "alert": {"title": MONAL_TITLE, "body": "New message"},
                "sound": "default",
                "mutable-content": 1
            })
        );
        s.include_sender = true;
        let v = parse(&build(&s, &important()).unwrap());
        assert_eq!(v["aps"]["alert"]["title"], "juliet@capulet.example/balcony");
        let p = build(&s, &Notification::default()).unwrap();
        assert_eq!(p.push_type, PushType::Background);
        assert_eq!(parse(&p)["aps"], json!({"content-available": 1}));
    }

    #[test]
    fn siskin_gets_its_user_info_keys() {
        let mut s = settings();
        s.kind = ClientKind::Siskin;
        // Nothing private by default: the account and the count only.
        let v = parse(&build(&s, &important()).unwrap());
        assert_eq!(
            v,
            json!({
                "aps": {"alert": {"body": "New message"}, "sound": "default", "mutable-content": 1},
                "account": "romeo@montague.example",
                "unread-messages": 1
            })
        );
        s.include_sender = true;
        s.include_body = true;
        let mut n = important();
        n.fields = vec![("nickname".into(), "Juliet".into())];
        let v = parse(&build(&s, &n).unwrap());
        assert_eq!(v["account"], "romeo@montague.example");
        assert_eq!(v["sender"], "juliet@capulet.example/balcony");
        assert_eq!(v["nickname"], "Juliet");
        assert_eq!(v["body"], "Wherefore art thou?");
        assert_eq!(v["unread-messages"], 1);
        assert_eq!(v["aps"]["alert"]["body"], "Wherefore art thou?");
        // A silent wake-up still names the account.
        let v = parse(&build(&s, &Notification::default()).unwrap());
        assert_eq!(v["aps"], json!({"content-available": 1}));
        assert_eq!(v["account"], "romeo@montague.example");
    }

    #[test]
    fn a_call_goes_to_the_voip_token_as_voip() {
        let mut s = settings();
        s.include_sender = true;
        let mut d = device();
        d.voip_token = Some("cd".repeat(32));
        let p = super::build(&s, &d, &call()).unwrap();
        assert_eq!(p.recipient, Recipient::VoipToken);
        assert_eq!(p.push_type, PushType::Voip);
        assert_eq!(p.priority, 10);
        let v = parse(&p);
        assert_eq!(v["aps"], json!({}));
        assert_eq!(v["sid"], "a73sjjvkla37jfea");
        assert_eq!(v["media"], json!(["audio", "video"]));
        assert_eq!(v["sender"], "juliet@capulet.example/balcony");
        // Siskin's keys on the VoIP push too.
        s.kind = ClientKind::Siskin;
        let v = parse(&super::build(&s, &d, &call()).unwrap());
        assert_eq!(v["account"], "romeo@montague.example");
        assert_eq!(v["sender"], "juliet@capulet.example/balcony");
        assert_eq!(v["sid"], "a73sjjvkla37jfea");
        // A message to the same device: the normal token, an alert.
        let p = super::build(&s, &d, &important()).unwrap();
        assert_eq!(p.recipient, Recipient::Token);
        assert_eq!(p.push_type, PushType::Alert);
        // A call to a device without a VoIP token: an alert to the token.
        let p = build(&s, &call()).unwrap();
        assert_eq!(p.recipient, Recipient::Token);
        assert_eq!(p.push_type, PushType::Alert);
        assert_eq!(parse(&p)["sid"], "a73sjjvkla37jfea");
    }

    #[test]
    fn ciphertext_is_forwarded_in_a_mutable_alert_with_the_configured_text() {
        for kind in [ClientKind::Generic, ClientKind::Monal, ClientKind::Siskin] {
            let mut s = settings();
            s.kind = kind;
            s.include_body = true;
            let mut n = encrypted(64);
            n.last_message_body = Some("plain".into());
            let p = build(&s, &n).unwrap();
            assert_eq!(p.push_type, PushType::Alert, "{kind:?}");
            assert_eq!(p.ciphertext_dropped, None);
            let v = parse(&p);
            assert_eq!(v["encrypted"], "A".repeat(64));
            assert_eq!(v["iv"], "q6Z0mXc3bNQ9y0lh");
            assert_eq!(v["aps"]["mutable-content"], 1);
            assert_eq!(v["aps"]["alert"]["body"], "New message", "{kind:?}");
        }
        // Even when the publish asked for no mutable content.
        let mut d = device();
        d.options.mutable_content = Some(false);
        let v = parse(&super::build(&settings(), &d, &encrypted(64)).unwrap());
        assert_eq!(v["aps"]["mutable-content"], 1);
    }

    #[test]
    fn ciphertext_too_large_becomes_the_plain_wake_up_never_cut() {
        let p = build(&settings(), &encrypted(MAX_PAYLOAD)).unwrap();
        assert!(p.ciphertext_dropped.is_some_and(|size| size > MAX_PAYLOAD));
        assert_eq!(p.push_type, PushType::Alert, "still a message");
        let v = parse(&p);
        assert!(v.get("encrypted").is_none() && v.get("iv").is_none());
        assert_eq!(v["aps"]["alert"]["body"], "New message");
        // Just under the limit it fits whole.
        let p = build(&settings(), &encrypted(MAX_PAYLOAD - 200)).unwrap();
        assert_eq!(p.ciphertext_dropped, None);
        assert!(p.body.len() <= MAX_PAYLOAD);
        assert_eq!(
            parse(&p)["encrypted"].as_str().unwrap().len(),
            MAX_PAYLOAD - 200
        );
        // A VoIP push has room for more.
        let mut n = call();
        n.encrypted = encrypted(MAX_PAYLOAD).encrypted;
        let mut d = device();
        d.voip_token = Some("cd".repeat(32));
        let p = super::build(&settings(), &d, &n).unwrap();
        assert_eq!(p.ciphertext_dropped, None);
        assert!(p.body.len() > MAX_PAYLOAD && p.body.len() <= MAX_VOIP_PAYLOAD);
        n.encrypted = encrypted(MAX_VOIP_PAYLOAD).encrypted;
        let p = super::build(&settings(), &d, &n).unwrap();
        assert!(p.ciphertext_dropped.is_some());
        assert!(parse(&p).get("encrypted").is_none());
    }

    #[test]
    fn publish_options_shape_the_push() {
        let mut d = device();
        d.options = PushOptions {
            sound: Some("bell.caf".into()),
            mutable_content: Some(false),
            high_priority: Some(false),
            ..Default::default()
        };
        let p = super::build(&settings(), &d, &important()).unwrap();
        assert_eq!((p.push_type, p.priority), (PushType::Alert, 5));
        let v = parse(&p);
        assert_eq!(v["aps"]["sound"], "bell.caf");
        assert!(v["aps"].get("mutable-content").is_none());

        // Silent: a background push even for a message.
        d.options = PushOptions {
            silent: Some(true),
            high_priority: Some(true),
            ..Default::default()
        };
        let p = super::build(&settings(), &d, &important()).unwrap();
        assert_eq!((p.push_type, p.priority), (PushType::Background, 5));

        // The app's `.voip` topic: a VoIP push to the normal token.
        d.options = PushOptions {
            topic: Some("im.example.app.voip".into()),
            ..Default::default()
        };
        let p = super::build(&settings(), &d, &important()).unwrap();
        assert_eq!(
            (p.push_type, p.recipient),
            (PushType::Voip, Recipient::Token)
        );
        // The app's own topic on a VoIP app: a plain alert.
        let mut s = settings();
        s.voip = true;
        d.options.topic = Some("im.example.app".into());
        let p = super::build(&s, &d, &important()).unwrap();
        assert_eq!(p.push_type, PushType::Alert);
        // Another app's topic is ignored.
        d.options.topic = Some("com.other.app.voip".into());
        let p = super::build(&settings(), &d, &important()).unwrap();
        assert_eq!(p.push_type, PushType::Alert);
    }
}
