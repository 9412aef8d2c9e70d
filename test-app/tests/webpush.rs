//! The Web Push endpoint takes what a browser's push service takes (RFC 8030
//! headers, an RFC 8291 `aes128gcm` body for the subscription's keys, an RFC
//! 8292 VAPID token for its origin), over HTTP/2 and HTTP/1.1; refuses the
//! rest with the status a push service uses and a message saying why;
//! records the decrypted plaintext; and answers faults the way the plugin's
//! outcome mapping expects.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use nudge_test_app::{
    AuthMethod, Fault, Provider, PushFilter, SubscribeOptions, TestApp, TestAppConfig,
    WebPushError, WebPushSubscription,
};
use serde_json::{Value, json};

/// A reqwest client trusting the test-app's CA: HTTP/2 when `h2` (offered
/// by ALPN beside HTTP/1.1, as browsers' push clients do), else HTTP/1.1
/// only.
fn client(app: &TestApp, h2: bool) -> reqwest::Client {
    let alpn: &[&[u8]] = if h2 {
        &[b"h2", b"http/1.1"]
    } else {
        &[b"http/1.1"]
    };
    let tls = (*client_config(&app.ca_cert_pem(), alpn, None)).clone();
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(LIMIT);
    if !h2 {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

/// What came back.
#[derive(Debug)]
struct Answer {
    status: u16,
    version: reqwest::Version,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
    fn reason(&self) -> String {
        self.json()["reason"].as_str().unwrap().to_owned()
    }
    fn message(&self) -> String {
        self.json()["message"].as_str().unwrap().to_owned()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// POSTs `body` to `url` with `headers`.
async fn post(c: &reqwest::Client, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let mut req = c.post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        version: resp.version(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

/// A correct push of `plaintext` to `sub`.
async fn push(
    c: &reqwest::Client,
    app: &TestApp,
    vapid: &Vapid,
    sub: &WebPushSubscription,
    plaintext: &[u8],
) -> Answer {
    let auth = vapid.header(&webpush_claims(app));
    post(
        c,
        &sub.endpoint,
        &[
            ("ttl", "60"),
            ("content-encoding", "aes128gcm"),
            ("authorization", &auth),
        ],
        webpush_encrypt(sub, plaintext),
    )
    .await
}

async fn start() -> TestApp {
    nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn pushes_are_decrypted_and_recorded_over_http2_and_http1() {
    let app = start().await;
    let vapid = Vapid::new();
    let payload = json!({
        "message-count": "3",
        "last-message-sender": "juliet@capulet.example",
        "last-message-body": "Wherefore art thou?",
    });
    let h2_client = client(&app, true);
    let h1_client = client(&app, false);
    for (c, version, recorded_version) in [
        (&h2_client, reqwest::Version::HTTP_2, "HTTP/2.0"),
        (&h1_client, reqwest::Version::HTTP_11, "HTTP/1.1"),
    ] {
        let sub = app.webpush_subscribe();
        assert!(
            sub.endpoint
                .starts_with(&format!("{}/webpush/", app.webpush_url())),
            "{sub:?}"
        );
        assert_eq!(
            sub.token,
            format!("{}#p256dh={}&auth={}", sub.endpoint, sub.p256dh, sub.auth)
        );
        let auth = vapid.header(&webpush_claims(&app));
        let r = post(
            c,
            &sub.endpoint,
            &[
                ("ttl", "3600"),
                ("urgency", "high"),
                ("topic", "chat-juliet"),
                ("content-encoding", "aes128gcm"),
                ("content-type", "application/octet-stream"),
                ("authorization", &auth),
            ],
            webpush_encrypt(&sub, payload.to_string().as_bytes()),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.version, version);
        let location = r.header("location").unwrap();
        assert!(
            location.starts_with(&format!("{}/webpush/message/", app.webpush_url())),
            "{location}"
        );
        assert_eq!(r.header("ttl").as_deref(), Some("3600"));

        let p = app.wait_for_push(&sub.token, LIMIT).await.unwrap();
        assert_eq!(p.provider, Provider::WebPush);
        assert_eq!(p.status, 201);
        assert_eq!(p.reason, None);
        assert_eq!(p.payload, payload);
        assert_eq!(p.http_version, recorded_version);
        assert_eq!(p.headers["ttl"], "3600");
        assert_eq!(p.headers["urgency"], "high");
        assert_eq!(p.headers["topic"], "chat-juliet");
        assert_eq!(p.headers["vapid-aud"], app.webpush_url());
        assert_eq!(p.headers["vapid-sub"], "mailto:ops@example.org");
        assert!(!p.headers.contains_key("authorization"));
        assert_eq!(
            p.auth,
            AuthMethod::Vapid {
                key: Some(vapid.k.clone())
            }
        );
        let s = p.summary();
        assert_eq!(s.kind, "alert");
        assert_eq!(s.title.as_deref(), Some("juliet@capulet.example"));
        assert_eq!(s.body.as_deref(), Some("Wherefore art thou?"));
        assert_eq!(s.priority, "high");
    }

    // A body that is not JSON is kept as a string; no Urgency is normal.
    let sub = app.webpush_subscribe();
    let r = push(&h2_client, &app, &vapid, &sub, b"plain text").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let p = app.wait_for_push(&sub.token, LIMIT).await.unwrap();
    assert_eq!(p.payload, json!("plain text"));
    assert_eq!(p.summary().priority, "normal");

    // The control API shows them under provider "webpush".
    let listed = get(&format!(
        "{}/api/pushes?provider=webpush",
        app.control_url()
    ))
    .await
    .json();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert_eq!(listed[0]["provider"], "webpush");
    assert_eq!(listed[0]["auth"]["kind"], "vapid");
    let stats = app.stats();
    assert_eq!(stats.webpush_requests, 3);
    assert_eq!(stats.accepted, 3);
    // The HTTP/2 client's second push reused its connection.
    assert_eq!(stats.webpush_tls_connections, 2);
}

#[tokio::test]
async fn vapid_problems_are_refused_with_the_reason() {
    let app = start().await;
    let c = client(&app, true);
    let vapid = Vapid::new();
    let sub = app.webpush_subscribe();
    let body = webpush_encrypt(&sub, b"{}");
    let good = webpush_claims(&app);
    let with = |field: &str, value: Value| {
        let mut c = good.clone();
        c[field] = value;
        c
    };
    let without = |field: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(field);
        c
    };
    // Signed by another key but naming ours as k.
    let forged = format!("vapid t={}, k={}", Vapid::new().jwt(&good), vapid.k);
    let cases = [
        (forged, 401, "BadVapidSignature"),
        (
            format!("WebPush {}", vapid.jwt(&good)),
            401,
            "BadAuthorization",
        ),
        (
            format!("vapid t=a.b.c, k={}", vapid.k),
            401,
            "BadVapidToken",
        ),
        (
            format!("vapid t={}, k=AAAA", vapid.jwt(&good)),
            401,
            "BadVapidKey",
        ),
        (
            vapid.header(&with("aud", json!("https://push.example.net"))),
            403,
            "BadAudience",
        ),
        (
            vapid.header(&with("aud", json!(format!("{}/", app.webpush_url())))),
            403,
            "BadAudience",
        ),
        (
            vapid.header(&with("exp", json!(now() - 10))),
            403,
            "Expired",
        ),
        (
            vapid.header(&with("exp", json!(now() + 25 * 3600))),
            403,
            "ExpiryTooFar",
        ),
        (vapid.header(&without("exp")), 403, "MissingExpiry"),
        (vapid.header(&without("sub")), 403, "BadSubject"),
        (
            vapid.header(&with("sub", json!("ops@example.org"))),
            403,
            "BadSubject",
        ),
    ];
    for (auth, status, reason) in &cases {
        let r = post(
            &c,
            &sub.endpoint,
            &[
                ("ttl", "60"),
                ("content-encoding", "aes128gcm"),
                ("authorization", auth),
            ],
            body.clone(),
        )
        .await;
        assert_eq!(
            (r.status, r.reason()),
            (*status, (*reason).to_owned()),
            "{auth}"
        );
        assert!(!r.message().is_empty());
    }
    let r = post(
        &c,
        &sub.endpoint,
        &[("ttl", "60"), ("content-encoding", "aes128gcm")],
        body.clone(),
    )
    .await;
    assert_eq!((r.status, r.reason()), (401, "MissingAuthorization".into()));
    let r = post(
        &c,
        &sub.endpoint,
        &[
            ("ttl", "60"),
            ("content-encoding", "aes128gcm"),
            (
                "authorization",
                &vapid.header(&with("aud", json!("https://x"))),
            ),
        ],
        body.clone(),
    )
    .await;
    assert!(r.message().contains(&app.webpush_url()), "{}", r.message());

    // Each refusal is recorded under the subscription, none delivered.
    let recorded = app.pushes(PushFilter::token(sub.token.clone()));
    assert_eq!(recorded.len(), cases.len() + 2);
    assert!(
        recorded
            .iter()
            .all(|p| !p.delivered() && p.payload.is_null())
    );
    assert_eq!(app.stats().rejected("webpush/BadAudience"), 3);
    assert_eq!(app.stats().accepted, 0);
}

/// Request headers, body, expected status and reason.
type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);

#[tokio::test]
async fn header_and_body_problems_and_unknown_subscriptions() {
    let app = start().await;
    let c = client(&app, false);
    let vapid = Vapid::new();
    let auth = vapid.header(&webpush_claims(&app));
    let sub = app.webpush_subscribe();
    let other = app.webpush_subscribe();
    let body = webpush_encrypt(&sub, b"{\"n\":1}");
    let enc = ("content-encoding", "aes128gcm");
    let a = ("authorization", auth.as_str());

    let cases: Vec<Case> = vec![
        (vec![enc, a], body.clone(), 400, "MissingTtl"),
        (vec![("ttl", "soon"), enc, a], body.clone(), 400, "BadTtl"),
        (
            vec![("ttl", "60"), ("urgency", "asap"), enc, a],
            body.clone(),
            400,
            "BadUrgency",
        ),
        (
            vec![("ttl", "60"), ("topic", "no spaces please"), enc, a],
            body.clone(),
            400,
            "BadTopic",
        ),
        (
            vec![("ttl", "60"), a],
            body.clone(),
            400,
            "MissingContentEncoding",
        ),
        (
            vec![("ttl", "60"), ("content-encoding", "aesgcm"), a],
            body.clone(),
            415,
            "UnsupportedContentEncoding",
        ),
        // Encrypted for another subscription.
        (
            vec![("ttl", "60"), enc, a],
            webpush_encrypt(&other, b"{}"),
            400,
            "DecryptionFailed",
        ),
        (
            vec![("ttl", "60"), enc, a],
            Vec::new(),
            400,
            "DecryptionFailed",
        ),
        (
            vec![("ttl", "60"), enc, a],
            vec![0; 100],
            400,
            "DecryptionFailed",
        ),
        (
            vec![("ttl", "60"), enc, a],
            webpush_encrypt(&sub, &[b'x'; 4096]),
            413,
            "PayloadTooLarge",
        ),
    ];
    for (headers, body, status, reason) in &cases {
        let r = post(&c, &sub.endpoint, headers, body.clone()).await;
        assert_eq!(
            (r.status, r.reason()),
            (*status, (*reason).to_owned()),
            "{headers:?}: {}",
            r.body
        );
    }
    assert_eq!(
        app.pushes(PushFilter::token(sub.token.clone())).len(),
        cases.len()
    );
    // The largest body that fits is taken.
    let most = webpush_encrypt(&sub, &[b'x'; 4096 - 103]);
    assert_eq!(most.len(), 4096);
    let r = post(&c, &sub.endpoint, &[("ttl", "0"), enc, a], most).await;
    assert_eq!(r.status, 201, "{}", r.body);

    // Unknown ids and paths: 404, not recorded (they name no subscription).
    let unknown = format!("{}/webpush/0123", app.webpush_url());
    let r = post(&c, &unknown, &[("ttl", "60"), enc, a], body.clone()).await;
    assert_eq!((r.status, r.reason()), (404, "NotFound".into()));
    let r = post(&c, &format!("{}/other", app.webpush_url()), &[], Vec::new()).await;
    assert_eq!(r.status, 404);
    let r = c.get(&sub.endpoint).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert!(app.pushes(PushFilter::token(unknown)).is_empty());

    // An ended subscription: 410, recorded.
    assert!(app.webpush_unsubscribe(&sub.token));
    let r = push(&c, &app, &vapid, &sub, b"{}").await;
    assert_eq!((r.status, r.reason()), (410, "Gone".into()));
    let last = app.pushes(PushFilter::token(sub.token.clone()));
    assert_eq!(last.last().unwrap().status, 410);
    assert!(!app.webpush_unsubscribe(&sub.token));
}

#[tokio::test]
async fn faults_answer_with_web_push_statuses() {
    let app = start().await;
    let c = client(&app, true);
    let v = Vapid::new();

    let sub = app.webpush_subscribe();
    for (fault, status, reason) in [
        (Fault::Dead, 410, "Gone"),
        (Fault::BadToken, 404, "NotFound"),
        (Fault::NotForTopic, 403, "Forbidden"),
        (
            Fault::Throttle {
                retry_after_secs: 30,
            },
            429,
            "TooManyRequests",
        ),
        (
            Fault::Respond {
                status: 502,
                reason: "BadGateway".into(),
            },
            502,
            "BadGateway",
        ),
    ] {
        app.set_fault(&sub.token, fault.clone());
        let r = push(&c, &app, &v, &sub, b"{}").await;
        assert_eq!(
            (r.status, r.reason()),
            (status, reason.to_owned()),
            "{fault:?}"
        );
        if status == 429 {
            assert_eq!(r.header("retry-after").as_deref(), Some("30"));
        }
    }
    app.set_fault(&sub.token, Fault::FailTimes(2));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(push(&c, &app, &v, &sub, b"{}").await.status);
    }
    assert_eq!(statuses, [503, 503, 201]);
    // The payload is still decrypted and recorded when a fault answers.
    let failed = app.pushes(PushFilter::token(sub.token.clone()));
    assert_eq!(failed[failed.len() - 2].payload, json!({}));
    app.clear_fault(&sub.token);
    assert_eq!(push(&c, &app, &v, &sub, b"{}").await.status, 201);

    // Provider-wide: an outage for every subscription; a subscription's own
    // fault still wins; the other mocks are untouched.
    app.set_provider_fault(
        Provider::WebPush,
        nudge_test_app::FaultSpec::FailFor { ms: 60_000 }.into(),
    );
    let r = push(&c, &app, &v, &app.webpush_subscribe(), b"{}").await;
    assert_eq!((r.status, r.reason()), (503, "ServiceUnavailable".into()));
    app.set_fault(&sub.token, Fault::Dead);
    assert_eq!(push(&c, &app, &v, &sub, b"{}").await.status, 410);
    let mut apns = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    assert_eq!(apns_alert(&mut apns, &app, "0abc").await.status, 200);
    app.clear_provider_fault(Provider::WebPush);
    app.clear_fault(&sub.token);
    assert_eq!(push(&c, &app, &v, &sub, b"{}").await.status, 201);

    // By name.
    let named = |name: &str| app.webpush_subscribe_named(name).unwrap();
    let dead = named("dead");
    assert!(
        dead.endpoint.contains("/webpush/dead-"),
        "{}",
        dead.endpoint
    );
    assert_eq!(push(&c, &app, &v, &dead, b"{}").await.status, 410);
    assert_eq!(push(&c, &app, &v, &named("badd"), b"{}").await.status, 404);
    let r = push(&c, &app, &v, &named("c0017"), b"{}").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("7"));
    let flaky = named("fa112");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(push(&c, &app, &v, &flaky, b"{}").await.status);
    }
    assert_eq!(statuses, [503, 503, 201]);
    let slow = named("de1a300");
    let t0 = Instant::now();
    assert_eq!(push(&c, &app, &v, &slow, b"{}").await.status, 201);
    // A lower bound only: the answer waits for the delay.
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(app.webpush_subscribe_named("no/slash").is_err());
    assert!(app.webpush_subscribe_named("").is_err());
}

#[tokio::test]
async fn subscriptions_through_the_control_api() {
    let app = start().await;
    let c = client(&app, true);
    let v = Vapid::new();
    let url = format!("{}/api/webpush/subscriptions", app.control_url());

    let r = http("POST", &url, None, "").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let sub: WebPushSubscription = serde_json::from_value(r.json()).unwrap();
    assert_eq!(
        sub.token,
        format!("{}#p256dh={}&auth={}", sub.endpoint, sub.p256dh, sub.auth)
    );
    // Keys as the contract wants them: unpadded base64url, 65 and 16 bytes.
    assert_eq!(URL_SAFE_NO_PAD.decode(&sub.p256dh).unwrap().len(), 65);
    assert_eq!(URL_SAFE_NO_PAD.decode(&sub.auth).unwrap().len(), 16);
    let r = push(&c, &app, &v, &sub, br#"{"hello":"world"}"#).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let wait = get(&format!(
        "{}/api/wait?token={}&timeout_ms=5000",
        app.control_url(),
        form_urlencoded::byte_serialize(sub.token.as_bytes()).collect::<String>()
    ))
    .await;
    assert_eq!(wait.status, 200, "{:?}", wait.body);
    assert_eq!(wait.json()["payload"], json!({"hello": "world"}));

    let r = send_json("POST", &url, &json!({"name": "dead"})).await;
    assert_eq!(r.status, 201);
    assert!(
        r.json()["endpoint"]
            .as_str()
            .unwrap()
            .contains("/webpush/dead-")
    );
    assert_eq!(
        send_json("POST", &url, &json!({"name": "a b"}))
            .await
            .status,
        400
    );
    assert_eq!(
        send_json("POST", &url, &json!({"nom": "x"})).await.status,
        400
    );

    // DELETE ends it; pushes then get 410.
    let id = sub.endpoint.rsplit('/').next().unwrap();
    let del = format!("{url}/{id}");
    assert_eq!(http("DELETE", &del, None, "").await.status, 204);
    assert_eq!(push(&c, &app, &v, &sub, b"{}").await.status, 410);
    assert_eq!(http("DELETE", &del, None, "").await.status, 404);

    // The provider-wide fault route knows the mock by name.
    let pf = format!("{}/api/provider-faults/webpush", app.control_url());
    let r = send_json(
        "PUT",
        &pf,
        &json!({"kind": "throttle", "retry_after_secs": 9}),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = push(&c, &app, &v, &app.webpush_subscribe(), b"{}").await;
    assert_eq!(
        (r.status, r.header("retry-after")),
        (429, Some("9".to_owned()))
    );
    let listed = get(&format!("{}/api/provider-faults", app.control_url()))
        .await
        .json();
    assert_eq!(listed["webpush"]["kind"], "throttle");
}

#[tokio::test]
async fn a_subscription_for_an_application_server_key_takes_only_that_key() {
    let app = start().await;
    let c = client(&app, true);
    let ours = Vapid::new();
    let theirs = Vapid::new();
    // Browsers hand the key to the push service in standard base64 too.
    let raw = URL_SAFE_NO_PAD.decode(&ours.k).unwrap();
    let sub = app
        .webpush_subscribe_with(&SubscribeOptions {
            name: None,
            application_server_key: Some(base64::engine::general_purpose::STANDARD.encode(&raw)),
        })
        .unwrap();
    assert_eq!(push(&c, &app, &ours, &sub, b"{}").await.status, 201);
    let r = push(&c, &app, &theirs, &sub, b"{}").await;
    assert_eq!((r.status, r.reason()), (403, "VapidKeyMismatch".into()));
    let p = app.pushes(PushFilter::token(sub.token.clone()));
    assert_eq!(
        p[1].auth,
        AuthMethod::Vapid {
            key: Some(theirs.k.clone())
        }
    );

    assert!(matches!(
        app.webpush_subscribe_with(&SubscribeOptions {
            name: None,
            application_server_key: Some("AAAA".into()),
        }),
        Err(WebPushError::BadApplicationServerKey(_))
    ));

    // The same through the control API, with a name.
    let url = format!("{}/api/webpush/subscriptions", app.control_url());
    let r = send_json(
        "POST",
        &url,
        &json!({"name": "fa111", "application_server_key": ours.k}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let sub: WebPushSubscription = serde_json::from_value(r.json()).unwrap();
    assert_eq!(push(&c, &app, &theirs, &sub, b"{}").await.status, 403);
    assert_eq!(push(&c, &app, &ours, &sub, b"{}").await.status, 503);
    assert_eq!(push(&c, &app, &ours, &sub, b"{}").await.status, 201);
    let r = send_json("POST", &url, &json!({"application_server_key": "AAAA"})).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("application server key")
    );
}
