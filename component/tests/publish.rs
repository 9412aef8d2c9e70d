//! XEP-0357 publishes and Conversations-style registration, end to end
//! through the component stream, on SQLite and on PostgreSQL.

mod common;

use std::time::Duration;

use common::{DbKind, Harness, answer_kind, fixture, publish_iq, register_iq};

on_both_databases!(
    publish_is_delivered_and_acknowledged,
    unknown_node_is_item_not_found,
    wrong_or_missing_secret_is_forbidden,
    publish_from_another_domain_is_item_not_found,
    notification_without_form_is_a_silent_push,
    prosody_fixtures_tell_important_from_silent,
    ejabberd_fixture_with_summary_is_important,
    reregistration_keeps_node_and_updates_token,
    unregister_then_publish_is_item_not_found,
    dead_token_removes_registration,
    transient_failures_are_queued_and_answered_result,
    registration_errors,
    per_room_registration_is_separate,
);

async fn publish_is_delivered_and_acknowledged(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let (node, secret) = h.register("alice@localhost", "dev1", "tok-alice").await;
    assert_eq!(node.len(), 22, "128-bit base64url node");
    assert!(secret.len() >= 22, "secret has at least 128 bits");
    let answer = h
        .conn
        .request(&publish_iq(
            "p1",
            "localhost",
            &node,
            Some(&secret),
            "Hello",
        ))
        .await;
    assert_eq!(answer_kind(&answer), ("result".into(), String::new()));
    assert_eq!(answer.get_attr("to"), Some("localhost"));
    assert_eq!(answer.get_attr("from"), Some(common::DOMAIN));
    let sent = h.backend.sent();
    assert_eq!(sent.len(), 1);
    let (device, n) = &sent[0];
    assert_eq!(device.token, "tok-alice");
    assert_eq!(device.app, "conversations");
    assert_eq!(device.account.as_deref(), Some("alice@localhost"));
    assert_eq!(device.device_id.as_deref(), Some("dev1"));
    assert_eq!(n.last_message_body.as_deref(), Some("Hello"));
    assert_eq!(n.message_count, Some(1));
    assert!(n.is_important());
    h.finish().await;
}

async fn unknown_node_is_item_not_found(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    assert_eq!(
        h.publish("p1", "localhost", "nosuchnode", Some("x"), "Hi")
            .await,
        ("cancel".into(), "item-not-found".into())
    );
    assert!(h.backend.sent().is_empty());
    h.finish().await;
}

async fn wrong_or_missing_secret_is_forbidden(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let (node, _) = h.register("alice@localhost", "dev1", "tok").await;
    assert_eq!(
        h.publish("p1", "localhost", &node, Some("wrong"), "Hi")
            .await,
        ("auth".into(), "forbidden".into())
    );
    assert_eq!(
        h.publish("p2", "localhost", &node, None, "Hi").await,
        ("auth".into(), "forbidden".into())
    );
    assert!(h.backend.sent().is_empty());
    h.finish().await;
}

async fn publish_from_another_domain_is_item_not_found(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let (node, secret) = h.register("alice@localhost", "dev1", "tok").await;
    assert_eq!(
        h.publish("p1", "evil.example", &node, Some(&secret), "Hi")
            .await,
        ("cancel".into(), "item-not-found".into())
    );
    assert!(h.backend.sent().is_empty());
    h.finish().await;
}

async fn notification_without_form_is_a_silent_push(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let (node, secret) = h.register("alice@localhost", "dev1", "tok").await;
    let answer = h
        .conn
        .request(&fixture("ejabberd-publish-empty.xml", &node, &secret))
        .await;
    assert_eq!(answer_kind(&answer).0, "result", "{answer:?}");
    let sent = h.backend.sent();
    assert_eq!(sent.len(), 1);
    assert!(!sent[0].1.is_important());
    assert!(sent[0].1.fields.is_empty());
    h.finish().await;
}

async fn prosody_fixtures_tell_important_from_silent(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let (node, secret) = h.register("alice@localhost", "dev1", "tok").await;
    for (file, important, body, sender) in [
        ("prosody-publish-silent.xml", false, None, None),
        (
            "prosody-publish-important.xml",
            true,
            Some("New Message!"),
            None,
        ),
        (
            "prosody-publish-body-sender.xml",
            true,
            Some("Secret plans <&> 'quoted'"),
            Some("bob@localhost/phone"),
        ),
    ] {
        let answer = h.conn.request(&fixture(file, &node, &secret)).await;
        assert_eq!(answer_kind(&answer).0, "result", "{file}: {answer:?}");
        let (_, n) = h.backend.sent().pop().unwrap();
        assert_eq!(n.is_important(), important, "{file}");
        assert_eq!(n.last_message_body.as_deref(), body, "{file}");
        assert_eq!(n.last_message_sender.as_deref(), sender, "{file}");
        // Prosody's four fields are all kept, empty ones included.
        assert_eq!(n.fields.len(), 4, "{file}: {:?}", n.fields);
    }
    h.finish().await;
}

async fn ejabberd_fixture_with_summary_is_important(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let (node, secret) = h.register("alice@localhost", "dev1", "tok").await;
    let answer = h
        .conn
        .request(&fixture("ejabberd-publish-summary.xml", &node, &secret))
        .await;
    assert_eq!(answer_kind(&answer).0, "result");
    // ejabberd's id is echoed verbatim, '+' and '=' included.
    assert!(
        answer
            .get_attr("id")
            .unwrap()
            .starts_with("rr-1795682657499-")
    );
    let (_, n) = h.backend.sent().pop().unwrap();
    assert!(n.is_important());
    assert_eq!(n.last_message_body.as_deref(), Some("Hello offline alice"));
    assert_eq!(
        n.last_message_sender.as_deref(),
        Some("bob@localhost/phone")
    );
    h.finish().await;
}

async fn reregistration_keeps_node_and_updates_token(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let (node, secret) = h.register("alice@localhost", "dev1", "tok-old").await;
    // A publish caches the registration; the new token must win anyway.
    assert_eq!(
        h.publish("p1", "localhost", &node, Some(&secret), "1")
            .await
            .0,
        "result"
    );
    let (node2, secret2) = h.register("alice@localhost", "dev1", "tok-new").await;
    assert_eq!(node, node2);
    assert_eq!(secret, secret2);
    assert_eq!(
        h.publish("p2", "localhost", &node, Some(&secret), "2")
            .await
            .0,
        "result"
    );
    assert_eq!(h.backend.sent().pop().unwrap().0.token, "tok-new");
    // Another device of the same account, and another account, get their own nodes.
    let (other_dev, _) = h.register("alice@localhost", "dev2", "tok-2").await;
    let (other_acc, _) = h.register("bob@localhost", "dev1", "tok-3").await;
    assert_ne!(other_dev, node);
    assert_ne!(other_acc, node);
    assert_ne!(other_acc, other_dev);
    h.finish().await;
}

async fn unregister_then_publish_is_item_not_found(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let (node, secret) = h.register("alice@localhost", "dev1", "tok").await;
    assert_eq!(
        h.publish("p1", "localhost", &node, Some(&secret), "1")
            .await
            .0,
        "result"
    );
    // Conversations unregisters with android-id and channel (empty: the account).
    let unreg = "<iq id='u1' type='set' from='alice@localhost/phone' to='push.localhost'>\
        <command node='unregister-push-fcm' action='execute' xmlns='http://jabber.org/protocol/commands'>\
        <x xmlns='jabber:x:data' type='submit'><field var='channel'><value/></field>\
        <field var='android-id'><value>dev1</value></field></x></command></iq>";
    let a = h.conn.request(unreg).await;
    assert_eq!(answer_kind(&a).0, "result");
    let cmd = a
        .get_child("command", "http://jabber.org/protocol/commands")
        .unwrap();
    assert_eq!(cmd.get_attr("status"), Some("completed"));
    assert_eq!(
        h.publish("p2", "localhost", &node, Some(&secret), "2")
            .await,
        ("cancel".into(), "item-not-found".into())
    );
    h.finish().await;
}

async fn dead_token_removes_registration(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let (node, secret) = h.register("alice@localhost", "dev1", "dead-token").await;
    let a = h
        .conn
        .request(&publish_iq("p1", "localhost", &node, Some(&secret), "1"))
        .await;
    assert_eq!(answer_kind(&a), ("cancel".into(), "item-not-found".into()));
    assert!(h.nudge.store.find(&node).await.unwrap().is_none());
    assert_eq!(
        h.publish("p2", "localhost", &node, Some(&secret), "2")
            .await,
        ("cancel".into(), "item-not-found".into())
    );
    assert_eq!(
        h.backend.sent().len(),
        1,
        "no push to a removed registration"
    );
    h.finish().await;
}

async fn transient_failures_are_queued_and_answered_result(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    // Down, throttled, or not answering: the push goes to the outbox and
    // the publish is answered `result` (neither server re-sends a publish).
    for (i, token) in ["down-1", "throttle-1", "hang-1"].into_iter().enumerate() {
        let (node, secret) = h.register("alice@localhost", &format!("d{i}"), token).await;
        let started = std::time::Instant::now();
        assert_eq!(
            h.publish(&format!("p{i}"), "localhost", &node, Some(&secret), "1")
                .await,
            ("result".into(), String::new()),
            "{token}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{token}: answered late"
        );
        assert!(
            h.nudge.store.find(&node).await.unwrap().is_some(),
            "{token} kept"
        );
        assert!(
            h.nudge.store.outbox().get(&node).await.unwrap().is_some(),
            "{token} queued"
        );
    }
    // A provider refusing our request is not retried blindly and not the
    // user's fault: `wait`, registration kept.
    let (node, secret) = h.register("alice@localhost", "d9", "reject-1").await;
    assert_eq!(
        h.publish("p9", "localhost", &node, Some(&secret), "1")
            .await,
        ("wait".into(), "internal-server-error".into())
    );
    assert!(h.nudge.store.find(&node).await.unwrap().is_some());
    assert!(h.nudge.store.outbox().get(&node).await.unwrap().is_none());
    h.finish().await;
}

async fn registration_errors(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    // Unknown provider.
    let a = h
        .conn
        .request(&register_iq("alice@localhost", "nosuch", "d", "t"))
        .await;
    assert_eq!(answer_kind(&a), ("cancel".into(), "item-not-found".into()));
    // Missing token.
    let a = h
        .conn
        .request("<iq id='r2' type='set' from='alice@localhost/phone' to='push.localhost'><command node='register-push-fcm' action='execute' xmlns='http://jabber.org/protocol/commands'><x xmlns='jabber:x:data' type='submit'><field var='device-id'><value>d</value></field></x></command></iq>")
        .await;
    assert_eq!(answer_kind(&a), ("modify".into(), "bad-request".into()));
    // A token with whitespace is refused by the backend's format check.
    let a = h
        .conn
        .request(&register_iq("alice@localhost", "fcm", "d", "bad token"))
        .await;
    assert_eq!(answer_kind(&a), ("modify".into(), "bad-request".into()));
    // A server (no local part) cannot register.
    let a = h
        .conn
        .request(&register_iq("localhost", "fcm", "d", "t"))
        .await;
    assert_eq!(answer_kind(&a), ("auth".into(), "forbidden".into()));
    // Executing without a form returns the form to fill in.
    let a = h
        .conn
        .request("<iq id='r5' type='set' from='alice@localhost/pc' to='push.localhost'><command node='register-push-conversations' action='execute' xmlns='http://jabber.org/protocol/commands'/></iq>")
        .await;
    let cmd = a
        .get_child("command", "http://jabber.org/protocol/commands")
        .unwrap();
    assert_eq!(cmd.get_attr("status"), Some("executing"));
    assert!(cmd.get_child("x", "jabber:x:data").is_some());
    h.finish().await;
}

async fn per_room_registration_is_separate(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let (own, _) = h.register("alice@localhost", "dev1", "tok").await;
    let a = h
        .conn
        .request("<iq id='m1' type='set' from='alice@localhost/phone' to='push.localhost'><command node='register-push-fcm' action='execute' xmlns='http://jabber.org/protocol/commands'><x xmlns='jabber:x:data' type='submit'><field var='token'><value>tok</value></field><field var='device-id'><value>dev1</value></field><field var='muc'><value>room@conference.localhost</value></field></x></command></iq>")
        .await;
    assert_eq!(answer_kind(&a).0, "result");
    let regs = h
        .nudge
        .store
        .list(Some("alice@localhost"), 10)
        .await
        .unwrap();
    assert_eq!(regs.len(), 2);
    let room = regs.iter().find(|r| r.node != own).unwrap();
    assert_eq!(room.muc, "room@conference.localhost");
    assert_eq!(
        room.device().muc.as_deref(),
        Some("room@conference.localhost")
    );
    h.finish().await;
}
