//! `/ready` and `/status` served by the real router against a Nudge
//! connected to the fake XMPP server: ready while connected and the
//! database answers; 503 within a second of the server going away and
//! while the database refuses connections; ready again when each returns.

mod common;

use std::time::Duration;

use common::{DbKind, FakeServer, Harness, STEP, eventually_within};
use nudge::http::health::Readiness;
use nudge::http::status::Status;
use nudge::xmpp::stream::LinkState;

/// Serves the router of `nudge` on 127.0.0.1:0; its base URL.
async fn serve(h: &Harness, config: &nudge::Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = nudge::http::router(h.nudge.http_state(config));
    tokio::spawn(nudge::http::serve(
        listener,
        router,
        h.nudge.shutdown_handle(),
    ));
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    nudge::http::status::plain_client(Duration::from_secs(5)).unwrap()
}

async fn ready(base: &str) -> (u16, Readiness) {
    let answer = client().get(format!("{base}/ready")).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap())
}

/// Waits (at most `limit`) until `/ready` answers `code`; how long it took.
async fn ready_becomes(base: &str, code: u16, limit: Duration) -> Option<Duration> {
    let start = std::time::Instant::now();
    eventually_within(limit, || async { ready(base).await.0 == code })
        .await
        .then(|| start.elapsed())
}

async fn flips_with_the_server(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let config = common::test_config(h.server.port, &h.db.url(), "");
    let base = serve(&h, &config).await;
    assert_eq!(
        ready(&base).await,
        (
            200,
            Readiness {
                link: "connected".into(),
                database: "ok".into()
            }
        )
    );

    // The server goes away: the link notices the closed socket.
    h.conn.hang_up().await;
    let took = ready_becomes(&base, 503, Duration::from_secs(1))
        .await
        .expect("/ready still 200 a second after the server hung up");
    eprintln!("/ready flipped to 503 in {took:?}");
    let (_, why) = ready(&base).await;
    assert_ne!(why.link, "connected");
    assert_eq!(why.database, "ok");

    // Back: the component reconnects, and is ready again.
    h.conn = h.server.accept().await;
    ready_becomes(&base, 200, STEP)
        .await
        .expect("/ready back to 200 after the reconnect");
    let status: Status = client()
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status.link.state, "connected");
    assert_eq!(status.link.reconnects, 1);
    assert!(status.link.connected_since.is_some());
    assert_eq!(status.database.error, None);
    assert_eq!(status.outbox.map(|o| o.queued), Some(0));
    assert!(status.apps.contains_key("conversations") || status.apps.is_empty());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_flips_with_the_xmpp_server_sqlite() {
    flips_with_the_server(DbKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_flips_with_the_xmpp_server_postgres() {
    flips_with_the_server(DbKind::Postgres).await;
}

/// Not connected yet, then standing by: not ready, and it says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_before_the_first_connection() {
    let server = FakeServer::start().await;
    let (nudge, _dir) =
        common::start_on(server.port, nudge::dispatch::Backends::new(), |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = common::test_config(server.port, "sqlite::memory:", "");
    tokio::spawn(nudge::http::serve(
        listener,
        nudge::http::router(nudge.http_state(&config)),
        nudge.shutdown_handle(),
    ));
    let (code, why) = ready(&base).await;
    assert_eq!((code, why.link.as_str()), (503, "connecting"));
    // Another instance holds the domain (Prosody's kick_new): a standby is
    // not ready either.
    let (mut c, _, _) = server.accept_until_handshake().await;
    c.send("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Component already connected</text></stream:error></stream:stream>").await;
    let mut state = nudge.state.clone();
    tokio::time::timeout(STEP, state.wait_for(|s| *s == LinkState::Standby))
        .await
        .unwrap()
        .unwrap();
    let (code, why) = ready(&base).await;
    assert_eq!((code, why.link.as_str()), (503, "standby"));
    nudge.stop().await;
}

/// PostgreSQL refusing connections (the backends terminated, new ones not
/// allowed): 503 naming the database, while the link stays up; 200 again
/// once connections are allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_flips_with_the_database() {
    use sqlx::Connection;
    let h = Harness::start(DbKind::Postgres).await;
    let config = common::test_config(h.server.port, &h.db.url(), "");
    let base = serve(&h, &config).await;
    assert_eq!(ready(&base).await.0, 200);
    let name = match &h.db {
        common::TestDb::Postgres { name, .. } => name.clone(),
        common::TestDb::Sqlite(_) => unreachable!(),
    };
    let mut admin = sqlx::PgConnection::connect(&common::postgres_admin_url())
        .await
        .unwrap();
    let sql = |s: String| sqlx::raw_sql(sqlx::AssertSqlSafe(s));
    sql(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .unwrap();
    sql(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    ready_becomes(&base, 503, Duration::from_secs(3))
        .await
        .expect("/ready still 200 with the database refusing connections");
    let (_, why) = ready(&base).await;
    assert_eq!(why.link, "connected");
    assert_ne!(why.database, "ok");
    eprintln!("database down: {why:?}");
    // /status still answers, saying the database does not.
    let status: Status = client()
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(status.database.error.is_some() && status.outbox.is_none());

    sql(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    ready_becomes(&base, 200, STEP)
        .await
        .expect("/ready back to 200 once the database takes connections");
    admin.close().await.unwrap();
    h.finish().await;
}

/// SQLite: a closed pool is a database that does not answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_sqlite_pool_is_not_ready() {
    let h = Harness::start(DbKind::Sqlite).await;
    let config = common::test_config(h.server.port, &h.db.url(), "");
    let base = serve(&h, &config).await;
    assert_eq!(ready(&base).await.0, 200);
    h.nudge.store.close().await;
    let (code, why) = ready(&base).await;
    assert_eq!((code, why.link.as_str()), (503, "connected"));
    assert!(why.database.contains("closed"), "{why:?}");
    h.finish().await;
}
