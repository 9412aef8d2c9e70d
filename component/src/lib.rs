//! Nudge: an XEP-0357 push App Server that runs as an XEP-0114 external
//! component of any XMPP server.
//!
//! The data path, one module each:
//! socket and stanzas ([`xmpp`]) → the publish and its checks ([`push`]) →
//! registration lookup ([`store`]) → the device's backend and the answer
//! ([`dispatch`]) → the provider (crate `nudge-plugins`). Registration
//! commands ([`register`]) are the other way in. [`service`] routes each
//! stanza; [`app`] wires it all together from the [`config`]; [`instance`]
//! is this process among others (the SQLite lock, the zero-gap handover);
//! [`http`] is the operator's and app backends' way in (metrics, health,
//! status, the registration API); [`metrics`] names and records what
//! `/metrics` exports.

pub mod app;
pub mod config;
pub mod dispatch;
pub mod http;
pub mod instance;
pub mod metrics;
pub mod push;
pub mod register;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod xmpp;

pub use app::{Running, StartError, start};
pub use config::Config;
