//! Faults behave as configured, set explicitly or by the token's name, on
//! both mocks.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nudge_test_app::{Fault, Provider, PushFilter, TestApp, TestAppConfig};
use serde_json::json;

async fn fcm(c: &mut H2, app: &TestApp, bearer: &str, token: &str) -> Resp {
    let auth = format!("Bearer {bearer}");
    let body = json!({"message": {"token": token, "data": {"k": "v"}}});
    c.post(
        &fcm_path(app),
        &[("authorization", &auth)],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn dead_tokens_by_name_and_by_setting() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let mut a = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let mut f = H2::connect(&app.fcm_url(), &app.ca_cert_pem(), None).await;
    let bearer = oauth_token(&app).await;

    let before = now() * 1000;
    let r = apns_alert(&mut a, &app, "deadbeef00").await;
    assert_eq!((r.status, r.reason()), (410, "Unregistered".to_owned()));
    let ts = r.json()["timestamp"].as_u64().unwrap();
    assert!(
        ts >= before && ts <= now() * 1000 + 1000,
        "timestamp in ms: {ts}"
    );

    let r = fcm(&mut f, &app, &bearer, "dead-device").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.fcm_error(), "UNREGISTERED");
    assert_eq!(r.json()["error"]["status"], "NOT_FOUND");

    // A token with no special name, made dead by a call, then revived.
    let token = nudge_test_app::random_apns_token();
    assert_eq!(apns_alert(&mut a, &app, &token).await.status, 200);
    app.set_fault(&token, Fault::Dead);
    assert_eq!(apns_alert(&mut a, &app, &token).await.status, 410);
    app.clear_fault(&token);
    assert_eq!(apns_alert(&mut a, &app, &token).await.status, 200);

    let r = apns_alert(&mut a, &app, "baddcafe").await;
    assert_eq!((r.status, r.reason()), (400, "BadDeviceToken".to_owned()));
    let r = fcm(&mut f, &app, &bearer, "badd-device").await;
    assert_eq!(
        (r.status, r.fcm_error()),
        (400, "INVALID_ARGUMENT".to_owned())
    );

    app.set_fault(&token, Fault::NotForTopic);
    let r = apns_alert(&mut a, &app, &token).await;
    assert_eq!(
        (r.status, r.reason()),
        (400, "DeviceTokenNotForTopic".to_owned())
    );
    app.set_fault("fcm-x", Fault::NotForTopic);
    let r = fcm(&mut f, &app, &bearer, "fcm-x").await;
    assert_eq!(
        (r.status, r.fcm_error()),
        (403, "SENDER_ID_MISMATCH".to_owned())
    );

    let stats = app.stats();
    assert_eq!(stats.rejected("apns/Unregistered"), 2);
    assert_eq!(stats.rejected("fcm/UNREGISTERED"), 1);
}

#[tokio::test]
async fn throttling_carries_retry_after() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let mut a = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let mut f = H2::connect(&app.fcm_url(), &app.ca_cert_pem(), None).await;
    let bearer = oauth_token(&app).await;

    let r = apns_alert(&mut a, &app, "c0017f").await;
    assert_eq!((r.status, r.reason()), (429, "TooManyRequests".to_owned()));
    assert_eq!(r.header("retry-after").as_deref(), Some("7"));

    app.set_fault(
        "fcm-busy",
        Fault::Throttle {
            retry_after_secs: 30,
        },
    );
    let r = fcm(&mut f, &app, &bearer, "fcm-busy").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.fcm_error(), "QUOTA_EXCEEDED");
    assert_eq!(r.json()["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(r.header("retry-after").as_deref(), Some("30"));
    // It stays throttled.
    assert_eq!(fcm(&mut f, &app, &bearer, "fcm-busy").await.status, 429);
}

#[tokio::test]
async fn fail_n_times_then_succeed() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let mut a = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let mut f = H2::connect(&app.fcm_url(), &app.ca_cert_pem(), None).await;
    let bearer = oauth_token(&app).await;

    // By name: fa11 + 2.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(apns_alert(&mut a, &app, "fa112f").await.status);
    }
    assert_eq!(statuses, [500, 500, 200, 200]);
    let r = apns_alert(&mut a, &app, "fa111f").await;
    assert_eq!(
        (r.status, r.reason()),
        (500, "InternalServerError".to_owned())
    );

    // Explicitly, on FCM.
    app.set_fault("flaky", Fault::FailTimes(3));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = fcm(&mut f, &app, &bearer, "flaky").await;
        if r.status == 503 {
            assert_eq!(r.fcm_error(), "UNAVAILABLE");
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [503, 503, 503, 200]);

    // A retry test's view: the first delivered push, after the failures.
    let p = app.wait_for_delivered("flaky", LIMIT).await.unwrap();
    assert_eq!(p.status, 200);
    assert_eq!(
        app.pushes(PushFilter::token("flaky"))
            .iter()
            .filter(|p| !p.delivered())
            .count(),
        3
    );
}

#[tokio::test]
async fn slow_tokens_answer_late() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let mut a = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let t0 = Instant::now();
    let r = apns_alert(&mut a, &app, "de1a400f").await;
    let slow = t0.elapsed();
    assert_eq!(r.status, 200);
    assert!(slow >= Duration::from_millis(400), "{slow:?}");

    // A slow token does not hold up others on the same connection (HTTP/2
    // streams are independent).
    app.set_fault("de1a", Fault::Delay(Duration::from_millis(1500)));
    let mut same_connection = a.clone();
    let (slow_r, fast) = tokio::join!(
        async { apns_alert(&mut same_connection, &app, "de1a").await },
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let t0 = Instant::now();
            let r = apns_alert(&mut a, &app, "0abc").await;
            (r.status, t0.elapsed())
        }
    );
    assert_eq!(slow_r.status, 200);
    assert_eq!(fast.0, 200);
    assert!(fast.1 < Duration::from_millis(1000), "{:?}", fast.1);
}

#[tokio::test]
async fn faults_through_the_control_api() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let mut a = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let url = format!("{}/api/faults/abcd", app.control_url());
    let r = send_json("PUT", &url, &json!({"kind": "fail_times", "times": 1})).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let listed = get(&format!("{}/api/faults", app.control_url()))
        .await
        .json();
    assert_eq!(listed, json!({"abcd": {"kind": "fail_times", "times": 1}}));
    assert_eq!(apns_alert(&mut a, &app, "abcd").await.status, 500);
    assert_eq!(apns_alert(&mut a, &app, "abcd").await.status, 200);

    let r = send_json(
        "PUT",
        &url,
        &json!({"kind": "respond", "status": 503, "reason": "ServiceUnavailable"}),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = apns_alert(&mut a, &app, "abcd").await;
    assert_eq!(
        (r.status, r.reason()),
        (503, "ServiceUnavailable".to_owned())
    );

    assert_eq!(http("DELETE", &url, None, "").await.status, 204);
    assert_eq!(apns_alert(&mut a, &app, "abcd").await.status, 200);

    let r = send_json("PUT", &url, &json!({"kind": "explode"})).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("bad fault"));

    // Reset forgets explicit faults.
    send_json("PUT", &url, &json!({"kind": "dead"})).await;
    assert_eq!(
        http(
            "POST",
            &format!("{}/api/reset", app.control_url()),
            None,
            ""
        )
        .await
        .status,
        204
    );
    assert_eq!(apns_alert(&mut a, &app, "abcd").await.status, 200);
}

#[tokio::test]
async fn provider_outage_for_a_time_through_the_control_api() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let mut a = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let mut f = H2::connect(&app.fcm_url(), &app.ca_cert_pem(), None).await;
    let bearer = oauth_token(&app).await;
    let url = format!("{}/api/provider-faults/fcm", app.control_url());

    // FCM is down for 600 ms for every token, however often it is asked;
    // APNs is not.
    let r = send_json("PUT", &url, &json!({"kind": "fail_for", "ms": 600})).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let t0 = Instant::now();
    let listed = get(&format!("{}/api/provider-faults", app.control_url()))
        .await
        .json();
    let left = listed["fcm"]["ms"].as_u64().unwrap();
    assert_eq!(listed["fcm"]["kind"], "fail_for");
    assert!(left > 0 && left <= 600, "{listed}");
    let mut failures = 0;
    for token in ["phone-1", "phone-2", "phone-1"] {
        let r = fcm(&mut f, &app, &bearer, token).await;
        assert_eq!((r.status, r.fcm_error()), (503, "UNAVAILABLE".to_owned()));
        failures += 1;
    }
    assert_eq!(apns_alert(&mut a, &app, "0abc").await.status, 200);
    // A token's own fault wins over the outage.
    app.set_fault("phone-3", Fault::Dead);
    assert_eq!(fcm(&mut f, &app, &bearer, "phone-3").await.status, 404);

    // Then it passes by itself.
    tokio::time::sleep(Duration::from_millis(650).saturating_sub(t0.elapsed())).await;
    assert_eq!(fcm(&mut f, &app, &bearer, "phone-2").await.status, 200);
    let rejected = app
        .pushes(PushFilter::default())
        .iter()
        .filter(|p| p.status == 503)
        .count();
    assert_eq!(rejected, failures);

    // On APNs the outage is 503 ServiceUnavailable; DELETE ends it early.
    app.set_provider_fault(Provider::Apns, Fault::FailTimes(1));
    assert_eq!(apns_alert(&mut a, &app, "0abc").await.status, 500);
    assert_eq!(apns_alert(&mut a, &app, "0abc").await.status, 200);
    let apns_url = format!("{}/api/provider-faults/apns", app.control_url());
    send_json("PUT", &apns_url, &json!({"kind": "fail_for", "ms": 60000})).await;
    let r = apns_alert(&mut a, &app, "0abc").await;
    assert_eq!(
        (r.status, r.reason()),
        (503, "ServiceUnavailable".to_owned())
    );
    assert_eq!(http("DELETE", &apns_url, None, "").await.status, 204);
    assert_eq!(apns_alert(&mut a, &app, "0abc").await.status, 200);

    let bad = format!("{}/api/provider-faults/mpns", app.control_url());
    assert_eq!(
        send_json("PUT", &bad, &json!({"kind": "dead"}))
            .await
            .status,
        404
    );
}
