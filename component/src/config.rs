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
    pub outbox: OutboxConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub brake: BrakeConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// `[http]`: the listener for metrics, health, status and the
    /// registration API (`component/src/http/`).
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub register: RegisterConfig,
    /// `[dialects]`: the registration dialects besides Conversations', and
    /// the stateless modes (`component/src/register/`).
    #[serde(default)]
    pub dialects: DialectsConfig,
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
    /// Registrations kept in memory for the publish path. Each costs about
    /// 0.7 KB of RSS (see `component/src/store/cache.rs`).
    /// The cache serves the later publishes of a burst, which come within
    /// seconds of the first: it needs about publishes per second times a
    /// few seconds of entries, not one per registration.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: usize,
    /// Longest time a cached registration is used before it is read again.
    /// Changes reach every instance's cache at once (on PostgreSQL through
    /// a trigger and LISTEN); this bounds what a change that was not heard
    /// about (a connection that died silently) costs. 0 caches nothing.
    #[serde(default = "default_cache_max_age_secs")]
    pub cache_max_age_secs: u64,
}

/// `[dispatch]`: how pushes go out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    /// Longest wait for the provider before a publish is answered: a push
    /// not taken by then goes to the outbox and the publish is answered
    /// `result`. Also bounds how long a graceful stop waits for answers.
    #[serde(default = "default_answer_within_ms")]
    pub answer_within_ms: u64,
    /// Coalescing window: a device gets at most one push per window (plus
    /// an important one beside a silent one); publishes within it are
    /// merged into one trailing push with the newest summary.
    #[serde(default = "default_coalesce_ms")]
    pub coalesce_ms: u64,
    /// Longest wait for one provider request (in the background once the
    /// publish is answered); a timeout counts as a transient failure.
    #[serde(default = "default_push_timeout_secs")]
    pub push_timeout_secs: u64,
    /// Publishes and commands handled at once; the reader waits beyond.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Longest a publish waits for its answer whatever happens (a database
    /// that hangs, a lock): then it is answered `wait`, well inside
    /// ejabberd's 32 s iq timeout, after which a late answer is dropped.
    #[serde(default = "default_answer_deadline_secs")]
    pub answer_deadline_secs: u64,
}

/// `[outbox]`: how accepted pushes that failed for now are retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// How long an accepted push is retried before it is dropped (counted
    /// and logged).
    #[serde(default = "default_outbox_ttl_secs")]
    pub ttl_secs: u64,
    /// First retry delay; it doubles per failed attempt, with jitter.
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    /// Longest retry delay.
    #[serde(default = "default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// Deliveries from the outbox in flight at once.
    #[serde(default = "default_outbox_concurrency")]
    pub concurrency: usize,
}

/// `[limits]`: pushes per registration and per publishing server. Over a
/// limit a push is deferred through the outbox (and so merged with the
/// next ones), never dropped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sustained pushes per registration and minute.
    #[serde(default = "default_per_registration_per_minute")]
    pub per_registration_per_minute: u32,
    /// Pushes a registration may get at once before the rate applies.
    #[serde(default = "default_per_registration_burst")]
    pub per_registration_burst: u32,
    /// Sustained pushes per publishing domain and second.
    #[serde(default = "default_per_domain_per_second")]
    pub per_domain_per_second: u32,
    /// Pushes a publishing domain may cause at once.
    #[serde(default = "default_per_domain_burst")]
    pub per_domain_burst: u32,
}

/// `[brake]`: the brake on mass removal of dead tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrakeConfig {
    /// More distinct tokens of one app declared dead than this within the
    /// window stop removals for that app.
    #[serde(default = "default_brake_dead_tokens")]
    pub dead_tokens: u32,
    /// The window, in seconds.
    #[serde(default = "default_brake_window_secs")]
    pub window_secs: u64,
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

/// `[dialects]`: which clients' dialects this instance speaks besides
/// Conversations' (which needs no settings), and with which apps. Each
/// dialect's table is its own (`[dialects.NAME]`); one absent is off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialectsConfig {
    /// `[dialects.siskin]`: Siskin's and other Tigase clients'
    /// `register-device` / `unregister-device` (`register/siskin.rs`).
    #[serde(default)]
    pub siskin: Option<SiskinConfig>,
    /// `[dialects.push_appserver]`: mod_push_appserver's
    /// `v1-register-push` / `v1-unregister-push`, as older Monal builds
    /// send them (`register/push_appserver.rs`).
    #[serde(default)]
    pub push_appserver: Option<PushAppserverConfig>,
    /// `[dialects.fpush]`: Monal's stateless mode (`push/stateless/fpush.rs`);
    /// off when absent.
    #[serde(default)]
    pub fpush: Option<FpushConfig>,
    /// `[dialects.mongooseim]`: MongooseIM's stateless mode
    /// (`push/stateless/mongooseim.rs`); off when absent.
    #[serde(default)]
    pub mongooseim: Option<MongooseImConfig>,
}

impl DialectsConfig {
    fn validate(&self, apps: &BTreeMap<String, ProviderConfig>) -> Result<(), ConfigError> {
        if let Some(siskin) = &self.siskin {
            validate_targets("dialects.siskin.providers", &siskin.providers, apps)?;
            // The register answer's max-payload-size counts on this.
            for target in siskin.providers.values() {
                if let Some(ProviderConfig::Apns(apns)) = apps.get(target.app())
                    && apns.alert_body.len() + apns.sound.len()
                        > crate::register::siskin::ALERT_RESERVE
                {
                    return Err(ConfigError::Value {
                        key: "dialects.siskin.providers",
                        message: format!(
                            "app {:?}: alert_body and sound take more than {} bytes together, \
                             which the max-payload-size Siskin is told leaves for them",
                            target.app(),
                            crate::register::siskin::ALERT_RESERVE
                        ),
                    });
                }
            }
        }
        if let Some(v1) = &self.push_appserver {
            for name in v1.types.keys() {
                if crate::register::push_appserver::PushType::try_from(name.as_str()).is_err() {
                    return Err(ConfigError::Value {
                        key: "dialects.push_appserver.types",
                        message: format!("unknown type {name:?} (apns or fcm)"),
                    });
                }
            }
            validate_targets("dialects.push_appserver.types", &v1.types, apps)?;
        }
        if let Some(fpush) = &self.fpush {
            fpush.validate(apps)?;
        }
        if let Some(mongooseim) = &self.mongooseim {
            mongooseim.validate(apps)?;
        }
        Ok(())
    }
}

/// `[dialects.fpush]`: publishes whose node is a device token and whose
/// publish-options name a `pushModule` (Monal), pushed without any
/// registration. Only the apps listed here take such pushes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpushConfig {
    /// `[dialects.fpush.modules]`: for each app, the `pushModule` names
    /// that mean it (e.g. `monal = ["monalProdiOS", "monalAlpha"]`). Each
    /// name also matches with `-sandbox` appended (a sandbox APNs token).
    pub modules: BTreeMap<String, Vec<String>>,
    /// The module of a publish without `pushModule` and without a secret,
    /// if any; such publishes are not stateless when unset.
    #[serde(default)]
    pub default_module: Option<String>,
    /// `[dialects.….limits]`: the rate limits of these pushes.
    #[serde(default)]
    pub limits: StatelessLimitsConfig,
}

impl FpushConfig {
    /// The app a module name (without its `-sandbox`) means.
    pub fn app_of(&self, module: &str) -> Option<&str> {
        self.modules
            .iter()
            .find(|(_, names)| names.iter().any(|n| n == module))
            .map(|(app, _)| app.as_str())
    }

    fn validate(&self, apps: &BTreeMap<String, ProviderConfig>) -> Result<(), ConfigError> {
        let bad = |key, message: String| Err(ConfigError::Value { key, message });
        if self.modules.is_empty() {
            return bad(
                "dialects.fpush.modules",
                "names no app; remove [dialects.fpush] to turn the mode off".into(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (app, names) in &self.modules {
            if !apps.contains_key(app) {
                return bad(
                    "dialects.fpush.modules",
                    format!("{app:?} is not a configured app ([apps.{app}])"),
                );
            }
            for name in names {
                if name.is_empty() || name.ends_with(SANDBOX_SUFFIX) {
                    return bad(
                        "dialects.fpush.modules",
                        format!(
                            "{name:?}: module names are not empty and do not end in \
                             {SANDBOX_SUFFIX:?} (that suffix is understood by itself)"
                        ),
                    );
                }
                if !seen.insert(name.as_str()) {
                    return bad(
                        "dialects.fpush.modules",
                        format!("{name:?} is named for more than one app"),
                    );
                }
            }
        }
        if let Some(default) = &self.default_module {
            let name = default.strip_suffix(SANDBOX_SUFFIX).unwrap_or(default);
            if self.app_of(name).is_none() {
                return bad(
                    "dialects.fpush.default_module",
                    format!("{default:?} is not one of dialects.fpush.modules"),
                );
            }
        }
        self.limits.validate("dialects.fpush.limits")
    }
}

/// The suffix of a Monal `pushModule` whose tokens are sandbox tokens.
pub const SANDBOX_SUFFIX: &str = "-sandbox";

/// `[dialects.mongooseim]`: publishes whose publish-options carry
/// `device_id` and `service` (MongooseIM), pushed without any
/// registration. Each service is off unless it names an app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongooseImConfig {
    /// The app of `service = apns`.
    #[serde(default)]
    pub apns: Option<String>,
    /// The app of `service = fcm`.
    #[serde(default)]
    pub fcm: Option<String>,
    /// `[dialects.….limits]`: the rate limits of these pushes.
    #[serde(default)]
    pub limits: StatelessLimitsConfig,
}

impl MongooseImConfig {
    fn validate(&self, apps: &BTreeMap<String, ProviderConfig>) -> Result<(), ConfigError> {
        let bad = |key, message: String| Err(ConfigError::Value { key, message });
        if self.apns.is_none() && self.fcm.is_none() {
            return bad(
                "dialects.mongooseim",
                "names no app (apns, fcm); remove the table to turn the mode off".into(),
            );
        }
        for (key, app) in [
            ("dialects.mongooseim.apns", &self.apns),
            ("dialects.mongooseim.fcm", &self.fcm),
        ] {
            if let Some(app) = app
                && !apps.contains_key(app)
            {
                return bad(
                    key,
                    format!("{app:?} is not a configured app ([apps.{app}])"),
                );
            }
        }
        self.limits.validate("dialects.mongooseim.limits")
    }
}

/// The rate limits of a stateless mode, stricter than `[limits]` (which
/// apply too): anyone who can make a server publish to us can name any
/// token. Over a limit a push is deferred through the outbox and merged
/// with the next ones, never dropped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatelessLimitsConfig {
    /// One push per token per this many seconds (fpush's default: 20).
    #[serde(default = "default_stateless_token_interval_secs")]
    pub token_interval_secs: u64,
    /// Sustained pushes per publishing domain and minute.
    #[serde(default = "default_stateless_per_domain_per_minute")]
    pub per_domain_per_minute: u32,
    /// Pushes a publishing domain may cause at once.
    #[serde(default = "default_stateless_per_domain_burst")]
    pub per_domain_burst: u32,
}

fn default_stateless_token_interval_secs() -> u64 {
    20
}
fn default_stateless_per_domain_per_minute() -> u32 {
    600
}
fn default_stateless_per_domain_burst() -> u32 {
    60
}

impl Default for StatelessLimitsConfig {
    fn default() -> Self {
        StatelessLimitsConfig {
            token_interval_secs: default_stateless_token_interval_secs(),
            per_domain_per_minute: default_stateless_per_domain_per_minute(),
            per_domain_burst: default_stateless_per_domain_burst(),
        }
    }
}

impl StatelessLimitsConfig {
    fn validate(&self, table: &'static str) -> Result<(), ConfigError> {
        if !(1..=86_400).contains(&self.token_interval_secs)
            || self.per_domain_per_minute == 0
            || self.per_domain_burst == 0
        {
            return Err(ConfigError::Value {
                key: table,
                message: "token_interval_secs must be 1 to 86400, per_domain_per_minute and \
                          per_domain_burst at least 1"
                    .into(),
            });
        }
        Ok(())
    }
}

/// `[dialects.siskin]`: which app each `provider` string of a
/// `register-device` form means. Siskin always sends
/// `tigase:messenger:apns:1`, whether its build's tokens are sandbox or
/// production ones, so a target may name the APNs environment:
///
/// ```toml
/// [dialects.siskin.providers]
/// "tigase:messenger:apns:1" = { app = "siskin", environment = "production" }
/// "tigase:messenger:fcm:1" = "android"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiskinConfig {
    /// Provider string → app (and APNs environment).
    pub providers: BTreeMap<String, DialectTarget>,
}

/// `[dialects.push_appserver]`: which app each `type` of a
/// `v1-register-push` form (`apns`, `fcm`) means.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushAppserverConfig {
    /// `apns` / `fcm` → app (and APNs environment).
    pub types: BTreeMap<String, DialectTarget>,
}

/// What a dialect's provider name stands for: an app, written as its name,
/// or a table with the app and the APNs environment of its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DialectTarget {
    /// `"app"`: the app's configured endpoint.
    App(String),
    /// `{ app = "app", environment = "sandbox" }`.
    Table {
        app: String,
        /// `production` or `sandbox`; absent: the app's configured endpoint.
        #[serde(default)]
        environment: Option<String>,
    },
}

impl DialectTarget {
    /// The app's name.
    pub fn app(&self) -> &str {
        match self {
            DialectTarget::App(app) | DialectTarget::Table { app, .. } => app,
        }
    }

    /// The APNs environment the tokens are in, when configured. Checked at
    /// load time ([`Config::load`] refuses an unknown name).
    pub fn environment(&self) -> Option<nudge_plugins::Environment> {
        match self {
            DialectTarget::App(_) => None,
            DialectTarget::Table { environment, .. } => {
                environment.as_deref().and_then(|e| e.parse().ok())
            }
        }
    }
}

/// Every target names a configured app, and an environment only an APNs
/// app can use.
fn validate_targets(
    key: &'static str,
    targets: &BTreeMap<String, DialectTarget>,
    apps: &BTreeMap<String, ProviderConfig>,
) -> Result<(), ConfigError> {
    let bad = |message: String| Err(ConfigError::Value { key, message });
    if targets.is_empty() {
        return bad("must map at least one name to an app".into());
    }
    for (name, target) in targets {
        let Some(app) = apps.get(target.app()) else {
            return bad(format!(
                "{name:?} names app {:?}, which is not configured",
                target.app()
            ));
        };
        if let DialectTarget::Table {
            environment: Some(env),
            ..
        } = target
        {
            if let Err(e) = env.parse::<nudge_plugins::Environment>() {
                return bad(format!("{name:?}: {e}"));
            }
            if !matches!(app, ProviderConfig::Apns(_)) {
                return bad(format!(
                    "{name:?}: an environment is for APNs apps; {:?} is not one",
                    target.app()
                ));
            }
        }
    }
    Ok(())
}

/// `[http]`: one listener for `/metrics`, `/health`, `/ready`, `/status`
/// and the registration API. On loopback by default; `enabled = false`
/// turns it off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Whether to listen at all.
    #[serde(default = "default_http_enabled")]
    pub enabled: bool,
    /// Address and port (`127.0.0.1:9357`; port 0 picks a free one, which
    /// the log names).
    #[serde(default = "default_http_listen")]
    pub listen: std::net::SocketAddr,
    /// `[http.api_keys]`: app name → the keys that may manage that app's
    /// registrations through the HTTP API (several, so that a key can be
    /// rotated). An app without keys is not served by the API.
    #[serde(default)]
    pub api_keys: BTreeMap<String, Vec<String>>,
}

/// The shortest API key accepted: 128 bits as base64 or hex is longer.
pub const MIN_API_KEY_LEN: usize = 22;

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: default_http_enabled(),
            listen: default_http_listen(),
            api_keys: BTreeMap::new(),
        }
    }
}

fn default_http_enabled() -> bool {
    true
}
fn default_http_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9357))
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `nudge=debug`, …; `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `human` (the default) or `json` (one JSON object a line, for a log
    /// collector).
    #[serde(default)]
    pub format: LogFormat,
}

/// How log lines are written (`[log] format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text for a terminal or the journal.
    #[default]
    Human,
    /// One JSON object per line: `timestamp`, `level`, `fields` (the
    /// message and the event's fields), `target`, and `spans` (each with
    /// its fields, e.g. a push's `app` and `node` hash).
    Json,
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
    250
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
    32_768
}
fn default_cache_max_age_secs() -> u64 {
    60
}
fn default_answer_within_ms() -> u64 {
    200
}
fn default_coalesce_ms() -> u64 {
    1000
}
fn default_push_timeout_secs() -> u64 {
    10
}
fn default_outbox_ttl_secs() -> u64 {
    3600
}
fn default_retry_min_ms() -> u64 {
    500
}
fn default_retry_max_secs() -> u64 {
    300
}
fn default_outbox_concurrency() -> usize {
    256
}
fn default_per_registration_per_minute() -> u32 {
    30
}
fn default_per_registration_burst() -> u32 {
    5
}
fn default_per_domain_per_second() -> u32 {
    2000
}
fn default_per_domain_burst() -> u32 {
    4000
}
fn default_brake_dead_tokens() -> u32 {
    20
}
fn default_brake_window_secs() -> u64 {
    600
}
fn default_answer_deadline_secs() -> u64 {
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
            cache_max_age_secs: default_cache_max_age_secs(),
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            answer_within_ms: default_answer_within_ms(),
            coalesce_ms: default_coalesce_ms(),
            push_timeout_secs: default_push_timeout_secs(),
            max_in_flight: default_max_in_flight(),
            answer_deadline_secs: default_answer_deadline_secs(),
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            ttl_secs: default_outbox_ttl_secs(),
            retry_min_ms: default_retry_min_ms(),
            retry_max_secs: default_retry_max_secs(),
            concurrency: default_outbox_concurrency(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            per_registration_per_minute: default_per_registration_per_minute(),
            per_registration_burst: default_per_registration_burst(),
            per_domain_per_second: default_per_domain_per_second(),
            per_domain_burst: default_per_domain_burst(),
        }
    }
}

impl Default for BrakeConfig {
    fn default() -> Self {
        BrakeConfig {
            dead_tokens: default_brake_dead_tokens(),
            window_secs: default_brake_window_secs(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: LogFormat::default(),
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
        // Well inside ejabberd's 32 s iq timeout (docs: README, operations).
        if !(10..=20_000).contains(&self.dispatch.answer_within_ms) {
            return bad(
                "dispatch.answer_within_ms",
                "must be between 10 and 20000 (ms)",
            );
        }
        if !(1..=25).contains(&self.dispatch.answer_deadline_secs)
            || self.dispatch.answer_deadline_secs.saturating_mul(1000)
                < self.dispatch.answer_within_ms
        {
            return bad(
                "dispatch.answer_deadline_secs",
                "must be between 1 and 25 (s), and not below dispatch.answer_within_ms",
            );
        }
        if self.dispatch.coalesce_ms > 60_000 {
            return bad("dispatch.coalesce_ms", "must be at most 60000 (ms)");
        }
        if self.outbox.ttl_secs == 0 {
            return bad("outbox.ttl_secs", "must be at least 1");
        }
        if self.outbox.retry_min_ms == 0
            || self.outbox.retry_max_secs.saturating_mul(1000) < self.outbox.retry_min_ms
        {
            return bad(
                "outbox.retry_min_ms",
                "must be at least 1 and at most outbox.retry_max_secs",
            );
        }
        if self.outbox.concurrency == 0 {
            return bad("outbox.concurrency", "must be at least 1");
        }
        let l = &self.limits;
        if l.per_registration_per_minute == 0
            || l.per_registration_burst == 0
            || l.per_domain_per_second == 0
            || l.per_domain_burst == 0
        {
            return bad("limits", "every rate and burst must be at least 1");
        }
        if self.brake.dead_tokens == 0 || self.brake.window_secs == 0 {
            return bad("brake", "dead_tokens and window_secs must be at least 1");
        }
        self.register.validate()?;
        self.dialects.validate(&self.apps)?;
        for (app, keys) in &self.http.api_keys {
            if !self.apps.contains_key(app) {
                return bad("http.api_keys", "names an app that is not configured");
            }
            if keys.iter().any(|k| k.len() < MIN_API_KEY_LEN) {
                return bad(
                    "http.api_keys",
                    "every key must be at least 22 characters (openssl rand -base64 24)",
                );
            }
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

    /// The apps the dialect tests name.
    const DIALECT_APPS: &str = "[component]\ndomain = 'push.example.org'\nsecret = 's'\n\
        [apps.monal]\nprovider = 'apns'\ntopic = 'org.example.monal'\nendpoint = 'sandbox'\n\
        token = { key_path = '/dev/null', key_id = 'K', team_id = 'T' }\n\
        [apps.conversations]\nprovider = 'fcm'\nservice_account_path = '/dev/null'\n";

    #[test]
    fn the_example_stateless_tables_parse() {
        // deploy/nudge.example.toml's dialect tables, uncommented.
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/nudge.example.toml"
        ))
        .expect("example config");
        let start = example.find("# [dialects.fpush]").expect("fpush table");
        let tables: String = example[start..]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.starts_with('[')
                    || l.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
            })
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .replace("\"myapp\"", "\"monal\"")
            .replace("quicksy = ", "conversations = ");
        let c = Config::from_toml(&format!("{DIALECT_APPS}{tables}")).expect("valid");
        let fpush = c.dialects.fpush.expect("fpush");
        assert_eq!(fpush.app_of("monalAlpha"), Some("monal"));
        assert_eq!(fpush.default_module.as_deref(), Some("monalProdiOS"));
        assert_eq!(fpush.limits.token_interval_secs, 20);
        let mongooseim = c.dialects.mongooseim.expect("mongooseim");
        assert_eq!(mongooseim.apns.as_deref(), Some("monal"));
        assert_eq!(mongooseim.limits.per_domain_per_minute, 600);
    }

    #[test]
    fn stateless_modes_are_off_unless_configured_and_checked() {
        let c = Config::from_toml(DIALECT_APPS).expect("valid");
        assert!(c.dialects.fpush.is_none() && c.dialects.mongooseim.is_none());
        for (toml, key) in [
            (
                "[dialects.fpush.modules]\nnope = ['monalProdiOS']\n",
                "dialects.fpush.modules",
            ),
            (
                "[dialects.fpush.modules]\nmonal = ['monalProdiOS-sandbox']\n",
                "dialects.fpush.modules",
            ),
            (
                "[dialects.fpush.modules]\nmonal = ['a']\nconversations = ['a']\n",
                "dialects.fpush.modules",
            ),
            (
                "[dialects.fpush]\ndefault_module = 'b'\n[dialects.fpush.modules]\nmonal = ['a']\n",
                "dialects.fpush.default_module",
            ),
            (
                "[dialects.fpush.modules]\nmonal = ['a']\n[dialects.fpush.limits]\ntoken_interval_secs = 0\n",
                "dialects.fpush.limits",
            ),
            ("[dialects.mongooseim]\n", "dialects.mongooseim"),
            (
                "[dialects.mongooseim]\nfcm = 'nope'\n",
                "dialects.mongooseim.fcm",
            ),
        ] {
            match Config::from_toml(&format!("{DIALECT_APPS}{toml}")) {
                Err(ConfigError::Value { key: k, .. }) => assert_eq!(k, key, "{toml}"),
                other => panic!("{toml}: {other:?}"),
            }
        }
        // A default module may name the sandbox variant.
        let c = Config::from_toml(&format!(
            "{DIALECT_APPS}[dialects.fpush]\ndefault_module = 'a-sandbox'\n[dialects.fpush.modules]\nmonal = ['a']\n"
        ))
        .expect("valid");
        assert_eq!(
            c.dialects.fpush.map(|f| f.limits.token_interval_secs),
            Some(20)
        );
    }

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
    fn log_format_is_human_by_default_json_by_choice_and_nothing_else() {
        let base = "[component]\ndomain = 'push.example.org'\nsecret = 's'\n";
        assert_eq!(
            Config::from_toml(base).unwrap().log.format,
            LogFormat::Human
        );
        let json = Config::from_toml_and_env(base, env(&[("NUDGE_LOG__FORMAT", "json")])).unwrap();
        assert_eq!(json.log.format, LogFormat::Json);
        match Config::from_toml(&format!("{base}[log]\nformat = 'xml'\n")) {
            Err(e) => assert!(e.to_string().contains("log.format"), "{e}"),
            Ok(_) => panic!("format = 'xml' accepted"),
        }
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

    const SISKIN_APPS: &str = "[component]\ndomain = 'push.example.org'\nsecret = 's'\n\
        [apps.siskin]\nprovider = 'apns'\ntopic = 'org.tigase.messenger.mobile'\n\
        token = { key_path = '/k.p8', key_id = 'ABCDE12345', team_id = 'TEAM123456' }\n\
        [apps.android]\nprovider = 'fcm'\nservice_account_path = '/sa.json'\n";

    #[test]
    fn dialect_tables_map_provider_names_to_apps() {
        let c = Config::from_toml(&format!(
            "{SISKIN_APPS}[dialects.siskin]\nproviders = {{ \"tigase:messenger:apns:1\" = \
             {{ app = 'siskin', environment = 'sandbox' }}, \"tigase:messenger:fcm:1\" = 'android' }}\n\
             [dialects.push_appserver]\ntypes = {{ apns = 'siskin', fcm = 'android' }}\n"
        ))
        .unwrap();
        let siskin = c.dialects.siskin.unwrap();
        let apns = &siskin.providers["tigase:messenger:apns:1"];
        assert_eq!(apns.app(), "siskin");
        assert_eq!(
            apns.environment(),
            Some(nudge_plugins::Environment::Sandbox)
        );
        let fcm = &siskin.providers["tigase:messenger:fcm:1"];
        assert_eq!((fcm.app(), fcm.environment()), ("android", None));
        let v1 = c.dialects.push_appserver.unwrap();
        assert_eq!(v1.types["fcm"].app(), "android");

        // The same as sub-tables, as deploy/nudge.example.toml writes them.
        let c = Config::from_toml(&format!(
            "{SISKIN_APPS}[dialects.siskin.providers]\n\
             \"tigase:messenger:apns:1\" = {{ app = 'siskin', environment = 'production' }}\n\
             \"tigase:messenger:fcm:1\" = 'android'\n\
             [dialects.push_appserver.types]\napns = 'siskin'\n"
        ))
        .unwrap();
        let siskin = c.dialects.siskin.unwrap();
        assert_eq!(
            siskin.providers["tigase:messenger:apns:1"].environment(),
            Some(nudge_plugins::Environment::Production)
        );
        assert_eq!(siskin.providers["tigase:messenger:fcm:1"].app(), "android");
        assert_eq!(
            c.dialects.push_appserver.unwrap().types["apns"].app(),
            "siskin"
        );

        // Absent tables: the dialects are off.
        let c = Config::from_toml(SISKIN_APPS).unwrap();
        assert!(c.dialects.siskin.is_none() && c.dialects.push_appserver.is_none());
    }

    #[test]
    fn dialect_tables_are_checked() {
        for (table, key) in [
            (
                "[dialects.siskin]\nproviders = { p = 'nosuchapp' }\n",
                "dialects.siskin.providers",
            ),
            (
                "[dialects.siskin]\nproviders = {}\n",
                "dialects.siskin.providers",
            ),
            (
                "[dialects.siskin]\nproviders = { p = { app = 'siskin', environment = 'staging' } }\n",
                "dialects.siskin.providers",
            ),
            (
                "[dialects.siskin]\nproviders = { p = { app = 'android', environment = 'sandbox' } }\n",
                "dialects.siskin.providers",
            ),
            (
                "[dialects.push_appserver]\ntypes = { webpush = 'android' }\n",
                "dialects.push_appserver.types",
            ),
            (
                "[dialects.push_appserver]\ntypes = { fcm = 'nosuchapp' }\n",
                "dialects.push_appserver.types",
            ),
        ] {
            let e = Config::from_toml(&format!("{SISKIN_APPS}{table}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{table}: {e}");
        }
        // An alert text too long for the size Siskin is told.
        let long = SISKIN_APPS.replace(
            "provider = 'apns'",
            &format!("provider = 'apns'\nalert_body = '{}'", "x".repeat(300)),
        );
        let e = Config::from_toml(&format!(
            "{long}[dialects.siskin]\nproviders = {{ p = 'siskin' }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("alert_body"), "{e}");
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
