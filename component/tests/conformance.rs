//! Nudge passes the XEP-0357 conformance kit's app-server mode
//! (`nudge-test-app conformance app-server`, issue 21): the kit plays the
//! XMPP server, Nudge connects to it as a component and pushes to the
//! in-process test-app's mock APNs and FCM, so that the rows needing a
//! provider (transient outage, dead token, delivery) run and are not
//! skipped. The Conversations (`conversations:testapp-fcm`) and Siskin
//! (`siskin:tigase:messenger:apns:1`) dialects are claimed and checked.

mod common;

use std::time::Duration;

use common::{DbKind, TestDb};
use nudge::Config;
use nudge_test_app::TestAppConfig;
use nudge_test_app::conformance::Verdict;
use nudge_test_app::conformance::app_server::{AppServerOptions, Dialect, Listen, run};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nudge_passes_the_app_server_kit() {
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let exported = app.export(files.path()).unwrap();
    // The test-app's own snippet: apps testapp-apns and testapp-fcm.
    let apps = std::fs::read_to_string(&exported.nudge_apps_toml).unwrap();
    let db = TestDb::new(DbKind::Sqlite).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = Config::from_toml(&format!(
        r#"
[component]
domain = "{domain}"
secret = "{secret}"
port = {port}
reconnect_max_delay_ms = 200
[storage]
url = "{db}"
[outbox]
retry_min_ms = 100
retry_max_secs = 1
[dialects.siskin.providers]
"tigase:messenger:apns:1" = "testapp-apns"
{apps}"#,
        domain = common::DOMAIN,
        secret = common::SECRET,
        db = db.url(),
    ))
    .unwrap();
    let backends = nudge::app::build_backends(&config).await.unwrap();
    let nudge = nudge::start(&config, backends).await.unwrap();

    let mut opts =
        AppServerOptions::new(Listen::Listener(listener), common::DOMAIN, common::SECRET);
    opts.dialects = vec![
        "conversations:testapp-fcm".parse::<Dialect>().unwrap(),
        "siskin:tigase:messenger:apns:1".parse::<Dialect>().unwrap(),
    ];
    opts.test_app = Some(app.control_url());
    opts.wait = Duration::from_secs(20);
    let report = tokio::time::timeout(Duration::from_secs(300), run(opts))
        .await
        .expect("the kit finished in time")
        .expect("the kit ran");
    println!("{}", report.to_table());

    let failed: Vec<&str> = report.failed().map(|r| r.id.as_str()).collect();
    assert!(failed.is_empty(), "Nudge failed rows {failed:?}");
    for id in [
        "handshake",
        "publish-accepted",
        "publish-empty-notification",
        "publish-transient",
        "publish-dead-token",
        "publish-wrong-secret",
        "publish-no-secret",
        "one-answer-per-iq",
        "answer-in-time",
        "survives-oversize",
        "dialect-conversations-testapp-fcm",
        "dialect-siskin-tigase-messenger-apns-1",
    ] {
        let row = report.row(id).unwrap_or_else(|| panic!("row {id} missing"));
        assert_eq!(row.verdict, Verdict::Pass, "{id}: {row:?}");
    }
    assert!(
        report.rows.iter().all(|r| r.verdict != Verdict::Skipped),
        "nothing skipped with --test-app and two dialects: {:?}",
        report
            .rows
            .iter()
            .filter(|r| r.verdict == Verdict::Skipped)
            .map(|r| &r.id)
            .collect::<Vec<_>>()
    );

    nudge.stop().await;
    db.drop_db().await;
    app.shutdown().await;
}
