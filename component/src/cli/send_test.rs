//! `nudge send-test NODE`: one test push to a registered device through the
//! configured backend of its app, and the provider's answer, so that an
//! operator can tell "the APNs key is wrong" from "this token is dead"
//! without waiting for a message. The backend is built from the
//! configuration as `check-config` builds it (`app.rs`); nothing of a
//! running instance is needed or touched.
//!
//! The push is a plain wake-up with a message count of 1, no sender and no
//! body. A dead token does not remove the registration (the dispatcher
//! does that for real pushes, `dispatch/mod.rs`): the command says so and
//! how to remove it. Exit status 0 only when the provider took the push.

use std::time::Duration;

use nudge::config::Config;
use nudge::store::{Registration, RegistrationStore};
use nudge_plugins::{Notification, Outcome};

use super::find_registration;
use crate::BoxError;

/// Runs `nudge send-test NODE` (a node, or its hash from a log line).
pub async fn run(config: &Config, node_or_hash: &str) -> Result<(), BoxError> {
    let store = RegistrationStore::open(&config.database_url(), 16).await?;
    store.migrate().await?;
    let reg = find_registration(&store, node_or_hash).await?;
    store.close().await;
    let Some(provider) = config.apps.get(&reg.app) else {
        return Err(format!(
            "the registration's app {} is not configured ([apps.{}] is missing)",
            reg.app, reg.app
        )
        .into());
    };
    let backend = nudge_plugins::build_backend(&reg.app, provider).await?;
    println!(
        "sending a test push to {} (node hash {}), app {}, device {:?}",
        reg.owner,
        reg.node_for_log(),
        reg.app,
        reg.device_id
    );
    let limit = Duration::from_secs(config.dispatch.push_timeout_secs);
    let notification = test_notification();
    let device = reg.device();
    let outcome = match tokio::time::timeout(limit, backend.send(&device, &notification)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Transient {
            reason: format!("no answer within {limit:?} (dispatch.push_timeout_secs)"),
            retry_after: None,
        },
    };
    println!("{}", describe(&outcome, &reg));
    match outcome {
        Outcome::Delivered => Ok(()),
        other => Err(format!("the push was not delivered ({})", other.kind()).into()),
    }
}

/// A wake-up as a server sends for one new message, without its content.
fn test_notification() -> Notification {
    Notification {
        message_count: Some(1),
        fields: vec![("message-count".to_owned(), "1".to_owned())],
        ..Notification::default()
    }
}

/// The provider's answer, and what the operator can do about it.
fn describe(outcome: &Outcome, reg: &Registration) -> String {
    match outcome {
        Outcome::Delivered => "delivered: the provider took the push".to_owned(),
        Outcome::InvalidToken { reason } => format!(
            "invalid token: {reason}\n\
             The provider says this device's token is dead (the app was removed, or it \
             registered a new token). The registration was kept; remove it with\n  \
             nudge registrations remove {}",
            reg.node
        ),
        Outcome::Throttled { retry_after } => match retry_after {
            Some(d) => format!(
                "throttled: the provider asks to retry after {} s",
                d.as_secs()
            ),
            None => "throttled: the provider asks to slow down".to_owned(),
        },
        Outcome::Transient { reason, .. } => format!(
            "transient failure: {reason}\n\
             The provider (or the way to it) failed for now; try again later."
        ),
        Outcome::Rejected { reason } => format!(
            "rejected: {reason}\n\
             The provider refused the request itself: check [apps.{}] (credentials, topic \
             or project, endpoint).",
            reg.app
        ),
    }
}
