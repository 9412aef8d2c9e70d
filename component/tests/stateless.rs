//! The stateless modes end to end (fake XMPP server → Nudge → recording
//! backends), on SQLite and PostgreSQL: Monal's fpush publishes (node = the
//! token, `pushModule`) and MongooseIM's (`device_id`, `service`, options)
//! are pushed with nothing registered, through the same dispatcher as
//! registered devices: rate limits per token and per publishing domain
//! defer and merge, an outage queues across a restart (the outbox row
//! carries the device), a dead token is answered `item-not-found`, and
//! neither mode works unless configured.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    DbKind, FakeServer, ServerConn, TestBackend, TestDb, answer_kind, eventually, fixture,
    test_config,
};
use nudge::Running;
use nudge::dispatch::Backends;
use nudge::xmpp::stream::LinkState;
use nudge_plugins::{Environment, PushOptions};

on_both_databases!(
    an_fpush_publish_is_pushed_with_nothing_registered,
    a_mongooseim_publish_carries_its_options,
    a_second_push_within_the_token_interval_is_merged_and_delivered_after_it,
    the_publishing_domain_is_limited,
    modes_not_configured_are_item_not_found,
    an_outage_is_bridged_across_a_restart,
    a_dead_token_is_item_not_found,
);

/// Both modes on: Monal's modules for app `monal` (an APNs app), MongooseIM's
/// `apns` service on `monal` and `fcm` on `conversations`.
const BOTH_MODES: &str = "\
[dialects.fpush.modules]
monal = ['monalProdiOS', 'monalAlpha']
[dialects.mongooseim]
apns = 'monal'
fcm = 'conversations'
";

/// The apps the test configurations name (the backends are the recording
/// ones; these keys are only parsed).
const APPS: &str = "\
[apps.monal]
provider = 'apns'
topic = 'org.example.monal'
endpoint = 'sandbox'
token = { key_path = '/dev/null', key_id = 'K', team_id = 'T' }
[apps.conversations]
provider = 'fcm'
service_account_path = '/dev/null'
";

/// A running Nudge with recording backends for `monal` and `conversations`.
struct Stateless {
    server: FakeServer,
    conn: ServerConn,
    nudge: Running,
    monal: Arc<TestBackend>,
    conversations: Arc<TestBackend>,
    db: TestDb,
    extra: String,
}

impl Stateless {
    async fn start(kind: DbKind, dialects: &str) -> Stateless {
        let server = FakeServer::start().await;
        let db = TestDb::new(kind).await;
        let (monal, conversations) = (TestBackend::new("apns"), TestBackend::new("fcm"));
        let extra = format!("{APPS}{dialects}");
        let (conn, nudge) = Self::connect(&server, &db, &extra, &monal, &conversations).await;
        Stateless {
            server,
            conn,
            nudge,
            monal,
            conversations,
            db,
            extra,
        }
    }

    async fn connect(
        server: &FakeServer,
        db: &TestDb,
        extra: &str,
        monal: &Arc<TestBackend>,
        conversations: &Arc<TestBackend>,
    ) -> (ServerConn, Running) {
        let mut backends = Backends::new();
        backends.insert("monal", monal.clone());
        backends.insert("conversations", conversations.clone());
        let config = test_config(server.port, &db.url(), extra);
        let mut nudge = nudge::start(&config, backends).await.unwrap();
        let conn = server.accept().await;
        assert!(
            nudge
                .wait_for_state(LinkState::Connected, common::STEP)
                .await
        );
        (conn, nudge)
    }

    /// Stops the instance, runs `between`, and starts another on the same
    /// database.
    async fn restart(self, between: impl AsyncFnOnce(&TestDb)) -> Stateless {
        let Stateless {
            server,
            conn,
            nudge,
            monal,
            conversations,
            db,
            extra,
        } = self;
        drop(conn);
        nudge.stop().await;
        between(&db).await;
        let (conn, nudge) = Self::connect(&server, &db, &extra, &monal, &conversations).await;
        Stateless {
            server,
            conn,
            nudge,
            monal,
            conversations,
            db,
            extra,
        }
    }

    /// Monal's publish (fixture `monal-publish-fpush.xml`) from `domain`
    /// for `token` with `module`; the answer's `(type, condition)`.
    async fn fpush(
        &mut self,
        id: &str,
        domain: &str,
        token: &str,
        module: &str,
        body: &str,
    ) -> (String, String) {
        let xml = fixture("monal-publish-fpush.xml", token, "")
            .replace("{ID}", id)
            .replace("{DOMAIN}", domain)
            .replace("{MODULE}", module)
            .replace("{BODY}", body);
        answer_kind(&self.conn.request(&xml).await)
    }

    /// MongooseIM's publish (fixture `mongooseim-publish.xml`) from
    /// `domain` to `node` for `token` of `service`.
    async fn mongooseim(
        &mut self,
        id: &str,
        domain: &str,
        node: &str,
        service: &str,
        token: &str,
    ) -> (String, String) {
        let xml = fixture("mongooseim-publish.xml", node, "")
            .replace("{ID}", id)
            .replace("{DOMAIN}", domain)
            .replace("{SERVICE}", service)
            .replace("{TOKEN}", token)
            .replace("{BODY}", "Hi!");
        answer_kind(&self.conn.request(&xml).await)
    }

    async fn has_outbox_row(&self, node: &str) -> bool {
        self.nudge.store.outbox().get(node).await.unwrap().is_some()
    }

    async fn finish(self) {
        self.nudge.stop().await;
        self.db.drop_db().await;
    }
}

fn ok() -> (String, String) {
    ("result".into(), String::new())
}

fn item_not_found() -> (String, String) {
    ("cancel".into(), "item-not-found".into())
}

fn bad_request() -> (String, String) {
    ("modify".into(), "bad-request".into())
}

/// An APNs-like token (64 hex digits) unique to `n`.
fn token(n: u32) -> String {
    format!("{n:08x}{}", "ab".repeat(28))
}

async fn an_fpush_publish_is_pushed_with_nothing_registered(kind: DbKind) {
    let mut s = Stateless::start(kind, BOTH_MODES).await;
    let (prod, sandbox) = (token(1), token(2));
    assert_eq!(
        s.fpush("p1", "monal.example", &prod, "monalProdiOS", "Hello")
            .await,
        ok()
    );
    assert_eq!(
        s.fpush("p2", "monal.example", &sandbox, "monalAlpha-sandbox", "Hi")
            .await,
        ok()
    );
    assert!(s.monal.sent_until(&sandbox, |n| n.len() == 1).await);
    let sent = s.monal.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let (device, notification) = &sent[0];
    assert_eq!(
        (
            device.token.as_str(),
            device.app.as_str(),
            device.environment
        ),
        (prod.as_str(), "monal", None)
    );
    assert_eq!(device.account.as_deref(), Some("monal.example"));
    assert_eq!(notification.last_message_body.as_deref(), Some("Hello"));
    assert_eq!(sent[1].0.environment, Some(Environment::Sandbox));
    assert!(s.conversations.sent().is_empty());
    // Nothing was stored.
    assert!(s.nudge.store.find(&prod).await.unwrap().is_none());
    assert!(!s.has_outbox_row(&prod).await);
    s.finish().await;
}

async fn a_mongooseim_publish_carries_its_options(kind: DbKind) {
    let mut s = Stateless::start(kind, BOTH_MODES).await;
    let apns = token(3);
    assert_eq!(
        s.mongooseim("m1", "mongoose.example", "node-a", "apns", &apns)
            .await,
        ok()
    );
    assert_eq!(
        s.mongooseim("m2", "mongoose.example", "node-b", "fcm", "fcm-token-1")
            .await,
        ok()
    );
    assert!(s.monal.sent_until(&apns, |n| n.len() == 1).await);
    assert!(
        s.conversations
            .sent_until("fcm-token-1", |n| n.len() == 1)
            .await
    );
    let (device, notification) = s.monal.sent().remove(0);
    assert_eq!(device.app, "monal");
    assert_eq!(device.environment, Some(Environment::Production));
    assert_eq!(
        device.options,
        PushOptions {
            topic: Some("org.example.monal".into()),
            silent: Some(false),
            high_priority: Some(true),
            sound: Some("bell.caf".into()),
            mutable_content: Some(true),
            ttl_secs: Some(3600),
        }
    );
    assert_eq!(notification.last_message_body.as_deref(), Some("Hi!"));
    assert_eq!(s.conversations.sent()[0].0.app, "conversations");
    // A token the provider's format refuses can never work: bad-request.
    assert_eq!(
        s.mongooseim("m3", "mongoose.example", "node-c", "fcm", "bad token")
            .await,
        bad_request()
    );
    s.finish().await;
}

async fn a_second_push_within_the_token_interval_is_merged_and_delivered_after_it(kind: DbKind) {
    let mut s = Stateless::start(
        kind,
        &format!("{BOTH_MODES}[dialects.fpush.limits]\ntoken_interval_secs = 2\n"),
    )
    .await;
    let t = token(4);
    assert_eq!(
        s.fpush("p1", "monal.example", &t, "monalProdiOS", "one")
            .await,
        ok()
    );
    assert!(s.monal.sent_until(&t, |n| n.len() == 1).await);
    let first = Instant::now();
    for (id, body) in [("p2", "two"), ("p3", "three")] {
        assert_eq!(
            s.fpush(id, "monal.example", &t, "monalProdiOS", body).await,
            ok(),
            "answered result, never an error"
        );
    }
    assert!(s.has_outbox_row(&t).await, "deferred through the outbox");
    assert!(s.monal.sent_until(&t, |n| n.len() == 2).await);
    assert!(
        first.elapsed() >= Duration::from_millis(1500),
        "held until the token's interval passed: {:?}",
        first.elapsed()
    );
    let sent = s.monal.sent_to(&t);
    assert_eq!(sent.len(), 2, "the two merged into one push");
    assert_eq!(sent[1].last_message_body.as_deref(), Some("three"));
    assert!(eventually(|| async { !s.has_outbox_row(&t).await }).await);
    // A token of its own is not held.
    let other = token(5);
    assert_eq!(
        s.fpush("p4", "monal.example", &other, "monalProdiOS", "x")
            .await,
        ok()
    );
    assert!(s.monal.sent_until(&other, |n| n.len() == 1).await);
    s.finish().await;
}

async fn the_publishing_domain_is_limited(kind: DbKind) {
    let mut s = Stateless::start(
        kind,
        &format!(
            "{BOTH_MODES}[dialects.fpush.limits]\nper_domain_burst = 2\nper_domain_per_minute = 60\n"
        ),
    )
    .await;
    for n in 10..12 {
        assert_eq!(
            s.fpush(
                &format!("p{n}"),
                "busy.example",
                &token(n),
                "monalProdiOS",
                "x"
            )
            .await,
            ok()
        );
    }
    assert!(s.monal.sent_until(&token(11), |n| n.len() == 1).await);
    let started = Instant::now();
    let third = token(12);
    assert_eq!(
        s.fpush("p12", "busy.example", &third, "monalProdiOS", "x")
            .await,
        ok()
    );
    assert!(s.has_outbox_row(&third).await, "deferred, not dropped");
    // Another server's publishes are not held by this one's.
    let elsewhere = token(13);
    assert_eq!(
        s.fpush("p13", "quiet.example", &elsewhere, "monalProdiOS", "x")
            .await,
        ok()
    );
    assert!(s.monal.sent_until(&elsewhere, |n| n.len() == 1).await);
    assert!(s.monal.sent_until(&third, |n| n.len() == 1).await);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "held until the domain's rate allowed it: {:?}",
        started.elapsed()
    );
    s.finish().await;
}

async fn modes_not_configured_are_item_not_found(kind: DbKind) {
    let mut s = Stateless::start(kind, "").await;
    let t = token(20);
    assert_eq!(
        s.fpush("p1", "monal.example", &t, "monalProdiOS", "x")
            .await,
        item_not_found()
    );
    assert_eq!(
        s.mongooseim("m1", "mongoose.example", "node-a", "apns", &t)
            .await,
        item_not_found()
    );
    s.finish().await;

    // fpush on for one app, MongooseIM for APNs only: what they do not
    // name is not enabled.
    let mut s = Stateless::start(
        kind,
        "[dialects.fpush.modules]\nmonal = ['monalProdiOS']\n[dialects.mongooseim]\napns = 'monal'\n",
    )
    .await;
    assert_eq!(
        s.fpush("p2", "monal.example", &t, "quicksyProdiOS", "x")
            .await,
        item_not_found()
    );
    assert_eq!(
        s.mongooseim("m2", "mongoose.example", "node-b", "fcm", "fcm-token")
            .await,
        item_not_found()
    );
    // A plain publish for an unknown node (no default module) is still
    // an unknown node.
    let plain = common::publish_iq("p3", "monal.example", &t, None, "x");
    assert_eq!(answer_kind(&s.conn.request(&plain).await), item_not_found());
    // A module it names with a token its provider refuses: bad-request.
    assert_eq!(
        s.fpush("p4", "monal.example", "not-a-token!", "monalProdiOS", "x")
            .await,
        ok(),
        "the recording backend takes any printable token"
    );
    assert_eq!(
        s.fpush("p5", "monal.example", "two words", "monalProdiOS", "x")
            .await,
        bad_request()
    );
    assert!(s.monal.sent_to(&t).is_empty());
    assert!(s.conversations.sent().is_empty());
    s.finish().await;
}

async fn an_outage_is_bridged_across_a_restart(kind: DbKind) {
    let mut s = Stateless::start(kind, BOTH_MODES).await;
    let (t, m) = (token(30), token(31));
    s.monal.set_down(true);
    assert_eq!(
        s.fpush("p1", "monal.example", &t, "monalAlpha-sandbox", "kept")
            .await,
        ok()
    );
    assert_eq!(
        s.mongooseim("m1", "mongoose.example", "node-m", "apns", &m)
            .await,
        ok()
    );
    assert!(s.has_outbox_row(&t).await && s.has_outbox_row("node-m").await);
    let sent_before = s.monal.sent().len();
    let monal = s.monal.clone();
    let s = s
        .restart(async |db: &TestDb| {
            // The rows carry their devices: nothing else knows them.
            let store = nudge::store::RegistrationStore::open(&db.url(), 1)
                .await
                .unwrap();
            let row = store.outbox().get(&t).await.unwrap().expect("queued");
            let device = row.device.expect("the device is kept").device();
            assert_eq!(
                (device.token.as_str(), device.environment),
                (t.as_str(), Some(Environment::Sandbox))
            );
            let row = store.outbox().get("node-m").await.unwrap().expect("queued");
            let device = row.device.expect("the device is kept").device();
            assert_eq!(device.options.ttl_secs, Some(3600));
            store.close().await;
            monal.set_down(false);
        })
        .await;
    assert!(s.monal.sent_until(&t, |n| n.len() >= 2).await);
    assert!(s.monal.sent_until(&m, |n| n.len() >= 2).await);
    let delivered: Vec<_> = s.monal.sent().into_iter().skip(sent_before).collect();
    let to_t = delivered.iter().find(|(d, _)| d.token == t).expect("fpush");
    assert_eq!(to_t.0.environment, Some(Environment::Sandbox));
    assert_eq!(to_t.0.app, "monal");
    assert_eq!(to_t.1.last_message_body.as_deref(), Some("kept"));
    let to_m = delivered
        .iter()
        .find(|(d, _)| d.token == m)
        .expect("mongooseim");
    assert_eq!(to_m.0.options.sound.as_deref(), Some("bell.caf"));
    assert_eq!(to_m.0.environment, Some(Environment::Production));
    assert!(
        eventually(|| async { !s.has_outbox_row(&t).await && !s.has_outbox_row("node-m").await })
            .await
    );
    s.finish().await;
}

async fn a_dead_token_is_item_not_found(kind: DbKind) {
    let mut s = Stateless::start(kind, BOTH_MODES).await;
    let t = token(40);
    s.monal.kill_token(&t);
    assert_eq!(
        s.fpush("p1", "monal.example", &t, "monalProdiOS", "x")
            .await,
        item_not_found(),
        "the server disables the node"
    );
    s.conversations.kill_token("fcm-dead");
    assert_eq!(
        s.mongooseim("m1", "mongoose.example", "node-d", "fcm", "fcm-dead")
            .await,
        item_not_found()
    );
    // Found dead by a retry: the row is dropped.
    let late = token(41);
    s.monal.set_down(true);
    assert_eq!(
        s.fpush("p2", "monal.example", &late, "monalProdiOS", "x")
            .await,
        ok()
    );
    assert!(s.has_outbox_row(&late).await);
    s.monal.kill_token(&late);
    s.monal.set_down(false);
    assert!(eventually(|| async { !s.has_outbox_row(&late).await }).await);
    assert!(s.monal.sent_to(&late).len() >= 2, "tried again, found dead");
    s.finish().await;
}
