//! Configuration of the push backends: one table per configured app, tagged
//! with its provider. The component reads these from its TOML file
//! (`[apps.NAME]`, key `provider`) and builds one backend per app with
//! [`build_backend`].

use std::sync::Arc;

use serde::Deserialize;

use crate::PushBackend;
use crate::apns::{ApnsBackend, ApnsConfig};
use crate::fcm::{FcmBackend, FcmConfig};

/// One app's backend settings; `provider` selects the variant.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    /// Apple Push Notification service (`provider = "apns"`).
    Apns(ApnsConfig),
    /// Firebase Cloud Messaging HTTP v1 (`provider = "fcm"`).
    Fcm(FcmConfig),
}

/// Why a backend could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[error("app {app}: {message}")]
pub struct BackendConfigError {
    pub app: String,
    pub message: String,
}

/// Builds the backend for one configured app.
pub async fn build_backend(
    app: &str,
    config: &ProviderConfig,
) -> Result<Arc<dyn PushBackend>, BackendConfigError> {
    let fail = |message: String| BackendConfigError {
        app: app.to_owned(),
        message,
    };
    match config {
        ProviderConfig::Apns(c) => ApnsBackend::new(app, c)
            .map(|b| Arc::new(b) as Arc<dyn PushBackend>)
            .map_err(|e| fail(e.to_string())),
        ProviderConfig::Fcm(c) => FcmBackend::new(app, c)
            .map(|b| Arc::new(b) as Arc<dyn PushBackend>)
            .map_err(|e| fail(e.to_string())),
    }
}
