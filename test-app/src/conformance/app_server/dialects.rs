//! The registration dialects (`component/src/register/*.rs`,
//! `component/tests/dialects.rs`): the ad-hoc commands real clients send,
//! from a client's full JID with the `xml:lang='en'` servers add (fixture
//! `prosody-register-push-fcm.xml`). [`register`] gives the other groups
//! their registrations; [`check`] makes the `dialect-<name>` rows:
//! register, read the completed form, publish, unregister, publish again.

use super::session::{Answer, Condition, ErrorType, Outcome, Session};
use super::stanzas::{Registration, publish_to};
use super::{DIALECT_ROW, Dialect};
use crate::conformance::Row;
use crate::conformance::xml::{Element, FieldValue, form_field, ns, submit_form};

/// What a completed register command gave back.
pub struct Registered {
    /// The registration.
    pub reg: Registration,
    /// The client JID that registered (unregister comes from it too).
    pub from: String,
    /// The `jid` field, where the dialect has one.
    pub jid: Option<String>,
}

/// Form fields as the command sends them.
fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(var, value)| ((*var).to_owned(), (*value).to_owned()))
        .collect()
}

/// The command node and fields for registering `token` in `dialect`.
fn register_command(
    dialect: &Dialect,
    token: &str,
    client_node: &str,
) -> (String, Vec<(String, String)>) {
    match dialect {
        Dialect::Conversations { app } => (
            format!("register-push-{app}"),
            owned(&[("token", token), ("android-id", client_node)]),
        ),
        Dialect::Siskin { provider } => (
            "register-device".to_owned(),
            owned(&[("provider", provider), ("device-token", token)]),
        ),
        Dialect::PushAppserver { kind } => (
            "v1-register-push".to_owned(),
            owned(&[("type", kind), ("node", client_node), ("token", token)]),
        ),
    }
}

/// The command node and fields that undo [`register_command`].
fn unregister_command(
    dialect: &Dialect,
    token: &str,
    client_node: &str,
) -> (String, Vec<(String, String)>) {
    match dialect {
        // An empty channel is the account's own registration
        // (component/src/register/conversations.rs).
        Dialect::Conversations { app } => (
            format!("unregister-push-{app}"),
            owned(&[("channel", ""), ("android-id", client_node)]),
        ),
        Dialect::Siskin { provider } => (
            "unregister-device".to_owned(),
            owned(&[("provider", provider), ("device-token", token)]),
        ),
        Dialect::PushAppserver { kind } => (
            "v1-unregister-push".to_owned(),
            owned(&[("type", kind), ("node", client_node)]),
        ),
    }
}

/// Whether the dialect hands out a jid and a secret.
fn has_secret(dialect: &Dialect) -> bool {
    !matches!(dialect, Dialect::Siskin { .. })
}

fn command_iq(s: &mut Session, from: &str, node: &str, fields: &[(String, String)]) -> Element {
    let id = s.id("cmd");
    let refs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    super::stanzas::iq("set", &id, from, &s.domain.clone())
        .with_attr("xml:lang", "en")
        .with_child(
            Element::new("command", ns::COMMANDS)
                .with_attr("node", node)
                .with_attr("action", "execute")
                .with_child(submit_form(None, &refs)),
        )
}

/// The completed command's form, or why there is none.
fn completed_form(out: &Outcome) -> Result<&Element, String> {
    let Some(Answer::Result(el)) = out.answer() else {
        return Err(format!("command not completed: {}", out.describe()));
    };
    let cmd = el
        .child("command", ns::COMMANDS)
        .ok_or("result without <command/>")?;
    if cmd.attr("status") != Some("completed") {
        return Err(format!(
            "command status {:?}, expected completed",
            cmd.attr("status")
        ));
    }
    cmd.child("x", ns::DATA_FORMS)
        .ok_or_else(|| "completed command without a form".to_owned())
}

fn value(form: &Element, var: &str) -> Option<String> {
    match form_field(form, var) {
        Some(FieldValue::Value(v)) => Some(v.to_owned()),
        _ => None,
    }
}

/// A fresh user's registration of a new token in `dialect`.
pub async fn register(
    s: &mut Session,
    dialect: &Dialect,
    user: &str,
) -> Result<Registered, String> {
    let token = crate::random_apns_token();
    let client_node = format!("{:016x}", rand::random::<u64>());
    let from = format!("{user}@{}/res", s.user_domain);
    let (node, fields) = register_command(dialect, &token, &client_node);
    let iq = command_iq(s, &from, &node, &fields);
    let out = s.request(&iq).await;
    let form = completed_form(&out)?;
    let pubsub_node = value(form, "node").ok_or("no node in the completed form")?;
    let secret = value(form, "secret");
    let jid = value(form, "jid");
    if has_secret(dialect) && (secret.is_none() || jid.is_none()) {
        return Err(format!(
            "the completed form lacks {}",
            if secret.is_none() { "secret" } else { "jid" }
        ));
    }
    Ok(Registered {
        reg: Registration {
            node: pubsub_node,
            secret,
            token,
            client_node,
        },
        from,
        jid,
    })
}

/// Undoes [`register`]; the command's outcome.
pub async fn unregister(s: &mut Session, dialect: &Dialect, r: &Registered) -> Result<(), String> {
    let (node, fields) = unregister_command(dialect, &r.reg.token, &r.reg.client_node);
    let iq = command_iq(s, &r.from.clone(), &node, &fields);
    let out = s.request(&iq).await;
    match out.answer() {
        Some(Answer::Result(_)) => Ok(()),
        _ => Err(format!("unregister: {}", out.describe())),
    }
}

/// The `dialect-<name>` rows.
pub async fn check(s: &mut Session, dialects: &[Dialect]) -> Vec<Row> {
    let mut rows = Vec::new();
    for (i, dialect) in dialects.iter().enumerate() {
        let r = Row::new(
            &dialect.row_id(),
            &format!("{} ({})", DIALECT_ROW.scenario, dialect.name()),
            DIALECT_ROW.requirement,
            DIALECT_ROW.reference,
        );
        if let Err(why) = s.connected().await {
            rows.push(r.skipped(why));
            continue;
        }
        rows.push(match one(s, dialect, &format!("kit-dialect{i}")).await {
            Ok(observed) => r.pass(observed, "ok"),
            Err(why) => r.fail(why, "failed"),
        });
    }
    rows
}

async fn one(s: &mut Session, dialect: &Dialect, user: &str) -> Result<String, String> {
    let r = register(s, dialect, user).await?;
    if let Some(jid) = r.jid.as_ref().filter(|j| **j != s.domain) {
        return Err(format!(
            "form jid {jid:?} is not the component domain {}",
            s.domain
        ));
    }
    let id = s.id("dpub");
    let (domain, from) = (s.domain.clone(), s.user_domain.clone());
    let out = s.publish(&publish_to(&r.reg, &id, &from, &domain)).await;
    if !matches!(out.answer(), Some(Answer::Result(_))) {
        return Err(format!("publish after registering: {}", out.describe()));
    }
    unregister(s, dialect, &r).await?;
    let id = s.id("dpub");
    let out = s.publish(&publish_to(&r.reg, &id, &from, &domain)).await;
    match out.answer() {
        Some(a) if a.is(ErrorType::Cancel, Condition::ItemNotFound) => Ok(format!(
            "registered (node{}), publish → result, unregistered, publish → cancel/item-not-found",
            if r.reg.secret.is_some() {
                ", jid, secret"
            } else {
                ""
            }
        )),
        _ => Err(format!(
            "publish after unregistering: {}, expected cancel/item-not-found",
            out.describe()
        )),
    }
}
