//! Web Push end to end in one process: fake XMPP server → Nudge (the Web
//! Push dialect's commands, `register/webpush.rs`) → the Web Push backend
//! (`plugins/src/webpush/`) → the test-app's push service over TLS, which
//! checks the VAPID token, decrypts the push (RFC 8291) and records the
//! plaintext. Proves that a client learns the VAPID key from the blank
//! form, registers a browser subscription, gets the summary the server sent
//! (urgency by importance), and that a subscription its push service
//! declares gone removes the registration and reaches the XMPP side as
//! `item-not-found`; and the HTTP API's `subscription` member.

mod common;

use common::{DbKind, FakeServer, STEP, ServerConn, TestDb, answer_kind, fixture};
use nudge::Config;
use nudge::shutdown::Shutdown;
use nudge::xmpp::dataform::DataForm;
use nudge::xmpp::stream::LinkState;
use nudge_test_app::{TestApp, TestAppConfig, WebPushSubscription};

struct Setup {
    app: TestApp,
    _server: FakeServer,
    conn: ServerConn,
    nudge: nudge::Running,
    db: TestDb,
    public_key: String,
    http: String,
    stop_http: Shutdown,
    _files: tempfile::TempDir,
}

const API_KEY: &str = "web-backend-key-0123456789";

async fn setup() -> Setup {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let exported = app.export(files.path()).unwrap();
    let (private_key, public_key) = nudge_plugins::webpush::generate_vapid_key().unwrap();
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
[http.api_keys]
web = ["{API_KEY}"]
[apps.web]
provider = "webpush"
vapid_private_key = "{private_key}"
vapid_subject = "mailto:push-admin@example.org"
ca_file = "{ca}"
allow_local_endpoints = true
"#,
        domain = common::DOMAIN,
        secret = common::SECRET,
        port = server.port,
        db = db.url(),
        ca = exported.ca_cert.display(),
    ))
    .unwrap();
    let backends = nudge::app::build_backends(&config).await.unwrap();
    let mut nudge = nudge::start(&config, backends).await.unwrap();
    let conn = server.accept().await;
    assert!(nudge.wait_for_state(LinkState::Connected, STEP).await);
    // The HTTP API on a listener of its own, as tests/http_api.rs serves it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = format!("http://{}", listener.local_addr().unwrap());
    let stop_http = Shutdown::new();
    tokio::spawn(nudge::http::serve(
        listener,
        nudge::http::router(nudge.http_state(&config)),
        stop_http.clone(),
    ));
    Setup {
        app,
        _server: server,
        conn,
        nudge,
        db,
        public_key,
        http,
        stop_http,
        _files: files,
    }
}

/// The register command with a subscription's fields (and a device id,
/// when given).
fn register_iq(sub: &WebPushSubscription, device: Option<&str>) -> String {
    let device = device
        .map(|d| format!("<field var='device-id'><value>{d}</value></field>"))
        .unwrap_or_default();
    format!(
        "<iq id='reg-{id}' type='set' from='alice@localhost/browser' to='{domain}'>\
         <command node='register-push-web' action='execute' xmlns='http://jabber.org/protocol/commands'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='endpoint'><value>{endpoint}</value></field>\
         <field var='p256dh'><value>{p256dh}</value></field>\
         <field var='auth'><value>{auth}</value></field>{device}</x></command></iq>",
        id = sub.p256dh.get(..12).unwrap_or("x"),
        domain = common::DOMAIN,
        endpoint = sub.endpoint,
        p256dh = sub.p256dh,
        auth = sub.auth,
    )
}

/// The form of a command's answer.
fn blank_form(answer: &nudge::xmpp::Element) -> Option<DataForm> {
    answer
        .get_child("command", "http://jabber.org/protocol/commands")?
        .children
        .iter()
        .find_map(DataForm::from_element)
}

impl Setup {
    async fn register(&mut self, sub: &WebPushSubscription) -> (String, String) {
        let a = self.conn.request(&register_iq(sub, None)).await;
        assert_eq!(answer_kind(&a).0, "result", "{a:?}");
        let (jid, node, secret) = common::registration_form(&a).unwrap();
        assert_eq!(jid, common::DOMAIN);
        (node, secret)
    }

    async fn finish(self) {
        self.stop_http.trigger();
        self.nudge.stop().await;
        self.db.drop_db().await;
        self.app.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blank_form_hands_out_the_vapid_key() {
    let mut s = setup().await;
    let a = s
        .conn
        .request(&format!(
            "<iq id='blank' type='set' from='alice@localhost/browser' to='{}'>\
             <command node='register-push-web' action='execute' xmlns='http://jabber.org/protocol/commands'/></iq>",
            common::DOMAIN
        ))
        .await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    let form = blank_form(&a).expect("a form");
    assert_eq!(form.value("vapid-public-key"), Some(s.public_key.as_str()));
    // The provider name reaches the same app.
    let a = s
        .conn
        .request(&format!(
            "<iq id='blank2' type='set' from='alice@localhost/browser' to='{}'>\
             <command node='register-push-webpush' action='execute' xmlns='http://jabber.org/protocol/commands'/></iq>",
            common::DOMAIN
        ))
        .await;
    let form = blank_form(&a).expect("a form");
    assert_eq!(form.value("vapid-public-key"), Some(s.public_key.as_str()));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_reaches_the_browser_decrypted_with_its_urgency() {
    let mut s = setup().await;
    let sub = s.app.webpush_subscribe();
    let (node, secret) = s.register(&sub).await;

    let a = s
        .conn
        .request(&fixture("prosody-publish-important.xml", &node, &secret))
        .await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    let push = s
        .app
        .wait_for_push(&sub.token, STEP)
        .await
        .expect("a push at the test-app");
    assert_eq!(push.status, 201, "{push:?}");
    assert_eq!(
        push.headers.get("urgency").map(String::as_str),
        Some("high")
    );
    assert!(push.headers.contains_key("ttl"), "{:?}", push.headers);
    assert!(push.headers.contains_key("topic"), "{:?}", push.headers);
    // The summary the server sent, decrypted by the test-app.
    assert_eq!(push.payload["last-message-body"], "New Message!");

    let a = s
        .conn
        .request(&fixture("prosody-publish-silent.xml", &node, &secret))
        .await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    let push = s.app.wait_for_push(&sub.token, STEP).await.expect("silent");
    assert_eq!(push.status, 201);
    assert_eq!(
        push.headers.get("urgency").map(String::as_str),
        Some("normal")
    );
    assert!(
        push.payload.get("last-message-body").is_none(),
        "{:?}",
        push.payload
    );

    // Registering the same subscription again keeps node and secret.
    assert_eq!(s.register(&sub).await, (node, secret));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_gone_at_its_push_service_is_removed() {
    let mut s = setup().await;
    let sub = s.app.webpush_subscribe_named("dead").unwrap();
    let (node, secret) = s.register(&sub).await;
    let a = s
        .conn
        .request(&fixture("prosody-publish-important.xml", &node, &secret))
        .await;
    assert_eq!(
        answer_kind(&a),
        ("cancel".into(), "item-not-found".into()),
        "{a:?}"
    );
    let push = s
        .app
        .wait_for_push(&sub.token, STEP)
        .await
        .expect("the 410");
    assert_eq!(push.status, 410);
    assert!(s.nudge.store.find(&node).await.unwrap().is_none());
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused_at_registration() {
    let mut s = setup().await;
    let good = s.app.webpush_subscribe();
    let cases = [
        // Not a P-256 point.
        WebPushSubscription {
            p256dh: "AAAA".into(),
            ..good.clone()
        },
        // auth is 16 bytes.
        WebPushSubscription {
            auth: "AAAA".into(),
            ..good.clone()
        },
        // https only (plain http to loopback is allowed).
        WebPushSubscription {
            endpoint: good
                .endpoint
                .replace("https://127.0.0.1", "http://push.example.net"),
            ..good.clone()
        },
    ];
    for sub in &cases {
        let a = s.conn.request(&register_iq(sub, Some("b1"))).await;
        assert_eq!(
            answer_kind(&a),
            ("modify".into(), "bad-request".into()),
            "{sub:?}: {a:?}"
        );
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_takes_a_browser_subscription() {
    let s = setup().await;
    let sub = s.app.webpush_subscribe();
    // reqwest is built without a TLS provider of its own and wants one
    // installed even for plain HTTP (tests/http_api.rs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{}/v1/apps/web/registrations", s.http);
    let body = serde_json::json!({
        "owner": "bob@localhost",
        "device_id": "firefox-1",
        "subscription": {
            "endpoint": sub.endpoint,
            "expirationTime": null,
            "keys": {"p256dh": sub.p256dh, "auth": sub.auth},
        },
    });
    // PushSubscription.toJSON() carries expirationTime too.
    let answer = client
        .post(&url)
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let reg: serde_json::Value = answer.json().await.unwrap();
    let node = reg["node"].as_str().unwrap().to_owned();
    let stored = s.nudge.store.find(&node).await.unwrap().unwrap();
    assert_eq!(stored.token, sub.token);

    // A subscription without keys is refused with its field named.
    let mut bad = body.clone();
    bad["subscription"]["keys"] = serde_json::json!({});
    let answer = client
        .post(&url)
        .bearer_auth(API_KEY)
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let err: serde_json::Value = answer.json().await.unwrap();
    assert!(
        err["message"].as_str().unwrap().contains("subscription"),
        "{err}"
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_by_endpoint_or_device_id() {
    let mut s = setup().await;
    let unregister = |id: &str, field: &str, value: &str| {
        format!(
            "<iq id='unreg-{id}' type='set' from='alice@localhost/browser' to='{domain}'>\
             <command node='unregister-push-web' action='execute' xmlns='http://jabber.org/protocol/commands'>\
             <x xmlns='jabber:x:data' type='submit'><field var='{field}'><value>{value}</value></field></x></command></iq>",
            domain = common::DOMAIN,
        )
    };
    // Registered without a device id: the endpoint names the device.
    let by_endpoint = s.app.webpush_subscribe();
    let (node, _) = s.register(&by_endpoint).await;
    let a = s
        .conn
        .request(&unregister("1", "endpoint", &by_endpoint.endpoint))
        .await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    assert!(s.nudge.store.find(&node).await.unwrap().is_none());
    let a = s
        .conn
        .request(&unregister("2", "endpoint", &by_endpoint.endpoint))
        .await;
    assert_eq!(answer_kind(&a), ("cancel".into(), "item-not-found".into()));

    // Registered with one: unregistered by it.
    let with_id = s.app.webpush_subscribe();
    let a = s
        .conn
        .request(&register_iq(&with_id, Some("firefox")))
        .await;
    let (_, node, _) = common::registration_form(&a).unwrap();
    let a = s
        .conn
        .request(&unregister("3", "device-id", "firefox"))
        .await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    assert!(s.nudge.store.find(&node).await.unwrap().is_none());
    s.finish().await;
}
