//! Registration commands end to end through the component stream, on
//! SQLite and on PostgreSQL: Conversations' unregister with its `channel`
//! hash, and the per-account limits.

mod common;

use common::{
    DbKind, Harness, answer_kind, register_iq, register_room_iq, registration_form, unregister_iq,
};
use sha1::{Digest, Sha1};

on_both_databases!(
    unregister_with_conversations_channel_hash_removes_the_room,
    unregister_with_room_jid_or_empty_channel,
    unregister_that_matches_nothing_says_so,
    commands_beyond_the_rate_are_answered_wait,
    registrations_beyond_the_cap_are_refused_but_reregistration_works,
);

/// The account and device of the unregister fixture.
const ACCOUNT: &str = "alice@localhost";
const DEVICE: &str = "0123456789abcdef";
const ROOM: &str = "garden@conference.localhost";

/// `hex(sha1(jid + "\0" + device))`, computed here rather than with the
/// code under test.
fn channel_hash(jid: &str, device: &str) -> String {
    hex::encode(Sha1::digest(format!("{jid}\0{device}").as_bytes()))
}

/// Registers the fixture's device for `room`; returns (node, secret).
async fn register_room(h: &mut Harness, room: &str) -> (String, String) {
    let a = h
        .conn
        .request(&register_room_iq(ACCOUNT, DEVICE, "tok-room", room))
        .await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    let (_, node, secret) = registration_form(&a).unwrap();
    (node, secret)
}

async fn nodes(h: &Harness) -> Vec<String> {
    let mut nodes: Vec<String> = h
        .nudge
        .store
        .list(Some(ACCOUNT), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.node)
        .collect();
    nodes.sort();
    nodes
}

fn completed(a: &nudge::xmpp::Element) -> bool {
    answer_kind(a).0 == "result"
        && a.get_child("command", "http://jabber.org/protocol/commands")
            .and_then(|c| c.get_attr("status"))
            == Some("completed")
}

async fn unregister_with_conversations_channel_hash_removes_the_room(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let (own, _) = h.register(ACCOUNT, DEVICE, "tok-own").await;
    let (room, room_secret) = register_room(&mut h, ROOM).await;
    let (other_room, _) = register_room(&mut h, "other@conference.localhost").await;
    // The room registration works before.
    assert_eq!(
        h.publish("p1", "localhost", &room, Some(&room_secret), "hi")
            .await
            .0,
        "result"
    );

    // Upper-case hex is the same hash.
    let hash = channel_hash(ROOM, DEVICE);
    let a = h.conn.request(&unregister_iq(&hash.to_uppercase())).await;
    assert!(completed(&a), "{a:?}");

    let mut left = vec![own, other_room];
    left.sort();
    assert_eq!(
        nodes(&h).await,
        left,
        "only the room named by the hash is gone"
    );
    // Also gone from the publish path (the cache held it).
    assert_eq!(
        h.publish("p2", "localhost", &room, Some(&room_secret), "hi")
            .await,
        ("cancel".into(), "item-not-found".into())
    );
    // The same hash again matches nothing now.
    let a = h.conn.request(&unregister_iq(&hash)).await;
    assert_eq!(answer_kind(&a), ("cancel".into(), "item-not-found".into()));
    h.finish().await;
}

async fn unregister_with_room_jid_or_empty_channel(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let (own, _) = h.register(ACCOUNT, DEVICE, "tok-own").await;
    let (room, _) = register_room(&mut h, ROOM).await;
    let (other_room, _) = register_room(&mut h, "other@conference.localhost").await;

    let a = h.conn.request(&unregister_iq(ROOM)).await;
    assert!(completed(&a), "{a:?}");
    assert!(!nodes(&h).await.contains(&room));

    // Empty channel: the account's own registration, rooms stay.
    let a = h.conn.request(&unregister_iq("")).await;
    assert!(completed(&a), "{a:?}");
    assert_eq!(nodes(&h).await, vec![other_room]);
    assert!(h.nudge.store.find(&own).await.unwrap().is_none());
    h.finish().await;
}

async fn unregister_that_matches_nothing_says_so(kind: DbKind) {
    let mut h = Harness::start(kind).await;
    let (own, _) = h.register(ACCOUNT, DEVICE, "tok-own").await;
    let (room, _) = register_room(&mut h, ROOM).await;
    // Hash of the room with another device, of the account JID, an
    // unknown room, and bob's hash of alice's room.
    for channel in [
        channel_hash(ROOM, "another-device"),
        channel_hash(ACCOUNT, DEVICE),
        channel_hash("nosuch@conference.localhost", DEVICE),
        "nosuch@conference.localhost".to_owned(),
    ] {
        let a = h.conn.request(&unregister_iq(&channel)).await;
        assert_eq!(
            answer_kind(&a),
            ("cancel".into(), "item-not-found".into()),
            "{channel}"
        );
    }
    // Not a JID and not a hash.
    let a = h.conn.request(&unregister_iq("not a jid")).await;
    assert_eq!(answer_kind(&a), ("modify".into(), "bad-request".into()));
    // Another account cannot remove alice's room with her hash.
    let bobs = unregister_iq(&channel_hash(ROOM, DEVICE)).replace(ACCOUNT, "bob@localhost");
    let a = h.conn.request(&bobs).await;
    assert_eq!(answer_kind(&a), ("cancel".into(), "item-not-found".into()));

    let mut both = vec![own, room];
    both.sort();
    assert_eq!(nodes(&h).await, both, "nothing was removed");
    h.finish().await;
}

async fn commands_beyond_the_rate_are_answered_wait(kind: DbKind) {
    let mut h = Harness::start_with(kind, "[register]\nper_account_per_minute = 3\n").await;
    h.register(ACCOUNT, "d1", "t1").await;
    h.register(ACCOUNT, "d2", "t2").await;
    let a = h.conn.request(&unregister_iq("")).await;
    assert_eq!(answer_kind(&a), ("cancel".into(), "item-not-found".into()));
    // The fourth command within the minute, a register or an unregister.
    for request in [register_iq(ACCOUNT, "fcm", "d3", "t3"), unregister_iq("")] {
        let a = h.conn.request(&request).await;
        assert_eq!(
            answer_kind(&a),
            ("wait".into(), "policy-violation".into()),
            "{a:?}"
        );
    }
    assert_eq!(
        nodes(&h).await.len(),
        2,
        "nothing registered beyond the rate"
    );
    // Another account has its own allowance.
    h.register("bob@localhost", "d1", "t1").await;
    h.finish().await;
}

async fn registrations_beyond_the_cap_are_refused_but_reregistration_works(kind: DbKind) {
    let mut h = Harness::start_with(kind, "[register]\nmax_per_account = 3\n").await;
    let (d1, s1) = h.register(ACCOUNT, DEVICE, "t1").await;
    h.register(ACCOUNT, "d2", "t2").await;
    register_room(&mut h, ROOM).await;
    // A fourth device, or a fourth room, is refused.
    for request in [
        register_iq(ACCOUNT, "fcm", "d3", "t3"),
        register_room_iq(ACCOUNT, DEVICE, "t1", "other@conference.localhost"),
    ] {
        let a = h.conn.request(&request).await;
        assert_eq!(
            answer_kind(&a),
            ("modify".into(), "policy-violation".into()),
            "{a:?}"
        );
    }
    assert_eq!(nodes(&h).await.len(), 3);
    // At the cap, a device registering again gets its node back with the new token.
    let (again, s_again) = h.register(ACCOUNT, DEVICE, "t1-new").await;
    assert_eq!((&again, &s_again), (&d1, &s1));
    let reg = h.nudge.store.find(&d1).await.unwrap().unwrap();
    assert_eq!(reg.token, "t1-new");
    // Unregistering one makes room for another.
    let a = h.conn.request(&unregister_iq("")).await;
    assert!(completed(&a), "{a:?}");
    h.register(ACCOUNT, "d3", "t3").await;
    // Other accounts are not affected by alice's cap.
    h.register("bob@localhost", "d1", "t1").await;
    h.finish().await;
}
