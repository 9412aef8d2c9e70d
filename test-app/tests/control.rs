//! The control API (list, long-poll, reset, stats, credentials, publishes,
//! OAuth controls) and the `nudge-test-app serve` binary with
//! `--export-dir`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nudge_test_app::TestAppConfig;
use serde_json::{Value, json};

#[tokio::test]
async fn list_filter_wait_and_reset() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let ctl = app.control_url();
    let mut c = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    apns_alert(&mut c, &app, "aa01").await;
    apns_alert(&mut c, &app, "aa02").await;
    apns_alert(&mut c, &app, "dead01").await;
    let mid = nudge_test_app::recorder::PushFilter::default();
    let all = app.pushes(mid);
    assert_eq!(all.len(), 3);

    let list = get(&format!("{ctl}/api/pushes")).await.json();
    assert_eq!(list.as_array().unwrap().len(), 3);
    let one = &list[0];
    assert_eq!(one["token"], "aa01");
    assert_eq!(one["provider"], "apns");
    assert_eq!(one["status"], 200);
    assert_eq!(one["summary"]["title"], "Alice");
    assert_eq!(one["headers"]["apns-push-type"], "alert");
    let by_token = get(&format!("{ctl}/api/pushes?token=aa02")).await.json();
    assert_eq!(by_token.as_array().unwrap().len(), 1);
    let delivered = get(&format!("{ctl}/api/pushes?delivered=true"))
        .await
        .json();
    assert_eq!(delivered.as_array().unwrap().len(), 2);
    let fcm_only = get(&format!("{ctl}/api/pushes?provider=fcm")).await.json();
    assert_eq!(fcm_only, json!([]));
    let after = get(&format!("{ctl}/api/pushes?after_id={}", all[1].id))
        .await
        .json();
    assert_eq!(after[0]["token"], "dead01");
    let future_ms = (now() + 60) * 1000;
    let since = get(&format!("{ctl}/api/pushes?since_ms={future_ms}"))
        .await
        .json();
    assert_eq!(since, json!([]));
    assert_eq!(
        get(&format!("{ctl}/api/pushes?provider=carrier-pigeon"))
            .await
            .status,
        400
    );

    // Long-poll: an already recorded push is returned at once, then the
    // wait blocks until the next one arrives.
    let r = get(&format!("{ctl}/api/wait?token=aa01&timeout_ms=5000")).await;
    assert_eq!((r.status, r.json()["token"].clone()), (200, json!("aa01")));
    let waiter = tokio::spawn({
        let url = format!("{ctl}/api/wait?token=aa01&timeout_ms=10000");
        async move {
            let t0 = Instant::now();
            (get(&url).await, t0.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.note_publish("aa01");
    tokio::time::sleep(Duration::from_millis(20)).await;
    apns_alert(&mut c, &app, "aa01").await;
    let (r, waited) = bounded(waiter).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    let latency = r.json()["latency_ms"].as_f64().unwrap();
    assert!((20.0..5000.0).contains(&latency), "{latency}");
    // Nothing more: 408 after the timeout.
    let t0 = Instant::now();
    let r = get(&format!("{ctl}/api/wait?token=aa01&timeout_ms=200")).await;
    assert_eq!(r.status, 408);
    assert!(t0.elapsed() >= Duration::from_millis(200));
    // delivered=true skips the 410.
    apns_alert(&mut c, &app, "dead01").await;
    let r = get(&format!(
        "{ctl}/api/wait?token=dead01&timeout_ms=200&delivered=true"
    ))
    .await;
    assert_eq!(r.status, 408);

    // Publishes through the API feed latency too.
    let r = send_json(
        "POST",
        &format!("{ctl}/api/publishes"),
        &json!({"token": "aa02"}),
    )
    .await;
    assert_eq!(r.status, 204);
    apns_alert(&mut c, &app, "aa02").await;
    let p = app.pushes(nudge_test_app::PushFilter::token("aa02"));
    assert!(p[0].latency.is_none());
    assert!(p[1].latency.is_some());

    let stats = get(&format!("{ctl}/api/stats")).await.json();
    assert_eq!(stats["apns_requests"], 6);
    assert_eq!(stats["rejected"]["apns/Unregistered"], 2);

    assert_eq!(
        http("POST", &format!("{ctl}/api/reset"), None, "")
            .await
            .status,
        204
    );
    assert_eq!(get(&format!("{ctl}/api/pushes")).await.json(), json!([]));
    assert_eq!(
        get(&format!("{ctl}/api/stats")).await.json()["apns_requests"],
        0
    );
    assert!(app.wait_for_push("aa01", Duration::ZERO).await.is_none());
}

#[tokio::test]
async fn credentials_and_oauth_controls() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let ctl = app.control_url();
    let creds = get(&format!("{ctl}/api/credentials")).await.json();
    let apns = app.apns_credentials();
    assert_eq!(creds["apns"]["key_id"], apns.key_id.as_str());
    assert_eq!(creds["apns"]["team_id"], apns.team_id.as_str());
    assert_eq!(creds["apns"]["key_pem"], apns.key_pem.as_str());
    assert_eq!(creds["ca_cert_pem"], app.ca_cert_pem().as_str());
    assert_eq!(creds["urls"]["apns"], app.apns_url().as_str());
    assert_eq!(creds["urls"]["oauth_token"], app.oauth_token_url().as_str());
    assert_eq!(
        creds["apns_client_identity"]["cert_pem"],
        app.apns_client_identity().cert_pem.as_str()
    );
    let sa: Value = serde_json::from_str(&app.fcm_service_account_json()).unwrap();
    assert_eq!(creds["fcm"]["service_account"], sa);
    for key in [
        "type",
        "project_id",
        "private_key_id",
        "private_key",
        "client_email",
        "token_uri",
    ] {
        assert!(sa[key].is_string(), "{key}");
    }
    assert_eq!(sa["token_uri"], app.oauth_token_url().as_str());

    let p8 = get(&format!("{ctl}/api/credentials/apns.p8")).await;
    assert_eq!(std::str::from_utf8(&p8.body).unwrap(), apns.key_pem);
    let ca = get(&format!("{ctl}/api/credentials/ca.pem")).await;
    assert!(
        std::str::from_utf8(&ca.body)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert_eq!(
        get(&format!("{ctl}/api/credentials/passwd")).await.status,
        404
    );

    // Revocation and token lifetime through the API.
    let mut f = H2::connect(&app.fcm_url(), &app.ca_cert_pem(), None).await;
    let token = oauth_token(&app).await;
    let body = json!({"message": {"token": "d", "data": {"a": "b"}}}).to_string();
    let auth = format!("Bearer {token}");
    assert_eq!(
        f.post(&fcm_path(&app), &[("authorization", &auth)], body.clone())
            .await
            .status,
        200
    );
    assert_eq!(
        http("POST", &format!("{ctl}/api/oauth/revoke"), None, "")
            .await
            .status,
        204
    );
    assert_eq!(
        f.post(&fcm_path(&app), &[("authorization", &auth)], body.clone())
            .await
            .status,
        401
    );
    let r = send_json(
        "PUT",
        &format!("{ctl}/api/oauth/lifetime"),
        &json!({"secs": 120}),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = token_request(&app, &assertion_claims(&app), None).await;
    assert_eq!(r.json()["expires_in"], 120);
}

#[tokio::test]
async fn the_binary_serves_exports_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nudge-test-app"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--topic",
            "org.example.chat",
            "--export-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the child whatever happens below.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = Reap(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut control = None;
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("control + live page: ") {
                    control = Some(url.trim_end_matches('/').to_owned());
                }
                if line.contains("nudge-apps.toml") {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(_) => break,
        }
    }
    let control = control.expect("the binary printed its control URL");

    // Every file is there and agrees with the running instance.
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("test-app.json")).unwrap())
            .unwrap();
    let creds = get(&format!("{control}/api/credentials")).await.json();
    let key_id = creds["apns"]["key_id"].as_str().unwrap();
    assert_eq!(summary["apns"]["key_id"], key_id);
    assert_eq!(summary["apns"]["topics"], json!(["org.example.chat"]));
    let p8 = std::fs::read_to_string(dir.path().join(format!("AuthKey_{key_id}.p8"))).unwrap();
    assert_eq!(p8, creds["apns"]["key_pem"].as_str().unwrap());
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    assert_eq!(ca, creds["ca_cert_pem"].as_str().unwrap());
    let sa: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("fcm-service-account.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sa["token_uri"], format!("{control}/token"));
    for f in [
        "apns-client-cert.pem",
        "apns-client-key.pem",
        "apns-key.json",
    ] {
        assert!(dir.path().join(f).metadata().unwrap().len() > 0, "{f}");
    }
    let toml = std::fs::read_to_string(dir.path().join("nudge-apps.toml")).unwrap();
    let toml: toml::Table = toml.parse().unwrap_or_else(|e| panic!("{e}: {toml}"));
    let app_cfg = &toml["apps"]["testapp-apns"];
    assert_eq!(app_cfg["provider"].as_str(), Some("apns"));
    assert_eq!(app_cfg["topic"].as_str(), Some("org.example.chat"));
    assert_eq!(
        app_cfg["endpoint"].as_str(),
        summary["urls"]["apns"].as_str()
    );
    assert_eq!(app_cfg["token"]["key_id"].as_str(), Some(key_id));
    assert_eq!(
        app_cfg["ca_file"].as_str().map(std::path::PathBuf::from),
        Some(dir.path().join("ca.pem"))
    );
    let fcm_cfg = &toml["apps"]["testapp-fcm"];
    assert_eq!(fcm_cfg["provider"].as_str(), Some("fcm"));
    assert_eq!(
        fcm_cfg["service_account_path"]
            .as_str()
            .map(std::path::PathBuf::from),
        Some(dir.path().join("fcm-service-account.json"))
    );
    assert_eq!(
        fcm_cfg["endpoint"].as_str(),
        summary["urls"]["fcm"].as_str()
    );

    // The mock in the process works with the exported credentials.
    let apns_url = summary["urls"]["apns"].as_str().unwrap();
    let mut c = H2::connect(apns_url, &ca, None).await;
    let jwt = nudge_test_app::ApnsCredentials {
        key_pem: p8,
        key_id: key_id.to_owned(),
        team_id: summary["apns"]["team_id"].as_str().unwrap().to_owned(),
    }
    .provider_token(now())
    .unwrap();
    let r = c
        .post(
            "/3/device/abcd",
            &[
                ("authorization", &format!("bearer {jwt}")),
                ("apns-topic", "org.example.chat"),
                ("apns-push-type", "alert"),
            ],
            ALERT,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = get(&format!("{control}/api/wait?token=abcd&timeout_ms=5000")).await;
    assert_eq!(r.status, 200);

    // SIGTERM: a clean exit.
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + LIMIT;
    let exit = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the binary did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn shutdown_ends_open_feeds_and_long_polls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let addr = app.control_url().trim_start_matches("http://").to_owned();
    let mut sse = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sse.write_all(b"GET /events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    bounded(async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("event: hello") {
            let n = sse.read(&mut buf).await.unwrap();
            assert!(n > 0, "feed closed early");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let poll = tokio::spawn({
        let url = format!(
            "{}/api/wait?token=abcd&timeout_ms=120000",
            app.control_url()
        );
        async move {
            let tcp = tokio::net::TcpStream::connect(url[7..].split('/').next().unwrap()).await;
            let mut tcp = tcp.unwrap();
            let path = &url[url.find("/api").unwrap()..];
            tcp.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut rest = Vec::new();
            tcp.read_to_end(&mut rest).await.map(|_| rest)
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    bounded(app.shutdown()).await;
    // Both connections end promptly (EOF or reset), long before their
    // keep-alive or timeout would.
    let rest = bounded(async {
        let mut rest = Vec::new();
        sse.read_to_end(&mut rest).await.map(|_| rest)
    })
    .await;
    assert!(!String::from_utf8_lossy(&rest.unwrap_or_default()).contains("event: push"));
    let polled = bounded(poll).await.unwrap();
    assert!(!String::from_utf8_lossy(&polled.unwrap_or_default()).contains("200 OK"));
    // And the port is closed.
    let addr2 = addr.clone();
    assert!(tokio::net::TcpStream::connect(addr2).await.is_err());
}
