//! The FCM v1 message for one notification.
//!
//! A data message (no `notification` block: the app decides what to show)
//! that the real Conversations app can act on. Conversations reads
//! `data.account` = `hex(sha1(bare_jid + "\0" + device_id))` to know which
//! account to wake, and `data.channel` (the same hash over the room JID) for
//! a MUC registration; the summary fields follow, sender and body only when
//! the XMPP server sent them and the app's configuration allows it.
//! `android.priority` is `high` for important notifications: data messages
//! at normal priority do not wake a phone in Doze (a call is important, so
//! high too). `android.collapse_key` is the registration's own
//! ([`Device::collapse_id`]), else the app's.
//!
//! Ciphertext (`tigase:push:encrypt:0`) is forwarded whole as
//! `data.encrypted` + `data.iv`, or left out when it does not fit (the
//! plain wake-up still makes the app fetch the message). A stateless
//! publish's [`PushOptions`](crate::PushOptions) may set the priority
//! (`high_priority`) and `android.ttl` (`ttl_secs`).

use serde_json::{Map, Value};
use sha1::{Digest, Sha1};

use crate::{Device, EncryptedPayload, Notification};

/// FCM's limit on a message's payload.
pub const MAX_DATA: usize = 4096;

/// The per-app choices that shape a message.
#[derive(Debug, Clone, Default)]
pub(crate) struct MessageSettings {
    pub include_sender: bool,
    pub include_body: bool,
    pub ttl_secs: Option<u64>,
    pub collapse_key: Option<String>,
}

/// A message ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FcmMessage {
    /// The request body `{"message": {...}}`.
    pub body: Vec<u8>,
    /// When the notification's ciphertext did not fit and was left out:
    /// the size the smallest `data` with it would have had.
    pub ciphertext_dropped: Option<usize>,
}

/// Why no message could be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FCM data payload of {size} bytes exceeds the {MAX_DATA}-byte limit")]
pub(crate) struct MessageTooLarge {
    pub size: usize,
}

/// Conversations' account (or channel) key: `hex(sha1(jid + "\0" + device_id))`.
pub fn conversations_hash(jid: &str, device_id: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(jid.as_bytes());
    sha.update([0u8]);
    sha.update(device_id.as_bytes());
    hex::encode(sha.finalize())
}

/// The `priority`: the publish's choice when it made one, else high for
/// important notifications and normal for the rest.
pub(crate) fn priority(device: &Device, n: &Notification) -> &'static str {
    if device
        .options
        .high_priority
        .unwrap_or_else(|| n.is_important())
    {
        "high"
    } else {
        "normal"
    }
}

/// Builds the request body `{"message": {...}}`. The size limit applies to
/// the `data` object as serialised; a forwarded body that does not fit is
/// cut, ciphertext that does not fit left out ([`crate::fit`]).
pub(crate) fn build(
    settings: &MessageSettings,
    device: &Device,
    n: &Notification,
) -> Result<FcmMessage, MessageTooLarge> {
    let body = n
        .last_message_body
        .as_deref()
        .filter(|_| settings.include_body);
    let fitted = crate::fit::with_optional_ciphertext(
        n.encrypted.is_some(),
        body,
        |with_ciphertext, body| {
            let ciphertext = n.encrypted.as_ref().filter(|_| with_ciphertext);
            let data = data(settings, device, n, body, ciphertext);
            if data.len() <= MAX_DATA {
                Ok(data)
            } else {
                Err(data.len())
            }
        },
    )
    .map_err(|size| MessageTooLarge { size })?;
    let data = fitted.bytes;

    let mut android = Map::new();
    android.insert("priority".into(), priority(device, n).into());
    // A publish's own time to live wins over the app's; FCM keeps nothing
    // longer than four weeks.
    let ttl = device.options.ttl_secs.or(settings.ttl_secs);
    if let Some(ttl) = ttl.map(|t| t.min(super::MAX_TTL_SECS)) {
        // A protobuf Duration in JSON: seconds with an `s` suffix.
        android.insert("ttl".into(), format!("{ttl}s").into());
    }
    if let Some(key) = device
        .collapse_id
        .as_ref()
        .or(settings.collapse_key.as_ref())
    {
        android.insert("collapse_key".into(), key.as_str().into());
    }
    // The measured `data` bytes go into the request as they are.
    let mut message = Vec::with_capacity(data.len() + device.token.len() + 128);
    message.extend_from_slice(b"{\"message\":{\"token\":");
    message.extend_from_slice(Value::from(device.token.as_str()).to_string().as_bytes());
    message.extend_from_slice(b",\"data\":");
    message.extend_from_slice(&data);
    message.extend_from_slice(b",\"android\":");
    message.extend_from_slice(Value::Object(android).to_string().as_bytes());
    message.extend_from_slice(b"}}");
    Ok(FcmMessage {
        body: message,
        ciphertext_dropped: fitted.ciphertext_dropped,
    })
}

/// The `data` map (FCM wants string values only), serialised.
fn data(
    settings: &MessageSettings,
    device: &Device,
    n: &Notification,
    body: Option<&str>,
    ciphertext: Option<&EncryptedPayload>,
) -> Vec<u8> {
    let mut data = Map::new();
    if let (Some(account), Some(device_id)) = (&device.account, &device.device_id) {
        data.insert(
            "account".into(),
            conversations_hash(account, device_id).into(),
        );
        if let Some(muc) = &device.muc {
            data.insert("channel".into(), conversations_hash(muc, device_id).into());
        }
    }
    if let Some(count) = n.message_count {
        data.insert("message-count".into(), count.to_string().into());
    }
    if let Some(sender) = n
        .last_message_sender
        .as_deref()
        .filter(|_| settings.include_sender)
    {
        data.insert("last-message-sender".into(), sender.into());
    }
    if let Some(body) = body {
        data.insert("last-message-body".into(), body.into());
    }
    if let Some(ciphertext) = ciphertext {
        data.insert("encrypted".into(), ciphertext.data.as_str().into());
        data.insert("iv".into(), ciphertext.iv.as_str().into());
    }
    Value::Object(data).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn device() -> Device {
        Device {
            token: "fcm-token-1".into(),
            app: "conversations".into(),
            account: Some("romeo@montague.example".into()),
            device_id: Some("a1b2c3d4e5f60718".into()),
            muc: None,
            collapse_id: None,
            ..Default::default()
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

    fn parse(message: &FcmMessage) -> Value {
        serde_json::from_slice(&message.body).unwrap()
    }

    #[test]
    fn account_hash_is_conversations() {
        // sha1("romeo@montague.example\0a1b2c3d4e5f60718"), computed
        // independently with `printf 'romeo@montague.example\0a1b2c3d4e5f60718' | sha1sum`.
        assert_eq!(
            conversations_hash("romeo@montague.example", "a1b2c3d4e5f60718"),
            "352b12a7c47ff7efa7477904b4ae6fb4286866bf"
        );
    }

    #[test]
    fn important_message_is_high_priority_without_private_data_by_default() {
        let v = parse(&build(&MessageSettings::default(), &device(), &important()).unwrap());
        assert_eq!(
            v,
            json!({"message": {
                "token": "fcm-token-1",
                "data": {
                    "account": conversations_hash("romeo@montague.example", "a1b2c3d4e5f60718"),
                    "message-count": "1",
                },
                "android": {"priority": "high"},
            }})
        );
    }

    #[test]
    fn unimportant_is_normal_priority() {
        let v = parse(
            &build(
                &MessageSettings::default(),
                &device(),
                &Notification::default(),
            )
            .unwrap(),
        );
        assert_eq!(v["message"]["android"]["priority"], "normal");
        assert!(
            v["message"].get("notification").is_none(),
            "data message only"
        );
    }

    #[test]
    fn options_sender_body_channel() {
        let settings = MessageSettings {
            include_sender: true,
            include_body: true,
            ttl_secs: Some(86400),
            collapse_key: Some("xmpp".into()),
        };
        let mut d = device();
        d.muc = Some("garden@chat.capulet.example".into());
        let v = parse(&build(&settings, &d, &important()).unwrap());
        let m = &v["message"];
        assert_eq!(
            m["android"],
            json!({"priority": "high", "ttl": "86400s", "collapse_key": "xmpp"})
        );
        assert_eq!(
            m["data"]["last-message-sender"],
            "juliet@capulet.example/balcony"
        );
        assert_eq!(m["data"]["last-message-body"], "Wherefore art thou?");
        assert_eq!(
            m["data"]["channel"],
            conversations_hash("garden@chat.capulet.example", "a1b2c3d4e5f60718")
        );
        // Every data value is a string.
        assert!(
            m["data"]
                .as_object()
                .unwrap()
                .values()
                .all(Value::is_string)
        );
    }

    #[test]
    fn the_registration_collapse_key_wins_over_the_app_one() {
        let settings = MessageSettings {
            collapse_key: Some("xmpp".into()),
            ..Default::default()
        };
        let mut d = device();
        d.collapse_id = Some("3f2a9c0d1e7b6a54".into());
        let v = parse(&build(&settings, &d, &important()).unwrap());
        assert_eq!(v["message"]["android"]["collapse_key"], "3f2a9c0d1e7b6a54");
        let v = parse(&build(&MessageSettings::default(), &d, &important()).unwrap());
        assert_eq!(v["message"]["android"]["collapse_key"], "3f2a9c0d1e7b6a54");
    }

    #[test]
    fn without_account_or_device_id_there_is_no_account_key() {
        let mut d = device();
        d.device_id = None;
        let v = parse(&build(&MessageSettings::default(), &d, &important()).unwrap());
        assert!(v["message"]["data"].get("account").is_none());
    }

    #[test]
    fn size_is_checked() {
        let settings = MessageSettings {
            include_sender: true,
            include_body: true,
            ..Default::default()
        };
        let mut n = important();
        n.last_message_body = Some("\"".repeat(10_000));
        let v = parse(&build(&settings, &device(), &n).unwrap());
        let data = v["message"]["data"].to_string();
        assert!(
            data.len() <= MAX_DATA && data.len() > MAX_DATA - 16,
            "{}",
            data.len()
        );
        assert!(
            v["message"]["data"]["last-message-body"]
                .as_str()
                .unwrap()
                .ends_with('…')
        );

        n.last_message_sender = Some("x".repeat(5000));
        let err = build(&settings, &device(), &n).unwrap_err();
        assert!(err.size > MAX_DATA);
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

    #[test]
    fn ciphertext_is_forwarded_whole_at_high_priority() {
        let m = build(&MessageSettings::default(), &device(), &encrypted(100)).unwrap();
        assert_eq!(m.ciphertext_dropped, None);
        let v = parse(&m);
        assert_eq!(v["message"]["data"]["encrypted"], "A".repeat(100));
        assert_eq!(v["message"]["data"]["iv"], "q6Z0mXc3bNQ9y0lh");
        assert_eq!(v["message"]["android"]["priority"], "high");
    }

    #[test]
    fn ciphertext_too_large_becomes_the_plain_wake_up() {
        let m = build(&MessageSettings::default(), &device(), &encrypted(MAX_DATA)).unwrap();
        assert!(m.ciphertext_dropped.is_some_and(|size| size > MAX_DATA));
        let v = parse(&m);
        assert!(v["message"]["data"].get("encrypted").is_none());
        assert!(v["message"]["data"].get("iv").is_none());
        assert!(v["message"]["data"].get("account").is_some());
        assert_eq!(
            v["message"]["android"]["priority"], "high",
            "still a message"
        );
    }

    #[test]
    fn a_call_is_high_priority_to_the_normal_token() {
        let mut d = device();
        d.voip_token = Some("cd".repeat(32));
        let n = Notification {
            call: Some(crate::Call {
                sid: Some("a73sjjvkla37jfea".into()),
                media: vec!["audio".into()],
            }),
            ..Default::default()
        };
        let v = parse(&build(&MessageSettings::default(), &d, &n).unwrap());
        assert_eq!(v["message"]["token"], "fcm-token-1");
        assert_eq!(v["message"]["android"]["priority"], "high");
    }

    #[test]
    fn publish_options_set_priority_and_ttl() {
        let settings = MessageSettings {
            ttl_secs: Some(60),
            ..Default::default()
        };
        let mut d = device();
        d.options = crate::PushOptions {
            high_priority: Some(false),
            ttl_secs: Some(3600),
            ..Default::default()
        };
        let v = parse(&build(&settings, &d, &important()).unwrap());
        assert_eq!(
            v["message"]["android"],
            json!({"priority": "normal", "ttl": "3600s"})
        );
        d.options = crate::PushOptions {
            high_priority: Some(true),
            ttl_secs: Some(u64::MAX),
            ..Default::default()
        };
        let v = parse(&build(&settings, &d, &Notification::default()).unwrap());
        assert_eq!(v["message"]["android"]["priority"], "high");
        assert_eq!(
            v["message"]["android"]["ttl"],
            format!("{}s", super::super::MAX_TTL_SECS)
        );
    }
}
