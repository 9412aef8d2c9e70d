//! Dispatch: from an authorized publish to the device's push backend, and
//! from the provider's outcome to the answer the user's server gets.
//!
//! The answer decides whether the user keeps push (`interop.md`): ejabberd
//! deletes a registration on any error that is not `wait`, Prosody after 16.
//! So only a provider's verdict that the token is dead produces a `cancel`
//! error; everything transient (provider down, throttled, timeout, our
//! database) is a `wait` error, and a provider rejecting our request is our
//! problem, never the user's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nudge_plugins::{Notification, Outcome, PushBackend};
use tracing::{debug, error, info, warn};

use crate::store::{Registration, RegistrationStore};
use crate::xmpp::stanza::StanzaError;

/// The configured apps' backends, by app name.
#[derive(Clone, Default)]
pub struct Backends {
    by_app: HashMap<String, Arc<dyn PushBackend>>,
}

impl Backends {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, app: impl Into<String>, backend: Arc<dyn PushBackend>) {
        self.by_app.insert(app.into(), backend);
    }

    pub fn get(&self, app: &str) -> Option<&Arc<dyn PushBackend>> {
        self.by_app.get(app)
    }

    /// App names in a stable order.
    pub fn apps(&self) -> Vec<&str> {
        let mut apps: Vec<&str> = self.by_app.keys().map(String::as_str).collect();
        apps.sort_unstable();
        apps
    }

    /// Resolves the name in a `register-push-<name>` command: an app name
    /// first, else a provider name that exactly one app uses.
    pub fn resolve(&self, name: &str) -> Result<&str, ResolveError> {
        let name = name.to_ascii_lowercase();
        if let Some((app, _)) = self.by_app.get_key_value(name.as_str()) {
            return Ok(app);
        }
        let mut matching = self
            .by_app
            .iter()
            .filter(|(_, b)| b.provider().eq_ignore_ascii_case(&name))
            .map(|(a, _)| a.as_str());
        match (matching.next(), matching.next()) {
            (Some(app), None) => Ok(app),
            (None, _) => Err(ResolveError::Unknown),
            (Some(_), Some(_)) => Err(ResolveError::Ambiguous),
        }
    }
}

/// Why a command's app or provider name did not resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveError {
    Unknown,
    Ambiguous,
}

/// Sends pushes and turns outcomes into answers.
pub struct Dispatcher {
    backends: Backends,
    store: RegistrationStore,
    timeout: Duration,
}

impl Dispatcher {
    pub fn new(backends: Backends, store: RegistrationStore, timeout: Duration) -> Self {
        Dispatcher {
            backends,
            store,
            timeout,
        }
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Sends one push; `Ok` means the provider accepted it.
    pub async fn dispatch(
        &self,
        reg: &Registration,
        notification: &Notification,
    ) -> Result<(), StanzaError> {
        let Some(backend) = self.backends.get(&reg.app) else {
            error!(node = %reg.node, app = %reg.app, "registration names an app that is not configured; keeping it");
            return Err(StanzaError::internal_server_error(
                "the App Server has no backend for this registration",
            ));
        };
        let device = reg.device();
        let outcome = match tokio::time::timeout(self.timeout, backend.send(&device, notification))
            .await
        {
            Ok(outcome) => outcome,
            Err(_) => {
                warn!(node = %reg.node, app = %reg.app, timeout = ?self.timeout, "push timed out");
                return Err(StanzaError::remote_server_timeout(
                    "push provider timed out",
                ));
            }
        };
        debug!(node = %reg.node, app = %reg.app, outcome = outcome.kind(), "push sent");
        match outcome {
            Outcome::Delivered => Ok(()),
            Outcome::InvalidToken { reason } => {
                info!(node = %reg.node, app = %reg.app, %reason, "provider says the token is dead; removing the registration");
                match self.store.remove_dead_token(&reg.node, &reg.token).await {
                    Ok(_) => {
                        Err(StanzaError::item_not_found()
                            .with_text("device token is no longer valid"))
                    }
                    Err(e) => {
                        // Not removed: answer `wait`, the next push retries
                        // the removal rather than leaving a half state.
                        error!(node = %reg.node, error = %e, "could not remove the registration of a dead token");
                        Err(StanzaError::internal_server_error("storage unavailable"))
                    }
                }
            }
            Outcome::Throttled { retry_after } => {
                warn!(node = %reg.node, app = %reg.app, ?retry_after, "provider throttled the push");
                Err(StanzaError::resource_constraint("push provider throttled"))
            }
            Outcome::Transient {
                reason,
                retry_after,
            } => {
                warn!(node = %reg.node, app = %reg.app, %reason, ?retry_after, "push failed for now");
                Err(StanzaError::resource_constraint(
                    "push provider unavailable",
                ))
            }
            Outcome::Rejected { reason } => {
                error!(node = %reg.node, app = %reg.app, %reason, "provider rejected the push request");
                Err(StanzaError::internal_server_error(
                    "push provider rejected the request",
                ))
            }
        }
    }
}
