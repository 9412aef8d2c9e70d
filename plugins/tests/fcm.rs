//! The FCM v1 backend against the test-app's mock FCM (TLS, HTTP/2) and
//! mock OAuth token endpoint on 127.0.0.1: access-token reuse and refresh,
//! the message Conversations reads, every error mapping; encrypted
//! pass-through and its fallback, calls, publish options.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_timeout_is_transient, bounded, device, important, push, silent};
use nudge_plugins::clock::ManualClock;
use nudge_plugins::fcm::FcmBackend;
use nudge_plugins::fcm::message::conversations_hash;
use nudge_plugins::{Device, Outcome, PushBackend};
use nudge_test_app::{Fault, PushFilter, TestAppConfig};

/// A token of the mock's fault convention, ended by a non-digit so that
/// nothing extends `N`.
fn token(prefix: &str) -> String {
    format!("{prefix}x-{}", nudge_test_app::random_apns_token())
}

#[tokio::test]
async fn one_access_token_for_many_pushes() {
    bounded(async {
        let mock = common::start(TestAppConfig::default()).await;
        let backend: Arc<dyn PushBackend> =
            Arc::new(FcmBackend::new("app", &mock.fcm_config()).unwrap());
        // A cold start with a burst: the first pushes all wait for one fetch.
        let mut pushes = tokio::task::JoinSet::new();
        for i in 0..200 {
            let backend = backend.clone();
            pushes.spawn(async move {
                let n = if i % 2 == 0 { important() } else { silent() };
                backend.send(&device(&token("ok")), &n).await
            });
        }
        while let Some(outcome) = pushes.join_next().await {
            assert_eq!(outcome.unwrap(), Outcome::Delivered);
        }
        for _ in 0..10 {
            assert_eq!(
                backend.send(&device(&token("ok")), &important()).await,
                Outcome::Delivered
            );
        }
        let stats = mock.app.stats();
        assert_eq!(stats.fcm_requests, 210);
        assert_eq!(
            stats.oauth_tokens_issued, 1,
            "one OAuth token for every push"
        );
        assert_eq!(stats.fcm_tls_connections, 1, "one HTTP/2 connection");
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn access_token_is_refreshed_before_it_expires() {
    bounded(async {
        let mock = common::start(TestAppConfig::default()).await;
        let clock = Arc::new(ManualClock::new());
        let backend = FcmBackend::with_clock("app", &mock.fcm_config(), clock.clone()).unwrap();
        assert_eq!(push(&backend, &token("a"), true).await, Outcome::Delivered);
        // The mock issues one-hour tokens; the backend replaces them a
        // minute before the end.
        clock.advance(Duration::from_secs(3600 - 61));
        assert_eq!(push(&backend, &token("a"), true).await, Outcome::Delivered);
        assert_eq!(mock.app.stats().oauth_tokens_issued, 1);
        clock.advance(Duration::from_secs(2));
        assert_eq!(push(&backend, &token("a"), true).await, Outcome::Delivered);
        assert_eq!(push(&backend, &token("a"), true).await, Outcome::Delivered);
        let stats = mock.app.stats();
        assert_eq!(
            stats.oauth_tokens_issued, 2,
            "refreshed once, before expiry"
        );
        assert_eq!(
            stats.rejected("fcm/UNAUTHENTICATED"),
            0,
            "never sent an expired token"
        );
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_in_real_time() {
    bounded(async {
        let mock = common::start(TestAppConfig {
            oauth_token_lifetime: Duration::from_secs(2),
            ..TestAppConfig::default()
        })
        .await;
        let backend = FcmBackend::new("app", &mock.fcm_config()).unwrap();
        assert_eq!(push(&backend, &token("a"), true).await, Outcome::Delivered);
        assert_eq!(push(&backend, &token("a"), true).await, Outcome::Delivered);
        assert_eq!(mock.app.stats().oauth_tokens_issued, 1);
        // Half its lifetime is the refresh margin of a two-second token.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(push(&backend, &token("a"), true).await, Outcome::Delivered);
        let stats = mock.app.stats();
        assert_eq!(stats.oauth_tokens_issued, 2);
        assert_eq!(stats.rejected("fcm/UNAUTHENTICATED"), 0);
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn revoked_token_is_replaced_on_401_and_the_push_retried() {
    bounded(async {
        let mock = common::start(TestAppConfig::default()).await;
        let backend = FcmBackend::new("app", &mock.fcm_config()).unwrap();
        assert_eq!(push(&backend, &token("a"), true).await, Outcome::Delivered);
        mock.app.revoke_oauth_tokens();
        let mut pushes = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let backend = backend.clone();
            pushes.spawn(async move { push(&backend, &token("b"), true).await });
        }
        while let Some(outcome) = pushes.join_next().await {
            assert_eq!(outcome.unwrap(), Outcome::Delivered);
        }
        let stats = mock.app.stats();
        assert_eq!(
            stats.oauth_tokens_issued, 2,
            "one new token for all the 401s"
        );
        assert!(stats.rejected("fcm/UNAUTHENTICATED") >= 1);
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn token_expired_at_the_server_is_replaced_on_401() {
    bounded(async {
        let mock = common::start(TestAppConfig::default()).await;
        // The backend's clock stands still, so only FCM's 401 can tell it
        // that the token (two seconds, from now on) expired.
        mock.app.set_oauth_token_lifetime(Duration::from_secs(2));
        let clock = Arc::new(ManualClock::new());
        let backend = FcmBackend::with_clock("app", &mock.fcm_config(), clock).unwrap();
        assert_eq!(push(&backend, &token("a"), true).await, Outcome::Delivered);
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert_eq!(push(&backend, &token("a"), true).await, Outcome::Delivered);
        let stats = mock.app.stats();
        assert_eq!(stats.oauth_tokens_issued, 2);
        assert_eq!(stats.rejected("fcm/UNAUTHENTICATED"), 1);
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn priority_and_data_follow_the_notification() {
    bounded(async {
        let mock = common::start(TestAppConfig::default()).await;
        let mut config = mock.fcm_config();
        config.ttl_secs = Some(3600);
        config.collapse_key = Some("xmpp".into());
        let backend = FcmBackend::new("app", &config).unwrap();

        let alert = token("ok");
        assert_eq!(push(&backend, &alert, true).await, Outcome::Delivered);
        let p = &mock.app.pushes(PushFilter::token(&alert))[0];
        assert_eq!(p.payload["android"]["priority"], "high");
        assert_eq!(p.payload["android"]["ttl"], "3600s");
        assert_eq!(p.payload["android"]["collapse_key"], "xmpp");
        assert_eq!(
            p.payload["data"]["account"],
            conversations_hash("romeo@montague.example", "a1b2c3d4e5f60718")
        );
        assert_eq!(p.payload["data"]["message-count"], "1");
        // Sender and body stay home unless the app allows them.
        let text = p.payload.to_string();
        assert!(
            !text.contains("Wherefore") && !text.contains("juliet"),
            "{text}"
        );
        assert!(p.payload.get("notification").is_none());

        let wake = token("ok");
        assert_eq!(push(&backend, &wake, false).await, Outcome::Delivered);
        let p = &mock.app.pushes(PushFilter::token(&wake))[0];
        assert_eq!(p.payload["android"]["priority"], "normal");
        assert_eq!(p.summary().priority, "normal");

        config.include_sender = true;
        config.include_body = true;
        let backend = FcmBackend::new("app", &config).unwrap();
        let room = token("ok");
        let d = Device {
            muc: Some("garden@chat.capulet.example".into()),
            ..device(&room)
        };
        assert_eq!(backend.send(&d, &important()).await, Outcome::Delivered);
        let p = &mock.app.pushes(PushFilter::token(&room))[0];
        assert_eq!(
            p.payload["data"]["last-message-body"],
            "Wherefore art thou?"
        );
        assert_eq!(
            p.payload["data"]["last-message-sender"],
            "juliet@capulet.example/balcony"
        );
        assert_eq!(
            p.payload["data"]["channel"],
            conversations_hash("garden@chat.capulet.example", "a1b2c3d4e5f60718")
        );
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn long_bodies_are_cut_to_the_size_limit() {
    bounded(async {
        let mock = common::start(TestAppConfig::default()).await;
        let mut config = mock.fcm_config();
        config.include_body = true;
        let backend = FcmBackend::new("app", &config).unwrap();
        let t = token("ok");
        let mut n = important();
        n.last_message_body = Some("ü".repeat(5000));
        assert_eq!(backend.send(&device(&t), &n).await, Outcome::Delivered);
        let p = &mock.app.pushes(PushFilter::token(&t))[0];
        let body = p.payload["data"]["last-message-body"].as_str().unwrap();
        assert!(body.ends_with('…') && body.len() > 3000, "{}", body.len());
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn every_error_is_mapped() {
    bounded(async {
        let mock = common::start(TestAppConfig::default()).await;
        let mut config = mock.fcm_config();
        config.timeout_secs = 1;
        let backend = FcmBackend::new("app", &config).unwrap();

        let dead = push(&backend, &token("dead"), true).await;
        assert!(
            matches!(&dead, Outcome::InvalidToken { reason } if reason.contains("UNREGISTERED")),
            "404 UNREGISTERED: {dead:?}"
        );
        let bad = push(&backend, &token("badd"), true).await;
        assert!(
            matches!(&bad, Outcome::InvalidToken { reason } if reason.contains("INVALID_ARGUMENT")),
            "400 INVALID_ARGUMENT naming the token: {bad:?}"
        );
        // A token with characters FCM never issues: the mock refuses it as
        // Google does, naming the token.
        let o = push(&backend, "not a token!", true).await;
        assert!(matches!(o, Outcome::InvalidToken { .. }), "{o:?}");

        let flaky = token("fa112");
        for _ in 0..2 {
            let o = push(&backend, &flaky, true).await;
            assert!(
                matches!(&o, Outcome::Transient { reason, .. } if reason.contains("UNAVAILABLE")),
                "503: {o:?}"
            );
        }
        assert_eq!(push(&backend, &flaky, true).await, Outcome::Delivered);

        for (status, code) in [(500, "INTERNAL"), (503, "UNAVAILABLE")] {
            let t = token("ok");
            mock.app.set_fault(
                &t,
                Fault::Respond {
                    status,
                    reason: code.into(),
                },
            );
            let o = push(&backend, &t, true).await;
            assert!(matches!(o, Outcome::Transient { .. }), "{status}: {o:?}");
        }

        let other_project = token("ok");
        mock.app.set_fault(&other_project, Fault::NotForTopic);
        let o = push(&backend, &other_project, true).await;
        assert!(
            matches!(&o, Outcome::Rejected { reason } if reason.contains("SENDER_ID_MISMATCH")),
            "403: {o:?}"
        );
        for (status, code) in [
            (400, "INVALID_ARGUMENT"),
            (403, "PERMISSION_DENIED"),
            (404, "NOT_FOUND"),
        ] {
            let t = token("ok");
            mock.app.set_fault(
                &t,
                Fault::Respond {
                    status,
                    reason: code.into(),
                },
            );
            let o = push(&backend, &t, true).await;
            assert!(
                matches!(o, Outcome::Rejected { .. }),
                "{status} {code}: {o:?}"
            );
        }

        assert_timeout_is_transient(&backend, &mock.app, &token("ok")).await;
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn a_throttled_push_reports_its_retry_delay() {
    bounded(async {
        let mock = common::start(TestAppConfig::default()).await;
        let backend = FcmBackend::new("app", &mock.fcm_config()).unwrap();
        assert_eq!(
            push(&backend, &token("c00142"), true).await,
            Outcome::Throttled {
                retry_after: Some(Duration::from_secs(42))
            }
        );
        let t = token("ok");
        mock.app.set_fault(
            &t,
            Fault::Throttle {
                retry_after_secs: 9,
            },
        );
        assert_eq!(
            push(&backend, &t, false).await,
            Outcome::Throttled {
                retry_after: Some(Duration::from_secs(9))
            }
        );
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn token_server_down_is_transient() {
    bounded(async {
        let mock = common::start(TestAppConfig::default()).await;
        // A service account whose token_uri is a closed port.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let mut json: serde_json::Value =
            serde_json::from_str(&mock.app.fcm_service_account_json()).unwrap();
        json["token_uri"] = format!("http://127.0.0.1:{port}/token").into();
        let path = mock.dir.path().join("down.json");
        std::fs::write(&path, json.to_string()).unwrap();
        let mut config = mock.fcm_config();
        config.service_account_path = path;
        let backend = FcmBackend::new("app", &config).unwrap();

        let started = Instant::now();
        let o = push(&backend, &token("ok"), true).await;
        assert!(matches!(o, Outcome::Transient { .. }), "{o:?}");
        // The back-off answers the next pushes at once (gcp_auth alone
        // retries for at least 350 ms).
        let again = Instant::now();
        let o = push(&backend, &token("ok"), true).await;
        assert!(matches!(o, Outcome::Transient { .. }), "{o:?}");
        assert!(
            again.elapsed() < Duration::from_millis(300),
            "{:?}",
            again.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(mock.app.stats().fcm_requests, 0);
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn wrong_project_is_rejected_not_a_dead_token() {
    bounded(async {
        let mock = common::start(TestAppConfig::default()).await;
        let mut config = mock.fcm_config();
        config.project_id = Some("someone-else".into());
        let backend = FcmBackend::new("app", &config).unwrap();
        let o = push(&backend, &token("ok"), true).await;
        assert!(matches!(o, Outcome::Rejected { .. }), "{o:?}");
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn the_registration_collapse_key_wins_over_the_app_one() {
    bounded(async {
        let mock = common::start(TestAppConfig::default()).await;
        let mut config = mock.fcm_config();
        config.collapse_key = Some("xmpp".into());
        let backend = FcmBackend::new("app", &config).unwrap();
        let t = token("ok");
        let own = Device {
            collapse_id: Some("3f2a9c0d1e7b6a54".into()),
            ..device(&t)
        };
        assert_eq!(backend.send(&own, &important()).await, Outcome::Delivered);
        assert_eq!(
            backend.send(&device(&t), &important()).await,
            Outcome::Delivered
        );
        let keys: Vec<_> = mock
            .app
            .pushes(PushFilter::token(&t))
            .iter()
            .map(|p| p.payload["android"]["collapse_key"].clone())
            .collect();
        assert_eq!(keys, ["3f2a9c0d1e7b6a54", "xmpp"]);

        // Without an app-wide key, only devices that have one send it.
        let backend = FcmBackend::new("app", &mock.fcm_config()).unwrap();
        let t = token("ok");
        let own = Device {
            collapse_id: Some("3f2a9c0d1e7b6a54".into()),
            ..device(&t)
        };
        assert_eq!(backend.send(&own, &silent()).await, Outcome::Delivered);
        assert_eq!(
            backend.send(&device(&t), &silent()).await,
            Outcome::Delivered
        );
        let pushes = mock.app.pushes(PushFilter::token(&t));
        assert_eq!(
            pushes[0].payload["android"]["collapse_key"],
            "3f2a9c0d1e7b6a54"
        );
        assert!(pushes[1].payload["android"].get("collapse_key").is_none());
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn encrypted_payloads_pass_through_or_fall_back_to_the_plain_wake_up() {
    bounded(async {
        let mock = common::start(TestAppConfig::default()).await;
        let backend = FcmBackend::new("app", &mock.fcm_config()).unwrap();
        let encrypted = |size: usize| nudge_plugins::Notification {
            encrypted: Some(nudge_plugins::EncryptedPayload {
                data: "A".repeat(size),
                iv: "q6Z0mXc3bNQ9y0lh".into(),
            }),
            ..Default::default()
        };
        let fits = token("enc");
        assert_eq!(
            backend.send(&device(&fits), &encrypted(3000)).await,
            Outcome::Delivered
        );
        let p = &mock.app.pushes(PushFilter::token(&fits))[0];
        assert_eq!(p.payload["data"]["encrypted"], "A".repeat(3000));
        assert_eq!(p.payload["data"]["iv"], "q6Z0mXc3bNQ9y0lh");
        assert_eq!(p.payload["android"]["priority"], "high");

        let too_large = token("enc");
        assert_eq!(
            backend.send(&device(&too_large), &encrypted(5000)).await,
            Outcome::Delivered
        );
        let p = &mock.app.pushes(PushFilter::token(&too_large))[0];
        assert!(p.payload["data"].get("encrypted").is_none());
        assert!(p.payload["data"].get("iv").is_none());
        assert_eq!(
            p.payload["data"]["account"],
            conversations_hash("romeo@montague.example", "a1b2c3d4e5f60718")
        );
        assert_eq!(p.payload["android"]["priority"], "high");
        mock.app.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn a_call_is_high_priority_and_publish_options_set_priority_and_ttl() {
    bounded(async {
        let mock = common::start(TestAppConfig::default()).await;
        let backend = FcmBackend::new("app", &mock.fcm_config()).unwrap();
        let call = nudge_plugins::Notification {
            call: Some(nudge_plugins::Call {
                sid: Some("a73sjjvkla37jfea".into()),
                media: vec!["audio".into()],
            }),
            ..Default::default()
        };
        let normal = token("call");
        let d = Device {
            voip_token: Some(nudge_test_app::random_apns_token()),
            ..device(&normal)
        };
        assert_eq!(backend.send(&d, &call).await, Outcome::Delivered);
        let p = &mock.app.pushes(PushFilter::token(&normal))[0];
        assert_eq!(p.payload["android"]["priority"], "high");
        assert_eq!(mock.app.pushes(PushFilter::default()).len(), 1);

        let t = token("opt");
        let d = Device {
            options: nudge_plugins::PushOptions {
                high_priority: Some(true),
                ttl_secs: Some(600),
                ..Default::default()
            },
            ..device(&t)
        };
        assert_eq!(backend.send(&d, &silent()).await, Outcome::Delivered);
        let p = &mock.app.pushes(PushFilter::token(&t))[0];
        assert_eq!(p.payload["android"]["priority"], "high");
        assert_eq!(p.payload["android"]["ttl"], "600s");
        mock.app.shutdown().await;
    })
    .await
}
