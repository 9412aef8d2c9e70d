//! Nothing lost: the outbox, coalescing, rate limits, the removal brake and
//! answers that match what happened, through the running service (fake
//! XMPP server → Nudge → recording backend), on SQLite and PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{DbKind, Harness, answer_kind, eventually, publish_iq, register_iq, test_config};
use nudge::dispatch::Backends;
use nudge::xmpp::stream::LinkState;

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
    queued_pushes_expire_counted,
    the_brake_stops_mass_removal,
    a_new_token_gets_the_push_instead_of_item_not_found,
);

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

async fn queued_pushes_expire_counted(kind_: DbKind) {
    let mut h = Harness::start_with(kind_, "").await;
    let (node, secret) = h.register("alice@localhost", "phone", "down-forever").await;
    // Written already expired: the housekeeping drops and counts it.
    let outbox = h.nudge.store.outbox();
    outbox
        .merge(&node, &Default::default(), 0, i64::MAX / 4, 1)
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
