//! Configuration of the push backends: one table per configured app, tagged
//! with its provider. The component reads these from its TOML file
//! (`[apps.NAME]`, key `provider`) and builds one backend per app with
//! [`build_backend`].

use std::sync::Arc;

use serde::Deserialize;

use crate::PushBackend;
use crate::apns::{ApnsBackend, ApnsConfig};
use crate::fcm::{FcmBackend, FcmConfig};
use crate::webpush::{WebPushBackend, WebPushConfig};

/// One app's backend settings; `provider` selects the variant.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    /// Apple Push Notification service (`provider = "apns"`).
    Apns(ApnsConfig),
    /// Firebase Cloud Messaging HTTP v1 (`provider = "fcm"`).
    Fcm(FcmConfig),
    /// Web Push: browsers and UnifiedPush distributors
    /// (`provider = "webpush"`).
    WebPush(WebPushConfig),
}

/// Numbers and booleans of a provider table may also be written as text
/// (`"3600"`, `"true"`). The component's environment overrides
/// (`NUDGE_APPS__NAME__TTL_SECS=3600`) arrive as text and stay text so that
/// string keys keep their leading zeros; a plain struct converts them when a
/// field asks for a number, but [`ProviderConfig`] is tagged, so serde
/// buffers the table before it knows the field types and the text would be
/// refused. These deserializers convert it.
pub(crate) mod lenient {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ValueOrText<T> {
        Value(T),
        Text(String),
    }

    fn resolve<T, E>(v: ValueOrText<T>) -> Result<T, E>
    where
        T: FromStr,
        T::Err: Display,
        E: Error,
    {
        match v {
            ValueOrText::Value(v) => Ok(v),
            ValueOrText::Text(text) => text
                .parse()
                .map_err(|e| E::custom(format_args!("invalid value {text:?}: {e}"))),
        }
    }

    /// A value, or its text form.
    pub fn value<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + FromStr,
        T::Err: Display,
    {
        resolve(ValueOrText::deserialize(d)?)
    }

    /// An optional value, or its text form.
    pub fn option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + FromStr,
        T::Err: Display,
    {
        Option::<ValueOrText<T>>::deserialize(d)?
            .map(resolve)
            .transpose()
    }
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
        ProviderConfig::WebPush(c) => WebPushBackend::new(app, c)
            .map(|b| Arc::new(b) as Arc<dyn PushBackend>)
            .map_err(|e| fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    struct File {
        apps: BTreeMap<String, ProviderConfig>,
    }

    #[test]
    fn apps_tables_select_their_provider() {
        let file: File = toml::from_str(
            r#"
            [apps.ios]
            provider = "apns"
            topic = "im.example.app"
            endpoint = "sandbox"
            ttl_secs = 86400
            [apps.ios.token]
            key_path = "/etc/nudge/AuthKey_ABC123DEFG.p8"
            key_id = "ABC123DEFG"
            team_id = "TEAM123456"

            [apps.android]
            provider = "fcm"
            service_account_path = "/etc/nudge/firebase.json"
            include_body = false

            [apps.web]
            provider = "webpush"
            vapid_private_key_file = "/etc/nudge/vapid.pem"
            vapid_subject = "mailto:ops@push.example"
            ttl_secs = "3600"
            "#,
        )
        .unwrap();
        assert!(matches!(&file.apps["ios"], ProviderConfig::Apns(c) if c.ttl_secs == Some(86400)));
        assert!(matches!(&file.apps["android"], ProviderConfig::Fcm(c)
            if c.service_account_path.ends_with("firebase.json")));
        assert!(matches!(&file.apps["web"], ProviderConfig::WebPush(c)
            if c.ttl_secs == 3600 && c.max_concurrent_per_origin == 100));
    }

    #[test]
    fn unknown_providers_and_keys_are_refused() {
        for text in [
            "[apps.x]\nprovider = \"gcm\"",
            "[apps.x]\ntopic = \"a\"",
            "[apps.x]\nprovider = \"apns\"\ntopic = \"a\"\nbundle = \"b\"",
            "[apps.x]\nprovider = \"fcm\"\nservice_account_path = \"a\"\nserver_key = \"b\"",
            "[apps.x]\nprovider = \"fcm\"\nservice_account_path = \"a\"\nttl_secs = \"1h\"",
            "[apps.x]\nprovider = \"webpush\"\nvapid_subject = \"mailto:a@b\"\ngcm_key = \"k\"",
            "[apps.x]\nprovider = \"webpush\"\nvapid_private_key = \"k\"",
        ] {
            assert!(toml::from_str::<File>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn numbers_and_bools_may_be_text() {
        let file: File = toml::from_str(
            "[apps.x]\nprovider = \"fcm\"\nservice_account_path = \"a\"\n\
             ttl_secs = \"60\"\ninclude_body = \"true\"\nconnections = \"2\"",
        )
        .unwrap();
        let ProviderConfig::Fcm(c) = &file.apps["x"] else {
            panic!("fcm expected");
        };
        assert_eq!(c.ttl_secs, Some(60));
        assert!(c.include_body);
        assert_eq!(c.connections, 2);
    }

    #[tokio::test]
    async fn build_names_the_app_on_failure() {
        let config: ProviderConfig =
            toml::from_str("provider = \"fcm\"\nservice_account_path = \"/nonexistent.json\"")
                .unwrap();
        let err = build_backend("android", &config).await.err().unwrap();
        assert_eq!(err.app, "android");
        assert!(err.message.contains("/nonexistent.json"), "{err}");
    }
}
