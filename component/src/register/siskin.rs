//! The Siskin / Tigase dialect (`docs/interop.md`, "Siskin / Tigase dialect"):
//! `register-device` with form fields `provider` (`tigase:messenger:apns:1`,
//! `tigase:messenger:fcm:1`), `device-token` and optional
//! `device-second-token` (an APNs PushKit token for calls), and
//! `unregister-device` with `provider` and `device-token`.
//!
//! Why it differs from Conversations' dialect: no secret is handed out. The
//! node (128 random bits, `store::random_id`) is the credential, so the
//! user's server publishes without publish-options; a registration that has
//! a secret still always requires it (`push::authorize`). The answer form
//! carries `node`, `features` (the Tigase extensions this App Server
//! forwards: encrypted payloads, calls) and `max-payload-size` (how many
//! bytes of ciphertext still fit in the provider's payload).
//!
//! A device is its token: the registration is keyed by account, app and
//! token (the token is the row's `device_id`), so one account with two
//! iPhones holds two registrations, and the same token registering again
//! gets the same node back with its second token updated. The operator maps
//! provider strings to apps, and, since Siskin sends the same APNs provider
//! string from sandbox and production builds, may say which environment an
//! app's tokens are in (`[dialects.siskin]`). Without that table the
//! commands are not offered.

use crate::config::{DialectTarget, SiskinConfig};
use crate::store::{NewRegistration, NodeForLog};
use crate::xmpp::Element;
use crate::xmpp::dataform::{DataForm, Field};
use crate::xmpp::ns;
use crate::xmpp::stanza::{DefinedCondition, ErrorType, StanzaError};

use super::adhoc::CommandRequest;
use super::{Begun, CommandItem, Context};

/// The dialect's name in the registrations table.
pub const DIALECT: &str = "siskin";

/// The Tigase push extensions Nudge forwards, listed in the register answer
/// and in the root disco#info while this dialect is on: ciphertext passes
/// through opaquely (`tests/fixtures/tigase-encrypted.xml`), calls go to
/// the PushKit token (`tests/fixtures/tigase-jingle.xml`).
pub const FEATURES: [&str; 3] = [
    ns::PUSH_ENCRYPT,
    ns::PUSH_ENCRYPT_AES_128_GCM,
    ns::PUSH_JINGLE,
];

/// The two commands of this dialect, by command node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `register-device`.
    Register,
    /// `unregister-device`.
    Unregister,
}

impl Kind {
    /// The command node.
    pub fn node(self) -> &'static str {
        match self {
            Kind::Register => "register-device",
            Kind::Unregister => "unregister-device",
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

/// Why a submitted form is refused (`modify`/`bad-request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("{0} has several values")]
    Several(&'static str),
}

impl From<FormError> for StanzaError {
    fn from(e: FormError) -> Self {
        StanzaError::bad_request(e.to_string())
    }
}

/// The fields of a `register-device` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterForm {
    /// `provider`, e.g. `tigase:messenger:apns:1`.
    pub provider: String,
    /// `device-token`.
    pub token: String,
    /// `device-second-token` (PushKit), when sent non-empty.
    pub second_token: Option<String>,
}

/// The fields of an `unregister-device` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnregisterForm {
    /// `provider`.
    pub provider: String,
    /// `device-token`.
    pub token: String,
}

/// A field's one non-empty value; a field given twice with different values
/// is refused rather than guessed at.
fn single<'f>(form: &'f DataForm, var: &'static str) -> Result<Option<&'f str>, FormError> {
    let mut values = form
        .fields
        .iter()
        .filter(|f| f.var == var)
        .flat_map(|f| f.values.iter())
        .map(|v| v.trim())
        .filter(|v| !v.is_empty());
    match (values.next(), values.next()) {
        (Some(a), Some(b)) if a != b => Err(FormError::Several(var)),
        (first, _) => Ok(first),
    }
}

fn required<'f>(form: &'f DataForm, var: &'static str) -> Result<&'f str, FormError> {
    single(form, var)?.ok_or(FormError::Missing(var))
}

impl TryFrom<&DataForm> for RegisterForm {
    type Error = FormError;

    fn try_from(form: &DataForm) -> Result<Self, FormError> {
        Ok(RegisterForm {
            provider: required(form, "provider")?.to_owned(),
            token: required(form, "device-token")?.to_owned(),
            second_token: single(form, "device-second-token")?.map(str::to_owned),
        })
    }
}

impl TryFrom<&DataForm> for UnregisterForm {
    type Error = FormError;

    fn try_from(form: &DataForm) -> Result<Self, FormError> {
        Ok(UnregisterForm {
            provider: required(form, "provider")?.to_owned(),
            token: required(form, "device-token")?.to_owned(),
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
        config: Option<&SiskinConfig>,
    ) -> Result<Command, CommandRequest> {
        match (config, Kind::try_from(request.node.as_str())) {
            (Some(_), Ok(kind)) => Ok(Command { request, kind }),
            _ => Err(request),
        }
    }

    /// Runs the command for `ctx.from`.
    pub async fn apply(self, ctx: &Context<'_>) -> Result<Element, StanzaError> {
        let cmd = &self.request;
        let Some(config) = &ctx.dialects.siskin else {
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

/// The app (and environment) a provider string means.
fn target<'c>(config: &'c SiskinConfig, provider: &str) -> Result<&'c DialectTarget, StanzaError> {
    config.providers.get(provider).ok_or_else(|| {
        StanzaError::item_not_found()
            .with_text(format!("no push service for provider {provider:?}"))
    })
}

async fn register(
    ctx: &Context<'_>,
    config: &SiskinConfig,
    cmd: &CommandRequest,
    form: RegisterForm,
    owner: String,
) -> Result<Element, StanzaError> {
    let target = target(config, &form.provider)?;
    let app = target.app().to_owned();
    super::validate_token(ctx.backends, &app, &form.token)?;
    if let Some(second) = &form.second_token {
        super::validate_token(ctx.backends, &app, second)?;
    }
    let provider = ctx
        .backends
        .get(&app)
        .map(|b| b.provider().to_owned())
        .unwrap_or_default();
    let new = NewRegistration {
        device_id: form.token.clone(),
        muc: String::new(),
        app,
        token: form.token,
        with_secret: false,
        dialect: DIALECT,
        second_token: form.second_token.unwrap_or_default(),
        environment: target.environment(),
        owner,
    };
    let reg = super::register(ctx.store, &new).await?;
    // The key (account, app, token) is shared with the other dialects' rows;
    // a client that used its own token as a Conversations device id would
    // otherwise be handed a node that wants a secret it never got.
    if reg.dialect != DIALECT || reg.secret.is_some() {
        tracing::warn!(owner = %reg.owner, node = %reg.node_for_log(), dialect = %reg.dialect,
            "register-device met another dialect's registration of this token");
        return Err(
            StanzaError::new(ErrorType::Cancel, DefinedCondition::Conflict)
                .with_text("this token is registered through another command"),
        );
    }
    let mut answer = DataForm::new("result").field("node", Some("text-single"), &reg.node);
    answer.fields.push(Field {
        var: "features".into(),
        kind: Some("list-multi".into()),
        values: FEATURES.iter().map(|f| f.to_string()).collect(),
    });
    let answer = answer.field(
        "max-payload-size",
        Some("text-single"),
        &max_payload_size(&provider, &reg.owner).to_string(),
    );
    Ok(cmd.completed(Some(answer)))
}

async fn unregister(
    ctx: &Context<'_>,
    config: &SiskinConfig,
    cmd: &CommandRequest,
    form: UnregisterForm,
    owner: String,
) -> Result<Element, StanzaError> {
    let app = target(config, &form.provider)?.app();
    let removed = ctx
        .store
        .unregister_token(&owner, app, &form.token, DIALECT)
        .await
        .map_err(super::storage_error)?;
    if removed.is_empty() {
        tracing::info!(%owner, %app, "unregister-device matched no registration");
        return Err(StanzaError::item_not_found().with_text("no registration of this device"));
    }
    for node in &removed {
        tracing::info!(%owner, %app, node = %NodeForLog(node), "device unregistered");
    }
    Ok(cmd.completed(None))
}

/// The commands this dialect offers while it is configured.
pub fn items(config: Option<&SiskinConfig>) -> Vec<CommandItem> {
    if config.is_none() {
        return Vec::new();
    }
    vec![
        CommandItem {
            node: Kind::Register.node().into(),
            name: "Register a device (Siskin/Tigase)".into(),
        },
        CommandItem {
            node: Kind::Unregister.node().into(),
            name: "Unregister a device (Siskin/Tigase)".into(),
        },
    ]
}

/// The form a generic client is shown when it executes without one.
fn blank_form(kind: Kind) -> DataForm {
    let form = DataForm::new("form")
        .field("provider", Some("text-single"), "")
        .field("device-token", Some("text-single"), "");
    match kind {
        Kind::Register => form.field("device-second-token", Some("text-single"), ""),
        Kind::Unregister => form,
    }
}

/// Bytes of the payload the app's alert text and sound may take together.
/// The `[apps.NAME]` defaults (`New message`, `default`) take 18; a
/// Siskin-mapped app whose texts are longer is refused at load time
/// (`config.rs`), so that the size below holds.
pub const ALERT_RESERVE: usize = 256;

/// The longest IV a Tigase server sends, base64 (16 bytes; AES-GCM's usual
/// IV is 12, `tests/fixtures/tigase-encrypted.xml`).
const IV_RESERVE: usize = 24;

/// How many bytes of ciphertext an encrypted notification may have so that
/// the provider payload that forwards it stays within the provider's limit
/// (APNs 4096 bytes, FCM 4096 bytes of data), whether a server reads the
/// number as bytes of ciphertext or as characters of its base64.
///
/// The payload is the ciphertext's base64 plus everything else the push
/// carries: for APNs Siskin's keys (`aps` with the alert text, sound and
/// `mutable-content`, `account`, `unread-messages`, `iv`), for FCM the
/// data keys (`account` hash, `unread-messages`, `iv`). That skeleton is
/// rendered here with its largest values (this account's JID, the largest
/// count, the longest IV, [`ALERT_RESERVE`] for the app's texts); what is
/// left, in whole base64 quanta, is the answer, as raw bytes. The summary
/// (sender, body) is not counted: a server that encrypts replaces it with
/// the ciphertext (`tests/fixtures/tigase-encrypted.xml`); if it sent both,
/// the provider side falls back to a plain wake-up rather than cut.
pub fn max_payload_size(provider: &str, account: &str) -> usize {
    let (limit, skeleton) = if provider.eq_ignore_ascii_case("fcm") {
        let skeleton = serde_json::json!({
            "account": "0".repeat(40),
            "unread-messages": u32::MAX.to_string(),
            "encrypted": "",
            "iv": "A".repeat(IV_RESERVE),
        });
        (nudge_plugins::fcm::message::MAX_DATA, skeleton)
    } else {
        let skeleton = serde_json::json!({
            "aps": {
                "alert": { "body": "" },
                "sound": "",
                "mutable-content": 1,
            },
            "account": account,
            "unread-messages": u32::MAX,
            "encrypted": "",
            "iv": "A".repeat(IV_RESERVE),
        });
        (nudge_plugins::apns::payload::MAX_PAYLOAD, skeleton)
    };
    let used = skeleton.to_string().len() + ALERT_RESERVE;
    let base64_chars = limit.saturating_sub(used);
    base64_chars / 4 * 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn form(fields: &[(&str, &str)]) -> DataForm {
        fields
            .iter()
            .fold(DataForm::new("submit"), |f, (var, value)| {
                f.field(var, None, value)
            })
    }

    #[test]
    fn register_form_has_siskins_fields() {
        // The fields of `docs/interop.md`, "Siskin / Tigase dialect".
        let f = form(&[
            ("provider", "tigase:messenger:apns:1"),
            ("device-token", "a1b2c3"),
            ("device-second-token", "d4e5f6"),
        ]);
        assert_eq!(
            RegisterForm::try_from(&f),
            Ok(RegisterForm {
                provider: "tigase:messenger:apns:1".into(),
                token: "a1b2c3".into(),
                second_token: Some("d4e5f6".into()),
            })
        );
        let f = form(&[
            ("provider", "tigase:messenger:fcm:1"),
            ("device-token", "tok"),
            ("device-second-token", ""),
        ]);
        assert_eq!(RegisterForm::try_from(&f).unwrap().second_token, None);
    }

    #[test]
    fn register_form_needs_provider_and_token() {
        let f = form(&[("device-token", "tok")]);
        assert_eq!(
            RegisterForm::try_from(&f),
            Err(FormError::Missing("provider"))
        );
        let f = form(&[
            ("provider", "tigase:messenger:apns:1"),
            ("device-token", " "),
        ]);
        assert_eq!(
            RegisterForm::try_from(&f),
            Err(FormError::Missing("device-token"))
        );
        let f = form(&[
            ("provider", "p"),
            ("device-token", "one"),
            ("device-token", "two"),
        ]);
        assert_eq!(
            RegisterForm::try_from(&f),
            Err(FormError::Several("device-token"))
        );
    }

    #[test]
    fn unregister_form_has_provider_and_token() {
        let f = form(&[
            ("provider", "tigase:messenger:apns:1"),
            ("device-token", "a1b2c3"),
        ]);
        assert_eq!(
            UnregisterForm::try_from(&f),
            Ok(UnregisterForm {
                provider: "tigase:messenger:apns:1".into(),
                token: "a1b2c3".into(),
            })
        );
        assert_eq!(
            UnregisterForm::try_from(&form(&[("provider", "p")])),
            Err(FormError::Missing("device-token"))
        );
    }

    #[test]
    fn command_nodes_are_a_closed_set() {
        assert_eq!(Kind::try_from("register-device"), Ok(Kind::Register));
        assert_eq!(Kind::try_from("unregister-device"), Ok(Kind::Unregister));
        assert!(Kind::try_from("register-push-fcm").is_err());
        assert!(Kind::try_from("Register-Device").is_err());
    }

    /// A Siskin APNs payload as the provider side writes it, at its
    /// largest: the ciphertext of the advertised size must fit in 4096.
    #[test]
    fn advertised_ciphertext_fits_an_apns_payload() {
        let account = "someone.with.a.long.name@chat.example.org";
        let max = max_payload_size("apns", account);
        assert!(max > 2500, "too pessimistic: {max}");
        let ciphertext = base64::engine::general_purpose::STANDARD.encode(vec![0xa5u8; max]);
        let payload = serde_json::json!({
            "aps": {
                "alert": { "body": "x".repeat(ALERT_RESERVE - 8) },
                "sound": "default",
                "mutable-content": 1,
            },
            "account": account,
            "unread-messages": u32::MAX,
            "encrypted": ciphertext,
            "iv": "q6Z0mXc3bNQ9y0lhq6Z0mXc3",
        });
        let len = payload.to_string().len();
        assert!(len <= 4096, "{len}");
        assert!(len > 4096 - 8, "wasted room: {len}");
        // Read as base64 characters instead of bytes, it fits all the more.
        assert!(max <= ciphertext.len());
        // A longer account leaves less room.
        assert!(max_payload_size("apns", &format!("{}@x", "a".repeat(1000))) < max);
    }

    #[test]
    fn advertised_ciphertext_fits_fcm_data() {
        let max = max_payload_size("fcm", "alice@localhost");
        let ciphertext = base64::engine::general_purpose::STANDARD.encode(vec![1u8; max]);
        let data = serde_json::json!({
            "account": "f".repeat(40),
            "unread-messages": u32::MAX.to_string(),
            "encrypted": ciphertext,
            "iv": "A".repeat(24),
        });
        assert!(data.to_string().len() + ALERT_RESERVE <= 4096);
    }
}
