//! OAuth 2 access tokens for FCM, from a service account, via `gcp_auth`.
//!
//! `gcp_auth` does the grant itself: it reads the service-account JSON,
//! signs the RS256 JWT assertion, posts it to the JSON's `token_uri` (so
//! tests point that at a mock; it speaks plain `http` or `https` with the
//! system's roots) and parses the answer. The cache is ours, for three
//! reasons that `gcp_auth`'s own cache cannot serve:
//!
//! - a `401` from FCM means the token was revoked before its expiry, and
//!   `gcp_auth` offers no way to drop a cached token;
//! - its cache is filled under a lock it takes only after checking, so a
//!   burst of pushes on a cold cache fetches one token per push;
//! - expiry must follow the backend's [`Clock`] so that tests can age it.
//!
//! So every refresh builds a fresh `CustomServiceAccount` (parsing a few KiB
//! of JSON, once an hour) and asks it for one token; a mutex makes sure one
//! refresh runs at a time and every waiting push reuses its result.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use gcp_auth::{CustomServiceAccount, TokenProvider};

use crate::clock::Clock;

/// The OAuth scope that allows sending FCM messages.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// How long before its expiry a token is replaced (at most; half its
/// lifetime for short-lived tokens).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// After a failed fetch, pushes fail fast (or use the old token) for this
/// long instead of each waiting on the token server again.
const FAILURE_BACKOFF: Duration = Duration::from_secs(5);

/// Why no access token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("service account: {0}")]
    Credentials(String),
    #[error("OAuth token request failed: {0}")]
    Fetch(Arc<str>),
}

#[derive(Debug, Clone)]
struct Cached {
    value: Arc<str>,
    /// From here on a new token is fetched (the old one still works).
    refresh_at: SystemTime,
    /// From here on the token is not sent at all.
    expires_at: SystemTime,
}

/// The access token of one app, shared by all its pushes.
#[derive(Debug)]
pub(crate) struct AccessTokens {
    service_account_json: String,
    clock: Arc<dyn Clock>,
    cached: RwLock<Option<Cached>>,
    /// Held while fetching; the last failed fetch, for the back-off.
    refreshing: tokio::sync::Mutex<Option<(SystemTime, AuthError)>>,
}

impl AccessTokens {
    /// Checks the service account JSON (fields, key) now, so that a broken
    /// file fails at start-up; returns the tokens and the JSON's project id.
    pub(crate) fn new(
        service_account_json: String,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, Option<String>), AuthError> {
        let account = CustomServiceAccount::from_json(&service_account_json)
            .map_err(|e| AuthError::Credentials(e.to_string()))?;
        let project = account.project_id().map(str::to_owned);
        let tokens = Self {
            service_account_json,
            clock,
            cached: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(None),
        };
        Ok((tokens, project))
    }

    /// The token to send now.
    pub(crate) async fn get(&self) -> Result<Arc<str>, AuthError> {
        if let Some(token) = self.current(|c, now| now < c.refresh_at) {
            return Ok(token);
        }
        let mut last_failure = self.refreshing.lock().await;
        if let Some(token) = self.current(|c, now| now < c.refresh_at) {
            return Ok(token);
        }
        self.refresh(&mut last_failure).await
    }

    /// FCM refused `rejected` (401): fetch another, unless another push
    /// already did.
    pub(crate) async fn replace(&self, rejected: &str) -> Result<Arc<str>, AuthError> {
        let mut last_failure = self.refreshing.lock().await;
        if let Some(token) = self.current(|c, now| &*c.value != rejected && now < c.refresh_at) {
            return Ok(token);
        }
        // The rejected token is of no use, even if not yet expired.
        {
            let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
            if cached.as_ref().is_some_and(|c| &*c.value == rejected) {
                *cached = None;
            }
        }
        self.refresh(&mut last_failure).await
    }

    /// Fetches a token, holding the refresh lock; on failure falls back to
    /// the current token while it has not expired.
    async fn refresh(
        &self,
        last_failure: &mut Option<(SystemTime, AuthError)>,
    ) -> Result<Arc<str>, AuthError> {
        let now = self.clock.now();
        let result = match last_failure.as_ref() {
            Some((at, error)) if now < *at + FAILURE_BACKOFF && now >= *at => Err(error.clone()),
            _ => self.fetch().await,
        };
        match result {
            Ok(token) => {
                *last_failure = None;
                Ok(token)
            }
            Err(e) => {
                if last_failure.is_none() {
                    tracing::warn!(error = %e, "FCM: no OAuth access token");
                }
                if last_failure
                    .as_ref()
                    .is_none_or(|(at, _)| now >= *at + FAILURE_BACKOFF)
                {
                    *last_failure = Some((now, e.clone()));
                }
                // The token server failed, but the old token may still work.
                self.current(|c, now| now < c.expires_at).ok_or(e)
            }
        }
    }

    fn current(&self, usable: impl Fn(&Cached, SystemTime) -> bool) -> Option<Arc<str>> {
        let now = self.clock.now();
        let cached = self.cached.read().unwrap_or_else(|e| e.into_inner());
        cached
            .as_ref()
            .filter(|c| usable(c, now))
            .map(|c| c.value.clone())
    }

    async fn fetch(&self) -> Result<Arc<str>, AuthError> {
        let account = CustomServiceAccount::from_json(&self.service_account_json)
            .map_err(|e| AuthError::Credentials(e.to_string()))?;
        let token = account
            .token(&[FCM_SCOPE])
            .await
            .map_err(|e| AuthError::Fetch(describe(&e).into()))?;
        // gcp_auth dates the expiry by the system clock; carry the lifetime
        // over to ours.
        let lifetime = SystemTime::from(token.expires_at())
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let now = self.clock.now();
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        let value: Arc<str> = token.as_str().into();
        *self.cached.write().unwrap_or_else(|e| e.into_inner()) = Some(Cached {
            value: value.clone(),
            refresh_at: now + (lifetime - margin),
            expires_at: now + lifetime,
        });
        tracing::debug!(
            lifetime_secs = lifetime.as_secs(),
            "FCM: new OAuth access token"
        );
        Ok(value)
    }
}

/// gcp_auth's error with its causes (its Display names only the step).
fn describe(err: &gcp_auth::Error) -> String {
    use std::error::Error as _;
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
