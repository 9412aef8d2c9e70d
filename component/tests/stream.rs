//! The component stream against a fake XMPP server: handshake, reconnect,
//! hostile input, the stanzas every component must answer, and a graceful
//! stop.

mod common;

use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use common::{DbKind, FakeServer, Harness, STEP, ServerConn, answer_kind, publish_iq, start_on};
use nudge::dispatch::Backends;
use nudge::xmpp::limits::MAX_TEXT;
use nudge::xmpp::stream::{LinkState, StopReason};
use nudge_plugins::{BoxFuture, Device, Notification, Outcome, PushBackend};

#[tokio::test]
async fn handshake_failure_is_not_retried_in_a_tight_loop() {
    let server = FakeServer::start().await;
    let (mut nudge, _dir) = start_on(server.port, Backends::new(), |_| {}).await;
    let (mut conn, _, _) = server.accept_until_handshake().await;
    conn.send("<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Given token does not match calculated token</text></stream:error></stream:stream>").await;
    drop(conn);
    assert!(nudge.wait_for_state(LinkState::AuthFailed, STEP).await);
    // The first retry after a refused secret waits 5 s.
    assert!(
        server
            .try_accept_tcp(Duration::from_secs(3))
            .await
            .is_none(),
        "reconnected within 3 s after not-authorized"
    );
    nudge.stop().await;
}

#[tokio::test]
async fn reconnects_within_two_seconds_and_keeps_working() {
    let server = FakeServer::start().await;
    let backend = common::TestBackend::new("fcm");
    let mut backends = Backends::new();
    backends.insert("conversations", backend.clone());
    let (mut nudge, _dir) = start_on(server.port, backends, |_| {}).await;
    let mut conn = server.accept().await;
    let reg = conn
        .request(&common::register_iq("alice@localhost", "fcm", "d", "tok"))
        .await;
    assert_eq!(answer_kind(&reg).0, "result");
    drop(conn);
    let dropped = Instant::now();
    let mut conn = server.accept().await;
    assert!(
        dropped.elapsed() < Duration::from_secs(2),
        "took {:?}",
        dropped.elapsed()
    );
    assert!(nudge.wait_for_state(LinkState::Connected, STEP).await);
    let regs = nudge.store.list(None, 10).await.unwrap();
    let a = conn
        .request(&publish_iq(
            "p1",
            "localhost",
            &regs[0].node,
            regs[0].secret.as_deref(),
            "hi",
        ))
        .await;
    assert_eq!(answer_kind(&a).0, "result");
    assert_eq!(backend.sent().len(), 1);
    nudge.stop().await;
}

#[tokio::test]
async fn a_server_that_stays_away_is_retried_until_it_returns() {
    // Bind a port, then free it: the component finds nobody there. On
    // 127.0.0.2, where no other test listens, so that no parallel test's
    // ephemeral listener can take the port meanwhile.
    let probe = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let (nudge, _dir) = start_on(port, Backends::new(), |c| {
        c.component.host = "127.0.0.2".into()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.2", port))
        .await
        .unwrap();
    let returned = Instant::now();
    let accepted = tokio::time::timeout(Duration::from_secs(3), listener.accept()).await;
    assert!(
        accepted.is_ok(),
        "no reconnection within 3 s of the server's return"
    );
    assert!(returned.elapsed() <= Duration::from_millis(1500));
    // Mid-handshake (this side never answers), a stop does not wait for
    // the 10 s handshake timeout. (Bound with room for a loaded CI machine:
    // 1.8 s was seen there with other builds running.)
    let stopping = Instant::now();
    nudge.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "{:?}",
        stopping.elapsed()
    );
}

/// Sends `bad` and expects the component to close with `condition`, then
/// to come back on a new connection that still works.
async fn closes_with(bad: &[u8], condition: &str) {
    let mut h = Harness::start(DbKind::Sqlite).await;
    h.conn.send_lossy(bad).await;
    assert_eq!(h.conn.expect_close().await.as_deref(), Some(condition));
    let mut conn = h.server.accept().await;
    let a = conn
        .request("<iq id='ping1' type='get' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(answer_kind(&a).0, "result");
    h.conn = conn;
    h.finish().await;
}

const PING: &str = "<iq id='ping-after' type='get' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>";

/// The stream is still up: a ping on the same connection is answered.
async fn still_answers(conn: &mut ServerConn) {
    let a = conn.request(PING).await;
    assert_eq!(answer_kind(&a).0, "result");
}

#[tokio::test]
async fn a_70_kb_publish_is_pushed_with_its_body_cut() {
    let mut h = Harness::start(DbKind::Sqlite).await;
    let (node, secret) = h.register("alice@localhost", "d", "tok").await;
    // ejabberd with include_body: a 70 KB message body.
    let kind = h
        .publish(
            "big",
            "localhost",
            &node,
            Some(&secret),
            &"a".repeat(70 * 1024),
        )
        .await;
    assert_eq!(kind.0, "result", "{kind:?}");
    // 17 KB of '<' arrive escaped, as 68 KB.
    let kind = h
        .publish(
            "lt",
            "localhost",
            &node,
            Some(&secret),
            &"&lt;".repeat(17 * 1024),
        )
        .await;
    assert_eq!(kind.0, "result", "{kind:?}");
    let sent = h.backend.sent();
    assert_eq!(sent.len(), 2);
    let body = |i: usize| sent[i].1.last_message_body.clone().unwrap_or_default();
    assert_eq!(body(0), "a".repeat(MAX_TEXT));
    assert_eq!(body(1), "<".repeat(MAX_TEXT / 4));
    still_answers(&mut h.conn).await;
    h.finish().await;
}

#[tokio::test]
async fn a_5_mb_publish_is_answered_and_the_stream_stays_up() {
    let mut h = Harness::start(DbKind::Sqlite).await;
    let (node, secret) = h.register("alice@localhost", "d", "tok").await;
    // Over the 4 MiB default cap: node and secret check out, so the push
    // goes out as a plain wake-up.
    let huge = "&apos;".repeat(5 * 1024 * 1024 / 6 + 1000);
    let kind = h
        .publish("huge", "localhost", &node, Some(&secret), &huge)
        .await;
    assert_eq!(kind.0, "result", "{kind:?}");
    let sent = h.backend.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].1,
        nudge_plugins::Notification::default(),
        "a plain wake-up"
    );
    // An unknown node, or a wrong secret, in an oversize publish: `wait`,
    // so that the server disables nothing.
    let kind = h
        .publish(
            "huge-unknown",
            "localhost",
            "no-such-node",
            Some(&secret),
            &huge,
        )
        .await;
    assert_eq!(kind, ("wait".into(), "resource-constraint".into()));
    let kind = h
        .publish("huge-forged", "localhost", &node, Some("wrong"), &huge)
        .await;
    assert_eq!(kind, ("wait".into(), "resource-constraint".into()));
    // Any other oversize iq: `wait` too.
    let a = h
        .conn
        .request(&format!(
            "<iq id='huge-get' type='get' from='localhost' to='push.localhost'><query xmlns='http://jabber.org/protocol/disco#info'><x>{huge}</x></query></iq>"
        ))
        .await;
    assert_eq!(
        answer_kind(&a),
        ("wait".into(), "resource-constraint".into())
    );
    // The same connection goes on: the next publish is an ordinary one.
    let kind = h
        .publish("next", "localhost", &node, Some(&secret), "hello")
        .await;
    assert_eq!(kind.0, "result");
    assert_eq!(
        h.backend.sent()[1].1.last_message_body.as_deref(),
        Some("hello")
    );
    h.finish().await;
}

#[tokio::test]
async fn huge_text_without_markup_does_not_close_the_stream() {
    // 10 MB of text inside one element of a message: read to its end
    // without buffering it; messages are never answered.
    let mut h = Harness::start(DbKind::Sqlite).await;
    let mut bad = b"<message from='localhost' to='push.localhost'><body>".to_vec();
    bad.extend(std::iter::repeat_n(b'y', 10 * 1024 * 1024));
    bad.extend(b"</body></message>");
    h.conn.send_lossy(&bad).await;
    still_answers(&mut h.conn).await;
    h.finish().await;
}

#[tokio::test]
async fn deep_nesting_does_not_close_the_stream() {
    let mut h = Harness::start(DbKind::Sqlite).await;
    let deep = format!(
        "<message from='localhost' to='push.localhost'>{}{}</message>",
        "<a>".repeat(100_000),
        "</a>".repeat(100_000)
    );
    h.conn.send(&deep).await;
    still_answers(&mut h.conn).await;
    h.finish().await;
}

#[tokio::test]
async fn doctype_is_restricted_xml() {
    closes_with(b"<!DOCTYPE x [<!ENTITY a 'b'>]>", "restricted-xml").await;
}

#[tokio::test]
async fn processing_instruction_is_restricted_xml() {
    closes_with(b"<?evil x?>", "restricted-xml").await;
}

#[tokio::test]
async fn unknown_entity_is_restricted_xml() {
    closes_with(
        b"<message from='localhost'><body>&lol;</body></message>",
        "restricted-xml",
    )
    .await;
}

#[tokio::test]
async fn malformed_xml_closes_the_stream() {
    closes_with(b"<iq id='1' type='get'></message>", "not-well-formed").await;
}

#[tokio::test]
async fn the_stanza_after_a_bad_one_is_still_answered() {
    let mut h = Harness::start(DbKind::Sqlite).await;
    let (node, secret) = h.register("alice@localhost", "d", "tok").await;
    // A publish without a node, a publish without notification, an iq
    // without payload, an unknown type, then a good publish: each is
    // answered, in one TCP write.
    let batch = format!(
        "<iq id='b1' type='set' from='localhost' to='push.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish><item/></publish></pubsub></iq>\
         <iq id='b2' type='set' from='localhost' to='push.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item/></publish></pubsub></iq>\
         <iq id='b3' type='get' from='localhost' to='push.localhost'/>\
         <iq id='b4' type='fetch' from='localhost' to='push.localhost'><x xmlns='y'/></iq>\
         {}",
        publish_iq("good", "localhost", &node, Some(&secret), "after")
    );
    h.conn.send(&batch).await;
    let mut answers = std::collections::HashMap::new();
    for _ in 0..5 {
        let el = h.conn.recv().await;
        answers.insert(el.get_attr("id").unwrap().to_owned(), answer_kind(&el));
    }
    for id in ["b1", "b2", "b3", "b4"] {
        assert_eq!(answers[id], ("modify".into(), "bad-request".into()), "{id}");
    }
    assert_eq!(answers["good"].0, "result");
    h.finish().await;
}

#[tokio::test]
async fn answers_disco_ping_and_unknown_requests() {
    let mut h = Harness::start(DbKind::Sqlite).await;
    // disco#info exactly as Prosody delivered a client's request.
    let info = h
        .conn
        .request(&common::fixture("prosody-disco-info.xml", "", ""))
        .await;
    assert_eq!(info.get_attr("to"), Some("alice@localhost/phone"));
    let q = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    let identity = q
        .get_child("identity", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert_eq!(identity.get_attr("category"), Some("pubsub"));
    assert_eq!(identity.get_attr("type"), Some("push"));
    let features: Vec<_> = q
        .children_named("feature", "http://jabber.org/protocol/disco#info")
        .filter_map(|f| f.get_attr("var"))
        .collect();
    for f in [
        "urn:xmpp:push:0",
        "http://jabber.org/protocol/commands",
        "http://jabber.org/protocol/disco#info",
    ] {
        assert!(features.contains(&f), "{f} missing from {features:?}");
    }
    let items = h
        .conn
        .request("<iq id='i1' type='get' from='alice@localhost/phone' to='push.localhost'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>")
        .await;
    let nodes: Vec<_> = items
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .unwrap()
        .children
        .iter()
        .filter_map(|i| i.get_attr("node").map(str::to_owned))
        .collect();
    for n in [
        "register-push-conversations",
        "unregister-push-conversations",
        "register-push-fcm",
        "unregister-push-fcm",
    ] {
        assert!(nodes.iter().any(|x| x == n), "{n} missing from {nodes:?}");
    }
    let ping = h
        .conn
        .request("<iq id='p' type='get' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(answer_kind(&ping).0, "result");
    for (id, kind) in [("u1", "get"), ("u2", "set")] {
        let a = h
            .conn
            .request(&format!("<iq id='{id}' type='{kind}' from='localhost' to='push.localhost'><vcard xmlns='vcard-temp'/></iq>"))
            .await;
        assert_eq!(
            answer_kind(&a),
            ("cancel".into(), "service-unavailable".into())
        );
    }
    h.finish().await;
}

#[tokio::test]
async fn results_errors_messages_and_presence_are_never_answered() {
    let mut h = Harness::start(DbKind::Sqlite).await;
    h.conn
        .send(
            "<iq id='r' type='result' from='localhost' to='push.localhost'/>\
             <iq id='e' type='error' from='localhost' to='push.localhost'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>\
             <message from='bob@localhost/x' to='push.localhost'><body>hi</body></message>\
             <message type='error' from='bob@localhost/x' to='push.localhost'/>\
             <presence from='bob@localhost/x' to='push.localhost' type='subscribe'/>\
             <presence from='bob@localhost/x' to='push.localhost'/>",
        )
        .await;
    assert!(
        h.conn
            .recv_within(Duration::from_millis(700))
            .await
            .is_none()
    );
    // …and the stream is still fine.
    let a = h
        .conn
        .request("<iq id='p' type='get' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(answer_kind(&a).0, "result");
    h.finish().await;
}

#[tokio::test]
async fn graceful_stop_answers_what_was_read_then_closes() {
    let mut h = Harness::start(DbKind::Sqlite).await;
    let (node, secret) = h.register("alice@localhost", "d", "slow-token").await;
    h.conn
        .send(&publish_iq("s1", "localhost", &node, Some(&secret), "1"))
        .await;
    // Let the publish reach the backend (it takes 500 ms there).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(async move {
        let Harness {
            nudge, conn, db, ..
        } = h;
        let reason = nudge.stop().await;
        (reason, conn, db)
    });
    // The answer must come before the stream closes.
    let (reason, mut conn, db): (StopReason, ServerConn, _) = stopping.await.unwrap();
    assert_eq!(reason, StopReason::Shutdown);
    let answer = conn.recv().await;
    assert_eq!(answer.get_attr("id"), Some("s1"));
    assert_eq!(answer_kind(&answer).0, "result");
    assert_eq!(
        conn.expect_close().await,
        None,
        "closed with </stream:stream>, no error"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn conflict_stands_by_and_replaced_stops() {
    let server = FakeServer::start().await;
    let (mut nudge, _dir) = start_on(server.port, Backends::new(), |_| {}).await;
    // Prosody's kick_new: another instance holds the domain.
    let (mut c, _, _) = server.accept_until_handshake().await;
    c.send("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Component already connected</text></stream:error></stream:stream>").await;
    assert!(nudge.wait_for_state(LinkState::Standby, STEP).await);
    // The standby retries within about a second and takes over.
    let took = Instant::now();
    let mut c = server.accept().await;
    assert!(took.elapsed() < Duration::from_secs(2));
    assert!(nudge.wait_for_state(LinkState::Connected, STEP).await);
    // Prosody's kick_old: a newer connection replaced us. Stop, no reconnect.
    c.send("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced by a new connection</text></stream:error></stream:stream>").await;
    let reason = tokio::time::timeout(STEP, nudge.wait()).await.unwrap();
    assert_eq!(reason, StopReason::Replaced);
    assert!(
        server
            .try_accept_tcp(Duration::from_secs(2))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn sends_whitespace_keepalives_when_idle() {
    let server = FakeServer::start().await;
    let (nudge, _dir) = start_on(server.port, Backends::new(), |c| {
        c.component.keepalive_secs = 1
    })
    .await;
    let (tcp_conn, _, _) = server.accept_until_handshake().await;
    let mut conn = tcp_conn;
    conn.send("<handshake/>").await;
    // Idle for 2.5 s with a 1 s keepalive. (Not read meanwhile: the
    // parser reports text only once the next markup begins, and a read cut
    // off by a timeout would lose it.)
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let a = conn
        .request("<iq id='p' type='get' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(answer_kind(&a).0, "result");
    assert!(conn.keepalives >= 1, "no keepalive seen");
    nudge.stop().await;
}

/// A silent server (half-open connection): the component pings itself
/// through the server after `read_idle_secs`; while the server routes the
/// ping back, the link stays; once it is silent, the component reconnects
/// within `ping_timeout_secs`.
#[tokio::test]
async fn a_silent_server_is_detected_by_a_ping() {
    let server = FakeServer::start().await;
    let (nudge, _dir) = start_on(server.port, Backends::new(), |c| {
        c.component.read_idle_secs = 1;
        c.component.ping_timeout_secs = 1;
    })
    .await;
    let mut conn = server.accept().await;
    // A live server routes the ping (to our own domain) back to us, and our
    // answer too; the link stays up.
    for _ in 0..2 {
        let ping = conn.recv().await;
        assert_eq!(ping.get_attr("type"), Some("get"));
        assert_eq!(ping.get_attr("to"), Some(common::DOMAIN));
        assert_eq!(ping.get_attr("from"), Some(common::DOMAIN));
        assert!(ping.get_child("ping", "urn:xmpp:ping").is_some());
        conn.send(&ping.to_stanza_string()).await;
        let answer = conn.recv().await;
        assert_eq!(answer.get_attr("type"), Some("result"));
        assert_eq!(answer.get_attr("id"), ping.get_attr("id"));
        conn.send(&answer.to_stanza_string()).await;
    }
    // Now silence, without closing: the next ping goes unanswered.
    let ping = conn.recv().await;
    assert!(ping.get_child("ping", "urn:xmpp:ping").is_some());
    let silent = Instant::now();
    let mut next = server.accept().await;
    assert!(
        silent.elapsed() < Duration::from_secs(3),
        "reconnected {:?} after the unanswered ping",
        silent.elapsed()
    );
    still_answers(&mut next).await;
    nudge.stop().await;
    drop(conn);
}

/// A server that stops reading: once the socket buffers are full, a write
/// blocks; after `write_timeout_secs` the component gives up on the
/// connection and reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_reading_is_left_after_the_write_timeout() {
    let server = FakeServer::start().await;
    let (nudge, _dir) = start_on(server.port, Backends::new(), |c| {
        c.component.write_timeout_secs = 1;
        c.component.read_idle_secs = 60;
    })
    .await;
    let mut conn = server.accept().await;
    // Requests whose answers (about 600 bytes each) are never read.
    let flooding = tokio::spawn(async move {
        let request = "<iq id='f' type='get' from='alice@localhost/phone' to='push.localhost'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>".repeat(100);
        for _ in 0..2_000 {
            conn.send_lossy(request.as_bytes()).await;
        }
        conn
    });
    let flooded = Instant::now();
    let mut next = server.accept().await;
    assert!(
        flooded.elapsed() < Duration::from_secs(9),
        "{:?}",
        flooded.elapsed()
    );
    // Answers computed meanwhile come first on the new connection (the
    // queue outlives connections), then the answer to a new request.
    next.send(PING).await;
    loop {
        let el = next.recv().await;
        if el.get_attr("id") == Some("ping-after") {
            assert_eq!(answer_kind(&el).0, "result");
            break;
        }
        assert_eq!(el.get_attr("id"), Some("f"), "{el:?}");
    }
    flooding.abort();
    nudge.stop().await;
}

/// Publishes sent right before the stop signal are read, answered, and only
/// then is the stream closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_answers_everything_already_sent() {
    let mut h = Harness::start(DbKind::Sqlite).await;
    let (node, secret) = h.register("alice@localhost", "d", "tok").await;
    let Harness {
        nudge,
        mut conn,
        db,
        backend,
        ..
    } = h;
    let batch: String = (0..200)
        .map(|i| {
            publish_iq(
                &format!("s{i}"),
                "localhost",
                &node,
                Some(&secret),
                &format!("m{i}"),
            )
        })
        .collect();
    conn.send(&batch).await;
    let stopping = tokio::spawn(nudge.stop());
    let mut answered = std::collections::HashSet::new();
    while answered.len() < 200 {
        let el = conn.recv().await;
        assert_eq!(answer_kind(&el).0, "result", "{el:?}");
        answered.insert(el.get_attr("id").unwrap_or_default().to_owned());
    }
    assert_eq!(
        conn.expect_close().await,
        None,
        "closed with </stream:stream>"
    );
    assert_eq!(stopping.await.unwrap(), StopReason::Shutdown);
    // All for one device: coalesced into the first push and a trailing one
    // carrying the newest, delivered or safe in the outbox for the restart.
    let newest = Some("m199");
    let sent = backend.sent();
    assert!(!sent.is_empty());
    let order: Vec<u32> = sent
        .iter()
        .filter_map(|(_, n)| {
            n.last_message_body
                .as_deref()?
                .strip_prefix('m')?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "an older summary pushed after a newer one: {order:?}"
    );
    if sent.last().unwrap().1.last_message_body.as_deref() != newest {
        let store = nudge::store::RegistrationStore::open(&db.url(), 1)
            .await
            .unwrap();
        let row = store.outbox().get(&node).await.unwrap();
        assert_eq!(
            row.map(|r| r.notification.last_message_body),
            Some(newest.map(str::to_owned)),
            "the newest publish is delivered or queued; sent: {:?}",
            sent.iter()
                .map(|(_, n)| n.last_message_body.clone())
                .collect::<Vec<_>>()
        );
        store.close().await;
    }
    db.drop_db().await;
}

/// A backend whose pushes take 500 ms and are recorded once finished.
struct SlowBackend {
    finished: Mutex<Vec<Notification>>,
}

impl PushBackend for SlowBackend {
    fn provider(&self) -> &str {
        "fcm"
    }

    fn send<'a>(&'a self, _: &'a Device, n: &'a Notification) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.finished.lock().unwrap().push(n.clone());
            Outcome::Delivered
        })
    }
}

/// Replaced by a new connection while a push is in flight: the push still
/// finishes before `run` returns.
#[tokio::test]
async fn replaced_finishes_the_jobs_already_started() {
    let server = FakeServer::start().await;
    let backend = Arc::new(SlowBackend {
        finished: Mutex::new(Vec::new()),
    });
    let mut backends = Backends::new();
    backends.insert("conversations", backend.clone());
    let (nudge, _dir) = start_on(server.port, backends, |_| {}).await;
    let mut conn = server.accept().await;
    let reg = conn
        .request(&common::register_iq("alice@localhost", "fcm", "d", "tok"))
        .await;
    let (_, node, secret) = common::registration_form(&reg).unwrap();
    conn.send(&publish_iq(
        "p",
        "localhost",
        &node,
        Some(&secret),
        "in flight",
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.send("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced by a new connection</text></stream:error></stream:stream>").await;
    let reason = tokio::time::timeout(STEP, nudge.wait()).await.unwrap();
    assert_eq!(reason, StopReason::Replaced);
    // Not abandoned: finished, or (slower than answer_within_ms) in the
    // outbox for the next start.
    let finished = backend.finished.lock().unwrap().clone();
    if finished.is_empty() {
        let url = format!("sqlite://{}/nudge.db", _dir.path().display());
        let store = nudge::store::RegistrationStore::open(&url, 1)
            .await
            .unwrap();
        let row = store.outbox().get(&node).await.unwrap();
        assert_eq!(
            row.and_then(|r| r.notification.last_message_body)
                .as_deref(),
            Some("in flight"),
            "the push in flight was abandoned"
        );
        store.close().await;
    } else {
        assert_eq!(finished[0].last_message_body.as_deref(), Some("in flight"));
    }
}

/// During a handover ejabberd still routes publishes to the old connection
/// until it has seen the old one's `</stream:stream>`: what arrives after
/// the close is read until the server closes its side, and pushed.
#[tokio::test]
async fn publishes_that_arrive_after_our_close_are_still_pushed() {
    let mut h = Harness::start(DbKind::Sqlite).await;
    let (node, secret) = h.register("romeo@montague.lit", "phone", "tok-late").await;
    let Harness {
        mut conn,
        nudge,
        backend,
        db,
        ..
    } = h;
    let stopping = tokio::spawn(nudge.stop());
    // Our side of the stream is closed first ...
    assert_eq!(conn.expect_close().await, None);
    // ... then the server delivers what it had routed meanwhile, and closes.
    conn.send_lossy(
        publish_iq("late", "montague.lit", &node, Some(&secret), "still here").as_bytes(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.send_lossy(b"</stream:stream>").await;
    conn.hang_up().await;
    let reason = tokio::time::timeout(STEP, stopping)
        .await
        .expect("stopped in time")
        .unwrap();
    assert_eq!(reason, StopReason::Shutdown);
    let pushed = backend.sent_to("tok-late");
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(pushed[0].last_message_body.as_deref(), Some("still here"));
    db.drop_db().await;
}

/// A standby instance (Prosody refuses a second connection with
/// "Component already connected") retries quietly and takes over at once
/// when the active one goes away.
#[tokio::test]
async fn a_standby_retries_quietly_and_takes_over() {
    let server = FakeServer::start().await;
    let (mut nudge, _dir) = start_on(server.port, Backends::new(), |c| {
        c.component.standby_retry_ms = 50;
    })
    .await;
    for _ in 0..5 {
        let (mut conn, _, _) = server.accept_until_handshake().await;
        conn.send("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Component already connected</text></stream:error></stream:stream>")
            .await;
        conn.hang_up().await;
        assert!(nudge.wait_for_state(LinkState::Standby, STEP).await);
    }
    // After repeated refusals it still takes over as soon as it may.
    let started = Instant::now();
    let _conn = server.accept().await;
    assert!(nudge.wait_for_state(LinkState::Connected, STEP).await);
    assert!(started.elapsed() < Duration::from_secs(2));
    nudge.stop().await;
}

/// With several instances connected, ejabberd hands a ping and its answer
/// to any of them: a ping that never comes back is not yet a dead link. The
/// component pings again until `ping_timeout_secs`, and one that comes back
/// keeps the connection.
#[tokio::test]
async fn pings_lost_to_other_connections_do_not_drop_the_link() {
    let server = FakeServer::start().await;
    let (nudge, _dir) = start_on(server.port, Backends::new(), |c| {
        c.component.read_idle_secs = 1;
        c.component.ping_timeout_secs = 2;
    })
    .await;
    let mut conn = server.accept().await;
    // The first three pings go "elsewhere"; the fourth is routed back.
    for _ in 0..3 {
        let ping = conn.recv().await;
        assert!(ping.get_child("ping", "urn:xmpp:ping").is_some());
    }
    let ping = conn.recv().await;
    conn.send(&ping.to_stanza_string()).await;
    assert!(
        server
            .try_accept_tcp(Duration::from_millis(2500))
            .await
            .is_none(),
        "reconnected although a ping came back"
    );
    nudge.stop().await;
}
