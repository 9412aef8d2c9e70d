//! Group commit of outbox writes (`component/src/store/outbox/batch.rs`):
//! merges issued together give the rows, and the seqs, that the same merges
//! one after the other give; each waiter is answered with its own result,
//! an error when its row or its batch failed; and no waiter is answered
//! before its row is committed. On SQLite and PostgreSQL.
//!
//! The tests run on a current-thread runtime: tasks spawned in a row start
//! in that order, so the order the writes reach the writer is the order
//! they were issued, and they queue up behind the first one's commit.

mod common;

use std::sync::Arc;

use common::{DbKind, TestDb};
use nudge::store::{Outbox, QueuedPush, RegistrationStore, StoreError};
use nudge_plugins::Notification;
use sqlx::Connection;

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "current_thread")]
               async fn $name() { super::$name(super::DbKind::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "current_thread")]
               async fn $name() { super::$name(super::DbKind::Postgres).await } )*
        }
    };
}

on_both!(
    concurrent_merges_give_the_rows_of_sequential_ones,
    a_refused_row_fails_alone,
    a_failing_batch_answers_every_waiter_with_an_error,
    no_waiter_is_answered_before_its_commit,
);

const EXPIRES_AT: i64 = 4_000_000_000;

async fn open(db: &TestDb) -> RegistrationStore {
    let store = RegistrationStore::open(&db.url(), 10).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// The `i`th publish of a test: every third one silent, the others with a
/// body, received in an order that is not the order issued.
fn publish(i: usize) -> (Notification, i64) {
    let body = (!i.is_multiple_of(3)).then(|| format!("message {i}"));
    let notification = Notification {
        message_count: Some(u32::try_from(i).unwrap()),
        last_message_body: body,
        ..Notification::default()
    };
    let received_us = 1_000_000 + i64::try_from((i * 7919) % 1000).unwrap();
    (notification, received_us)
}

/// The writes of a test: 40 nodes with 5 merges each, interleaved, and
/// one node with 60 merges, then an insert_new for a node with a row and
/// one without.
fn writes(prefix: &str) -> Vec<(String, usize)> {
    let mut w = Vec::new();
    for round in 0..5 {
        for n in 0..40 {
            w.push((format!("{prefix}-many-{n}"), round * 40 + n));
        }
    }
    for i in 0..60 {
        w.push((format!("{prefix}-one"), 1000 + i));
    }
    w
}

async fn merge(outbox: &Outbox, node: &str, i: usize) -> Result<i64, StoreError> {
    let (notification, received_us) = publish(i);
    outbox
        .merge(
            node,
            &notification,
            None,
            received_us,
            i64::try_from(i).unwrap(),
            EXPIRES_AT,
        )
        .await
}

/// A row's content, less its node and creation time.
fn content(p: &QueuedPush) -> (Notification, i64, u32, i64, i64, i64) {
    (
        p.notification.clone(),
        p.received_us,
        p.attempts,
        p.seq,
        p.expires_at,
        p.due_at_ms,
    )
}

async fn concurrent_merges_give_the_rows_of_sequential_ones(kind: DbKind) {
    let db = TestDb::new(kind).await;
    let store = open(&db).await;

    let sequential = store.outbox();
    let mut seq_answers = Vec::new();
    for (node, i) in writes("seq") {
        seq_answers.push(merge(&sequential, &node, i).await.unwrap());
    }
    let new_seq = (
        sequential
            .insert_new("seq-one", &publish(1).0, None, 1, 1, EXPIRES_AT)
            .await
            .unwrap(),
        sequential
            .insert_new("seq-fresh", &publish(2).0, None, 2, 2, EXPIRES_AT)
            .await
            .unwrap(),
    );

    let together = store.outbox();
    let mut tasks = Vec::new();
    for (node, i) in writes("con") {
        let outbox = together.clone();
        tasks.push(tokio::spawn(async move { merge(&outbox, &node, i).await }));
    }
    let (a, b) = (together.clone(), together.clone());
    let insert_one = tokio::spawn(async move {
        a.insert_new("con-one", &publish(1).0, None, 1, 1, EXPIRES_AT)
            .await
    });
    let insert_fresh = tokio::spawn(async move {
        b.insert_new("con-fresh", &publish(2).0, None, 2, 2, EXPIRES_AT)
            .await
    });
    let mut con_answers = Vec::new();
    for t in tasks {
        con_answers.push(t.await.unwrap().unwrap());
    }
    let new_con = (
        insert_one.await.unwrap().unwrap(),
        insert_fresh.await.unwrap().unwrap(),
    );

    assert_eq!(con_answers, seq_answers, "the seqs each merge was answered");
    assert_eq!(new_con, new_seq, "insert_new's answers");
    assert_eq!(new_con, (None, Some(1)));
    let mut nodes: Vec<String> = writes("seq").into_iter().map(|(n, _)| n).collect();
    nodes.sort();
    nodes.dedup();
    nodes.push("seq-fresh".into());
    for node in nodes {
        let want = sequential
            .get(&node)
            .await
            .unwrap()
            .expect("sequential row");
        let other = node.replacen("seq", "con", 1);
        let got = together.get(&other).await.unwrap().expect("concurrent row");
        assert_eq!(content(&got), content(&want), "row {other}");
    }

    let seq_stats = sequential.commit_stats();
    let con_stats = together.commit_stats();
    assert_eq!(seq_stats.transactions, seq_stats.rows, "{seq_stats:?}");
    assert_eq!(con_stats.rows, seq_stats.rows);
    assert!(
        con_stats.transactions < con_stats.rows / 10,
        "the writes were not grouped: {con_stats:?}"
    );
    eprintln!("sequential {seq_stats:?}, concurrent {con_stats:?}");
    store.close().await;
    db.drop_db().await;
}

/// Statements run on a connection of the test's own.
async fn execute(kind: DbKind, url: &str, statements: &[&str]) {
    match kind {
        DbKind::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            for s in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(*s))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
            c.close().await.unwrap();
        }
        DbKind::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            for s in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(*s))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
            c.close().await.unwrap();
        }
    }
}

/// Issues a merge for each node at once; their answers in that order.
async fn merge_all(outbox: &Outbox, nodes: &[String]) -> Vec<Result<i64, StoreError>> {
    let tasks: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let outbox = outbox.clone();
            let node = node.clone();
            tokio::spawn(async move { merge(&outbox, &node, i + 1).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

async fn a_refused_row_fails_alone(kind: DbKind) {
    let db = TestDb::new(kind).await;
    let store = open(&db).await;
    let refuse: &[&str] = match kind {
        DbKind::Sqlite => &["CREATE TRIGGER refuse BEFORE INSERT ON outbox \
             WHEN NEW.node = 'refused' BEGIN SELECT RAISE(ABORT, 'refused'); END"],
        DbKind::Postgres => &[
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.node = 'refused' THEN RAISE EXCEPTION 'refused'; END IF; \
             RETURN NEW; END; $$",
            "CREATE TRIGGER refuse BEFORE INSERT ON outbox \
             FOR EACH ROW EXECUTE FUNCTION refuse()",
        ],
    };
    execute(kind, &db.url(), refuse).await;

    let outbox = store.outbox();
    let nodes: Vec<String> = (0..30)
        .map(|i| {
            if i == 17 {
                "refused".to_owned()
            } else {
                format!("node-{i}")
            }
        })
        .collect();
    let answers = merge_all(&outbox, &nodes).await;
    for (node, answer) in nodes.iter().zip(&answers) {
        if node == "refused" {
            assert!(answer.is_err(), "the refused row was answered {answer:?}");
            assert!(outbox.get(node).await.unwrap().is_none());
        } else {
            assert_eq!(answer.as_ref().ok(), Some(&1), "{node}: {answer:?}");
            let row = outbox.get(node).await.unwrap().expect("written");
            assert_eq!(row.seq, 1);
        }
    }
    store.close().await;
    db.drop_db().await;
}

async fn a_failing_batch_answers_every_waiter_with_an_error(kind: DbKind) {
    let db = TestDb::new(kind).await;
    let store = open(&db).await;
    let outbox = store.outbox();
    let nodes: Vec<String> = (0..30).map(|i| format!("node-{i}")).collect();
    assert!(merge_all(&outbox, &nodes).await.iter().all(Result::is_ok));

    // Every statement fails.
    execute(
        kind,
        &db.url(),
        &["ALTER TABLE outbox RENAME TO outbox_gone"],
    )
    .await;
    let answers = merge_all(&outbox, &nodes).await;
    assert_eq!(answers.len(), nodes.len());
    for answer in &answers {
        assert!(matches!(answer, Err(StoreError::Database(_))), "{answer:?}");
    }
    execute(
        kind,
        &db.url(),
        &["ALTER TABLE outbox_gone RENAME TO outbox"],
    )
    .await;
    // Nothing of the failed batch was written: every row still has seq 1.
    for node in &nodes {
        assert_eq!(outbox.get(node).await.unwrap().map(|r| r.seq), Some(1));
    }

    // The database goes away as a whole.
    store.close().await;
    let answers = merge_all(&outbox, &nodes).await;
    for answer in &answers {
        assert!(
            matches!(answer, Err(StoreError::Batch(_) | StoreError::Database(_))),
            "{answer:?}"
        );
    }
    db.drop_db().await;
}

async fn no_waiter_is_answered_before_its_commit(kind: DbKind) {
    let db = TestDb::new(kind).await;
    let store = open(&db).await;
    // Another instance's view: its own pool, its own connections.
    let other = Arc::new(open(&db).await.outbox());
    let outbox = store.outbox();
    let mut tasks = Vec::new();
    for (k, (node, i)) in writes("w").into_iter().enumerate() {
        let outbox = outbox.clone();
        let other = other.clone();
        tasks.push(tokio::spawn(async move {
            let seq = merge(&outbox, &node, i).await.unwrap();
            // Answered: another connection must see the row, with this
            // merge in it (a later merge may have bumped it further).
            let seen = other.get(&node).await.unwrap().map(|r| r.seq);
            assert!(
                seen.is_some_and(|s| s >= seq),
                "write {k}: answered seq {seq}, another connection sees {seen:?}"
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = outbox.commit_stats();
    assert!(stats.transactions < stats.rows, "{stats:?}");
    store.close().await;
    db.drop_db().await;
}
