//! `/health` and `/ready`, for orchestrators and load balancers.
//!
//! `/health` answers 200 while the process serves HTTP at all. `/ready`
//! answers 200 only while this instance can take publishes: its component
//! stream is established and its database answers a trivial query within
//! [`DATABASE_WITHIN`]; otherwise 503. Either way the body says which part
//! is not, e.g. `{"link":"connecting","database":"ok"}`.
//!
//! How fast it flips: the link state changes as soon as the socket closes
//! (the XMPP server stopped or restarted: within milliseconds). A server
//! that stops answering without closing the socket (hung, or a network
//! path gone) is noticed by the link's watchdog after `read_idle_secs` of
//! silence plus `ping_timeout_secs` without an answer to the ping
//! (`xmpp/stream.rs`; 10 + 5 s by default). A standby instance (another
//! one holds the component domain) is not ready: publishes do not reach it.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::HttpState;
use crate::xmpp::stream::LinkState;

/// How long `/ready` waits for the database.
pub const DATABASE_WITHIN: Duration = Duration::from_millis(500);

/// The routes of this file.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// The process is alive.
async fn health() -> &'static str {
    "ok\n"
}

/// What `/ready` answers: each part's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// The component link's state (`connected`, `connecting`, `standby`,
    /// `auth_failed`, `stopped`).
    pub link: String,
    /// `ok`, or why the database did not answer.
    pub database: String,
}

/// 200 while the link is connected and the database answers; 503 otherwise.
async fn ready(State(state): State<HttpState>) -> (StatusCode, Json<Readiness>) {
    let link = state.link.borrow().clone();
    let database = match state.store.ping(DATABASE_WITHIN).await {
        Ok(()) => None,
        Err(e) => Some(e.to_string()),
    };
    let status = if link == LinkState::Connected && database.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        link: link.as_str().to_owned(),
        database: database.unwrap_or_else(|| "ok".to_owned()),
    };
    (status, Json(body))
}
