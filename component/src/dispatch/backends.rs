//! The configured push apps and their backends: which backend a
//! registration's app names, and which app a `register-push-<name>` command
//! means (an app name, or a provider name that one app alone uses).

use std::collections::HashMap;
use std::sync::Arc;

use nudge_plugins::PushBackend;

/// The configured apps' backends, by app name.
#[derive(Clone, Default)]
pub struct Backends {
    by_app: HashMap<String, Arc<dyn PushBackend>>,
}

impl Backends {
    /// No apps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an app's backend.
    pub fn insert(&mut self, app: impl Into<String>, backend: Arc<dyn PushBackend>) {
        self.by_app.insert(app.into(), backend);
    }

    /// The backend of an app.
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
    /// No app and no provider has that name.
    Unknown,
    /// Several apps use that provider.
    Ambiguous,
}
