//! Instances sharing one PostgreSQL agree on what they cache: a change made
//! through one instance, the CLI or plain SQL reaches the registration
//! cache of every other (`component/src/store/listen.rs`), a lost listener
//! connection clears the cache, and the maximum entry age bounds a change
//! nobody heard about. Two stores opened on one database stand for two
//! instances.

mod common;

use std::time::{Duration, Instant};

use common::{DbKind, STEP, TestDb};
use nudge::store::{ChangeListener, NewRegistration, RegistrationStore};
use sqlx::Connection;

/// How long a change may take to reach another instance.
const AGREE_WITHIN: Duration = Duration::from_secs(2);

/// An instance's store, subscribed to changes.
async fn instance(url: &str, max_age: Duration) -> (RegistrationStore, ChangeListener) {
    let store = RegistrationStore::open(url, 100)
        .await
        .unwrap()
        .with_cache_max_age(max_age);
    let changes = store
        .listen_for_changes()
        .expect("a PostgreSQL store listens for changes");
    assert!(
        tokio::time::timeout(STEP, changes.listening())
            .await
            .expect("the listener did not subscribe in time"),
        "the listener stopped"
    );
    (store, changes)
}

/// A fresh, migrated PostgreSQL database.
async fn database() -> TestDb {
    let db = TestDb::new(DbKind::Postgres).await;
    let store = RegistrationStore::open(&db.url(), 1).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    db
}

fn device(device_id: &str, token: &str) -> NewRegistration {
    common::registration("alice@localhost", "app", device_id, token)
}

/// The token `store` finds for `node`.
async fn token(store: &RegistrationStore, node: &str) -> Option<String> {
    store.find(node).await.unwrap().map(|reg| reg.token.clone())
}

/// Looks `node` up every millisecond until its token is `want`, for at
/// most `limit`; how long that took.
async fn seen_within(
    store: &RegistrationStore,
    node: &str,
    want: Option<&str>,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if token(store, node).await.as_deref() == want {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until `changes` received `n` notifications: this instance's own
/// changes are heard too, and one arriving late would empty the cache.
async fn heard(changes: &ChangeListener, n: u64) {
    assert!(
        common::eventually(|| std::future::ready(changes.notifications() >= n)).await,
        "{n} notifications expected, {} heard",
        changes.notifications()
    );
}

/// Changes a token the way no trigger sees (the trigger is off inside the
/// transaction only: DDL is transactional).
async fn change_unheard(url: &str, node: &str, token: &str) {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let mut tx = c.begin().await.unwrap();
    sqlx::query("ALTER TABLE registrations DISABLE TRIGGER registrations_changed")
        .execute(&mut *tx)
        .await
        .unwrap();
    let changed = sqlx::query("UPDATE registrations SET token = $1 WHERE node = $2")
        .bind(token)
        .bind(node)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1);
    sqlx::query("ALTER TABLE registrations ENABLE TRIGGER registrations_changed")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_registration_through_one_instance_reaches_the_other() {
    let db = database().await;
    let (a, _a_changes) = instance(&db.url(), Duration::from_secs(60)).await;
    let (b, _b_changes) = instance(&db.url(), Duration::from_secs(60)).await;
    let node = b.register(&device("dev1", "tok-0")).await.unwrap().node;

    let mut took = Vec::new();
    for i in 1..=10 {
        // A caches the current row ...
        let before = format!("tok-{}", i - 1);
        assert!(
            seen_within(&a, &node, Some(&before), STEP).await.is_some(),
            "A never saw {before}"
        );
        // ... and the device registers a new token through B.
        let after = format!("tok-{i}");
        b.register(&device("dev1", &after)).await.unwrap();
        let t = seen_within(&a, &node, Some(&after), AGREE_WITHIN).await;
        took.push(t.unwrap_or_else(|| panic!("A still used an old token after {AGREE_WITHIN:?}")));
    }
    took.sort();
    eprintln!(
        "re-registration reached the other instance within: min {:?}, median {:?}, max {:?}",
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    );
    a.close().await;
    b.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_through_one_instance_reach_the_other() {
    let db = database().await;
    let (a, _a_changes) = instance(&db.url(), Duration::from_secs(60)).await;
    let (b, _b_changes) = instance(&db.url(), Duration::from_secs(60)).await;
    let unregistered = b.register(&device("dev1", "tok1")).await.unwrap().node;
    let removed = b.register(&device("dev2", "tok2")).await.unwrap().node;
    let dead = b.register(&device("dev3", "tok3")).await.unwrap().node;
    for (node, tok) in [(&unregistered, "tok1"), (&removed, "tok2"), (&dead, "tok3")] {
        assert_eq!(token(&a, node).await.as_deref(), Some(tok));
    }

    b.unregister("alice@localhost", "app", "dev1", "")
        .await
        .unwrap();
    assert!(
        seen_within(&a, &unregistered, None, AGREE_WITHIN)
            .await
            .is_some(),
        "A still finds an unregistered node"
    );
    assert!(b.remove(&removed).await.unwrap());
    assert!(
        seen_within(&a, &removed, None, AGREE_WITHIN)
            .await
            .is_some(),
        "A still finds a removed node"
    );
    assert!(b.remove_dead_token(&dead, "tok3").await.unwrap());
    assert!(
        seen_within(&a, &dead, None, AGREE_WITHIN).await.is_some(),
        "A still finds a node whose token died"
    );
    a.close().await;
    b.close().await;
    db.drop_db().await;
}

/// A store that does not listen, as the CLI's: its changes reach the
/// instances all the same (the trigger notifies, not the writer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_through_a_store_that_does_not_listen_reach_the_instances() {
    let db = database().await;
    let (a, _a_changes) = instance(&db.url(), Duration::from_secs(60)).await;
    let cli = RegistrationStore::open(&db.url(), 10).await.unwrap();
    let node = a.register(&device("dev1", "tok1")).await.unwrap().node;
    assert_eq!(token(&a, &node).await.as_deref(), Some("tok1"));

    cli.register(&device("dev1", "tok2")).await.unwrap();
    assert!(
        seen_within(&a, &node, Some("tok2"), AGREE_WITHIN)
            .await
            .is_some()
    );
    assert!(cli.remove(&node).await.unwrap());
    assert!(
        seen_within(&a, &node, None, AGREE_WITHIN).await.is_some(),
        "A still finds a node the CLI removed"
    );
    cli.close().await;
    a.close().await;
    db.drop_db().await;
}

/// `nudge registrations remove`, the separate process, reaches a running
/// instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remove_command_reaches_a_running_instance() {
    let db = database().await;
    let (a, _a_changes) = instance(&db.url(), Duration::from_secs(60)).await;
    let node = a.register(&device("dev1", "tok1")).await.unwrap().node;
    assert_eq!(token(&a, &node).await.as_deref(), Some("tok1"));

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_nudge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NUDGE_") {
            cmd.env_remove(k);
        }
    }
    let config = format!(
        "{}/../deploy/nudge.example.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = cmd
        // `--`: a node may begin with '-' (base64url).
        .args(["--config", &config, "registrations", "remove", "--", &node])
        .env("NUDGE_STORAGE__URL", db.url())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        seen_within(&a, &node, None, AGREE_WITHIN).await.is_some(),
        "A still finds a node the CLI removed"
    );
    a.close().await;
    db.drop_db().await;
}

/// The backends listening on this test's database (other tests run their
/// own databases on the same server at the same time).
async fn kill_listeners(url: &str) -> usize {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    killed.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_connection_clears_the_cache_and_listens_again() {
    let db = database().await;
    let (a, a_changes) = instance(&db.url(), Duration::from_secs(60)).await;
    let cli = RegistrationStore::open(&db.url(), 10).await.unwrap();
    let node = a.register(&device("dev1", "tok1")).await.unwrap().node;
    heard(&a_changes, 1).await;
    assert_eq!(token(&a, &node).await.as_deref(), Some("tok1"));
    // A change nobody hears about: A serves its cached row ...
    change_unheard(&db.url(), &node, "tok2").await;
    assert_eq!(
        token(&a, &node).await.as_deref(),
        Some("tok1"),
        "the cache did not serve the row"
    );

    // ... until its listener loses the connection: notifications may have
    // been missed meanwhile, so the cache is cleared.
    assert_eq!(a_changes.subscriptions(), 1);
    assert_eq!(kill_listeners(&db.url()).await, 1, "one listener to kill");
    assert!(
        common::eventually(|| std::future::ready(a_changes.subscriptions() >= 2)).await,
        "the listener did not subscribe again"
    );
    assert!(a_changes.is_listening());
    assert_eq!(token(&a, &node).await.as_deref(), Some("tok2"));

    // A later change is heard again.
    cli.register(&device("dev1", "tok3")).await.unwrap();
    assert!(
        seen_within(&a, &node, Some("tok3"), AGREE_WITHIN)
            .await
            .is_some(),
        "a change after the reconnection was not heard"
    );
    cli.close().await;
    a.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unheard_change_is_seen_once_the_entry_is_too_old() {
    let max_age = Duration::from_secs(1);
    let db = database().await;
    let (a, a_changes) = instance(&db.url(), max_age).await;
    let node = a.register(&device("dev1", "tok1")).await.unwrap().node;
    heard(&a_changes, 1).await;
    let cached_at = Instant::now();
    assert_eq!(token(&a, &node).await.as_deref(), Some("tok1"));
    change_unheard(&db.url(), &node, "tok2").await;
    let served = token(&a, &node).await;
    // Only a machine slower than the age could see the new row already.
    if cached_at.elapsed() < max_age {
        assert_eq!(
            served.as_deref(),
            Some("tok1"),
            "the cache did not serve the row"
        );
    }
    let took = seen_within(&a, &node, Some("tok2"), STEP).await;
    assert!(took.is_some(), "the old row outlived the maximum age");
    assert!(cached_at.elapsed() >= max_age);
    a.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_cache_forgets_unheard_changes() {
    let db = database().await;
    let (a, a_changes) = instance(&db.url(), Duration::from_secs(60)).await;
    let node = a.register(&device("dev1", "tok1")).await.unwrap().node;
    heard(&a_changes, 1).await;
    assert_eq!(token(&a, &node).await.as_deref(), Some("tok1"));
    change_unheard(&db.url(), &node, "tok2").await;
    assert_eq!(token(&a, &node).await.as_deref(), Some("tok1"));
    a.clear_cache();
    assert_eq!(token(&a, &node).await.as_deref(), Some("tok2"));
    a.close().await;
    db.drop_db().await;
}

/// Without a listener (stopped, or never started) a PostgreSQL store could
/// not hear about changes, so it reads every lookup from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_that_does_not_listen_serves_no_cached_rows() {
    let db = database().await;
    let plain = RegistrationStore::open(&db.url(), 10).await.unwrap();
    let node = plain.register(&device("dev1", "tok1")).await.unwrap().node;
    assert_eq!(token(&plain, &node).await.as_deref(), Some("tok1"));
    change_unheard(&db.url(), &node, "tok2").await;
    assert_eq!(token(&plain, &node).await.as_deref(), Some("tok2"));

    let (a, a_changes) = instance(&db.url(), Duration::from_secs(60)).await;
    assert_eq!(token(&a, &node).await.as_deref(), Some("tok2"));
    a_changes.stop().await;
    change_unheard(&db.url(), &node, "tok3").await;
    assert_eq!(
        token(&a, &node).await.as_deref(),
        Some("tok3"),
        "a stopped listener left the cache serving"
    );
    plain.close().await;
    a.close().await;
    db.drop_db().await;
}

/// SQLite has one writer: no listener, and the cache serves from the start
/// (the migrations there have no 0003).
#[tokio::test]
async fn a_sqlite_store_caches_without_a_listener() {
    let db = TestDb::new(DbKind::Sqlite).await;
    let store = RegistrationStore::open(&db.url(), 10).await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.listen_for_changes().is_none());
    let node = store.register(&device("dev1", "tok1")).await.unwrap().node;
    assert_eq!(token(&store, &node).await.as_deref(), Some("tok1"));
    // Another store on the file changes the row: the first one still serves
    // its cached row (which is why a second process is refused).
    let other = RegistrationStore::open(&db.url(), 10).await.unwrap();
    other.register(&device("dev1", "tok2")).await.unwrap();
    assert_eq!(token(&store, &node).await.as_deref(), Some("tok1"));
    other.close().await;
    store.close().await;
}
