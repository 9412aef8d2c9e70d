//! The Web Push backend against the test-app's Web Push endpoint, the other
//! half of the token contract: a subscription the test-app makes (and whose
//! private key it keeps), a push from the backend over TLS, and the test-app
//! checking the VAPID token, decrypting the body and recording exactly the
//! payload the backend built. Faults on the test-app's side show each
//! status's outcome.

use std::time::Duration;

use nudge_plugins::webpush::payload;
use nudge_plugins::webpush::{WebPushBackend, WebPushConfig, generate_vapid_key};
use nudge_plugins::{Device, Notification, Outcome, PushBackend};
use nudge_test_app::{AuthMethod, Fault, SubscribeOptions, TestApp, TestAppConfig};

/// Every step finishes in this time or the test fails.
const LIMIT: Duration = Duration::from_secs(30);

/// A backend configured for `app`'s CA, and its VAPID public key.
fn backend(app: &TestApp, dir: &tempfile::TempDir) -> (WebPushBackend, String) {
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, app.ca_cert_pem()).unwrap();
    let (private, public) = generate_vapid_key().unwrap();
    let config: WebPushConfig = toml::from_str(&format!(
        "vapid_private_key = {private:?}\nvapid_subject = \"mailto:ops@nudge.example\"\n\
         allow_local_endpoints = true\nca_file = {:?}\n",
        ca.display().to_string()
    ))
    .unwrap();
    (WebPushBackend::new("web", &config).unwrap(), public)
}

fn device(token: &str) -> Device {
    Device {
        token: token.to_owned(),
        app: "web".into(),
        ..Device::default()
    }
}

fn message() -> Notification {
    Notification {
        message_count: Some(1),
        last_message_sender: Some("juliet@capulet.example".into()),
        last_message_body: Some("Wherefore art thou?".into()),
        fields: vec![
            ("message-count".into(), "1".into()),
            (
                "last-message-sender".into(),
                "juliet@capulet.example".into(),
            ),
            ("last-message-body".into(), "Wherefore art thou?".into()),
        ],
        ..Notification::default()
    }
}

async fn send(backend: &WebPushBackend, token: &str) -> Outcome {
    tokio::time::timeout(LIMIT, backend.send(&device(token), &message()))
        .await
        .expect("push timed out")
}

#[tokio::test]
async fn a_push_reaches_a_test_app_subscription_decrypted_and_vapid_checked() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (backend, public) = backend(&app, &dir);
    let sub = app
        .webpush_subscribe_with(&SubscribeOptions {
            name: None,
            application_server_key: Some(public.clone()),
        })
        .unwrap();
    assert_eq!(send(&backend, &sub.token).await, Outcome::Delivered);

    let p = app.wait_for_push(&sub.token, LIMIT).await.unwrap();
    assert_eq!(p.status, 201, "{:?}", p.reason);
    let sent: serde_json::Value =
        serde_json::from_slice(&payload::build(&message()).unwrap()).unwrap();
    assert_eq!(p.payload, sent);
    assert_eq!(p.headers["vapid-aud"], app.webpush_url());
    assert_eq!(p.headers["vapid-sub"], "mailto:ops@nudge.example");
    assert!(p.headers.contains_key("ttl"));
    // The test-app offers HTTP/2 beside HTTP/1.1; the backend takes it.
    assert_eq!(p.http_version, "HTTP/2.0");
    assert_eq!(
        p.auth,
        AuthMethod::Vapid {
            key: Some(public.clone())
        }
    );
    assert_eq!(p.summary().body.as_deref(), Some("Wherefore art thou?"));

    // A subscription made for another application server key refuses the
    // backend's VAPID key: the push service says 403, our side's problem.
    let (_, other_public) = generate_vapid_key().unwrap();
    let foreign = app
        .webpush_subscribe_with(&SubscribeOptions {
            name: None,
            application_server_key: Some(other_public),
        })
        .unwrap();
    assert!(
        matches!(
            send(&backend, &foreign.token).await,
            Outcome::Rejected { .. }
        ),
        "a 403 is rejected"
    );
}

#[tokio::test]
async fn test_app_faults_become_the_backends_outcomes() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (backend, _) = backend(&app, &dir);

    // 410 and 404: the subscription is gone.
    let dead = app.webpush_subscribe_named("dead").unwrap();
    assert!(matches!(
        send(&backend, &dead.token).await,
        Outcome::InvalidToken { .. }
    ));
    let unknown = app.webpush_subscribe_named("badd").unwrap();
    assert!(matches!(
        send(&backend, &unknown.token).await,
        Outcome::InvalidToken { .. }
    ));
    let ended = app.webpush_subscribe();
    assert!(app.webpush_unsubscribe(&ended.token));
    assert!(matches!(
        send(&backend, &ended.token).await,
        Outcome::InvalidToken { .. }
    ));

    // 429 with Retry-After: throttled for that long.
    let busy = app.webpush_subscribe_named("c0017").unwrap();
    assert_eq!(
        send(&backend, &busy.token).await,
        Outcome::Throttled {
            retry_after: Some(Duration::from_secs(7))
        }
    );

    // 503: transient, then delivered.
    let flaky = app.webpush_subscribe_named("fa111").unwrap();
    assert!(matches!(
        send(&backend, &flaky.token).await,
        Outcome::Transient { .. }
    ));
    assert_eq!(send(&backend, &flaky.token).await, Outcome::Delivered);

    // 413 and 400 are our bug, never the user's.
    let sub = app.webpush_subscribe();
    for status in [400, 413] {
        app.set_fault(
            &sub.token,
            Fault::Respond {
                status,
                reason: "Test".into(),
            },
        );
        assert!(
            matches!(send(&backend, &sub.token).await, Outcome::Rejected { .. }),
            "{status}"
        );
    }
}
