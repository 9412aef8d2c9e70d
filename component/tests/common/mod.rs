//! Test harness: an in-process fake XMPP server that plays the server side
//! of XEP-0114, a recording push backend, and databases (a temporary SQLite
//! file, or a fresh database on the real PostgreSQL server).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nudge::dispatch::Backends;
use nudge::xmpp::Element;
use nudge::xmpp::dataform::DataForm;
use nudge::xmpp::reader::{ReadError, StanzaReader, StreamItem};
use nudge::xmpp::stream::LinkState;
use nudge::{Config, Running};
use nudge_plugins::{BoxFuture, Device, Notification, Outcome, PushBackend};
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

pub const DOMAIN: &str = "push.localhost";
pub const SECRET: &str = "s3cr3t";
/// How long any single expected event may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

/// The server side of XEP-0114, listening on 127.0.0.1.
pub struct FakeServer {
    listener: TcpListener,
    pub port: u16,
    stream_counter: std::sync::atomic::AtomicU64,
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        FakeServer {
            listener,
            port,
            stream_counter: Default::default(),
        }
    }

    /// Accepts the next connection and opens the stream up to the
    /// component's handshake; returns the connection and the digest it sent.
    pub async fn accept_until_handshake(&self) -> (ServerConn, String, String) {
        let (tcp, _) = tokio::time::timeout(STEP, self.listener.accept())
            .await
            .expect("component did not connect in time")
            .unwrap();
        let mut conn = ServerConn::new(tcp);
        match conn.next_item().await {
            Some(Ok(StreamItem::Header(attrs))) => {
                assert!(
                    attrs.iter().any(|(k, v)| k == "to" && v == DOMAIN),
                    "{attrs:?}"
                );
            }
            other => panic!("expected stream header, got {other:?}"),
        }
        let n = self
            .stream_counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("stream-{n}-{}", self.port);
        conn.send(&format!(
            "<?xml version='1.0'?><stream:stream id='{id}' xml:lang='en' xmlns:stream='http://etherx.jabber.org/streams' from='{DOMAIN}' xmlns='jabber:component:accept'>"
        ))
        .await;
        let hs = conn.recv().await;
        assert_eq!(hs.name, "handshake");
        (conn, id, hs.text)
    }

    /// Accepts a connection and completes a correct handshake, checking the
    /// component's digest.
    pub async fn accept(&self) -> ServerConn {
        let (mut conn, id, digest) = self.accept_until_handshake().await;
        let expected = hex::encode(Sha1::digest(format!("{id}{SECRET}").as_bytes()));
        assert_eq!(digest, expected, "wrong handshake digest");
        conn.send("<handshake/>").await;
        conn
    }

    /// Waits for a connection attempt, up to `limit`.
    pub async fn try_accept_tcp(&self, limit: Duration) -> Option<TcpStream> {
        match tokio::time::timeout(limit, self.listener.accept()).await {
            Ok(Ok((tcp, _))) => Some(tcp),
            _ => None,
        }
    }
}

/// One accepted component connection, seen from the server.
pub struct ServerConn {
    reader: StanzaReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Whitespace keepalives seen from the component so far.
    pub keepalives: usize,
}

impl ServerConn {
    pub fn new(tcp: TcpStream) -> ServerConn {
        let (r, w) = tcp.into_split();
        ServerConn {
            reader: StanzaReader::new(r, 1 << 20),
            writer: w,
            keepalives: 0,
        }
    }

    pub async fn send(&mut self, xml: &str) {
        self.writer.write_all(xml.as_bytes()).await.unwrap();
    }

    /// Closes this side of the TCP connection, as a server going away does.
    pub async fn hang_up(&mut self) {
        let _ = self.writer.shutdown().await;
    }

    /// Sends bytes, tolerating a component that already closed.
    pub async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.writer.write_all(bytes).await;
    }

    async fn next_item(&mut self) -> Option<Result<StreamItem, ReadError>> {
        tokio::time::timeout(STEP, self.reader.next()).await.ok()
    }

    /// The next stanza from the component (keepalives skipped).
    pub async fn recv(&mut self) -> Element {
        loop {
            match self.next_item().await {
                Some(Ok(StreamItem::Stanza(el))) => return el,
                Some(Ok(StreamItem::Keepalive)) => self.keepalives += 1,
                other => panic!("expected a stanza from the component, got {other:?}"),
            }
        }
    }

    /// The next stanza within `limit`, or `None` if nothing came. A read
    /// cut off by the limit may lose a keepalive that was being read.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Element> {
        loop {
            match tokio::time::timeout(limit, self.reader.next()).await {
                Ok(Ok(StreamItem::Stanza(el))) => return Some(el),
                Ok(Ok(StreamItem::Keepalive)) => self.keepalives += 1,
                Ok(other) => panic!("unexpected from the component: {other:?}"),
                Err(_) => return None,
            }
        }
    }

    /// The next stanza within `limit`; `None` on timeout or when the
    /// component closed or broke the stream.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<Element> {
        loop {
            match tokio::time::timeout(limit, self.reader.next()).await {
                Ok(Ok(StreamItem::Stanza(el))) => return Some(el),
                Ok(Ok(StreamItem::Keepalive)) => self.keepalives += 1,
                _ => return None,
            }
        }
    }

    /// Reads until the component closes the stream; returns the stream
    /// error condition it sent, if any.
    pub async fn expect_close(&mut self) -> Option<String> {
        let mut condition = None;
        loop {
            match self.next_item().await {
                Some(Ok(StreamItem::Stanza(el))) if el.name == "error" => {
                    condition = el.children.first().map(|c| c.name.to_string());
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) => return condition,
                None => panic!("component did not close the stream"),
            }
        }
    }

    /// Sends an iq and returns the component's answer to it.
    pub async fn request(&mut self, xml: &str) -> Element {
        self.send(xml).await;
        let id = request_id(xml);
        let el = self.recv().await;
        assert_eq!(
            el.get_attr("id"),
            Some(id.as_str()),
            "answer to another request: {el:?}"
        );
        el
    }
}

fn request_id(xml: &str) -> String {
    let start = xml.find(" id='").expect("request has an id") + 5;
    let end = xml[start..].find('\'').unwrap() + start;
    xml[start..end].to_owned()
}

/// `(type, condition)` of an iq error, or `("result", "")`.
pub fn answer_kind(el: &Element) -> (String, String) {
    match el.get_attr("type") {
        Some("result") => ("result".into(), String::new()),
        Some("error") => {
            let err = el
                .get_child("error", "jabber:component:accept")
                .expect("error child");
            let cond = err
                .children
                .iter()
                .find(|c| c.ns == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name != "text")
                .map(|c| c.name.clone())
                .unwrap_or_default();
            (
                err.get_attr("type").unwrap_or("").to_owned(),
                cond.to_string(),
            )
        }
        other => panic!("not an iq answer: {other:?}"),
    }
}

/// A backend that records every push and answers by token prefix:
/// `dead…` InvalidToken, `down…` Transient, `throttle…` Throttled,
/// `reject…` Rejected, `slow…` Delivered after 500 ms, `hang…` never.
/// A test can also take the whole provider down, slow every push, or
/// declare a token dead while it runs.
pub struct TestBackend {
    provider: String,
    pub sent: Mutex<Vec<(Device, Notification)>>,
    /// Every push fails with Transient while set.
    pub down: std::sync::atomic::AtomicBool,
    /// Every push is answered after this many milliseconds.
    pub delay_ms: std::sync::atomic::AtomicU64,
    /// Tokens declared dead from now on.
    pub dead: Mutex<Vec<String>>,
}

impl TestBackend {
    pub fn new(provider: &str) -> Arc<TestBackend> {
        Arc::new(TestBackend {
            provider: provider.into(),
            sent: Mutex::new(Vec::new()),
            down: Default::default(),
            delay_ms: Default::default(),
            dead: Mutex::new(Vec::new()),
        })
    }

    pub fn sent(&self) -> Vec<(Device, Notification)> {
        self.sent.lock().unwrap().clone()
    }

    /// The pushes sent to `token`, in order.
    pub fn sent_to(&self, token: &str) -> Vec<Notification> {
        self.sent()
            .into_iter()
            .filter(|(d, _)| d.token == token)
            .map(|(_, n)| n)
            .collect()
    }

    /// Waits (up to [`STEP`]) until the pushes sent to `token` satisfy
    /// `check`; says whether they did.
    pub async fn sent_until(&self, token: &str, check: impl Fn(&[Notification]) -> bool) -> bool {
        eventually(|| std::future::ready(check(&self.sent_to(token)))).await
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    pub fn kill_token(&self, token: &str) {
        self.dead.lock().unwrap().push(token.into());
    }
}

impl PushBackend for TestBackend {
    fn provider(&self) -> &str {
        &self.provider
    }

    fn send<'a>(&'a self, device: &'a Device, n: &'a Notification) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.sent.lock().unwrap().push((device.clone(), n.clone()));
            let delay = self.delay_ms.load(std::sync::atomic::Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let t = device.token.as_str();
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Outcome::Transient {
                    reason: "503 (test outage)".into(),
                    retry_after: None,
                };
            }
            if t.starts_with("dead") || self.dead.lock().unwrap().iter().any(|d| d == t) {
                Outcome::InvalidToken {
                    reason: "Unregistered".into(),
                }
            } else if t.starts_with("down") {
                Outcome::Transient {
                    reason: "503".into(),
                    retry_after: None,
                }
            } else if t.starts_with("throttle") {
                Outcome::Throttled {
                    retry_after: Some(Duration::from_secs(30)),
                }
            } else if t.starts_with("reject") {
                Outcome::Rejected {
                    reason: "PayloadTooLarge".into(),
                }
            } else if t.starts_with("slow") {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Outcome::Delivered
            } else if t.starts_with("hang") {
                std::future::pending::<()>().await;
                Outcome::Delivered
            } else {
                Outcome::Delivered
            }
        })
    }
}

/// Polls `check` every 20 ms until it holds, for at most [`STEP`]; says
/// whether it did.
pub async fn eventually<F, Fut>(check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(STEP, check).await
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// A database for one test.
pub enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

/// The PostgreSQL server the tests use (a real one; `scripts/test` starts
/// it when none runs).
pub fn postgres_admin_url() -> String {
    std::env::var("NUDGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDb {
    pub async fn new(kind: DbKind) -> TestDb {
        match kind {
            DbKind::Sqlite => TestDb::Sqlite(tempfile::tempdir().unwrap()),
            DbKind::Postgres => {
                use sqlx::Connection;
                let admin_url = postgres_admin_url();
                let name = format!("nudge_test_{:016x}", rand::random::<u64>());
                let mut c = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin_url} is needed for this test (scripts/test starts one): {e}")
                });
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
                TestDb::Postgres { admin_url, name }
            }
        }
    }

    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite(dir) => format!("sqlite://{}", dir.path().join("nudge.db").display()),
            TestDb::Postgres { admin_url, name } => {
                let base = admin_url
                    .rsplit_once('/')
                    .map_or(admin_url.as_str(), |(b, _)| b);
                format!("{base}/{name}")
            }
        }
    }

    pub async fn drop_db(self) {
        if let TestDb::Postgres { admin_url, name } = self {
            use sqlx::Connection;
            if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut c)
                .await;
            }
        }
    }
}

/// The configuration of a test instance: short timeouts and retries, and
/// no coalescing window (tests that publish twice see two pushes; the
/// coalescing tests set `dispatch.coalesce_ms` themselves).
pub fn test_config(port: u16, db_url: &str, extra: &str) -> Config {
    Config::from_toml(&format!(
        "[component]\ndomain = '{DOMAIN}'\nsecret = '{SECRET}'\nport = {port}\nkeepalive_secs = 60\n\
         [storage]\nurl = '{db_url}'\n[dispatch]\npush_timeout_secs = 2\ncoalesce_ms = 0\n[outbox]\nretry_min_ms = 100\nretry_max_secs = 2\n{extra}"
    ))
    .unwrap()
}

/// Starts Nudge on a temporary SQLite database against `port`, with the
/// given backends, without waiting for it to connect (the stream tests
/// play the server's side step by step). Keep the directory alive.
pub async fn start_on(
    port: u16,
    backends: Backends,
    adjust: impl FnOnce(&mut Config),
) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nudge.db", dir.path().display());
    let mut config = test_config(port, &url, "");
    adjust(&mut config);
    (nudge::start(&config, backends).await.unwrap(), dir)
}

/// Starts Nudge on the database at `db_url` (which may be another
/// instance's) with the given backends and its own fake server, and waits
/// until it is connected.
pub async fn start_connected(
    db_url: &str,
    backends: Backends,
    adjust: impl FnOnce(&mut Config),
) -> (FakeServer, ServerConn, Running) {
    let server = FakeServer::start().await;
    let mut config = test_config(server.port, db_url, "");
    adjust(&mut config);
    let mut nudge = nudge::start(&config, backends).await.unwrap();
    let conn = server.accept().await;
    assert!(nudge.wait_for_state(LinkState::Connected, STEP).await);
    (server, conn, nudge)
}

/// Polls `check` every 20 ms until it holds, for at most `limit`; says
/// whether it did (for waits longer than [`STEP`]).
pub async fn eventually_within<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running Nudge connected to a fake server, with a recording backend
/// for app `conversations` (provider `fcm`).
pub struct Harness {
    pub server: FakeServer,
    pub conn: ServerConn,
    pub nudge: Running,
    pub backend: Arc<TestBackend>,
    pub db: TestDb,
}

impl Harness {
    pub async fn start(kind: DbKind) -> Harness {
        Self::start_with(kind, "").await
    }

    pub async fn start_with(kind: DbKind, extra_config: &str) -> Harness {
        Self::start_adjusted(kind, extra_config, |_| {}).await
    }

    /// Starts with extra TOML and then `adjust` applied to the config
    /// (for keys of sections the base config already has).
    pub async fn start_adjusted(
        kind: DbKind,
        extra_config: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> Harness {
        let server = FakeServer::start().await;
        let db = TestDb::new(kind).await;
        let backend = TestBackend::new("fcm");
        let mut backends = Backends::new();
        backends.insert("conversations", backend.clone());
        let mut config = test_config(server.port, &db.url(), extra_config);
        adjust(&mut config);
        let mut nudge = nudge::start(&config, backends).await.unwrap();
        let conn = server.accept().await;
        assert!(nudge.wait_for_state(LinkState::Connected, STEP).await);
        Harness {
            server,
            conn,
            nudge,
            backend,
            db,
        }
    }

    /// Registers a device for `account` the way Conversations does;
    /// returns (node, secret).
    pub async fn register(&mut self, account: &str, device: &str, token: &str) -> (String, String) {
        let answer = self
            .conn
            .request(&register_iq(account, "fcm", device, token))
            .await;
        assert_eq!(answer_kind(&answer).0, "result", "{answer:?}");
        let (jid, node, secret) = registration_form(&answer).expect("command result with form");
        assert_eq!(jid, DOMAIN);
        (node, secret)
    }

    /// Sends a Prosody-shaped publish; returns the answer's kind (see
    /// [`answer_kind`]).
    pub async fn publish(
        &mut self,
        id: &str,
        from: &str,
        node: &str,
        secret: Option<&str>,
        body: &str,
    ) -> (String, String) {
        let answer = self
            .conn
            .request(&publish_iq(id, from, node, secret, body))
            .await;
        answer_kind(&answer)
    }

    pub async fn finish(self) {
        let Harness { nudge, db, .. } = self;
        nudge.stop().await;
        db.drop_db().await;
    }
}

/// The configuration file the binary tests run with: the documented example.
pub fn example_config() -> String {
    format!(
        "{}/../deploy/nudge.example.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A registration of `owner`'s device `device_id` for `app` (no room,
/// with a secret), to write into a store directly.
pub fn registration(
    owner: &str,
    app: &str,
    device_id: &str,
    token: &str,
) -> nudge::store::NewRegistration {
    nudge::store::NewRegistration {
        owner: owner.into(),
        device_id: device_id.into(),
        muc: String::new(),
        app: app.into(),
        token: token.into(),
        with_secret: true,
        dialect: "conversations",
        second_token: String::new(),
        environment: None,
    }
}

/// `(jid, node, secret)` from a completed registration command.
pub fn registration_form(answer: &Element) -> Option<(String, String, String)> {
    let form = answer
        .get_child("command", "http://jabber.org/protocol/commands")?
        .children
        .iter()
        .find_map(DataForm::from_element)?;
    let value = |var: &str| form.value(var).unwrap_or_default().to_owned();
    Some((value("jid"), value("node"), value("secret")))
}

/// Conversations' register command (fields as in the live capture).
pub fn register_iq(account: &str, service: &str, device: &str, token: &str) -> String {
    format!(
        "<iq id='reg-{device}-{token}' type='set' from='{account}/phone' to='{DOMAIN}' xml:lang='en'>\
         <command node='register-push-{service}' action='execute' xmlns='http://jabber.org/protocol/commands'>\
         <x xmlns='jabber:x:data' type='submit'><field var='token'><value>{token}</value></field>\
         <field var='android-id'><value>{device}</value></field></x></command></iq>"
    )
}

/// Conversations' register command for pushes from one room (`muc`).
pub fn register_room_iq(account: &str, device: &str, token: &str, room: &str) -> String {
    format!(
        "<iq id='reg-{device}-{token}-{room}' type='set' from='{account}/phone' to='{DOMAIN}' xml:lang='en'>\
         <command node='register-push-fcm' action='execute' xmlns='http://jabber.org/protocol/commands'>\
         <x xmlns='jabber:x:data' type='submit'><field var='token'><value>{token}</value></field>\
         <field var='android-id'><value>{device}</value></field>\
         <field var='muc'><value>{room}</value></field></x></command></iq>"
    )
}

/// Conversations' unregister command (fixture
/// `conversations-unregister-push-fcm.xml`) with the given `channel`.
pub fn unregister_iq(channel: &str) -> String {
    fixture("conversations-unregister-push-fcm.xml", "", "").replace("{CHANNEL}", channel)
}

/// A publish as Prosody sends it (from the live capture), for `node`.
pub fn publish_iq(id: &str, from: &str, node: &str, secret: Option<&str>, body: &str) -> String {
    let options = match secret {
        Some(s) => format!(
            "<publish-options><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>{s}</value></field></x></publish-options>"
        ),
        None => String::new(),
    };
    format!(
        "<iq id='{id}' to='{DOMAIN}' from='{from}' type='set'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'><x type='form' xmlns='jabber:x:data'><field type='hidden' var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field type='text-single' var='message-count'><value>1</value></field><field type='text-single' var='pending-subscription-count'/><field type='jid-single' var='last-message-sender'/><field type='text-single' var='last-message-body'><value>{body}</value></field></x></notification></item></publish>{options}</pubsub></iq>"
    )
}

/// A capture fixture with node and secret filled in.
pub fn fixture(name: &str, node: &str, secret: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .replace("{NODE}", node)
        .replace("{SECRET}", secret)
}

/// Runs a test body once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::DbKind::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::DbKind::Postgres).await } )*
        }
    };
}
