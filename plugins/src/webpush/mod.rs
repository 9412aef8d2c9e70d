//! The Web Push backend (RFC 8030, 8291, 8292): wakes browsers' service
//! workers and UnifiedPush distributors.
//!
//! Unlike APNs and FCM there is no single provider: every subscription
//! names its own push service (its endpoint's origin), so the backend holds
//! one HTTP client that pools connections per origin (HTTP/2 where the
//! service offers it by ALPN, HTTP/1.1 otherwise) and bounds the pushes in
//! flight to each origin. Each push is the summary JSON ([`payload`])
//! encrypted for the subscription's keys (`aes128gcm`, by web-push-native),
//! signed for with a VAPID token ([`vapid`]) cached per origin.
//!
//! - [`subscription`]: the device token `<endpoint>#p256dh=…&auth=…`.
//! - [`vapid`]: the application server's key and its tokens.
//! - [`payload`]: the plaintext.
//! - `response`: what the push service's answer means.
//!
//! Endpoints are URLs users hand us, so by default pushes never go to
//! loopback, private or link-local addresses written as IP literals or to
//! `localhost` (`allow_local_endpoints` lifts this for tests and for a
//! distributor on the same network). A host name that resolves to such an
//! address is not caught here.

pub mod payload;
pub(crate) mod response;
pub mod subscription;
pub mod vapid;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::clock::{Clock, SystemClock};
use crate::http::{self, SetupError};
use crate::{BoxFuture, Device, InvalidTokenFormat, Notification, Outcome, PushBackend};
pub use subscription::{Subscription, SubscriptionError};
pub use vapid::{VapidError, VapidKey, generate_vapid_key};

const TTL: HeaderName = HeaderName::from_static("ttl");
const URGENCY: HeaderName = HeaderName::from_static("urgency");
const TOPIC: HeaderName = HeaderName::from_static("topic");

/// The provider name registrations and commands use.
pub const PROVIDER: &str = "webpush";

/// The longest time to live taken: four weeks, what the big push services
/// keep a message at most.
pub const MAX_TTL_SECS: u64 = 28 * 24 * 3600;

/// The most pushes one app may keep in flight to one push service.
pub const MAX_CONCURRENT_PER_ORIGIN: usize = 10_000;

/// Origins whose concurrency limit is remembered; idle ones are dropped
/// past this.
const MAX_ORIGINS: usize = 4096;

/// The longest `Topic` (RFC 8030).
const MAX_TOPIC_LEN: usize = 32;

/// One Web Push app, as read from its `[apps.NAME]` table
/// (`provider = "webpush"`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushConfig {
    /// The VAPID private key: the 32-byte P-256 scalar in base64url, as
    /// `nudge vapid generate` (and the usual `generate-vapid-keys` tools)
    /// print it. Exactly one of this and `vapid_private_key_file`.
    #[serde(default)]
    pub vapid_private_key: Option<String>,
    /// A file holding the VAPID private key: PKCS#8 or SEC1 PEM, or the
    /// base64url scalar.
    #[serde(default)]
    pub vapid_private_key_file: Option<PathBuf>,
    /// The operator's contact sent in every VAPID token (`sub`): a
    /// `mailto:` or `https:` URL. Push services use it to reach the
    /// operator about a misbehaving server.
    pub vapid_subject: String,
    /// How long the push service keeps a push for an offline browser, in
    /// seconds (`TTL`); at most four weeks. A publish's own
    /// `time_to_live` wins.
    #[serde(
        default = "default_ttl_secs",
        deserialize_with = "crate::config::lenient::value"
    )]
    pub ttl_secs: u64,
    /// Pushes in flight to one push service (origin) at most; more wait.
    #[serde(
        default = "default_max_concurrent_per_origin",
        deserialize_with = "crate::config::lenient::value"
    )]
    pub max_concurrent_per_origin: usize,
    /// Timeout of one request, in seconds.
    #[serde(
        default = "default_timeout_secs",
        deserialize_with = "crate::config::lenient::value"
    )]
    pub timeout_secs: u64,
    /// A PEM file of extra CA certificates to trust besides the system's
    /// (a test push service, a TLS-intercepting proxy).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept and push to endpoints on loopback, private and link-local
    /// addresses and `localhost` (tests; a distributor on the LAN). Off:
    /// such subscriptions are refused at registration.
    #[serde(default, deserialize_with = "crate::config::lenient::value")]
    pub allow_local_endpoints: bool,
}

impl std::fmt::Debug for WebPushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of logs.
        f.debug_struct("WebPushConfig")
            .field(
                "vapid_private_key",
                &self.vapid_private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("vapid_private_key_file", &self.vapid_private_key_file)
            .field("vapid_subject", &self.vapid_subject)
            .field("ttl_secs", &self.ttl_secs)
            .field("max_concurrent_per_origin", &self.max_concurrent_per_origin)
            .field("timeout_secs", &self.timeout_secs)
            .field("ca_file", &self.ca_file)
            .field("allow_local_endpoints", &self.allow_local_endpoints)
            .finish()
    }
}

fn default_ttl_secs() -> u64 {
    86_400
}
fn default_max_concurrent_per_origin() -> usize {
    100
}
fn default_timeout_secs() -> u64 {
    10
}

/// Why a Web Push backend could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WebPushError {
    /// A setting out of range or missing.
    #[error("{0}")]
    Config(String),
    /// The VAPID key or subject.
    #[error(transparent)]
    Vapid(#[from] VapidError),
    /// TLS or HTTP client set-up.
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// The Web Push backend of one app. Cheap to clone; clones share the
/// connections, the VAPID tokens and the per-origin limits.
#[derive(Clone, Debug)]
pub struct WebPushBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    vapid: vapid::Vapid,
    ttl_secs: u64,
    allow_local: bool,
    origins: OriginLimits,
    clock: Arc<dyn Clock>,
}

impl WebPushBackend {
    /// Builds the backend of app `app`: loads the VAPID key, sets up TLS
    /// and the HTTP client.
    pub fn new(app: &str, config: &WebPushConfig) -> Result<Self, WebPushError> {
        Self::with_clock(app, config, Arc::new(SystemClock))
    }

    /// [`WebPushBackend::new`] with a clock of the caller's (tests move it
    /// to age the VAPID tokens).
    pub fn with_clock(
        app: &str,
        config: &WebPushConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, WebPushError> {
        let bad = |msg: String| WebPushError::Config(msg);
        if config.ttl_secs > MAX_TTL_SECS {
            return Err(bad(format!(
                "ttl_secs must be at most {MAX_TTL_SECS} (4 weeks)"
            )));
        }
        if !(1..=MAX_CONCURRENT_PER_ORIGIN).contains(&config.max_concurrent_per_origin) {
            return Err(bad(format!(
                "max_concurrent_per_origin must be 1 to {MAX_CONCURRENT_PER_ORIGIN}"
            )));
        }
        if config.timeout_secs == 0 {
            return Err(bad("timeout_secs must be at least 1".into()));
        }
        let key = match (&config.vapid_private_key, &config.vapid_private_key_file) {
            (Some(text), None) => VapidKey::from_base64(text)?,
            (None, Some(path)) => VapidKey::from_file(path)?,
            _ => {
                return Err(bad(
                    "exactly one of vapid_private_key and vapid_private_key_file is needed \
                     (`nudge vapid generate` makes a key)"
                        .into(),
                ));
            }
        };
        let vapid = vapid::Vapid::new(key, &config.vapid_subject, clock.clone())?;
        let mut tls = http::tls_config(config.ca_file.as_deref(), None)?;
        // Push services differ: HTTP/2 where offered, HTTP/1.1 otherwise.
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let timeout = Duration::from_secs(config.timeout_secs);
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .user_agent(concat!("nudge/", env!("CARGO_PKG_VERSION")))
            // A push must reach the subscription's own endpoint; a redirect
            // is an answer, not a detour (and a POST would become a GET).
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(config.max_concurrent_per_origin)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .build()
            .map_err(SetupError::from)?;
        tracing::debug!(
            app,
            public_key = vapid.key().public_key_base64(),
            "Web Push backend ready"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                vapid,
                ttl_secs: config.ttl_secs,
                allow_local: config.allow_local_endpoints,
                origins: OriginLimits::new(config.max_concurrent_per_origin),
                clock,
            }),
        })
    }

    /// The VAPID public key (uncompressed point, unpadded base64url): the
    /// `applicationServerKey` web clients must subscribe with.
    pub fn vapid_public_key(&self) -> &str {
        self.inner.vapid.key().public_key_base64()
    }

    /// Checks a token as a registration would: a valid subscription, and
    /// not a local endpoint unless allowed.
    pub fn check_subscription(&self, token: &str) -> Result<Subscription, SubscriptionError> {
        let subscription = Subscription::parse(token)?;
        if !self.inner.allow_local && is_local(&subscription.endpoint) {
            return Err(SubscriptionError::Local);
        }
        Ok(subscription)
    }

    /// Sends one push and reports what the push service made of it.
    pub async fn push(&self, device: &Device, notification: &Notification) -> Outcome {
        self.inner.push(device, notification).await
    }
}

impl Inner {
    async fn push(&self, device: &Device, notification: &Notification) -> Outcome {
        let subscription = match Subscription::parse(&device.token) {
            Ok(s) => s,
            // Tokens are checked at registration; one that does not parse
            // can never be pushed to.
            Err(e) => {
                return Outcome::InvalidToken {
                    reason: e.to_string(),
                };
            }
        };
        if !self.allow_local && is_local(&subscription.endpoint) {
            // Registered while allowed; the operator's setting changed, so
            // the registration is not to blame.
            return Outcome::Rejected {
                reason: SubscriptionError::Local.to_string(),
            };
        }
        let plaintext = match payload::build(notification) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Rejected {
                    reason: e.to_string(),
                };
            }
        };
        let auth = web_push_native::Auth::from(subscription.auth);
        let body = match web_push_native::encrypt(plaintext, &subscription.p256dh, &auth) {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Rejected {
                    reason: format!("encryption failed: {e}"),
                };
            }
        };
        let origin = subscription.origin();
        let authorization = match self.vapid.header(&origin) {
            Ok(h) => h,
            Err(e) => {
                return Outcome::Rejected {
                    reason: e.to_string(),
                };
            }
        };
        let ttl = device
            .options
            .ttl_secs
            .unwrap_or(self.ttl_secs)
            .min(MAX_TTL_SECS);
        let high = device
            .options
            .high_priority
            .unwrap_or_else(|| notification.is_important());
        let urgency = HeaderValue::from_static(if high { "high" } else { "normal" });
        let topic = topic(device);
        let request = self
            .client
            .post(subscription.endpoint.clone())
            .header(AUTHORIZATION, authorization)
            .header(CONTENT_ENCODING, HeaderValue::from_static("aes128gcm"))
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )
            .header(TTL, HeaderValue::from(ttl))
            .header(URGENCY, urgency)
            .header(TOPIC, topic)
            .body(body);
        let semaphore = self.origins.semaphore(&origin);
        // The semaphore is never closed; the error arm is for form's sake.
        let Ok(_permit) = semaphore.acquire_owned().await else {
            return Outcome::Transient {
                reason: "per-origin limit closed".into(),
                retry_after: None,
            };
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Transient {
                    reason: http::describe_transport_error(&e),
                    retry_after: None,
                };
            }
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Outcome::Delivered;
        }
        let retry_after = http::retry_after(response.headers(), self.clock.now());
        let answer = http::body_capped(response, 4 * 1024).await;
        response::classify(status, retry_after, &answer)
    }
}

/// The `Topic` of a push (RFC 8030: at most 32 characters of the base64url
/// alphabet), per registration so that a burst to one offline browser
/// collapses into the latest push: the device's collapse id when it is a
/// valid topic, else a hash of it (or of the token).
pub fn topic(device: &Device) -> HeaderValue {
    let source = device.collapse_id.as_deref().unwrap_or(&device.token);
    let valid = !source.is_empty()
        && source.len() <= MAX_TOPIC_LEN
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid
        && device.collapse_id.is_some()
        && let Ok(v) = HeaderValue::from_str(source)
    {
        return v;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, source.as_bytes());
    // 24 bytes are 32 base64url characters.
    let text = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..24]);
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("nudge"))
}

/// Whether an endpoint is `localhost` or an IP literal in a loopback,
/// private, link-local or unspecified range: not a public push service.
pub fn is_local(endpoint: &reqwest::Url) -> bool {
    let Some(host) = endpoint.host_str() else {
        return true;
    };
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match subscription::host_ip(host) {
        Some(IpAddr::V4(v4)) => is_local_v4(v4),
        Some(IpAddr::V6(v6)) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || v6.to_ipv4_mapped().is_some_and(is_local_v4)
        }
        None => false,
    }
}

fn is_local_v4(v4: std::net::Ipv4Addr) -> bool {
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        // 100.64.0.0/10, carrier-grade NAT.
        || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
}

/// A concurrency limit per origin, for as many origins as subscriptions
/// name. Entries no push holds are dropped once [`MAX_ORIGINS`] are
/// remembered.
#[derive(Debug)]
struct OriginLimits {
    per_origin: usize,
    map: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl OriginLimits {
    fn new(per_origin: usize) -> Self {
        Self {
            per_origin,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The semaphore of `origin`, made on first use.
    fn semaphore(&self, origin: &str) -> Arc<Semaphore> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(origin) {
            return s.clone();
        }
        if map.len() >= MAX_ORIGINS {
            // Only the map holds an idle origin's semaphore.
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        let s = Arc::new(Semaphore::new(self.per_origin));
        // Still full of busy origins: this one goes unremembered (and so
        // unbounded) rather than let the map grow.
        if map.len() < MAX_ORIGINS {
            map.insert(origin.to_owned(), s.clone());
        }
        s
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl PushBackend for WebPushBackend {
    fn provider(&self) -> &str {
        PROVIDER
    }

    fn validate_token(&self, token: &str) -> Result<(), InvalidTokenFormat> {
        self.check_subscription(token)
            .map(|_| ())
            .map_err(|e| InvalidTokenFormat(e.to_string()))
    }

    fn application_server_key(&self) -> Option<&str> {
        Some(self.vapid_public_key())
    }

    fn send<'a>(
        &'a self,
        device: &'a Device,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(self.push(device, notification))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subscription::tests::{AUTH, P256DH};

    fn config(extra: &str) -> WebPushConfig {
        let (private, _) = generate_vapid_key().unwrap();
        toml::from_str(&format!(
            "vapid_private_key = {private:?}\nvapid_subject = \"mailto:ops@push.example\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn minimal_config_and_defaults() {
        let c = config("");
        assert_eq!(c.ttl_secs, 86_400);
        assert_eq!(c.max_concurrent_per_origin, 100);
        assert_eq!(c.timeout_secs, 10);
        assert!(!c.allow_local_endpoints);
        assert!(c.ca_file.is_none() && c.vapid_private_key_file.is_none());
        let shown = format!("{c:?}");
        assert!(
            shown.contains("<redacted>")
                && !shown.contains(c.vapid_private_key.as_deref().unwrap()),
            "{shown}"
        );
        let text = config("ttl_secs = \"60\"\nmax_concurrent_per_origin = \"5\"");
        assert_eq!((text.ttl_secs, text.max_concurrent_per_origin), (60, 5));
        assert!(
            toml::from_str::<WebPushConfig>("vapid_subject = \"mailto:a@b\"\nendpoint = \"x\"")
                .is_err()
        );
        assert!(toml::from_str::<WebPushConfig>("vapid_private_key = \"x\"").is_err());
    }

    #[tokio::test]
    async fn build_refuses_bad_configs() {
        assert!(WebPushBackend::new("a", &config("")).is_ok());
        for (extra, needle) in [
            ("ttl_secs = 2419201", "ttl_secs"),
            ("max_concurrent_per_origin = 0", "max_concurrent_per_origin"),
            ("timeout_secs = 0", "timeout_secs"),
            (
                "vapid_private_key_file = \"/nonexistent/vapid.pem\"",
                "exactly one",
            ),
        ] {
            let err = WebPushBackend::new("a", &config(extra))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
        let mut c = config("");
        c.vapid_private_key = None;
        assert!(
            WebPushBackend::new("a", &c)
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
        c.vapid_private_key_file = Some("/nonexistent/vapid.pem".into());
        assert!(
            WebPushBackend::new("a", &c)
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/vapid.pem")
        );
        let mut c = config("");
        c.vapid_subject = "ops@push.example".into();
        assert!(matches!(
            WebPushBackend::new("a", &c),
            Err(WebPushError::Vapid(VapidError::Subject(_)))
        ));
    }

    #[tokio::test]
    async fn local_endpoints_only_when_allowed() {
        let strict = WebPushBackend::new("a", &config("")).unwrap();
        let lax = WebPushBackend::new("a", &config("allow_local_endpoints = true")).unwrap();
        for endpoint in [
            "http://127.0.0.1:8080/p",
            "https://localhost/p",
            "https://10.1.2.3/p",
            "https://192.168.0.10/p",
            "https://172.16.0.1/p",
            "https://169.254.169.254/latest",
            "https://100.64.0.1/p",
            "https://[::1]/p",
            "https://[fd00::1]/p",
            "https://[fe80::1]/p",
            "https://[::ffff:127.0.0.1]/p",
            "https://0.0.0.0/p",
        ] {
            let token = format!("{endpoint}#p256dh={P256DH}&auth={AUTH}");
            assert!(strict.validate_token(&token).is_err(), "{endpoint}");
            assert!(lax.validate_token(&token).is_ok(), "{endpoint}");
        }
        for endpoint in [
            "https://push.example/p",
            "https://8.8.8.8/p",
            "https://[2001:db8::1]/p",
        ] {
            let token = format!("{endpoint}#p256dh={P256DH}&auth={AUTH}");
            assert!(strict.validate_token(&token).is_ok(), "{endpoint}");
        }
        assert!(strict.validate_token("https://push.example/p").is_err());
        assert_eq!(strict.provider(), "webpush");
    }

    #[test]
    fn topics_are_short_url_safe_and_per_registration() {
        let device = |token: &str, collapse: Option<&str>| Device {
            token: token.into(),
            collapse_id: collapse.map(str::to_owned),
            ..Device::default()
        };
        let a = topic(&device("https://push.example/a#k", None));
        let b = topic(&device("https://push.example/b#k", None));
        assert_ne!(a, b);
        assert_eq!(a, topic(&device("https://push.example/a#k", None)));
        for t in [
            &a,
            &b,
            &topic(&device("x", Some("room@muc.example/with spaces"))),
        ] {
            let s = t.to_str().unwrap();
            assert_eq!(s.len(), 32);
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            );
        }
        assert_eq!(topic(&device("x", Some("chat-1_a"))), "chat-1_a");
        assert_ne!(
            topic(&device("x", Some(&"a".repeat(33)))),
            "a".repeat(33).as_str()
        );
    }

    #[test]
    fn origin_limits_are_shared_and_bounded() {
        let limits = OriginLimits::new(2);
        let a = limits.semaphore("https://a.example");
        assert!(Arc::ptr_eq(&a, &limits.semaphore("https://a.example")));
        assert_eq!(a.available_permits(), 2);
        for i in 0..MAX_ORIGINS + 5 {
            limits.semaphore(&format!("https://h{i}.example"));
        }
        assert!(limits.len() <= MAX_ORIGINS);
        // A held origin survives the eviction of idle ones.
        assert!(Arc::ptr_eq(&a, &limits.semaphore("https://a.example")));
    }
}
