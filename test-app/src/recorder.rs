//! The record of every push request the mocks answered, and the ways to
//! read it: a filtered list, a wait for the next push for a token, and a
//! live feed for the page.
//!
//! Every request that names a device token is recorded with the status the
//! mock answered, rejected ones included (a test asserts "the bad JWT got
//! 403 `InvalidProviderToken`" by reading the record). Requests that name no
//! token (bad path, HTTP/1.1 on APNs, TLS failures) only show in
//! [`crate::Stats`].
//!
//! # Waiting
//! Each token has a cursor: [`crate::TestApp::wait_for_push`] returns the oldest push for
//! the token that lies after the cursor and moves the cursor past it,
//! waiting up to the timeout for one to arrive. So a push recorded before the
//! call but never returned by a wait counts ("already recorded but
//! unconsumed"), and two waits never return the same push. `delivered_only`
//! skips (and consumes) rejected pushes on the way. [`crate::TestApp::pushes`] never
//! moves cursors; `reset` clears everything.
//!
//! The record is bounded (`max_recorded`): the oldest entries go first, so
//! a benchmark through the mocks cannot exhaust memory.
//!
//! # Arrivals
//! A load harness (`bench/`) needs every push as it arrives, with a
//! monotonic arrival time, and cannot afford to poll the record:
//! [`crate::TestApp::arrivals`] hands out a channel that receives an
//! [`Arrival`] for each recorded push from then on (unbounded, so the mock
//! never waits for the reader; the reader must keep up or drop it).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, broadcast, mpsc};

/// Which mock a push went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Apns,
    Fcm,
    /// The Web Push endpoint (`"webpush"`), see [`crate::webpush`].
    WebPush,
}

impl std::str::FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "apns" => Ok(Provider::Apns),
            "fcm" => Ok(Provider::Fcm),
            "webpush" => Ok(Provider::WebPush),
            other => Err(format!("unknown provider {other:?} (apns, fcm or webpush)")),
        }
    }
}

/// Which of Apple's two APNs environments a push was sent to. The mock
/// serves both on one port: `/3/device/{token}` and
/// `/production/3/device/{token}` are production (`api.push.apple.com`),
/// `/sandbox/3/device/{token}` is the sandbox
/// (`api.sandbox.push.apple.com`), so that a test can tell which endpoint a
/// sender chose for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    Production,
    Sandbox,
}

impl ApnsEnvironment {
    /// The path prefix the mock serves this environment under besides the
    /// bare `/3/device/` (production).
    pub fn path_prefix(self) -> &'static str {
        match self {
            ApnsEnvironment::Production => "/production",
            ApnsEnvironment::Sandbox => "/sandbox",
        }
    }

    /// Splits a request path into the environment and the path Apple
    /// would have seen (`/3/device/…`).
    pub(crate) fn from_path(path: &str) -> (ApnsEnvironment, &str) {
        for env in [ApnsEnvironment::Sandbox, ApnsEnvironment::Production] {
            if let Some(rest) = path.strip_prefix(env.path_prefix())
                && rest.starts_with("/3/")
            {
                return (env, rest);
            }
        }
        (ApnsEnvironment::Production, path)
    }
}

/// How the request authenticated, as far as the mock got in checking it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuthMethod {
    /// APNs provider token; `key_id` is the JWT's `kid` when readable.
    Jwt { key_id: Option<String> },
    /// APNs TLS client certificate.
    Certificate,
    /// FCM OAuth 2 bearer token.
    OAuth,
    /// Web Push VAPID (RFC 8292); `key` is the `k` parameter as sent, when
    /// the header could be read that far.
    Vapid { key: Option<String> },
    /// No usable credentials.
    None,
}

/// One push request as the mock saw and answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedPush {
    /// Increasing sequence number, unique within a [`crate::TestApp`].
    pub id: u64,
    pub provider: Provider,
    /// The device token (APNs: from the path; FCM: `message.token`, or
    /// `topic:NAME` / `condition:EXPR` for those targets; Web Push: the
    /// subscription's token, `<endpoint>#p256dh=…&auth=…`).
    pub token: String,
    pub received_at: SystemTime,
    /// APNs: the environment whose endpoint the push reached (see
    /// [`ApnsEnvironment`]). FCM: `None`.
    pub environment: Option<ApnsEnvironment>,
    /// APNs: every `apns-*` request header (`apns-topic` and
    /// `apns-push-type` among them). FCM: empty. Web Push: `ttl`,
    /// `urgency`, `topic` as sent, and the verified VAPID claims as
    /// `vapid-aud` and `vapid-sub`.
    pub headers: BTreeMap<String, String>,
    /// APNs: the JSON payload. FCM: the `message` object of the request.
    /// Web Push: the decrypted plaintext (`null` when it did not decrypt).
    /// A body that is not JSON is kept as a JSON string (lossy UTF-8).
    pub payload: Value,
    /// The HTTP status the mock answered.
    pub status: u16,
    /// APNs `reason` / FCM `errorCode` (or `status` when Google sends no
    /// error code) of a rejection; `None` on success.
    pub reason: Option<String>,
    pub auth: AuthMethod,
    /// `"HTTP/2.0"` or `"HTTP/1.1"`.
    pub http_version: String,
    /// Time from the earliest [`crate::TestApp::note_publish`] for this token
    /// that no earlier push answered, to this push's arrival.
    pub latency: Option<Duration>,
    /// Things a real provider accepts but that are almost surely a bug in
    /// the sender (a background push at priority 10, an `apns-expiration`
    /// that looks like a duration, …). With `strict` on they are rejected
    /// instead.
    pub warnings: Vec<String>,
    /// FCM `validate_only` requests: checked, answered, not delivered.
    pub validate_only: bool,
}

/// What a phone would show for a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushSummary {
    /// `alert` (the user sees it), `silent` (a wake-up the user does not
    /// see: APNs background, FCM data-only), `voip`, or the APNs push type.
    pub kind: String,
    pub title: Option<String>,
    pub body: Option<String>,
    /// `high` or `normal` (APNs 10 is high, 5 and 1 normal).
    pub priority: String,
    /// APNs topic or FCM project.
    pub app: Option<String>,
    /// FCM data keys / APNs custom keys, shown as-is.
    pub data: BTreeMap<String, String>,
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl RecordedPush {
    /// The mock accepted it (2xx).
    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// What a phone would show; see [`PushSummary`].
    pub fn summary(&self) -> PushSummary {
        match self.provider {
            Provider::Apns => self.apns_summary(),
            Provider::Fcm => self.fcm_summary(),
            Provider::WebPush => self.webpush_summary(),
        }
    }

    fn apns_summary(&self) -> PushSummary {
        let aps = self.payload.get("aps");
        let alert = aps.and_then(|a| a.get("alert"));
        let (title, body) = match alert {
            Some(Value::String(s)) => (None, Some(s.clone())),
            Some(Value::Object(o)) => (
                o.get("title").map(value_text),
                o.get("body").map(value_text),
            ),
            _ => (None, None),
        };
        let push_type = self.headers.get("apns-push-type").map(String::as_str);
        let kind = match push_type {
            Some("voip") => "voip".to_owned(),
            Some("background") => "silent".to_owned(),
            Some("alert") => "alert".to_owned(),
            Some(other) => other.to_owned(),
            None if title.is_some() || body.is_some() => "alert".to_owned(),
            None => "silent".to_owned(),
        };
        let priority = match self.headers.get("apns-priority").map(String::as_str) {
            Some("5") | Some("1") => "normal",
            _ => "high",
        };
        let data = self
            .payload
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| k.as_str() != "aps")
                    .map(|(k, v)| (k.clone(), value_text(v)))
                    .collect()
            })
            .unwrap_or_default();
        PushSummary {
            kind,
            title,
            body,
            priority: priority.to_owned(),
            app: self.headers.get("apns-topic").cloned(),
            data,
        }
    }

    fn fcm_summary(&self) -> PushSummary {
        let m = &self.payload;
        let notification = m
            .get("notification")
            .or_else(|| m.get("android").and_then(|a| a.get("notification")));
        let title = notification.and_then(|n| n.get("title")).map(value_text);
        let body = notification.and_then(|n| n.get("body")).map(value_text);
        let priority = m
            .get("android")
            .and_then(|a| a.get("priority"))
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            // FCM's default: notification messages high, data-only normal.
            .unwrap_or_else(|| {
                if notification.is_some() {
                    "high"
                } else {
                    "normal"
                }
                .into()
            });
        let data = m
            .get("data")
            .and_then(Value::as_object)
            .map(|o| o.iter().map(|(k, v)| (k.clone(), value_text(v))).collect())
            .unwrap_or_default();
        PushSummary {
            kind: if title.is_some() || body.is_some() {
                "alert".into()
            } else {
                "silent".into()
            },
            title,
            body,
            priority,
            app: None,
            data,
        }
    }

    /// Web Push: the decrypted payload is whatever the sender chose; the
    /// XEP-0357 summary fields Nudge sends (`last-message-sender`,
    /// `last-message-body`) or `title`/`body` make an alert, anything else a
    /// silent wake-up. Priority from `Urgency` (`high` is high), app from the
    /// VAPID `sub`.
    fn webpush_summary(&self) -> PushSummary {
        const TITLE: [&str; 2] = ["title", "last-message-sender"];
        const BODY: [&str; 2] = ["body", "last-message-body"];
        let p = &self.payload;
        let field = |names: &[&str]| names.iter().find_map(|n| p.get(*n)).map(value_text);
        let title = field(&TITLE);
        let body = field(&BODY);
        let priority = match self.headers.get("urgency").map(String::as_str) {
            Some("high") => "high",
            _ => "normal",
        };
        let data = match p {
            // The fields shown as title and body are not repeated.
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| !TITLE.contains(&k.as_str()) && !BODY.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), value_text(v)))
                .collect(),
            Value::Null => BTreeMap::new(),
            other => BTreeMap::from([("payload".to_owned(), value_text(other))]),
        };
        PushSummary {
            kind: if title.is_some() || body.is_some() {
                "alert".into()
            } else {
                "silent".into()
            },
            title,
            body,
            priority: priority.to_owned(),
            app: self.headers.get("vapid-sub").cloned(),
            data,
        }
    }

    /// The JSON form used by the control API and the live page.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "provider": self.provider,
            "token": self.token,
            "received_at_ms": millis(self.received_at),
            "environment": self.environment,
            "headers": self.headers,
            "payload": self.payload,
            "status": self.status,
            "reason": self.reason,
            "auth": self.auth,
            "http_version": self.http_version,
            "latency_ms": self.latency.map(|d| d.as_secs_f64() * 1000.0),
            "warnings": self.warnings,
            "validate_only": self.validate_only,
            "delivered": self.delivered(),
            "summary": self.summary(),
        })
    }
}

/// Milliseconds since the epoch (0 for times before it).
pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Which pushes [`crate::TestApp::pushes`] returns. Every set field must
/// match; the default matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushFilter {
    pub token: Option<String>,
    pub provider: Option<Provider>,
    /// Only pushes received at or after this time.
    pub since: Option<SystemTime>,
    /// Only pushes with an id greater than this (for incremental polling).
    pub after_id: Option<u64>,
    /// Only accepted (2xx) pushes.
    pub delivered_only: bool,
}

impl PushFilter {
    /// Everything for one token.
    pub fn token(token: impl Into<String>) -> Self {
        Self {
            token: Some(token.into()),
            ..Self::default()
        }
    }

    fn matches(&self, p: &RecordedPush) -> bool {
        self.token.as_deref().is_none_or(|t| t == p.token)
            && self.provider.is_none_or(|v| v == p.provider)
            && self.since.is_none_or(|s| p.received_at >= s)
            && self.after_id.is_none_or(|a| p.id > a)
            && (!self.delivered_only || p.delivered())
    }
}

/// A push about to be recorded; the recorder fills in id, time and latency.
#[derive(Debug, Clone)]
pub(crate) struct NewPush {
    pub provider: Provider,
    pub token: String,
    pub environment: Option<ApnsEnvironment>,
    pub headers: BTreeMap<String, String>,
    pub payload: Value,
    pub status: u16,
    pub reason: Option<String>,
    pub auth: AuthMethod,
    pub http_version: String,
    pub warnings: Vec<String>,
    pub validate_only: bool,
}

#[derive(Debug, Default)]
struct Inner {
    pushes: VecDeque<Arc<RecordedPush>>,
    next_id: u64,
    /// Per token, the id of the last push a wait returned.
    cursors: HashMap<String, u64>,
    /// Per token, the publish times not yet answered by a push.
    publishes: HashMap<String, SystemTime>,
}

/// One push request as it reached a mock, for a harness that times it
/// (see the module docs, "Arrivals").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// The recorded push's id ([`RecordedPush::id`]).
    pub id: u64,
    pub provider: Provider,
    /// The device token, as in [`RecordedPush::token`].
    pub token: String,
    /// When the mock began to read the request (before its checks and any
    /// `Delay` fault).
    pub at: Instant,
    /// The HTTP status the mock answered.
    pub status: u16,
}

/// What the live feed carries.
#[derive(Debug, Clone)]
pub(crate) enum FeedEvent {
    Push(Arc<RecordedPush>),
    /// The record was cleared.
    Reset,
}

pub(crate) struct Recorder {
    inner: Mutex<Inner>,
    arrived: Notify,
    feed: broadcast::Sender<FeedEvent>,
    /// Subscribers to [`Arrival`]s; closed ones are dropped on the next push.
    arrivals: Mutex<Vec<mpsc::UnboundedSender<Arrival>>>,
    max: usize,
}

impl Recorder {
    pub fn new(max: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
            arrived: Notify::new(),
            // Page clients that fall this far behind skip ahead; the record
            // itself is unaffected.
            feed: broadcast::channel(1024).0,
            arrivals: Mutex::new(Vec::new()),
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, new: NewPush) -> Arc<RecordedPush> {
        self.record_at(new, Instant::now())
    }

    /// Records a push whose request began to arrive at `arrived` (what an
    /// [`Arrival`] carries).
    pub fn record_at(&self, new: NewPush, arrived: Instant) -> Arc<RecordedPush> {
        let received_at = SystemTime::now();
        let push = {
            let mut inner = self.lock();
            let id = inner.next_id;
            inner.next_id += 1;
            let latency = inner
                .publishes
                .remove(&new.token)
                .and_then(|p| received_at.duration_since(p).ok());
            let push = Arc::new(RecordedPush {
                id,
                provider: new.provider,
                token: new.token,
                received_at,
                environment: new.environment,
                headers: new.headers,
                payload: new.payload,
                status: new.status,
                reason: new.reason,
                auth: new.auth,
                http_version: new.http_version,
                latency,
                warnings: new.warnings,
                validate_only: new.validate_only,
            });
            if inner.pushes.len() >= self.max {
                inner.pushes.pop_front();
            }
            inner.pushes.push_back(push.clone());
            push
        };
        self.arrived.notify_waiters();
        {
            let mut subscribers = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
            if !subscribers.is_empty() {
                let arrival = Arrival {
                    id: push.id,
                    provider: push.provider,
                    token: push.token.clone(),
                    at: arrived,
                    status: push.status,
                };
                subscribers.retain(|tx| tx.send(arrival.clone()).is_ok());
            }
        }
        // No page open is not an error.
        let _ = self.feed.send(FeedEvent::Push(push.clone()));
        push
    }

    /// Notes that a publish for `token` happened now, so that the next push
    /// for it carries a latency. A second publish before a push keeps the
    /// first time: a coalesced push answers the oldest publish.
    pub fn note_publish(&self, token: &str) {
        self.lock()
            .publishes
            .entry(token.to_owned())
            .or_insert_with(SystemTime::now);
    }

    pub fn list(&self, filter: &PushFilter) -> Vec<RecordedPush> {
        self.lock()
            .pushes
            .iter()
            .filter(|p| filter.matches(p))
            .map(|p| (**p).clone())
            .collect()
    }

    fn take_next(&self, token: &str, delivered_only: bool) -> Option<RecordedPush> {
        let mut inner = self.lock();
        let cursor = inner.cursors.get(token).copied().unwrap_or(0);
        let mut last_seen = None;
        let mut found = None;
        for p in inner
            .pushes
            .iter()
            .filter(|p| p.id > cursor && p.token == token)
        {
            last_seen = Some(p.id);
            if !delivered_only || p.delivered() {
                found = Some((**p).clone());
                break;
            }
        }
        // Rejected pushes skipped by a delivered-only wait are consumed too,
        // so that the cursor only moves forward.
        if let Some(id) = last_seen {
            inner.cursors.insert(token.to_owned(), id);
        }
        found
    }

    /// See the module docs for the cursor semantics.
    pub async fn wait(
        &self,
        token: &str,
        timeout: Duration,
        delivered_only: bool,
    ) -> Option<RecordedPush> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before looking, so that a push recorded
            // between the look and the wait is not missed.
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(p) = self.take_next(token, delivered_only) {
                return Some(p);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.take_next(token, delivered_only);
            }
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.feed.subscribe()
    }

    /// A channel that receives every push recorded from now on.
    pub fn arrivals(&self) -> mpsc::UnboundedReceiver<Arrival> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    pub fn reset(&self) {
        let mut inner = self.lock();
        let next_id = inner.next_id;
        // Ids keep increasing across a reset so that a page or poller that
        // remembers "after id N" never sees old numbers reused.
        *inner = Inner {
            next_id,
            ..Inner::default()
        };
        drop(inner);
        let _ = self.feed.send(FeedEvent::Reset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_push(token: &str, status: u16) -> NewPush {
        NewPush {
            provider: Provider::Apns,
            token: token.into(),
            environment: Some(ApnsEnvironment::Production),
            headers: BTreeMap::new(),
            payload: serde_json::json!({"aps": {"alert": {"title": "T", "body": "B"}}}),
            status,
            reason: None,
            auth: AuthMethod::Certificate,
            http_version: "HTTP/2.0".into(),
            warnings: vec![],
            validate_only: false,
        }
    }

    #[tokio::test]
    async fn wait_consumes_in_order_and_times_out() {
        let r = Recorder::new(100);
        r.record(new_push("a", 200));
        r.record(new_push("a", 500));
        r.record(new_push("b", 200));
        let first = r.wait("a", Duration::ZERO, false).await.unwrap();
        let second = r.wait("a", Duration::ZERO, false).await.unwrap();
        assert!(first.id < second.id);
        assert_eq!(second.status, 500);
        let t0 = std::time::Instant::now();
        assert!(
            r.wait("a", Duration::from_millis(50), false)
                .await
                .is_none()
        );
        assert!(t0.elapsed() >= Duration::from_millis(50));
        // b is untouched by waits on a.
        assert_eq!(r.wait("b", Duration::ZERO, false).await.unwrap().token, "b");
    }

    #[tokio::test]
    async fn delivered_only_skips_rejections_and_wakes_on_arrival() {
        let r = Arc::new(Recorder::new(100));
        r.record(new_push("a", 410));
        let r2 = r.clone();
        let waiter = tokio::spawn(async move { r2.wait("a", Duration::from_secs(5), true).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        r.record(new_push("a", 200));
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got.status, 200);
        assert!(r.wait("a", Duration::ZERO, false).await.is_none());
    }

    #[test]
    fn bounded_and_latency() {
        let r = Recorder::new(2);
        r.note_publish("a");
        r.note_publish("a");
        let p = r.record(new_push("a", 200));
        assert!(p.latency.is_some());
        let p = r.record(new_push("a", 200));
        assert!(p.latency.is_none(), "one publish mark answers one push");
        r.record(new_push("a", 200));
        let all = r.list(&PushFilter::default());
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].id, 2);
        r.reset();
        assert!(r.list(&PushFilter::default()).is_empty());
        assert_eq!(r.record(new_push("a", 200)).id, 4);
    }

    #[test]
    fn environments_from_paths() {
        use ApnsEnvironment::*;
        assert_eq!(
            ApnsEnvironment::from_path("/3/device/ab"),
            (Production, "/3/device/ab")
        );
        assert_eq!(
            ApnsEnvironment::from_path("/sandbox/3/device/ab"),
            (Sandbox, "/3/device/ab")
        );
        assert_eq!(
            ApnsEnvironment::from_path("/production/3/device/ab"),
            (Production, "/3/device/ab")
        );
        // Only a whole prefix counts; the rest is Apple's BadPath.
        assert_eq!(
            ApnsEnvironment::from_path("/sandboxed/3/device/ab"),
            (Production, "/sandboxed/3/device/ab")
        );
        assert_eq!(
            ApnsEnvironment::from_path("/sandbox"),
            (Production, "/sandbox")
        );
    }

    #[test]
    fn summaries() {
        let mut p = RecordedPush {
            id: 1,
            provider: Provider::Apns,
            token: "t".into(),
            received_at: SystemTime::now(),
            environment: Some(ApnsEnvironment::Sandbox),
            headers: BTreeMap::from([
                ("apns-push-type".into(), "background".into()),
                ("apns-priority".into(), "5".into()),
            ]),
            payload: serde_json::json!({"aps": {"content-available": 1}, "account": "x"}),
            status: 200,
            reason: None,
            auth: AuthMethod::Certificate,
            http_version: "HTTP/2.0".into(),
            latency: None,
            warnings: vec![],
            validate_only: false,
        };
        let s = p.summary();
        assert_eq!((s.kind.as_str(), s.priority.as_str()), ("silent", "normal"));
        assert_eq!(s.data["account"], "x");
        p.provider = Provider::Fcm;
        p.payload =
            serde_json::json!({"token": "t", "notification": {"title": "Hi", "body": "there"}});
        let s = p.summary();
        assert_eq!(s.kind, "alert");
        assert_eq!(s.title.as_deref(), Some("Hi"));
        assert_eq!(s.priority, "high");
        p.payload = serde_json::json!({"token": "t", "data": {"account": "a"}, "android": {"priority": "HIGH"}});
        let s = p.summary();
        assert_eq!((s.kind.as_str(), s.priority.as_str()), ("silent", "high"));
    }

    #[test]
    fn arrivals_carry_every_push_with_its_instant() {
        let r = Recorder::new(1);
        let mut first = r.arrivals();
        let second = r.arrivals();
        let t = Instant::now();
        let p = r.record_at(new_push("a", 503), t);
        let a = first.try_recv().expect("an arrival");
        assert_eq!(
            (a.id, a.token.as_str(), a.status, a.at),
            (p.id, "a", 503, t)
        );
        // A closed subscriber is dropped; the others still get each push,
        // whatever the record's bound.
        drop(second);
        r.record(new_push("b", 200));
        r.record(new_push("c", 200));
        let tokens: Vec<String> = std::iter::from_fn(|| first.try_recv().ok())
            .map(|a| a.token)
            .collect();
        assert_eq!(tokens, ["b", "c"]);
        assert_eq!(r.arrivals.lock().map(|s| s.len()).unwrap_or(0), 1);
    }
}
