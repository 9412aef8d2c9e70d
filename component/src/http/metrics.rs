//! `GET /metrics`: the Prometheus exposition of what `metrics.rs` records.
//!
//! Most metrics are recorded where things happen; the ones that describe
//! the database (outbox depth and age, registrations by app) are read here,
//! at scrape time, at most once per [`OUTBOX_EVERY`] and
//! [`REGISTRATIONS_EVERY`] however many scrapers ask, so that their cost
//! stays bounded (the registration count is a `GROUP BY` over the table).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Mutex;
use tracing::warn;

use super::HttpState;

/// The exposition format's content type.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The outbox gauges are read at most this often.
pub const OUTBOX_EVERY: Duration = Duration::from_secs(1);
/// The registration counts are read at most this often.
pub const REGISTRATIONS_EVERY: Duration = Duration::from_secs(5);
/// A database read for a scrape gives up after this (a hanging database
/// must not hang the scrape: the gauges keep their last values).
const READ_WITHIN: Duration = Duration::from_secs(2);

/// The routes of this file.
pub fn routes() -> Router<HttpState> {
    Router::new().route("/metrics", get(metrics))
}

/// When the database-backed gauges were last read.
#[derive(Default)]
pub struct ScrapeCache {
    outbox: Mutex<Option<Instant>>,
    /// When, and which apps were reported (an app whose registrations are
    /// all gone is reported 0, not left at its last count).
    registrations: Mutex<(Option<Instant>, BTreeSet<String>)>,
}

impl ScrapeCache {
    /// Reads what is due. A failing database is logged and retried at the
    /// next period; the gauges keep their last values meanwhile.
    async fn refresh(&self, state: &HttpState) {
        {
            let mut last = self.outbox.lock().await;
            if last.is_none_or(|at| at.elapsed() >= OUTBOX_EVERY) {
                *last = Some(Instant::now());
                let outbox = state.store.outbox();
                match tokio::time::timeout(READ_WITHIN, outbox.summary()).await {
                    Ok(Ok(summary)) => crate::metrics::set_outbox(&summary, crate::store::now()),
                    Ok(Err(e)) => warn!(error = %e, "metrics: could not read the outbox summary"),
                    Err(_) => warn!("metrics: the outbox summary took too long"),
                }
            }
        }
        let mut guard = self.registrations.lock().await;
        let (last, reported) = &mut *guard;
        if last.is_some_and(|at| at.elapsed() < REGISTRATIONS_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        match tokio::time::timeout(READ_WITHIN, state.store.count_by_app()).await {
            Err(_) => warn!("metrics: counting the registrations took too long"),
            Ok(Ok(counts)) => {
                let mut apps: BTreeSet<String> = reported.clone();
                apps.extend(state.config.apps.keys().cloned());
                apps.extend(counts.iter().map(|(app, _)| app.clone()));
                crate::metrics::set_registrations(apps.iter().map(|app| {
                    let n = counts.iter().find(|(a, _)| a == app).map_or(0, |(_, n)| *n);
                    (app.as_str(), n)
                }));
                *reported = apps;
            }
            Ok(Err(e)) => warn!(error = %e, "metrics: could not count the registrations"),
        }
    }
}

/// Renders the recorder; 404 when this process installed none.
async fn metrics(State(state): State<HttpState>) -> Response {
    let Some(handle) = crate::metrics::handle() else {
        return (
            StatusCode::NOT_FOUND,
            "no metrics recorder in this process\n",
        )
            .into_response();
    };
    state.scrape.refresh(&state).await;
    ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], handle.render()).into_response()
}
