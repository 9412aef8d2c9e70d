//! The mock APNs accepts what Apple accepts, refuses what Apple refuses with
//! Apple's status and reason, and records both.

mod common;

use std::time::Duration;

use common::*;
use nudge_test_app::{ApnsEnvironment, AuthMethod, Provider, PushFilter, TestAppConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Headers to send, as name/value pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

fn path(token: &str) -> String {
    format!("/3/device/{token}")
}

#[tokio::test]
async fn valid_jwt_pushes_are_recorded_on_one_connection_with_one_jwt() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let mut c = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let jwt = apns_jwt(&app);
    let mut headers = alert_headers(&jwt);
    let apns_id = "123E4567-E89B-12D3-A456-4266554400A0";
    headers.push(("apns-id".into(), apns_id.into()));
    headers.push(("apns-expiration".into(), (now() + 3600).to_string()));
    headers.push(("apns-collapse-id".into(), "chat-1".into()));
    for _ in 0..3 {
        let r = c.post(&path(TOKEN), &as_refs(&headers), ALERT).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert!(r.body.is_empty());
        assert_eq!(r.header("apns-id").as_deref(), Some(apns_id));
    }

    let pushes = app.pushes(PushFilter::token(TOKEN));
    assert_eq!(pushes.len(), 3);
    let p = &pushes[0];
    assert_eq!(p.provider, Provider::Apns);
    assert_eq!(p.status, 200);
    assert_eq!(p.reason, None);
    assert_eq!(p.headers["apns-topic"], "org.example.app");
    assert_eq!(p.headers["apns-collapse-id"], "chat-1");
    assert!(!p.headers.contains_key("authorization"));
    assert_eq!(p.payload["aps"]["alert"]["title"], "Alice");
    assert_eq!(p.http_version, "HTTP/2.0");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(
        p.auth,
        AuthMethod::Jwt {
            key_id: Some(app.apns_credentials().key_id)
        }
    );
    let s = p.summary();
    assert_eq!(
        (s.kind.as_str(), s.body.as_deref()),
        ("alert", Some("Hello"))
    );

    let stats = app.stats();
    assert_eq!(stats.apns_tls_connections, 1);
    assert_eq!(stats.apns_jwts_seen, 1);
    assert_eq!(stats.apns_requests, 3);
    assert_eq!(stats.accepted, 3);
    assert!(stats.rejected.is_empty(), "{:?}", stats.rejected);

    // A second connection with a new token is counted as such.
    let mut c2 = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let jwt2 = app.apns_credentials().provider_token(now() - 5).unwrap();
    let r = c2
        .post(&path(TOKEN), &as_refs(&alert_headers(&jwt2)), ALERT)
        .await;
    assert_eq!(r.status, 200);
    // No apns-id sent: the mock makes one up, as Apple does.
    assert_eq!(r.header("apns-id").unwrap().len(), 36);
    let stats = app.stats();
    assert_eq!((stats.apns_tls_connections, stats.apns_jwts_seen), (2, 2));
}

#[tokio::test]
async fn bad_provider_tokens_are_refused_with_apples_reasons() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let creds = app.apns_credentials();
    let mut c = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;

    // Signed with another key under the right key id and team id.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let forged = nudge_test_app::jwt::sign_es256(
        &other.serialize_pem(),
        &creds.key_id,
        &serde_json::json!({"iss": creds.team_id, "iat": now()}),
    )
    .unwrap();
    let wrong_team = nudge_test_app::jwt::sign_es256(
        &creds.key_pem,
        &creds.key_id,
        &serde_json::json!({"iss": "OTHERTEAM1", "iat": now()}),
    )
    .unwrap();
    let wrong_kid = nudge_test_app::jwt::sign_es256(
        &creds.key_pem,
        "OTHERKEY01",
        &serde_json::json!({"iss": creds.team_id, "iat": now()}),
    )
    .unwrap();
    let old = creds.provider_token(now() - 3700).unwrap();
    let future = creds.provider_token(now() + 3600).unwrap();
    // A valid token with its last signature character changed.
    let mut tampered = creds.provider_token(now()).unwrap();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });

    for (jwt, reason) in [
        (forged.as_str(), "InvalidProviderToken"),
        (wrong_team.as_str(), "InvalidProviderToken"),
        (wrong_kid.as_str(), "InvalidProviderToken"),
        (tampered.as_str(), "InvalidProviderToken"),
        ("not.a.jwt", "InvalidProviderToken"),
        (old.as_str(), "ExpiredProviderToken"),
        (future.as_str(), "InvalidProviderToken"),
    ] {
        let r = c
            .post(&path(TOKEN), &as_refs(&alert_headers(jwt)), ALERT)
            .await;
        assert_eq!((r.status, r.reason()), (403, reason.to_owned()), "{jwt}");
    }
    // No credentials at all.
    let r = c
        .post(
            &path(TOKEN),
            &[
                ("apns-topic", "org.example.app"),
                ("apns-push-type", "alert"),
            ],
            ALERT,
        )
        .await;
    assert_eq!(
        (r.status, r.reason()),
        (403, "MissingProviderToken".to_owned())
    );

    // Every refusal is recorded with its status and counted by kind.
    let recorded = app.pushes(PushFilter::token(TOKEN));
    assert_eq!(recorded.len(), 8);
    assert!(recorded.iter().all(|p| p.status == 403 && !p.delivered()));
    assert_eq!(recorded[0].reason.as_deref(), Some("InvalidProviderToken"));
    let stats = app.stats();
    assert_eq!(stats.rejected("apns/InvalidProviderToken"), 6);
    assert_eq!(stats.rejected("apns/ExpiredProviderToken"), 1);
    assert_eq!(stats.rejected("apns/MissingProviderToken"), 1);
    assert_eq!(stats.apns_jwts_seen, 0);
    assert_eq!(stats.accepted, 0);
}

#[tokio::test]
async fn a_cached_jwt_still_expires() {
    let app = nudge_test_app::start(TestAppConfig {
        apns_jwt_max_age: Duration::from_secs(2),
        ..TestAppConfig::default()
    })
    .await
    .unwrap();
    let mut c = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let jwt = apns_jwt(&app);
    let r = c
        .post(&path(TOKEN), &as_refs(&alert_headers(&jwt)), ALERT)
        .await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = c
        .post(&path(TOKEN), &as_refs(&alert_headers(&jwt)), ALERT)
        .await;
    assert_eq!(
        (r.status, r.reason()),
        (403, "ExpiredProviderToken".to_owned())
    );
}

#[tokio::test]
async fn certificate_auth_is_accepted_and_a_foreign_certificate_is_not() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let identity = app.apns_client_identity();
    let mut c = H2::connect(&app.apns_url(), &app.ca_cert_pem(), Some(&identity)).await;
    // No apns-topic: a certificate connection defaults to its topic.
    let r = c
        .post(
            &path(TOKEN),
            &[("apns-push-type", "background"), ("apns-priority", "5")],
            r#"{"aps":{"content-available":1}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let p = app.wait_for_push(TOKEN, LIMIT).await.unwrap();
    assert_eq!(p.auth, AuthMethod::Certificate);
    assert_eq!(p.summary().kind, "silent");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(app.stats().apns_client_cert_connections, 1);

    // A self-signed client certificate is refused during the handshake.
    let foreign = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
    let config = client_config(
        &app.ca_cert_pem(),
        &[b"h2"],
        Some((&foreign.cert.pem(), &foreign.signing_key.serialize_pem())),
    );
    // TLS 1.3 reports a refused client certificate after the handshake, on
    // the first read.
    let outcome = async {
        let mut tls = tls_connect(&app.apns_url(), config).await?;
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        let mut buf = [0u8; 16];
        tls.read(&mut buf).await
    };
    let result = bounded(outcome).await;
    assert!(
        matches!(result, Err(_) | Ok(0)),
        "a foreign client certificate must not get through: {result:?}"
    );
    assert!(app.stats().rejected("apns/tls_handshake") >= 1);
}

#[tokio::test]
async fn topic_checks() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let mut c = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let jwt = apns_jwt(&app);
    let auth = format!("bearer {jwt}");
    let cases: &[(Headers, &str, u16, &str)] = &[
        (
            &[("apns-topic", "org.evil.app"), ("apns-push-type", "alert")],
            ALERT,
            400,
            "TopicDisallowed",
        ),
        (&[("apns-push-type", "alert")], ALERT, 400, "MissingTopic"),
        // VoIP pushes go to <bundle>.voip.
        (
            &[
                ("apns-topic", "org.example.app"),
                ("apns-push-type", "voip"),
            ],
            ALERT,
            400,
            "BadTopic",
        ),
        (
            &[
                ("apns-topic", "org.example.app.voip"),
                ("apns-push-type", "voip"),
            ],
            ALERT,
            200,
            "",
        ),
        (
            &[
                ("apns-topic", "org.example.app.voip"),
                ("apns-push-type", "alert"),
            ],
            ALERT,
            400,
            "TopicDisallowed",
        ),
    ];
    for (headers, body, status, reason) in cases {
        let mut h = vec![("authorization", auth.as_str())];
        h.extend_from_slice(headers);
        let r = c.post(&path(TOKEN), &h, *body).await;
        assert_eq!(r.status, *status, "{headers:?}: {:?}", r.body);
        if *status != 200 {
            assert_eq!(r.reason(), *reason, "{headers:?}");
        }
    }
    // With no topics configured, any topic is fine.
    let open = nudge_test_app::start(TestAppConfig {
        apns_topics: vec![],
        ..TestAppConfig::default()
    })
    .await
    .unwrap();
    let mut c = H2::connect(&open.apns_url(), &open.ca_cert_pem(), None).await;
    let auth = format!("bearer {}", apns_jwt(&open));
    let r = c
        .post(
            &path(TOKEN),
            &[
                ("authorization", &auth),
                ("apns-topic", "any.thing"),
                ("apns-push-type", "alert"),
            ],
            ALERT,
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn header_path_and_token_checks() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let mut c = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let jwt = apns_jwt(&app);
    let base = alert_headers(&jwt);
    let with = |k: &str, v: &str| {
        let mut h: Vec<(String, String)> = base.iter().filter(|(n, _)| n != k).cloned().collect();
        h.push((k.into(), v.into()));
        h
    };
    let long_collapse = "c".repeat(65);
    let cases = [
        (with("apns-priority", "7"), 400, "BadPriority"),
        (
            with("apns-expiration", "tomorrow"),
            400,
            "BadExpirationDate",
        ),
        (
            with("apns-collapse-id", &long_collapse),
            400,
            "BadCollapseId",
        ),
        (with("apns-push-type", "shout"), 400, "InvalidPushType"),
        (with("apns-id", "not-a-uuid"), 400, "BadMessageId"),
    ];
    for (h, status, reason) in cases {
        let r = c.post(&path(TOKEN), &as_refs(&h), ALERT).await;
        assert_eq!((r.status, r.reason()), (status, reason.to_owned()), "{h:?}");
    }
    let h = as_refs(&base);
    for (p, status, reason) in [
        ("/3/device/xyz123", 400, "BadDeviceToken"),
        ("/3/device/abc", 400, "BadDeviceToken"),
        ("/3/device/", 400, "MissingDeviceToken"),
        ("/2/device/abcd", 404, "BadPath"),
        ("/3/device/ab/cd", 404, "BadPath"),
    ] {
        let r = c.post(p, &h, ALERT).await;
        assert_eq!((r.status, r.reason()), (status, reason.to_owned()), "{p}");
    }
    let r = c.request("GET", &path(TOKEN), &h, "").await;
    assert_eq!((r.status, r.reason()), (405, "MethodNotAllowed".to_owned()));
    // A 64-byte collapse id and an upper-case hex token are fine.
    let ok = with("apns-collapse-id", &"c".repeat(64));
    let r = c
        .post(&path(&TOKEN.to_uppercase()), &as_refs(&ok), ALERT)
        .await;
    assert_eq!(r.status, 200);
    let stats = app.stats();
    assert_eq!(stats.rejected("apns/BadPath"), 2);
    assert_eq!(stats.rejected("apns/BadDeviceToken"), 2);
}

#[tokio::test]
async fn payload_checks() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let mut c = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let jwt = apns_jwt(&app);
    let alert = alert_headers(&jwt);
    let mut voip = alert_headers(&jwt);
    voip[1].1 = "org.example.app.voip".into();
    voip[2].1 = "voip".into();
    // A payload of exactly `n` bytes.
    let sized = |n: usize| {
        let pad = n - r#"{"aps":{"alert":""}}"#.len();
        format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(pad))
    };
    let cases = [
        (&alert, sized(4096), 200, ""),
        (&alert, sized(4097), 413, "PayloadTooLarge"),
        (&voip, sized(5120), 200, ""),
        (&voip, sized(5121), 413, "PayloadTooLarge"),
        (&alert, String::new(), 400, "PayloadEmpty"),
        (
            &alert,
            r#"{"aps":{"alert":"x"}"#.to_owned(),
            400,
            "BadPayload",
        ),
        (&alert, "[1,2]".to_owned(), 400, "BadPayload"),
    ];
    for (h, body, status, reason) in cases {
        let len = body.len();
        let r = c.post(&path(TOKEN), &as_refs(h), body).await;
        assert_eq!(r.status, status, "{len} bytes: {:?}", r.body);
        if status != 200 {
            assert_eq!(r.reason(), reason);
        }
    }
    // A rejected malformed body is still recorded, as a string.
    let bad = app
        .pushes(PushFilter::token(TOKEN))
        .into_iter()
        .find(|p| p.reason.as_deref() == Some("BadPayload"))
        .unwrap();
    assert_eq!(bad.payload, serde_json::json!(r#"{"aps":{"alert":"x"}"#));
}

#[tokio::test]
async fn http1_is_refused() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    // Offering only http/1.1 in ALPN: the handshake fails, like Apple's.
    let config = client_config(&app.ca_cert_pem(), &[b"http/1.1"], None);
    let result = bounded(tls_connect(&app.apns_url(), config)).await;
    assert!(result.is_err(), "ALPN http/1.1 must not be accepted");

    // No ALPN at all, then an HTTP/1.1 request: 505 and closed.
    let config = client_config(&app.ca_cert_pem(), &[], None);
    let mut tls = bounded(tls_connect(&app.apns_url(), config)).await.unwrap();
    let jwt = apns_jwt(&app);
    let req = format!(
        "POST /3/device/{TOKEN} HTTP/1.1\r\nhost: localhost\r\nauthorization: bearer {jwt}\r\n\
         apns-topic: org.example.app\r\ncontent-length: {}\r\n\r\n{ALERT}",
        ALERT.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    bounded(tls.read_to_string(&mut answer)).await.ok();
    assert!(answer.starts_with("HTTP/1.1 505"), "{answer:?}");

    assert!(app.pushes(PushFilter::default()).is_empty());
    let stats = app.stats();
    assert_eq!(stats.rejected("apns/not_http2"), 1);
    assert!(stats.rejected("apns/tls_handshake") >= 1);
}

#[tokio::test]
async fn too_many_provider_token_updates_when_enabled() {
    let app = nudge_test_app::start(TestAppConfig {
        apns_min_token_refresh: Some(Duration::from_secs(1200)),
        ..TestAppConfig::default()
    })
    .await
    .unwrap();
    let mut c = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let creds = app.apns_credentials();
    let first = creds.provider_token(now()).unwrap();
    let second = creds.provider_token(now() - 1).unwrap();
    assert_ne!(first, second);
    let r = c
        .post(&path(TOKEN), &as_refs(&alert_headers(&first)), ALERT)
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .post(&path(TOKEN), &as_refs(&alert_headers(&second)), ALERT)
        .await;
    assert_eq!(
        (r.status, r.reason()),
        (429, "TooManyProviderTokenUpdates".to_owned())
    );
    // Reusing the first token is fine.
    let r = c
        .post(&path(TOKEN), &as_refs(&alert_headers(&first)), ALERT)
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn likely_bugs_warn_and_strict_mode_rejects_them() {
    let lenient = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let strict = nudge_test_app::start(TestAppConfig {
        apns_strict: true,
        ..TestAppConfig::default()
    })
    .await
    .unwrap();
    let background = r#"{"aps":{"content-available":1}}"#;
    // (headers to change, body, strict reason)
    let cases: [(Headers, &str, &str); 4] = [
        (
            &[("apns-push-type", "background"), ("apns-priority", "10")],
            background,
            "BadPriority",
        ),
        (
            &[("apns-push-type", "background"), ("apns-priority", "5")],
            r#"{"aps":{}}"#,
            "BadPayload",
        ),
        // fpush's bug: a TTL where Apple wants an absolute date.
        (&[("apns-expiration", "86400")], ALERT, "BadExpirationDate"),
        (&[], r#"{"data":"no aps"}"#, "BadPayload"),
    ];
    for (app, is_strict) in [(&lenient, false), (&strict, true)] {
        let mut c = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
        let jwt = apns_jwt(app);
        for (changes, body, reason) in cases {
            let mut h = alert_headers(&jwt);
            for (k, v) in changes {
                h.retain(|(n, _)| n != k);
                h.push(((*k).into(), (*v).into()));
            }
            let r = c.post(&path(TOKEN), &as_refs(&h), body).await;
            if is_strict {
                assert_eq!(
                    (r.status, r.reason()),
                    (400, reason.to_owned()),
                    "{changes:?}"
                );
            } else {
                assert_eq!(r.status, 200, "{changes:?}");
                let p = app.wait_for_push(TOKEN, LIMIT).await.unwrap();
                assert_eq!(p.warnings.len(), 1, "{changes:?}: {:?}", p.warnings);
            }
        }
        // Without apns-push-type.
        let h: Vec<_> = alert_headers(&jwt)
            .into_iter()
            .filter(|(k, _)| k != "apns-push-type")
            .collect();
        let r = c.post(&path(TOKEN), &as_refs(&h), ALERT).await;
        if is_strict {
            assert_eq!((r.status, r.reason()), (400, "InvalidPushType".to_owned()));
        } else {
            assert_eq!(r.status, 200);
        }
    }
}

#[tokio::test]
async fn the_sandbox_and_production_prefixes_are_recorded_as_the_environment() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let mut c = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let jwt = apns_jwt(&app);
    let h = alert_headers(&jwt);
    for prefix in ["", "/production", "/sandbox"] {
        let r = c
            .post(&format!("{prefix}{}", path(TOKEN)), &as_refs(&h), ALERT)
            .await;
        assert_eq!(r.status, 200, "{prefix}: {:?}", r.body);
    }
    // Under a prefix the checks are Apple's as ever.
    let r = c.post("/sandbox/3/device/xyz", &as_refs(&h), ALERT).await;
    assert_eq!((r.status, r.reason()), (400, "BadDeviceToken".to_owned()));
    let r = c.post("/staging/3/device/ab", &as_refs(&h), ALERT).await;
    assert_eq!((r.status, r.reason()), (404, "BadPath".to_owned()));

    let reached: Vec<_> = app
        .pushes(PushFilter::token(TOKEN))
        .iter()
        .map(|p| p.environment)
        .collect();
    assert_eq!(
        reached,
        [
            Some(ApnsEnvironment::Production),
            Some(ApnsEnvironment::Production),
            Some(ApnsEnvironment::Sandbox)
        ]
    );
    assert!(app.apns_sandbox_url().ends_with("/sandbox"));
    assert!(app.apns_production_url().ends_with("/production"));
    let json = app.pushes(PushFilter::token(TOKEN))[2].to_json();
    assert_eq!(json["environment"], "sandbox");
}
