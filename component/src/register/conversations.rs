//! The Conversations dialect (`interop.md`): `register-push-<name>` with
//! fields `token`, `device-id` (older clients: `android-id`) and optional
//! `muc`; `unregister-push-<name>` with `device-id`/`android-id` and
//! `channel`. The registration belongs to the sender's bare JID and device
//! (and room): the same account and device registering again get the same
//! node and secret back, with the token updated. The answer is a form with
//! `jid`, `node` and `secret`, which the client hands to its server in
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

use nudge_plugins::fcm::message::conversations_hash;

use crate::dispatch::{Backends, ResolveError};
use crate::store::{NewRegistration, RegistrationStore};
use crate::xmpp::Element;
use crate::xmpp::dataform::DataForm;
use crate::xmpp::jid::Jid;
use crate::xmpp::stanza::StanzaError;

use super::adhoc::{Action, CommandRequest};

pub const REGISTER_PREFIX: &str = "register-push-";
pub const UNREGISTER_PREFIX: &str = "unregister-push-";

/// Whether a command node belongs to this dialect.
pub fn handles(node: &str) -> bool {
    node.starts_with(REGISTER_PREFIX) || node.starts_with(UNREGISTER_PREFIX)
}

/// Runs a register or unregister command for `from` (the client's full JID).
pub async fn execute(
    cmd: &CommandRequest,
    from: &Jid,
    component_jid: &str,
    backends: &Backends,
    store: &RegistrationStore,
) -> Result<Element, StanzaError> {
    let (registering, name) = match cmd.node.strip_prefix(REGISTER_PREFIX) {
        Some(name) => (true, name),
        None => (
            false,
            cmd.node
                .strip_prefix(UNREGISTER_PREFIX)
                .ok_or_else(StanzaError::item_not_found)?,
        ),
    };
    let app = match backends.resolve(name) {
        Ok(app) => app.to_owned(),
        Err(ResolveError::Unknown) => {
            return Err(StanzaError::item_not_found()
                .with_text(format!("no push service named {name:?} here")));
        }
        Err(ResolveError::Ambiguous) => {
            return Err(StanzaError::item_not_found().with_text(format!(
                "several apps use provider {name:?}; use the command of the app (register-push-<app>)"
            )));
        }
    };
    if cmd.action == Action::Cancel {
        return Ok(cmd.canceled());
    }
    if from.local().is_none() {
        return Err(StanzaError::forbidden().with_text("only accounts can register devices"));
    }
    let owner = from.bare();
    let Some(form) = &cmd.form else {
        return Ok(cmd.executing(blank_form(registering)));
    };
    let limits = store.register_limits();
    if let Err(e) = limits.check_rate(&owner) {
        tracing::warn!(%owner, error = %e, "registration command refused");
        return Err(e.to_stanza_error());
    }
    let device_id = form
        .non_empty("device-id")
        .or_else(|| form.non_empty("android-id"))
        .ok_or_else(|| StanzaError::bad_request("missing device-id"))?
        .to_owned();
    if device_id.len() > 256 {
        return Err(StanzaError::bad_request("device-id too long"));
    }
    let storage_error = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "registration store failed");
        StanzaError::internal_server_error("storage unavailable")
    };

    if !registering {
        let channel = Channel::parse(form.non_empty("channel"))?;
        let muc = match &channel {
            Channel::Account => Some(String::new()),
            Channel::Room(room) => Some(room.clone()),
            Channel::Hash(hash) => store
                .rooms_of_device(&owner, &app, &device_id)
                .await
                .map_err(storage_error)?
                .into_iter()
                .find(|room| conversations_hash(room, &device_id) == *hash),
        };
        let removed = match muc {
            Some(muc) => store
                .unregister(&owner, &app, &device_id, &muc)
                .await
                .map_err(storage_error)?,
            None => None,
        };
        let Some(node) = removed else {
            tracing::info!(%owner, %app, ?channel, "unregister matched no registration");
            return Err(StanzaError::item_not_found()
                .with_text("no registration of this device for that channel"));
        };
        tracing::info!(%owner, %app, %node, ?channel, "device unregistered");
        return Ok(cmd.completed(None));
    }

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
    if let Some(backend) = backends.get(&app) {
        backend
            .validate_token(&token)
            .map_err(|e| StanzaError::bad_request(e.to_string()))?;
    }
    let new = NewRegistration {
        owner,
        device_id,
        muc,
        app,
        token,
        with_secret: true,
    };
    let Some(reg) = store
        .register_within(&new, limits.max_per_account().into())
        .await
        .map_err(storage_error)?
    else {
        let e = limits.too_many(&new.owner);
        tracing::warn!(owner = %new.owner, error = %e, "registration refused");
        return Err(e.to_stanza_error());
    };
    tracing::info!(owner = %reg.owner, app = %reg.app, node = %reg.node, "device registered");
    let answer = DataForm::new("result")
        .field("jid", Some("jid-single"), component_jid)
        .field("node", Some("text-single"), &reg.node)
        .field(
            "secret",
            Some("text-private"),
            reg.secret.as_deref().unwrap_or(""),
        );
    Ok(cmd.completed(Some(answer)))
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
