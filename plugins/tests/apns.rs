//! The APNs backend against the test-app's mock APNs (TLS, HTTP/2) on
//! 127.0.0.1: authentication, payload choice, every error mapping, and
//! connection sharing.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{apns_token, assert_timeout_is_transient, bounded, device, important, push, silent};
use nudge_plugins::apns::{ApnsBackend, ApnsCertificateAuth};
use nudge_plugins::clock::ManualClock;
use nudge_plugins::{Outcome, PushBackend};
use nudge_test_app::{AuthMethod, Fault, PushFilter, TestAppConfig};

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
