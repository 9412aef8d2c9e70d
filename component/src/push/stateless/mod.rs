//! The stateless modes: publishes that name their device themselves, for
//! servers and clients that never register with an App Server (Monal with
//! fpush, `fpush.rs`; MongooseIM, `mongooseim.rs`). Nothing is stored: a
//! publish for a node no registration has is checked against the enabled
//! modes, and a [`Registration`] is built from it (node = the publish node,
//! no secret, owner and domain = the publishing domain) that the dispatcher
//! pushes like any other (coalescing, rate limits, outbox, retries, dead
//! tokens).
//!
//! Without a registration, anyone who can make a server publish to us can
//! push to any token of an enabled app; so each mode is off unless
//! configured per app (`[dialects.fpush]`, `[dialects.mongooseim]`), and
//! its pushes are bounded by their own rate limits (`dispatch/limits.rs`).
//! A publish in a mode's shape that is not enabled is answered like any
//! unknown node (`item-not-found`).

pub mod fpush;
pub mod mongooseim;

use nudge_plugins::{Environment, InvalidTokenFormat, PushOptions};

use crate::config::DialectsConfig;
use crate::dispatch::{Backends, Verdict};
use crate::push::PublishRequest;
use crate::store::{Registration, now};

/// Why a publish in a stateless shape is not pushed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatelessError {
    /// The mode of the publish's shape is not configured.
    #[error("stateless mode {0} is not enabled")]
    NotEnabled(&'static str),
    /// No app is configured for the `pushModule`.
    #[error("no app for push module {0:?}")]
    UnknownModule(String),
    /// No app is configured for the MongooseIM `service`.
    #[error("no app for service {0:?}")]
    ServiceNotEnabled(&'static str),
    /// The node of a publish without `pushModule` is no token of the
    /// default module's app: a node we do not know, not a typo.
    #[error("node is no token of the default push module's app")]
    NotAToken,
    /// A required publish-options field is missing.
    #[error("publish-options field {0} is missing")]
    MissingField(&'static str),
    /// A publish-options field is out of its vocabulary.
    #[error("publish-options field {field} has an unknown value {value:?}")]
    BadOption { field: &'static str, value: String },
    /// The token is malformed for its app's provider: it can never work.
    #[error(transparent)]
    InvalidToken(#[from] InvalidTokenFormat),
}

impl StatelessError {
    /// What the publish comes to: `item-not-found` for what is not
    /// enabled here, `bad-request` for a malformed device (the server then
    /// disables push for it, which is right for a token that can never
    /// work).
    pub fn verdict(&self) -> Verdict {
        match self {
            StatelessError::NotEnabled(_)
            | StatelessError::UnknownModule(_)
            | StatelessError::ServiceNotEnabled(_)
            | StatelessError::NotAToken => Verdict::UnknownNode,
            StatelessError::MissingField(_)
            | StatelessError::BadOption { .. }
            | StatelessError::InvalidToken(_) => Verdict::Malformed(self.to_string()),
        }
    }
}

/// A publish in one of the stateless shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatelessPublish {
    /// Monal's: `pushModule`, the node is the token.
    Fpush(fpush::Publish),
    /// MongooseIM's: `device_id` and `service`.
    MongooseIm(mongooseim::Publish),
}

impl StatelessPublish {
    /// The stateless shape of `request`, if it has one: a `pushModule`
    /// makes it fpush's; `device_id` or `service` MongooseIM's; neither,
    /// without a secret and with a default fpush module configured, fpush's
    /// again. `Ok(None)`: no stateless publish (an unknown node).
    pub fn from_request(
        request: &PublishRequest,
        dialects: &DialectsConfig,
    ) -> Result<Option<StatelessPublish>, StatelessError> {
        let named_module = request
            .options
            .iter()
            .any(|(var, _)| var == fpush::PUSH_MODULE_FIELD);
        if !named_module && mongooseim::Publish::is_shape_of(request) {
            return mongooseim::Publish::from_request(request)
                .map(|p| Some(StatelessPublish::MongooseIm(p)));
        }
        Ok(
            fpush::Publish::from_request(request, dialects.fpush.as_ref())
                .map(StatelessPublish::Fpush),
        )
    }

    /// The dialect name the registration carries (`store::STATELESS_DIALECTS`).
    pub fn dialect(&self) -> &'static str {
        match self {
            StatelessPublish::Fpush(_) => "fpush",
            StatelessPublish::MongooseIm(_) => "mongooseim",
        }
    }

    /// The registration to push this publish of `node` from `domain` with,
    /// if its mode and app are enabled and its token is well-formed for the
    /// app's provider.
    pub fn registration(
        self,
        node: &str,
        domain: &str,
        dialects: &DialectsConfig,
        backends: &Backends,
    ) -> Result<Registration, StatelessError> {
        let dialect = self.dialect();
        let device = match self {
            StatelessPublish::Fpush(publish) => {
                let config = dialects
                    .fpush
                    .as_ref()
                    .ok_or(StatelessError::NotEnabled(dialect))?;
                let app = publish.app(config)?;
                let checked = check_token(backends, app, node);
                if let Err(e) = checked {
                    // A publish that names no module may be for a node we
                    // never had; one that names its module meant a token.
                    return Err(if publish.named {
                        e
                    } else {
                        StatelessError::NotAToken
                    });
                }
                NamedDevice {
                    app: app.to_owned(),
                    token: node.to_owned(),
                    environment: publish.module.environment,
                    options: PushOptions::default(),
                }
            }
            StatelessPublish::MongooseIm(publish) => {
                let config = dialects
                    .mongooseim
                    .as_ref()
                    .ok_or(StatelessError::NotEnabled(dialect))?;
                let app = publish.app(config)?;
                check_token(backends, app, &publish.token)?;
                NamedDevice {
                    app: app.to_owned(),
                    token: publish.token,
                    environment: publish.mode.map(Environment::from),
                    options: publish.options,
                }
            }
        };
        let now = now();
        Ok(Registration {
            node: node.to_owned(),
            secret: None,
            owner: domain.to_owned(),
            domain: domain.to_owned(),
            device_id: String::new(),
            muc: String::new(),
            app: device.app,
            token: device.token,
            created_at: now,
            updated_at: now,
            dialect: dialect.to_owned(),
            second_token: String::new(),
            environment: device
                .environment
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
            options: device.options,
        })
    }
}

/// What a stateless publish names, before it becomes a [`Registration`].
struct NamedDevice {
    app: String,
    token: String,
    environment: Option<Environment>,
    options: PushOptions,
}

/// Checks a token's format with the app's backend (an app without one is
/// left to the dispatcher, which answers for it).
fn check_token(backends: &Backends, app: &str, token: &str) -> Result<(), StatelessError> {
    match backends.get(app) {
        Some(backend) => Ok(backend.validate_token(token)?),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::xmpp::Element;
    use crate::xmpp::ns;

    /// A publish whose publish-options hold `fields`, as a server relays a
    /// client's `<enable/>` form.
    pub fn publish(node: &str, fields: &[(&str, &str)]) -> PublishRequest {
        let field = |var: &str, value: &str| {
            Element::new("field", ns::DATA_FORMS)
                .attr("var", var)
                .child(Element::new("value", ns::DATA_FORMS).text(value))
        };
        let mut form = Element::new("x", ns::DATA_FORMS)
            .attr("type", "submit")
            .child(field(
                "FORM_TYPE",
                "http://jabber.org/protocol/pubsub#publish-options",
            ));
        for (var, value) in fields {
            form = form.child(field(var, value));
        }
        let pubsub = Element::new("pubsub", ns::PUBSUB)
            .child(
                Element::new("publish", ns::PUBSUB)
                    .attr("node", node)
                    .child(
                        Element::new("item", ns::PUBSUB)
                            .child(Element::new("notification", ns::PUSH)),
                    ),
            )
            .child(Element::new("publish-options", ns::PUBSUB).child(form));
        PublishRequest::from_pubsub(&pubsub)
            .expect("a publish")
            .expect("a valid publish")
    }

    fn dialects(toml: &str) -> DialectsConfig {
        let config = crate::Config::from_toml(&format!(
            "[component]\ndomain = 'push.example.org'\nsecret = 's'\n\
             [apps.monal]\nprovider = 'apns'\ntopic = 'org.example.monal'\nendpoint = 'sandbox'\n\
             token = {{ key_path = '/dev/null', key_id = 'K', team_id = 'T' }}\n{toml}"
        ))
        .expect("config");
        config.dialects
    }

    #[test]
    fn shapes_are_told_apart() {
        let none = DialectsConfig::default();
        let fpush = StatelessPublish::from_request(
            &publish("tok", &[("pushModule", "monalProdiOS")]),
            &none,
        );
        assert!(matches!(fpush, Ok(Some(StatelessPublish::Fpush(_)))));
        let mongoose = StatelessPublish::from_request(
            &publish("n", &[("device_id", "tok"), ("service", "apns")]),
            &none,
        );
        assert!(matches!(
            mongoose,
            Ok(Some(StatelessPublish::MongooseIm(_)))
        ));
        assert_eq!(
            StatelessPublish::from_request(&publish("n", &[("secret", "s")]), &none),
            Ok(None)
        );
        assert_eq!(
            StatelessPublish::from_request(&publish("n", &[]), &none),
            Ok(None)
        );
    }

    #[test]
    fn modes_not_configured_are_not_enabled() {
        let none = DialectsConfig::default();
        let backends = Backends::new();
        for fields in [
            &[("pushModule", "monalProdiOS")][..],
            &[("device_id", "tok"), ("service", "apns")][..],
        ] {
            let publish = StatelessPublish::from_request(&publish("tok", fields), &none)
                .expect("well-formed")
                .expect("stateless");
            let verdict = publish
                .registration("tok", "example.org", &none, &backends)
                .map_err(|e| e.verdict());
            assert_eq!(verdict, Err(Verdict::UnknownNode), "{fields:?}");
        }
    }

    #[test]
    fn a_registration_is_built_from_the_publish() {
        let config = dialects(
            "[dialects.fpush.modules]\nmonal = ['monalProdiOS']\n\
             [dialects.mongooseim]\napns = 'monal'\n",
        );
        let backends = Backends::new();
        let fpush = StatelessPublish::from_request(
            &publish("a1b2", &[("pushModule", "monalProdiOS-sandbox")]),
            &config,
        )
        .expect("well-formed")
        .expect("stateless")
        .registration("a1b2", "example.org", &config, &backends)
        .expect("enabled");
        assert_eq!(
            (
                fpush.app.as_str(),
                fpush.token.as_str(),
                fpush.node.as_str(),
                fpush.environment.as_str(),
                fpush.dialect.as_str(),
                fpush.domain.as_str(),
                fpush.secret.as_deref()
            ),
            (
                "monal",
                "a1b2",
                "a1b2",
                "sandbox",
                "fpush",
                "example.org",
                None
            )
        );
        assert!(fpush.is_stateless());
        let mongoose = StatelessPublish::from_request(
            &publish(
                "node7",
                &[
                    ("device_id", "c3d4"),
                    ("service", "apns"),
                    ("mode", "prod"),
                    ("sound", "x"),
                ],
            ),
            &config,
        )
        .expect("well-formed")
        .expect("stateless")
        .registration("node7", "example.org", &config, &backends)
        .expect("enabled");
        assert_eq!(
            (
                mongoose.token.as_str(),
                mongoose.node.as_str(),
                mongoose.environment.as_str(),
                mongoose.options.sound.as_deref()
            ),
            ("c3d4", "node7", "production", Some("x"))
        );
        assert!(mongoose.is_stateless());
        let device = mongoose.device();
        assert_eq!(device.environment, Some(Environment::Production));
        assert_eq!(device.options.sound.as_deref(), Some("x"));
        // A service it does not name is not enabled.
        let fcm = StatelessPublish::from_request(
            &publish("n", &[("device_id", "c3d4"), ("service", "fcm")]),
            &config,
        )
        .expect("well-formed")
        .expect("stateless")
        .registration("n", "example.org", &config, &backends);
        assert_eq!(fcm.map_err(|e| e.verdict()), Err(Verdict::UnknownNode));
    }
}
