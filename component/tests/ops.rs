//! The operator's view through the real binary: `nudge run` with JSON logs
//! against the fake XMPP server and the test-app's mock FCM; `nudge status`
//! asks it over its HTTP listener; `nudge send-test` pushes through the
//! configured backend and reports the provider's answer (a dead token is
//! reported and kept), on SQLite and PostgreSQL; a failing push is one JSON
//! warn line with app, outcome and the node's hash, never the node, token
//! or secret.

mod common;

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::{FakeServer, STEP, answer_kind, eventually};
use nudge::store::node_hash;
use nudge_test_app::TestAppConfig;
use tokio::io::AsyncBufReadExt;

/// The binary with only the NUDGE_* variables given.
fn nudge(config: &std::path::Path, listen: &str, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nudge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NUDGE_") {
            c.env_remove(k);
        }
    }
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("NUDGE_HTTP__LISTEN", listen)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes a configuration with the test-app's mock FCM as app
/// `conversations`, the database at `db_url` and the component at `port`.
fn write_config(
    app: &nudge_test_app::TestApp,
    dir: &std::path::Path,
    port: u16,
    db_url: &str,
) -> std::path::PathBuf {
    let exported = app.export(dir).unwrap();
    let config = dir.join("nudge.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[component]
domain = "{domain}"
secret = "{secret}"
port = {port}
[storage]
url = "{db_url}"
[outbox]
retry_min_ms = 200
retry_max_secs = 2
[apps.conversations]
provider = "fcm"
service_account_path = "{sa}"
endpoint = "{fcm}"
ca_file = "{ca}"
"#,
            domain = common::DOMAIN,
            secret = common::SECRET,
            sa = exported.fcm_service_account.display(),
            fcm = app.fcm_url(),
            ca = exported.ca_cert.display(),
        ),
    )
    .unwrap();
    config
}

/// `send-test` and `status` (no instance) on PostgreSQL: the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_and_status_work_on_postgres() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = common::TestDb::new(common::DbKind::Postgres).await;
    let store = nudge::store::RegistrationStore::open(&db.url(), 10)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let token = "0ood-token-on-postgres";
    let dead_token = "dead-token-on-postgres";
    let good = store
        .register(&common::registration(
            "alice@localhost",
            "conversations",
            "phone",
            token,
        ))
        .await
        .unwrap()
        .node;
    let dead = store
        .register(&common::registration(
            "alice@localhost",
            "conversations",
            "tablet",
            dead_token,
        ))
        .await
        .unwrap()
        .node;
    let config = write_config(&app, dir.path(), 1, &db.url());
    let out = nudge(&config, "127.0.0.1:1", &["send-test", &node_hash(&good)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("delivered"), "{}", text(&out));
    assert!(app.wait_for_push(token, STEP).await.is_some());
    let out = nudge(&config, "127.0.0.1:1", &["send-test", &dead]);
    assert!(
        !out.status.success() && text(&out).contains("invalid token"),
        "{}",
        text(&out)
    );
    assert!(
        store.find(&dead).await.unwrap().is_some(),
        "the dead token's registration was kept"
    );
    let out = nudge(&config, "127.0.0.1:1", &["status"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("outbox       empty"), "{}", text(&out));
    store.close().await;
    db.drop_db().await;
    app.shutdown().await;
}

/// Registers alice's `device` with `token` the way Conversations does.
async fn register(conn: &mut common::ServerConn, device: &str, token: &str) -> (String, String) {
    let a = conn
        .request(&common::register_iq(
            "alice@localhost",
            "fcm",
            device,
            token,
        ))
        .await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    let (_, node, secret) = common::registration_form(&a).unwrap();
    (node, secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_send_test_and_json_logs_through_the_binary() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start().await;
    let db_url = format!("sqlite://{}", dir.path().join("nudge.db").display());
    let config = write_config(&app, dir.path(), server.port, &db_url);

    // Nothing runs yet: `status` says so, prints the database's view, fails.
    let idle = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idle_addr = idle.local_addr().unwrap().to_string();
    drop(idle);
    let out = nudge(&config, &idle_addr, &["status"]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("no running instance answered"), "{said}");
    assert!(said.contains("outbox       empty"), "{said}");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nudge"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("NUDGE_HTTP__LISTEN", "127.0.0.1:0")
        .env("NUDGE_LOG__FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let collected = lines.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            collected.lock().unwrap().push(line);
        }
    });
    let mut conn = server.accept().await;
    let listen = {
        let found = || {
            lines.lock().unwrap().iter().find_map(|l| {
                let at = l.find("HTTP listener on http://")? + "HTTP listener on http://".len();
                let rest = &l[at..];
                Some(rest[..rest.find(' ')?].to_owned())
            })
        };
        assert!(
            eventually(|| async { found().is_some() }).await,
            "no listener line"
        );
        found().unwrap()
    };
    // Every line is a JSON object.
    for l in lines.lock().unwrap().iter() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{l}"
        );
    }

    // `status` reaches the running instance.
    let out = nudge(&config, &listen, &["status"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("link         connected for"), "{said}");
    eprintln!("nudge status:\n{said}");
    assert!(said.contains("app conversations"), "{said}");
    let out = nudge(&config, &listen, &["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["link"]["state"], "connected");
    assert_eq!(json["pid"], child.id().unwrap());

    let good_token = "0ood-token-for-send-test";
    let dead_token = "dead-token-for-send-test";
    let failing_token = "fa1199-token-failing";
    let (good, _) = register(&mut conn, "phone", good_token).await;
    let (dead, _) = register(&mut conn, "tablet", dead_token).await;
    let (failing, failing_secret) = register(&mut conn, "watch", failing_token).await;

    // send-test: delivered, by node or by the hash a log line shows.
    let out = nudge(&config, &listen, &["send-test", &good]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("delivered"), "{}", text(&out));
    assert!(app.wait_for_push(good_token, STEP).await.is_some());
    let out = nudge(&config, &listen, &["send-test", &node_hash(&good)]);
    assert!(out.status.success(), "{}", text(&out));

    // A dead token: reported, non-zero, and the registration is kept.
    let out = nudge(&config, &listen, &["send-test", &dead]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("invalid token"), "{said}");
    eprintln!("nudge send-test (dead token):\n{said}");
    assert!(
        said.contains(&format!("nudge registrations remove {dead}")),
        "{said}"
    );
    let out = nudge(&config, &listen, &["registrations", "show", &dead]);
    assert!(
        out.status.success(),
        "the registration was kept: {}",
        text(&out)
    );

    // A push that fails for now: one warn line with app, outcome and hash.
    let a = conn
        .request(&common::publish_iq(
            "p1",
            "localhost",
            &failing,
            Some(&failing_secret),
            "hello",
        ))
        .await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    let hash = node_hash(&failing);
    let failure = || {
        lines.lock().unwrap().iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["level"] == "WARN" && v["fields"]["outcome"] == "transient").then(|| (l.clone(), v))
        })
    };
    assert!(
        eventually(|| async { failure().is_some() }).await,
        "no warn line for the failure"
    );
    let (line, v) = failure().unwrap();
    eprintln!("the failure's line: {line}");
    let span = &v["span"];
    assert_eq!(span["app"], "conversations", "{line}");
    assert_eq!(span["node"], hash.as_str(), "{line}");
    for secret in [failing.as_str(), failing_secret.as_str(), failing_token] {
        assert!(!line.contains(secret), "a credential in the log: {line}");
    }
    // No log line at all carries a node, token or secret.
    for l in lines.lock().unwrap().iter() {
        for secret in [&good, &dead, &failing, &failing_secret] {
            assert!(!l.contains(secret.as_str()), "{l}");
        }
        for token in [good_token, dead_token, failing_token] {
            assert!(!l.contains(token), "{l}");
        }
    }

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(STEP, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    app.shutdown().await;
}
