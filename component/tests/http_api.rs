//! The registration API (`component/src/http/registrations.rs`) through a
//! real TCP listener on 127.0.0.1:0, with reqwest, on SQLite and
//! PostgreSQL: a registration created over HTTP works end to end (fake XMPP
//! server → Nudge → FCM backend → the test-app's mock FCM), its token can be
//! changed, and once deleted its node is `item-not-found`; per-app keys;
//! JSON errors for every bad request; `[register]`'s cap and rate; the
//! database down. `docs/openapi.json` is checked against the router's
//! operations and the error codes. One test runs the `nudge` binary.

mod common;

use std::collections::BTreeSet;

use common::{DbKind, FakeServer, STEP, ServerConn, TestDb, answer_kind, publish_iq};
use nudge::Config;
use nudge::http::registrations::{ErrorCode, Operation};
use nudge::shutdown::Shutdown;
use nudge::xmpp::stream::LinkState;
use nudge_test_app::{TestApp, TestAppConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The key of app `conversations` (FCM).
const KEY: &str = "conversations-key-0123456789abcdef";
/// The key of app `ios` (APNs).
const IOS_KEY: &str = "ios-key-0123456789abcdef-0123";

on_both_databases!(
    a_created_registration_works_end_to_end_until_deleted,
    keys_are_per_app_and_say_nothing_to_others,
    bad_requests_are_json_that_say_what_to_fix,
    the_cap_and_the_rate_of_register_apply,
    a_database_that_does_not_answer_is_503,
);

struct Setup {
    app: TestApp,
    _server: FakeServer,
    conn: ServerConn,
    nudge: nudge::Running,
    db: TestDb,
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT`.
    base: String,
    store: nudge::store::RegistrationStore,
    stop_http: Shutdown,
    _files: tempfile::TempDir,
}

async fn setup(kind: DbKind, extra: &str) -> Setup {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let exported = app.export(files.path()).unwrap();
    let creds = app.apns_credentials();
    let server = FakeServer::start().await;
    let db = TestDb::new(kind).await;
    let config = Config::from_toml(&format!(
        r#"
[component]
domain = "{domain}"
secret = "{secret}"
port = {port}
[storage]
url = "{db}"
[dispatch]
coalesce_ms = 0
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
[apps.keyless]
provider = "fcm"
service_account_path = "{sa}"
endpoint = "{fcm}"
ca_file = "{ca}"
[http.api_keys]
conversations = ["{KEY}"]
ios = ["{IOS_KEY}"]
{extra}
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
    let state = nudge.http_state(&config);
    let store = state.store.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop_http = Shutdown::new();
    tokio::spawn(nudge::http::serve(
        listener,
        nudge::http::router(state),
        stop_http.clone(),
    ));
    Setup {
        app,
        _server: server,
        conn,
        nudge,
        db,
        http: http_client(),
        base,
        store,
        stop_http,
        _files: files,
    }
}

/// A reqwest client for the loopback listener. reqwest is built without a
/// TLS provider of its own (`Cargo.toml`), and wants one installed even for
/// plain HTTP.
fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(STEP)
        .no_proxy()
        .build()
        .unwrap()
}

/// A response's status, headers and JSON body (`Null` for none).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    /// The error code of a failure's body, checking its shape.
    fn code(&self) -> &str {
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{:?}",
            self.body
        );
        let message = self.body["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "no message: {}", self.body);
        self.body["error"].as_str().expect("an error code")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `method path` with `key` and a JSON `body`.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        if let Some(k) = key {
            request = request.bearer_auth(k);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        self.send(request).await
    }

    /// Creates alice's registration of `device` for app `conversations`.
    async fn create(&self, owner: &str, device: &str, token: &str) -> Answer {
        self.call(
            reqwest::Method::POST,
            "/v1/apps/conversations/registrations",
            Some(KEY),
            Some(json!({"owner": owner, "device_id": device, "token": token})),
        )
        .await
    }

    /// Publishes to `node` with `secret` through the fake XMPP server.
    async fn publish(&mut self, id: &str, node: &str, secret: &str) -> (String, String) {
        let a = self
            .conn
            .request(&publish_iq(id, "localhost", node, Some(secret), "hi"))
            .await;
        answer_kind(&a)
    }

    async fn finish(self) {
        self.stop_http.trigger();
        self.nudge.stop().await;
        self.db.drop_db().await;
        self.app.shutdown().await;
    }
}

fn result() -> (String, String) {
    ("result".into(), String::new())
}

async fn a_created_registration_works_end_to_end_until_deleted(kind: DbKind) {
    let mut s = setup(kind, "").await;
    let a = s
        .create("Alice@Localhost", "pixel-7", "fcm-token-first-0001")
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["jid"], common::DOMAIN);
    assert_eq!(a.body["owner"], "alice@localhost", "normalised");
    assert_eq!(a.body["device_id"], "pixel-7");
    assert_eq!(a.body["muc"], Value::Null);
    assert!(a.body.get("token").is_none(), "the token is not echoed");
    let node = a.body["node"].as_str().unwrap().to_owned();
    let secret = a.body["secret"].as_str().unwrap().to_owned();
    assert!(node.len() >= 22 && secret.len() >= 24, "{}", a.body);

    assert_eq!(s.publish("p1", &node, &secret).await, result());
    let push = s
        .app
        .wait_for_push("fcm-token-first-0001", STEP)
        .await
        .expect("the push reached the mock FCM");
    assert_eq!(push.status, 200);
    assert_eq!(
        s.publish("p1-bad", &node, "wrong-secret").await.1,
        "forbidden",
        "the secret is checked"
    );

    // The same identity again: the same node and secret, the new token.
    let again = s
        .create("alice@localhost", "pixel-7", "fcm-token-second-02")
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(
        (again.body["node"].as_str(), again.body["secret"].as_str()),
        (Some(node.as_str()), Some(secret.as_str()))
    );
    assert_eq!(s.publish("p2", &node, &secret).await, result());
    assert!(
        s.app
            .wait_for_push("fcm-token-second-02", STEP)
            .await
            .is_some(),
        "the running instance uses the new token at once"
    );

    // PUT: a new token under the same node.
    let path = format!("/v1/apps/conversations/registrations/{node}");
    let put = s
        .call(
            reqwest::Method::PUT,
            &path,
            Some(KEY),
            Some(json!({"token": "fcm-token-third-003"})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body["node"], node.as_str());
    assert_eq!(put.body["secret"], secret.as_str());
    assert_eq!(s.publish("p3", &node, &secret).await, result());
    assert!(
        s.app
            .wait_for_push("fcm-token-third-003", STEP)
            .await
            .is_some()
    );

    let got = s.call(reqwest::Method::GET, &path, Some(KEY), None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["owner"], "alice@localhost");
    assert_eq!(got.body["secret"], secret.as_str());

    // A room registration is another node.
    let room = s
        .call(
            reqwest::Method::POST,
            "/v1/apps/conversations/registrations",
            Some(KEY),
            Some(json!({"owner": "alice@localhost", "device_id": "pixel-7",
                        "token": "fcm-token-room-0004", "muc": "Room@Conference.Localhost"})),
        )
        .await;
    assert_eq!(room.status, StatusCode::OK, "{}", room.body);
    assert_eq!(room.body["muc"], "room@conference.localhost");
    assert_ne!(room.body["node"], node.as_str());

    let deleted = s
        .call(reqwest::Method::DELETE, &path, Some(KEY), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, Value::Null);
    assert_eq!(
        s.publish("p4", &node, &secret).await,
        ("cancel".into(), "item-not-found".into()),
        "the running instance forgot the node at once"
    );
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let gone = s.call(method, &path, Some(KEY), None).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        assert_eq!(gone.code(), "unknown_node");
    }
    let gone = s
        .call(
            reqwest::Method::PUT,
            &path,
            Some(KEY),
            Some(json!({"token": "fcm-token-fifth-005"})),
        )
        .await;
    assert_eq!(gone.code(), "unknown_node");
    s.finish().await;
}

async fn keys_are_per_app_and_say_nothing_to_others(kind: DbKind) {
    let s = setup(kind, "").await;
    let created = s
        .create("bob@localhost", "phone", "fcm-token-bob-00001")
        .await;
    assert_eq!(created.status, StatusCode::OK);
    let node = created.body["node"].as_str().unwrap().to_owned();
    let node_path = format!("/v1/apps/conversations/registrations/{node}");
    let body = json!({"owner": "bob@localhost", "device_id": "x", "token": "fcm-token-x-0000001"});
    let create_path = "/v1/apps/conversations/registrations";

    // No key, a wrong key, a key in another scheme, an app without keys,
    // an app that does not exist: one answer, with the challenge.
    let mut unauthorized = Vec::new();
    for (path, key) in [
        (create_path, None),
        (create_path, Some("conversations-key-0123456789abcdeX")),
        (create_path, Some("")),
        (
            "/v1/apps/keyless/registrations",
            Some("some-key-nobody-has-012345"),
        ),
        (
            "/v1/apps/nosuchapp/registrations",
            Some("some-key-nobody-has-012345"),
        ),
    ] {
        let a = s
            .call(reqwest::Method::POST, path, key, Some(body.clone()))
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path} {key:?}");
        assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"nudge\""));
        assert_eq!(a.code(), "unauthorized");
        unauthorized.push(a.body);
    }
    let basic = s
        .send(
            s.http
                .post(s.url(create_path))
                .basic_auth("conversations", Some(KEY))
                .json(&body),
        )
        .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    unauthorized.push(basic.body);
    assert!(
        unauthorized.windows(2).all(|w| w[0] == w[1]),
        "the same body for every unauthorised request: {unauthorized:?}"
    );

    // Nothing is read before the key: a bad body without a key is 401.
    let a = s
        .send(s.http.post(s.url(create_path)).body("{not json"))
        .await;
    assert_eq!(a.code(), "unauthorized");

    // The ios key does not manage conversations: the same 404 whether
    // the node exists or not, for every operation.
    let mut other_app = Vec::new();
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            create_path.to_owned(),
            Some(body.clone()),
        ),
        (reqwest::Method::GET, node_path.clone(), None),
        (
            reqwest::Method::GET,
            format!("{create_path}/no-such-node"),
            None,
        ),
        (
            reqwest::Method::PUT,
            node_path.clone(),
            Some(json!({"token": "fcm-token-evil-0001"})),
        ),
        (reqwest::Method::DELETE, node_path.clone(), None),
        (
            reqwest::Method::DELETE,
            format!("{create_path}/no-such-node"),
            None,
        ),
    ] {
        let a = s.call(method.clone(), &path, Some(IOS_KEY), body).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(a.code(), "unknown_app");
        other_app.push(a.body);
    }
    assert!(other_app.windows(2).all(|w| w[0] == w[1]), "{other_app:?}");
    // An app without keys, or none at all, is just another app to a key.
    for app in ["keyless", "nosuchapp"] {
        let a = s
            .call(
                reqwest::Method::POST,
                &format!("/v1/apps/{app}/registrations"),
                Some(KEY),
                Some(body.clone()),
            )
            .await;
        assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "unknown_app"));
    }

    // The ios key in its own app sees no conversations node either.
    let a = s
        .call(
            reqwest::Method::GET,
            &format!("/v1/apps/ios/registrations/{node}"),
            Some(IOS_KEY),
            None,
        )
        .await;
    assert_eq!(a.code(), "unknown_node");
    let a = s
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/apps/ios/registrations/{node}"),
            Some(IOS_KEY),
            None,
        )
        .await;
    assert_eq!(a.code(), "unknown_node");

    // And bob's registration is untouched by all of it.
    let a = s
        .call(reqwest::Method::GET, &node_path, Some(KEY), None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let stored = s.store.find(&node).await.unwrap().unwrap();
    assert_eq!(stored.token, "fcm-token-bob-00001");
    s.finish().await;
}

async fn bad_requests_are_json_that_say_what_to_fix(kind: DbKind) {
    let s = setup(kind, "").await;
    let create_path = "/v1/apps/conversations/registrations";
    let post = |body: Value| s.call(reqwest::Method::POST, create_path, Some(KEY), Some(body));
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!(["owner"]), "invalid_body", "object"),
        (
            json!({"device_id": "d", "token": "fcm-token-000000001"}),
            "missing_field",
            "owner",
        ),
        (
            json!({"owner": "a@localhost", "token": "fcm-token-000000001"}),
            "missing_field",
            "device_id",
        ),
        (
            json!({"owner": "a@localhost", "device_id": "d"}),
            "missing_field",
            "token",
        ),
        (
            json!({"owner": "a@localhost", "device_id": "", "token": "t"}),
            "missing_field",
            "device_id",
        ),
        (
            json!({"owner": "a@localhost", "device_id": "d", "token": "fcm-token-000000001", "node": "mine"}),
            "unknown_field",
            "node",
        ),
        (
            json!({"owner": 7, "device_id": "d", "token": "fcm-token-000000001"}),
            "invalid_field",
            "owner",
        ),
        (
            json!({"owner": "not a jid@", "device_id": "d", "token": "fcm-token-000000001"}),
            "invalid_jid",
            "owner",
        ),
        (
            json!({"owner": "a@localhost/phone", "device_id": "d", "token": "fcm-token-000000001"}),
            "invalid_jid",
            "owner",
        ),
        (
            json!({"owner": "localhost", "device_id": "d", "token": "fcm-token-000000001"}),
            "invalid_jid",
            "owner",
        ),
        (
            json!({"owner": "al ice@localhost", "device_id": "d", "token": "fcm-token-000000001"}),
            "invalid_jid",
            "owner",
        ),
        (
            json!({"owner": "a<b@localhost", "device_id": "d", "token": "fcm-token-000000001"}),
            "invalid_jid",
            "owner",
        ),
        (
            json!({"owner": "a@localhost", "device_id": "d", "token": "fcm-token-000000001", "muc": "room@conf/nick"}),
            "invalid_jid",
            "muc",
        ),
        (
            json!({"owner": "a@localhost", "device_id": "d".repeat(300), "token": "fcm-token-000000001"}),
            "invalid_field",
            "device_id",
        ),
        (
            json!({"owner": "a@localhost", "device_id": "d", "token": "has space"}),
            "invalid_token",
            "token",
        ),
        (
            json!({"owner": "a@localhost", "device_id": "d", "token": "fcm-token-000000001", "environment": "staging"}),
            "invalid_field",
            "environment",
        ),
    ];
    for (body, code, names) in cases {
        let a = post(body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(a.code(), code, "{body}: {}", a.body);
        assert!(
            a.body["message"].as_str().unwrap().contains(names),
            "{body}: the message names {names}: {}",
            a.body
        );
    }
    // The APNs app checks tokens as Apple would (hex).
    let a = s
        .call(
            reqwest::Method::POST,
            "/v1/apps/ios/registrations",
            Some(IOS_KEY),
            Some(json!({"owner": "a@localhost", "device_id": "d", "token": "not-hex"})),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "invalid_token")
    );
    let apns_token = nudge_test_app::random_apns_token();
    let a = s
        .call(
            reqwest::Method::POST,
            "/v1/apps/ios/registrations",
            Some(IOS_KEY),
            Some(json!({"owner": "a@localhost", "device_id": "d", "token": apns_token, "environment": "sandbox"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["environment"], "sandbox");

    let raw = |content_type: Option<&str>, body: Vec<u8>| {
        let mut r = s.http.post(s.url(create_path)).bearer_auth(KEY).body(body);
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        s.send(r)
    };
    let a = raw(
        Some("application/json"),
        b"{\"owner\": \"a@localhost\",".to_vec(),
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    let a = raw(Some("application/json"), vec![0xff, 0xfe, 0x00]).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    let ok_body = br#"{"owner":"a@localhost","device_id":"d","token":"fcm-token-000000001"}"#;
    let a = raw(Some("text/plain"), ok_body.to_vec()).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let a = raw(None, ok_body.to_vec()).await;
    assert_eq!(a.code(), "unsupported_media_type");
    let a = raw(Some("application/json; charset=utf-8"), ok_body.to_vec()).await;
    assert_eq!(a.status, StatusCode::OK, "a charset parameter is fine");

    // Oversize: declared, and streamed without a length.
    let big = format!(
        r#"{{"owner":"a@localhost","device_id":"d","token":"{}"}}"#,
        "t".repeat(20 * 1024)
    );
    let a = raw(Some("application/json"), big.clone().into_bytes()).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    let streamed = chunked_post(&s.base, create_path, big.as_bytes()).await;
    assert!(
        streamed.starts_with("HTTP/1.1 413") && streamed.contains("\"body_too_large\""),
        "{streamed}"
    );

    // PUT's body has its own members.
    let a = s
        .call(
            reqwest::Method::PUT,
            "/v1/apps/conversations/registrations/whatever",
            Some(KEY),
            Some(json!({"token": "fcm-token-000000001", "owner": "x@y"})),
        )
        .await;
    assert_eq!(a.code(), "unknown_field");

    // Routes and methods that do not exist answer JSON too.
    let a = s
        .call(
            reqwest::Method::GET,
            "/v1/apps/conversations",
            Some(KEY),
            None,
        )
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "not_found"));
    let a = s
        .call(
            reqwest::Method::PATCH,
            "/v1/apps/conversations/registrations/n",
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    assert_eq!(a.header("allow"), Some("GET, PUT, DELETE"));
    let a = s
        .call(reqwest::Method::GET, create_path, Some(KEY), None)
        .await;
    assert_eq!(a.code(), "method_not_allowed");
    assert_eq!(a.header("allow"), Some("POST"));
    s.finish().await;
}

/// POSTs `body` in 1 KiB chunks without a length (what a client that
/// streams does) over a plain TCP connection; the raw answer.
async fn chunked_post(base: &str, path: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(1024) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        // The server may answer and close before it has read everything.
        if tcp.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(STEP, tcp.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn the_cap_and_the_rate_of_register_apply(kind: DbKind) {
    let s = setup(
        kind,
        "[register]\nmax_per_account = 2\nper_account_per_minute = 4\n",
    )
    .await;
    let first = s
        .create("carol@localhost", "d1", "fcm-token-carol-001")
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let second = s
        .create("carol@localhost", "d2", "fcm-token-carol-002")
        .await;
    assert_eq!(second.status, StatusCode::OK);
    let third = s
        .create("carol@localhost", "d3", "fcm-token-carol-003")
        .await;
    assert_eq!(third.status, StatusCode::CONFLICT, "{}", third.body);
    assert_eq!(third.code(), "registration_cap");
    assert!(
        third.body["message"]
            .as_str()
            .unwrap()
            .contains("2 registrations")
    );
    let again = s
        .create("carol@localhost", "d1", "fcm-token-carol-004")
        .await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "a device it has is updated at the cap"
    );
    let limited = s
        .create("carol@localhost", "d1", "fcm-token-carol-005")
        .await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert_eq!(limited.code(), "rate_limited");
    let retry: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=15).contains(&retry), "{retry}");
    // Another account is not slowed down by carol.
    assert_eq!(
        s.create("dave@localhost", "d1", "fcm-token-dave-0001")
            .await
            .status,
        StatusCode::OK
    );
    s.finish().await;
}

async fn a_database_that_does_not_answer_is_503(kind: DbKind) {
    let s = setup(kind, "").await;
    let created = s
        .create("erin@localhost", "d1", "fcm-token-erin-0001")
        .await;
    assert_eq!(created.status, StatusCode::OK);
    s.store.close().await;
    let a = s
        .create("erin@localhost", "d2", "fcm-token-erin-0002")
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(a.code(), "database_unavailable");
    assert_eq!(a.header("retry-after"), Some("5"));
    s.finish().await;
}

/// PostgreSQL, several instances: a change made over one instance's API
/// reaches another instance that has the row cached (the database's
/// trigger, `store/listen.rs`), well within the cache's 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_over_the_api_reach_another_instance() {
    let s = setup(DbKind::Postgres, "").await;
    let created = s
        .create("gina@localhost", "d1", "fcm-token-gina-0001")
        .await;
    assert_eq!(created.status, StatusCode::OK);
    let node = created.body["node"].as_str().unwrap().to_owned();
    let secret = created.body["secret"].as_str().unwrap().to_owned();

    let backend = common::TestBackend::new("fcm");
    let mut backends = nudge::dispatch::Backends::new();
    backends.insert("conversations", backend.clone());
    let (_server_b, mut conn_b, nudge_b) =
        common::start_connected(&s.db.url(), backends, |_| {}).await;
    let mut n = 0;
    let mut publish_b = async |conn: &mut ServerConn| {
        n += 1;
        let a = conn
            .request(&publish_iq(
                &format!("b{n}"),
                "localhost",
                &node,
                Some(&secret),
                "hi",
            ))
            .await;
        answer_kind(&a)
    };
    // B reads the row and caches it, once its change listener is subscribed
    // (until then it reads the database every time): give it a moment.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(publish_b(&mut conn_b).await, result());
    assert!(
        backend
            .sent_until("fcm-token-gina-0001", |p| p.len() == 1)
            .await
    );

    let put = s
        .call(
            reqwest::Method::PUT,
            &format!("/v1/apps/conversations/registrations/{node}"),
            Some(KEY),
            Some(json!({"token": "fcm-token-gina-0002"})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let mut moved = false;
    for _ in 0..50 {
        assert_eq!(publish_b(&mut conn_b).await, result());
        if !backend.sent_to("fcm-token-gina-0002").is_empty() {
            moved = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(moved, "instance B kept pushing to the old token");

    let deleted = s
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/apps/conversations/registrations/{node}"),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let mut gone = false;
    for _ in 0..50 {
        if publish_b(&mut conn_b).await.1 == "item-not-found" {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "instance B still knows the deleted node");
    nudge_b.stop().await;
    s.finish().await;
}

/// `docs/openapi.json` describes exactly the operations the router is built
/// from, and lists exactly the error codes.
#[test]
fn the_openapi_file_matches_the_router_and_the_error_codes() {
    let path = format!("{}/../docs/openapi.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));

    let mut described = BTreeSet::new();
    for (route, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let id = op["operationId"].as_str().unwrap_or_default().to_owned();
            described.insert((method.to_uppercase(), route.clone(), id));
        }
    }
    let served: BTreeSet<_> = Operation::ALL
        .iter()
        .map(|op| {
            (
                op.method().to_string(),
                op.path().to_owned(),
                op.operation_id().to_owned(),
            )
        })
        .collect();
    assert_eq!(described, served);

    let listed: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, codes);

    // Every code is named in the responses of some operation, under its
    // status.
    for code in ErrorCode::ALL {
        let status = code.status().as_u16().to_string();
        let named = doc["paths"].as_object().unwrap().values().any(|item| {
            item.as_object().unwrap().values().any(|op| {
                op["responses"][&status]["description"]
                    .as_str()
                    .is_some_and(|d| d.contains(&format!("`{}`", code.as_str())))
            })
        });
        assert!(named, "{code:?} is not described under {status}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["scheme"],
        "bearer"
    );
}

/// The routes are answered by the router as built: each operation's path
/// and method reach a handler (here stopped by the key check), not the 404
/// or 405 of an unknown route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_served() {
    let s = setup(DbKind::Sqlite, "").await;
    for op in Operation::ALL {
        let path = op
            .path()
            .replace("{app}", "conversations")
            .replace("{node}", "n");
        let method = reqwest::Method::from_bytes(op.method().as_str().as_bytes()).unwrap();
        let a = s.call(method, &path, None, None).await;
        assert_eq!(a.code(), "unauthorized", "{op:?}");
    }
    s.finish().await;
}

/// `nudge run`: the API on the listener the log names, on the binary's own
/// configuration file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_api() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exported = app.export(dir.path()).unwrap();
    let apps = std::fs::read_to_string(&exported.nudge_apps_toml).unwrap();
    let config_path = dir.path().join("nudge.toml");
    std::fs::write(
        &config_path,
        format!(
            "[component]\ndomain = '{}'\nsecret = 'from-env'\n\
             [http.api_keys]\ntestapp-fcm = ['{KEY}']\n{apps}",
            common::DOMAIN
        ),
    )
    .unwrap();
    let server = FakeServer::start().await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_nudge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NUDGE_") || k == "NOTIFY_SOCKET" || k == "RUST_LOG" {
            command.env_remove(k);
        }
    }
    let mut child = command
        .args(["--config", config_path.to_str().unwrap(), "run"])
        .env("NUDGE_HTTP__LISTEN", "127.0.0.1:0")
        .env("NUDGE_COMPONENT__PORT", server.port.to_string())
        .env("NUDGE_COMPONENT__SECRET", common::SECRET)
        .env("NUDGE_STORAGE__DATA_DIR", dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The log goes to one of the two; read both for the listener's line.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    for reader in [
        Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(stderr),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let mut conn = server.accept().await;
    let addr = tokio::time::timeout(STEP, async {
        while let Some(line) = rx.recv().await {
            if let Some(rest) = line.split("HTTP listener on http://").nth(1) {
                return rest.split_whitespace().next().map(str::to_owned);
            }
        }
        None
    })
    .await
    .expect("the listener's line within the step")
    .expect("the log names the listener");
    let http = http_client();
    let response = http
        .post(format!("http://{addr}/v1/apps/testapp-fcm/registrations"))
        .bearer_auth(KEY)
        .json(
            &json!({"owner": "frank@localhost", "device_id": "d1", "token": "fcm-token-frank-01"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["jid"], common::DOMAIN);
    let (node, secret) = (
        body["node"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    );
    let a = conn
        .request(&publish_iq(
            "bin-1",
            "localhost",
            &node,
            Some(&secret),
            "hi",
        ))
        .await;
    assert_eq!(answer_kind(&a), result());
    assert!(
        app.wait_for_push("fcm-token-frank-01", STEP)
            .await
            .is_some(),
        "the binary's push reached the mock FCM"
    );
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(STEP, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    app.shutdown().await;
}
