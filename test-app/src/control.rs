//! The control API (JSON over plain HTTP), the live page's routes, and the
//! plain-HTTP OAuth token endpoint, all on the control port.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /` | the live page |
//! | `GET /events` | SSE feed: `hello` (`{"last_id"}`), `push` (a push as JSON), `reset` |
//! | `POST /token` | the OAuth token endpoint (default `token_uri`) |
//! | `GET /api/pushes?token=&provider=&since_ms=&after_id=&delivered=` | recorded pushes, oldest first |
//! | `GET /api/wait?token=T&timeout_ms=N&delivered=` | next unconsumed push for T; 408 after the timeout (at most 300 s) |
//! | `POST /api/publishes` `{"token"}` | note a publish now, for the latency of the next push |
//! | `POST /api/reset` | forget pushes, cursors, faults, counters |
//! | `GET /api/faults` | faults set explicitly |
//! | `PUT /api/faults/{token}` [`FaultSpec`](crate::FaultSpec) | set a fault, e.g. `{"kind":"fail_times","times":2}` |
//! | `DELETE /api/faults/{token}` | remove it |
//! | `GET /api/provider-faults` | faults set for every token of a mock |
//! | `PUT /api/provider-faults/{apns\|fcm\|webpush}` [`FaultSpec`](crate::FaultSpec) | a provider-wide fault, e.g. an outage `{"kind":"fail_for","ms":10000}`; a token's own fault still wins |
//! | `DELETE /api/provider-faults/{apns\|fcm\|webpush}` | remove it |
//! | `POST /api/webpush/subscriptions` (optional [`SubscribeOptions`](crate::SubscribeOptions) `{"name","application_server_key"}`) | 201 and a new Web Push subscription `{"endpoint","p256dh","auth","token"}`; a name starts its id (fault prefixes) |
//! | `DELETE /api/webpush/subscriptions/{id}` | end it (later pushes get 410); 404 when no live one has that id |
//! | `GET /api/stats` | [`Stats`](crate::Stats) |
//! | `POST /api/oauth/revoke` | invalidate every issued access token |
//! | `PUT /api/oauth/lifetime` `{"secs"}` | lifetime of tokens issued from now on |
//! | `GET /api/credentials` | URLs, CA, APNs key/ids, client identity, service account |
//! | `GET /api/credentials/{ca.pem,apns.p8,apns-client-cert.pem,apns-client-key.pem,fcm-service-account.json}` | the same as files |
//!
//! Errors are `{"error": "..."}` with a 4xx status.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use futures_util::Stream;
use hyper::Request;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;
use tower_service::Service;

use crate::recorder::{FeedEvent, Provider, PushFilter};
use crate::{FaultSpec, Shared, SubscribeOptions};

type AppState = State<Arc<Shared>>;

/// The longest a `GET /api/wait` may block.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Serves the control port. The router runs in the test-app's own accept
/// loop (not `axum::serve`, whose connection tasks outlive it) so that
/// stopping the test-app also ends open SSE feeds and long-polls.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let router = router(shared);
    crate::server::run_plain(listener, "control", move |req| {
        let mut router = router.clone();
        async move {
            // Router is always ready; asking keeps to the Service contract.
            std::future::poll_fn(|cx| Service::<Request<Incoming>>::poll_ready(&mut router, cx))
                .await?;
            router.call(req).await
        }
    })
    .await
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/events", get(events))
        .route("/token", post(token))
        .route("/api/pushes", get(pushes))
        .route("/api/wait", get(wait))
        .route("/api/publishes", post(publish))
        .route("/api/reset", post(reset))
        .route("/api/faults", get(faults))
        .route(
            "/api/faults/{token}",
            put(set_fault).post(set_fault).delete(clear_fault),
        )
        .route("/api/provider-faults", get(provider_faults))
        .route(
            "/api/provider-faults/{provider}",
            put(set_provider_fault)
                .post(set_provider_fault)
                .delete(clear_provider_fault),
        )
        .route("/api/webpush/subscriptions", post(webpush_subscribe))
        .route(
            "/api/webpush/subscriptions/{id}",
            axum::routing::delete(webpush_unsubscribe),
        )
        .route("/api/stats", get(stats))
        .route("/api/oauth/revoke", post(revoke))
        .route("/api/oauth/lifetime", put(lifetime))
        .route("/api/credentials", get(credentials))
        .route("/api/credentials/{file}", get(credential_file))
        .with_state(shared)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

async fn page() -> Html<&'static str> {
    Html(crate::page::HTML)
}

async fn events(State(shared): AppState) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before reading the last id, so that the page (which loads
    // the history after `hello`) misses nothing; it drops duplicates by id.
    let rx = shared.recorder.subscribe();
    let last_id = shared
        .recorder
        .list(&PushFilter::default())
        .last()
        .map_or(0, |p| p.id);
    let hello = Event::default()
        .event("hello")
        .data(json!({"last_id": last_id}).to_string());
    let feed = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(FeedEvent::Push(p)) => {
                    let ev = Event::default().event("push").data(p.to_json().to_string());
                    return Some((Ok(ev), rx));
                }
                Ok(FeedEvent::Reset) => {
                    return Some((Ok(Event::default().event("reset").data("{}")), rx));
                }
                // A slow page skips what it missed; it can reload.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let stream =
        futures_util::StreamExt::chain(futures_util::stream::once(async { Ok(hello) }), feed);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn token(State(shared): AppState, body: Bytes) -> Response {
    let answer = crate::oauth::token_endpoint(&shared, &body);
    (
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST),
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(answer.body),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct PushQuery {
    token: Option<String>,
    provider: Option<String>,
    since_ms: Option<u64>,
    after_id: Option<u64>,
    #[serde(default)]
    delivered: bool,
}

async fn pushes(State(shared): AppState, Query(q): Query<PushQuery>) -> Response {
    let provider = match q
        .provider
        .as_deref()
        .map(str::parse::<Provider>)
        .transpose()
    {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let filter = PushFilter {
        token: q.token,
        provider,
        since: q.since_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        after_id: q.after_id,
        delivered_only: q.delivered,
    };
    let list: Vec<Value> = shared
        .recorder
        .list(&filter)
        .iter()
        .map(|p| p.to_json())
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    token: String,
    #[serde(default = "default_wait_ms")]
    timeout_ms: u64,
    #[serde(default)]
    delivered: bool,
}

fn default_wait_ms() -> u64 {
    10_000
}

async fn wait(State(shared): AppState, Query(q): Query<WaitQuery>) -> Response {
    let timeout = Duration::from_millis(q.timeout_ms).min(MAX_WAIT);
    match shared.recorder.wait(&q.token, timeout, q.delivered).await {
        Some(p) => axum::Json(p.to_json()).into_response(),
        None => error(
            StatusCode::REQUEST_TIMEOUT,
            format!("no push for {} within {} ms", q.token, timeout.as_millis()),
        ),
    }
}

#[derive(Debug, Deserialize)]
struct PublishBody {
    token: String,
}

async fn publish(State(shared): AppState, body: Bytes) -> Response {
    match serde_json::from_slice::<PublishBody>(&body) {
        Ok(b) => {
            shared.recorder.note_publish(&b.token);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn reset(State(shared): AppState) -> StatusCode {
    shared.recorder.reset();
    shared.faults.reset();
    shared.stats.reset();
    StatusCode::NO_CONTENT
}

async fn faults(State(shared): AppState) -> axum::Json<Value> {
    let map: serde_json::Map<String, Value> = shared
        .faults
        .list()
        .into_iter()
        .map(|(token, fault)| {
            let spec = FaultSpec::from(&fault);
            (token, serde_json::to_value(spec).unwrap_or(Value::Null))
        })
        .collect();
    axum::Json(Value::Object(map))
}

async fn set_fault(State(shared): AppState, Path(token): Path<String>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultSpec>(&body) {
        Ok(spec) => {
            shared.faults.set(&token, spec.into());
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, format!("bad fault: {e}")),
    }
}

async fn clear_fault(State(shared): AppState, Path(token): Path<String>) -> StatusCode {
    shared.faults.clear(&token);
    StatusCode::NO_CONTENT
}

async fn provider_faults(State(shared): AppState) -> axum::Json<Value> {
    let map: serde_json::Map<String, Value> = shared
        .faults
        .list_providers()
        .into_iter()
        .map(|(provider, fault)| {
            let name = serde_json::to_value(provider)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let spec = FaultSpec::from(&fault);
            (name, serde_json::to_value(spec).unwrap_or(Value::Null))
        })
        .collect();
    axum::Json(Value::Object(map))
}

async fn set_provider_fault(
    State(shared): AppState,
    Path(provider): Path<String>,
    body: Bytes,
) -> Response {
    let provider = match provider.parse::<Provider>() {
        Ok(p) => p,
        Err(e) => return error(StatusCode::NOT_FOUND, e),
    };
    match serde_json::from_slice::<FaultSpec>(&body) {
        Ok(spec) => {
            shared.faults.set_provider(provider, spec.into());
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, format!("bad fault: {e}")),
    }
}

async fn clear_provider_fault(State(shared): AppState, Path(provider): Path<String>) -> Response {
    match provider.parse::<Provider>() {
        Ok(p) => {
            shared.faults.clear_provider(p);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

async fn webpush_subscribe(State(shared): AppState, body: Bytes) -> Response {
    let options = if body.iter().all(u8::is_ascii_whitespace) {
        SubscribeOptions::default()
    } else {
        match serde_json::from_slice::<SubscribeOptions>(&body) {
            Ok(o) => o,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    };
    match shared.webpush.subscribe(&shared.urls.webpush, &options) {
        Ok(sub) => (StatusCode::CREATED, axum::Json(sub)).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn webpush_unsubscribe(State(shared): AppState, Path(id): Path<String>) -> Response {
    if shared.webpush.unsubscribe(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no live subscription {id}"))
    }
}

async fn stats(State(shared): AppState) -> axum::Json<crate::Stats> {
    axum::Json(shared.stats.snapshot())
}

async fn revoke(State(shared): AppState) -> StatusCode {
    shared.oauth.revoke_all();
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct LifetimeBody {
    secs: f64,
}

async fn lifetime(State(shared): AppState, body: Bytes) -> Response {
    match serde_json::from_slice::<LifetimeBody>(&body) {
        Ok(b) if b.secs.is_finite() && b.secs >= 0.0 => {
            shared.oauth.set_lifetime(Duration::from_secs_f64(b.secs));
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(_) => error(
            StatusCode::BAD_REQUEST,
            "secs must be a non-negative number",
        ),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn credentials(State(shared): AppState) -> axum::Json<Value> {
    let service_account: Value =
        serde_json::from_str(&shared.service_account_json).unwrap_or(Value::Null);
    axum::Json(json!({
        "urls": shared.urls,
        "ca_cert_pem": shared.pki.ca_cert_pem,
        "apns": {
            "key_pem": shared.apns_key.credentials.key_pem,
            "key_id": shared.apns_key.credentials.key_id,
            "team_id": shared.apns_key.credentials.team_id,
            "topics": shared.config.apns_topics,
        },
        "apns_client_identity": shared.pki.client_identity,
        "fcm": {
            "project_id": shared.service_account.project_id,
            "service_account": service_account,
        },
    }))
}

async fn credential_file(State(shared): AppState, Path(file): Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "ca.pem" => ("application/x-pem-file", shared.pki.ca_cert_pem.clone()),
        "apns.p8" => (
            "application/x-pem-file",
            shared.apns_key.credentials.key_pem.clone(),
        ),
        "apns-client-cert.pem" => (
            "application/x-pem-file",
            shared.pki.client_identity.cert_pem.clone(),
        ),
        "apns-client-key.pem" => (
            "application/x-pem-file",
            shared.pki.client_identity.key_pem.clone(),
        ),
        "fcm-service-account.json" => ("application/json", shared.service_account_json.clone()),
        other => return error(StatusCode::NOT_FOUND, format!("no credential file {other}")),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
