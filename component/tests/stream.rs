//! The component stream against a fake XMPP server: handshake, reconnect,
//! hostile input, the stanzas every component must answer, and a graceful
//! stop.

mod common;

use std::time::{Duration, Instant};

use common::{DbKind, FakeServer, Harness, STEP, ServerConn, answer_kind, publish_iq, start_on};
use nudge::dispatch::Backends;
use nudge::xmpp::stream::{LinkState, StopReason};

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
    // Mid-handshake (this side never answers), a stop is immediate.
    let stopping = Instant::now();
    nudge.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(1),
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

#[tokio::test]
async fn oversize_stanza_is_a_policy_violation() {
    let big = format!(
        "<message from='localhost' to='push.localhost'><body>{}</body></message>",
        "x".repeat(70 * 1024)
    );
    closes_with(big.as_bytes(), "policy-violation").await;
}

#[tokio::test]
async fn huge_text_without_markup_is_cut_off_early() {
    // 10 MB of text inside one element: refused without buffering it all.
    let mut bad = b"<message><body>".to_vec();
    bad.extend(std::iter::repeat_n(b'y', 10 * 1024 * 1024));
    closes_with(&bad, "policy-violation").await;
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
async fn deep_nesting_is_refused() {
    let bad = "<a>".repeat(200);
    closes_with(bad.as_bytes(), "restricted-xml").await;
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
