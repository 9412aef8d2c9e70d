//! `GET /status`: what an operator asks a running instance ("is it
//! connected, since when, is anything stuck, when did each app's provider
//! last take a push and why did it last fail"), as JSON. `nudge status`
//! (`cli/status.rs`) prints it for humans; without a running instance it
//! falls back to what the database tells ([`database_view`]).
//!
//! The link's history (connected since, reconnects) is kept by a small task
//! that follows the link's state ([`LinkHistory`]), started with the
//! instance (`app.rs`). A drop and return faster than the task is
//! scheduled may be missed by it (the state is a `watch`: only the latest
//! value is seen), so `reconnects` is a lower bound.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::HttpState;
use crate::dispatch::DispatchStats;
use crate::dispatch::ledger::AppRecord;
use crate::store::{RegistrationStore, StoreError, now};
use crate::xmpp::stream::LinkState;

/// The routes of this file.
pub fn routes() -> Router<HttpState> {
    Router::new().route("/status", get(status))
}

/// The whole answer of `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Nudge's version.
    pub version: String,
    /// The process id (the one `nudge run --replace PID` names).
    pub pid: u32,
    /// The component domain.
    pub domain: String,
    /// The component link.
    pub link: LinkStatus,
    /// Whether the database answered while this was put together.
    pub database: DatabaseStatus,
    /// The outbox; `None` when the database did not answer.
    pub outbox: Option<OutboxStatus>,
    /// Every configured app's provider record (apps without a push since
    /// the start have an empty one).
    pub apps: BTreeMap<String, AppRecord>,
    /// What the dispatcher did since the start.
    pub dispatch: DispatchCounts,
    /// The removal brake per app that ever engaged; `None` when the
    /// database did not answer.
    pub brakes: Option<Vec<BrakeStatus>>,
}

/// The component link's state and history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// `connected`, `connecting`, `standby`, `auth_failed` or `stopped`.
    pub state: String,
    /// Since when (unix seconds) the link is in this state.
    pub since: i64,
    /// Since when (unix seconds) it is connected; `None` while it is not.
    pub connected_since: Option<i64>,
    /// How many times it connected again after having been connected.
    pub reconnects: u64,
}

/// The database, as seen while answering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseStatus {
    /// `sqlite` or `postgres`.
    pub kind: String,
    /// Why it did not answer; `None` when it did.
    pub error: Option<String>,
}

/// The outbox of accepted pushes waiting for a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxStatus {
    /// Pushes waiting.
    pub queued: i64,
    /// How long the oldest has waited, in seconds.
    pub oldest_age_secs: Option<i64>,
}

/// One app's removal brake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrakeStatus {
    /// The app.
    pub app: String,
    /// Whether it holds removals now (engaged after its last release).
    pub engaged: bool,
    /// When it last engaged (unix seconds).
    pub engaged_at: i64,
    /// When it was last released (unix seconds; 0: never).
    pub released_at: i64,
    /// Removals it holds back.
    pub held: usize,
}

/// The dispatcher's counters ([`DispatchStats`]) as numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchCounts {
    pub delivered: u64,
    pub queued: u64,
    pub coalesced: u64,
    pub limited: u64,
    pub retries: u64,
    pub expired: u64,
    pub dropped_unregistered: u64,
    pub rejected: u64,
    pub removed: u64,
    pub held: u64,
}

impl From<&DispatchStats> for DispatchCounts {
    fn from(s: &DispatchStats) -> Self {
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        DispatchCounts {
            delivered: n(&s.delivered),
            queued: n(&s.queued),
            coalesced: n(&s.coalesced),
            limited: n(&s.limited),
            retries: n(&s.retries),
            expired: n(&s.expired),
            dropped_unregistered: n(&s.dropped_unregistered),
            rejected: n(&s.rejected),
            removed: n(&s.removed),
            held: n(&s.held),
        }
    }
}

/// A client for plain-HTTP requests to the listener (`nudge status`,
/// tests). reqwest is built without a crypto provider of its own
/// (`rustls-no-provider`) and refuses to build a client without one, so it
/// gets ring's, with no trusted roots: it is never meant to speak TLS.
pub fn plain_client(timeout: std::time::Duration) -> Result<reqwest::Client, PlainClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(timeout)
        .build()?)
}

/// Why [`plain_client`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PlainClientError {
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The link's transitions, followed by a task ([`LinkHistory::follow`]).
#[derive(Debug, Default)]
pub struct LinkHistory {
    times: Mutex<LinkStatus>,
}

impl LinkHistory {
    /// Starts following `state` (within a Tokio runtime); the task ends
    /// when the link is dropped.
    pub fn follow(mut state: watch::Receiver<LinkState>) -> Arc<LinkHistory> {
        let history = Arc::new(LinkHistory::default());
        let recorder = history.clone();
        tokio::spawn(async move {
            let mut was_connected = false;
            loop {
                let current = state.borrow_and_update().clone();
                recorder.enter(&current, &mut was_connected, now());
                if state.changed().await.is_err() {
                    return;
                }
            }
        });
        history
    }

    fn enter(&self, state: &LinkState, was_connected: &mut bool, at: i64) {
        let mut times = self.times.lock().unwrap_or_else(|e| e.into_inner());
        if times.state == state.as_str() {
            return;
        }
        times.state = state.as_str().to_owned();
        times.since = at;
        if *state == LinkState::Connected {
            if *was_connected {
                times.reconnects += 1;
            }
            *was_connected = true;
            times.connected_since = Some(at);
        } else {
            times.connected_since = None;
        }
    }

    /// The state as last seen, with its history.
    pub fn snapshot(&self) -> LinkStatus {
        self.times.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the database alone tells: the outbox and the brakes (also what
/// `nudge status` prints when no instance answers).
pub async fn database_view(
    store: &RegistrationStore,
) -> Result<(OutboxStatus, Vec<BrakeStatus>), StoreError> {
    let summary = store.outbox().summary().await?;
    let outbox = OutboxStatus {
        queued: summary.queued,
        oldest_age_secs: summary.oldest_created_at.map(|t| (now() - t).max(0)),
    };
    let brakes = store.brake();
    let held = brakes.held(None).await?;
    let brakes = brakes
        .records()
        .await?
        .into_iter()
        .map(|(app, r)| BrakeStatus {
            held: held.iter().filter(|h| h.app == app).count(),
            engaged: r.engaged_at > r.released_at,
            engaged_at: r.engaged_at,
            released_at: r.released_at,
            app,
        })
        .collect();
    Ok((outbox, brakes))
}

/// The status, pretty-printed (it is read by people with `curl` too).
async fn status(State(state): State<HttpState>) -> Response {
    let status = gather(&state).await;
    match serde_json::to_string_pretty(&status) {
        Ok(body) => ([(CONTENT_TYPE, "application/json")], body + "\n").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn gather(state: &HttpState) -> Status {
    let (database, outbox, brakes) = match database_view(&state.store).await {
        Ok((outbox, brakes)) => (None, Some(outbox), Some(brakes)),
        Err(e) => (Some(e.to_string()), None, None),
    };
    let mut apps: BTreeMap<String, AppRecord> = state
        .config
        .apps
        .keys()
        .map(|app| (app.clone(), AppRecord::default()))
        .collect();
    apps.extend(state.dispatcher.ledger.snapshot());
    let link = state.link_history.snapshot();
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        domain: state.config.component.domain.clone(),
        link,
        database: DatabaseStatus {
            kind: state.store.kind().to_owned(),
            error: database,
        },
        outbox,
        apps,
        dispatch: DispatchCounts::from(&state.dispatcher.stats),
        brakes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reconnects_and_clears_connected_since_while_down() {
        let history = LinkHistory::default();
        let mut was = false;
        history.enter(&LinkState::Connecting, &mut was, 1);
        assert_eq!(history.snapshot().connected_since, None);
        history.enter(&LinkState::Connected, &mut was, 2);
        let s = history.snapshot();
        assert_eq!(
            (s.state.as_str(), s.connected_since, s.reconnects),
            ("connected", Some(2), 0)
        );
        history.enter(&LinkState::Connecting, &mut was, 5);
        let s = history.snapshot();
        assert_eq!((s.since, s.connected_since), (5, None));
        history.enter(&LinkState::Connected, &mut was, 7);
        // The same state again changes nothing.
        history.enter(&LinkState::Connected, &mut was, 9);
        let s = history.snapshot();
        assert_eq!((s.since, s.connected_since, s.reconnects), (7, Some(7), 1));
    }
}
