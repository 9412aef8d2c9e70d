//! Device registration over XEP-0050 ad-hoc commands: the generic command
//! protocol (`adhoc`) and the dialects real clients already speak, one file
//! each, as in `tests/fixtures/README.md`'s captures and the README's
//! section per client:
//!
//! - `conversations`: `register-push-<name>` / `unregister-push-<name>`
//!   (Conversations and most Android clients);
//! - `siskin`: `register-device` / `unregister-device` (Siskin and other
//!   Tigase clients; on with `[dialects.siskin]`);
//! - `push_appserver`: `v1-register-push` / `v1-unregister-push`
//!   (mod_push_appserver, older Monal builds; on with
//!   `[dialects.push_appserver]`);
//! - `webpush`: Conversations' nodes for an app whose provider is Web Push,
//!   with a browser subscription's fields (Converse.js, Movim, UnifiedPush).
//!
//! [`Command`] is the one place a command node is matched to its dialect
//! ([`Command::from_request`]) and run ([`Command::apply`]); disco lists
//! what each dialect answers ([`command_items`]). Every dialect shares the
//! checks here: only accounts register, each command counts against the
//! account's rate, a new registration against its cap (`limits`).

pub mod adhoc;
pub mod conversations;
pub mod limits;
pub mod push_appserver;
pub mod siskin;
pub mod webpush;

use crate::config::DialectsConfig;
use crate::dispatch::{Backends, ResolveError};
use crate::store::{NewRegistration, Registration, RegistrationStore, StoreError};
use crate::xmpp::Element;
use crate::xmpp::dataform::DataForm;
use crate::xmpp::jid::Jid;
use crate::xmpp::stanza::StanzaError;

use adhoc::{Action, CommandRequest};

/// What a registration command runs against.
pub struct Context<'a> {
    /// The requesting client's full JID.
    pub from: &'a Jid,
    /// This component's JID, handed out as the `jid` to enable push with.
    pub component_jid: &'a str,
    /// The configured apps.
    pub backends: &'a Backends,
    /// The registrations.
    pub store: &'a RegistrationStore,
    /// The dialects' settings (`[dialects]`).
    pub dialects: &'a DialectsConfig,
}

/// A registration command of one of the dialects: one variant per file.
#[derive(Debug)]
pub enum Command {
    /// `register-push-<name>` / `unregister-push-<name>`.
    Conversations(conversations::Command),
    /// `register-device` / `unregister-device`.
    Siskin(siskin::Command),
    /// `v1-register-push` / `v1-unregister-push`.
    PushAppserver(push_appserver::Command),
    /// `register-push-<name>` / `unregister-push-<name>` of a Web Push app.
    WebPush(webpush::Command),
}

impl Command {
    /// The dialect command `request`'s node names; the request back when no
    /// dialect answers that node (`item-not-found`).
    pub fn from_request(
        request: CommandRequest,
        backends: &Backends,
        dialects: &DialectsConfig,
    ) -> Result<Command, CommandRequest> {
        let request = match siskin::Command::from_request(request, dialects.siskin.as_ref()) {
            Ok(cmd) => return Ok(Command::Siskin(cmd)),
            Err(request) => request,
        };
        let request = match push_appserver::Command::from_request(
            request,
            dialects.push_appserver.as_ref(),
        ) {
            Ok(cmd) => return Ok(Command::PushAppserver(cmd)),
            Err(request) => request,
        };
        // Before Conversations': the same nodes, for a Web Push app.
        let request = match webpush::Command::from_request(request, backends) {
            Ok(cmd) => return Ok(Command::WebPush(cmd)),
            Err(request) => request,
        };
        let request = match conversations::Command::from_request(request, backends) {
            Ok(cmd) => return Ok(Command::Conversations(cmd)),
            Err(request) => request,
        };
        Err(request)
    }

    /// Runs the command; the payload of the iq result, or the iq's error.
    pub async fn apply(self, ctx: &Context<'_>) -> Result<Element, StanzaError> {
        match self {
            Command::Conversations(cmd) => cmd.apply(ctx).await,
            Command::Siskin(cmd) => cmd.apply(ctx).await,
            Command::PushAppserver(cmd) => cmd.apply(ctx).await,
            Command::WebPush(cmd) => cmd.apply(ctx).await,
        }
    }
}

/// One command a dialect offers, for disco#items on the commands node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandItem {
    /// The command node.
    pub node: String,
    /// Its human-readable name.
    pub name: String,
}

/// Every command the configured dialects answer.
pub fn command_items(backends: &Backends, dialects: &DialectsConfig) -> Vec<CommandItem> {
    let mut items = conversations::items(backends);
    items.extend(siskin::items(dialects.siskin.as_ref()));
    items.extend(push_appserver::items(dialects.push_appserver.as_ref()));
    items
}

/// How every dialect's command begins.
pub enum Begun<'c> {
    /// Answered already: a cancel confirmed, or the blank form sent to a
    /// client that executed the command without one.
    Answered(Element),
    /// A submitted form of an account, counted against its rate.
    Submitted {
        /// The account's bare JID.
        owner: String,
        /// The submitted form.
        form: &'c DataForm,
    },
}

/// The start all dialects share: a cancel is confirmed, only accounts go
/// on, a command executed without a form gets `blank`, and a submitted form
/// counts against the account's rate.
pub fn begin<'c>(
    cmd: &'c CommandRequest,
    ctx: &Context<'_>,
    blank: impl FnOnce() -> DataForm,
) -> Result<Begun<'c>, StanzaError> {
    if cmd.action == Action::Cancel {
        return Ok(Begun::Answered(cmd.canceled()));
    }
    let owner = account(ctx.from)?;
    let Some(form) = &cmd.form else {
        return Ok(Begun::Answered(cmd.executing(blank())));
    };
    check_rate(ctx.store, &owner)?;
    Ok(Begun::Submitted { owner, form })
}

/// The bare JID of the requesting account; servers and components do not
/// register devices.
pub fn account(from: &Jid) -> Result<String, StanzaError> {
    if from.local().is_none() {
        return Err(StanzaError::forbidden().with_text("only accounts can register devices"));
    }
    Ok(from.bare())
}

/// Counts a command against the account's rate.
pub fn check_rate(store: &RegistrationStore, owner: &str) -> Result<(), StanzaError> {
    store.register_limits().check_rate(owner).map_err(|e| {
        tracing::warn!(%owner, error = %e, "registration command refused");
        e.to_stanza_error()
    })
}

/// A store failure, as a command's answer (`wait`: retrying may work).
pub fn storage_error(e: StoreError) -> StanzaError {
    tracing::error!(error = %e, "registration store failed");
    StanzaError::internal_server_error("storage unavailable")
}

/// The app a name in a command means (an app, or a provider one app alone
/// uses), or the command's error.
pub fn resolve_app(backends: &Backends, name: &str) -> Result<String, StanzaError> {
    match backends.resolve(name) {
        Ok(app) => Ok(app.to_owned()),
        Err(ResolveError::Unknown) => {
            Err(StanzaError::item_not_found()
                .with_text(format!("no push service named {name:?} here")))
        }
        Err(ResolveError::Ambiguous) => Err(StanzaError::item_not_found().with_text(format!(
            "several apps use provider {name:?}; use the command of the app (register-push-<app>)"
        ))),
    }
}

/// Checks a token's format with the app's backend, as a command's answer.
pub fn validate_token(backends: &Backends, app: &str, token: &str) -> Result<(), StanzaError> {
    check_token(backends, app, token).map_err(|e| StanzaError::bad_request(e.to_string()))
}

/// Checks a token's format with the app's backend (every way in that takes
/// a token: the dialects here and the HTTP API, `http/registrations.rs`).
pub fn check_token(
    backends: &Backends,
    app: &str,
    token: &str,
) -> Result<(), nudge_plugins::InvalidTokenFormat> {
    match backends.get(app) {
        Some(backend) => backend.validate_token(token),
        None => Ok(()),
    }
}

/// Stores a registration within the account's cap: a new one beyond it is
/// refused (`modify`/`policy-violation`), a re-registration goes through.
pub async fn register(
    store: &RegistrationStore,
    new: &NewRegistration,
) -> Result<Registration, StanzaError> {
    let limits = store.register_limits();
    let Some(reg) = store
        .register_within(new, limits.max_per_account().into())
        .await
        .map_err(storage_error)?
    else {
        return Err(at_cap(store, &new.owner));
    };
    log_registered(&reg);
    Ok(reg)
}

/// The answer to a new registration of an account at its cap.
pub fn at_cap(store: &RegistrationStore, owner: &str) -> StanzaError {
    let e = store.register_limits().too_many(owner);
    tracing::warn!(%owner, error = %e, "registration refused");
    e.to_stanza_error()
}

/// Logs a registration stored (new, or a device registering again).
pub fn log_registered(reg: &Registration) {
    tracing::info!(
        owner = %reg.owner,
        app = %reg.app,
        node = %reg.node_for_log(),
        dialect = %reg.dialect,
        "device registered"
    );
}

/// The answer of the dialects that hand out a secret: the `jid` to enable
/// push with, the `node` and its `secret`.
pub fn credentials_form(component_jid: &str, reg: &Registration) -> DataForm {
    DataForm::new("result")
        .field("jid", Some("jid-single"), component_jid)
        .field("node", Some("text-single"), &reg.node)
        .field(
            "secret",
            Some("text-private"),
            reg.secret.as_deref().unwrap_or(""),
        )
}

/// The APNs environment a form names in `field`, if any.
pub fn environment(value: Option<&str>) -> Result<Option<nudge_plugins::Environment>, StanzaError> {
    value
        .map(|v| {
            v.parse().map_err(|e: nudge_plugins::UnknownEnvironment| {
                StanzaError::bad_request(e.to_string())
            })
        })
        .transpose()
}
