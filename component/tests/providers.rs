//! The whole path in one process with the real push backends: fake XMPP
//! server → Nudge → APNs/FCM backend → the test-app's mock providers over
//! TLS HTTP/2. Proves registration through the commands with each
//! provider's token check, the alert/silent choice, and that a token the
//! provider declares dead removes the registration and reaches the XMPP
//! side as `item-not-found`; that one APNs app serves sandbox and
//! production registrations, each at its own endpoint; and the Tigase
//! extensions end to end: a Siskin registration's call rings its VoIP token,
//! ciphertext passes through (or, too large, becomes the plain wake-up),
//! and a Monal (fpush) publish with nothing registered reaches its token.

mod common;

use common::{DbKind, FakeServer, STEP, ServerConn, TestDb, answer_kind, fixture, publish_iq};
use nudge::Config;
use nudge::xmpp::stream::LinkState;
use nudge_test_app::{ApnsEnvironment, Fault, PushFilter, TestApp, TestAppConfig};

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
sandbox_endpoint = "{apns_sandbox}"
production_endpoint = "{apns_production}"
ca_file = "{ca}"
token = {{ key_path = "{key}", key_id = "{key_id}", team_id = "{team_id}" }}
[apps.conversations]
provider = "fcm"
service_account_path = "{sa}"
endpoint = "{fcm}"
ca_file = "{ca}"
[dialects.siskin.providers]
"tigase:messenger:apns:1" = "ios"
[dialects.fpush.modules]
ios = ["monalProdiOS"]
"#,
        domain = common::DOMAIN,
        secret = common::SECRET,
        port = server.port,
        db = db.url(),
        apns = app.apns_url(),
        apns_sandbox = app.apns_sandbox_url(),
        apns_production = app.apns_production_url(),
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
    let outbox = s.nudge.store.outbox();
    assert!(common::eventually(|| async { outbox.get(&node).await.unwrap().is_none() }).await);
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

/// Conversations' register command with the `environment` field an iOS
/// client adds to name its token's APNs environment.
fn register_with_environment_iq(device: &str, token: &str, environment: &str) -> String {
    format!(
        "<iq id='reg-{device}' type='set' from='alice@localhost/phone' to='{domain}' xml:lang='en'>\
         <command node='register-push-apns' action='execute' xmlns='http://jabber.org/protocol/commands'>\
         <x xmlns='jabber:x:data' type='submit'><field var='token'><value>{token}</value></field>\
         <field var='device-id'><value>{device}</value></field>\
         <field var='environment'><value>{environment}</value></field></x></command></iq>",
        domain = common::DOMAIN,
    )
}

/// One APNs app, a development build (sandbox token) and a store build
/// (production token, once named, once not): each publish reaches the
/// matching endpoint of the mock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_and_production_registrations_of_one_app_reach_their_endpoints() {
    let mut s = setup().await;
    let mut registered = Vec::new();
    for (device, tag, environment) in [
        ("xcode-build", 0x51, Some("sandbox")),
        ("store", 0x52, Some("production")),
        ("unnamed", 0x53, None),
    ] {
        let token = apns_token(tag);
        let (node, secret) = match environment {
            Some(environment) => {
                let a = s
                    .conn
                    .request(&register_with_environment_iq(device, &token, environment))
                    .await;
                assert_eq!(answer_kind(&a).0, "result", "{a:?}");
                let (_, node, secret) = common::registration_form(&a).unwrap();
                (node, secret)
            }
            None => s.register("apns", device, &token).await.unwrap(),
        };
        registered.push((token, node, secret));
    }
    for (i, (token, node, secret)) in registered.iter().enumerate() {
        let a = s
            .conn
            .request(&publish_iq(
                &format!("e{i}"),
                "localhost",
                node,
                Some(secret),
                "hi",
            ))
            .await;
        assert_eq!(answer_kind(&a).0, "result", "{a:?}");
        let push = s.app.wait_for_push(token, STEP).await.expect("a push");
        assert_eq!(push.status, 200, "{push:?}");
    }
    let reached = |token: &str| {
        s.app
            .pushes(PushFilter::token(token))
            .iter()
            .map(|p| p.environment)
            .collect::<Vec<_>>()
    };
    assert_eq!(reached(&registered[0].0), [Some(ApnsEnvironment::Sandbox)]);
    assert_eq!(
        reached(&registered[1].0),
        [Some(ApnsEnvironment::Production)]
    );
    assert_eq!(
        reached(&registered[2].0),
        [Some(ApnsEnvironment::Production)],
        "no environment: the app's endpoint"
    );
    s.finish().await;
}

/// Siskin's `register-device` for alice, with a PushKit token; the node.
async fn register_siskin_device(s: &mut Setup, token: &str, voip_token: &str) -> String {
    let a = s
        .conn
        .request(&format!(
            "<iq id='sis-1' type='set' from='alice@localhost/iphone' to='{}' xml:lang='en'>\
             <command node='register-device' action='execute' xmlns='http://jabber.org/protocol/commands'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='provider'><value>tigase:messenger:apns:1</value></field>\
             <field var='device-token'><value>{token}</value></field>\
             <field var='device-second-token'><value>{voip_token}</value></field>\
             </x></command></iq>",
            common::DOMAIN
        ))
        .await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    let command = a
        .get_child("command", "http://jabber.org/protocol/commands")
        .expect("command");
    let form = command
        .children
        .iter()
        .find_map(nudge::xmpp::dataform::DataForm::from_element)
        .expect("a result form");
    form.value("node").expect("node").to_owned()
}

fn header<'a>(push: &'a nudge_test_app::RecordedPush, name: &str) -> Option<&'a str> {
    push.headers.get(name).map(String::as_str)
}

/// A Tigase server's call proposal (`tigase:push:jingle:0`) for a Siskin
/// registration with a second token rings the VoIP token (`voip`, topic
/// `<bundle>.voip`); its ciphertext (`tigase:push:encrypt:0`) reaches the
/// normal token untouched; ciphertext too large for APNs becomes the plain
/// alert without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siskin_calls_ring_the_voip_token_and_ciphertext_passes_through() {
    let mut s = setup().await;
    let token = apns_token(0x61);
    let voip_token = apns_token(0x62);
    let node = register_siskin_device(&mut s, &token, &voip_token).await;

    let a = s
        .conn
        .request(&fixture("tigase-jingle.xml", &node, ""))
        .await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    let call = s
        .app
        .wait_for_push(&voip_token, STEP)
        .await
        .expect("a call");
    assert_eq!(call.status, 200, "{call:?}");
    assert_eq!(header(&call, "apns-push-type"), Some("voip"));
    assert_eq!(header(&call, "apns-topic"), Some("org.example.app.voip"));
    assert_eq!(header(&call, "apns-priority"), Some("10"));
    assert!(
        s.app.pushes(PushFilter::token(&token)).is_empty(),
        "a call goes to the VoIP token only"
    );

    let encrypted = fixture("tigase-encrypted.xml", &node, "");
    let a = s.conn.request(&encrypted).await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    let push = s.app.wait_for_push(&token, STEP).await.expect("a push");
    assert_eq!(push.status, 200, "{push:?}");
    assert_eq!(header(&push, "apns-push-type"), Some("alert"));
    assert_eq!(header(&push, "apns-topic"), Some("org.example.app"));
    assert_eq!(push.payload["iv"], "q6Z0mXc3bNQ9y0lh");
    assert_eq!(
        push.payload["encrypted"],
        "3q2+7wG5x0hJm0w8M2sL0p9Q0bq3m5XJ7Y1k0Z4m3Q6vCk1r0+o2M5yT4uQ8cA=="
    );
    assert_eq!(push.payload["aps"]["mutable-content"], 1);

    // 6000 base64 characters cannot fit a 4096-byte payload: the plain
    // alert goes instead, never a cut ciphertext.
    let big = encrypted
        .replace(
            "3q2+7wG5x0hJm0w8M2sL0p9Q0bq3m5XJ7Y1k0Z4m3Q6vCk1r0+o2M5yT4uQ8cA==",
            &"QUJD".repeat(1500),
        )
        .replace("id='tig-1'", "id='tig-big'");
    let before = s.app.pushes(PushFilter::token(&token)).len();
    let a = s.conn.request(&big).await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    assert!(
        common::eventually(|| async { s.app.pushes(PushFilter::token(&token)).len() > before })
            .await,
        "the plain wake-up"
    );
    let pushes = s.app.pushes(PushFilter::token(&token));
    let plain = pushes.last().expect("a push");
    assert_eq!(plain.status, 200, "{plain:?}");
    assert_eq!(header(plain, "apns-push-type"), Some("alert"));
    assert!(plain.payload.get("encrypted").is_none(), "{plain:?}");
    assert!(plain.payload.get("iv").is_none(), "{plain:?}");
    s.finish().await;
}

/// Monal's stateless mode through the real APNs backend: nothing
/// registered, the node is the token, `pushModule` names the app and its
/// `-sandbox` suffix the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monal_publish_with_nothing_registered_reaches_its_token() {
    let mut s = setup().await;
    let token = apns_token(0x71);
    let publish = fixture("monal-publish-fpush.xml", &token, "")
        .replace("{ID}", "monal-1")
        .replace("{DOMAIN}", "localhost")
        .replace("{BODY}", "hi")
        .replace("{MODULE}", "monalProdiOS-sandbox");
    let a = s.conn.request(&publish).await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    let push = s.app.wait_for_push(&token, STEP).await.expect("a push");
    assert_eq!(push.status, 200, "{push:?}");
    assert_eq!(push.environment, Some(ApnsEnvironment::Sandbox));
    assert_eq!(header(&push, "apns-topic"), Some("org.example.app"));
    s.finish().await;
}
