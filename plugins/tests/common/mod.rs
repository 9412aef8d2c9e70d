//! Shared set-up of the backend integration tests: a test-app (mock APNs,
//! mock FCM, mock OAuth) on 127.0.0.1, its credentials written to a
//! temporary directory, and backend configurations pointing at it.
#![allow(dead_code)] // each test binary uses its own part

pub mod proxy;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use nudge_plugins::apns::{ApnsConfig, ApnsEndpoint, ApnsTokenAuth};
use nudge_plugins::fcm::FcmConfig;
use nudge_plugins::{Device, Notification, Outcome, PushBackend};
use nudge_test_app::{TestApp, TestAppConfig};

/// Every test finishes in this time or fails.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Runs a test body with a time limit.
pub async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("test exceeded its time limit")
}

/// A running test-app and the files backends read.
pub struct Mock {
    pub app: TestApp,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub apns_key: PathBuf,
    pub apns_cert: PathBuf,
    pub apns_cert_key: PathBuf,
    pub service_account: PathBuf,
}

pub async fn start(config: TestAppConfig) -> Mock {
    let app = nudge_test_app::start(config)
        .await
        .expect("test-app starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write credentials");
        path
    };
    let creds = app.apns_credentials();
    let identity = app.apns_client_identity();
    Mock {
        ca_file: write("ca.pem", app.ca_cert_pem()),
        apns_key: write("AuthKey.p8", creds.key_pem),
        apns_cert: write("apns-cert.pem", identity.cert_pem),
        apns_cert_key: write("apns-key.pem", identity.key_pem),
        service_account: write("service-account.json", app.fcm_service_account_json()),
        app,
        dir,
    }
}

impl Mock {
    /// Token-authenticated APNs app for the mock's first topic.
    pub fn apns_config(&self) -> ApnsConfig {
        let creds = self.app.apns_credentials();
        let text = format!(
            "topic = {topic:?}\nendpoint = {url:?}\nca_file = {ca:?}\n\
             [token]\nkey_path = {key:?}\nkey_id = {kid:?}\nteam_id = {team:?}\n",
            topic = self.app.apns_topics()[0],
            url = self.app.apns_url(),
            ca = self.ca_file.display().to_string(),
            key = self.apns_key.display().to_string(),
            kid = creds.key_id,
            team = creds.team_id,
        );
        let config: ApnsConfig = toml::from_str(&text).expect("APNs config parses");
        assert_eq!(config.endpoint, ApnsEndpoint::Url(self.app.apns_url()));
        assert!(matches!(config.token, Some(ApnsTokenAuth { .. })));
        config
    }

    /// FCM app for the mock's project, its service account pointing at the
    /// mock's token endpoint.
    pub fn fcm_config(&self) -> FcmConfig {
        let text = format!(
            "service_account_path = {sa:?}\nendpoint = {url:?}\nca_file = {ca:?}\n",
            sa = self.service_account.display().to_string(),
            url = self.app.fcm_url(),
            ca = self.ca_file.display().to_string(),
        );
        toml::from_str(&text).expect("FCM config parses")
    }
}

pub fn device(token: &str) -> Device {
    Device {
        token: token.to_owned(),
        app: "test".into(),
        account: Some("romeo@montague.example".into()),
        device_id: Some("a1b2c3d4e5f60718".into()),
        muc: None,
        collapse_id: None,
        ..Default::default()
    }
}

/// A message for a person (Prosody's form with a body).
pub fn important() -> Notification {
    Notification {
        message_count: Some(1),
        last_message_sender: Some("juliet@capulet.example/balcony".into()),
        last_message_body: Some("Wherefore art thou?".into()),
        fields: vec![],
        ..Default::default()
    }
}

/// A silent wake-up (ejabberd's empty notification).
pub fn silent() -> Notification {
    Notification::default()
}

/// A token of the mock's fault convention (`dead`, `badd`, `c001N`, …),
/// ended by an `f` (so that random digits do not extend `N`) and padded
/// with hex to a valid APNs length.
pub fn apns_token(prefix: &str) -> String {
    let mut token = format!("{prefix}f");
    let random = nudge_test_app::random_apns_token();
    token.push_str(&random[..64 - token.len()]);
    token
}

/// Sends one important or silent push to `token`.
pub async fn push(backend: &dyn PushBackend, token: &str, important_: bool) -> Outcome {
    let n = if important_ { important() } else { silent() };
    backend.send(&device(token), &n).await
}

/// A provider slower than the backend's one-second timeout: the push is
/// Transient (never the token's fault), and comes back within the timeout.
pub async fn assert_timeout_is_transient(backend: &dyn PushBackend, app: &TestApp, token: &str) {
    app.set_fault(token, nudge_test_app::Fault::Delay(Duration::from_secs(3)));
    let started = std::time::Instant::now();
    let o = push(backend, token, true).await;
    assert!(
        matches!(&o, Outcome::Transient { reason, .. } if reason.starts_with("timeout")),
        "{o:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(2500));
}
