//! The whole path in one process with the real push backends: fake XMPP
//! server → Nudge → APNs/FCM backend → the test-app's mock providers over
//! TLS HTTP/2. Proves registration through the commands with each
//! provider's token check, the alert/silent choice, and that a token the
//! provider declares dead removes the registration and reaches the XMPP
//! side as `item-not-found`.

mod common;

use common::{DbKind, FakeServer, STEP, ServerConn, TestDb, answer_kind, fixture, publish_iq};
use nudge::Config;
use nudge::xmpp::stream::LinkState;
use nudge_test_app::{Fault, PushFilter, TestApp, TestAppConfig};

struct Setup {
    app: TestApp,
    _server: FakeServer,
    conn: ServerConn,
    nudge: nudge::Running,
    db: TestDb,
    _files: tempfile::TempDir,
}

async fn setup() -> Setup {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let exported = app.export(files.path()).unwrap();
    let creds = app.apns_credentials();
    let server = FakeServer::start().await;
    let db = TestDb::new(DbKind::Sqlite).await;
    let config = Config::from_toml(&format!(
        r#"
[component]
domain = "{domain}"
secret = "{secret}"
port = {port}
[storage]
url = "{db}"
[outbox]
retry_min_ms = 100
retry_max_secs = 2
[apps.ios]
provider = "apns"
topic = "org.example.app"
endpoint = "{apns}"
ca_file = "{ca}"
token = {{ key_path = "{key}", key_id = "{key_id}", team_id = "{team_id}" }}
[apps.conversations]
provider = "fcm"
service_account_path = "{sa}"
endpoint = "{fcm}"
ca_file = "{ca}"
"#,
        domain = common::DOMAIN,
        secret = common::SECRET,
        port = server.port,
        db = db.url(),
        apns = app.apns_url(),
        ca = exported.ca_cert.display(),
        key = exported.apns_key.display(),
        key_id = creds.key_id,
        team_id = creds.team_id,
        sa = exported.fcm_service_account.display(),
        fcm = app.fcm_url(),
    ))
    .unwrap();
    let backends = nudge::app::build_backends(&config).await.unwrap();
    let mut nudge = nudge::start(&config, backends).await.unwrap();
    let conn = server.accept().await;
    assert!(nudge.wait_for_state(LinkState::Connected, STEP).await);
    Setup {
        app,
        _server: server,
        conn,
        nudge,
        db,
        _files: files,
    }
}

impl Setup {
    async fn register(
        &mut self,
        service: &str,
        device: &str,
        token: &str,
    ) -> Result<(String, String), (String, String)> {
        let a = self
            .conn
            .request(&common::register_iq(
                "alice@localhost",
                service,
                device,
                token,
            ))
            .await;
        let kind = answer_kind(&a);
        if kind.0 != "result" {
            return Err(kind);
        }
        let (_, node, secret) = common::registration_form(&a).unwrap();
        Ok((node, secret))
    }

    async fn finish(self) {
        self.nudge.stop().await;
        self.db.drop_db().await;
        self.app.shutdown().await;
    }
}

fn apns_token(tag: u8) -> String {
    format!("{:02x}", tag).repeat(32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_alert_and_background_pushes_reach_the_mock() {
    let mut s = setup().await;
    // The APNs token check refuses what Apple would.
    assert_eq!(
        s.register("apns", "iphone", "not-hex").await.unwrap_err(),
        ("modify".into(), "bad-request".into())
    );
    let token = apns_token(0xab);
    let (node, secret) = s.register("apns", "iphone", &token).await.unwrap();

    let a = s
        .conn
        .request(&fixture("prosody-publish-important.xml", &node, &secret))
        .await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    let push = s.app.wait_for_push(&token, STEP).await.expect("alert push");
    assert_eq!(push.status, 200);
    assert_eq!(
        push.headers.get("apns-push-type").map(String::as_str),
        Some("alert")
    );
    assert_eq!(
        push.headers.get("apns-priority").map(String::as_str),
        Some("10")
    );
    assert_eq!(push.payload["aps"]["mutable-content"], 1);

    // Prosody's empty fields: a silent wake-up.
    let a = s
        .conn
        .request(&fixture("prosody-publish-silent.xml", &node, &secret))
        .await;
    assert_eq!(answer_kind(&a).0, "result");
    let push = s
        .app
        .wait_for_push(&token, STEP)
        .await
        .expect("background push");
    assert_eq!(
        push.headers.get("apns-push-type").map(String::as_str),
        Some("background")
    );
    assert_eq!(
        push.headers.get("apns-priority").map(String::as_str),
        Some("5")
    );
    assert_eq!(push.payload["aps"]["content-available"], 1);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_push_carries_what_conversations_needs() {
    let mut s = setup().await;
    let token = "fcm-token-0123456789";
    let (node, secret) = s.register("fcm", "a1b2c3d4e5f60718", token).await.unwrap();
    let a = s
        .conn
        .request(&fixture("ejabberd-publish-summary.xml", &node, &secret))
        .await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    let push = s.app.wait_for_push(token, STEP).await.expect("fcm push");
    assert_eq!(push.status, 200);
    // hex(sha1("alice@localhost" + "\0" + device id))
    use sha1::Digest;
    let account = hex::encode(sha1::Sha1::digest(b"alice@localhost\0a1b2c3d4e5f60718"));
    assert_eq!(push.payload["data"]["account"], account.as_str());
    assert_eq!(push.payload["android"]["priority"], "high");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_tokens_are_removed_and_reported_as_item_not_found() {
    let mut s = setup().await;
    let apns = apns_token(0xcd);
    let (apns_node, apns_secret) = s.register("apns", "iphone", &apns).await.unwrap();
    let fcm = "fcm-dead-token";
    let (fcm_node, fcm_secret) = s.register("fcm", "android", fcm).await.unwrap();
    s.app.set_fault(&apns, Fault::Dead);
    s.app.set_fault(fcm, Fault::Dead);
    for (i, (node, secret)) in [(&apns_node, &apns_secret), (&fcm_node, &fcm_secret)]
        .into_iter()
        .enumerate()
    {
        let a = s
            .conn
            .request(&publish_iq(
                &format!("d{i}"),
                "localhost",
                node,
                Some(secret),
                "hi",
            ))
            .await;
        assert_eq!(answer_kind(&a), ("cancel".into(), "item-not-found".into()));
        assert!(
            s.nudge.store.find(node).await.unwrap().is_none(),
            "registration removed"
        );
    }
    s.finish().await;
}

/// A provider that fails for now: the publish is answered `result` at once
/// and the outbox delivers the push when the provider recovers, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_are_retried_until_delivered() {
    let mut s = setup().await;
    // APNs 500 twice, then accepted: delivered on the third try.
    let token = apns_token(0xef);
    let (node, secret) = s.register("apns", "iphone", &token).await.unwrap();
    s.app.set_fault(&token, Fault::FailTimes(2));
    let a = s
        .conn
        .request(&publish_iq("o1", "localhost", &node, Some(&secret), "hi"))
        .await;
    assert_eq!(answer_kind(&a).0, "result");
    let pushed = s.app.wait_for_delivered(&token, STEP).await;
    assert!(pushed.is_some(), "delivered after the provider recovered");
    let all = s.app.pushes(PushFilter::token(&token));
    assert_eq!(all.len(), 3, "two failures, then one delivery: {all:?}");
    assert_eq!(all.iter().filter(|p| p.status == 200).count(), 1);
    assert!(s.nudge.store.find(&node).await.unwrap().is_some());

    // FCM 429 with Retry-After: 1 s: honoured, then delivered.
    let fcm = "fcm-throttled-once";
    let (node, secret) = s.register("fcm", "android", fcm).await.unwrap();
    s.app.set_fault(
        fcm,
        Fault::Throttle {
            retry_after_secs: 1,
        },
    );
    let a = s
        .conn
        .request(&publish_iq("o2", "localhost", &node, Some(&secret), "hi"))
        .await;
    assert_eq!(answer_kind(&a).0, "result");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.app.clear_fault(fcm);
    let first = s.app.pushes(PushFilter::token(fcm));
    assert_eq!(first.len(), 1, "no retry before Retry-After: {first:?}");
    let pushed = s.app.wait_for_delivered(fcm, STEP).await.unwrap();
    let waited = pushed
        .received_at
        .duration_since(first[0].received_at)
        .unwrap();
    assert!(waited >= std::time::Duration::from_secs(1), "{waited:?}");
    let outbox = s.nudge.store.outbox();
    assert!(
        common::eventually(|| async { outbox.get(&node).await.unwrap().is_none() }).await,
        "delivered push cleared from the outbox"
    );
    s.finish().await;
}

/// A token declared dead by a retry removes the registration; the next
/// publish is answered `item-not-found`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_token_found_by_a_retry_removes_the_registration() {
    let mut s = setup().await;
    let token = apns_token(0xab);
    let (node, secret) = s.register("apns", "iphone", &token).await.unwrap();
    s.app.set_fault(&token, Fault::FailTimes(1));
    let a = s
        .conn
        .request(&publish_iq("r1", "localhost", &node, Some(&secret), "hi"))
        .await;
    assert_eq!(answer_kind(&a).0, "result");
    s.app.set_fault(&token, Fault::Dead);
    let store = &s.nudge.store;
    assert!(
        common::eventually(|| async { store.find(&node).await.unwrap().is_none() }).await,
        "not removed by the retry"
    );
    let a = s
        .conn
        .request(&publish_iq("r2", "localhost", &node, Some(&secret), "hi"))
        .await;
    assert_eq!(answer_kind(&a), ("cancel".into(), "item-not-found".into()));
    assert!(s.nudge.store.outbox().get(&node).await.unwrap().is_none());
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_apps_exported_config_snippet_is_accepted() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let exported = app.export(files.path()).unwrap();
    let snippet = std::fs::read_to_string(&exported.nudge_apps_toml).unwrap();
    let config = Config::from_toml(&format!(
        "[component]\ndomain = 'push.localhost'\nsecret = 'x'\n{snippet}"
    ))
    .unwrap();
    let backends = nudge::app::build_backends(&config).await.unwrap();
    assert_eq!(backends.apps(), vec!["testapp-apns", "testapp-fcm"]);
    app.shutdown().await;
}
