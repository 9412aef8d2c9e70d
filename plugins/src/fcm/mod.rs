//! The Firebase Cloud Messaging (HTTP v1) backend.
//!
//! One [`FcmBackend`] per configured app (Firebase project): its service
//! account, its OAuth access token ([`auth`], via `gcp_auth`), one
//! long-lived HTTP/2 connection to the send endpoint. Not used: the `fcm`
//! crate (0.9 speaks the legacy API, which Google shut down) and
//! `fcm-rust` (not on crates.io).
//!
//! - [`auth`]: the access token and its refresh.
//! - [`message`]: the data message Conversations understands.
//! - `response`: what FCM's answer means for the registration.

pub mod auth;
pub mod message;
pub(crate) mod response;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::clock::{Clock, SystemClock};
use reqwest::header::{CONTENT_TYPE, HeaderValue};

use crate::http::{self, Http2Clients, SetupError};
use crate::{BoxFuture, Device, Notification, Outcome, PushBackend};
use auth::{AccessTokens, AuthError};
use message::MessageSettings;
use response::Verdict;

/// FCM's base URL; messages go to `{base}/v1/projects/{project}/messages:send`.
pub const DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";

/// One FCM app, as read from its `[apps.NAME]` table (`provider = "fcm"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The service account JSON downloaded from the Firebase console. Its
    /// `token_uri` is where access tokens are fetched.
    pub service_account_path: PathBuf,
    /// The Firebase project id; defaults to the JSON's `project_id`.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Base URL of the FCM API (a mock, a proxy).
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Forward `last-message-sender` as `data.last-message-sender`.
    #[serde(default, deserialize_with = "crate::config::lenient::value")]
    pub include_sender: bool,
    /// Forward `last-message-body` as `data.last-message-body`.
    #[serde(default, deserialize_with = "crate::config::lenient::value")]
    pub include_body: bool,
    /// `android.ttl` in seconds: how long FCM keeps a message for an
    /// offline device (FCM's default, 4 weeks, when absent).
    #[serde(default, deserialize_with = "crate::config::lenient::option")]
    pub ttl_secs: Option<u64>,
    /// `android.collapse_key`: newer messages replace older undelivered
    /// ones. Used for devices that bring none of their own
    /// ([`Device::collapse_id`](crate::Device::collapse_id) wins).
    #[serde(default)]
    pub collapse_key: Option<String>,
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
    /// A PEM file of extra CA certificates to trust besides the system's,
    /// for the FCM endpoint (the token endpoint is reached by `gcp_auth`
    /// with the system's roots, or over plain `http`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.into()
}
fn default_connections() -> usize {
    1
}
fn default_timeout_secs() -> u64 {
    10
}

/// The most connections one app may ask for.
pub const MAX_CONNECTIONS: usize = 16;

/// FCM's longest time to live: four weeks.
pub const MAX_TTL_SECS: u64 = 28 * 24 * 3600;

/// Why an FCM backend could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// The FCM backend of one app. Cheap to clone; clones share the connection
/// and the access token.
#[derive(Clone, Debug)]
pub struct FcmBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    app: String,
    send_url: reqwest::Url,
    settings: MessageSettings,
    tokens: AccessTokens,
    http: Http2Clients,
    clock: Arc<dyn Clock>,
}

impl FcmBackend {
    /// Builds the backend of app `app`: reads and checks the service
    /// account, sets up TLS. The first access token is fetched with the
    /// first push.
    pub fn new(app: &str, config: &FcmConfig) -> Result<Self, FcmError> {
        Self::with_clock(app, config, Arc::new(SystemClock))
    }

    /// [`FcmBackend::new`] with a clock of the caller's (tests move it to
    /// age the access token).
    pub fn with_clock(
        app: &str,
        config: &FcmConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, FcmError> {
        let bad = |msg: String| FcmError::Config(msg);
        if !(1..=MAX_CONNECTIONS).contains(&config.connections) {
            return Err(bad(format!("connections must be 1 to {MAX_CONNECTIONS}")));
        }
        if config.timeout_secs == 0 {
            return Err(bad("timeout_secs must be at least 1".into()));
        }
        if config.ttl_secs.is_some_and(|t| t > MAX_TTL_SECS) {
            return Err(bad(format!(
                "ttl_secs must be at most {MAX_TTL_SECS} (4 weeks)"
            )));
        }
        if config.collapse_key.as_deref() == Some("") {
            return Err(bad("collapse_key must not be empty".into()));
        }
        let json = http::read_file(&config.service_account_path)?;
        let json = String::from_utf8(json).map_err(|_| {
            bad(format!(
                "{}: not UTF-8 JSON",
                config.service_account_path.display()
            ))
        })?;
        let (tokens, json_project) = AccessTokens::new(json, clock.clone())
            .map_err(|e| bad(format!("{}: {e}", config.service_account_path.display())))?;
        let project = config
            .project_id
            .clone()
            .or(json_project)
            .ok_or_else(|| bad("no project_id in the config or the service account".into()))?;
        // The project id goes into the URL path.
        if project.is_empty()
            || !project
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':')
        {
            return Err(bad(format!("invalid project id {project:?}")));
        }
        let base = http::base_url(&config.endpoint)?;
        let tls = http::tls_config(config.ca_file.as_deref(), None)?;
        let http = Http2Clients::new(
            tls,
            config.connections,
            Duration::from_secs(config.timeout_secs),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                app: app.to_owned(),
                send_url: http::parse_url(&format!("{base}/v1/projects/{project}/messages:send"))?,
                settings: MessageSettings {
                    include_sender: config.include_sender,
                    include_body: config.include_body,
                    ttl_secs: config.ttl_secs,
                    collapse_key: config.collapse_key.clone(),
                },
                tokens,
                http,
                clock,
            }),
        })
    }

    /// Sends one push and reports what FCM made of it.
    pub async fn push(&self, device: &Device, notification: &Notification) -> Outcome {
        // The dispatcher logs every outcome with the registration's context.
        self.inner.push(device, notification).await
    }
}

impl Inner {
    async fn push(&self, device: &Device, notification: &Notification) -> Outcome {
        let body = match message::build(&self.settings, device, notification) {
            Ok(message) => {
                if let Some(size) = message.ciphertext_dropped {
                    tracing::warn!(
                        app = %self.app,
                        size,
                        limit = message::MAX_DATA,
                        "FCM: the encrypted payload does not fit; sending the plain wake-up without it"
                    );
                }
                Bytes::from(message.body)
            }
            Err(e) => {
                return Outcome::Rejected {
                    reason: e.to_string(),
                };
            }
        };
        let mut refreshed = false;
        loop {
            let token = match self.tokens.get().await {
                Ok(token) => token,
                Err(e) => return auth_failure(e),
            };
            let request = self
                .http
                .next()
                // Parsed once at set-up, as the content type is.
                .post(self.send_url.clone())
                .bearer_auth(&token)
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=UTF-8"),
                )
                .body(body.clone());
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
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
            let answer = http::body_capped(response, 16 * 1024).await;
            match response::classify(status, retry_after, &answer) {
                Verdict::Done(outcome) => return outcome,
                Verdict::RefreshAccessToken if !refreshed => {
                    tracing::info!(app = %self.app, "FCM: access token refused; fetching another");
                    refreshed = true;
                    if let Err(e) = self.tokens.replace(&token).await {
                        return auth_failure(e);
                    }
                }
                Verdict::RefreshAccessToken => {
                    return Outcome::Rejected {
                        reason: format!(
                            "401 with a fresh access token: {}",
                            http::excerpt(&answer)
                        ),
                    };
                }
            }
        }
    }
}

/// No access token: the token server may be down (transient), or the
/// service account is broken; either way the user's registration is not
/// to blame, and a later attempt may succeed once the operator fixes it.
fn auth_failure(e: AuthError) -> Outcome {
    Outcome::Transient {
        reason: e.to_string(),
        retry_after: None,
    }
}

impl PushBackend for FcmBackend {
    fn provider(&self) -> &str {
        "fcm"
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

    #[test]
    fn minimal_config_and_defaults() {
        let c: FcmConfig =
            toml::from_str(r#"service_account_path = "/etc/nudge/sa.json""#).unwrap();
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(c.project_id, None);
        assert!(!c.include_body && !c.include_sender);
        assert_eq!(c.connections, 1);
        assert_eq!(c.timeout_secs, 10);
        assert!(
            toml::from_str::<FcmConfig>("service_account_path = \"x\"\napi_key = \"y\"").is_err()
        );
    }

    #[test]
    fn build_refuses_bad_configs() {
        let missing: FcmConfig =
            toml::from_str(r#"service_account_path = "/nonexistent/sa.json""#).unwrap();
        let err = FcmBackend::new("a", &missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/sa.json"), "{err}");

        let dir = std::env::temp_dir().join(format!("nudge-fcm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sa = dir.join("sa.json");
        std::fs::write(&sa, r#"{"type": "service_account"}"#).unwrap();
        let config: FcmConfig = toml::from_str(&format!(
            "service_account_path = {:?}",
            sa.display().to_string()
        ))
        .unwrap();
        let err = FcmBackend::new("a", &config).unwrap_err().to_string();
        assert!(err.contains("sa.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
