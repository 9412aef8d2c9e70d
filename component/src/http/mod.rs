//! The HTTP listener (`[http]`, `config.rs`): what an operator and an app
//! backend reach besides the XMPP stream. One route group per file, as the
//! registration dialects are one file each (`register/`):
//!
//! - [`health`]: `/health` (the process is alive) and `/ready` (the
//!   component stream is up and the database answers), for orchestrators;
//! - [`registrations`]: `/v1/apps/{app}/registrations…`, the registration
//!   API for app backends (`docs/openapi.json`);
//! - [`status`]: `/status`, the instance's state for an operator (`nudge
//!   status`);
//! - [`metrics`]: `/metrics`, the Prometheus exposition (`crate::metrics`);
//!
//! Everything here reads the running instance's state ([`HttpState`]); none
//! of it is on the publish path.

pub mod health;
pub mod metrics;
pub mod registrations;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::shutdown::Shutdown;
use crate::store::RegistrationStore;
use crate::xmpp::stream::LinkState;

/// What the routes read: the running instance's parts.
#[derive(Clone)]
pub struct HttpState {
    /// The configuration the instance runs with.
    pub config: Arc<Config>,
    /// The registration store (and through it the outbox).
    pub store: RegistrationStore,
    /// The dispatcher: its counters and per-app ledger.
    pub dispatcher: Arc<Dispatcher>,
    /// The component link's state.
    pub link: watch::Receiver<LinkState>,
    /// The registration API's keys (`[http.api_keys]`), as it compares them.
    pub api_keys: Arc<registrations::ApiKeys>,
    /// The link's history: connected since, reconnects.
    pub link_history: Arc<status::LinkHistory>,
    /// When `/metrics` last read the database-backed gauges.
    pub scrape: Arc<metrics::ScrapeCache>,
}

/// Every route, on one router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(registrations::routes())
        .merge(status::routes())
        .merge(metrics::routes())
        .with_state(state)
}

/// Binds `addr`. While `predecessor_running` says the instance being
/// replaced still runs, an address in use is waited for (every 100 ms,
/// up to `wait_at_most`): the two processes overlap during a handover, and
/// the old one gives the port up when it exits.
pub async fn bind(
    addr: SocketAddr,
    predecessor_running: impl Fn() -> bool,
    wait_at_most: Duration,
) -> std::io::Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + wait_at_most;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && predecessor_running()
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "HTTP listener on http://{addr} (/metrics, /health, /ready, /status)");
    }
    let stopped = async move { shutdown.wait().await };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!(error = %e, "the HTTP listener failed");
    }
}
