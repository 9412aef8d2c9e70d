//! Nothing lost: the outbox, coalescing, rate limits, the removal brake and
//! answers that match what happened, through the running service (fake
//! XMPP server → Nudge → recording backend), on SQLite and PostgreSQL;
//! and several instances sharing one PostgreSQL outbox.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    DbKind, Harness, TestBackend, TestDb, answer_kind, eventually, eventually_within, publish_iq,
    register_iq, start_connected, test_config,
};
use nudge::dispatch::Backends;
use nudge::store::{Outbox, RegistrationStore, now, now_ms};
use nudge::xmpp::stream::LinkState;
use nudge_plugins::{BoxFuture, Device, Notification, Outcome, PushBackend};

on_both_databases!(
    an_outage_is_bridged_and_each_device_gets_its_newest_message,
    a_restart_resumes_the_outbox,
    a_slow_provider_is_answered_within_the_bound,
    a_burst_becomes_one_push_and_a_trailing_one,
    important_is_not_held_behind_silent,
    an_important_message_does_not_wait_out_a_backoff,
    early_tries_during_an_outage_do_not_stretch_the_backoff,
    database_down_is_wait,
    rate_limited_pushes_are_deferred_not_dropped,
    an_important_publish_does_not_jump_a_rate_limit,
    queued_pushes_expire_counted,
    the_brake_stops_mass_removal,
    a_new_token_gets_the_push_instead_of_item_not_found,
    claims_are_exclusive_and_lapse,
);

/// Several instances on one database: PostgreSQL only (the deployment that
/// runs more than one).
mod shared_postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_deliver_every_row_once() {
        super::two_instances_deliver_every_row_once().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_instance_s_claims_are_delivered_by_another() {
        super::a_stopped_instance_s_claims_are_delivered_by_another().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_get_disjoint_rows() {
        super::concurrent_claims_get_disjoint_rows(super::DbKind::Postgres).await
    }
}

/// A database that hangs (a lock held elsewhere): the publish is still
/// answered, `wait`, by `dispatch.answer_deadline_secs`. PostgreSQL, where
/// a lock can be held open from another connection.
mod deadline {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_database_is_answered_wait_by_the_deadline() {
        super::a_hanging_database_is_answered_wait_by_the_deadline().await
    }
}

mod sqlite_claims {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_get_disjoint_rows() {
        super::concurrent_claims_get_disjoint_rows(super::DbKind::Sqlite).await
    }
}

/// The body of the last push in `sent`.
fn last_body(sent: &[nudge_plugins::Notification]) -> Option<&str> {
    sent.last()?.last_message_body.as_deref()
}

/// The kind of an empty `result`.
fn ok() -> (String, String) {
    ("result".into(), String::new())
}

/// Sends publishes without waiting, then reads one answer each; returns the
/// answers' kinds by id.
async fn publish_all(
    h: &mut Harness,
    publishes: &[(String, String, String, String)],
) -> Vec<(String, (String, String))> {
    for (id, node, secret, body) in publishes {
        h.conn
            .send(&publish_iq(id, "localhost", node, Some(secret), body))
            .await;
    }
    let mut answers = Vec::new();
    for _ in publishes {
        let a = h.conn.recv().await;
        let id = a.get_attr("id").unwrap_or_default().to_owned();
        answers.push((id, answer_kind(&a)));
    }
    answers
}

async fn an_outage_is_bridged_and_each_device_gets_its_newest_message(kind_: DbKind) {
    let mut h = Harness::start(kind_).await;
    let mut devices = Vec::new();
    for i in 0..3 {
        let token = format!("tok-{i}");
        let (node, secret) = h
            .register(&format!("u{i}@localhost"), "phone", &token)
            .await;
        devices.push((token, node, secret));
    }
    h.backend.set_down(true);
    let mut n = 0;
    for round in 0..5 {
        for (_, node, secret) in &devices {
            n += 1;
            assert_eq!(
                h.publish(
                    &format!("p{n}"),
                    "localhost",
                    node,
                    Some(secret),
                    &format!("msg {round}")
                )
                .await,
                ok(),
                "a publish during the outage is accepted"
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failed_before = h.backend.sent().len();
    h.backend.set_down(false);
    for (token, node, _) in &devices {
        let outbox = h.nudge.store.outbox();
        assert!(
            eventually(|| async { outbox.get(node).await.unwrap().is_none() }).await,
            "{token}: delivered after the outage"
        );
    }
    let after: Vec<_> = h.backend.sent()[failed_before..].to_vec();
    for (token, _, _) in &devices {
        let got: Vec<_> = after.iter().filter(|(d, _)| &d.token == token).collect();
        assert_eq!(
            got.len(),
            1,
            "{token}: exactly one push after recovery: {got:?}"
        );
        assert_eq!(
            got[0].1.last_message_body.as_deref(),
            Some("msg 4"),
            "{token}: the newest message"
        );
    }
    h.finish().await;
}

async fn a_restart_resumes_the_outbox(kind_: DbKind) {
    let mut h = Harness::start(kind_).await;
    let (node, secret) = h.register("alice@localhost", "phone", "tok-r").await;
    h.backend.set_down(true);
    assert_eq!(
        h.publish(
            "p1",
            "localhost",
            &node,
            Some(&secret),
            "before the restart"
        )
        .await,
        ok()
    );
    let Harness {
        server,
        conn,
        nudge,
        backend,
        db,
    } = h;
    drop(conn);
    nudge.stop().await;
    assert!(
        db_has_row(&db.url(), &node).await,
        "the push survives the stop"
    );
    backend.set_down(false);
    let sent_before = backend.sent_to("tok-r").len();
    let mut backends = Backends::new();
    backends.insert("conversations", backend.clone());
    let config = test_config(server.port, &db.url(), "");
    let mut nudge = nudge::start(&config, backends).await.unwrap();
    let _conn = server.accept().await;
    assert!(
        nudge
            .wait_for_state(LinkState::Connected, common::STEP)
            .await
    );
    assert!(
        backend.sent_until("tok-r", |s| s.len() > sent_before).await,
        "delivered after the restart"
    );
    let outbox = nudge.store.outbox();
    assert!(eventually(|| async { outbox.get(&node).await.unwrap().is_none() }).await);
    assert_eq!(backend.sent_to("tok-r").len(), sent_before + 1, "once");
    nudge.stop().await;
    db.drop_db().await;
}

async fn db_has_row(url: &str, node: &str) -> bool {
    let store = nudge::store::RegistrationStore::open(url, 1).await.unwrap();
    let found = store.outbox().get(node).await.unwrap().is_some();
    store.close().await;
    found
}

async fn a_slow_provider_is_answered_within_the_bound(kind_: DbKind) {
    let mut h = Harness::start(kind_).await;
    let (node, secret) = h.register("alice@localhost", "phone", "tok-s").await;
    h.backend.set_delay(Duration::from_millis(1500));
    let started = Instant::now();
    assert_eq!(
        h.publish("p1", "localhost", &node, Some(&secret), "slow")
            .await,
        ok()
    );
    let took = started.elapsed();
    // answer_within_ms is 200 by default; allow for the outbox write.
    assert!(
        took < Duration::from_millis(1000),
        "answered after {took:?}"
    );
    // The send finishes in the background and clears its row, once.
    let outbox = h.nudge.store.outbox();
    assert!(eventually(|| async { outbox.get(&node).await.unwrap().is_none() }).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.backend.sent_to("tok-s").len(), 1, "not sent twice");
    h.finish().await;
}

async fn a_burst_becomes_one_push_and_a_trailing_one(kind_: DbKind) {
    let mut h = Harness::start_adjusted(kind_, "[limits]\nper_registration_burst = 100\n", |c| {
        c.dispatch.coalesce_ms = 1000
    })
    .await;
    let (node, secret) = h.register("alice@localhost", "phone", "tok-b").await;
    h.backend.set_delay(Duration::from_millis(100));
    let burst: Vec<_> = (0..20)
        .map(|i| {
            (
                format!("b{i}"),
                node.clone(),
                secret.clone(),
                format!("msg {i}"),
            )
        })
        .collect();
    let answers = publish_all(&mut h, &burst).await;
    assert_eq!(answers.len(), 20);
    assert!(answers.iter().all(|(_, k)| *k == ok()), "{answers:?}");
    let outbox = h.nudge.store.outbox();
    assert!(eventually(|| async { outbox.get(&node).await.unwrap().is_none() }).await);
    let sent = h.backend.sent_to("tok-b");
    assert!(
        sent.len() <= 3,
        "{} provider requests for a burst of 20",
        sent.len()
    );
    assert_eq!(
        sent[0].last_message_body.as_deref(),
        Some("msg 0"),
        "the first is not delayed"
    );
    assert_eq!(
        sent.last().unwrap().last_message_body.as_deref(),
        Some("msg 19"),
        "the newest last"
    );
    h.finish().await;
}

async fn important_is_not_held_behind_silent(kind_: DbKind) {
    let mut h = Harness::start(kind_).await;
    let (node, secret) = h.register("alice@localhost", "phone", "tok-i").await;
    h.backend.set_delay(Duration::from_millis(1000));
    // A silent wake-up (empty body), then a message while it is out.
    let burst = vec![
        ("s1".to_owned(), node.clone(), secret.clone(), String::new()),
        (
            "i1".to_owned(),
            node.clone(),
            secret.clone(),
            "hello".to_owned(),
        ),
    ];
    let started = Instant::now();
    let answers = publish_all(&mut h, &burst).await;
    assert!(answers.iter().all(|(_, k)| *k == ok()), "{answers:?}");
    assert!(
        h.backend
            .sent_until("tok-i", |s| s.iter().any(|n| n.is_important()))
            .await
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the important push went out beside the silent one, not after it"
    );
    h.finish().await;
}

async fn an_important_message_does_not_wait_out_a_backoff(kind_: DbKind) {
    let mut h = Harness::start_adjusted(kind_, "", |c| {
        c.outbox.retry_min_ms = 20_000;
        c.outbox.retry_max_secs = 60;
    })
    .await;
    let (node, secret) = h.register("alice@localhost", "phone", "tok-h").await;
    h.backend.set_down(true);
    assert_eq!(
        h.publish("p1", "localhost", &node, Some(&secret), "one")
            .await,
        ok()
    );
    // The provider is back; the queued push would wait 20 s for its retry.
    h.backend.set_down(false);
    let started = Instant::now();
    assert_eq!(
        h.publish("p2", "localhost", &node, Some(&secret), "two")
            .await,
        ok()
    );
    assert!(
        h.backend
            .sent_until("tok-h", |s| last_body(s) == Some("two"))
            .await,
        "the new message went out without waiting for the backoff"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    h.finish().await;
}

async fn early_tries_during_an_outage_do_not_stretch_the_backoff(kind_: DbKind) {
    let mut h = Harness::start_adjusted(kind_, "", |c| {
        c.outbox.retry_min_ms = 300;
        c.outbox.retry_max_secs = 120;
    })
    .await;
    let (node, secret) = h.register("alice@localhost", "phone", "tok-e").await;
    h.backend.set_down(true);
    // A conversation during the outage: every message tries early, fails.
    for i in 0..12 {
        let body = format!("m{i}");
        assert_eq!(
            h.publish(&format!("p{i}"), "localhost", &node, Some(&secret), &body)
                .await,
            ok()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tries = h.backend.sent_to("tok-e").len();
    assert!(tries > 3, "the messages tried early: {tries}");
    let row = h.nudge.store.outbox().get(&node).await.unwrap().unwrap();
    assert!(
        row.attempts <= 4,
        "early tries counted as attempts: {}",
        row.attempts
    );
    // Provider back: the newest goes out within the backoff of a few
    // scheduled attempts, not one stretched by every early try.
    h.backend.set_down(false);
    assert!(
        h.backend
            .sent_until("tok-e", |s| last_body(s) == Some("m11"))
            .await,
        "delivered after the outage"
    );
    h.finish().await;
}

async fn database_down_is_wait(kind_: DbKind) {
    let mut h = Harness::start(kind_).await;
    let (node, secret) = h.register("alice@localhost", "phone", "tok-d").await;
    h.backend.set_down(true);
    // The outbox cannot be written: never `result`, never a non-wait error.
    sql(&h.db.url(), "ALTER TABLE outbox RENAME TO outbox_away").await;
    assert_eq!(
        h.publish("p1", "localhost", &node, Some(&secret), "x")
            .await,
        ("wait".into(), "internal-server-error".into())
    );
    sql(&h.db.url(), "ALTER TABLE outbox_away RENAME TO outbox").await;
    assert_eq!(
        h.publish("p2", "localhost", &node, Some(&secret), "y")
            .await,
        ok()
    );
    h.finish().await;
}

async fn a_hanging_database_is_answered_wait_by_the_deadline() {
    use sqlx::Connection;
    let mut h = Harness::start_adjusted(DbKind::Postgres, "", |c| {
        c.dispatch.answer_deadline_secs = 1;
    })
    .await;
    let (node, secret) = h.register("alice@localhost", "phone", "tok-h").await;
    h.backend.set_down(true);
    // The outbox is locked by another session: writing the failed push
    // waits (PostgreSQL would wait for ever).
    let mut locker = sqlx::PgConnection::connect(&h.db.url()).await.unwrap();
    let mut tx = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        h.publish("p1", "localhost", &node, Some(&secret), "x")
            .await,
        ("wait".into(), "resource-constraint".into())
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    tx.rollback().await.unwrap();
    h.backend.set_down(false);
    assert_eq!(
        h.publish("p2", "localhost", &node, Some(&secret), "y")
            .await,
        ok()
    );
    h.finish().await;
}

async fn sql(url: &str, statement: &'static str) {
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query(statement).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query(statement).execute(&pool).await.unwrap();
        pool.close().await;
    }
}

async fn rate_limited_pushes_are_deferred_not_dropped(kind_: DbKind) {
    // No coalescing window here, so that only the limit holds the push.
    let mut h = Harness::start_adjusted(
        kind_,
        "[limits]\nper_registration_burst = 1\nper_registration_per_minute = 60\n",
        |c| c.dispatch.coalesce_ms = 0,
    )
    .await;
    let (node, secret) = h.register("alice@localhost", "phone", "tok-l").await;
    assert_eq!(
        h.publish("p1", "localhost", &node, Some(&secret), "one")
            .await,
        ok()
    );
    assert!(h.backend.sent_until("tok-l", |s| s.len() == 1).await);
    let started = Instant::now();
    assert_eq!(
        h.publish("p2", "localhost", &node, Some(&secret), "two")
            .await,
        ok()
    );
    assert!(
        h.nudge.store.outbox().get(&node).await.unwrap().is_some(),
        "deferred"
    );
    assert!(h.backend.sent_until("tok-l", |s| s.len() == 2).await);
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "held until the limit allowed it"
    );
    assert_eq!(
        h.backend.sent_to("tok-l")[1].last_message_body.as_deref(),
        Some("two")
    );
    h.finish().await;
}

/// A row deferred by the per-registration limit is not flushed by the next
/// important publish (as a row backing off from a provider failure is):
/// the limit bounds what reaches the device whatever the publish says.
async fn an_important_publish_does_not_jump_a_rate_limit(kind_: DbKind) {
    // One push every 3 s after the first.
    let mut h = Harness::start_adjusted(
        kind_,
        "[limits]\nper_registration_burst = 1\nper_registration_per_minute = 20\n",
        |c| c.dispatch.coalesce_ms = 0,
    )
    .await;
    let (node, secret) = h.register("alice@localhost", "phone", "tok-j").await;
    assert_eq!(
        h.publish("j1", "localhost", &node, Some(&secret), "one")
            .await,
        ok()
    );
    assert!(h.backend.sent_until("tok-j", |s| s.len() == 1).await);
    for (id, body) in [("j2", "two"), ("j3", "three")] {
        assert_eq!(
            h.publish(id, "localhost", &node, Some(&secret), body).await,
            ok()
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        h.backend.sent_to("tok-j").len(),
        1,
        "the important publish waited for the limit"
    );
    assert!(h.backend.sent_until("tok-j", |s| s.len() == 2).await);
    assert_eq!(
        h.backend.sent_to("tok-j")[1].last_message_body.as_deref(),
        Some("three"),
        "one trailing push with the newest message"
    );
    h.finish().await;
}

async fn queued_pushes_expire_counted(kind_: DbKind) {
    let mut h = Harness::start_with(kind_, "").await;
    let (node, secret) = h.register("alice@localhost", "phone", "down-forever").await;
    // Written already expired: the housekeeping drops and counts it.
    let outbox = h.nudge.store.outbox();
    outbox
        .merge(&node, &Default::default(), None, 0, i64::MAX / 4, 1)
        .await
        .unwrap();
    let _ = secret;
    assert!(
        eventually(|| async { outbox.get(&node).await.unwrap().is_none() }).await,
        "expired row dropped"
    );
    h.finish().await;
}

async fn the_brake_stops_mass_removal(kind_: DbKind) {
    let mut h = Harness::start_with(kind_, "[brake]\ndead_tokens = 2\nwindow_secs = 60\n").await;
    let mut answers = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..4 {
        let (node, secret) = h
            .register("alice@localhost", &format!("d{i}"), &format!("dead-{i}"))
            .await;
        answers.push(
            h.publish(&format!("p{i}"), "localhost", &node, Some(&secret), "x")
                .await,
        );
        nodes.push(node);
    }
    let not_found = ("cancel".to_owned(), "item-not-found".to_owned());
    let held = ("wait".to_owned(), "resource-constraint".to_owned());
    assert_eq!(
        answers,
        vec![
            not_found.clone(),
            not_found.clone(),
            held.clone(),
            held.clone()
        ]
    );
    let store = &h.nudge.store;
    assert!(store.find(&nodes[0]).await.unwrap().is_none());
    assert!(
        store.find(&nodes[2]).await.unwrap().is_some(),
        "kept by the brake"
    );
    assert!(
        store.find(&nodes[3]).await.unwrap().is_some(),
        "kept by the brake"
    );
    let held_rows = store.brake().held(Some("conversations")).await.unwrap();
    assert_eq!(held_rows.len(), 2);
    // The operator releases it (what `nudge brake release` does): dead
    // tokens are removed again.
    store
        .brake()
        .release("conversations", nudge::store::now())
        .await
        .unwrap();
    let (node, secret) = h.register("alice@localhost", "d9", "dead-9").await;
    assert_eq!(
        h.publish("p9", "localhost", &node, Some(&secret), "x")
            .await,
        not_found
    );
    h.finish().await;
}

async fn a_new_token_gets_the_push_instead_of_item_not_found(kind_: DbKind) {
    let mut h = Harness::start_adjusted(kind_, "", |c| c.dispatch.answer_within_ms = 3000).await;
    let (node, secret) = h.register("alice@localhost", "phone", "tok-old").await;
    h.backend.kill_token("tok-old");
    h.backend.set_delay(Duration::from_millis(400));
    // The publish goes out to the old token; while the provider thinks,
    // the device registers again with a new one.
    h.conn
        .send(&publish_iq("p1", "localhost", &node, Some(&secret), "hi"))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.conn
        .send(&register_iq("alice@localhost", "fcm", "phone", "tok-new"))
        .await;
    let mut publish_answer = None;
    for _ in 0..2 {
        let a = h.conn.recv().await;
        if a.get_attr("id") == Some("p1") {
            publish_answer = Some(answer_kind(&a));
        }
    }
    assert_eq!(
        publish_answer,
        Some(ok()),
        "pushed to the new token, not item-not-found"
    );
    assert_eq!(h.backend.sent_to("tok-new").len(), 1);
    let reg = h
        .nudge
        .store
        .find(&node)
        .await
        .unwrap()
        .expect("registration kept");
    assert_eq!(reg.token, "tok-new");
    h.finish().await;
}

/// A [`TestBackend`] that also notes, per token, each push the provider
/// took, and when it was sent (epoch milliseconds).
struct Counting {
    inner: Arc<TestBackend>,
    delivered: Mutex<Vec<(String, i64)>>,
}

impl Counting {
    fn new() -> Arc<Counting> {
        Arc::new(Counting {
            inner: TestBackend::new("fcm"),
            delivered: Mutex::new(Vec::new()),
        })
    }

    fn delivered(&self) -> Vec<(String, i64)> {
        self.delivered.lock().unwrap().clone()
    }

    /// Backends with this one as app `conversations`.
    fn backends(self: &Arc<Self>) -> Backends {
        let mut backends = Backends::new();
        backends.insert("conversations", self.clone());
        backends
    }
}

impl PushBackend for Counting {
    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn send<'a>(&'a self, device: &'a Device, n: &'a Notification) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let at = now_ms();
            let outcome = self.inner.send(device, n).await;
            if matches!(outcome, Outcome::Delivered) {
                self.delivered
                    .lock()
                    .unwrap()
                    .push((device.token.clone(), at));
            }
            outcome
        })
    }
}

/// Pushes taken per token, over several backends.
fn deliveries_per_token(backends: &[&Counting]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for b in backends {
        for (token, _) in b.delivered() {
            *counts.entry(token).or_default() += 1;
        }
    }
    counts
}

async fn open_store(url: &str) -> RegistrationStore {
    let store = RegistrationStore::open(url, 1).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// Rows claimed (by anyone), and the earliest and latest due time.
async fn claim_state(url: &str) -> (i64, Option<i64>, Option<i64>) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let state = sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE claimed_by <> ''), MIN(due_at_ms), MAX(due_at_ms) FROM outbox",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    state
}

/// The store-level contract of claims: the most overdue first, within the
/// limit; an early claim never takes another claimer's live claim but
/// takes a row backing off; a reschedule by a non-claimer leaves the claim
/// alone; a claim lapses when the row comes due again.
async fn claims_are_exclusive_and_lapse(kind_: DbKind) {
    let db = TestDb::new(kind_).await;
    let store = open_store(&db.url()).await;
    let (a, b) = (store.outbox(), store.outbox());
    assert_ne!(a.claimer(), b.claimer(), "each handle is a claimer");
    let t = now_ms();
    let ttl = now() + 3600;
    for i in 0..20 {
        a.merge(
            &format!("n{i:02}"),
            &Notification::default(),
            None,
            i,
            t - 1000 + i,
            ttl,
        )
        .await
        .unwrap();
    }
    // Backing off: due in a minute, nobody's claim.
    a.merge("later", &Notification::default(), None, 0, t + 60_000, ttl)
        .await
        .unwrap();

    let first = a.claim_due(t, t + 5000, 5).await.unwrap();
    let got: BTreeSet<_> = first.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(
        got,
        BTreeSet::from(["n00", "n01", "n02", "n03", "n04"]),
        "the most overdue first, within the limit"
    );
    assert!(first.iter().all(|r| r.due_at_ms == t + 5000));
    let rest = b.claim_due(t, t + 5000, 100).await.unwrap();
    assert_eq!(
        rest.len(),
        15,
        "the other claimer gets the rest, not 'later'"
    );
    assert!(b.claim_due(t, t + 5000, 100).await.unwrap().is_empty());

    let seq = |node: &str| {
        let node = node.to_owned();
        let a = a.clone();
        async move { a.get(&node).await.unwrap().unwrap().seq }
    };
    // An early try on another instance does not take a row that is out.
    let s0 = seq("n00").await;
    assert!(!b.claim("n00", s0, t, t + 5000).await.unwrap());
    assert!(a.claim("n00", s0, t, t + 5000).await.unwrap(), "its own");
    assert!(
        !a.claim("n00", s0 + 1, t, t + 5000).await.unwrap(),
        "merged into"
    );
    // A row backing off is not a claim.
    let sl = seq("later").await;
    assert!(b.claim("later", sl, t, t + 5000).await.unwrap());

    // Another claimer's reschedule or failed attempt leaves the claim.
    a.reschedule("n10", t).await.unwrap();
    a.retry_at("n10", 7, t, "x").await.unwrap();
    let row = a.get("n10").await.unwrap().unwrap();
    assert_eq!((row.due_at_ms, row.attempts), (t + 5000, 0), "left to b");
    b.retry_at("n10", 1, t + 100, "x").await.unwrap();
    let row = a.get("n10").await.unwrap().unwrap();
    assert_eq!((row.due_at_ms, row.attempts), (t + 100, 1), "b released it");
    assert!(a.claim("n10", row.seq, t, t + 5000).await.unwrap());

    // Claims lapse when their rows come due: a claimer that died leaves
    // them to any other after the claim time.
    let lapsed = b.claim_due(t + 10_000, t + 15_000, 100).await.unwrap();
    assert_eq!(lapsed.len(), 21);
    store.close().await;
    db.drop_db().await;
}

/// Two claimers polling at once get disjoint rows, and every due row once.
async fn concurrent_claims_get_disjoint_rows(kind_: DbKind) {
    let db = TestDb::new(kind_).await;
    let store = open_store(&db.url()).await;
    let t = now_ms();
    let ttl = now() + 3600;
    let writer = store.outbox();
    for i in 0..300 {
        writer
            .merge(
                &format!("n{i:03}"),
                &Notification::default(),
                None,
                i,
                t - 1000,
                ttl,
            )
            .await
            .unwrap();
    }
    let claim_all = |outbox: Outbox| async move {
        let mut got = Vec::new();
        let mut calls = 0;
        loop {
            let rows = outbox.claim_due(t, t + 60_000, 7).await.unwrap();
            calls += 1;
            assert!(rows.len() <= 7, "the limit holds: {}", rows.len());
            if rows.is_empty() {
                return (got, calls);
            }
            got.extend(rows.into_iter().map(|r| r.node));
        }
    };
    let one = tokio::spawn(claim_all(store.outbox()));
    let two = tokio::spawn(claim_all(store.outbox()));
    let (one, two) = (one.await.unwrap(), two.await.unwrap());
    eprintln!(
        "claimer 1: {} rows in {} calls; claimer 2: {} rows in {} calls",
        one.0.len(),
        one.1,
        two.0.len(),
        two.1
    );
    let a: BTreeSet<_> = one.0.iter().cloned().collect();
    let b: BTreeSet<_> = two.0.iter().cloned().collect();
    assert_eq!(a.len(), one.0.len(), "no row twice to one claimer");
    assert_eq!(b.len(), two.0.len(), "no row twice to one claimer");
    assert!(
        a.is_disjoint(&b),
        "{:?}",
        a.intersection(&b).collect::<Vec<_>>()
    );
    assert_eq!(a.len() + b.len(), 300, "every due row claimed");
    store.close().await;
    db.drop_db().await;
}

/// Two running instances on one PostgreSQL database, 200 pushes queued
/// while the provider is down: when it is back, every push is delivered
/// exactly once in total.
async fn two_instances_deliver_every_row_once() {
    const NODES: usize = 200;
    let db = TestDb::new(DbKind::Postgres).await;
    // Few deliveries at once, so that each instance takes several passes
    // and the two interleave.
    let adjust = |c: &mut nudge::Config| c.outbox.concurrency = 8;
    let (count_a, count_b) = (Counting::new(), Counting::new());
    let (server, conn, nudge) = start_connected(&db.url(), count_a.backends(), adjust).await;
    let mut h = Harness {
        server,
        conn,
        nudge,
        backend: count_a.inner.clone(),
        db,
    };
    let (_server_b, _conn_b, nudge_b) =
        start_connected(&h.db.url(), count_b.backends(), adjust).await;

    let mut publishes = Vec::new();
    for i in 0..NODES {
        let (node, secret) = h
            .register(&format!("u{i}@localhost"), "phone", &format!("tok-{i}"))
            .await;
        publishes.push((format!("p{i}"), node, secret, format!("msg {i}")));
    }
    count_a.inner.set_down(true);
    count_b.inner.set_down(true);
    let answers = publish_all(&mut h, &publishes).await;
    assert!(answers.iter().all(|(_, k)| *k == ok()), "{answers:?}");
    let outbox = h.nudge.store.outbox();
    assert_eq!(outbox.summary().await.unwrap().queued, NODES as i64);

    // The provider comes back, a little slow.
    for b in [&count_a, &count_b] {
        b.inner.set_delay(Duration::from_millis(30));
        b.inner.set_down(false);
    }
    assert!(
        eventually_within(Duration::from_secs(60), || async {
            outbox.summary().await.unwrap().queued == 0
        })
        .await,
        "every row delivered: {:?} left",
        outbox.summary().await.unwrap()
    );
    // Room for a second send of a row, if there were one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = deliveries_per_token(&[&count_a, &count_b]);
    for i in 0..NODES {
        let token = format!("tok-{i}");
        assert_eq!(counts.get(&token), Some(&1), "{token}: delivered once");
    }
    let (by_a, by_b) = (count_a.delivered().len(), count_b.delivered().len());
    eprintln!("delivered by instance A: {by_a}, by instance B: {by_b}");
    assert_eq!(by_a + by_b, NODES);
    assert!(by_a > 0 && by_b > 0, "both instances delivered");
    nudge_b.stop().await;
    h.finish().await;
}

/// An instance that stops with rows it claimed (their pushes out, never
/// answered): another instance delivers them once their claim time is
/// over, and not before, not even for an important publish that came to
/// it meanwhile (an early try leaves another instance's claim alone).
async fn a_stopped_instance_s_claims_are_delivered_by_another() {
    const NODES: usize = 20;
    let db = TestDb::new(DbKind::Postgres).await;
    let url = db.url();
    // Registrations with a due row each, written before any instance runs.
    let store = open_store(&url).await;
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let reg = store
            .register(&common::registration(
                &format!("u{i}@localhost"),
                "conversations",
                "phone",
                &format!("tok-{i}"),
            ))
            .await
            .unwrap();
        let summary = Notification {
            last_message_body: Some(format!("msg {i}")),
            ..Default::default()
        };
        store
            .outbox()
            .merge(&reg.node, &summary, None, 1, now_ms(), now() + 3600)
            .await
            .unwrap();
        nodes.push((reg.node.clone(), reg.secret.clone().unwrap_or_default()));
    }
    store.close().await;

    // A claims them all and sends them to a provider that never answers,
    // with a long push timeout: its claims (push timeout + 2 s) hold until
    // well after it has stopped.
    let count_a = Counting::new();
    count_a.inner.set_delay(Duration::from_secs(3600));
    let (_server_a, conn_a, nudge_a) = start_connected(&url, count_a.backends(), |c| {
        c.dispatch.push_timeout_secs = 12
    })
    .await;
    assert!(
        eventually(|| async { count_a.inner.sent().len() == NODES }).await,
        "A sent every row: {}",
        count_a.inner.sent().len()
    );
    let (claimed, earliest_end, _) = claim_state(&url).await;
    assert_eq!(claimed, NODES as i64, "every row out is claimed");
    let earliest_end = earliest_end.unwrap();

    // B starts while A's pushes are out. An important message for one of
    // the nodes reaches B, which knows the node has a row (its worker reads
    // the outbox's nodes at start-up; before that a publish would go out
    // fresh, since coalescing is per instance) and tries the row early: it
    // must not take the row A is sending.
    let count_b = Counting::new();
    let (_server_b, mut conn_b, nudge_b) = start_connected(&url, count_b.backends(), |_| {}).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (node0, secret0) = &nodes[0];
    let answer = conn_b
        .request(&publish_iq(
            "late",
            "localhost",
            node0,
            Some(secret0),
            "newest",
        ))
        .await;
    assert_eq!(answer_kind(&answer), ok());

    drop(conn_a);
    nudge_a.stop().await;
    // Had A's sends timed out before it stopped, A would have released its
    // claims itself (rightly), and B could deliver before `earliest_end`.
    let stopped = now_ms();
    assert!(
        stopped + 2000 < earliest_end,
        "A stopped at {stopped}, after its sends timed out ({earliest_end} - 2 s): too slow a machine for this test"
    );
    let outbox = nudge_b.store.outbox();
    assert!(
        eventually_within(Duration::from_secs(40), || async {
            outbox.summary().await.unwrap().queued == 0
        })
        .await,
        "B delivered A's claimed rows: {:?} left",
        outbox.summary().await.unwrap()
    );
    let delivered = count_b.delivered();
    let counts = deliveries_per_token(&[&count_b]);
    for i in 0..NODES {
        let token = format!("tok-{i}");
        assert_eq!(counts.get(&token), Some(&1), "{token}: delivered once by B");
    }
    assert!(
        delivered.iter().all(|(_, at)| *at >= earliest_end),
        "B waited for A's claims to end ({earliest_end}): {delivered:?}"
    );
    assert_eq!(
        last_body(&count_b.inner.sent_to("tok-0")),
        Some("newest"),
        "the row carries what B merged into it"
    );
    assert!(count_a.delivered().is_empty());
    nudge_b.stop().await;
    db.drop_db().await;
}
