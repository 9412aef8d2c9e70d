//! mod_push_appserver's XEP-0050 dialect, version 1 (`docs/interop.md`, "Monal's
//! older app server"), as older Monal builds send it: `v1-register-push`
//! with form fields `type` (`apns` | `fcm`), `node` (a device UUID the
//! client chose) and `token`, answered with `jid`, `node` and `secret`;
//! `v1-unregister-push` with `type` and `node`.
//!
//! Why the node is bound to its account: mod_push_appserver hands the
//! existing secret to whoever registers a known node again, so anyone who
//! learns a node can take over its pushes. Here the node belongs to the
//! bare JID that registered it first: that account registering it again
//! updates the token and gets the same secret back; any other account (and
//! any node another dialect holds) is refused with `cancel`/`conflict`,
//! the same answer whoever holds it, without the secret. The check and the
//! write are one statement (`RegistrationStore::register_client_node`), so
//! two accounts racing for one node cannot both win on SQLite or
//! PostgreSQL.
//!
//! mod_push_appserver's HTTP variant (`POST /push_appserver/v1/register`)
//! is not offered: it has no authenticated JID to bind a node to.

use crate::config::{DialectTarget, PushAppserverConfig};
use crate::store::{ClientNodeOutcome, NewRegistration, NodeForLog};
use crate::xmpp::Element;
use crate::xmpp::dataform::DataForm;
use crate::xmpp::stanza::{DefinedCondition, ErrorType, StanzaError};

use super::adhoc::CommandRequest;
use super::{Begun, CommandItem, Context};

/// The dialect's name in the registrations table.
pub const DIALECT: &str = "push_appserver";

/// The longest node accepted (a UUID is 36 characters).
pub const MAX_NODE_LEN: usize = 128;
/// The shortest node accepted: a short name is easy to take first.
pub const MIN_NODE_LEN: usize = 8;

/// The two commands of this dialect, by command node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `v1-register-push`.
    Register,
    /// `v1-unregister-push`.
    Unregister,
}

impl Kind {
    /// The command node.
    pub fn node(self) -> &'static str {
        match self {
            Kind::Register => "v1-register-push",
            Kind::Unregister => "v1-unregister-push",
        }
    }
}

impl<'a> TryFrom<&'a str> for Kind {
    type Error = &'a str;

    /// The command a node names, if it is one of this dialect's; the node
    /// back otherwise.
    fn try_from(node: &'a str) -> Result<Self, &'a str> {
        [Kind::Register, Kind::Unregister]
            .into_iter()
            .find(|k| k.node() == node)
            .ok_or(node)
    }
}

/// The form's `type`: which push service the token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushType {
    Apns,
    Fcm,
}

impl PushType {
    /// The name in forms and in `[dialects.push_appserver] types`.
    pub fn as_str(self) -> &'static str {
        match self {
            PushType::Apns => "apns",
            PushType::Fcm => "fcm",
        }
    }
}

impl<'a> TryFrom<&'a str> for PushType {
    type Error = &'a str;

    /// `apns` or `fcm`; the text back otherwise.
    fn try_from(text: &'a str) -> Result<Self, &'a str> {
        match text {
            "apns" => Ok(PushType::Apns),
            "fcm" => Ok(PushType::Fcm),
            other => Err(other),
        }
    }
}

/// Why a submitted form is refused (`modify`/`bad-request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("unknown type {0:?} (apns or fcm)")]
    UnknownType(String),
    #[error(
        "node must be {MIN_NODE_LEN} to {MAX_NODE_LEN} characters of A-Z, a-z, 0-9, '-', '_', '.'"
    )]
    BadNode,
}

impl From<FormError> for StanzaError {
    fn from(e: FormError) -> Self {
        StanzaError::bad_request(e.to_string())
    }
}

/// The fields of a `v1-register-push` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterForm {
    pub push_type: PushType,
    pub node: String,
    pub token: String,
}

/// The fields of a `v1-unregister-push` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnregisterForm {
    pub push_type: PushType,
    pub node: String,
}

fn required<'f>(form: &'f DataForm, var: &'static str) -> Result<&'f str, FormError> {
    form.non_empty(var)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(FormError::Missing(var))
}

fn push_type(form: &DataForm) -> Result<PushType, FormError> {
    PushType::try_from(required(form, "type")?).map_err(|t| FormError::UnknownType(t.into()))
}

/// A client-chosen node: a device UUID in practice. Only URL- and XML-safe
/// characters, so that it travels unchanged through `<enable/>` and logs.
fn node(form: &DataForm) -> Result<String, FormError> {
    let node = required(form, "node")?;
    let ok = (MIN_NODE_LEN..=MAX_NODE_LEN).contains(&node.len())
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(node.to_owned())
    } else {
        Err(FormError::BadNode)
    }
}

impl TryFrom<&DataForm> for RegisterForm {
    type Error = FormError;

    fn try_from(form: &DataForm) -> Result<Self, FormError> {
        Ok(RegisterForm {
            push_type: push_type(form)?,
            node: node(form)?,
            token: required(form, "token")?.to_owned(),
        })
    }
}

impl TryFrom<&DataForm> for UnregisterForm {
    type Error = FormError;

    fn try_from(form: &DataForm) -> Result<Self, FormError> {
        Ok(UnregisterForm {
            push_type: push_type(form)?,
            node: node(form)?,
        })
    }
}

/// A register or unregister command of this dialect.
#[derive(Debug)]
pub struct Command {
    request: CommandRequest,
    kind: Kind,
}

impl Command {
    /// The command when `request`'s node is one of this dialect's and the
    /// dialect is configured; the request back otherwise.
    pub fn from_request(
        request: CommandRequest,
        config: Option<&PushAppserverConfig>,
    ) -> Result<Command, CommandRequest> {
        match (config, Kind::try_from(request.node.as_str())) {
            (Some(_), Ok(kind)) => Ok(Command { request, kind }),
            _ => Err(request),
        }
    }

    /// Runs the command for `ctx.from`.
    pub async fn apply(self, ctx: &Context<'_>) -> Result<Element, StanzaError> {
        let cmd = &self.request;
        let Some(config) = &ctx.dialects.push_appserver else {
            return Err(StanzaError::item_not_found());
        };
        let (owner, form) = match super::begin(cmd, ctx, || blank_form(self.kind))? {
            Begun::Answered(answer) => return Ok(answer),
            Begun::Submitted { owner, form } => (owner, form),
        };
        match self.kind {
            Kind::Register => register(ctx, config, cmd, form.try_into()?, owner).await,
            Kind::Unregister => unregister(ctx, config, cmd, form.try_into()?, owner).await,
        }
    }
}

/// The app (and environment) a type means.
fn target(
    config: &PushAppserverConfig,
    push_type: PushType,
) -> Result<&DialectTarget, StanzaError> {
    config.types.get(push_type.as_str()).ok_or_else(|| {
        StanzaError::item_not_found()
            .with_text(format!("no push service for type {:?}", push_type.as_str()))
    })
}

/// The one answer for a node this account may not have, whoever holds it.
fn node_refused() -> StanzaError {
    StanzaError::new(ErrorType::Cancel, DefinedCondition::Conflict)
        .with_text("this node is not available; choose another")
}

async fn register(
    ctx: &Context<'_>,
    config: &PushAppserverConfig,
    cmd: &CommandRequest,
    form: RegisterForm,
    owner: String,
) -> Result<Element, StanzaError> {
    let target = target(config, form.push_type)?;
    let app = target.app().to_owned();
    super::validate_token(ctx.backends, &app, &form.token)?;
    let new = NewRegistration {
        // The node is the device's id: one account's devices are told
        // apart by it.
        device_id: form.node.clone(),
        muc: String::new(),
        app,
        token: form.token,
        with_secret: true,
        dialect: DIALECT,
        second_token: String::new(),
        environment: target.environment(),
        owner,
    };
    let max_per_account = ctx.store.register_limits().max_per_account();
    let outcome = ctx
        .store
        .register_client_node(&new, &form.node, max_per_account.into())
        .await
        .map_err(super::storage_error)?;
    let reg = match outcome {
        ClientNodeOutcome::Registered(reg) => *reg,
        ClientNodeOutcome::AtCap => return Err(super::at_cap(ctx.store, &new.owner)),
        ClientNodeOutcome::Taken => {
            tracing::warn!(owner = %new.owner, "v1-register-push for a node the account does not hold");
            return Err(node_refused());
        }
    };
    super::log_registered(&reg);
    Ok(cmd.completed(Some(super::credentials_form(ctx.component_jid, &reg))))
}

async fn unregister(
    ctx: &Context<'_>,
    config: &PushAppserverConfig,
    cmd: &CommandRequest,
    form: UnregisterForm,
    owner: String,
) -> Result<Element, StanzaError> {
    let app = target(config, form.push_type)?.app();
    let removed = ctx
        .store
        .unregister_node(&owner, app, &form.node, DIALECT)
        .await
        .map_err(super::storage_error)?;
    if !removed {
        // The same answer for a node of another account as for none.
        tracing::info!(%owner, %app, "v1-unregister-push matched no registration of the account");
        return Err(StanzaError::item_not_found().with_text("no registration of this node"));
    }
    tracing::info!(%owner, %app, node = %NodeForLog(&form.node), "device unregistered");
    Ok(cmd.completed(None))
}

/// The commands this dialect offers while it is configured.
pub fn items(config: Option<&PushAppserverConfig>) -> Vec<CommandItem> {
    if config.is_none() {
        return Vec::new();
    }
    vec![
        CommandItem {
            node: Kind::Register.node().into(),
            name: "Register a device (mod_push_appserver v1)".into(),
        },
        CommandItem {
            node: Kind::Unregister.node().into(),
            name: "Unregister a device (mod_push_appserver v1)".into(),
        },
    ]
}

/// The form a generic client is shown when it executes without one.
fn blank_form(kind: Kind) -> DataForm {
    let form = DataForm::new("form")
        .field("type", Some("text-single"), "")
        .field("node", Some("text-single"), "");
    match kind {
        Kind::Register => form.field("token", Some("text-single"), ""),
        Kind::Unregister => form,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)]) -> DataForm {
        fields
            .iter()
            .fold(DataForm::new("submit"), |f, (var, value)| {
                f.field(var, None, value)
            })
    }

    const UUID: &str = "6F9619FF-8B86-D011-B42D-00C04FC964FF";

    #[test]
    fn register_form_has_the_v1_fields() {
        // The fields of `docs/interop.md`, "Monal's older app server".
        let f = form(&[("type", "apns"), ("node", UUID), ("token", "a1b2")]);
        assert_eq!(
            RegisterForm::try_from(&f),
            Ok(RegisterForm {
                push_type: PushType::Apns,
                node: UUID.into(),
                token: "a1b2".into(),
            })
        );
        let f = form(&[("type", "fcm"), ("node", UUID), ("token", "x")]);
        assert_eq!(RegisterForm::try_from(&f).unwrap().push_type, PushType::Fcm);
    }

    #[test]
    fn register_form_refuses_what_is_missing_or_unknown() {
        let f = form(&[("node", UUID), ("token", "a")]);
        assert_eq!(RegisterForm::try_from(&f), Err(FormError::Missing("type")));
        let f = form(&[("type", "webpush"), ("node", UUID), ("token", "a")]);
        assert_eq!(
            RegisterForm::try_from(&f),
            Err(FormError::UnknownType("webpush".into()))
        );
        let f = form(&[("type", "apns"), ("node", UUID)]);
        assert_eq!(RegisterForm::try_from(&f), Err(FormError::Missing("token")));
        let f = form(&[("type", "apns"), ("token", "a")]);
        assert_eq!(RegisterForm::try_from(&f), Err(FormError::Missing("node")));
    }

    #[test]
    fn nodes_are_bounded_and_safe() {
        let register = |node: &str| {
            RegisterForm::try_from(&form(&[("type", "fcm"), ("node", node), ("token", "t")]))
        };
        assert!(register(UUID).is_ok());
        assert!(register("abc.def_0-9").is_ok());
        assert!(register(&"n".repeat(MAX_NODE_LEN)).is_ok());
        for bad in [
            "short",
            &"n".repeat(MAX_NODE_LEN + 1),
            "has space in it",
            "slash/in/node",
            "quote'node'x",
            "amp&node&xx",
            "ünïcödé-node",
        ] {
            assert_eq!(register(bad), Err(FormError::BadNode), "{bad}");
        }
    }

    #[test]
    fn unregister_form_has_type_and_node() {
        let f = form(&[("type", "apns"), ("node", UUID)]);
        assert_eq!(
            UnregisterForm::try_from(&f),
            Ok(UnregisterForm {
                push_type: PushType::Apns,
                node: UUID.into(),
            })
        );
        assert_eq!(
            UnregisterForm::try_from(&form(&[("type", "apns")])),
            Err(FormError::Missing("node"))
        );
    }

    #[test]
    fn command_nodes_and_types_are_closed_sets() {
        assert_eq!(Kind::try_from("v1-register-push"), Ok(Kind::Register));
        assert_eq!(Kind::try_from("v1-unregister-push"), Ok(Kind::Unregister));
        assert!(Kind::try_from("register-push-apns").is_err());
        assert_eq!(PushType::try_from("APNS"), Err("APNS"));
    }
}
