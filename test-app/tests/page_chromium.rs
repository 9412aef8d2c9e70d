//! The live page in a real browser: headless Chromium (Debian's
//! `/usr/bin/chromium`) opens the page, pushes are sent to the mocks while
//! it is open, and they must appear on it as a phone would show them; a
//! screenshot goes to `target/test-app-live-page.png`.
//!
//! Chromium is driven over the DevTools protocol (a WebSocket) so that the
//! test can wait for the page to be live, push, and then wait for the DOM to
//! change, instead of guessing with `--virtual-time-budget`. The test FAILS
//! when Chromium is missing: the project's test script installs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use futures_util::{SinkExt, StreamExt};
use nudge_test_app::TestAppConfig;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Kills Chromium when the test ends, however it ends.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn launch(user_data_dir: &Path) -> Browser {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install it with `apt-get update && apt-get install -y chromium` \
         (scripts/test does this)"
    );
    let child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", user_data_dir.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {CHROMIUM}: {e}"));
    Browser(child)
}

/// Chromium writes its DevTools port and browser path into the profile
/// directory once it listens.
async fn devtools_url(user_data_dir: &Path, browser: &mut Browser) -> String {
    let file = user_data_dir.join("DevToolsActivePort");
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                return format!("ws://127.0.0.1:{port}{path}");
            }
        }
        if let Some(status) = browser.0.try_wait().unwrap() {
            panic!("chromium exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not open its DevTools port"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A minimal DevTools protocol client: one command at a time, events
/// skipped.
struct Cdp {
    ws: Ws,
    next_id: u64,
    session: Option<String>,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        bounded(self.ws.send(Message::text(msg.to_string())))
            .await
            .unwrap();
        bounded(async {
            loop {
                let frame = self.ws.next().await.expect("DevTools closed").unwrap();
                let Message::Text(text) = frame else { continue };
                let v: Value = serde_json::from_str(text.as_str()).unwrap();
                if v["id"] == id {
                    if let Some(err) = v.get("error") {
                        panic!("{method}: {err}");
                    }
                    return v["result"].clone();
                }
            }
        })
        .await
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` until `done` holds for its value.
    async fn eval_until(
        &mut self,
        what: &str,
        expression: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + LIMIT;
        loop {
            let v = self.eval(expression).await;
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last value: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

const CARDS: &str = r#"JSON.stringify([...document.querySelectorAll('article.push')].map(a => ({
    token: a.dataset.token, kind: a.dataset.kind, status: a.dataset.status, text: a.innerText })))"#;

fn cards(v: &Value) -> Vec<Value> {
    serde_json::from_str(v.as_str().unwrap_or("[]")).unwrap()
}

fn card<'a>(cards: &'a [Value], token: &str) -> &'a Value {
    cards
        .iter()
        .find(|c| c["token"] == token)
        .unwrap_or_else(|| panic!("no card for {token} in {cards:?}"))
}

fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    std::fs::create_dir_all(&target).unwrap();
    target.join("test-app-live-page.png")
}

#[tokio::test]
async fn pushes_appear_live_on_the_page_in_headless_chromium() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let mut apns = H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
    let jwt = apns_jwt(&app);

    // One push before the page opens: it must be loaded as history.
    let history = "0aaa000000000000000000000000000000000000000000000000000000000001";
    let r = apns
        .post(
            &format!("/3/device/{history}"),
            &as_refs(&alert_headers(&jwt)),
            ALERT,
        )
        .await;
    assert_eq!(r.status, 200);

    let profile = tempfile::tempdir().unwrap();
    let mut browser = launch(profile.path());
    let url = devtools_url(profile.path(), &mut browser).await;
    let (ws, _) = bounded(tokio_tungstenite::connect_async(url.as_str()))
        .await
        .unwrap();
    let mut cdp = Cdp {
        ws,
        next_id: 0,
        session: None,
    };
    let target = cdp
        .call(
            "Target.createTarget",
            json!({"url": format!("{}/", app.control_url())}),
        )
        .await;
    let attached = cdp
        .call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )
        .await;
    cdp.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await;

    cdp.eval_until("the page to go live", "document.body.dataset.live", |v| {
        v == "1"
    })
    .await;
    let before = cards(&cdp.eval(CARDS).await);
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["token"], history);

    // Live pushes: an alert, a silent wake-up, a rejected push to a dead
    // token, an FCM data message with a publish time, and a Web Push.
    let alert_token = "0bbb000000000000000000000000000000000000000000000000000000000002";
    let silent_token = "0ccc000000000000000000000000000000000000000000000000000000000003";
    let dead_token = "dead000000000000000000000000000000000000000000000000000000000004";
    let alert =
        r#"{"aps":{"alert":{"title":"Juliet","body":"Wherefore art thou?"},"sound":"default"}}"#;
    let r = apns
        .post(
            &format!("/3/device/{alert_token}"),
            &as_refs(&alert_headers(&jwt)),
            alert,
        )
        .await;
    assert_eq!(r.status, 200);
    let mut silent = alert_headers(&jwt);
    silent[2].1 = "background".into();
    silent[3].1 = "5".into();
    let r = apns
        .post(
            &format!("/3/device/{silent_token}"),
            &as_refs(&silent),
            r#"{"aps":{"content-available":1}}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = apns
        .post(
            &format!("/3/device/{dead_token}"),
            &as_refs(&alert_headers(&jwt)),
            ALERT,
        )
        .await;
    assert_eq!(r.status, 410);
    let bearer = oauth_token(&app).await;
    app.note_publish("android-phone-1");
    let mut fcm = H2::connect(&app.fcm_url(), &app.ca_cert_pem(), None).await;
    let body = json!({"message": {"token": "android-phone-1",
        "data": {"account": "5f0e"}, "android": {"priority": "high"}}});
    let r = fcm
        .post(
            &fcm_path(&app),
            &[("authorization", &format!("Bearer {bearer}"))],
            body.to_string(),
        )
        .await;
    assert_eq!(r.status, 200);
    // A Web Push to a subscription, decrypted by the test-app.
    let sub = app.webpush_subscribe();
    let vapid = Vapid::new();
    let mut webpush = H2::connect(&app.webpush_url(), &app.ca_cert_pem(), None).await;
    let mut headers = webpush_headers(&app, &vapid);
    headers.push(("urgency".into(), "high".into()));
    let path = sub.endpoint.strip_prefix(&app.webpush_url()).unwrap();
    let payload = json!({"last-message-sender": "romeo@montague.example",
        "last-message-body": "By yonder window"});
    let r = webpush
        .post(
            path,
            &as_refs(&headers),
            webpush_encrypt(&sub, payload.to_string().as_bytes()),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    let shown = cdp
        .eval_until("the live pushes to appear", CARDS, |v| cards(v).len() == 6)
        .await;
    let shown = cards(&shown);
    let a = card(&shown, alert_token);
    assert_eq!(a["kind"], "alert");
    let text = a["text"].as_str().unwrap();
    assert!(
        text.contains("Juliet") && text.contains("Wherefore art thou?"),
        "{text}"
    );
    assert!(
        text.contains("APNS") && text.contains("high priority"),
        "{text}"
    );
    let s = card(&shown, silent_token);
    assert_eq!(s["kind"], "silent");
    let text = s["text"].as_str().unwrap();
    assert!(
        text.contains("silent wake-up") && text.contains("normal priority"),
        "{text}"
    );
    let d = card(&shown, dead_token);
    assert_eq!(d["status"], "410");
    assert!(d["text"].as_str().unwrap().contains("410 Unregistered"));
    let f = card(&shown, "android-phone-1");
    let text = f["text"].as_str().unwrap();
    assert!(
        text.contains("FCM") && text.contains("account=5f0e"),
        "{text}"
    );
    assert!(text.contains("ms from publish"), "{text}");
    let w = card(&shown, &sub.token);
    assert_eq!(
        (w["kind"].as_str(), w["status"].as_str()),
        (Some("alert"), Some("201"))
    );
    let text = w["text"].as_str().unwrap();
    assert!(
        text.contains("WEB PUSH")
            && text.contains("romeo@montague.example")
            && text.contains("By yonder window")
            && text.contains("high priority")
            && text.contains("VAPID mailto:ops@example.org"),
        "{text}"
    );
    // One phone per device.
    let phones = cdp
        .eval("document.querySelectorAll('section.phone').length")
        .await;
    assert_eq!(phones, 6);

    let shot = cdp
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "suspiciously small screenshot: {} bytes",
        png.len()
    );
    let path = screenshot_path();
    std::fs::write(&path, &png).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 0);

    // A reset clears the page live too.
    app.reset();
    cdp.eval_until("the page to clear", CARDS, |v| cards(v).is_empty())
        .await;

    // Dropping `browser` kills Chromium; the profile directory goes with
    // `profile`.
    drop(browser);
}

/// Not a test: the picture tool of `scripts/screenshots`, which runs it
/// (`--ignored`) while `scripts/demo` runs. It opens the pages named by
/// `NUDGE_SCREENSHOT_PAGES` (`URL=FILE` pairs, separated by spaces) in the
/// same DevTools-driven Chromium, waits until a live page is live and shows
/// `NUDGE_SCREENSHOT_PUSHES` pushes (default 6; other pages: until they
/// loaded), and writes each screenshot as PNG to its FILE.
#[tokio::test]
#[ignore = "a tool of scripts/screenshots, not a test"]
async fn screenshot_of_running_pages() {
    let pages = std::env::var("NUDGE_SCREENSHOT_PAGES").expect("NUDGE_SCREENSHOT_PAGES");
    let want: usize = std::env::var("NUDGE_SCREENSHOT_PUSHES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6);
    let profile = tempfile::tempdir().unwrap();
    let mut browser = launch(profile.path());
    let url = devtools_url(profile.path(), &mut browser).await;
    let (ws, _) = bounded(tokio_tungstenite::connect_async(url.as_str()))
        .await
        .unwrap();
    let mut cdp = Cdp {
        ws,
        next_id: 0,
        session: None,
    };
    for pair in pages.split_whitespace() {
        let (page, file) = pair.split_once('=').expect("URL=FILE");
        cdp.session = None;
        let target = cdp.call("Target.createTarget", json!({"url": page})).await;
        let attached = cdp
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        cdp.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1100, "height": 760, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        // A new target shows about:blank (loaded) before the page.
        cdp.eval_until(
            "the page to load",
            "document.URL !== 'about:blank' && document.readyState === 'complete'",
            |v| v == true,
        )
        .await;
        let live = cdp.eval("document.body.dataset.live !== undefined").await;
        if live == true {
            cdp.eval_until("the page to go live", "document.body.dataset.live", |v| {
                v == "1"
            })
            .await;
            cdp.eval_until("the pushes to appear", CARDS, |v| cards(v).len() >= want)
                .await;
        }
        let shot = cdp
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(file, &png).unwrap();
    }
    drop(browser);
}
