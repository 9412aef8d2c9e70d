//! The Conversations dialect (`docs/interop.md`, "Conversations'
//! dialect"): `register-push-<name>` with fields `token`, `device-id`
//! (older clients: `android-id`) and optional `muc`;
//! `unregister-push-<name>` with `device-id`/`android-id` and `channel`.
//! The registration belongs to the sender's bare JID and device (and room):
//! the same account and device registering again get the same node and
//! secret back, with the token updated. The answer is a form with `jid`,
//! `node` and `secret`, which the client hands to its server in
//! `<enable/>`.
//!
//! To unregister a room, Conversations does not send the room's JID as
//! `channel` but `hex(sha1(room_jid + "\0" + device_id))`, the same key its
//! FCM messages carry (`nudge_plugins::fcm::message::conversations_hash`;
//! fixture `tests/fixtures/conversations-unregister-push-fcm.xml`). The hash
//! is matched against the rooms the account registered for that app and
//! device; a bare room JID (other clients) and an empty channel (the
//! account's own registration) work too. An unregister that matches no
//! registration is answered `item-not-found`: the command goes from the
//! client to us, so no server disables anything for it, and Conversations
//! only logs a failed unregister.
//!
//! Both commands count against the account's rate, and a new registration
//! against its cap (`limits.rs`).
//!
//! One app with both APNs environments (`register-push-apns` stays one
//! command): a register form may carry `environment` (`sandbox` or
//! `production`); without it the app's configured endpoint is used.

use nudge_plugins::fcm::message::conversations_hash;

use crate::dispatch::Backends;
use crate::store::{NewRegistration, NodeForLog};
use crate::xmpp::Element;
use crate::xmpp::dataform::DataForm;
use crate::xmpp::jid::Jid;
use crate::xmpp::stanza::StanzaError;

use super::adhoc::CommandRequest;
use super::{Begun, CommandItem, Context};

/// The node prefix of the register command.
pub const REGISTER_PREFIX: &str = "register-push-";
/// The node prefix of the unregister command.
pub const UNREGISTER_PREFIX: &str = "unregister-push-";
/// The dialect's name in the registrations table.
pub const DIALECT: &str = "conversations";

/// A register or unregister command of this dialect.
#[derive(Debug)]
pub struct Command {
    request: CommandRequest,
    registering: bool,
    /// The app the node names, or why it names none.
    app: Result<String, StanzaError>,
}

impl Command {
    /// The command when `request`'s node is one of this dialect's; the
    /// request back otherwise.
    pub fn from_request(
        request: CommandRequest,
        backends: &Backends,
    ) -> Result<Command, CommandRequest> {
        let Some((registering, name)) = split_node(&request.node) else {
            return Err(request);
        };
        let app = super::resolve_app(backends, name);
        Ok(Command {
            request,
            registering,
            app,
        })
    }

    /// Runs the command for `ctx.from`.
    pub async fn apply(self, ctx: &Context<'_>) -> Result<Element, StanzaError> {
        let cmd = &self.request;
        let app = self.app?;
        let (owner, form) = match super::begin(cmd, ctx, || blank_form(self.registering))? {
            Begun::Answered(answer) => return Ok(answer),
            Begun::Submitted { owner, form } => (owner, form),
        };
        let device_id = form
            .non_empty("device-id")
            .or_else(|| form.non_empty("android-id"))
            .ok_or_else(|| StanzaError::bad_request("missing device-id"))?
            .to_owned();
        if device_id.len() > 256 {
            return Err(StanzaError::bad_request("device-id too long"));
        }
        if self.registering {
            register(ctx, cmd, form, owner, app, device_id).await
        } else {
            unregister(ctx, cmd, form, owner, app, device_id).await
        }
    }
}

async fn unregister(
    ctx: &Context<'_>,
    cmd: &CommandRequest,
    form: &DataForm,
    owner: String,
    app: String,
    device_id: String,
) -> Result<Element, StanzaError> {
    let store = ctx.store;
    let channel = Channel::parse(form.non_empty("channel"))?;
    let muc = match &channel {
        Channel::Account => Some(String::new()),
        Channel::Room(room) => Some(room.clone()),
        Channel::Hash(hash) => store
            .rooms_of_device(&owner, &app, &device_id)
            .await
            .map_err(super::storage_error)?
            .into_iter()
            .find(|room| conversations_hash(room, &device_id) == *hash),
    };
    let removed = match muc {
        Some(muc) => store
            .unregister(&owner, &app, &device_id, &muc)
            .await
            .map_err(super::storage_error)?,
        None => None,
    };
    let Some(node) = removed else {
        tracing::info!(%owner, %app, ?channel, "unregister matched no registration");
        return Err(StanzaError::item_not_found()
            .with_text("no registration of this device for that channel"));
    };
    tracing::info!(%owner, %app, node = %NodeForLog(&node), ?channel, "device unregistered");
    Ok(cmd.completed(None))
}

async fn register(
    ctx: &Context<'_>,
    cmd: &CommandRequest,
    form: &DataForm,
    owner: String,
    app: String,
    device_id: String,
) -> Result<Element, StanzaError> {
    let muc = match form.non_empty("muc") {
        Some(room) => {
            bare_jid(room).ok_or_else(|| StanzaError::bad_request("muc is not a bare JID"))?
        }
        None => String::new(),
    };
    let token = form
        .non_empty("token")
        .ok_or_else(|| StanzaError::bad_request("missing token"))?
        .to_owned();
    super::validate_token(ctx.backends, &app, &token)?;
    let new = NewRegistration {
        owner,
        device_id,
        muc,
        app,
        token,
        with_secret: true,
        dialect: DIALECT,
        second_token: String::new(),
        environment: super::environment(form.non_empty("environment"))?,
    };
    let reg = super::register(ctx.store, &new).await?;
    Ok(cmd.completed(Some(super::credentials_form(ctx.component_jid, &reg))))
}

/// Whether `node` registers (`register-push-<name>`) or unregisters
/// (`unregister-push-<name>`), and the name; `None` for other nodes. The
/// Web Push dialect (`webpush.rs`) answers the same nodes.
pub fn split_node(node: &str) -> Option<(bool, &str)> {
    if let Some(name) = node.strip_prefix(REGISTER_PREFIX) {
        Some((true, name))
    } else {
        node.strip_prefix(UNREGISTER_PREFIX)
            .map(|name| (false, name))
    }
}

/// The commands this dialect offers: a register and an unregister command
/// per app, and per provider name that exactly one app uses
/// (Conversations asks for `register-push-fcm`).
pub fn items(backends: &Backends) -> Vec<CommandItem> {
    let mut names: Vec<String> = backends.apps().iter().map(|a| a.to_string()).collect();
    for app in backends.apps() {
        if let Some(b) = backends.get(app) {
            let provider = b.provider().to_ascii_lowercase();
            if !names.contains(&provider) && backends.resolve(&provider).is_ok() {
                names.push(provider);
            }
        }
    }
    let mut items = Vec::new();
    for name in names {
        for (prefix, what) in [
            (REGISTER_PREFIX, "Register a device"),
            (UNREGISTER_PREFIX, "Unregister a device"),
        ] {
            items.push(CommandItem {
                node: format!("{prefix}{name}"),
                name: format!("{what} ({name})"),
            });
        }
    }
    items
}

/// Which of a device's registrations an unregister names (its `channel`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Channel {
    /// Empty: the account's own registration.
    Account,
    /// A bare room JID.
    Room(String),
    /// Conversations' `hex(sha1(room_jid + "\0" + device_id))`, lower-case.
    Hash(String),
}

impl Channel {
    fn parse(value: Option<&str>) -> Result<Channel, StanzaError> {
        let Some(value) = value else {
            return Ok(Channel::Account);
        };
        // 40 hex digits is a SHA-1, not a room: a room JID has a local part.
        if value.len() == 40 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Channel::Hash(value.to_ascii_lowercase()));
        }
        bare_jid(value)
            .map(Channel::Room)
            .ok_or_else(|| StanzaError::bad_request("channel is neither a bare JID nor a hash"))
    }
}

/// The normalised bare JID, or `None` when `text` is not a bare JID.
fn bare_jid(text: &str) -> Option<String> {
    Jid::parse(text)
        .ok()
        .filter(|j| j.resource().is_none())
        .map(|j| j.bare())
}

/// The form a generic client is shown when it executes without one.
fn blank_form(registering: bool) -> DataForm {
    let form = DataForm::new("form").field("device-id", Some("text-single"), "");
    if registering {
        form.field("token", Some("text-single"), "")
            .field("muc", Some("jid-single"), "")
    } else {
        form.field("channel", Some("jid-single"), "")
    }
}
