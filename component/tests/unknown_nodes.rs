//! Unknown nodes are cached as absent (`component/src/store/cache.rs`): a
//! publish to a node nobody registered reads the database once, not once
//! per publish; and a registration of that node is found at once, through
//! this instance (its invalidation) and, on PostgreSQL, through any other
//! writer (the change listener, `component/src/store/listen.rs`).
//!
//! That the absence is cached is shown the way `cache_agree.rs` shows it
//! for rows: a change no invalidation reaches is not seen until the cache
//! is cleared.

mod common;

use std::time::{Duration, Instant};

use common::{DbKind, STEP, TestDb};
use nudge::store::{ClientNodeOutcome, NewRegistration, RegistrationStore};
use sqlx::Connection;

/// How long a change may take to reach another instance.
const AGREE_WITHIN: Duration = Duration::from_secs(2);

fn device(owner: &str) -> NewRegistration {
    NewRegistration {
        dialect: "push_appserver",
        ..common::registration(owner, "app", "dev1", "tok1")
    }
}

async fn register(store: &RegistrationStore, owner: &str, node: &str) {
    let outcome = store
        .register_client_node(&device(owner), node, 10)
        .await
        .unwrap();
    assert!(
        matches!(outcome, ClientNodeOutcome::Registered(_)),
        "{outcome:?}"
    );
}

async fn known(store: &RegistrationStore, node: &str) -> bool {
    store.find(node).await.unwrap().is_some()
}

#[tokio::test]
async fn sqlite_caches_an_unknown_node_and_finds_its_registration_at_once() {
    let db = TestDb::new(DbKind::Sqlite).await;
    let store = RegistrationStore::open(&db.url(), 100).await.unwrap();
    store.migrate().await.unwrap();

    // Unknown, and known to be: a write this store does not hear about
    // (another store on the file) is not seen ...
    assert!(!known(&store, "node-a").await);
    let other = RegistrationStore::open(&db.url(), 100).await.unwrap();
    register(&other, "alice@localhost", "node-a").await;
    other.close().await;
    assert!(!known(&store, "node-a").await, "the absence was not cached");
    // ... until the cache is cleared (what the CLI has a running instance
    // do, `main.rs`).
    store.clear_cache();
    assert!(known(&store, "node-a").await);

    // Registered through this store: found at once.
    assert!(!known(&store, "node-b").await);
    assert!(!known(&store, "node-b").await);
    register(&store, "bob@localhost", "node-b").await;
    assert!(known(&store, "node-b").await);

    // Removed, cached as absent, registered again: found at once.
    assert!(store.remove("node-b").await.unwrap());
    assert!(!known(&store, "node-b").await);
    register(&store, "bob@localhost", "node-b").await;
    assert!(known(&store, "node-b").await);
    assert!(
        store
            .unregister_node("bob@localhost", "app", "node-b", "push_appserver")
            .await
            .unwrap()
    );
    assert!(!known(&store, "node-b").await);
    register(&store, "bob@localhost", "node-b").await;
    assert!(known(&store, "node-b").await);
    store.close().await;
}

/// An instance's store, subscribed to changes.
async fn instance(url: &str) -> (RegistrationStore, nudge::store::ChangeListener) {
    let store = RegistrationStore::open(url, 100).await.unwrap();
    let changes = store.listen_for_changes().expect("PostgreSQL listens");
    assert!(
        tokio::time::timeout(STEP, changes.listening())
            .await
            .expect("the listener did not subscribe in time"),
        "the listener stopped"
    );
    (store, changes)
}

/// Looks `node` up every millisecond until it is known, for at most
/// `limit`.
async fn known_within(store: &RegistrationStore, node: &str, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if known(store, node).await {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Registers `node` the way no trigger sees (the trigger is off inside the
/// transaction only).
async fn register_unheard(url: &str, node: &str) {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let mut tx = c.begin().await.unwrap();
    sqlx::query("ALTER TABLE registrations DISABLE TRIGGER registrations_changed")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO registrations (node, secret, owner, domain, device_id, muc, app, token, \
         created_at, updated_at, dialect, second_token, environment) \
         VALUES ($1, NULL, 'carol@localhost', 'localhost', 'dev1', '', 'app', 'tok', 0, 0, \
         'push_appserver', '', '')",
    )
    .bind(node)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE registrations ENABLE TRIGGER registrations_changed")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_hear_the_registration_of_a_node_cached_as_absent() {
    let db = TestDb::new(DbKind::Postgres).await;
    {
        let store = RegistrationStore::open(&db.url(), 1).await.unwrap();
        store.migrate().await.unwrap();
        store.close().await;
    }
    let (a, _a_changes) = instance(&db.url()).await;
    let (b, _b_changes) = instance(&db.url()).await;

    // A caches the absence: a registration nobody hears of is not seen.
    assert!(!known(&a, "node-a").await);
    register_unheard(&db.url(), "node-a").await;
    assert!(!known(&a, "node-a").await, "the absence was not cached");

    // A registration through the other instance reaches A.
    assert!(!known(&a, "node-b").await);
    register(&b, "bob@localhost", "node-b").await;
    assert!(
        known_within(&a, "node-b", AGREE_WITHIN).await,
        "A still had node-b as absent after {AGREE_WITHIN:?}"
    );
    // So does an operator's SQL (the trigger fires for it).
    let mut c = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    sqlx::query("UPDATE registrations SET token = 'tok2' WHERE node = 'node-a'")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    assert!(
        known_within(&a, "node-a", AGREE_WITHIN).await,
        "A still had node-a as absent after {AGREE_WITHIN:?}"
    );
    a.close().await;
    b.close().await;
    db.drop_db().await;
}
