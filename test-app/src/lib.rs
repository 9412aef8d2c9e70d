//! Nudge's test-app: stands in for the phone and the push providers so that
//! every push Nudge sends can be verified end to end, with no real phone and
//! no Apple or Google account.
//!
//! [`start`] runs, on 127.0.0.1 and ephemeral ports by default:
//! - a **mock APNs** (HTTP/2 only, TLS): `POST /3/device/{token}`, JWT
//!   (ES256) or client-certificate authentication, Apple's header and
//!   payload checks and error reasons ([`apns`] module docs list
//!   every check); the same API under `/sandbox` and `/production` stands
//!   for Apple's two environments, and each push records which it reached
//!   ([`TestApp::apns_sandbox_url`], [`RecordedPush::environment`]);
//! - a **mock FCM HTTP v1** (TLS, HTTP/2 or 1.1):
//!   `POST /v1/projects/{project}/messages:send`, with bearer tokens from
//! - a **Web Push endpoint** (TLS, HTTP/2 or 1.1), a stand-in for a
//!   browser's push service: [`TestApp::webpush_subscribe`] makes a
//!   subscription (key pair and auth secret kept here), `POST
//!   /webpush/{id}` checks VAPID, decrypts the `aes128gcm` body and records
//!   the plaintext ([`webpush`] module docs list every check);
//! - a **mock OAuth token endpoint** (the service-account JWT-bearer grant),
//!   served over plain HTTP on the control port (`/token`, the default
//!   `token_uri`) and over HTTPS on the FCM port (`/token`);
//! - a **control API and live page** (plain HTTP): list and wait for pushes,
//!   set faults, reset, export credentials, and a page that shows the pushes
//!   per device like a phone's notification list, updated live by SSE.
//!
//! Everything is generated at start: a CA and server certificate
//! ([`TestApp::ca_cert_pem`]), an APNs `.p8` key with key id and team id
//! ([`TestApp::apns_credentials`]), an APNs client certificate
//! ([`TestApp::apns_client_identity`]) and an FCM service account JSON whose
//! `token_uri` points at the mock ([`TestApp::fcm_service_account_json`]).
//!
//! # Token naming convention (faults without a control call)
//! | token starts with | fault |
//! |---|---|
//! | `dead` | always dead: APNs 410 `Unregistered`, FCM 404 `UNREGISTERED`, Web Push 410 |
//! | `badd` | malformed: APNs 400 `BadDeviceToken`, FCM 400 `INVALID_ARGUMENT`, Web Push 404 |
//! | `c001`*N* | throttled: 429 with `Retry-After: N` (default 1) |
//! | `fa11`*N* | fails *N* times (default 1) with APNs 500 / FCM 503 / Web Push 503, then succeeds |
//! | `de1a`*N* | answers after *N* ms (default 1000) |
//!
//! Prefixes are case-insensitive hex, so they work for APNs tokens; *N* is
//! the decimal digits right after the prefix (at most 5). A Web Push
//! subscription takes its name from [`TestApp::webpush_subscribe_named`].
//! See
//! [`faults`] for details and [`TestApp::set_fault`] for the
//! explicit way. [`random_apns_token`] makes tokens that match no prefix.
//!
//! # Waiting for pushes
//! [`TestApp::wait_for_push`] returns the next push for a token that no
//! earlier wait returned, including one recorded before the call; see
//! [`recorder`] for the exact semantics.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), nudge_test_app::Error> {
//! use std::time::Duration;
//! let app = nudge_test_app::start(Default::default()).await?;
//! // configure the backend under test with app.apns_url(), app.ca_cert_pem(),
//! // app.apns_credentials(), ... then make it push to a token:
//! let push = app.wait_for_push("0123abcd", Duration::from_secs(5)).await;
//! assert_eq!(push.map(|p| p.status), Some(200));
//! app.shutdown().await;
//! # Ok(()) }
//! ```

pub mod apns;
pub mod conformance;
mod control;
pub mod credentials;
pub mod faults;
pub mod fcm;
pub mod jwt;
pub mod oauth;
mod page;
pub mod recorder;
mod server;
pub mod stats;
mod tls;
pub mod webpush;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use credentials::{ApnsClientIdentity, ApnsCredentials};
pub use faults::{Fault, FaultSpec};
pub use recorder::{
    ApnsEnvironment, Arrival, AuthMethod, Provider, PushFilter, PushSummary, RecordedPush,
};
pub use stats::Stats;
pub use tls::TlsError;
pub use webpush::{SubscribeOptions, WebPushError, WebPushSubscription};

/// How to run the test-app. `TestAppConfig::default()` is usable as-is:
/// ephemeral ports on 127.0.0.1, topic `org.example.app`, project
/// `nudge-test`, one-hour OAuth tokens.
#[derive(Debug, Clone)]
pub struct TestAppConfig {
    /// Address every endpoint binds to.
    pub bind: IpAddr,
    /// Port of the mock APNs (0: ephemeral).
    pub apns_port: u16,
    /// Port of the mock FCM and the HTTPS token endpoint (0: ephemeral).
    pub fcm_port: u16,
    /// Port of the Web Push endpoint (0: ephemeral).
    pub webpush_port: u16,
    /// Port of the control API, live page and HTTP token endpoint (0:
    /// ephemeral).
    pub control_port: u16,
    /// APNs topics (bundle ids) the key may push to; push-type suffixes
    /// (`.voip`, …) are added by the mock. Empty: any topic. The first one
    /// is the client certificate's topic.
    pub apns_topics: Vec<String>,
    /// Force the APNs key id instead of a random one.
    pub apns_key_id: Option<String>,
    /// Force the APNs team id instead of a random one.
    pub apns_team_id: Option<String>,
    /// Oldest `iat` the mock APNs accepts (Apple: one hour).
    pub apns_jwt_max_age: Duration,
    /// When set, a new provider token less than this after the previous new
    /// one is refused with 429 `TooManyProviderTokenUpdates` (Apple: about
    /// 20 minutes). Off by default so that short tests may make tokens
    /// freely.
    pub apns_min_token_refresh: Option<Duration>,
    /// Reject (instead of only warn about) requests Apple accepts but that
    /// are almost surely a bug; see [`apns`].
    pub apns_strict: bool,
    /// The FCM project id (in the service account and the URL).
    pub fcm_project_id: String,
    /// Lifetime of the access tokens the OAuth endpoint issues; settable
    /// later with [`TestApp::set_oauth_token_lifetime`]. Note that gcp_auth
    /// treats a token as expired 20 s before its end, so a lifetime under
    /// 20 s makes it fetch a new token for every request.
    pub oauth_token_lifetime: Duration,
    /// Put the HTTPS token endpoint (on the FCM port, trust via the CA) in
    /// the service account's `token_uri` instead of the plain HTTP one on the
    /// control port. gcp_auth only trusts the system's roots for HTTPS, so
    /// the default is HTTP; both endpoints always work.
    pub oauth_token_uri_https: bool,
    /// How many pushes the record keeps (oldest dropped first).
    pub max_recorded: usize,
}

impl Default for TestAppConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            apns_port: 0,
            fcm_port: 0,
            webpush_port: 0,
            control_port: 0,
            apns_topics: vec!["org.example.app".into()],
            apns_key_id: None,
            apns_team_id: None,
            apns_jwt_max_age: Duration::from_secs(3600),
            apns_min_token_refresh: None,
            apns_strict: false,
            fcm_project_id: "nudge-test".into(),
            oauth_token_lifetime: Duration::from_secs(3600),
            oauth_token_uri_https: false,
            max_recorded: 20_000,
        }
    }
}

/// Why the test-app could not start or export.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the {endpoint} endpoint on {addr}: {source}")]
    Bind {
        endpoint: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    #[error("writing {path}: {source}")]
    Export {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// State shared by every endpoint of one test-app.
pub(crate) struct Shared {
    pub config: TestAppConfig,
    pub apns_key: credentials::ApnsKey,
    pub apns: apns::ApnsState,
    pub service_account: credentials::ServiceAccount,
    pub service_account_json: String,
    pub pki: tls::Pki,
    pub oauth: oauth::Tokens,
    /// Every URL of the token endpoint; an assertion's `aud` must be one.
    pub token_urls: Vec<String>,
    pub urls: Urls,
    pub recorder: recorder::Recorder,
    pub faults: faults::Faults,
    pub stats: stats::Counters,
    pub webpush: webpush::WebPushState,
}

/// Where the endpoints listen.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Urls {
    pub apns: String,
    pub fcm: String,
    pub webpush: String,
    pub oauth_token: String,
    pub control: String,
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random 32-byte APNs device token (64 hex digits) that matches none of
/// the fault prefixes (it starts with `0`).
pub fn random_apns_token() -> String {
    let mut bytes: [u8; 32] = rand::random();
    bytes[0] &= 0x0f;
    hex::encode(bytes)
}

async fn bind(endpoint: &'static str, ip: IpAddr, port: u16) -> Result<TcpListener, Error> {
    let addr = SocketAddr::new(ip, port);
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        endpoint,
        addr,
        source,
    })
}

fn local_addr(endpoint: &'static str, l: &TcpListener, ip: IpAddr) -> Result<SocketAddr, Error> {
    l.local_addr().map_err(|source| Error::Bind {
        endpoint,
        addr: SocketAddr::new(ip, 0),
        source,
    })
}

/// Starts every endpoint and returns once they accept connections.
pub async fn start(config: TestAppConfig) -> Result<TestApp, Error> {
    let apns_l = bind("APNs", config.bind, config.apns_port).await?;
    let fcm_l = bind("FCM", config.bind, config.fcm_port).await?;
    let webpush_l = bind("Web Push", config.bind, config.webpush_port).await?;
    let control_l = bind("control", config.bind, config.control_port).await?;
    let apns_addr = local_addr("APNs", &apns_l, config.bind)?;
    let fcm_addr = local_addr("FCM", &fcm_l, config.bind)?;
    let webpush_addr = local_addr("Web Push", &webpush_l, config.bind)?;
    let control_addr = local_addr("control", &control_l, config.bind)?;

    // URLs name 127.0.0.1 when bound to every address: it is where the
    // certificate is valid and where local clients reach the mocks.
    let host = if config.bind.is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        match config.bind {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        }
    };
    let http_token = format!("http://{host}:{}/token", control_addr.port());
    let https_token = format!("https://{host}:{}/token", fcm_addr.port());
    let token_urls = vec![
        http_token.clone(),
        https_token.clone(),
        format!("http://localhost:{}/token", control_addr.port()),
        format!("https://localhost:{}/token", fcm_addr.port()),
    ];
    let urls = Urls {
        apns: format!("https://{host}:{}", apns_addr.port()),
        fcm: format!("https://{host}:{}", fcm_addr.port()),
        webpush: format!("https://{host}:{}", webpush_addr.port()),
        oauth_token: if config.oauth_token_uri_https {
            https_token
        } else {
            http_token
        },
        control: format!("http://{host}:{}", control_addr.port()),
    };

    let first_topic = config
        .apns_topics
        .first()
        .cloned()
        .unwrap_or_else(|| "org.example.app".into());
    let pki = tls::Pki::generate(Some(config.bind), &first_topic)?;
    let apns_acceptor = TlsAcceptor::from(pki.apns_server_config()?);
    let fcm_acceptor = TlsAcceptor::from(pki.fcm_server_config()?);
    let webpush_acceptor = TlsAcceptor::from(pki.webpush_server_config()?);
    let apns_key =
        credentials::ApnsKey::generate(config.apns_key_id.clone(), config.apns_team_id.clone())?;
    let service_account = credentials::ServiceAccount::generate(&config.fcm_project_id)?;
    let service_account_json = service_account.json(&urls.oauth_token);

    let shared = Arc::new(Shared {
        oauth: oauth::Tokens::new(config.oauth_token_lifetime),
        recorder: recorder::Recorder::new(config.max_recorded),
        config,
        apns_key,
        apns: apns::ApnsState::default(),
        service_account,
        service_account_json,
        pki,
        token_urls,
        urls,
        faults: faults::Faults::default(),
        stats: stats::Counters::default(),
        webpush: webpush::WebPushState::default(),
    });

    let tasks = vec![
        tokio::spawn(server::run_apns(apns_l, apns_acceptor, shared.clone())),
        tokio::spawn(server::run_fcm(fcm_l, fcm_acceptor, shared.clone())),
        tokio::spawn(server::run_webpush(
            webpush_l,
            webpush_acceptor,
            shared.clone(),
        )),
        tokio::spawn(control::serve(control_l, shared.clone())),
    ];
    tracing::info!(
        apns = %shared.urls.apns,
        fcm = %shared.urls.fcm,
        webpush = %shared.urls.webpush,
        control = %shared.urls.control,
        "test-app started"
    );
    Ok(TestApp { shared, tasks })
}

/// A running test-app. Dropping it stops every endpoint (as
/// [`TestApp::shutdown`] does, without waiting).
pub struct TestApp {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp")
            .field("urls", &self.shared.urls)
            .finish_non_exhaustive()
    }
}

/// The files [`TestApp::export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFiles {
    /// The CA certificate to trust (`ca.pem`).
    pub ca_cert: PathBuf,
    /// The APNs key (`AuthKey_<KEYID>.p8`, Apple's file name).
    pub apns_key: PathBuf,
    /// Key id and team id (`apns-key.json`: `{"key_id","team_id","topics"}`).
    pub apns_key_info: PathBuf,
    /// Client certificate and key for certificate auth
    /// (`apns-client-cert.pem`, `apns-client-key.pem`).
    pub apns_client_cert: PathBuf,
    pub apns_client_key: PathBuf,
    /// `fcm-service-account.json`.
    pub fcm_service_account: PathBuf,
    /// Everything in one JSON (`test-app.json`): URLs, ids, file paths.
    pub summary: PathBuf,
    /// A configuration snippet for Nudge (`nudge-apps.toml`).
    pub nudge_apps_toml: PathBuf,
}

impl TestApp {
    /// `https://127.0.0.1:PORT`: the mock APNs (HTTP/2 only, TLS).
    pub fn apns_url(&self) -> String {
        self.shared.urls.apns.clone()
    }

    /// `https://127.0.0.1:PORT/sandbox`: the mock APNs as the sandbox
    /// endpoint (pushes under it are recorded as
    /// [`ApnsEnvironment::Sandbox`]).
    pub fn apns_sandbox_url(&self) -> String {
        format!(
            "{}{}",
            self.shared.urls.apns,
            ApnsEnvironment::Sandbox.path_prefix()
        )
    }

    /// `https://127.0.0.1:PORT/production`: the mock APNs as the
    /// production endpoint, named explicitly (the bare
    /// [`apns_url`](Self::apns_url) is production too).
    pub fn apns_production_url(&self) -> String {
        format!(
            "{}{}",
            self.shared.urls.apns,
            ApnsEnvironment::Production.path_prefix()
        )
    }

    /// `https://127.0.0.1:PORT`: base URL of the mock FCM v1 API.
    pub fn fcm_url(&self) -> String {
        self.shared.urls.fcm.clone()
    }

    /// `https://127.0.0.1:PORT`: the Web Push endpoint's origin (TLS,
    /// HTTP/2 or 1.1); subscriptions' endpoints are under `/webpush/`, and
    /// a VAPID token's `aud` must be this.
    pub fn webpush_url(&self) -> String {
        self.shared.urls.webpush.clone()
    }

    /// A new Web Push subscription: its endpoint, keys and the device token
    /// to register with Nudge ([`WebPushSubscription::token`]); pushes are
    /// recorded under that token. Its id matches no fault prefix.
    pub fn webpush_subscribe(&self) -> WebPushSubscription {
        self.shared
            .webpush
            .subscribe_plain(&self.shared.urls.webpush)
    }

    /// A new Web Push subscription whose id starts with `name` (1 to 64
    /// characters of `A-Z a-z 0-9 - _`), so that a fault prefix in the name
    /// applies to it: `webpush_subscribe_named("dead")` is answered 410.
    pub fn webpush_subscribe_named(&self, name: &str) -> Result<WebPushSubscription, WebPushError> {
        self.webpush_subscribe_with(&SubscribeOptions {
            name: Some(name.to_owned()),
            ..SubscribeOptions::default()
        })
    }

    /// A new Web Push subscription as `options` say: a name (see
    /// [`webpush_subscribe_named`](Self::webpush_subscribe_named)), the
    /// application server key it is for (pushes signed with another VAPID
    /// key get 403, as from a browser's push service).
    pub fn webpush_subscribe_with(
        &self,
        options: &SubscribeOptions,
    ) -> Result<WebPushSubscription, WebPushError> {
        self.shared
            .webpush
            .subscribe(&self.shared.urls.webpush, options)
    }

    /// Ends a subscription, given its token, endpoint or id, as a browser
    /// that unsubscribed: later pushes to it get 410 `Gone`. False when no
    /// live subscription matched.
    pub fn webpush_unsubscribe(&self, token: &str) -> bool {
        self.shared.webpush.unsubscribe(token)
    }

    /// The `token_uri` written into the service account JSON.
    pub fn oauth_token_url(&self) -> String {
        self.shared.urls.oauth_token.clone()
    }

    /// `http://127.0.0.1:PORT`: control API and live page.
    pub fn control_url(&self) -> String {
        self.shared.urls.control.clone()
    }

    /// The CA certificate (PEM) that every TLS endpoint chains to.
    pub fn ca_cert_pem(&self) -> String {
        self.shared.pki.ca_cert_pem.clone()
    }

    /// The APNs `.p8` key, key id and team id the mock accepts JWTs from.
    pub fn apns_credentials(&self) -> ApnsCredentials {
        self.shared.apns_key.credentials.clone()
    }

    /// A client certificate and key the mock APNs accepts instead of JWTs.
    pub fn apns_client_identity(&self) -> ApnsClientIdentity {
        self.shared.pki.client_identity.clone()
    }

    /// The APNs topics the mock allows (empty: any).
    pub fn apns_topics(&self) -> Vec<String> {
        self.shared.config.apns_topics.clone()
    }

    /// The service account JSON (type, project_id, private_key_id,
    /// private_key, client_email, token_uri, …).
    pub fn fcm_service_account_json(&self) -> String {
        self.shared.service_account_json.clone()
    }

    pub fn fcm_project_id(&self) -> String {
        self.shared.service_account.project_id.clone()
    }

    /// The recorded pushes that match `filter`, oldest first.
    pub fn pushes(&self, filter: PushFilter) -> Vec<RecordedPush> {
        self.shared.recorder.list(&filter)
    }

    /// The next push for `token` (any status) that no earlier wait
    /// returned, recorded before or during the call; `None` after
    /// `timeout`.
    pub async fn wait_for_push(&self, token: &str, timeout: Duration) -> Option<RecordedPush> {
        self.shared.recorder.wait(token, timeout, false).await
    }

    /// Like [`wait_for_push`](Self::wait_for_push) but returns the next
    /// *accepted* (2xx) push, consuming rejected ones on the way (for
    /// retry tests: "it eventually got through").
    pub async fn wait_for_delivered(&self, token: &str, timeout: Duration) -> Option<RecordedPush> {
        self.shared.recorder.wait(token, timeout, true).await
    }

    /// Sets the fault for a token (replacing any earlier one and
    /// restarting its `FailTimes` count).
    pub fn set_fault(&self, token: &str, fault: Fault) {
        self.shared.faults.set(token, fault);
    }

    /// Removes the fault set for a token (a fault from its name stays).
    pub fn clear_fault(&self, token: &str) {
        self.shared.faults.clear(token);
    }

    /// Sets a fault for every token of one mock (an outage:
    /// `Fault::FailUntil`), replacing any earlier one. A fault set for a
    /// token still wins over it; it wins over a token's name.
    pub fn set_provider_fault(&self, provider: Provider, fault: Fault) {
        self.shared.faults.set_provider(provider, fault);
    }

    /// Removes the provider-wide fault of one mock.
    pub fn clear_provider_fault(&self, provider: Provider) {
        self.shared.faults.clear_provider(provider);
    }

    /// Every push recorded from now on, as it arrives, with a monotonic
    /// arrival time (for a load harness: `bench/`). The channel is
    /// unbounded; drop the receiver to stop.
    pub fn arrivals(&self) -> tokio::sync::mpsc::UnboundedReceiver<Arrival> {
        self.shared.recorder.arrivals()
    }

    /// Notes that a publish for `token` happens now; the next push for it
    /// carries the latency since ([`RecordedPush::latency`]).
    pub fn note_publish(&self, token: &str) {
        self.shared.recorder.note_publish(token);
    }

    /// Forgets recorded pushes, wait cursors, faults, publish marks and
    /// counters. Issued OAuth tokens and cached JWTs stay valid, so that a
    /// running Nudge need not re-authenticate.
    pub fn reset(&self) {
        self.shared.recorder.reset();
        self.shared.faults.reset();
        self.shared.stats.reset();
    }

    /// The counters since start or the last reset.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// Makes every access token issued so far invalid (FCM answers 401),
    /// as when Google revokes a key; new tokens can be fetched.
    pub fn revoke_oauth_tokens(&self) {
        self.shared.oauth.revoke_all();
    }

    /// Lifetime of access tokens issued from now on.
    pub fn set_oauth_token_lifetime(&self, lifetime: Duration) {
        self.shared.oauth.set_lifetime(lifetime);
    }

    /// Writes the credentials and a Nudge configuration snippet into `dir`
    /// (created if missing); see [`ExportedFiles`].
    pub fn export(&self, dir: &Path) -> Result<ExportedFiles, Error> {
        let write = |name: &str, contents: &str| -> Result<PathBuf, Error> {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(|source| Error::Export {
                path: path.clone(),
                source,
            })?;
            Ok(path)
        };
        std::fs::create_dir_all(dir).map_err(|source| Error::Export {
            path: dir.to_owned(),
            source,
        })?;
        let creds = self.apns_credentials();
        let identity = self.apns_client_identity();
        let files = ExportedFiles {
            ca_cert: write("ca.pem", &self.ca_cert_pem())?,
            apns_key: write(&format!("AuthKey_{}.p8", creds.key_id), &creds.key_pem)?,
            apns_key_info: write(
                "apns-key.json",
                &serde_json::json!({
                    "key_id": creds.key_id,
                    "team_id": creds.team_id,
                    "topics": self.apns_topics(),
                })
                .to_string(),
            )?,
            apns_client_cert: write("apns-client-cert.pem", &identity.cert_pem)?,
            apns_client_key: write("apns-client-key.pem", &identity.key_pem)?,
            fcm_service_account: write(
                "fcm-service-account.json",
                &self.fcm_service_account_json(),
            )?,
            summary: dir.join("test-app.json"),
            nudge_apps_toml: dir.join("nudge-apps.toml"),
        };
        write("nudge-apps.toml", &self.nudge_apps_toml(&files))?;
        write(
            "test-app.json",
            &serde_json::to_string_pretty(&serde_json::json!({
                "urls": self.shared.urls,
                "apns": {
                    "key_id": creds.key_id,
                    "team_id": creds.team_id,
                    "topics": self.apns_topics(),
                    "key_file": files.apns_key,
                    "client_cert_file": files.apns_client_cert,
                    "client_key_file": files.apns_client_key,
                },
                "fcm": {
                    "project_id": self.fcm_project_id(),
                    "service_account_file": files.fcm_service_account,
                },
                "webpush": {
                    "url": self.webpush_url(),
                    "subscriptions": format!("{}/api/webpush/subscriptions", self.control_url()),
                },
                "ca_file": files.ca_cert,
            }))
            .unwrap_or_default(),
        )?;
        Ok(files)
    }

    /// A `[apps.*]` snippet for Nudge's configuration file that points an
    /// APNs app and an FCM app at the mocks, and a Web Push app, commented
    /// out, that needs only a VAPID key.
    fn nudge_apps_toml(&self, files: &ExportedFiles) -> String {
        let creds = self.apns_credentials();
        let topic = self
            .apns_topics()
            .first()
            .cloned()
            .unwrap_or_else(|| "org.example.app".into());
        let q = |p: &Path| toml_string(&p.display().to_string());
        format!(
            "# Nudge apps pointed at nudge-test-app (generated; keys change every start).\n\
             [apps.testapp-apns]\n\
             provider = \"apns\"\n\
             topic = {topic}\n\
             endpoint = {endpoint}\n\
             sandbox_endpoint = {sandbox}\n\
             production_endpoint = {production}\n\
             ca_file = {ca}\n\
             \n\
             [apps.testapp-apns.token]\n\
             key_path = {key}\n\
             key_id = {key_id}\n\
             team_id = {team_id}\n\
             \n\
             # Certificate authentication instead of [apps.testapp-apns.token]:\n\
             # [apps.testapp-apns.certificate]\n\
             # cert_path = {cert}\n\
             # key_path = {cert_key}\n\
             \n\
             # FCM project {project}; the service account's token_uri is {token_uri}.\n\
             [apps.testapp-fcm]\n\
             provider = \"fcm\"\n\
             service_account_path = {sa}\n\
             endpoint = {fcm}\n\
             ca_file = {ca}\n\
             \n\
             # Web Push: subscriptions come from the test-app\n\
             # (POST {control}/api/webpush/subscriptions), endpoints under {webpush}/webpush/.\n\
             # Commented out: it needs a VAPID key of Nudge's own.\n\
             # [apps.testapp-webpush]\n\
             # provider = \"webpush\"\n\
             # vapid_private_key = \"<base64url P-256 scalar, from `nudge vapid generate`>\"\n\
             # vapid_subject = \"mailto:ops@example.org\"\n\
             # ca_file = {ca}\n\
             # allow_local_endpoints = true\n",
            topic = toml_string(&topic),
            endpoint = toml_string(&self.apns_url()),
            sandbox = toml_string(&self.apns_sandbox_url()),
            production = toml_string(&self.apns_production_url()),
            ca = q(&files.ca_cert),
            key = q(&files.apns_key),
            key_id = toml_string(&creds.key_id),
            team_id = toml_string(&creds.team_id),
            cert = q(&files.apns_client_cert),
            cert_key = q(&files.apns_client_key),
            sa = q(&files.fcm_service_account),
            token_uri = self.oauth_token_url(),
            fcm = toml_string(&self.fcm_url()),
            project = self.fcm_project_id(),
            control = self.control_url(),
            webpush = self.webpush_url(),
        )
    }

    /// Stops every endpoint and waits until they are gone.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            // The only error is the cancellation just asked for.
            let _ = t.await;
        }
    }
}

/// A TOML basic string (JSON string escaping is a valid subset).
fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
