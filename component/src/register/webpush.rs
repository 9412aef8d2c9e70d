//! The Web Push dialect: `register-push-<name>` / `unregister-push-<name>`
//! for an app whose provider is `webpush` (browser-based clients such as
//! Converse.js and Movim, UnifiedPush distributors). The nodes are
//! Conversations' (`conversations.rs`), the fields are what a browser's
//! `PushSubscription` holds:
//!
//! - register: `endpoint`, `p256dh`, `auth` (base64url, as
//!   `PushSubscription.toJSON()` gives them), or instead `token` with the
//!   whole subscription in Nudge's token form (README, "Web Push");
//!   optional `device-id` (a browser has no device id of its own: without
//!   one, the endpoint stands for the device, so a new subscription is a new
//!   registration and the old one goes when its push service answers 410)
//!   and `muc`;
//! - unregister: `device-id`, or the `endpoint` it was registered with;
//!   optional `channel` (a room's bare JID; empty: the account's own).
//!
//! Executed without a form, the register command answers the blank form
//! with the app's VAPID public key in the hidden field `vapid-public-key`:
//! the `applicationServerKey` a client must subscribe with before it can
//! register. The answer to a registration is the same `jid`, `node`,
//! `secret` form as Conversations', which the client hands to its server in
//! `<enable/>`.

use nudge_plugins::webpush::{PROVIDER, Subscription};
use sha1::{Digest, Sha1};

use crate::dispatch::Backends;
use crate::store::{NewRegistration, NodeForLog};
use crate::xmpp::Element;
use crate::xmpp::dataform::DataForm;
use crate::xmpp::jid::Jid;
use crate::xmpp::stanza::StanzaError;

use super::adhoc::CommandRequest;
use super::conversations::split_node;
use super::{Begun, Context};

/// The dialect's name in the registrations table.
pub const DIALECT: &str = "webpush";

/// The longest `device-id` taken (as Conversations' dialect).
const MAX_DEVICE_ID_LEN: usize = 256;

/// A register or unregister command for a Web Push app.
#[derive(Debug)]
pub struct Command {
    request: CommandRequest,
    registering: bool,
    app: String,
    /// The app's VAPID public key, for the blank form.
    application_server_key: String,
}

impl Command {
    /// The command when `request`'s node is `register-push-<name>` or
    /// `unregister-push-<name>` and `<name>` is a Web Push app (or the
    /// provider name one such app alone uses); the request back otherwise.
    pub fn from_request(
        request: CommandRequest,
        backends: &Backends,
    ) -> Result<Command, CommandRequest> {
        let Some((registering, name)) = split_node(&request.node) else {
            return Err(request);
        };
        let Ok(app) = backends.resolve(name) else {
            return Err(request);
        };
        let Some(backend) = backends.get(app).filter(|b| b.provider() == PROVIDER) else {
            return Err(request);
        };
        let application_server_key = backend.application_server_key().unwrap_or("").to_owned();
        let app = app.to_owned();
        Ok(Command {
            request,
            registering,
            app,
            application_server_key,
        })
    }

    /// Runs the command for `ctx.from`.
    pub async fn apply(self, ctx: &Context<'_>) -> Result<Element, StanzaError> {
        let cmd = &self.request;
        let blank = || blank_form(self.registering, &self.application_server_key);
        let (owner, form) = match super::begin(cmd, ctx, blank)? {
            Begun::Answered(answer) => return Ok(answer),
            Begun::Submitted { owner, form } => (owner, form),
        };
        if self.registering {
            register(ctx, cmd, form, owner, self.app).await
        } else {
            unregister(ctx, cmd, form, owner, self.app).await
        }
    }
}

/// The subscription a register form carries, in token form.
fn subscription(form: &DataForm) -> Result<Subscription, StanzaError> {
    let bad = |e: nudge_plugins::webpush::SubscriptionError| {
        StanzaError::bad_request(format!("invalid subscription: {e}"))
    };
    if let Some(token) = form.non_empty("token") {
        return Subscription::parse(token).map_err(bad);
    }
    let field = |var: &'static str| {
        form.non_empty(var)
            .ok_or_else(|| StanzaError::bad_request(format!("missing {var}")))
    };
    Subscription::from_parts(field("endpoint")?, field("p256dh")?, field("auth")?).map_err(bad)
}

/// The device a form names: its `device-id`, or one made from the endpoint.
fn device_id(form: &DataForm, endpoint: Option<&str>) -> Result<String, StanzaError> {
    if let Some(id) = form.non_empty("device-id") {
        if id.len() > MAX_DEVICE_ID_LEN {
            return Err(StanzaError::bad_request("device-id too long"));
        }
        return Ok(id.to_owned());
    }
    match endpoint {
        Some(endpoint) => Ok(endpoint_device_id(endpoint)),
        None => Err(StanzaError::bad_request("missing device-id (or endpoint)")),
    }
}

/// The device id of a subscription registered without one: `endpoint-`
/// and the first 20 hex digits of the endpoint's SHA-1.
pub fn endpoint_device_id(endpoint: &str) -> String {
    let digest = Sha1::digest(endpoint.as_bytes());
    format!("endpoint-{}", &hex::encode(digest)[..20])
}

/// The room a form's `var` names, normalised (empty: none, the account's
/// own registration), or a bad request.
fn room(form: &DataForm, var: &str) -> Result<String, StanzaError> {
    let Some(value) = form.non_empty(var) else {
        return Ok(String::new());
    };
    Jid::parse(value)
        .ok()
        .filter(|j| j.resource().is_none() && j.local().is_some())
        .map(|j| j.bare())
        .ok_or_else(|| StanzaError::bad_request(format!("{var} is not a room's bare JID")))
}

async fn register(
    ctx: &Context<'_>,
    cmd: &CommandRequest,
    form: &DataForm,
    owner: String,
    app: String,
) -> Result<Element, StanzaError> {
    let subscription = subscription(form)?;
    let token = subscription.to_token();
    // The app's own checks too (loopback and private endpoints, length).
    super::validate_token(ctx.backends, &app, &token)?;
    let device_id = device_id(form, Some(subscription.endpoint.as_str()))?;
    let muc = room(form, "muc")?;
    let new = NewRegistration {
        owner,
        device_id,
        muc,
        app,
        token,
        with_secret: true,
        dialect: DIALECT,
        second_token: String::new(),
        environment: None,
    };
    let reg = super::register(ctx.store, &new).await?;
    Ok(cmd.completed(Some(super::credentials_form(ctx.component_jid, &reg))))
}

async fn unregister(
    ctx: &Context<'_>,
    cmd: &CommandRequest,
    form: &DataForm,
    owner: String,
    app: String,
) -> Result<Element, StanzaError> {
    // As registered: the endpoint as a parsed URL writes it (a whole
    // subscription token is taken too).
    let endpoint = form.non_empty("endpoint").map(|e| {
        Subscription::parse(e)
            .map(|s| s.endpoint.to_string())
            .or_else(|_| reqwest::Url::parse(e).map(|u| u.to_string()))
            .unwrap_or_else(|_| e.to_owned())
    });
    let device_id = device_id(form, endpoint.as_deref())?;
    let muc = room(form, "channel")?;
    let removed = ctx
        .store
        .unregister(&owner, &app, &device_id, &muc)
        .await
        .map_err(super::storage_error)?;
    let Some(node) = removed else {
        tracing::info!(%owner, %app, "unregister matched no registration");
        return Err(StanzaError::item_not_found()
            .with_text("no registration of this device for that channel"));
    };
    tracing::info!(%owner, %app, node = %NodeForLog(&node), "device unregistered");
    Ok(cmd.completed(None))
}

/// The form a client is shown when it executes without one; the register
/// form carries the app's VAPID public key.
fn blank_form(registering: bool, application_server_key: &str) -> DataForm {
    let form = DataForm::new("form").field("device-id", Some("text-single"), "");
    if registering {
        form.field("vapid-public-key", Some("hidden"), application_server_key)
            .field("endpoint", Some("text-single"), "")
            .field("p256dh", Some("text-single"), "")
            .field("auth", Some("text-private"), "")
            .field("muc", Some("jid-single"), "")
    } else {
        form.field("endpoint", Some("text-single"), "")
            .field("channel", Some("jid-single"), "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_without_a_device_id_is_its_endpoint() {
        let a = endpoint_device_id("https://push.example.net/wpush/v2/abc");
        assert_eq!(
            a,
            endpoint_device_id("https://push.example.net/wpush/v2/abc")
        );
        assert_ne!(
            a,
            endpoint_device_id("https://push.example.net/wpush/v2/abd")
        );
        assert!(a.starts_with("endpoint-") && a.len() == "endpoint-".len() + 20);
    }

    #[test]
    fn the_blank_register_form_carries_the_vapid_key() {
        let form = blank_form(true, "BKey");
        assert_eq!(form.value("vapid-public-key"), Some("BKey"));
        assert_eq!(form.value("endpoint"), Some(""));
        assert_eq!(blank_form(false, "BKey").value("vapid-public-key"), None);
    }
}
