//! Push backends for Nudge.
//!
//! This crate owns the boundary between the App Server and the push providers:
//! the [`PushBackend`] trait, the [`Device`] a push goes to, the
//! [`Notification`] it carries, and the [`Outcome`] a provider answered with.
//! Nothing here knows XMPP; one module per provider (APNs, FCM, Web Push) is
//! added beside this file.
//!
//! # Why a boxed future instead of `async fn` in the trait
//! Backends are chosen at run time from the configuration (each configured
//! app names its provider), so the dispatcher holds them as
//! `Arc<dyn PushBackend>`. `async fn` in traits is not dyn-compatible, so
//! [`PushBackend::send`] returns a [`BoxFuture`]: one small allocation per
//! push, negligible next to an HTTP/2 request, and no macro crate needed.

pub mod apns;
pub mod clock;
mod config;
pub mod fcm;
mod fit;
mod http;
mod json;
mod jws;
pub mod webpush;
pub use apns::ClientKind;
pub use config::{BackendConfigError, ProviderConfig, build_backend};
pub use http::SetupError;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A future returned by a backend, boxed so that the trait stays dyn-compatible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The device a push is sent to, as the registration store knows it (or,
/// for the stateless dialects, as the publish names it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    /// The provider's handle for the app instance (APNs device token, FCM
    /// registration token, Web Push subscription).
    pub token: String,
    /// Name of the configured app (bundle id / Firebase project) this device
    /// belongs to.
    pub app: String,
    /// Bare JID of the account that registered the device, when known.
    /// FCM's Conversations payload derives its `account` hash from it.
    pub account: Option<String>,
    /// The client's device id (Conversations' `device-id`/`android-id`).
    pub device_id: Option<String>,
    /// Bare JID of a group chat when the registration is for pushes from
    /// that room only (Conversations' `muc` field).
    pub muc: Option<String>,
    /// Collapse identifier of this registration: APNs `apns-collapse-id`,
    /// FCM `android.collapse_key`. Pushes with the same one replace each
    /// other on the phone (and in the provider's store for an offline
    /// phone), so a burst shows one notification, not five; one phone with
    /// two accounts or rooms keeps one per registration. At most 64 bytes
    /// (APNs' limit); the app's configured key is used when absent.
    pub collapse_id: Option<String>,
    /// A second token for calls: Siskin's PushKit (VoIP) token
    /// (`device-second-token`). A notification that is a call goes to it as
    /// a VoIP push; everything else goes to `token`.
    pub voip_token: Option<String>,
    /// The APNs environment the token belongs to, when the registration says
    /// (a development build's tokens are sandbox tokens, a TestFlight or App
    /// Store build's production ones); `None`: the app's configured endpoint.
    pub environment: Option<Environment>,
    /// Per-push choices the publish carried (MongooseIM's publish-options);
    /// empty for registered devices.
    pub options: PushOptions,
}

/// Which APNs environment a device token was issued by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    /// `api.push.apple.com`: App Store and TestFlight-distributed production
    /// builds.
    Production,
    /// `api.sandbox.push.apple.com`: development builds.
    Sandbox,
}

impl Environment {
    /// The name as stored and configured (`production`, `sandbox`).
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Sandbox => "sandbox",
        }
    }
}

impl std::str::FromStr for Environment {
    type Err = UnknownEnvironment;

    /// `production` (or `prod`), `sandbox` (or `development`, `dev`),
    /// case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "production" | "prod" => Ok(Environment::Production),
            "sandbox" | "development" | "dev" => Ok(Environment::Sandbox),
            _ => Err(UnknownEnvironment(s.to_owned())),
        }
    }
}

/// A name that is neither production nor sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown APNs environment {0:?} (production or sandbox)")]
pub struct UnknownEnvironment(pub String);

/// Per-push choices from a stateless publish (MongooseIM's
/// publish-options). Each is `None` when the publish did not say. Stored
/// with a queued push (the component's outbox), hence serde.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PushOptions {
    /// `topic`: the APNs topic to use; honoured only when it is the app's
    /// own topic or its `.voip` variant.
    pub topic: Option<String>,
    /// `silent`: a background wake-up even for a message.
    pub silent: Option<bool>,
    /// `priority`: `high` or `normal`.
    pub high_priority: Option<bool>,
    /// `sound`: the alert's sound.
    pub sound: Option<String>,
    /// `mutable_content`: whether an alert may be changed by the app's
    /// extension.
    pub mutable_content: Option<bool>,
    /// `time_to_live`: how long the provider keeps the push for an offline
    /// device, in seconds.
    pub ttl_secs: Option<u64>,
}

/// What the user's XMPP server told us about the event, taken from the
/// XEP-0357 `urn:xmpp:push:summary` form. Every field is optional: ejabberd
/// sends no form at all for unimportant events, Prosody sends every field,
/// empty when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notification {
    /// `message-count`, when the server sent a number.
    pub message_count: Option<u32>,
    /// `last-message-sender` (a full JID on both Prosody and ejabberd),
    /// `None` when absent or empty.
    pub last_message_sender: Option<String>,
    /// `last-message-body`, `None` when absent or empty.
    pub last_message_body: Option<String>,
    /// Every field of the summary form in wire order, including the ones
    /// above and ones this crate does not interpret, so that a backend can
    /// forward what it needs.
    pub fields: Vec<(String, String)>,
    /// Ciphertext a Tigase server put in the notification
    /// (`tigase:push:encrypt:0`), forwarded as it is: only the app holds the
    /// key.
    pub encrypted: Option<EncryptedPayload>,
    /// A call the server signalled (`tigase:push:jingle:0` with a
    /// `propose`, or an encrypted payload of type `voip`).
    pub call: Option<Call>,
}

/// An encrypted notification payload (`<encrypted xmlns='tigase:push:encrypt:0'
/// iv='…'>…</encrypted>`, fixture `tests/fixtures/tigase-encrypted.xml`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptedPayload {
    /// The ciphertext, base64 as the server sent it.
    pub data: String,
    /// The initialisation vector, base64.
    pub iv: String,
}

/// A call proposal (`<jingle xmlns='tigase:push:jingle:0' action='propose'
/// sid='…'><media>audio</media></jingle>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Call {
    /// The Jingle session id, when the server sent one.
    pub sid: Option<String>,
    /// The media proposed (`audio`, `video`).
    pub media: Vec<String>,
}

impl Notification {
    /// An important notification (a message a person should see) as opposed
    /// to a silent wake-up. The live captures decide the rule: Prosody always
    /// sends the `last-message-body` field, empty for unimportant events
    /// (chat states, presence); ejabberd sends no summary for those at all,
    /// and with `include_body: false, include_sender: true` a summary with
    /// the sender and no body field, only for real messages. So: important
    /// when the body is non-empty, or when the body field is absent and the
    /// sender is non-empty; and always for a call or encrypted content
    /// (a Tigase server sends those only for messages).
    pub fn is_important(&self) -> bool {
        self.last_message_body.is_some()
            || (self.last_message_sender.is_some()
                && !self
                    .fields
                    .iter()
                    .any(|(var, _)| var == "last-message-body"))
            || self.encrypted.is_some()
            || self.call.is_some()
    }
}

/// What a provider made of one push; the dispatcher acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted the push.
    Delivered,
    /// The token will never work again (app uninstalled, token rotated): the
    /// registration is removed and the XMPP server is told, so that it
    /// disables push for the device.
    InvalidToken { reason: String },
    /// The provider asked us to slow down.
    Throttled { retry_after: Option<Duration> },
    /// The provider or the network failed for now; the same push may succeed
    /// later.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The provider refused the request itself (bad payload, bad
    /// credentials, our bug). Never retried blindly, and never blamed on the
    /// user's registration.
    Rejected { reason: String },
}

impl Outcome {
    /// A short machine-readable name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::InvalidToken { .. } => "invalid_token",
            Outcome::Throttled { .. } => "throttled",
            Outcome::Transient { .. } => "transient",
            Outcome::Rejected { .. } => "rejected",
        }
    }
}

/// A push provider. Implementations are cheap to share (`Arc<dyn
/// PushBackend>`), keep their connections and auth tokens warm across
/// pushes, and take their endpoints from configuration so that tests and
/// proxies can point them anywhere.
pub trait PushBackend: Send + Sync + 'static {
    /// The provider's name as registrations and commands know it
    /// (`"apns"`, `"fcm"`, …).
    fn provider(&self) -> &str;

    /// Checks a device token's format at registration time, so that a typo
    /// is refused then rather than bounced by the provider later. The
    /// default accepts any non-empty token without whitespace or control
    /// characters.
    fn validate_token(&self, token: &str) -> Result<(), InvalidTokenFormat> {
        check_token_chars(token)
    }

    /// The key a client needs before it can subscribe: Web Push's VAPID
    /// public key (base64url, the `applicationServerKey` of
    /// `pushManager.subscribe()`); `None` for providers without one.
    fn application_server_key(&self) -> Option<&str> {
        None
    }

    /// Sends one push. Never panics on a provider's answer; every failure is
    /// an [`Outcome`].
    fn send<'a>(
        &'a self,
        device: &'a Device,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Outcome>;
}

/// Why a device token was refused at registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device token: {0}")]
pub struct InvalidTokenFormat(pub String);

/// The longest token any provider issues is a Web Push subscription (an
/// endpoint URL plus keys); 4 KiB leaves room and keeps junk out.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The format check every provider shares: non-empty, bounded, printable.
pub fn check_token_chars(token: &str) -> Result<(), InvalidTokenFormat> {
    if token.is_empty() {
        return Err(InvalidTokenFormat("empty".into()));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(InvalidTokenFormat(format!(
            "{} bytes, longer than {MAX_TOKEN_LEN}",
            token.len()
        )));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidTokenFormat(
            "contains whitespace or control characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn importance_follows_the_body() {
        let mut n = Notification::default();
        assert!(!n.is_important());
        n.last_message_body = Some("New Message!".into());
        assert!(n.is_important());
    }

    #[test]
    fn a_sender_without_a_body_field_is_important() {
        // ejabberd, include_body: false, include_sender: true.
        let sender_only = Notification {
            last_message_sender: Some("juliet@capulet.example/balcony".into()),
            fields: vec![(
                "last-message-sender".into(),
                "juliet@capulet.example/balcony".into(),
            )],
            ..Notification::default()
        };
        assert!(sender_only.is_important());
        // Prosody: the body field is there, empty; the sender alone says
        // nothing (a chat state with push_notification_with_sender).
        let mut prosody = sender_only.clone();
        prosody
            .fields
            .push(("last-message-body".into(), String::new()));
        assert!(!prosody.is_important());
        // Encrypted content and calls come only for messages.
        let encrypted = Notification {
            encrypted: Some(EncryptedPayload::default()),
            ..Notification::default()
        };
        assert!(encrypted.is_important());
        let call = Notification {
            call: Some(Call::default()),
            ..Notification::default()
        };
        assert!(call.is_important());
    }

    #[test]
    fn environments_parse() {
        assert_eq!("Sandbox".parse(), Ok(Environment::Sandbox));
        assert_eq!("development".parse(), Ok(Environment::Sandbox));
        assert_eq!("production".parse(), Ok(Environment::Production));
        assert!("staging".parse::<Environment>().is_err());
    }

    #[test]
    fn token_chars() {
        assert!(check_token_chars("abc123").is_ok());
        assert!(check_token_chars("").is_err());
        assert!(check_token_chars("a b").is_err());
        assert!(check_token_chars(&"a".repeat(MAX_TOKEN_LEN + 1)).is_err());
    }
}
