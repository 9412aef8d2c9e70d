//! Nudge's configuration: one TOML file, every key overridable by an
//! environment variable `NUDGE_<SECTION>__<KEY>` (double underscore between
//! levels, e.g. `NUDGE_COMPONENT__SECRET`, `NUDGE_APPS__MYAPP__TOPIC`), so
//! that secrets can stay out of the file. Layering and key names in errors
//! come from the `config` crate; this module owns the schema and defaults.
//! `deploy/nudge.example.toml` documents every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nudge_plugins::ProviderConfig;
use serde::Deserialize;

use crate::xmpp::stream::StreamConfig;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} not found")]
    NotFound(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("invalid configuration: {key}: {message}")]
    Value { key: &'static str, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub component: ComponentConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub dispatch: DispatchConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub register: RegisterConfig,
    /// The push apps: `[apps.NAME]` with `provider = "apns" | "fcm"` and
    /// that provider's keys. `register-push-NAME` registers with the app
    /// NAME; `register-push-PROVIDER` with the one app of that provider.
    #[serde(default)]
    pub apps: BTreeMap<String, ProviderConfig>,
}

/// `[component]`: how to reach the XMPP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// The component's domain, as configured on the XMPP server.
    pub domain: String,
    /// The component secret shared with the XMPP server.
    pub secret: String,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Largest stanza accepted, in bytes; a larger one closes the stream
    /// with `policy-violation`.
    #[serde(default = "default_max_stanza_size")]
    pub max_stanza_size: usize,
    #[serde(default = "default_keepalive_secs")]
    pub keepalive_secs: u64,
    #[serde(default = "default_reconnect_max_delay_ms")]
    pub reconnect_max_delay_ms: u64,
    #[serde(default = "default_standby_retry_ms")]
    pub standby_retry_ms: u64,
    #[serde(default = "default_drain_timeout_secs")]
    pub drain_timeout_secs: u64,
}

/// `[storage]`: where registrations live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory for the SQLite database when `url` is not set.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`; default: SQLite in
    /// `data_dir`.
    #[serde(default)]
    pub url: Option<String>,
    /// Registrations kept in memory for the publish path.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: usize,
}

/// `[dispatch]`: how pushes go out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    /// Longest wait for a provider before answering `wait`; below
    /// ejabberd's 32 s iq timeout.
    #[serde(default = "default_push_timeout_secs")]
    pub push_timeout_secs: u64,
    /// Publishes and commands handled at once; the reader waits beyond.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

/// `[register]`: limits on registration commands, so that one account
/// cannot fill the database (`register/limits.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// Register and unregister commands one account may send per minute
    /// (all at once, then evenly spread); beyond it the command is answered
    /// `wait`. Conversations sends one for the account and one per room at
    /// every start.
    #[serde(default = "default_register_per_account_per_minute")]
    pub per_account_per_minute: u32,
    /// Registrations one account may hold (devices × rooms × apps); a new
    /// one beyond it is refused, a re-registration still updates its token.
    #[serde(default = "default_register_max_per_account")]
    pub max_per_account: u32,
}

fn default_register_per_account_per_minute() -> u32 {
    20
}
fn default_register_max_per_account() -> u32 {
    50
}

impl Default for RegisterConfig {
    fn default() -> Self {
        RegisterConfig {
            per_account_per_minute: default_register_per_account_per_minute(),
            max_per_account: default_register_max_per_account(),
        }
    }
}

impl RegisterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, message: &str| {
            Err(ConfigError::Value {
                key,
                message: message.into(),
            })
        };
        if !(1..=10_000).contains(&self.per_account_per_minute) {
            return bad(
                "register.per_account_per_minute",
                "must be between 1 and 10000",
            );
        }
        if !(1..=100_000).contains(&self.max_per_account) {
            return bad("register.max_per_account", "must be between 1 and 100000");
        }
        Ok(())
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `nudge=debug`, …; `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5347
}
fn default_max_stanza_size() -> usize {
    64 * 1024
}
fn default_keepalive_secs() -> u64 {
    60
}
fn default_reconnect_max_delay_ms() -> u64 {
    1000
}
fn default_standby_retry_ms() -> u64 {
    1000
}
fn default_drain_timeout_secs() -> u64 {
    20
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_cache_capacity() -> usize {
    100_000
}
fn default_push_timeout_secs() -> u64 {
    10
}
fn default_max_in_flight() -> usize {
    10_000
}
fn default_log_level() -> String {
    "info".into()
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: default_data_dir(),
            url: None,
            cache_capacity: default_cache_capacity(),
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            push_timeout_secs: default_push_timeout_secs(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
        }
    }
}

impl Config {
    /// Loads the file (which must exist) and the `NUDGE_…` environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::NotFound(path.to_owned()));
        }
        Self::build(
            config::Config::builder()
                .add_source(config::File::from(path).format(config::FileFormat::Toml)),
            std::env::vars(),
        )
    }

    /// Parses TOML text plus the environment (for tests and `check-config`).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_toml_and_env(text, std::env::vars())
    }

    /// Parses TOML text plus the given `(name, value)` environment, which
    /// stands in for the process environment (tests need no global state).
    pub fn from_toml_and_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::build(
            config::Config::builder()
                .add_source(config::File::from_str(text, config::FileFormat::Toml)),
            env,
        )
    }

    /// Layers the `NUDGE_<SECTION>__<KEY>` variables of `env` over the file.
    ///
    /// The values stay text (no `try_parsing`): parsing them up front would
    /// turn a secret `0123` into the number 123 and then back into the text
    /// `"123"`. A key is converted when it is deserialised into its field, so
    /// `NUDGE_COMPONENT__PORT=5348` still becomes a `u16` and `true` a
    /// `bool`; the provider tables accept numbers written as text for the
    /// same reason (`nudge_plugins::ProviderConfig`).
    fn build(
        builder: config::ConfigBuilder<config::builder::DefaultState>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        // Only `NUDGE_<SECTION>__<KEY>` variables are configuration; others
        // with the prefix (`NUDGE_CONFIG`, the tests' own) are not keys.
        let overrides: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| {
                k.strip_prefix("NUDGE_")
                    .and_then(|rest| rest.split_once("__"))
                    .is_some_and(|(section, _)| !section.is_empty())
            })
            .collect();
        let cfg: Config = builder
            .add_source(
                config::Environment::with_prefix("NUDGE")
                    .prefix_separator("_")
                    .separator("__")
                    .source(Some(overrides)),
            )
            .build()?
            .try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, message: &str| {
            Err(ConfigError::Value {
                key,
                message: message.into(),
            })
        };
        if crate::xmpp::jid::Jid::parse(&self.component.domain)
            .map(|j| j.local().is_some() || j.resource().is_some())
            .unwrap_or(true)
        {
            return bad(
                "component.domain",
                "must be a domain such as push.example.org",
            );
        }
        if self.component.secret.is_empty() {
            return bad("component.secret", "must not be empty");
        }
        if self.component.max_stanza_size < 4096 {
            return bad("component.max_stanza_size", "must be at least 4096 bytes");
        }
        if self.component.keepalive_secs == 0 {
            return bad("component.keepalive_secs", "must be at least 1");
        }
        if self.dispatch.max_in_flight == 0 || self.dispatch.max_in_flight > 1_000_000 {
            return bad("dispatch.max_in_flight", "must be between 1 and 1000000");
        }
        if self.dispatch.push_timeout_secs == 0 {
            return bad("dispatch.push_timeout_secs", "must be at least 1");
        }
        self.register.validate()?;
        for name in self.apps.keys() {
            if name.is_empty()
                || !name.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
                })
            {
                return bad(
                    "apps",
                    "app names use lower-case letters, digits, '-', '_', '.'",
                );
            }
        }
        Ok(())
    }

    /// The database URL, defaulting to SQLite in the data directory.
    pub fn database_url(&self) -> String {
        match &self.storage.url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}",
                self.storage.data_dir.join("nudge.db").display()
            ),
        }
    }

    /// The component stream's settings.
    pub fn stream(&self) -> StreamConfig {
        let c = &self.component;
        let mut s = StreamConfig::new(&c.host, c.port, &c.domain, &c.secret);
        s.max_stanza_size = c.max_stanza_size;
        s.keepalive = Duration::from_secs(c.keepalive_secs);
        s.reconnect_max_delay = Duration::from_millis(c.reconnect_max_delay_ms);
        s.standby_retry = Duration::from_millis(c.standby_retry_ms);
        s.drain_timeout = Duration::from_secs(c.drain_timeout_secs);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c =
            Config::from_toml("[component]\ndomain = 'push.example.org'\nsecret = 's'\n").unwrap();
        assert_eq!(c.component.port, 5347);
        assert_eq!(c.component.max_stanza_size, 65536);
        assert_eq!(c.database_url(), "sqlite://data/nudge.db");
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_keeps_strings_and_parses_numbers_and_bools() {
        let text = "[component]\ndomain = 'push.example.org'\nsecret = 's'\n\
                    [apps.android]\nprovider = 'fcm'\nservice_account_path = '/sa.json'\n";
        let c = Config::from_toml_and_env(
            text,
            env(&[
                ("NUDGE_COMPONENT__SECRET", "0123"),
                ("NUDGE_COMPONENT__PORT", "5348"),
                ("NUDGE_STORAGE__URL", "1e5"),
                ("NUDGE_APPS__ANDROID__TTL_SECS", "3600"),
                ("NUDGE_APPS__ANDROID__INCLUDE_BODY", "true"),
                ("NUDGE_APPS__ANDROID__PROJECT_ID", "007"),
            ]),
        )
        .unwrap();
        assert_eq!(c.component.secret, "0123");
        assert_eq!(c.component.port, 5348);
        assert_eq!(c.storage.url.as_deref(), Some("1e5"));
        let ProviderConfig::Fcm(fcm) = &c.apps["android"] else {
            panic!("fcm app expected");
        };
        assert_eq!(fcm.ttl_secs, Some(3600));
        assert!(fcm.include_body);
        assert_eq!(fcm.project_id.as_deref(), Some("007"));
        // A number that is not one is still refused, naming the key.
        let e = Config::from_toml_and_env(text, env(&[("NUDGE_COMPONENT__PORT", "53a")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
        let e = Config::from_toml_and_env(text, env(&[("NUDGE_APPS__ANDROID__TTL_SECS", "1h")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("1h"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml(
            "[component]\ndomain = 'push.example.org'\nsecret = 's'\nport = 'x'\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("component.port") || e.contains("port"), "{e}");
        let e = Config::from_toml("[component]\ndomain = 'a@b'\nsecret = 's'\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("component.domain"), "{e}");
        let e = Config::from_toml("[component]\ndomain = 'd'\nsecret = 's'\nsecrett = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("secrett"), "{e}");
    }
}
