//! Monal's stateless mode, as fpush serves it: the client enables push
//! with `node` = its device token and a publish-options form carrying
//! `pushModule`, the name of the app (and APNs environment) the token
//! belongs to. Nothing is registered and no secret is involved: the
//! publish alone names the device. Monal's module names are
//! `monalProdiOS`, `monalProdCatalyst`, `quicksyProdiOS`,
//! `quicksyProdCatalyst` and `monalAlpha`, each optionally with `-sandbox`
//! for a sandbox token; `[dialects.fpush]` maps names to apps.

use nudge_plugins::Environment;

use super::StatelessError;
use crate::config::{FpushConfig, SANDBOX_SUFFIX};
use crate::push::PublishRequest;

/// The publish-options field naming the module.
pub const PUSH_MODULE_FIELD: &str = "pushModule";

/// A `pushModule` value: the module's name and the environment its
/// `-sandbox` suffix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushModule {
    /// The name without the suffix, as `[dialects.fpush.modules]` lists it.
    pub name: String,
    /// `Some(Sandbox)` for a `-sandbox` module; `None` otherwise (the app's
    /// configured endpoint).
    pub environment: Option<Environment>,
}

impl From<&str> for PushModule {
    fn from(value: &str) -> Self {
        match value.strip_suffix(SANDBOX_SUFFIX) {
            Some(name) => PushModule {
                name: name.to_owned(),
                environment: Some(Environment::Sandbox),
            },
            None => PushModule {
                name: value.to_owned(),
                environment: None,
            },
        }
    }
}

/// A publish in the fpush shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The module it names.
    pub module: PushModule,
    /// Whether the publish named it (false: the configured default module).
    pub named: bool,
}

impl Publish {
    /// The fpush publish `request` is: one naming a `pushModule`; or, when
    /// a default module is configured, one without a secret (a publish
    /// with a secret belongs to a registration, perhaps one removed).
    /// `None` when it is not one.
    pub fn from_request(request: &PublishRequest, config: Option<&FpushConfig>) -> Option<Publish> {
        if let Some((_, value)) = request
            .options
            .iter()
            .find(|(var, _)| var == PUSH_MODULE_FIELD)
        {
            return Some(Publish {
                module: PushModule::from(value.trim()),
                named: true,
            });
        }
        let default = config?.default_module.as_deref()?;
        request.secret.is_none().then(|| Publish {
            module: PushModule::from(default),
            named: false,
        })
    }

    /// The app the module means under `config`.
    pub fn app<'c>(&self, config: &'c FpushConfig) -> Result<&'c str, StatelessError> {
        config
            .app_of(&self.module.name)
            .ok_or_else(|| StatelessError::UnknownModule(self.module.name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::publish;
    use super::*;

    fn config(default_module: Option<&str>) -> FpushConfig {
        FpushConfig {
            modules: [(
                "monal".to_owned(),
                vec!["monalProdiOS".to_owned(), "monalAlpha".to_owned()],
            )]
            .into(),
            default_module: default_module.map(str::to_owned),
            limits: Default::default(),
        }
    }

    #[test]
    fn a_module_names_app_and_environment() {
        let config = config(None);
        let p = Publish::from_request(&publish("a1b2", &[("pushModule", "monalProdiOS")]), None)
            .expect("fpush");
        assert_eq!(p.module.environment, None);
        assert!(p.named);
        assert_eq!(p.app(&config).ok(), Some("monal"));
        let p = Publish::from_request(
            &publish("a1b2", &[("pushModule", "monalAlpha-sandbox")]),
            None,
        )
        .expect("fpush");
        assert_eq!(
            p.module,
            PushModule {
                name: "monalAlpha".into(),
                environment: Some(Environment::Sandbox)
            }
        );
        assert_eq!(p.app(&config).ok(), Some("monal"));
        let p = Publish::from_request(&publish("a1b2", &[("pushModule", "quicksyProdiOS")]), None)
            .expect("fpush");
        assert_eq!(
            p.app(&config),
            Err(StatelessError::UnknownModule("quicksyProdiOS".into()))
        );
    }

    #[test]
    fn the_default_module_covers_publishes_without_one_or_a_secret() {
        let without = publish("a1b2", &[]);
        assert_eq!(Publish::from_request(&without, Some(&config(None))), None);
        assert_eq!(Publish::from_request(&without, None), None);
        let p = Publish::from_request(&without, Some(&config(Some("monalProdiOS-sandbox"))))
            .expect("the default module");
        assert!(!p.named);
        assert_eq!(p.module.name, "monalProdiOS");
        assert_eq!(p.module.environment, Some(Environment::Sandbox));
        // A secret means a registration (perhaps one removed): not fpush.
        let with_secret = publish("a1b2", &[("secret", "s")]);
        assert_eq!(
            Publish::from_request(&with_secret, Some(&config(Some("monalProdiOS")))),
            None
        );
    }
}
