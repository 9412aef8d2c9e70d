//! App-server mode: the kit plays the XMPP server side of XEP-0114
//! (`jabber:component:accept`) toward any App Server and checks what the
//! spec and real servers need from it (docs/answers.md): the handshake,
//! disco, the answer to each kind of publish, one answer per iq, silence
//! towards results, errors, messages and presence, survival of hostile
//! input, and the registration dialects it claims.
//!
//! Why a table: every row the mode can produce is declared once in
//! [`ROWS`] (id, scenario, requirement, reference); the group files
//! (`handshake.rs`, `disco.rs`, `answers.rs`, `silence.rs`, `hostile.rs`,
//! `dialects.rs`, `totals.rs`) only decide verdicts, so the row list,
//! references and order live in one place. [`run`] dispatches the groups
//! in [`GROUPS`] order over one [`session::Session`].

mod answers;
pub mod cli;
mod dialects;
mod disco;
mod handshake;
mod hostile;
mod session;
mod silence;
mod stanzas;
pub mod test_app;
mod totals;

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use tokio::net::TcpListener;

use super::{Mode, Report, Requirement, Row};
use session::Session;

/// The default bound on waiting for the App Server to connect (and to come
/// back after a stream the kit broke).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// A registration dialect the App Server claims to speak; its commands
/// and fields are those of `component/src/register/*.rs` and
/// `component/tests/dialects.rs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Conversations: `register-push-<app>` / `unregister-push-<app>`
    /// (fixture `prosody-register-push-fcm.xml`).
    Conversations {
        /// The app part of the command node, e.g. `fcm`.
        app: String,
    },
    /// Siskin/Tigase: `register-device` / `unregister-device` with a
    /// `provider`, e.g. `tigase:messenger:apns:1`.
    Siskin {
        /// The provider field's value.
        provider: String,
    },
    /// mod_push_appserver v1: `v1-register-push` / `v1-unregister-push`
    /// with a `type`, e.g. `fcm`.
    PushAppserver {
        /// The type field's value.
        kind: String,
    },
}

impl Dialect {
    /// `conversations:fcm`, as given on the command line.
    pub fn name(&self) -> String {
        match self {
            Dialect::Conversations { app } => format!("conversations:{app}"),
            Dialect::Siskin { provider } => format!("siskin:{provider}"),
            Dialect::PushAppserver { kind } => format!("push-appserver:{kind}"),
        }
    }

    /// The row id of this dialect's check: `dialect-` and the name in
    /// kebab-case (`dialect-conversations-fcm`).
    pub fn row_id(&self) -> String {
        let kebab: String = self
            .name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        format!("dialect-{kebab}")
    }
}

/// Why a `--dialect` value was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown dialect {0:?}: expected conversations:<app>, siskin:<provider> or push-appserver:<type>"
)]
pub struct DialectParseError(String);

impl FromStr for Dialect {
    type Err = DialectParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DialectParseError(s.to_owned());
        let (family, rest) = s.split_once(':').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        let rest = rest.to_owned();
        match family {
            "conversations" => Ok(Dialect::Conversations { app: rest }),
            "siskin" => Ok(Dialect::Siskin { provider: rest }),
            "push-appserver" => Ok(Dialect::PushAppserver { kind: rest }),
            _ => Err(bad()),
        }
    }
}

/// Where the kit listens for the App Server.
#[derive(Debug)]
pub enum Listen {
    /// Bind this address.
    Addr(SocketAddr),
    /// Use a listener the caller bound (tests bind port 0 and hand the
    /// port to the App Server).
    Listener(TcpListener),
}

/// Everything a run needs.
#[derive(Debug)]
pub struct AppServerOptions {
    /// Where the App Server connects.
    pub listen: Listen,
    /// The component domain the App Server serves, e.g. `push.example.org`.
    pub domain: String,
    /// The XEP-0114 shared secret.
    pub secret: String,
    /// The domain publishes come from (the bare server domain, as real
    /// servers send them: docs/answers.md) and clients register from.
    pub user_domain: String,
    /// The registration dialects the App Server claims.
    pub dialects: Vec<Dialect>,
    /// The control API of a running `nudge-test-app serve` the App Server
    /// pushes to (e.g. `http://127.0.0.1:8080`); rows that need it are
    /// skipped without it.
    pub test_app: Option<String>,
    /// Bound on waiting for the App Server to connect or come back.
    pub wait: Duration,
}

impl AppServerOptions {
    /// Options with the defaults: user domain `localhost`, no dialects, no
    /// test-app, [`DEFAULT_WAIT`].
    pub fn new(listen: Listen, domain: &str, secret: &str) -> AppServerOptions {
        AppServerOptions {
            listen,
            domain: domain.to_owned(),
            secret: secret.to_owned(),
            user_domain: "localhost".to_owned(),
            dialects: Vec::new(),
            test_app: None,
            wait: DEFAULT_WAIT,
        }
    }
}

/// Why no report could be produced.
#[derive(Debug, thiserror::Error)]
pub enum AppServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The App Server never connected.
    #[error("no App Server connected within {0:?}")]
    NoConnection(Duration),
    /// The listener failed.
    #[error("accepting a connection failed: {0}")]
    Accept(std::io::Error),
}

/// One row the mode can produce.
pub struct RowSpec {
    /// Stable id.
    pub id: &'static str,
    /// What the kit does, one sentence.
    pub scenario: &'static str,
    /// What the spec (or real servers) asks.
    pub requirement: Requirement,
    /// Where the requirement comes from.
    pub reference: &'static str,
}

impl RowSpec {
    /// A fresh (skipped) row of this spec.
    pub fn row(&self) -> Row {
        Row::new(self.id, self.scenario, self.requirement, self.reference)
    }
}

const fn spec(
    id: &'static str,
    scenario: &'static str,
    requirement: Requirement,
    reference: &'static str,
) -> RowSpec {
    RowSpec {
        id,
        scenario,
        requirement,
        reference,
    }
}

use Requirement::{Must, Should};

/// Every row of the mode, in report order. `dialect-<name>` rows (one per
/// claimed dialect) follow [`DIALECT_ROW`].
pub const ROWS: &[RowSpec] = &[
    spec(
        "handshake",
        "The App Server opens a jabber:component:accept stream to the domain and sends the handshake digest sha1(stream id + secret); a wrong one gets the not-authorized stream error.",
        Must,
        "XEP-0114 §3",
    ),
    spec(
        "disco-info",
        "disco#info get to the component domain.",
        Must,
        "RFC 6120 §8.2.3, XEP-0030 §3.1",
    ),
    spec(
        "disco-push-identity",
        "The disco#info answer carries identity pubsub/push and feature urn:xmpp:push:0.",
        Should,
        "XEP-0357 §6",
    ),
    spec(
        "iq-unknown",
        "An iq get of an unknown namespace to the domain.",
        Must,
        "RFC 6120 §8.2.3",
    ),
    spec(
        "publish-unknown-node",
        "A publish to a node nobody registered.",
        Should,
        "docs/answers.md",
    ),
    spec(
        "publish-wrong-secret",
        "A publish to a registered node with a wrong secret.",
        Should,
        "docs/answers.md",
    ),
    spec(
        "publish-no-secret",
        "A publish to a registered node without publish-options.",
        Should,
        "docs/answers.md",
    ),
    spec(
        "publish-malformed",
        "A pubsub publish to a registered node with no item and no notification.",
        Should,
        "docs/answers.md",
    ),
    spec(
        "publish-accepted",
        "Prosody's publish (fixture prosody-publish-body-sender.xml) to a registered node.",
        Must,
        "XEP-0357 §7, docs/answers.md",
    ),
    spec(
        "publish-empty-notification",
        "ejabberd's publish with an empty <notification/> (fixture ejabberd-publish-empty.xml).",
        Must,
        "XEP-0357 §7, docs/answers.md",
    ),
    spec(
        "publish-transient",
        "A publish while the provider answers 503 (test-app fault).",
        Must,
        "docs/answers.md",
    ),
    spec(
        "publish-dead-token",
        "A publish while the provider declares the token dead (410 / UNREGISTERED), then another to the same node.",
        Should,
        "docs/answers.md",
    ),
    spec(
        "silent-to-result",
        "An iq result nobody asked for, sent to the domain.",
        Must,
        "RFC 6120 §8.2.3",
    ),
    spec(
        "silent-to-error",
        "An iq error nobody asked for, sent to the domain.",
        Must,
        "RFC 6120 §8.2.3",
    ),
    spec(
        "silent-to-message",
        "A message from a user to the domain.",
        Should,
        "RFC 6120 §8.2.3, docs/answers.md",
    ),
    spec(
        "silent-to-presence",
        "A presence from a user to the domain.",
        Should,
        "RFC 6120 §8.2.3, docs/answers.md",
    ),
    spec(
        "survives-malformed",
        "Not well-formed XML on the stream, then a publish.",
        Must,
        "RFC 6120 §4.9.3.13, docs/answers.md",
    ),
    spec(
        "survives-restricted",
        "An XML comment, a processing instruction, a DOCTYPE and an undeclared entity, each on its own stream, then a publish.",
        Must,
        "RFC 6120 §11.1, docs/answers.md",
    ),
    spec(
        "survives-oversize",
        "A 2 MB publish, then a normal one.",
        Must,
        "docs/answers.md",
    ),
    spec(
        "answer-in-time",
        "Every publish the kit sent was answered within 30 s.",
        Must,
        "docs/answers.md",
    ),
    spec(
        "one-answer-per-iq",
        "No iq of the kit's was answered twice over the whole run.",
        Must,
        "RFC 6120 §8.2.3",
    ),
];

/// The template of the per-dialect rows (`dialect-<name>`).
pub const DIALECT_ROW: RowSpec = spec(
    "dialect-",
    "Register with the dialect's command from a client JID, check the completed form, publish with it, unregister, publish again.",
    Must,
    "XEP-0050 §4, XEP-0357 §5, component/src/register/",
);

/// The spec of row `id` (a bug in the kit if it is not in [`ROWS`]; an
/// unknown id gives a row that says so rather than a panic).
pub(crate) fn row(id: &str) -> Row {
    match ROWS.iter().find(|s| s.id == id) {
        Some(s) => s.row(),
        None => Row::new(id, "unknown row", Requirement::None, ""),
    }
}

/// The groups of checks, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Handshake,
    Disco,
    Answers,
    Silence,
    Hostile,
    Dialects,
    Totals,
}

const GROUPS: &[Group] = &[
    Group::Handshake,
    Group::Disco,
    Group::Answers,
    Group::Silence,
    Group::Hostile,
    Group::Dialects,
    Group::Totals,
];

/// Runs every check against the App Server that connects, and reports.
pub async fn run(opts: AppServerOptions) -> Result<Report, AppServerError> {
    let listener = match opts.listen {
        Listen::Listener(l) => l,
        Listen::Addr(addr) => TcpListener::bind(addr)
            .await
            .map_err(|source| AppServerError::Bind { addr, source })?,
    };
    let target = listener
        .local_addr()
        .map(|a| format!("App Server for {} via {a}", opts.domain))
        .unwrap_or_else(|_| opts.domain.clone());
    let control = opts.test_app.as_deref().map(test_app::Control::new);
    let mut session = Session::new(
        listener,
        &opts.domain,
        &opts.secret,
        &opts.user_domain,
        opts.wait,
    );
    let mut rows = Vec::new();
    for group in GROUPS {
        let produced = match group {
            Group::Handshake => handshake::check(&mut session).await?,
            Group::Disco => disco::check(&mut session).await,
            Group::Answers => answers::check(&mut session, &opts.dialects, control.as_ref()).await,
            Group::Silence => silence::check(&mut session).await,
            Group::Hostile => hostile::check(&mut session).await,
            Group::Dialects => dialects::check(&mut session, &opts.dialects).await,
            Group::Totals => totals::check(&mut session).await,
        };
        rows.extend(produced);
    }
    session.close().await;
    // Report order is the table's, whatever order the groups ran in.
    // The dialect rows go before the run-wide ones (stable sort: they were
    // produced before them).
    let order = |r: &Row| {
        let id = if r.id.starts_with(DIALECT_ROW.id) {
            "answer-in-time"
        } else {
            r.id.as_str()
        };
        ROWS.iter().position(|s| s.id == id).unwrap_or(ROWS.len())
    };
    rows.sort_by_key(order);
    Ok(Report {
        mode: Mode::AppServer,
        target,
        software: session.software.take(),
        rows,
    })
}
