//! The cache's misses are read in batches (`component/src/store/lookup.rs`):
//! lookups made at the same time get each its own node's row, or none,
//! whether the nodes are registered, unknown or asked twice; and they take
//! fewer queries than lookups. SQLite and PostgreSQL.

mod common;

use common::{DbKind, TestDb};
use nudge::store::RegistrationStore;

async fn concurrent_lookups_get_their_own_rows(kind: DbKind) {
    let db = TestDb::new(kind).await;
    // A cache of one row: nearly every lookup below is a miss.
    let store = RegistrationStore::open(&db.url(), 1).await.unwrap();
    store.migrate().await.unwrap();
    let mut nodes = Vec::new();
    for i in 0..200 {
        let owner = format!("user{i}@localhost");
        let reg = store
            .register(&common::registration(
                &owner,
                "app",
                "dev",
                &format!("tok{i}"),
            ))
            .await
            .unwrap();
        nodes.push((reg.node.clone(), Some(owner)));
    }
    for i in 0..100 {
        nodes.push((format!("unknown-node-{i}"), None));
    }
    // Every node twice, interleaved, all at once.
    let asked: Vec<&(String, Option<String>)> = nodes.iter().chain(nodes.iter().rev()).collect();
    let before = store.lookup_stats();
    let lookups: Vec<_> = asked
        .iter()
        .map(|(node, _)| {
            let (store, node) = (store.clone(), node.clone());
            tokio::spawn(async move { store.find(&node).await })
        })
        .collect();
    for ((node, owner), lookup) in asked.iter().zip(lookups) {
        let found = lookup.await.unwrap().unwrap();
        assert_eq!(
            found.as_ref().map(|r| &r.owner),
            owner.as_ref(),
            "lookup of {node}"
        );
        if let Some(r) = found {
            assert_eq!(&r.node, node);
        }
    }
    let after = store.lookup_stats();
    let lookups = after.lookups - before.lookups;
    let queries = after.queries - before.queries;
    assert!(lookups > 0 && lookups <= asked.len() as u64, "{lookups}");
    assert!(
        queries * 2 <= lookups,
        "{queries} queries for {lookups} lookups made at once: not batched"
    );
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_concurrent_lookups_get_their_own_rows() {
    concurrent_lookups_get_their_own_rows(DbKind::Sqlite).await;
}

#[tokio::test]
async fn postgres_concurrent_lookups_get_their_own_rows() {
    concurrent_lookups_get_their_own_rows(DbKind::Postgres).await;
}
