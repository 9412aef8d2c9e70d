//! The mock OAuth token endpoint and the mock FCM v1 API: gcp_auth (the
//! client Nudge's FCM backend uses) gets a token, valid sends are recorded,
//! and what Google would refuse is refused in Google's format.

mod common;

use std::time::Duration;

use common::*;
use gcp_auth::TokenProvider;
use nudge_test_app::{AuthMethod, Provider, PushFilter, TestAppConfig};
use serde_json::json;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

async fn send(
    c: &mut H2,
    app: &nudge_test_app::TestApp,
    bearer: &str,
    body: &serde_json::Value,
) -> Resp {
    let auth = format!("Bearer {bearer}");
    c.post(
        &fcm_path(app),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

fn data_message(token: &str) -> serde_json::Value {
    json!({"message": {
        "token": token,
        "data": {"account": "0123abcd"},
        "android": {"priority": "high", "ttl": "2419200s"},
    }})
}

#[tokio::test]
async fn gcp_auth_fetches_a_token_that_the_mock_fcm_accepts() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    assert!(app.oauth_token_url().starts_with("http://127.0.0.1:"));
    let sa = gcp_auth::CustomServiceAccount::from_json(&app.fcm_service_account_json()).unwrap();
    let token = bounded(sa.token(&[SCOPE])).await.unwrap();
    assert!(token.as_str().starts_with("ya29."));
    assert_eq!(app.stats().oauth_tokens_issued, 1);

    let mut c = H2::connect(&app.fcm_url(), &app.ca_cert_pem(), None).await;
    let r = send(&mut c, &app, token.as_str(), &data_message("fcm-device-1")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let name = r.json()["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("projects/nudge-test/messages/"), "{name}");

    let p = app.wait_for_push("fcm-device-1", LIMIT).await.unwrap();
    assert_eq!((p.provider, p.status), (Provider::Fcm, 200));
    assert_eq!(p.auth, AuthMethod::OAuth);
    assert_eq!(p.payload["data"]["account"], "0123abcd");
    let s = p.summary();
    assert_eq!((s.kind.as_str(), s.priority.as_str()), ("silent", "high"));

    // validate_only is answered but flagged.
    let mut body = data_message("fcm-device-1");
    body["validate_only"] = json!(true);
    let r = send(&mut c, &app, token.as_str(), &body).await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["name"]
            .as_str()
            .unwrap()
            .ends_with("fake_message_id")
    );
    assert!(
        app.wait_for_push("fcm-device-1", LIMIT)
            .await
            .unwrap()
            .validate_only
    );
}

#[tokio::test]
async fn token_endpoint_refuses_what_google_refuses() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let good = assertion_claims(&app);
    let with = |k: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let iat = now();
    let cases = vec![
        (
            with("aud", json!("https://oauth2.googleapis.com/token")),
            None,
            400,
            "invalid_grant",
        ),
        (
            with(
                "scope",
                json!("https://www.googleapis.com/auth/userinfo.email"),
            ),
            None,
            400,
            "invalid_scope",
        ),
        (with("exp", json!(iat + 3601)), None, 400, "invalid_grant"),
        (with("exp", json!(iat - 10)), None, 400, "invalid_grant"),
        (with("iat", json!(iat + 600)), None, 400, "invalid_grant"),
        (
            with("iss", json!("someone@else.iam.gserviceaccount.com")),
            None,
            401,
            "invalid_client",
        ),
    ];
    for (claims, key, status, error) in cases {
        let r = token_request(&app, &claims, key).await;
        assert_eq!(r.status, status, "{claims}: {:?}", r.body);
        assert_eq!(r.json()["error"], error, "{claims}");
    }
    // A signature that does not verify (one character changed).
    let sa: serde_json::Value = serde_json::from_str(&app.fcm_service_account_json()).unwrap();
    let jwt =
        nudge_test_app::jwt::sign_rs256(sa["private_key"].as_str().unwrap(), None, &good).unwrap();
    let (signed, sig) = jwt.rsplit_once('.').unwrap();
    let mut sig = sig.to_owned();
    let first = sig.remove(0);
    sig.insert(0, if first == 'A' { 'B' } else { 'A' });
    let form = |grant: &str, assertion: &str| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", grant)
            .append_pair("assertion", assertion)
            .finish()
    };
    let post = |body: String| {
        let url = app.oauth_token_url();
        async move {
            http(
                "POST",
                &url,
                Some("application/x-www-form-urlencoded"),
                body,
            )
            .await
        }
    };
    let r = post(form(
        nudge_test_app::oauth::GRANT_TYPE,
        &format!("{signed}.{sig}"),
    ))
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("invalid_grant"))
    );
    assert_eq!(r.json()["error_description"], "Invalid JWT Signature.");
    let r = post(form("client_credentials", &jwt)).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("unsupported_grant_type"))
    );

    // The untampered assertion works, and only that one token was issued.
    let r = post(form(nudge_test_app::oauth::GRANT_TYPE, &jwt)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], 3600);
    let stats = app.stats();
    assert_eq!(stats.oauth_tokens_issued, 1);
    assert_eq!(stats.rejected("oauth/invalid_grant"), 5);
    assert_eq!(stats.rejected("oauth/invalid_scope"), 1);
}

#[tokio::test]
async fn the_https_token_endpoint_works_for_a_client_that_trusts_the_ca() {
    let app = nudge_test_app::start(TestAppConfig {
        oauth_token_uri_https: true,
        ..TestAppConfig::default()
    })
    .await
    .unwrap();
    let url = app.oauth_token_url();
    assert_eq!(url, format!("{}/token", app.fcm_url()));
    let sa: serde_json::Value = serde_json::from_str(&app.fcm_service_account_json()).unwrap();
    assert_eq!(sa["token_uri"], url.as_str());
    let claims = assertion_claims(&app);
    let jwt = nudge_test_app::jwt::sign_rs256(sa["private_key"].as_str().unwrap(), None, &claims)
        .unwrap();
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", nudge_test_app::oauth::GRANT_TYPE)
        .append_pair("assertion", &jwt)
        .finish();
    let mut c = H2::connect(&app.fcm_url(), &app.ca_cert_pem(), None).await;
    let r = c
        .post(
            "/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = send(&mut c, &app, &token, &data_message("d1")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn expired_revoked_unknown_and_missing_tokens_get_401() {
    let app = nudge_test_app::start(TestAppConfig {
        oauth_token_lifetime: Duration::from_millis(1000),
        ..TestAppConfig::default()
    })
    .await
    .unwrap();
    let mut c = H2::connect(&app.fcm_url(), &app.ca_cert_pem(), None).await;
    let token = oauth_token(&app).await;
    let r = send(&mut c, &app, &token, &data_message("d1")).await;
    assert_eq!(r.status, 200, "fresh token: {:?}", r.body);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = send(&mut c, &app, &token, &data_message("d1")).await;
    assert_eq!(
        (r.status, r.fcm_error()),
        (401, "UNAUTHENTICATED".to_owned())
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));

    app.set_oauth_token_lifetime(Duration::from_secs(3600));
    let token = oauth_token(&app).await;
    let r = send(&mut c, &app, &token, &data_message("d1")).await;
    assert_eq!(r.status, 200);
    app.revoke_oauth_tokens();
    let r = send(&mut c, &app, &token, &data_message("d1")).await;
    assert_eq!(r.status, 401);
    let r = send(&mut c, &app, "ya29.made-up", &data_message("d1")).await;
    assert_eq!(r.status, 401);
    let r = c
        .post(&fcm_path(&app), &[], data_message("d1").to_string())
        .await;
    assert_eq!(r.status, 401);
    // A new token after revocation works.
    let token = oauth_token(&app).await;
    assert_eq!(
        send(&mut c, &app, &token, &data_message("d1")).await.status,
        200
    );

    let recorded = app.pushes(PushFilter::token("d1"));
    let statuses: Vec<u16> = recorded.iter().map(|p| p.status).collect();
    assert_eq!(statuses, [200, 401, 200, 401, 401, 401, 200]);
    assert_eq!(app.stats().rejected("fcm/UNAUTHENTICATED"), 4);
}

#[tokio::test]
async fn message_checks() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let mut c = H2::connect(&app.fcm_url(), &app.ca_cert_pem(), None).await;
    let token = oauth_token(&app).await;
    let big = "x".repeat(4097);
    let cases = vec![
        (
            json!({"message": {"token": "d", "data": {"body": big}}}),
            "INVALID_ARGUMENT",
        ),
        (
            json!({"message": {"token": "d", "topic": "news"}}),
            "INVALID_ARGUMENT",
        ),
        (
            json!({"message": {"token": "d", "data": {"n": 1}}}),
            "INVALID_ARGUMENT",
        ),
        (
            json!({"message": {"token": "d", "data": {"from": "x"}}}),
            "INVALID_ARGUMENT",
        ),
        (
            json!({"message": {"token": "d", "android": {"priority": "max"}}}),
            "INVALID_ARGUMENT",
        ),
        (
            json!({"message": {"token": "d", "priority": "high"}}),
            "INVALID_ARGUMENT",
        ),
        (
            json!({"message": {"token": "bad token!"}}),
            "INVALID_ARGUMENT",
        ),
        (json!({"msg": {"token": "d"}}), "INVALID_ARGUMENT"),
        (json!({"message": {}}), "INVALID_ARGUMENT"),
    ];
    for (body, code) in cases {
        let r = send(&mut c, &app, &token, &body).await;
        assert_eq!((r.status, r.fcm_error()), (400, code.to_owned()), "{body}");
        assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    }
    let auth = format!("Bearer {token}");
    let r = c
        .post(&fcm_path(&app), &[("authorization", &auth)], "{not json")
        .await;
    assert_eq!(r.status, 400);
    // Another project's URL.
    let r = c
        .post(
            "/v1/projects/someone-else/messages:send",
            &[("authorization", &auth)],
            data_message("d").to_string(),
        )
        .await;
    assert_eq!(
        (r.status, r.fcm_error()),
        (403, "PERMISSION_DENIED".to_owned())
    );
    let r = c
        .post(
            "/v1/projects/nudge-test/messages:sendAll",
            &[("authorization", &auth)],
            "{}",
        )
        .await;
    assert_eq!(r.status, 404);
    // A notification message within the limit.
    let ok = json!({"message": {"token": "d", "notification": {"title": "Alice", "body": "Hi"}}});
    let r = send(&mut c, &app, &token, &ok).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let delivered = app.pushes(PushFilter {
        delivered_only: true,
        ..PushFilter::default()
    });
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].summary().title.as_deref(), Some("Alice"));
}

#[tokio::test]
async fn http1_is_fine_for_fcm() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let token = oauth_token(&app).await;
    let config = client_config(&app.ca_cert_pem(), &[b"http/1.1"], None);
    let tls = bounded(tls_connect(&app.fcm_url(), config)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(fcm_path(&app))
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            data_message("h1").to_string(),
        )))
        .unwrap();
    let resp = bounded(sender.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let p = app.wait_for_push("h1", LIMIT).await.unwrap();
    assert_eq!(p.http_version, "HTTP/1.1");
    assert_eq!(app.stats().fcm_tls_connections, 1);
}
