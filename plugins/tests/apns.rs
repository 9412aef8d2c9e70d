//! The APNs backend against the test-app's mock APNs (TLS, HTTP/2) on
//! 127.0.0.1: authentication, payload choice, every error mapping,
//! connection sharing; calls to the VoIP token, the sandbox and production
//! endpoints of one app, encrypted pass-through, publish options.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{apns_token, assert_timeout_is_transient, bounded, device, important, push, silent};
use nudge_plugins::apns::{ApnsBackend, ApnsCertificateAuth, ApnsEndpoint, ClientKind};
use nudge_plugins::clock::ManualClock;
use nudge_plugins::{Device, Environment, Outcome, PushBackend, PushOptions};
use nudge_test_app::{ApnsEnvironment, AuthMethod, Fault, PushFilter, TestAppConfig};

fn strict() -> TestAppConfig {
    TestAppConfig {
        apns_strict: true,
        ..TestAppConfig::default()
    }
}

#[tokio::test]
async fn jwt_is_valid_and_reused_across_pushes() {
    bounded(async {
        let mock = common::start(strict()).await;
        let backend = ApnsBackend::new("app", &mock.apns_config()).unwrap();
        for _ in 0..5 {
            let token = nudge_test_app::random_apns_token();
            assert_eq!(push(&backend, &token, true).await, Outcome::Delivered);
            let recorded = mock.app.pushes(PushFilter::token(&token));
            assert_eq!(recorded.len(), 1);
            assert_eq!(
                recorded[0].auth,
                AuthMethod::Jwt {
                    key_id: Some(mock.app.apns_credentials().key_id)
                }
            );
        }
        let stats = mock.app.stats();
        assert_eq!(stats.accepted, 5);
        assert_eq!(stats.apns_jwts_seen, 1, "one provider token for every push");
        assert_eq!(stats.apns_tls_connections, 1);
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn jwt_is_refreshed_after_its_age_limit() {
    bounded(async {
        let mock = common::start(strict()).await;
        // Start 55 minutes in the past, so that every token this test
        // signs is in the mock's one-hour window, and none in its future.
        let clock = Arc::new(ManualClock::at(
            SystemTime::now() - Duration::from_secs(55 * 60),
        ));
        let backend = ApnsBackend::with_clock("app", &mock.apns_config(), clock.clone()).unwrap();
        let token = nudge_test_app::random_apns_token();

        assert_eq!(push(&backend, &token, true).await, Outcome::Delivered);
        clock.advance(Duration::from_secs(49 * 60 + 59));
        assert_eq!(push(&backend, &token, true).await, Outcome::Delivered);
        assert_eq!(
            mock.app.stats().apns_jwts_seen,
            1,
            "reused before 50 minutes"
        );

        clock.advance(Duration::from_secs(1));
        assert_eq!(push(&backend, &token, true).await, Outcome::Delivered);
        assert_eq!(push(&backend, &token, false).await, Outcome::Delivered);
        assert_eq!(
            mock.app.stats().apns_jwts_seen,
            2,
            "replaced at 50 minutes, once"
        );

        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn alert_or_background_is_chosen_from_the_notification() {
    bounded(async {
        let mock = common::start(strict()).await;
        let mut config = mock.apns_config();
        config.include_sender = true;
        config.include_body = true;
        config.ttl_secs = Some(3600);
        config.collapse_id = Some("chat".into());
        let backend = ApnsBackend::new("app", &config).unwrap();
        let topic = mock.app.apns_topics()[0].clone();

        let alert_token = nudge_test_app::random_apns_token();
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(push(&backend, &alert_token, true).await, Outcome::Delivered);
        let alert = &mock.app.pushes(PushFilter::token(&alert_token))[0];
        assert_eq!(alert.headers["apns-push-type"], "alert");
        assert_eq!(alert.headers["apns-priority"], "10");
        assert_eq!(alert.headers["apns-topic"], topic);
        assert_eq!(alert.headers["apns-collapse-id"], "chat");
        let expiration: u64 = alert.headers["apns-expiration"].parse().unwrap();
        assert!(
            (before + 3600..=before + 3602).contains(&expiration),
            "absolute time now + TTL, got {expiration} at {before}"
        );
        assert_eq!(alert.payload["aps"]["mutable-content"], 1);
        assert_eq!(alert.payload["aps"]["alert"]["body"], "Wherefore art thou?");
        assert_eq!(
            alert.payload["aps"]["alert"]["title"],
            "juliet@capulet.example/balcony"
        );
        assert!(alert.warnings.is_empty(), "{:?}", alert.warnings);

        let silent_token = nudge_test_app::random_apns_token();
        assert_eq!(
            push(&backend, &silent_token, false).await,
            Outcome::Delivered
        );
        let wake = &mock.app.pushes(PushFilter::token(&silent_token))[0];
        assert_eq!(wake.headers["apns-push-type"], "background");
        assert_eq!(wake.headers["apns-priority"], "5");
        assert_eq!(
            wake.payload["aps"],
            serde_json::json!({"content-available": 1})
        );
        assert!(wake.warnings.is_empty(), "{:?}", wake.warnings);
        assert_eq!(wake.summary().kind, "silent");
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn private_data_stays_home_by_default() {
    bounded(async {
        let mock = common::start(strict()).await;
        let backend = ApnsBackend::new("app", &mock.apns_config()).unwrap();
        let token = nudge_test_app::random_apns_token();
        assert_eq!(push(&backend, &token, true).await, Outcome::Delivered);
        let p = &mock.app.pushes(PushFilter::token(&token))[0];
        let text = p.payload.to_string();
        assert!(
            !text.contains("Wherefore") && !text.contains("juliet"),
            "{text}"
        );
        assert_eq!(p.payload["aps"]["alert"]["body"], "New message");
        assert!(!p.headers.contains_key("apns-expiration"));
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn voip_apps_push_to_the_voip_topic() {
    bounded(async {
        let mock = common::start(strict()).await;
        let mut config = mock.apns_config();
        config.voip = true;
        let backend = ApnsBackend::new("app", &config).unwrap();
        let token = nudge_test_app::random_apns_token();
        assert_eq!(push(&backend, &token, true).await, Outcome::Delivered);
        let p = &mock.app.pushes(PushFilter::token(&token))[0];
        assert_eq!(p.headers["apns-push-type"], "voip");
        assert_eq!(p.headers["apns-topic"], format!("{}.voip", config.topic));
        assert_eq!(p.headers["apns-priority"], "10");
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn every_error_status_is_mapped() {
    bounded(async {
        let mock = common::start(strict()).await;
        let mut config = mock.apns_config();
        config.timeout_secs = 1;
        let backend = ApnsBackend::new("app", &config).unwrap();

        let dead = push(&backend, &apns_token("dead"), true).await;
        assert!(
            matches!(&dead, Outcome::InvalidToken { reason } if reason == "Unregistered"),
            "410: {dead:?}"
        );
        let bad = push(&backend, &apns_token("badd"), true).await;
        assert!(
            matches!(&bad, Outcome::InvalidToken { reason } if reason == "BadDeviceToken"),
            "400 BadDeviceToken: {bad:?}"
        );
        let other_app = nudge_test_app::random_apns_token();
        mock.app.set_fault(&other_app, Fault::NotForTopic);
        let not_for_topic = push(&backend, &other_app, true).await;
        assert!(
            matches!(&not_for_topic, Outcome::InvalidToken { reason } if reason == "DeviceTokenNotForTopic"),
            "{not_for_topic:?}"
        );

        assert_eq!(
            push(&backend, &apns_token("c0017"), true).await,
            Outcome::Throttled {
                retry_after: Some(Duration::from_secs(7))
            },
            "429 with its delay"
        );

        let flaky = apns_token("fa112");
        for _ in 0..2 {
            let o = push(&backend, &flaky, true).await;
            assert!(matches!(o, Outcome::Transient { .. }), "500: {o:?}");
        }
        assert_eq!(push(&backend, &flaky, true).await, Outcome::Delivered);

        for (status, reason) in [(503, "ServiceUnavailable"), (500, "InternalServerError")] {
            let token = nudge_test_app::random_apns_token();
            mock.app.set_fault(&token, Fault::Respond { status, reason: reason.into() });
            let o = push(&backend, &token, true).await;
            assert!(
                matches!(&o, Outcome::Transient { reason: r, .. } if r.contains(reason)),
                "{status}: {o:?}"
            );
        }
        for (status, reason) in [
            (400, "BadTopic"),
            (400, "BadCollapseId"),
            (403, "InvalidProviderToken"),
            (403, "BadCertificate"),
            (404, "BadPath"),
            (413, "PayloadTooLarge"),
        ] {
            let token = nudge_test_app::random_apns_token();
            mock.app.set_fault(&token, Fault::Respond { status, reason: reason.into() });
            assert_eq!(
                push(&backend, &token, true).await,
                Outcome::Rejected { reason: format!("{status} {reason}") },
            );
        }

        // A timeout is transient, never the token's fault.
        assert_timeout_is_transient(&backend, &mock.app, &nudge_test_app::random_apns_token()).await;
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn malformed_tokens_and_oversized_payloads_never_leave() {
    bounded(async {
        let mock = common::start(strict()).await;
        let mut config = mock.apns_config();
        config.include_sender = true;
        let backend = ApnsBackend::new("app", &config).unwrap();
        for token in ["", "not-hex", "../../admin"] {
            let o = push(&backend, token, true).await;
            assert!(
                matches!(o, Outcome::InvalidToken { .. }),
                "{token:?}: {o:?}"
            );
        }
        let mut n = important();
        n.last_message_sender = Some("x".repeat(5000));
        let o = backend
            .send(&device(&nudge_test_app::random_apns_token()), &n)
            .await;
        assert!(matches!(o, Outcome::Rejected { .. }), "{o:?}");
        assert_eq!(mock.app.stats().apns_requests, 0);
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn expired_provider_token_is_replaced_once_and_retried() {
    bounded(async {
        let mock = common::start(TestAppConfig {
            apns_jwt_max_age: Duration::from_secs(1),
            // A second replacement within this would be refused with 429
            // TooManyProviderTokenUpdates: a storm of refreshes would show.
            apns_min_token_refresh: Some(Duration::from_secs(2)),
            ..strict()
        })
        .await;
        let clock = Arc::new(ManualClock::new());
        let backend = ApnsBackend::with_clock("app", &mock.apns_config(), clock.clone()).unwrap();
        assert_eq!(
            push(&backend, &nudge_test_app::random_apns_token(), true).await,
            Outcome::Delivered
        );
        // The mock now deems the token expired; the backend's clock barely
        // moved, so only APNs' answer can make it sign a new one.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        clock.advance(Duration::from_secs(3));
        let mut pushes = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let backend = backend.clone();
            pushes.spawn(async move {
                push(&backend, &nudge_test_app::random_apns_token(), true).await
            });
        }
        while let Some(outcome) = pushes.join_next().await {
            assert_eq!(outcome.unwrap(), Outcome::Delivered);
        }
        let stats = mock.app.stats();
        assert_eq!(stats.apns_jwts_seen, 2, "one replacement for 50 rejections");
        assert!(stats.rejected("apns/ExpiredProviderToken") >= 1);
        assert_eq!(stats.rejected("apns/TooManyProviderTokenUpdates"), 0);
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn a_thousand_concurrent_pushes_share_one_connection() {
    bounded(async {
        let mock = common::start(strict()).await;
        let backend: Arc<dyn PushBackend> =
            Arc::new(ApnsBackend::new("app", &mock.apns_config()).unwrap());
        let started = Instant::now();
        let mut pushes = tokio::task::JoinSet::new();
        for i in 0..1000 {
            let backend = backend.clone();
            pushes.spawn(async move {
                let n = if i % 2 == 0 { important() } else { silent() };
                backend
                    .send(&device(&nudge_test_app::random_apns_token()), &n)
                    .await
            });
        }
        let mut delivered = 0;
        while let Some(outcome) = pushes.join_next().await {
            assert_eq!(outcome.unwrap(), Outcome::Delivered);
            delivered += 1;
        }
        let elapsed = started.elapsed();
        assert_eq!(delivered, 1000);
        let stats = mock.app.stats();
        assert_eq!(stats.apns_requests, 1000);
        assert_eq!(stats.apns_tls_connections, 1, "one HTTP/2 connection");
        assert_eq!(stats.apns_jwts_seen, 1);
        eprintln!("1000 concurrent APNs pushes in {elapsed:?}");
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn configured_connections_are_all_used() {
    bounded(async {
        let mock = common::start(strict()).await;
        let mut config = mock.apns_config();
        config.connections = 3;
        let backend = ApnsBackend::new("app", &config).unwrap();
        for _ in 0..9 {
            let o = push(&backend, &nudge_test_app::random_apns_token(), true).await;
            assert_eq!(o, Outcome::Delivered);
        }
        assert_eq!(mock.app.stats().apns_tls_connections, 3);
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn certificate_authentication() {
    bounded(async {
        let mock = common::start(strict()).await;
        let mut config = mock.apns_config();
        config.token = None;
        config.certificate = Some(ApnsCertificateAuth {
            cert_path: mock.apns_cert.clone(),
            key_path: Some(mock.apns_cert_key.clone()),
        });
        let backend = ApnsBackend::new("app", &config).unwrap();
        let token = nudge_test_app::random_apns_token();
        assert_eq!(push(&backend, &token, true).await, Outcome::Delivered);
        assert_eq!(push(&backend, &token, false).await, Outcome::Delivered);
        for p in mock.app.pushes(PushFilter::token(&token)) {
            assert_eq!(p.auth, AuthMethod::Certificate);
        }
        let stats = mock.app.stats();
        assert_eq!(stats.apns_client_cert_connections, 1);
        assert_eq!(stats.apns_jwts_seen, 0);

        // One PEM file holding both, as `openssl pkcs12 -nodes -clcerts`
        // writes it: text lines between the sections, certificate first.
        let combined = mock.dir.path().join("combined.pem");
        let identity = mock.app.apns_client_identity();
        let text = format!(
            "Bag Attributes\n    localKeyID: D2 D1 AF DF\n\
             subject=CN = Apple Push Services: org.example.app\n\
             issuer=CN = Test CA\n{}\
             Bag Attributes\n    localKeyID: D2 D1 AF DF\n\
             Key Attributes: <No Attributes>\n{}",
            identity.cert_pem, identity.key_pem
        );
        std::fs::write(&combined, text).unwrap();
        config.certificate = Some(ApnsCertificateAuth {
            cert_path: combined,
            key_path: None,
        });
        let backend = ApnsBackend::new("app", &config).unwrap();
        assert_eq!(push(&backend, &token, true).await, Outcome::Delivered);
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn untrusted_server_is_transient_not_a_dead_token() {
    bounded(async {
        let mock = common::start(strict()).await;
        let mut config = mock.apns_config();
        config.ca_file = None; // the mock's CA is not in the system store
        let backend = ApnsBackend::new("app", &config).unwrap();
        let o = push(&backend, &nudge_test_app::random_apns_token(), true).await;
        assert!(matches!(o, Outcome::Transient { .. }), "{o:?}");
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn connection_loss_is_transient_and_the_next_push_reconnects() {
    bounded(async {
        let mock = common::start(strict()).await;
        let proxy = common::proxy::Proxy::start(&mock.app.apns_url()).await;
        let mut config = mock.apns_config();
        config.endpoint = nudge_plugins::apns::ApnsEndpoint::Url(proxy.url());
        let backend = ApnsBackend::new("app", &config).unwrap();
        let token = nudge_test_app::random_apns_token();
        assert_eq!(push(&backend, &token, true).await, Outcome::Delivered);

        // Cut the connection while a push is in flight.
        let slow = nudge_test_app::random_apns_token();
        mock.app
            .set_fault(&slow, Fault::Delay(Duration::from_secs(2)));
        let in_flight = {
            let backend = backend.clone();
            let slow = slow.clone();
            tokio::spawn(async move { push(&backend, &slow, true).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut();
        let o = in_flight.await.unwrap();
        assert!(matches!(o, Outcome::Transient { .. }), "{o:?}");

        assert_eq!(push(&backend, &token, true).await, Outcome::Delivered);
        assert_eq!(mock.app.stats().apns_tls_connections, 2, "reconnected once");
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn the_registration_collapse_id_wins_over_the_app_one() {
    bounded(async {
        let mock = common::start(strict()).await;
        let mut config = mock.apns_config();
        config.collapse_id = Some("chat".into());
        let backend = ApnsBackend::new("app", &config).unwrap();
        let token = nudge_test_app::random_apns_token();
        let own = nudge_plugins::Device {
            collapse_id: Some("3f2a9c0d1e7b6a54".into()),
            ..device(&token)
        };
        // Two registrations on one phone: each its own collapse id.
        let other = nudge_plugins::Device {
            collapse_id: Some("0b1c2d3e4f5a6978".into()),
            ..device(&token)
        };
        // Too long for APNs: the app's id is sent instead of a rejected push.
        let too_long = nudge_plugins::Device {
            collapse_id: Some("x".repeat(65)),
            ..device(&token)
        };
        for d in [&own, &other, &device(&token), &too_long] {
            assert_eq!(backend.send(d, &important()).await, Outcome::Delivered);
        }
        let sent: Vec<String> = mock
            .app
            .pushes(PushFilter::token(&token))
            .iter()
            .map(|p| p.headers["apns-collapse-id"].clone())
            .collect();
        assert_eq!(
            sent,
            ["3f2a9c0d1e7b6a54", "0b1c2d3e4f5a6978", "chat", "chat"]
        );

        // Without an app-wide id, only devices that have one send the header.
        let backend = ApnsBackend::new("app", &mock.apns_config()).unwrap();
        let token = nudge_test_app::random_apns_token();
        let own = nudge_plugins::Device {
            collapse_id: Some("3f2a9c0d1e7b6a54".into()),
            ..device(&token)
        };
        assert_eq!(backend.send(&own, &silent()).await, Outcome::Delivered);
        assert_eq!(
            backend.send(&device(&token), &silent()).await,
            Outcome::Delivered
        );
        let pushes = mock.app.pushes(PushFilter::token(&token));
        assert_eq!(pushes[0].headers["apns-collapse-id"], "3f2a9c0d1e7b6a54");
        assert!(!pushes[1].headers.contains_key("apns-collapse-id"));
        mock.app.shutdown().await;
    })
    .await
}

/// A message and a call from juliet; the call carries Tigase's Jingle
/// proposal (fixture `component/tests/fixtures/tigase-jingle.xml`).
fn call() -> nudge_plugins::Notification {
    nudge_plugins::Notification {
        call: Some(nudge_plugins::Call {
            sid: Some("a73sjjvkla37jfea".into()),
            media: vec!["audio".into(), "video".into()],
        }),
        last_message_body: None,
        fields: vec![(
            "last-message-sender".into(),
            "juliet@capulet.example/balcony".into(),
        )],
        ..important()
    }
}

fn encrypted(size: usize) -> nudge_plugins::Notification {
    nudge_plugins::Notification {
        encrypted: Some(nudge_plugins::EncryptedPayload {
            data: "A".repeat(size),
            iv: "q6Z0mXc3bNQ9y0lh".into(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_call_goes_to_the_voip_token_and_a_message_to_the_normal_one() {
    bounded(async {
        let mock = common::start(strict()).await;
        let mut config = mock.apns_config();
        config.payload = ClientKind::Siskin;
        config.include_sender = true;
        config.ttl_secs = Some(3600);
        let backend = ApnsBackend::new("app", &config).unwrap();
        let token = nudge_test_app::random_apns_token();
        let voip_token = nudge_test_app::random_apns_token();
        let d = Device {
            voip_token: Some(voip_token.clone()),
            ..device(&token)
        };

        assert_eq!(backend.send(&d, &call()).await, Outcome::Delivered);
        let p = &mock.app.pushes(PushFilter::token(&voip_token))[0];
        assert_eq!(p.headers["apns-push-type"], "voip");
        assert_eq!(p.headers["apns-topic"], format!("{}.voip", config.topic));
        assert_eq!(p.headers["apns-priority"], "10");
        assert_eq!(
            p.headers["apns-expiration"], "0",
            "a call rings now or never"
        );
        assert_eq!(p.payload["sid"], "a73sjjvkla37jfea");
        assert_eq!(p.payload["media"], serde_json::json!(["audio", "video"]));
        assert_eq!(p.payload["sender"], "juliet@capulet.example/balcony");
        assert_eq!(p.payload["account"], "romeo@montague.example");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(mock.app.pushes(PushFilter::token(&token)).is_empty());

        assert_eq!(backend.send(&d, &important()).await, Outcome::Delivered);
        assert_eq!(backend.send(&d, &silent()).await, Outcome::Delivered);
        let normal = mock.app.pushes(PushFilter::token(&token));
        let kinds: Vec<(&str, &str)> = normal
            .iter()
            .map(|p| {
                (
                    p.headers["apns-push-type"].as_str(),
                    p.headers["apns-topic"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("alert", config.topic.as_str()),
                ("background", config.topic.as_str())
            ]
        );
        assert_eq!(mock.app.pushes(PushFilter::token(&voip_token)).len(), 1);
        assert_ne!(
            normal[0].headers["apns-expiration"], "0",
            "messages keep the TTL"
        );

        // A dead VoIP token says which token died.
        let dead = common::apns_token("dead");
        let d = Device {
            voip_token: Some(dead),
            ..device(&token)
        };
        let o = backend.send(&d, &call()).await;
        assert!(
            matches!(&o, Outcome::InvalidToken { reason } if reason == "VoIP token: Unregistered"),
            "{o:?}"
        );
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn sandbox_and_production_tokens_of_one_app_reach_their_endpoints() {
    bounded(async {
        let mock = common::start(strict()).await;
        // The sandbox on another host name than production (the mock's
        // certificate names both), so each has its own connection.
        let sandbox = mock
            .app
            .apns_sandbox_url()
            .replace("127.0.0.1", "localhost");
        let mut config = mock.apns_config();
        config.endpoint = ApnsEndpoint::Url(sandbox.clone());
        config.sandbox_endpoint = ApnsEndpoint::Url(sandbox.clone());
        config.production_endpoint = ApnsEndpoint::Url(mock.app.apns_production_url());
        let backend = ApnsBackend::new("app", &config).unwrap();
        let send = |environment: Option<Environment>| {
            let token = nudge_test_app::random_apns_token();
            let backend = backend.clone();
            async move {
                let d = Device {
                    environment,
                    ..device(&token)
                };
                for _ in 0..3 {
                    assert_eq!(backend.send(&d, &important()).await, Outcome::Delivered);
                }
                token
            }
        };
        let mut tokens = Vec::new();
        for environment in [
            Some(Environment::Sandbox),
            Some(Environment::Production),
            None,
        ] {
            tokens.push((environment, send(environment).await));
        }
        let reached = |token: &str| -> Vec<Option<ApnsEnvironment>> {
            mock.app
                .pushes(PushFilter::token(token))
                .iter()
                .map(|p| p.environment)
                .collect()
        };
        let sandbox3 = vec![Some(ApnsEnvironment::Sandbox); 3];
        let production3 = vec![Some(ApnsEnvironment::Production); 3];
        assert_eq!(reached(&tokens[0].1), sandbox3, "sandbox token");
        assert_eq!(reached(&tokens[1].1), production3, "production token");
        assert_eq!(
            reached(&tokens[2].1),
            sandbox3,
            "no environment: `endpoint`"
        );
        assert_eq!(
            mock.app.stats().apns_tls_connections,
            2,
            "one warm connection per host, kept across pushes"
        );

        // With `endpoint` production, a device without an environment goes
        // there.
        let mut config = mock.apns_config();
        config.sandbox_endpoint = ApnsEndpoint::Url(mock.app.apns_sandbox_url());
        let backend = ApnsBackend::new("app", &config).unwrap();
        let token = nudge_test_app::random_apns_token();
        assert_eq!(push(&backend, &token, true).await, Outcome::Delivered);
        assert_eq!(reached(&token), [Some(ApnsEnvironment::Production)]);
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn encrypted_payloads_pass_through_or_fall_back_to_the_plain_wake_up() {
    bounded(async {
        let mock = common::start(strict()).await;
        let mut config = mock.apns_config();
        config.payload = ClientKind::Siskin;
        let backend = ApnsBackend::new("app", &config).unwrap();

        let token = nudge_test_app::random_apns_token();
        let fits = encrypted(3000);
        assert_eq!(
            backend.send(&device(&token), &fits).await,
            Outcome::Delivered
        );
        let p = &mock.app.pushes(PushFilter::token(&token))[0];
        assert_eq!(p.headers["apns-push-type"], "alert");
        assert_eq!(p.payload["encrypted"], "A".repeat(3000));
        assert_eq!(p.payload["iv"], "q6Z0mXc3bNQ9y0lh");
        assert_eq!(p.payload["aps"]["mutable-content"], 1);
        assert_eq!(p.payload["aps"]["alert"]["body"], "New message");
        assert_eq!(p.payload["account"], "romeo@montague.example");

        // Too large for APNs: the plain wake-up, delivered, no ciphertext.
        let token = nudge_test_app::random_apns_token();
        let too_large = encrypted(5000);
        assert_eq!(
            backend.send(&device(&token), &too_large).await,
            Outcome::Delivered
        );
        let p = &mock.app.pushes(PushFilter::token(&token))[0];
        assert_eq!(p.headers["apns-push-type"], "alert");
        assert!(p.payload.get("encrypted").is_none() && p.payload.get("iv").is_none());
        assert_eq!(p.payload["aps"]["alert"]["body"], "New message");
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn publish_options_reach_apns() {
    bounded(async {
        let mock = common::start(strict()).await;
        let mut config = mock.apns_config();
        config.ttl_secs = Some(60);
        let backend = ApnsBackend::new("app", &config).unwrap();
        let token = nudge_test_app::random_apns_token();
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let options = PushOptions {
            topic: Some(format!("{}.voip", config.topic)),
            ttl_secs: Some(7200),
            ..Default::default()
        };
        let d = Device {
            options,
            ..device(&token)
        };
        assert_eq!(backend.send(&d, &important()).await, Outcome::Delivered);
        let p = &mock.app.pushes(PushFilter::token(&token))[0];
        assert_eq!(p.headers["apns-push-type"], "voip");
        assert_eq!(p.headers["apns-topic"], format!("{}.voip", config.topic));
        let expiration: u64 = p.headers["apns-expiration"].parse().unwrap();
        assert!((before + 7200..=before + 7202).contains(&expiration));

        // Another team app's topic is not honoured; silent and sound are.
        let token = nudge_test_app::random_apns_token();
        let d = Device {
            options: PushOptions {
                topic: Some("com.other.app".into()),
                silent: Some(true),
                ..Default::default()
            },
            ..device(&token)
        };
        assert_eq!(backend.send(&d, &important()).await, Outcome::Delivered);
        let p = &mock.app.pushes(PushFilter::token(&token))[0];
        assert_eq!(p.headers["apns-topic"], config.topic);
        assert_eq!(p.headers["apns-push-type"], "background");
        assert_eq!(p.headers["apns-priority"], "5");
        mock.app.shutdown().await;
    })
    .await
}
