//! The Siskin/Tigase and mod_push_appserver v1 registration dialects end to
//! end through the component stream, on SQLite and on PostgreSQL: register,
//! publish, the push reaches the recording backend with the right token,
//! second token and environment; unregister; a v1 node bound to its
//! account; a dialect that is not configured is not offered.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{DbKind, FakeServer, Harness, STEP, TestBackend, TestDb, answer_kind, test_config};
use nudge::config::{DialectTarget, PushAppserverConfig, SiskinConfig};
use nudge::dispatch::Backends;
use nudge::xmpp::Element;
use nudge::xmpp::dataform::DataForm;
use nudge::xmpp::stream::LinkState;
use nudge_plugins::Environment;

on_both_databases!(
    siskin_registers_pushes_and_unregisters,
    siskin_fcm_provider_and_two_iphones,
    a_registration_with_a_secret_still_requires_it,
    v1_registers_pushes_and_unregisters,
    v1_node_is_bound_to_its_account,
    v1_node_race_has_one_winner,
    v1_counts_against_the_cap,
    dialects_not_configured_are_not_offered,
    disco_lists_the_configured_dialects,
);

const COMMANDS: &str = "http://jabber.org/protocol/commands";
const APNS_PROVIDER: &str = "tigase:messenger:apns:1";
const FCM_PROVIDER: &str = "tigase:messenger:fcm:1";

/// Nudge with an APNs app `ios` and an FCM app `android`, each with its
/// own recording backend, and the dialects `dialects` turns on.
struct Dialects {
    h: Harness,
    ios: Arc<TestBackend>,
    android: Arc<TestBackend>,
}

impl Dialects {
    async fn start(kind: DbKind, siskin: bool, v1: bool, extra: &str) -> Dialects {
        let server = FakeServer::start().await;
        let db = TestDb::new(kind).await;
        let ios = TestBackend::new("apns");
        let android = TestBackend::new("fcm");
        let mut backends = Backends::new();
        backends.insert("ios", ios.clone());
        backends.insert("android", android.clone());
        let mut config = test_config(server.port, &db.url(), extra);
        // Set after loading: the tests' apps are backends, not [apps] tables.
        if siskin {
            config.dialects.siskin = Some(SiskinConfig {
                providers: BTreeMap::from([
                    (
                        APNS_PROVIDER.to_owned(),
                        DialectTarget::Table {
                            app: "ios".into(),
                            environment: Some("production".into()),
                        },
                    ),
                    (
                        FCM_PROVIDER.to_owned(),
                        DialectTarget::App("android".into()),
                    ),
                ]),
            });
        }
        if v1 {
            config.dialects.push_appserver = Some(PushAppserverConfig {
                types: BTreeMap::from([
                    (
                        "apns".to_owned(),
                        DialectTarget::Table {
                            app: "ios".into(),
                            environment: Some("sandbox".into()),
                        },
                    ),
                    ("fcm".to_owned(), DialectTarget::App("android".into())),
                ]),
            });
        }
        let mut nudge = nudge::start(&config, backends).await.unwrap();
        let conn = server.accept().await;
        assert!(nudge.wait_for_state(LinkState::Connected, STEP).await);
        Dialects {
            h: Harness {
                server,
                conn,
                nudge,
                backend: android.clone(),
                db,
            },
            ios,
            android,
        }
    }

    async fn request(&mut self, xml: &str) -> Element {
        self.h.conn.request(xml).await
    }

    async fn publish(&mut self, id: &str, node: &str, secret: Option<&str>) -> (String, String) {
        self.h.publish(id, "localhost", node, secret, "hi").await
    }

    async fn finish(self) {
        self.h.finish().await
    }
}

/// A command iq of `account/phone` with a submitted form of `fields`.
fn command_iq(id: &str, account: &str, node: &str, fields: &[(&str, &str)]) -> String {
    let fields: String = fields
        .iter()
        .map(|(var, value)| format!("<field var='{var}'><value>{value}</value></field>"))
        .collect();
    format!(
        "<iq id='{id}' type='set' from='{account}/phone' to='{}' xml:lang='en'>\
         <command node='{node}' action='execute' xmlns='{COMMANDS}'>\
         <x xmlns='jabber:x:data' type='submit'>{fields}</x></command></iq>",
        common::DOMAIN
    )
}

/// Siskin's `register-device` (fields of `docs/interop.md`).
fn register_device(id: &str, account: &str, provider: &str, token: &str, second: &str) -> String {
    let mut fields = vec![("provider", provider), ("device-token", token)];
    if !second.is_empty() {
        fields.push(("device-second-token", second));
    }
    command_iq(id, account, "register-device", &fields)
}

fn unregister_device(id: &str, account: &str, provider: &str, token: &str) -> String {
    command_iq(
        id,
        account,
        "unregister-device",
        &[("provider", provider), ("device-token", token)],
    )
}

fn v1_register(id: &str, account: &str, kind: &str, node: &str, token: &str) -> String {
    command_iq(
        id,
        account,
        "v1-register-push",
        &[("type", kind), ("node", node), ("token", token)],
    )
}

fn v1_unregister(id: &str, account: &str, kind: &str, node: &str) -> String {
    command_iq(
        id,
        account,
        "v1-unregister-push",
        &[("type", kind), ("node", node)],
    )
}

/// The result form of a completed command.
fn result_form(answer: &Element) -> DataForm {
    assert_eq!(answer_kind(answer).0, "result", "{answer:?}");
    let cmd = answer.get_child("command", COMMANDS).expect("command");
    assert_eq!(cmd.get_attr("status"), Some("completed"), "{answer:?}");
    cmd.children
        .iter()
        .find_map(DataForm::from_element)
        .expect("a result form")
}

fn completed(answer: &Element) -> bool {
    answer_kind(answer).0 == "result"
        && answer
            .get_child("command", COMMANDS)
            .and_then(|c| c.get_attr("status"))
            == Some("completed")
}

fn values(form: &DataForm, var: &str) -> Vec<String> {
    form.fields
        .iter()
        .filter(|f| f.var == var)
        .flat_map(|f| f.values.clone())
        .collect()
}

async fn siskin_registers_pushes_and_unregisters(kind: DbKind) {
    let mut d = Dialects::start(kind, true, false, "").await;
    let a = d
        .request(&register_device(
            "r1",
            "alice@localhost",
            APNS_PROVIDER,
            "a1b2c3",
            "voip-1",
        ))
        .await;
    let form = result_form(&a);
    assert_eq!(form.kind, "result");
    let node = form.value("node").unwrap().to_owned();
    assert!(node.len() >= 22, "128 random bits: {node}");
    assert_eq!(form.value("secret"), None, "no secret in this dialect");
    let mut features = values(&form, "features");
    features.sort();
    assert_eq!(
        features,
        [
            "tigase:push:encrypt:0",
            "tigase:push:encrypt:aes-128-gcm",
            "tigase:push:jingle:0"
        ]
    );
    let max: usize = form.value("max-payload-size").unwrap().parse().unwrap();
    assert!(max > 2000 && max < 4096, "{max}");

    // The same token again: the same node, the second token updated.
    let a = d
        .request(&register_device(
            "r2",
            "alice@localhost",
            APNS_PROVIDER,
            "a1b2c3",
            "voip-2",
        ))
        .await;
    assert_eq!(result_form(&a).value("node"), Some(node.as_str()));
    let rows =
        d.h.nudge
            .store
            .list(Some("alice@localhost"), 10)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].dialect, "siskin");
    assert_eq!(rows[0].second_token, "voip-2");
    assert_eq!(rows[0].secret, None);

    // The server publishes without a secret; the push reaches the token,
    // with the PushKit token and the configured environment.
    assert_eq!(d.publish("p1", &node, None).await.0, "result");
    assert!(d.ios.sent_until("a1b2c3", |s| s.len() == 1).await);
    let (device, _) = d.ios.sent().pop().unwrap();
    assert_eq!(device.app, "ios");
    assert_eq!(device.voip_token.as_deref(), Some("voip-2"));
    assert_eq!(device.environment, Some(Environment::Production));
    assert_eq!(device.account.as_deref(), Some("alice@localhost"));

    // Another account cannot unregister alice's token.
    let a = d
        .request(&unregister_device(
            "u0",
            "mallory@localhost",
            APNS_PROVIDER,
            "a1b2c3",
        ))
        .await;
    assert_eq!(answer_kind(&a), ("cancel".into(), "item-not-found".into()));
    assert_eq!(d.publish("p2", &node, None).await.0, "result");

    let a = d
        .request(&unregister_device(
            "u1",
            "alice@localhost",
            APNS_PROVIDER,
            "a1b2c3",
        ))
        .await;
    assert!(completed(&a), "{a:?}");
    assert_eq!(
        d.publish("p3", &node, None).await,
        ("cancel".into(), "item-not-found".into())
    );
    let a = d
        .request(&unregister_device(
            "u2",
            "alice@localhost",
            APNS_PROVIDER,
            "a1b2c3",
        ))
        .await;
    assert_eq!(answer_kind(&a), ("cancel".into(), "item-not-found".into()));

    // An unknown provider string and a form without a token.
    let a = d
        .request(&register_device(
            "r3",
            "alice@localhost",
            "tigase:messenger:x:1",
            "t",
            "",
        ))
        .await;
    assert_eq!(answer_kind(&a), ("cancel".into(), "item-not-found".into()));
    let a = d
        .request(&command_iq(
            "r4",
            "alice@localhost",
            "register-device",
            &[("provider", APNS_PROVIDER)],
        ))
        .await;
    assert_eq!(answer_kind(&a), ("modify".into(), "bad-request".into()));
    d.finish().await;
}

async fn siskin_fcm_provider_and_two_iphones(kind: DbKind) {
    let mut d = Dialects::start(kind, true, false, "").await;
    let a = d
        .request(&register_device(
            "r1",
            "alice@localhost",
            FCM_PROVIDER,
            "fcm-tok",
            "",
        ))
        .await;
    let android_node = result_form(&a).value("node").unwrap().to_owned();
    let a = d
        .request(&register_device(
            "r2",
            "alice@localhost",
            APNS_PROVIDER,
            "iphone-1",
            "",
        ))
        .await;
    let one = result_form(&a).value("node").unwrap().to_owned();
    let a = d
        .request(&register_device(
            "r3",
            "alice@localhost",
            APNS_PROVIDER,
            "iphone-2",
            "",
        ))
        .await;
    let two = result_form(&a).value("node").unwrap().to_owned();
    assert_ne!(one, two, "two iPhones are two registrations");

    assert_eq!(d.publish("p1", &android_node, None).await.0, "result");
    assert!(d.android.sent_until("fcm-tok", |s| s.len() == 1).await);
    let (device, _) = d.android.sent().pop().unwrap();
    assert_eq!((device.voip_token, device.environment), (None, None));

    assert_eq!(d.publish("p2", &two, None).await.0, "result");
    assert!(d.ios.sent_until("iphone-2", |s| s.len() == 1).await);
    assert!(d.ios.sent_to("iphone-1").is_empty());

    // Unregistering one iPhone leaves the other.
    let a = d
        .request(&unregister_device(
            "u1",
            "alice@localhost",
            APNS_PROVIDER,
            "iphone-1",
        ))
        .await;
    assert!(completed(&a), "{a:?}");
    assert_eq!(d.publish("p3", &two, None).await.0, "result");
    assert_eq!(
        d.publish("p4", &one, None).await,
        ("cancel".into(), "item-not-found".into())
    );
    d.finish().await;
}

async fn a_registration_with_a_secret_still_requires_it(kind: DbKind) {
    let mut d = Dialects::start(kind, true, true, "").await;
    // Conversations' dialect and v1 hand out secrets: a publish without
    // one is refused even while a dialect without secrets is on.
    let (node, secret) = d.h.register("alice@localhost", "dev1", "tok-c").await;
    assert_eq!(
        d.publish("p1", &node, None).await,
        ("auth".into(), "forbidden".into())
    );
    assert_eq!(
        d.publish("p2", &node, Some("wrong")).await,
        ("auth".into(), "forbidden".into())
    );
    assert_eq!(d.publish("p3", &node, Some(&secret)).await.0, "result");

    let a = d
        .request(&v1_register(
            "v1",
            "alice@localhost",
            "fcm",
            "device-uuid-1",
            "tok-v1",
        ))
        .await;
    let form = result_form(&a);
    let v1_secret = form.value("secret").unwrap().to_owned();
    assert_eq!(
        d.publish("p4", "device-uuid-1", None).await,
        ("auth".into(), "forbidden".into())
    );
    assert_eq!(
        d.publish("p5", "device-uuid-1", Some(&v1_secret)).await.0,
        "result"
    );
    d.finish().await;
}

async fn v1_registers_pushes_and_unregisters(kind: DbKind) {
    let mut d = Dialects::start(kind, false, true, "").await;
    let node = "6F9619FF-8B86-D011-B42D-00C04FC964FF";
    let a = d
        .request(&v1_register(
            "r1",
            "alice@localhost",
            "apns",
            node,
            "apns-tok-1",
        ))
        .await;
    let form = result_form(&a);
    assert_eq!(form.value("jid"), Some(common::DOMAIN));
    assert_eq!(form.value("node"), Some(node));
    let secret = form.value("secret").unwrap().to_owned();
    assert!(secret.len() >= 24, "{secret}");

    assert_eq!(d.publish("p1", node, Some(&secret)).await.0, "result");
    assert!(d.ios.sent_until("apns-tok-1", |s| s.len() == 1).await);
    let (device, _) = d.ios.sent().pop().unwrap();
    assert_eq!(device.environment, Some(Environment::Sandbox));

    // Again with a new token: the same secret, the push to the new token.
    let a = d
        .request(&v1_register(
            "r2",
            "alice@localhost",
            "apns",
            node,
            "apns-tok-2",
        ))
        .await;
    assert_eq!(result_form(&a).value("secret"), Some(secret.as_str()));
    assert_eq!(d.publish("p2", node, Some(&secret)).await.0, "result");
    assert!(d.ios.sent_until("apns-tok-2", |s| s.len() == 1).await);
    assert_eq!(d.ios.sent_to("apns-tok-1").len(), 1);

    // The device moves to the other type: same node and secret, the other app.
    let a = d
        .request(&v1_register(
            "r2b",
            "alice@localhost",
            "fcm",
            node,
            "fcm-tok-3",
        ))
        .await;
    assert_eq!(result_form(&a).value("secret"), Some(secret.as_str()));
    assert_eq!(d.publish("p2b", node, Some(&secret)).await.0, "result");
    assert!(d.android.sent_until("fcm-tok-3", |s| s.len() == 1).await);
    let (device, _) = d.android.sent().pop().unwrap();
    assert_eq!((device.app.as_str(), device.environment), ("android", None));
    let a = d
        .request(&v1_register(
            "r2c",
            "alice@localhost",
            "apns",
            node,
            "apns-tok-2",
        ))
        .await;
    assert_eq!(result_form(&a).value("secret"), Some(secret.as_str()));

    let a = d
        .request(&v1_unregister("u1", "alice@localhost", "apns", node))
        .await;
    assert!(completed(&a), "{a:?}");
    assert_eq!(
        d.publish("p3", node, Some(&secret)).await,
        ("cancel".into(), "item-not-found".into())
    );
    let a = d
        .request(&v1_unregister("u2", "alice@localhost", "apns", node))
        .await;
    assert_eq!(answer_kind(&a), ("cancel".into(), "item-not-found".into()));

    // Nodes that cannot be a device UUID are refused.
    let a = d
        .request(&v1_register("r3", "alice@localhost", "apns", "a b", "t"))
        .await;
    assert_eq!(answer_kind(&a), ("modify".into(), "bad-request".into()));
    d.finish().await;
}

/// The error answer's text and whether it carries anything beside the
/// error (a form, a secret).
fn refusal(answer: &Element) -> (String, String, String) {
    let (kind, condition) = answer_kind(answer);
    assert!(
        answer.get_child("command", COMMANDS).is_none(),
        "a refusal carries no command payload: {answer:?}"
    );
    let text = answer
        .get_child("error", "jabber:component:accept")
        .and_then(|e| e.get_child("text", "urn:ietf:params:xml:ns:xmpp-stanzas"))
        .map(|t| t.text.clone())
        .unwrap_or_default();
    (kind, condition, text)
}

async fn v1_node_is_bound_to_its_account(kind: DbKind) {
    let mut d = Dialects::start(kind, true, true, "").await;
    let node = "alice-device-0001";
    let a = d
        .request(&v1_register(
            "r1",
            "alice@localhost",
            "fcm",
            node,
            "alice-tok",
        ))
        .await;
    let secret = result_form(&a).value("secret").unwrap().to_owned();

    // Mallory asks for alice's node: refused, without the secret, and the
    // registration is unchanged.
    let a = d
        .request(&v1_register(
            "m1",
            "mallory@localhost",
            "fcm",
            node,
            "mallory-tok",
        ))
        .await;
    let taken = refusal(&a);
    assert_eq!((taken.0.as_str(), taken.1.as_str()), ("cancel", "conflict"));
    assert!(!format!("{a:?}").contains(&secret));
    let reg = d.h.nudge.store.find(node).await.unwrap().unwrap();
    assert_eq!(
        (reg.owner.as_str(), reg.token.as_str()),
        ("alice@localhost", "alice-tok")
    );
    // Also from the other domain's account with another type.
    let a = d
        .request(&v1_register(
            "m2",
            "mallory@evil.example",
            "apns",
            node,
            "mallory-tok",
        ))
        .await;
    assert_eq!(refusal(&a), taken);

    // A node another dialect holds is refused with the same answer: a Siskin
    // node, and a Conversations node (which alice herself holds).
    let a = d
        .request(&register_device(
            "s1",
            "alice@localhost",
            APNS_PROVIDER,
            "sis-tok",
            "",
        ))
        .await;
    let siskin_node = result_form(&a).value("node").unwrap().to_owned();
    let (conv_node, _) = d.h.register("alice@localhost", "dev1", "tok-c").await;
    for (i, (account, other)) in [
        ("mallory@localhost", &siskin_node),
        ("alice@localhost", &siskin_node),
        ("alice@localhost", &conv_node),
    ]
    .into_iter()
    .enumerate()
    {
        let a = d
            .request(&v1_register(
                &format!("m3-{i}"),
                account,
                "fcm",
                other,
                "mallory-tok",
            ))
            .await;
        assert_eq!(refusal(&a), taken, "{account} {other}");
        let reg = d.h.nudge.store.find(other).await.unwrap().unwrap();
        assert_ne!(reg.token, "mallory-tok");
        assert_ne!(reg.dialect, "push_appserver");
    }

    // Mallory cannot unregister alice's node; the answer is the one for a
    // node nobody holds.
    let a = d
        .request(&v1_unregister("m4", "mallory@localhost", "fcm", node))
        .await;
    let (k, c, t) = refusal(&a);
    let a = d
        .request(&v1_unregister(
            "m5",
            "mallory@localhost",
            "fcm",
            "nobody-holds-this",
        ))
        .await;
    assert_eq!(refusal(&a), (k, c, t));
    assert_eq!(d.publish("p1", node, Some(&secret)).await.0, "result");
    assert!(d.android.sent_until("alice-tok", |s| s.len() == 1).await);
    assert!(d.android.sent_to("mallory-tok").is_empty());

    // Alice again: her node, her secret.
    let a = d
        .request(&v1_register(
            "r2",
            "alice@localhost",
            "fcm",
            node,
            "alice-tok-2",
        ))
        .await;
    assert_eq!(result_form(&a).value("secret"), Some(secret.as_str()));
    d.finish().await;
}

async fn v1_node_race_has_one_winner(kind: DbKind) {
    let mut d = Dialects::start(kind, false, true, "").await;
    for round in 0..8 {
        let node = format!("contested-node-{round}");
        // Both commands are read before either is answered, so they run
        // at the same time.
        let first = v1_register(&format!("a{round}"), "alice@localhost", "fcm", &node, "ta");
        let second = v1_register(&format!("b{round}"), "bob@localhost", "fcm", &node, "tb");
        d.h.conn.send(&format!("{first}{second}")).await;
        let answers = [d.h.conn.recv().await, d.h.conn.recv().await];
        let won: Vec<&Element> = answers
            .iter()
            .filter(|a| answer_kind(a).0 == "result")
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {answers:?}");
        let lost = answers
            .iter()
            .find(|a| answer_kind(a).0 != "result")
            .unwrap();
        assert_eq!(
            answer_kind(lost),
            ("cancel".into(), "conflict".into()),
            "{lost:?}"
        );
        let winner = if won[0].get_attr("id") == Some(&format!("a{round}")) {
            ("alice@localhost", "ta")
        } else {
            ("bob@localhost", "tb")
        };
        let reg = d.h.nudge.store.find(&node).await.unwrap().unwrap();
        assert_eq!((reg.owner.as_str(), reg.token.as_str()), winner);
        let secret = result_form(won[0]).value("secret").unwrap().to_owned();
        assert_eq!(reg.secret.as_deref(), Some(secret.as_str()));
    }
    d.finish().await;
}

async fn v1_counts_against_the_cap(kind: DbKind) {
    let mut d = Dialects::start(kind, true, true, "[register]\nmax_per_account = 2\n").await;
    for (i, node) in ["cap-node-0001", "cap-node-0002"].iter().enumerate() {
        let a = d
            .request(&v1_register(
                &format!("r{i}"),
                "alice@localhost",
                "fcm",
                node,
                "t",
            ))
            .await;
        result_form(&a);
    }
    let a = d
        .request(&v1_register(
            "r3",
            "alice@localhost",
            "fcm",
            "cap-node-0003",
            "t",
        ))
        .await;
    assert_eq!(
        answer_kind(&a),
        ("modify".into(), "policy-violation".into())
    );
    let a = d
        .request(&register_device(
            "s1",
            "alice@localhost",
            FCM_PROVIDER,
            "t2",
            "",
        ))
        .await;
    assert_eq!(
        answer_kind(&a),
        ("modify".into(), "policy-violation".into())
    );
    // Registering a node again still goes through at the cap.
    let a = d
        .request(&v1_register(
            "r4",
            "alice@localhost",
            "fcm",
            "cap-node-0001",
            "t-new",
        ))
        .await;
    result_form(&a);
    d.finish().await;
}

async fn dialects_not_configured_are_not_offered(kind: DbKind) {
    let mut d = Dialects::start(kind, false, false, "").await;
    for (i, iq) in [
        register_device("a", "alice@localhost", APNS_PROVIDER, "t", ""),
        unregister_device("b", "alice@localhost", APNS_PROVIDER, "t"),
        v1_register("c", "alice@localhost", "apns", "some-device-node", "t"),
        v1_unregister("d", "alice@localhost", "apns", "some-device-node"),
    ]
    .iter()
    .enumerate()
    {
        let a = d.request(iq).await;
        assert_eq!(
            answer_kind(&a),
            ("cancel".into(), "item-not-found".into()),
            "{i}"
        );
    }
    let (items, features) = disco(&mut d).await;
    for node in [
        "register-device",
        "unregister-device",
        "v1-register-push",
        "v1-unregister-push",
    ] {
        assert!(!items.iter().any(|n| n == node), "{items:?}");
    }
    assert!(
        !features.iter().any(|f| f.starts_with("tigase:")),
        "{features:?}"
    );
    assert!(d.h.nudge.store.list(None, 10).await.unwrap().is_empty());
    d.finish().await;
}

/// The command nodes of disco#items and the root disco#info features.
async fn disco(d: &mut Dialects) -> (Vec<String>, Vec<String>) {
    let items = d
        .request(&format!(
            "<iq id='di' type='get' from='alice@localhost/phone' to='{}'>\
             <query xmlns='http://jabber.org/protocol/disco#items' node='{COMMANDS}'/></iq>",
            common::DOMAIN
        ))
        .await;
    let items = items
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .unwrap()
        .children
        .iter()
        .filter_map(|i| i.get_attr("node").map(str::to_owned))
        .collect();
    let info = d
        .request(&format!(
            "<iq id='dn' type='get' from='alice@localhost/phone' to='{}'>\
             <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            common::DOMAIN
        ))
        .await;
    let query = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    let identity = query
        .children
        .iter()
        .find(|c| c.name == "identity")
        .unwrap();
    assert_eq!(
        (identity.get_attr("category"), identity.get_attr("type")),
        (Some("pubsub"), Some("push"))
    );
    let features = query
        .children
        .iter()
        .filter(|c| c.name == "feature")
        .filter_map(|f| f.get_attr("var").map(str::to_owned))
        .collect();
    (items, features)
}

async fn disco_lists_the_configured_dialects(kind: DbKind) {
    let mut d = Dialects::start(kind, true, true, "").await;
    let (items, features) = disco(&mut d).await;
    for node in [
        "register-device",
        "unregister-device",
        "v1-register-push",
        "v1-unregister-push",
        "register-push-android",
    ] {
        assert!(items.iter().any(|n| n == node), "{node}: {items:?}");
    }
    for f in [
        "tigase:push:encrypt:0",
        "tigase:push:encrypt:aes-128-gcm",
        "tigase:push:jingle:0",
        "urn:xmpp:push:0",
    ] {
        assert!(features.iter().any(|x| x == f), "{f}: {features:?}");
    }
    // Each command node answers its own disco#info.
    let a = d
        .request(&format!(
            "<iq id='dc' type='get' from='alice@localhost/phone' to='{}'>\
             <query xmlns='http://jabber.org/protocol/disco#info' node='register-device'/></iq>",
            common::DOMAIN
        ))
        .await;
    assert_eq!(answer_kind(&a).0, "result", "{a:?}");
    d.finish().await;
}
