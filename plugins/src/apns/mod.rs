//! The Apple Push Notification service backend.
//!
//! One [`ApnsBackend`] per configured app: its topic (bundle id), its
//! credentials (a .p8 signing key or a TLS client certificate), its
//! endpoint. It keeps one long-lived HTTP/2 connection to that endpoint (or
//! `connections` of them) and sends every push as a stream on it, with the
//! provider token ([`jwt`]) reused for up to an hour. `a2` is not used: its
//! endpoint is hard-coded and its root store fixed, so it could be pointed
//! at neither a mock nor a proxy.
//!
//! - [`jwt`]: the ES256 provider token and its cache.
//! - [`payload`]: alert, background or VoIP payload for a notification, in
//!   the shape the app's client expects ([`ClientKind`]), to the normal or
//!   the VoIP token.
//!
//! One app serves both of Apple's environments: a device whose
//! registration names one ([`Device::environment`]) is pushed at
//! `sandbox_endpoint` or `production_endpoint`, any other at `endpoint`.
//! reqwest keeps one warm HTTP/2 connection per host in each client, so the
//! `connections` clients serve both hosts.
//! - `response`: what APNs' answer means for the registration.

pub mod jwt;
pub mod payload;
pub(crate) mod response;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use serde::Deserialize;

use crate::clock::{Clock, SystemClock};
use crate::http::{self, ClientIdentity, Http2Clients, SetupError};
use crate::{
    BoxFuture, Device, Environment, InvalidTokenFormat, Notification, Outcome, PushBackend,
    check_token_chars,
};
use jwt::{JwtError, ProviderToken, SigningKey};
pub use payload::{ClientKind, UnknownClientKind};
use payload::{PayloadSettings, PushType, Recipient};
use response::Verdict;

const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");

/// `apns-priority` (APNs knows 10, 5 and 1).
fn priority_value(priority: u8) -> HeaderValue {
    match priority {
        10 => HeaderValue::from_static("10"),
        5 => HeaderValue::from_static("5"),
        other => HeaderValue::from(u16::from(other)),
    }
}

/// APNs production endpoint.
pub const PRODUCTION_URL: &str = "https://api.push.apple.com";
/// APNs sandbox (development builds) endpoint.
pub const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";

/// One APNs app, as read from its `[apps.NAME]` table (`provider = "apns"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The app's bundle id, sent as `apns-topic` (with `.voip` appended for
    /// VoIP pushes).
    pub topic: String,
    /// `"production"` (default), `"sandbox"`, or a base URL (a mock, a
    /// proxy): where pushes go for devices whose registration names no
    /// environment.
    #[serde(default)]
    pub endpoint: ApnsEndpoint,
    /// Where pushes go for devices registered as sandbox (development
    /// builds run from Xcode): Apple's sandbox by default, or a base URL.
    #[serde(default = "default_sandbox_endpoint")]
    pub sandbox_endpoint: ApnsEndpoint,
    /// Where pushes go for devices registered as production (store
    /// builds): Apple's production by default, or a base URL.
    #[serde(default = "default_production_endpoint")]
    pub production_endpoint: ApnsEndpoint,
    /// The payload shape the app's notification service extension reads:
    /// `"generic"` (default), `"monal"` or `"siskin"`.
    #[serde(default)]
    pub payload: ClientKind,
    /// Token-based authentication (a .p8 key). Exactly one of `token` and
    /// `certificate` must be given.
    #[serde(default)]
    pub token: Option<ApnsTokenAuth>,
    /// Certificate-based authentication (PEM certificate and key).
    #[serde(default)]
    pub certificate: Option<ApnsCertificateAuth>,
    /// Send every push as a PushKit VoIP push (topic `<topic>.voip`).
    #[serde(default, deserialize_with = "crate::config::lenient::value")]
    pub voip: bool,
    /// Forward `last-message-sender` (alert title and `sender` key).
    #[serde(default, deserialize_with = "crate::config::lenient::value")]
    pub include_sender: bool,
    /// Forward `last-message-body` as the alert body.
    #[serde(default, deserialize_with = "crate::config::lenient::value")]
    pub include_body: bool,
    /// Alert text when the body is not forwarded.
    #[serde(default = "default_alert_body")]
    pub alert_body: String,
    /// `aps.sound` of alerts; `""` for silent alerts.
    #[serde(default = "default_sound")]
    pub sound: String,
    /// How long APNs keeps a push for an offline device, in seconds; sent as
    /// the absolute time `apns-expiration` = now + `ttl_secs`. Absent: the
    /// header is left out and APNs applies its own storage policy.
    #[serde(default, deserialize_with = "crate::config::lenient::option")]
    pub ttl_secs: Option<u64>,
    /// `apns-collapse-id` (at most 64 bytes): newer pushes replace older
    /// undelivered ones. Used for devices that bring none of their own
    /// ([`Device::collapse_id`](crate::Device::collapse_id) wins).
    #[serde(default)]
    pub collapse_id: Option<String>,
    /// HTTP/2 connections to open to the endpoint (1 to 16).
    #[serde(
        default = "default_connections",
        deserialize_with = "crate::config::lenient::value"
    )]
    pub connections: usize,
    /// Timeout of one request, in seconds.
    #[serde(
        default = "default_timeout_secs",
        deserialize_with = "crate::config::lenient::value"
    )]
    pub timeout_secs: u64,
    /// A PEM file of extra CA certificates to trust besides the system's
    /// (a test server, a TLS-intercepting proxy).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Token-based APNs authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsTokenAuth {
    /// The .p8 signing key downloaded from Apple (PKCS#8 PEM).
    pub key_path: PathBuf,
    /// Its 10-character key id.
    pub key_id: String,
    /// The 10-character team id.
    pub team_id: String,
    /// Age in seconds at which the provider token is replaced (1200 to
    /// 3600; default 3000).
    #[serde(
        default = "default_refresh_secs",
        deserialize_with = "crate::config::lenient::value"
    )]
    pub refresh_secs: u64,
}

/// Certificate-based APNs authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsCertificateAuth {
    /// PEM file with the certificate (and its chain).
    pub cert_path: PathBuf,
    /// PEM file with the private key; defaults to `cert_path`, since
    /// `openssl pkcs12 -nodes` writes both into one file.
    #[serde(default)]
    pub key_path: Option<PathBuf>,
}

/// Where pushes go.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(from = "String")]
pub enum ApnsEndpoint {
    #[default]
    Production,
    Sandbox,
    /// Any base URL; pushes go to `{url}/3/device/{token}`.
    Url(String),
}

impl From<String> for ApnsEndpoint {
    fn from(s: String) -> Self {
        match s.as_str() {
            "production" => ApnsEndpoint::Production,
            "sandbox" | "development" => ApnsEndpoint::Sandbox,
            _ => ApnsEndpoint::Url(s),
        }
    }
}

impl ApnsEndpoint {
    /// The base URL.
    pub fn url(&self) -> &str {
        match self {
            ApnsEndpoint::Production => PRODUCTION_URL,
            ApnsEndpoint::Sandbox => SANDBOX_URL,
            ApnsEndpoint::Url(url) => url,
        }
    }
}

fn default_sandbox_endpoint() -> ApnsEndpoint {
    ApnsEndpoint::Sandbox
}
fn default_production_endpoint() -> ApnsEndpoint {
    ApnsEndpoint::Production
}
fn default_alert_body() -> String {
    "New message".into()
}
fn default_sound() -> String {
    "default".into()
}
fn default_connections() -> usize {
    1
}
fn default_timeout_secs() -> u64 {
    10
}
fn default_refresh_secs() -> u64 {
    50 * 60
}

/// APNs' limit on `apns-collapse-id`, in bytes.
pub const MAX_COLLAPSE_ID: usize = 64;

/// The most connections one app may ask for: APNs serves ~1000 streams on
/// each, so a handful is plenty.
pub const MAX_CONNECTIONS: usize = 16;

/// Why an APNs backend could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ApnsError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

/// Checks an APNs device token: hexadecimal, an even number of digits,
/// 64 (today's 32-byte tokens) to 200 (Apple's stated 100-byte maximum).
pub fn validate_apns_token(token: &str) -> Result<(), InvalidTokenFormat> {
    check_token_chars(token)?;
    if !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(InvalidTokenFormat("APNs tokens are hexadecimal".into()));
    }
    if !token.len().is_multiple_of(2) || !(64..=200).contains(&token.len()) {
        return Err(InvalidTokenFormat(format!(
            "APNs tokens have 64 to 200 hex digits, an even number; got {}",
            token.len()
        )));
    }
    Ok(())
}

/// The APNs backend of one app. Cheap to clone; clones share the
/// connections and the provider token.
#[derive(Clone, Debug)]
pub struct ApnsBackend {
    inner: Arc<Inner>,
}

/// `{base}/3/device/` of each endpoint: the token is appended.
#[derive(Debug)]
struct DeviceUrls {
    /// `endpoint`: devices whose registration names no environment.
    configured: reqwest::Url,
    sandbox: reqwest::Url,
    production: reqwest::Url,
}

impl DeviceUrls {
    fn new(config: &ApnsConfig) -> Result<Self, SetupError> {
        let url = |endpoint: &ApnsEndpoint| {
            let base = http::base_url(endpoint.url())?;
            http::parse_url(&format!("{base}/3/device"))
        };
        Ok(Self {
            configured: url(&config.endpoint)?,
            sandbox: url(&config.sandbox_endpoint)?,
            production: url(&config.production_endpoint)?,
        })
    }

    /// The URL of a push to `token` of a device of `environment`: the
    /// parsed base with one more path segment, so that no push parses a
    /// URL (host names and all).
    fn of(&self, environment: Option<Environment>, token: &str) -> reqwest::Url {
        let mut url = match environment {
            None => self.configured.clone(),
            Some(Environment::Sandbox) => self.sandbox.clone(),
            Some(Environment::Production) => self.production.clone(),
        };
        // An http(s) URL always has path segments (`http::parse_url`).
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(token);
        }
        url
    }
}

/// How long APNs keeps a push for an offline device (`apns-expiration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiration {
    /// No header: APNs' own storage policy.
    ProvidersPolicy,
    /// `0`: one delivery attempt, nothing stored.
    Immediately,
    /// Now + this many seconds, as an absolute UNIX time.
    After(u64),
}

#[derive(Debug)]
struct Inner {
    app: String,
    device_urls: DeviceUrls,
    /// `apns-topic` of alert and background pushes: the bundle id.
    topic: HeaderValue,
    /// `apns-topic` of VoIP pushes: `<bundle id>.voip`.
    voip_topic: HeaderValue,
    collapse_id: Option<HeaderValue>,
    ttl: Option<u64>,
    payload: PayloadSettings,
    /// `None` with certificate authentication.
    provider_token: Option<ProviderToken>,
    http: Http2Clients,
    clock: Arc<dyn Clock>,
}

impl ApnsBackend {
    /// Builds the backend of app `app`: reads its key or certificate, sets
    /// up TLS. Connections open with the first push.
    pub fn new(app: &str, config: &ApnsConfig) -> Result<Self, ApnsError> {
        Self::with_clock(app, config, Arc::new(SystemClock))
    }

    /// [`ApnsBackend::new`] with a clock of the caller's (tests move it to
    /// age the provider token).
    pub fn with_clock(
        app: &str,
        config: &ApnsConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ApnsError> {
        let bad = |msg: String| ApnsError::Config(msg);
        if config.topic.is_empty() || !config.topic.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(format!("invalid topic {:?}", config.topic)));
        }
        let topic = HeaderValue::from_str(&config.topic).map_err(|e| bad(format!("topic: {e}")))?;
        let voip_topic = HeaderValue::from_str(&format!("{}.voip", config.topic))
            .map_err(|e| bad(format!("topic: {e}")))?;
        let collapse_id = match &config.collapse_id {
            Some(id) if id.is_empty() || id.len() > MAX_COLLAPSE_ID => {
                return Err(bad("collapse_id must have 1 to 64 bytes".into()));
            }
            Some(id) => {
                Some(HeaderValue::from_str(id).map_err(|e| bad(format!("collapse_id: {e}")))?)
            }
            None => None,
        };
        if !(1..=MAX_CONNECTIONS).contains(&config.connections) {
            return Err(bad(format!("connections must be 1 to {MAX_CONNECTIONS}")));
        }
        if config.timeout_secs == 0 {
            return Err(bad("timeout_secs must be at least 1".into()));
        }

        let (provider_token, identity) = match (&config.token, &config.certificate) {
            (Some(token), None) => {
                let refresh = Duration::from_secs(token.refresh_secs);
                if !(jwt::MIN_REFRESH..=jwt::MAX_REFRESH).contains(&refresh) {
                    return Err(bad(format!(
                        "token.refresh_secs must be {} to {} (APNs refuses tokens older \
                         than an hour and replacements more often than every 20 minutes)",
                        jwt::MIN_REFRESH.as_secs(),
                        jwt::MAX_REFRESH.as_secs()
                    )));
                }
                if token.key_id.is_empty() || token.team_id.is_empty() {
                    return Err(bad("token.key_id and token.team_id are required".into()));
                }
                let pem = http::read_file(&token.key_path)?;
                let key = SigningKey::from_pem(&pem, &token.key_id, &token.team_id)?;
                // Sign once now, so that a key that cannot sign fails at
                // start-up rather than on the first push.
                key.sign(clock.unix_secs())?;
                (Some(ProviderToken::new(key, refresh, clock.clone())), None)
            }
            (None, Some(cert)) => {
                let key_path = cert.key_path.as_ref().unwrap_or(&cert.cert_path);
                let identity = ClientIdentity::from_pem_files(&cert.cert_path, key_path)?;
                (None, Some(identity))
            }
            _ => {
                return Err(bad(
                    "exactly one of [token] and [certificate] must be configured".into(),
                ));
            }
        };

        let device_urls = DeviceUrls::new(config)?;
        let tls = http::tls_config(config.ca_file.as_deref(), identity)?;
        let http = Http2Clients::new(
            tls,
            config.connections,
            Duration::from_secs(config.timeout_secs),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                app: app.to_owned(),
                device_urls,
                topic,
                voip_topic,
                collapse_id,
                ttl: config.ttl_secs,
                payload: PayloadSettings {
                    kind: config.payload,
                    topic: config.topic.clone(),
                    voip: config.voip,
                    include_sender: config.include_sender,
                    include_body: config.include_body,
                    alert_body: config.alert_body.clone(),
                    sound: config.sound.clone(),
                },
                provider_token,
                http,
                clock,
            }),
        })
    }

    /// Sends one push and reports what APNs made of it.
    pub async fn push(&self, device: &Device, notification: &Notification) -> Outcome {
        // The dispatcher logs every outcome with the registration's context.
        self.inner.push(device, notification).await
    }
}

impl Inner {
    async fn push(&self, device: &Device, notification: &Notification) -> Outcome {
        let payload = match payload::build(&self.payload, device, notification) {
            Ok(payload) => payload,
            Err(e) => {
                return Outcome::Rejected {
                    reason: e.to_string(),
                };
            }
        };
        if let Some(size) = payload.ciphertext_dropped {
            tracing::warn!(
                app = %self.app,
                size,
                limit = payload.push_type.limit(),
                "APNs: the encrypted payload does not fit; sending the plain wake-up without it"
            );
        }
        let (token, which) = match payload.recipient {
            Recipient::Token => (device.token.as_str(), ""),
            Recipient::VoipToken => (
                device.voip_token.as_deref().unwrap_or_default(),
                "VoIP token: ",
            ),
        };
        // The token goes into the URL path: anything but hex digits can
        // never be a valid token (APNs would answer BadDeviceToken), and
        // must not reach the path.
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Outcome::InvalidToken {
                reason: format!("{which}not a hexadecimal APNs token"),
            };
        }
        let topic = match payload.push_type {
            PushType::Voip => &self.voip_topic,
            PushType::Alert | PushType::Background => &self.topic,
        };
        let expiration = match (payload.recipient, device.options.ttl_secs.or(self.ttl)) {
            // A call is worth ringing now or never: APNs tries once and
            // stores nothing (`apns-expiration: 0`), so an offline phone
            // does not ring for a call that ended long ago.
            (Recipient::VoipToken, _) => Expiration::Immediately,
            // A publish's own time to live wins over the app's.
            (Recipient::Token, Some(ttl)) => Expiration::After(ttl),
            (Recipient::Token, None) => Expiration::ProvidersPolicy,
        };
        let url = self.device_urls.of(device.environment, token);
        let outcome = self.send(url, topic, expiration, payload, device).await;
        match outcome {
            Outcome::InvalidToken { reason } if !which.is_empty() => Outcome::InvalidToken {
                reason: format!("{which}{reason}"),
            },
            other => other,
        }
    }

    /// Sends one built push to `url`, replacing an expired provider token
    /// once.
    async fn send(
        &self,
        url: reqwest::Url,
        topic: &HeaderValue,
        expiration: Expiration,
        payload: payload::ApnsPayload,
        device: &Device,
    ) -> Outcome {
        let body = Bytes::from(payload.body);
        let mut refreshed = false;
        loop {
            let jwt = match self.provider_token.as_ref().map(ProviderToken::current) {
                None => None,
                Some(Ok(jwt)) => Some(jwt),
                Some(Err(e)) => {
                    return Outcome::Rejected {
                        reason: e.to_string(),
                    };
                }
            };
            // Names and values built once: no header is parsed per push.
            let mut request = self
                .http
                .next()
                .post(url.clone())
                .header(APNS_TOPIC, topic.clone())
                .header(APNS_PUSH_TYPE, payload.push_type.header_value())
                .header(APNS_PRIORITY, priority_value(payload.priority))
                .body(body.clone());
            if let Some(jwt) = &jwt {
                request = request.header(AUTHORIZATION, jwt.header.clone());
            }
            match expiration {
                Expiration::ProvidersPolicy => {}
                Expiration::Immediately => {
                    request = request.header(APNS_EXPIRATION, HeaderValue::from_static("0"))
                }
                Expiration::After(ttl) => {
                    // An absolute UNIX time, computed per push.
                    let at = self.clock.unix_secs().saturating_add(ttl);
                    request = request.header(APNS_EXPIRATION, HeaderValue::from(at));
                }
            }
            // The registration's own collapse id wins over the app's.
            let own_collapse_id = device
                .collapse_id
                .as_deref()
                .filter(|id| !id.is_empty() && id.len() <= MAX_COLLAPSE_ID)
                .and_then(|id| HeaderValue::from_str(id).ok());
            if let Some(id) = own_collapse_id.or_else(|| self.collapse_id.clone()) {
                request = request.header(APNS_COLLAPSE_ID, id);
            }

            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    // hyper drops a broken connection from its pool, so
                    // the next push reconnects.
                    return Outcome::Transient {
                        reason: http::describe_transport_error(&e),
                        retry_after: None,
                    };
                }
            };
            let status = response.status().as_u16();
            if status == 200 {
                return Outcome::Delivered;
            }
            let retry_after = http::retry_after(response.headers(), self.clock.now());
            let answer = http::body_capped(response, 4096).await;
            match response::classify(status, retry_after, &answer) {
                Verdict::Done(outcome) => return outcome,
                Verdict::RefreshProviderToken => match (&self.provider_token, jwt, refreshed) {
                    (Some(tokens), Some(jwt), false) => {
                        tracing::info!(app = %self.app, "APNs: provider token expired; signing a new one");
                        tokens.invalidate(&jwt.token);
                        refreshed = true;
                    }
                    _ => {
                        return Outcome::Rejected {
                            reason: "403 ExpiredProviderToken with a fresh provider token \
                                     (is the clock right?)"
                                .into(),
                        };
                    }
                },
            }
        }
    }
}

impl PushBackend for ApnsBackend {
    fn provider(&self) -> &str {
        "apns"
    }

    fn validate_token(&self, token: &str) -> Result<(), InvalidTokenFormat> {
        validate_apns_token(token)
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

    fn parse(toml_text: &str) -> Result<ApnsConfig, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn token_format() {
        let good = "a1".repeat(32);
        assert!(validate_apns_token(&good).is_ok());
        assert!(validate_apns_token(&good.to_uppercase()).is_ok());
        assert!(validate_apns_token(&"ab".repeat(100)).is_ok());
        assert!(validate_apns_token("").is_err());
        assert!(validate_apns_token(&"ab".repeat(31)).is_err(), "too short");
        assert!(validate_apns_token(&"ab".repeat(101)).is_err(), "too long");
        assert!(validate_apns_token(&format!("{good}a")).is_err(), "odd");
        assert!(validate_apns_token(&format!("{}zz", "ab".repeat(31))).is_err());
        assert!(validate_apns_token(&format!("{}/../x", "ab".repeat(32))).is_err());
    }

    #[test]
    fn minimal_config_and_defaults() {
        let c = parse(
            r#"
            topic = "im.example.app"
            token = { key_path = "/etc/nudge/AuthKey.p8", key_id = "ABC123DEFG", team_id = "TEAM123456" }
            "#,
        )
        .unwrap();
        assert_eq!(c.endpoint, ApnsEndpoint::Production);
        assert_eq!(c.endpoint.url(), PRODUCTION_URL);
        assert_eq!(c.token.as_ref().unwrap().refresh_secs, 3000);
        assert!(!c.voip && !c.include_body && !c.include_sender);
        assert_eq!(c.alert_body, "New message");
        assert_eq!(c.sound, "default");
        assert_eq!(c.connections, 1);
        assert_eq!(c.timeout_secs, 10);
        assert_eq!(c.ttl_secs, None);
        assert_eq!(c.payload, ClientKind::Generic);
        assert_eq!(c.sandbox_endpoint.url(), SANDBOX_URL);
        assert_eq!(c.production_endpoint.url(), PRODUCTION_URL);
    }

    #[test]
    fn payload_and_environment_endpoints() {
        let c = parse(
            "topic = \"a\"\npayload = \"siskin\"\n\
             sandbox_endpoint = \"https://127.0.0.1:9/sandbox\"\n\
             production_endpoint = \"https://127.0.0.1:9/production\"",
        )
        .unwrap();
        assert_eq!(c.payload, ClientKind::Siskin);
        assert_eq!(c.sandbox_endpoint.url(), "https://127.0.0.1:9/sandbox");
        assert_eq!(
            c.production_endpoint.url(),
            "https://127.0.0.1:9/production"
        );
        assert_eq!(c.endpoint, ApnsEndpoint::Production);
        let err = parse("topic = \"a\"\npayload = \"conversations\"").unwrap_err();
        assert!(err.to_string().contains("conversations"), "{err}");
    }

    #[test]
    fn endpoints_and_unknown_keys() {
        let c = parse("topic = \"a\"\nendpoint = \"sandbox\"").unwrap();
        assert_eq!(c.endpoint.url(), SANDBOX_URL);
        let c = parse("topic = \"a\"\nendpoint = \"https://127.0.0.1:9/\"").unwrap();
        assert_eq!(c.endpoint, ApnsEndpoint::Url("https://127.0.0.1:9/".into()));
        assert!(parse("topic = \"a\"\ntopics = \"b\"").is_err());
        assert!(parse("topic = \"a\"\n[token]\nkey_path = \"k\"\nkey_id = \"i\"\nteam_id = \"t\"\nkid = \"x\"").is_err());
    }

    #[test]
    fn build_refuses_bad_configs() {
        let dir = std::env::temp_dir().join(format!("nudge-apns-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.p8");
        std::fs::write(&key, jwt::tests::test_p8()).unwrap();
        let base = format!(
            "topic = \"im.example.app\"\n[token]\nkey_path = {:?}\nkey_id = \"K\"\nteam_id = \"T\"\n",
            key.display().to_string()
        );
        assert!(ApnsBackend::new("ok", &parse(&base).unwrap()).is_ok());
        for (extra_top, extra_token, why) in [
            ("", "refresh_secs = 600\n", "refresh too young"),
            ("", "refresh_secs = 7200\n", "refresh too old"),
            ("connections = 0\n", "", "no connection"),
            ("collapse_id = \"\"\n", "", "empty collapse id"),
            ("timeout_secs = 0\n", "", "zero timeout"),
            ("endpoint = \"ftp://x\"\n", "", "bad endpoint"),
            (
                "sandbox_endpoint = \"ftp://x\"\n",
                "",
                "bad sandbox endpoint",
            ),
            (
                "production_endpoint = \"x\"\n",
                "",
                "bad production endpoint",
            ),
        ] {
            let text = format!("{extra_top}{base}{extra_token}");
            let config = parse(&text).unwrap();
            assert!(ApnsBackend::new("bad", &config).is_err(), "{why}");
        }
        let neither = parse("topic = \"a\"").unwrap();
        assert!(ApnsBackend::new("bad", &neither).is_err());
        let both = parse(&format!(
            "{base}[certificate]\ncert_path = \"/nonexistent\"\n"
        ))
        .unwrap();
        assert!(ApnsBackend::new("bad", &both).is_err());
        let missing = parse(&base.replace("key.p8", "missing.p8")).unwrap();
        let err = ApnsBackend::new("bad", &missing).unwrap_err().to_string();
        assert!(err.contains("missing.p8"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
