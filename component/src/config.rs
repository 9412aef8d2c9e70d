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
    /// Hard cap on the bytes of one stanza. A larger one is still read to
    /// its end and answered (a publish becomes a plain wake-up), its text
    /// cut short; the stream stays up. Memory per stanza is bounded
    /// whatever this is (see `xmpp/limits.rs`).
    #[serde(default = "default_max_stanza_size")]
    pub max_stanza_size: usize,
    #[serde(default = "default_keepalive_secs")]
    pub keepalive_secs: u64,
    #[serde(default = "default_reconnect_max_delay_ms")]
    pub reconnect_max_delay_ms: u64,
    #[serde(default = "default_standby_retry_ms")]
    pub standby_retry_ms: u64,
    /// Longest wait, on a stop or a replaced connection, for the stanzas
    /// already received to be answered.
    #[serde(default = "default_drain_timeout_secs")]
    pub drain_timeout_secs: u64,
    /// Silence from the server after which the component pings itself
    /// through it.
    #[serde(default = "default_read_idle_secs")]
    pub read_idle_secs: u64,
    /// How long the ping may go unanswered before the connection counts as
    /// lost (and the component reconnects).
    #[serde(default = "default_ping_timeout_secs")]
    pub ping_timeout_secs: u64,
    /// Longest a write to the server may block before the connection
    /// counts as lost.
    #[serde(default = "default_write_timeout_secs")]
    pub write_timeout_secs: u64,
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
    crate::xmpp::limits::DEFAULT_MAX_STANZA
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
    5
}
fn default_read_idle_secs() -> u64 {
    10
}
fn default_ping_timeout_secs() -> u64 {
    5
}
fn default_write_timeout_secs() -> u64 {
    10
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
        )
    }

    /// Parses TOML text plus the environment (for tests and `check-config`).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::build(
            config::Config::builder()
                .add_source(config::File::from_str(text, config::FileFormat::Toml)),
        )
    }

    fn build(
        builder: config::ConfigBuilder<config::builder::DefaultState>,
    ) -> Result<Config, ConfigError> {
        // Only `NUDGE_<SECTION>__<KEY>` variables are configuration; others
        // with the prefix (`NUDGE_CONFIG`, the tests' own) are not keys.
        let overrides: config::Map<String, String> = std::env::vars()
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
                    .try_parsing(true)
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
        if self.component.max_stanza_size < 65536 {
            return bad("component.max_stanza_size", "must be at least 65536 bytes");
        }
        for (key, secs) in [
            ("component.keepalive_secs", self.component.keepalive_secs),
            (
                "component.drain_timeout_secs",
                self.component.drain_timeout_secs,
            ),
            ("component.read_idle_secs", self.component.read_idle_secs),
            (
                "component.ping_timeout_secs",
                self.component.ping_timeout_secs,
            ),
            (
                "component.write_timeout_secs",
                self.component.write_timeout_secs,
            ),
        ] {
            if secs == 0 {
                return bad(key, "must be at least 1");
            }
        }
        if self.dispatch.max_in_flight == 0 || self.dispatch.max_in_flight > 1_000_000 {
            return bad("dispatch.max_in_flight", "must be between 1 and 1000000");
        }
        if self.dispatch.push_timeout_secs == 0 {
            return bad("dispatch.push_timeout_secs", "must be at least 1");
        }
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
        s.read_idle = Duration::from_secs(c.read_idle_secs);
        s.ping_timeout = Duration::from_secs(c.ping_timeout_secs);
        s.write_timeout = Duration::from_secs(c.write_timeout_secs);
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
        assert_eq!(c.component.max_stanza_size, 4 * 1024 * 1024);
        assert_eq!(c.component.read_idle_secs, 10);
        assert_eq!(c.component.ping_timeout_secs, 5);
        assert_eq!(c.component.write_timeout_secs, 10);
        assert_eq!(c.component.drain_timeout_secs, 5);
        assert_eq!(c.database_url(), "sqlite://data/nudge.db");
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
