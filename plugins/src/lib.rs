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
pub use config::{BackendConfigError, ProviderConfig, build_backend};
pub use http::SetupError;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A future returned by a backend, boxed so that the trait stays dyn-compatible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The device a push is sent to, as the registration store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl Notification {
    /// An important notification (a message a person should see) as opposed
    /// to a silent wake-up. The live captures decide the rule: Prosody always
    /// sends `last-message-body`, empty for unimportant events (chat states,
    /// presence), and ejabberd sends no summary for those at all, so a push
    /// is important exactly when `last-message-body` has a non-empty value.
    pub fn is_important(&self) -> bool {
        self.last_message_body.is_some()
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
    fn token_chars() {
        assert!(check_token_chars("abc123").is_ok());
        assert!(check_token_chars("").is_err());
        assert!(check_token_chars("a b").is_err());
        assert!(check_token_chars(&"a".repeat(MAX_TOKEN_LEN + 1)).is_err());
    }
}
