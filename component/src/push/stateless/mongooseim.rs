//! MongooseIM's stateless mode: its push module relays the client's
//! `<enable/>` form as publish-options, and MongoosePush-style App Servers
//! take the device from there: `device_id` (the token) and `service`
//! (`apns` | `fcm`), optionally `mode` (`dev` | `prod`, the APNs
//! environment), `topic`, `silent`, `priority`, `sound`, `mutable_content`
//! and `time_to_live`, which become the push's options. Nothing is
//! registered; `[dialects.mongooseim]` names the app of each service.

use nudge_plugins::{Environment, PushOptions};

use super::StatelessError;
use crate::config::MongooseImConfig;
use crate::push::PublishRequest;

/// The push service a publish names (`service`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Apns,
    Fcm,
}

impl TryFrom<&str> for Service {
    type Error = String;

    /// `apns` or `fcm`; anything else is handed back.
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        match value {
            "apns" => Ok(Service::Apns),
            "fcm" => Ok(Service::Fcm),
            other => Err(other.to_owned()),
        }
    }
}

impl Service {
    /// The name as MongooseIM sends it.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Apns => "apns",
            Service::Fcm => "fcm",
        }
    }
}

/// The APNs environment a publish names (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `dev`: sandbox tokens.
    Dev,
    /// `prod`: production tokens.
    Prod,
}

impl TryFrom<&str> for Mode {
    type Error = String;

    /// `dev` or `prod`; anything else is handed back.
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        match value {
            "dev" => Ok(Mode::Dev),
            "prod" => Ok(Mode::Prod),
            other => Err(other.to_owned()),
        }
    }
}

impl From<Mode> for Environment {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Dev => Environment::Sandbox,
            Mode::Prod => Environment::Production,
        }
    }
}

/// A publish in the MongooseIM shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// `device_id`: the provider's token.
    pub token: String,
    /// `service`.
    pub service: Service,
    /// `mode`, when given.
    pub mode: Option<Mode>,
    /// The per-push choices.
    pub options: PushOptions,
}

impl Publish {
    /// Whether `request` is in this shape: its publish-options carry
    /// `device_id` or `service`.
    pub fn is_shape_of(request: &PublishRequest) -> bool {
        request
            .options
            .iter()
            .any(|(var, _)| var == "device_id" || var == "service")
    }

    /// Reads the device and options from `request`'s publish-options; a
    /// field missing or out of its vocabulary is a malformed publish.
    pub fn from_request(request: &PublishRequest) -> Result<Publish, StatelessError> {
        let field = |var: &str| {
            request
                .options
                .iter()
                .find(|(v, _)| v == var)
                .map(|(_, value)| value.trim())
                .filter(|value| !value.is_empty())
        };
        let bad = |var: &'static str, value: &str| StatelessError::BadOption {
            field: var,
            value: value.to_owned(),
        };
        let token = field("device_id")
            .ok_or(StatelessError::MissingField("device_id"))?
            .to_owned();
        let service = field("service").ok_or(StatelessError::MissingField("service"))?;
        let service = Service::try_from(service).map_err(|v| bad("service", &v))?;
        let mode = field("mode")
            .map(|v| Mode::try_from(v).map_err(|v| bad("mode", &v)))
            .transpose()?;
        let flag = |var: &'static str| {
            field(var)
                .map(|v| match v {
                    "true" | "1" => Ok(true),
                    "false" | "0" => Ok(false),
                    other => Err(bad(var, other)),
                })
                .transpose()
        };
        let options = PushOptions {
            topic: field("topic").map(str::to_owned),
            silent: flag("silent")?,
            high_priority: field("priority")
                .map(|v| match v {
                    "high" => Ok(true),
                    "normal" => Ok(false),
                    other => Err(bad("priority", other)),
                })
                .transpose()?,
            sound: field("sound").map(str::to_owned),
            mutable_content: flag("mutable_content")?,
            ttl_secs: field("time_to_live")
                .map(|v| v.parse().map_err(|_| bad("time_to_live", v)))
                .transpose()?,
        };
        Ok(Publish {
            token,
            service,
            mode,
            options,
        })
    }

    /// The app `config` names for the service.
    pub fn app<'c>(&self, config: &'c MongooseImConfig) -> Result<&'c str, StatelessError> {
        match self.service {
            Service::Apns => config.apns.as_deref(),
            Service::Fcm => config.fcm.as_deref(),
        }
        .ok_or(StatelessError::ServiceNotEnabled(self.service.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::publish;
    use super::*;

    #[test]
    fn every_field_is_read() {
        let request = publish(
            "mongoose-node-1",
            &[
                ("device_id", "a1b2c3"),
                ("service", "apns"),
                ("mode", "dev"),
                ("topic", "org.example.app"),
                ("silent", "false"),
                ("priority", "high"),
                ("sound", "bell.caf"),
                ("mutable_content", "true"),
                ("time_to_live", "3600"),
                ("click_action", "ignored"),
            ],
        );
        assert!(Publish::is_shape_of(&request));
        let p = Publish::from_request(&request).expect("valid");
        assert_eq!(p.token, "a1b2c3");
        assert_eq!(p.service, Service::Apns);
        assert_eq!(p.mode.map(Environment::from), Some(Environment::Sandbox));
        assert_eq!(
            p.options,
            PushOptions {
                topic: Some("org.example.app".into()),
                silent: Some(false),
                high_priority: Some(true),
                sound: Some("bell.caf".into()),
                mutable_content: Some(true),
                ttl_secs: Some(3600),
            }
        );
    }

    #[test]
    fn the_least_is_a_token_and_a_service() {
        let p = Publish::from_request(&publish("n", &[("device_id", "tok"), ("service", "fcm")]))
            .expect("valid");
        assert_eq!(p.service, Service::Fcm);
        assert_eq!(p.mode, None);
        assert_eq!(p.options, PushOptions::default());
        let config = MongooseImConfig {
            apns: Some("ios".into()),
            fcm: None,
            limits: Default::default(),
        };
        assert_eq!(
            p.app(&config),
            Err(StatelessError::ServiceNotEnabled("fcm"))
        );
    }

    #[test]
    fn fields_out_of_their_vocabulary_are_malformed() {
        let base = [("device_id", "tok"), ("service", "apns")];
        for (var, value) in [
            ("service", "webpush"),
            ("mode", "staging"),
            ("silent", "yes"),
            ("priority", "urgent"),
            ("mutable_content", "maybe"),
            ("time_to_live", "-1"),
        ] {
            let mut fields: Vec<_> = base.iter().filter(|(v, _)| *v != var).copied().collect();
            fields.push((var, value));
            assert_eq!(
                Publish::from_request(&publish("n", &fields)),
                Err(StatelessError::BadOption {
                    field: var,
                    value: value.into()
                }),
                "{var}={value}"
            );
        }
        assert_eq!(
            Publish::from_request(&publish("n", &[("service", "apns")])),
            Err(StatelessError::MissingField("device_id"))
        );
        assert!(!Publish::is_shape_of(&publish("n", &[("secret", "s")])));
    }
}
