//! Server mode of the conformance kit: plays the App Server (a XEP-0114
//! component) and two clients (the device owner and a sender) against any
//! XMPP server, and reports what the server does with push (XEP-0357).
//!
//! The rows are the contract (docs and the fixtures comparison test rely
//! on their ids and values), so they live in one table, [`ROWS`]; the
//! scenarios that fill them are grouped one file per [`Group`], run in the
//! order of [`GROUPS`] by [`run`]. Each scenario enables a fresh random
//! node, so leftovers of one (late publishes, offline backlog) never
//! confuse the next; before and after the run the owner's registrations
//! for the component are disabled and the offline backlog drained.

mod answers;
mod away;
mod classify;
pub mod cli;
mod client;
mod component;
mod connections;
mod enable;
mod hibernated;
mod publish;
mod sasl;

use std::time::Duration;

use crate::conformance::xml::{Element, ns, submit_form};
use crate::conformance::{Mode, Report, Requirement, Row};

pub use client::{Account, ClientError, TlsMode, TlsOptions};
pub use component::ComponentError;

use client::Client;
use component::{Answer, Component, Publish};

/// The owner's resource on every login: a new login replaces a session the
/// previous scenario left hibernated, rather than living beside it.
const OWNER_RESOURCE: &str = "conformance-owner";
/// How long "no publish" is waited for.
const QUIET: Duration = Duration::from_secs(3);
/// How long a publish that should come is waited for.
const PUBLISH_WAIT: Duration = Duration::from_secs(10);

/// What to test and how.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The server's c2s address, `host:port`.
    pub c2s: String,
    /// The server's component address, `host:port`.
    pub component: String,
    /// The component domain the server has configured for the kit.
    pub domain: String,
    /// Its secret.
    pub secret: String,
    /// The device owner, who enables push.
    pub owner: Account,
    /// The second user, who sends the messages.
    pub sender: Account,
    /// STARTTLS and certificate checks for the clients.
    pub tls: TlsOptions,
    /// Skip the slow rows (the 40 s wait for a timeout) and probe the
    /// error answers with 4 messages instead of 21.
    pub quick: bool,
}

/// Why the run could not start (a row failing is not an error).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A client could not log in.
    #[error("client {jid}: {source}")]
    Client {
        /// Who.
        jid: String,
        /// Why.
        source: ClientError,
    },
    /// The component could not connect.
    #[error("component {domain}: {source}")]
    Component {
        /// Its domain.
        domain: String,
        /// Why.
        source: ComponentError,
    },
    /// A step's answer was not what the scenario needs to go on.
    #[error("{0}")]
    Step(String),
}

/// One row's fixed part: the contract.
struct RowSpec {
    id: &'static str,
    scenario: &'static str,
    requirement: Requirement,
    reference: &'static str,
    note: &'static str,
}

use Requirement::{May, Must, None as Silent, Should};

/// Every row server mode reports, in report order.
const ROWS: &[RowSpec] = &[
    RowSpec {
        id: "component-handshake",
        scenario: "component handshake with the right secret",
        requirement: Must,
        reference: "XEP-0114 §3",
        note: "",
    },
    RowSpec {
        id: "component-wrong-secret",
        scenario: "component handshake with a wrong secret",
        requirement: Must,
        reference: "XEP-0114 §3",
        note: "",
    },
    RowSpec {
        id: "enable",
        scenario: "<enable/> with jid, node and a publish-options form",
        requirement: Must,
        reference: "XEP-0357 §5",
        note: "",
    },
    RowSpec {
        id: "enable-silent",
        scenario: "stanzas the App Server gets within 1 s of an <enable/>",
        requirement: Silent,
        reference: "XEP-0357 §5",
        note: "The server does not tell the App Server about an <enable/>: an App Server learns of a registration only from its own registration command or the first publish.",
    },
    RowSpec {
        id: "publish-offline",
        scenario: "message with a body to the offline owner",
        requirement: Should,
        reference: "XEP-0357 §7",
        note: "",
    },
    RowSpec {
        id: "publish-to",
        scenario: "publish addressed to the enabled jid",
        requirement: Must,
        reference: "XEP-0357 §7",
        note: "",
    },
    RowSpec {
        id: "publish-node",
        scenario: "publish to the enabled node",
        requirement: Must,
        reference: "XEP-0357 §7",
        note: "",
    },
    RowSpec {
        id: "publish-from",
        scenario: "who the publish comes from",
        requirement: Silent,
        reference: "XEP-0357 §7",
        note: "The spec's example publishes from the user's bare JID; servers publish from their domain. An App Server must not tie a registration to the publisher's JID without knowing which.",
    },
    RowSpec {
        id: "publish-options",
        scenario: "the <enable/> form copied into publish-options",
        requirement: Should,
        reference: "XEP-0357 §7",
        note: "",
    },
    RowSpec {
        id: "publish-item-id",
        scenario: "whether the published <item/> has an id",
        requirement: Silent,
        reference: "XEP-0357 §7",
        note: "",
    },
    RowSpec {
        id: "summary-form",
        scenario: "summary form in a publish for a message with a body",
        requirement: May,
        reference: "XEP-0357 §7",
        note: "The summary is optional: an App Server must push (silently at least) when it is missing.",
    },
    RowSpec {
        id: "summary-form-type",
        scenario: "the summary form's type attribute",
        requirement: Silent,
        reference: "XEP-0357 §7",
        note: "The spec's example has no type; an App Server must accept form, submit and result.",
    },
    RowSpec {
        id: "summary-message-count",
        scenario: "message-count for one message",
        requirement: Silent,
        reference: "XEP-0357 §7",
        note: "",
    },
    RowSpec {
        id: "summary-last-message-sender",
        scenario: "last-message-sender",
        requirement: Silent,
        reference: "XEP-0357 §7",
        note: "",
    },
    RowSpec {
        id: "summary-last-message-body",
        scenario: "last-message-body",
        requirement: Silent,
        reference: "XEP-0357 §7",
        note: "Servers may send a static text instead of the body: a non-empty body says \"important\", not what was written.",
    },
    RowSpec {
        id: "summary-unset-fields",
        scenario: "how summary fields without a value appear",
        requirement: Silent,
        reference: "XEP-0357 §7",
        note: "An App Server must treat an empty field and an absent one alike.",
    },
    RowSpec {
        id: "publish-no-body",
        scenario: "chat-state-only message to the offline owner",
        requirement: Silent,
        reference: "XEP-0357 §7",
        note: "",
    },
    RowSpec {
        id: "publish-hibernated",
        scenario: "message to the owner's hibernated XEP-0198 session (push enabled in it)",
        requirement: Should,
        reference: "XEP-0357 §7, XEP-0198",
        note: "",
    },
    RowSpec {
        id: "publish-burst",
        scenario: "10 messages in a row to the offline owner: publishes",
        requirement: Silent,
        reference: "XEP-0357 §7",
        note: "Coalescing, if any, is the App Server's job.",
    },
    RowSpec {
        id: "disable",
        scenario: "<disable/> with jid and node, then a message",
        requirement: Must,
        reference: "XEP-0357 §6",
        note: "",
    },
    RowSpec {
        id: "answer-result",
        scenario: "App Server answers result: registration afterwards",
        requirement: Silent,
        reference: "XEP-0357 §7.1, docs/answers.md",
        note: "",
    },
    RowSpec {
        id: "answer-wait",
        scenario: "App Server answers error type wait (resource-constraint), one message at a time until one is not published (at most 21)",
        requirement: Silent,
        reference: "XEP-0357 §7.1, docs/answers.md",
        note: "",
    },
    RowSpec {
        id: "answer-cancel",
        scenario: "App Server answers error type cancel (item-not-found), one message at a time until one is not published (at most 21)",
        requirement: Silent,
        reference: "XEP-0357 §7.1, docs/answers.md",
        note: "",
    },
    RowSpec {
        id: "answer-auth",
        scenario: "App Server answers error type auth (forbidden), one message at a time until one is not published (at most 21)",
        requirement: Silent,
        reference: "XEP-0357 §7.1, docs/answers.md",
        note: "",
    },
    RowSpec {
        id: "answer-modify",
        scenario: "App Server answers error type modify (bad-request), one message at a time until one is not published (at most 21)",
        requirement: Silent,
        reference: "XEP-0357 §7.1, docs/answers.md",
        note: "",
    },
    RowSpec {
        id: "answer-bare-error",
        scenario: "App Server answers <iq type='error'/> without <error/>, one message at a time until one is not published (at most 21)",
        requirement: Silent,
        reference: "XEP-0357 §7.1, docs/answers.md",
        note: "",
    },
    RowSpec {
        id: "answer-none",
        scenario: "App Server does not answer (40 s), then another message",
        requirement: Silent,
        reference: "XEP-0357 §7.1, docs/answers.md",
        note: "",
    },
    RowSpec {
        id: "away",
        scenario: "App Server disconnected while a message arrives, then back: registration",
        requirement: Silent,
        reference: "docs/answers.md",
        note: "",
    },
    RowSpec {
        id: "away-resent",
        scenario: "publish for a message that arrived while the App Server was away, re-sent when it is back",
        requirement: Silent,
        reference: "docs/answers.md",
        note: "",
    },
    RowSpec {
        id: "second-connection",
        scenario: "a second component connection for the same domain",
        requirement: Silent,
        reference: "XEP-0114",
        note: "",
    },
];

/// The row for `id`, not run yet, with its contract and note.
fn row(id: &str) -> Row {
    match ROWS.iter().find(|r| r.id == id) {
        Some(spec) => {
            Row::new(spec.id, spec.scenario, spec.requirement, spec.reference).with_note(spec.note)
        }
        None => Row::new(id, "", Requirement::None, ""),
    }
}

/// The row for `id` judged by its requirement: pass or fail for MUST and
/// SHOULD, a note for MAY and none (an option is no failure either way).
fn judge(
    id: &str,
    holds: bool,
    observed: impl Into<String>,
    value: impl Into<serde_json::Value>,
) -> Row {
    let r = row(id);
    if r.requirement == Requirement::May {
        r.note_only(observed, value)
    } else {
        r.judged(holds, observed, value)
    }
}

/// The groups of scenarios; each fills its rows (one file each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    /// component-wrong-secret (component-handshake is the run's own connection).
    Component,
    /// enable, enable-silent.
    Enable,
    /// publish-offline … summary-unset-fields, publish-no-body, publish-burst.
    Publish,
    /// publish-hibernated.
    Hibernated,
    /// disable.
    Disable,
    /// answer-*.
    Answers,
    /// away, away-resent.
    Away,
    /// second-connection.
    SecondConnection,
}

/// The run order.
const GROUPS: &[Group] = &[
    Group::Component,
    Group::Enable,
    Group::Publish,
    Group::Hibernated,
    Group::Disable,
    Group::Answers,
    Group::Away,
    Group::SecondConnection,
];

impl Group {
    /// The rows the group fills.
    fn rows(self) -> &'static [&'static str] {
        match self {
            Group::Component => &["component-wrong-secret"],
            Group::Enable => &["enable", "enable-silent"],
            Group::Publish => &[
                "publish-offline",
                "publish-to",
                "publish-node",
                "publish-from",
                "publish-options",
                "publish-item-id",
                "summary-form",
                "summary-form-type",
                "summary-message-count",
                "summary-last-message-sender",
                "summary-last-message-body",
                "summary-unset-fields",
                "publish-no-body",
                "publish-burst",
            ],
            Group::Hibernated => &["publish-hibernated"],
            Group::Disable => &["disable"],
            Group::Answers => &[
                "answer-result",
                "answer-wait",
                "answer-cancel",
                "answer-auth",
                "answer-modify",
                "answer-bare-error",
                "answer-none",
            ],
            Group::Away => &["away", "away-resent"],
            Group::SecondConnection => &["second-connection"],
        }
    }

    /// The one place that dispatches.
    async fn run(self, ctx: &mut Ctx) -> Result<Vec<Row>, ServerError> {
        match self {
            Group::Component => enable::wrong_secret(ctx).await,
            Group::Enable => enable::enable(ctx).await,
            Group::Publish => publish::run(ctx).await,
            Group::Hibernated => hibernated::run(ctx).await,
            Group::Disable => enable::disable(ctx).await,
            Group::Answers => answers::run(ctx).await,
            Group::Away => away::run(ctx).await,
            Group::SecondConnection => connections::run(ctx).await,
        }
    }
}

/// A registration the owner enabled: its node and the form sent with it.
struct Registration {
    node: String,
    form: Element,
}

/// What the scenarios share: the options, the component and the sender.
struct Ctx {
    opts: ServerOptions,
    component: Component,
    sender: Client,
    /// Bodies are unique in a run: `conformance <run> <n>`.
    run_id: String,
    sent: u32,
}

impl Ctx {
    fn client_error(&self, account: &Account, source: ClientError) -> ServerError {
        ServerError::Client {
            jid: account.jid.clone(),
            source,
        }
    }

    /// The owner logs in (initial presence: the offline backlog is
    /// delivered and so drained).
    async fn owner_login(&self, sm: bool) -> Result<Client, ServerError> {
        let owner = &self.opts.owner;
        Client::login(
            &self.opts.c2s,
            &self.opts.tls,
            owner,
            OWNER_RESOURCE,
            sm,
            true,
        )
        .await
        .map_err(|e| self.client_error(owner, e))
    }

    /// `<disable jid=domain [node]/>` as the owner; the iq's type.
    async fn disable(&self, owner: &mut Client, node: Option<&str>) -> Result<String, ServerError> {
        let mut disable =
            Element::new("disable", ns::PUSH).with_attr("jid", self.opts.domain.clone());
        if let Some(node) = node {
            disable = disable.with_attr("node", node);
        }
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_child(disable);
        let answer = owner
            .iq(iq)
            .await
            .map_err(|e| self.client_error(&self.opts.owner, e))?;
        Ok(iq_outcome(&answer))
    }

    /// `<enable/>` for a fresh random node with a publish-options form;
    /// returns the registration and the iq's outcome ("result" or the
    /// error condition).
    async fn enable(&self, owner: &mut Client) -> Result<(Registration, String), ServerError> {
        let node = random_token();
        let form = submit_form(
            Some(classify::PUBLISH_OPTIONS),
            &[
                ("secret", &random_token()),
                ("conformance-run", &self.run_id),
            ],
        );
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_child(
                Element::new("enable", ns::PUSH)
                    .with_attr("jid", self.opts.domain.clone())
                    .with_attr("node", node.clone())
                    .with_child(form.clone()),
            );
        let answer = owner
            .iq(iq)
            .await
            .map_err(|e| self.client_error(&self.opts.owner, e))?;
        Ok((Registration { node, form }, iq_outcome(&answer)))
    }

    /// Owner logs in, disables everything for the component, enables a
    /// fresh node and logs out: the only registration, owner offline.
    async fn fresh_registration(&mut self) -> Result<Registration, ServerError> {
        let mut owner = self.owner_login(false).await?;
        self.disable(&mut owner, None).await?;
        let (reg, outcome) = self.enable(&mut owner).await?;
        owner.close().await;
        if outcome != "result" {
            return Err(ServerError::Step(format!("<enable/> answered {outcome}")));
        }
        Ok(reg)
    }

    /// The sender sends a chat message to the owner: with a unique body
    /// (returned), or chat state only when `body` is false.
    async fn send_message(&mut self, body: bool) -> Result<String, ServerError> {
        self.sent += 1;
        let text = format!("conformance {} {}", self.run_id, self.sent);
        let mut msg = Element::new("message", ns::CLIENT)
            .with_attr("type", "chat")
            .with_attr("to", self.opts.owner.jid.clone())
            .with_attr("id", format!("{}-{}", self.run_id, self.sent));
        if body {
            msg = msg.with_child(Element::new("body", ns::CLIENT).with_text(text.clone()));
        }
        msg = msg.with_child(Element::new("active", ns::CHATSTATES));
        self.sender
            .send(&msg)
            .await
            .map_err(|e| self.client_error(&self.opts.sender, e))?;
        Ok(text)
    }

    /// One message; the publish it caused for `node`, if any within `wait`.
    async fn probe(&mut self, node: &str, wait: Duration) -> Result<Option<Publish>, ServerError> {
        self.send_message(true).await?;
        Ok(self.component.next_publish(node, wait).await)
    }

    /// Replaces the component connection (after a scenario closed it).
    async fn reconnect(&mut self) -> Result<(), ServerError> {
        self.component = connect_component(&self.opts).await?;
        Ok(())
    }

    /// How publishes are answered.
    fn answer(&self, answer: Answer) {
        self.component.set_answer(answer);
    }
}

/// "result", or "error:<condition>" for an iq answer.
fn iq_outcome(iq: &Element) -> String {
    match iq.attr("type") {
        Some("result") => "result".into(),
        Some("error") => format!(
            "error:{}",
            iq.child("error", ns::CLIENT)
                .map(crate::conformance::xml::error_condition)
                .unwrap_or_else(|| "none".into())
        ),
        other => format!("unexpected:{}", other.unwrap_or("")),
    }
}

/// A random node or secret: 16 bytes, hex.
fn random_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

async fn connect_component(opts: &ServerOptions) -> Result<Component, ServerError> {
    Component::connect(&opts.component, &opts.domain, &opts.secret)
        .await
        .map_err(|source| ServerError::Component {
            domain: opts.domain.clone(),
            source,
        })
}

/// XEP-0092 name and version of the server's domain, when it answers.
async fn software_version(sender: &mut Client, domain: &str) -> Option<String> {
    let iq = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("to", domain)
        .with_child(Element::new("query", ns::VERSION));
    let answer = sender.iq(iq).await.ok()?;
    let query = answer.child("query", ns::VERSION)?;
    let name = query.child("name", ns::VERSION)?.text.trim().to_owned();
    let version = query
        .child("version", ns::VERSION)
        .map(|v| v.text.trim().to_owned())
        .unwrap_or_default();
    Some(format!("{name} {version}").trim().to_owned())
}

/// Runs every scenario against the server and returns the table. Fails
/// only when the run cannot start (the component or a client cannot
/// connect); anything a scenario meets becomes a row.
pub async fn run(opts: ServerOptions) -> Result<Report, ServerError> {
    let mut rows: Vec<Row> = Vec::new();

    // The component first: without it nothing else means anything.
    let component = connect_component(&opts).await?;
    rows.push(row("component-handshake").pass("handshake accepted", true));

    let sender = Client::login(
        &opts.c2s,
        &opts.tls,
        &opts.sender,
        "conformance-sender",
        false,
        true,
    )
    .await
    .map_err(|source| ServerError::Client {
        jid: opts.sender.jid.clone(),
        source,
    })?;
    let mut ctx = Ctx {
        opts,
        component,
        sender,
        run_id: hex::encode(rand::random::<[u8; 4]>()),
        sent: 0,
    };
    let domain = ctx
        .opts
        .owner
        .split()
        .map(|(_, d)| d.to_owned())
        .unwrap_or_default();
    let software = software_version(&mut ctx.sender, &domain).await;

    // Clean slate: nothing left enabled for the component, no backlog.
    {
        let mut owner = ctx.owner_login(false).await?;
        ctx.disable(&mut owner, None).await?;
        owner.close().await;
    }

    for group in GROUPS {
        if !ctx.component.is_open() {
            let _ = ctx.reconnect().await;
        }
        ctx.answer(Answer::Result);
        match group.run(&mut ctx).await {
            Ok(mut done) => rows.append(&mut done),
            Err(e) => {
                for id in group.rows() {
                    if !rows.iter().any(|r| r.id == *id) {
                        let r = row(id);
                        rows.push(match r.requirement {
                            Must | Should => {
                                r.fail(format!("not run: {e}"), serde_json::Value::Null)
                            }
                            _ => r.skipped(format!("not run: {e}")),
                        });
                    }
                }
            }
        }
    }

    // Leave nothing behind: registrations disabled, backlog drained.
    ctx.answer(Answer::Result);
    if let Ok(mut owner) = ctx.owner_login(false).await {
        let _ = ctx.disable(&mut owner, None).await;
        owner.close().await;
    }
    ctx.sender.close().await;
    ctx.component.close().await;

    // Report order is the contract's; rows a group forgot are failures of
    // the kit, shown as skipped.
    let mut ordered = Vec::with_capacity(ROWS.len());
    for spec in ROWS {
        match rows.iter().position(|r| r.id == spec.id) {
            Some(i) => ordered.push(rows.swap_remove(i)),
            None => ordered.push(row(spec.id).skipped("no scenario filled this row")),
        }
    }
    // No timings in the target: committed tables stay stable across runs.
    let target = format!(
        "c2s {} / component {} ({})",
        ctx.opts.c2s, ctx.opts.component, ctx.opts.domain
    );
    Ok(Report {
        mode: Mode::Server,
        target,
        software,
        rows: ordered,
    })
}

/// Whether a row's verdict counts against the server (for the CLI's exit
/// status the report's own [`Report::failed`] is used; this is for tests).
#[cfg(test)]
fn is_failure(row: &Row) -> bool {
    row.verdict == crate::conformance::Verdict::Fail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_belongs_to_exactly_one_group_or_the_run() {
        for spec in ROWS {
            let owners = GROUPS
                .iter()
                .filter(|g| g.rows().contains(&spec.id))
                .count();
            let expected = usize::from(spec.id != "component-handshake");
            assert_eq!(owners, expected, "row {}", spec.id);
        }
        for group in GROUPS {
            for id in group.rows() {
                assert!(ROWS.iter().any(|r| r.id == *id), "unknown row {id}");
            }
        }
    }

    #[test]
    fn row_ids_are_unique_and_kebab_case() {
        let mut ids: Vec<&str> = ROWS.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ROWS.len());
        assert!(
            ROWS.iter()
                .all(|r| r.id.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        );
    }

    #[test]
    fn a_none_row_is_never_a_failure() {
        let r = row("publish-from").judged(false, "x", "other");
        assert!(!is_failure(&r));
        let r = row("publish-to").judged(false, "x", false);
        assert!(is_failure(&r));
        assert_eq!(r.id, "publish-to");
    }

    #[test]
    fn iq_outcomes() {
        let ok = Element::parse("<iq xmlns='jabber:client' type='result'/>").unwrap();
        assert_eq!(iq_outcome(&ok), "result");
        let err = Element::parse(
            "<iq xmlns='jabber:client' type='error'><error type='cancel'>\
             <not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        )
        .unwrap();
        assert_eq!(iq_outcome(&err), "error:not-allowed");
    }
}
