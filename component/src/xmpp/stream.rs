//! The XEP-0114 component stream: connect, handshake, keep the link alive,
//! and reconnect when it drops.
//!
//! One [`Link`] lives as long as the service. Its outgoing queue outlives
//! each TCP connection, so an answer computed while the link was down is
//! sent on the next connection instead of being lost (Prosody still accepts
//! a late answer to a publish). Per connection, a reader task parses stanzas
//! and hands them to the [`StanzaHandler`]; the connection task writes the
//! queue in batches (one socket write for every answer ready at that
//! moment) and sends a whitespace keepalive when the link is idle.
//!
//! How it reacts to the server (see `docs/interop.md`, "The component stream"):
//! - connection lost or closed: reconnect with capped exponential backoff
//!   (100 ms doubling to `reconnect_max_delay`, 1 s by default), so the
//!   component is back within a second or two of the server's return;
//! - `not-authorized` / `host-unknown` (wrong secret or domain): a
//!   configuration problem, retried slowly (5 s doubling to 5 min) with an
//!   error in the log, never in a tight loop;
//! - `conflict` "Component already connected" (Prosody, another instance
//!   holds the domain): stand by, retrying every `standby_retry` (250 ms
//!   by default, logged once), so this instance takes over within a second
//!   when the other goes away;
//! - `conflict` "Replaced by a new connection" (Prosody `kick_old`: a newer
//!   instance took over on purpose): stop, never reconnect to kick it back;
//!   the jobs already handed to the handler still finish before
//!   [`Link::run`] returns (their answers cannot be sent any more, but the
//!   pushes go out).
//!
//! Link health: neither Prosody nor ejabberd sends anything to an idle
//! component (Prosody only a single space on its own, long schedule), so a
//! half-open TCP connection would go unnoticed. After `read_idle` without a
//! byte from the server, the component pings itself (XEP-0199 iq from and
//! to its own domain: the server routes it back to us, through the whole
//! path; Prosody 0.12 and ejabberd 23.01 do so, the interop test checks
//! it), and pings again every eighth of `ping_timeout` while nothing comes
//! (with several instances connected, ejabberd hands the ping and its
//! answer to any of them: [`PINGS_PER_TIMEOUT`]); if no byte arrives within
//! `ping_timeout`, the connection counts as lost. A write that does not
//! finish within `write_timeout` (the server stopped reading) counts as lost
//! too.
//!
//! Graceful stop: reading goes on after the stop signal until the socket
//! has been quiet for [`STOP_QUIET`] (bounded by `drain_timeout`), so that
//! the stanzas the server already sent, in the kernel's buffer or ours, are
//! answered; then the handler is drained, the answers flushed, and the
//! stream closed with `</stream:stream>`. What the server still routed to
//! the connection before it saw the close is read until it closes its side
//! and pushed, unanswered ([`Link::read_after_close`]): during a handover
//! ejabberd balances publishes over the old and the new connection.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};
use tracing::{debug, error, info, warn};

use super::element::Element;
use super::limits::{BytesRead, DEFAULT_MAX_STANZA};
use super::ns;
use super::reader::{ReadError, StanzaReader, StreamItem};
use super::stanza::{StreamError, stream_error_xml};
use crate::shutdown::Shutdown;

/// Settings of the component connection.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The XMPP server's component port.
    pub host: String,
    pub port: u16,
    /// The component's domain (`push.example.org`).
    pub domain: String,
    /// The shared secret of the component.
    pub secret: String,
    /// Hard cap on one stanza's bytes; a larger stanza is read to its end
    /// but comes to the handler as oversize (see `limits.rs`).
    pub max_stanza_size: usize,
    /// Idle time after which a single space is sent.
    pub keepalive: Duration,
    /// Longest delay between reconnection attempts after a lost connection.
    pub reconnect_max_delay: Duration,
    /// How often a standby instance tries to take over the domain.
    pub standby_retry: Duration,
    /// How long to wait for the server's side of the handshake.
    pub handshake_timeout: Duration,
    /// How long a graceful stop (or a replaced connection) waits for the
    /// stanzas already received to be answered.
    pub drain_timeout: Duration,
    /// Silence from the server after which the component pings itself.
    pub read_idle: Duration,
    /// How long after that ping a byte must arrive, else the connection is
    /// lost.
    pub ping_timeout: Duration,
    /// Longest a write may take before the connection counts as lost.
    pub write_timeout: Duration,
}

impl StreamConfig {
    /// Defaults for everything but the addresses and the secret.
    pub fn new(host: &str, port: u16, domain: &str, secret: &str) -> Self {
        StreamConfig {
            host: host.into(),
            port,
            domain: domain.into(),
            secret: secret.into(),
            max_stanza_size: DEFAULT_MAX_STANZA,
            keepalive: Duration::from_secs(60),
            reconnect_max_delay: Duration::from_secs(1),
            standby_retry: Duration::from_millis(250),
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            read_idle: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Receives the stanzas of the stream, in order.
pub trait StanzaHandler: Send + Sync + 'static {
    /// Handles one stanza. May wait (backpressure: the reader does not read
    /// on meanwhile), but answers that take long should be computed in a
    /// task of their own and sent through the [`Outbound`] queue.
    fn handle(self: &Arc<Self>, stanza: Element) -> impl Future<Output = ()> + Send;

    /// Handles a stanza over the hard size cap: only its skeleton was kept
    /// (text cut short), so it must not be taken at face value, but an iq
    /// still needs an answer that disables no registration.
    fn handle_oversize(self: &Arc<Self>, stanza: Element) -> impl Future<Output = ()> + Send;

    /// Resolves once every stanza handed over so far has been answered.
    fn drained(&self) -> impl Future<Output = ()> + Send;
}

/// The queue of stanzas to send; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbound {
    tx: mpsc::Sender<String>,
}

impl Outbound {
    /// Queues a stanza, waiting while the queue is full.
    pub async fn send(&self, stanza: &Element) {
        // The receiver lives as long as the link; after a stop there is
        // nobody left to answer, so a failed send is nothing to report.
        let _ = self.tx.send(stanza.to_stanza_string()).await;
    }
}

/// The state of the link, for health checks and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Connected,
    /// Another instance holds the component domain; waiting to take over.
    Standby,
    /// The server refused our credentials.
    AuthFailed,
    /// Stopped for good (shut down or replaced).
    Stopped,
}

impl LinkState {
    /// The state's name as `/ready`, `/status` and `nudge status` show it.
    pub fn as_str(&self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Standby => "standby",
            LinkState::AuthFailed => "auth_failed",
            LinkState::Stopped => "stopped",
        }
    }
}

/// The component's connection to its XMPP server, across reconnects.
pub struct Link {
    config: StreamConfig,
    rx: mpsc::Receiver<String>,
    state: watch::Sender<LinkState>,
}

/// Why [`Link::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The shutdown signal fired; in-flight stanzas were answered.
    Shutdown,
    /// A newer connection replaced this one (Prosody `kick_old`).
    Replaced,
}

/// How one connection ended.
#[derive(Debug)]
enum SessionEnd {
    Lost(String),
    ServerError(StreamError),
    Stopped(StopReason),
}

/// Size of the outgoing queue, in stanzas.
const OUTBOUND_CAPACITY: usize = 8192;
/// Largest batch written in one socket write.
const MAX_BATCH: usize = 256 * 1024;
/// After a stop, reading ends once the socket has been quiet this long:
/// what the server sent before it learnt of the stop is read by then (on
/// loopback or a LAN it arrives within a millisecond).
pub const STOP_QUIET: Duration = Duration::from_millis(50);

impl Link {
    /// Creates the link and the queue handlers answer through.
    pub fn new(config: StreamConfig) -> (Link, Outbound, watch::Receiver<LinkState>) {
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let (state, state_rx) = watch::channel(LinkState::Connecting);
        (Link { config, rx, state }, Outbound { tx }, state_rx)
    }

    /// Runs until `shutdown` is triggered (then drains: every stanza already
    /// received is answered before the stream is closed) or the connection
    /// is replaced (then the jobs already started finish first).
    pub async fn run<H: StanzaHandler>(
        mut self,
        handler: Arc<H>,
        shutdown: Shutdown,
    ) -> StopReason {
        let mut failures: u32 = 0;
        let mut auth_failures: u32 = 0;
        // Standing by since the last conflict "already connected": the
        // retries are logged once, not each time.
        let mut standing_by = false;
        loop {
            if shutdown.is_triggered() {
                self.state.send_replace(LinkState::Stopped);
                return StopReason::Shutdown;
            }
            if !standing_by {
                self.state.send_replace(LinkState::Connecting);
            }
            let (end, was_connected) = self.connect_and_serve(&handler, &shutdown).await;
            if was_connected {
                failures = 0;
                auth_failures = 0;
                standing_by = false;
            }
            let delay = match end {
                SessionEnd::Stopped(reason) => {
                    self.state.send_replace(LinkState::Stopped);
                    return reason;
                }
                SessionEnd::Lost(why) => {
                    let d = backoff(failures, self.config.reconnect_max_delay);
                    // A server that stays away is retried every second: say
                    // so at the first failure and once a minute, not each time.
                    if failures.is_multiple_of(60) {
                        warn!(server = %self.addr(), %why, failed_attempts = failures + 1, retry_in = ?d, "component connection lost; retrying");
                    } else {
                        debug!(server = %self.addr(), %why, retry_in = ?d, "component connection attempt failed");
                    }
                    failures = failures.saturating_add(1);
                    d
                }
                SessionEnd::ServerError(e) => match e.condition.as_str() {
                    "not-authorized" | "host-unknown" | "improper-addressing" => {
                        let d = Duration::from_secs(5)
                            .saturating_mul(1 << auth_failures.min(6))
                            .min(Duration::from_secs(300));
                        auth_failures = auth_failures.saturating_add(1);
                        self.state.send_replace(LinkState::AuthFailed);
                        error!(
                            server = %self.addr(), domain = %self.config.domain, error = %e, retry_in = ?d,
                            "the XMPP server refused the component: check component.domain and component.secret against the server's component configuration"
                        );
                        d
                    }
                    "conflict" if is_replaced(&e) => {
                        info!(error = %e, "a newer connection replaced this one; finishing the jobs already started, then stopping without reconnecting");
                        if timeout(self.config.drain_timeout, handler.drained())
                            .await
                            .is_err()
                        {
                            warn!(drain_timeout = ?self.config.drain_timeout, "jobs still running after the drain timeout; stopping anyway");
                        }
                        self.state.send_replace(LinkState::Stopped);
                        return StopReason::Replaced;
                    }
                    "conflict" => {
                        if !standing_by {
                            info!(error = %e, retry_every = ?self.config.standby_retry, "another instance holds the component domain; standing by");
                            standing_by = true;
                        }
                        self.state.send_replace(LinkState::Standby);
                        self.config.standby_retry
                    }
                    _ => {
                        let d = backoff(failures, self.config.reconnect_max_delay);
                        failures = failures.saturating_add(1);
                        warn!(error = %e, retry_in = ?d, "the XMPP server closed the component stream");
                        d
                    }
                },
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => {}
            }
        }
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.config.host, self.config.port)
    }

    /// One connection, from connect to close; also says whether the
    /// handshake succeeded (which resets the backoff).
    async fn connect_and_serve<H: StanzaHandler>(
        &mut self,
        handler: &Arc<H>,
        shutdown: &Shutdown,
    ) -> (SessionEnd, bool) {
        // Connecting and the handshake give way to a stop at once: nothing
        // has been read yet, so nothing is owed an answer.
        let opening = async {
            let connect = TcpStream::connect((self.config.host.as_str(), self.config.port));
            let tcp = match timeout(self.config.handshake_timeout, connect).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => return Err(SessionEnd::Lost(format!("connect: {e}"))),
                Err(_) => return Err(SessionEnd::Lost("connect: timed out".into())),
            };
            let _ = tcp.set_nodelay(true);
            let (read, mut write) = tcp.into_split();
            let mut reader = StanzaReader::new(read, self.config.max_stanza_size);
            match timeout(
                self.config.handshake_timeout,
                handshake(&self.config, &mut reader, &mut write),
            )
            .await
            {
                Ok(Ok(())) => Ok((reader, write)),
                Ok(Err(end)) => Err(end),
                Err(_) => Err(SessionEnd::Lost("handshake: timed out".into())),
            }
        };
        let (reader, write) = tokio::select! {
            opened = opening => match opened {
                Ok(halves) => halves,
                Err(end) => return (end, false),
            },
            () = shutdown.wait() => return (SessionEnd::Stopped(StopReason::Shutdown), false),
        };
        info!(server = %self.addr(), domain = %self.config.domain, "component connected");
        self.state.send_replace(LinkState::Connected);
        (self.serve(handler, reader, write, shutdown).await, true)
    }

    /// The connected part of a session: reader task plus batched writer,
    /// keepalive and the read-idle watchdog.
    async fn serve<H: StanzaHandler>(
        &mut self,
        handler: &Arc<H>,
        reader: StanzaReader<OwnedReadHalf>,
        mut write: OwnedWriteHalf,
        shutdown: &Shutdown,
    ) -> SessionEnd {
        let stop_reading = Shutdown::new();
        let activity = Activity::new(reader.bytes_read());
        let mut reading = tokio::spawn(read_loop(
            reader,
            handler.clone(),
            stop_reading.clone(),
            activity.clone(),
            // Half the drain for reading, half for the answers.
            self.config.drain_timeout / 2,
        ));
        let write_timeout = self.config.write_timeout;
        let mut batch = String::with_capacity(16 * 1024);
        let mut last_write = Instant::now();
        let mut watchdog = Watchdog::new(&self.config, activity.clone());
        let mut draining = false;
        // Armed when a stop begins; far in the future until then.
        let drain_deadline =
            tokio::time::sleep_until(Instant::now() + Duration::from_secs(86400 * 365));
        tokio::pin!(drain_deadline);
        let drained = handler.drained();
        tokio::pin!(drained);
        let mut reader_done: Option<SessionEnd> = None;
        // The reader, handed back at a graceful stop.
        let mut after_close: Option<Box<StanzaReader<OwnedReadHalf>>> = None;

        let lost = |reading: &tokio::task::JoinHandle<ReadOutcome>, why: String| {
            reading.abort();
            SessionEnd::Lost(why)
        };
        loop {
            let keepalive_at = last_write + self.config.keepalive;
            tokio::select! {
                biased;
                msg = self.rx.recv() => {
                    let Some(first) = msg else {
                        return SessionEnd::Stopped(StopReason::Shutdown);
                    };
                    batch.clear();
                    batch.push_str(&first);
                    while batch.len() < MAX_BATCH {
                        match self.rx.try_recv() {
                            Ok(more) => batch.push_str(&more),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = write_within(&mut write, batch.as_bytes(), write_timeout).await {
                        return lost(&reading, e);
                    }
                    last_write = Instant::now();
                }
                end = &mut reading, if reader_done.is_none() => {
                    let end = match end {
                        Ok(ReadOutcome::Error(e)) => {
                            if let Some(cond) = e.stream_condition() {
                                warn!(error = %e, "closing the stream: {cond}");
                                let xml = stream_error_xml(cond, &e.to_string());
                                let _ = write_within(&mut write, xml.as_bytes(), write_timeout).await;
                            }
                            SessionEnd::Lost(e.to_string())
                        }
                        Ok(ReadOutcome::StreamError(e)) => SessionEnd::ServerError(e),
                        Ok(ReadOutcome::Stopped(reader)) => {
                            after_close = Some(reader);
                            SessionEnd::Stopped(StopReason::Shutdown)
                        }
                        Err(e) => SessionEnd::Lost(format!("reader task: {e}")),
                    };
                    if draining {
                        // Keep writing answers until drained, then close.
                        reader_done = Some(end);
                    } else {
                        let _ = timeout(write_timeout, write.shutdown()).await;
                        return end;
                    }
                }
                check = watchdog.tick(), if !draining => match check {
                    Health::Fine => {}
                    Health::Idle => {
                        let ping = format!(
                            "<iq type='get' id='nudge-ping-{}' from='{domain}' to='{domain}'><ping xmlns='{}'/></iq>",
                            watchdog.pings,
                            ns::PING,
                            domain = quick_xml::escape::escape(self.config.domain.as_str()),
                        );
                        debug!(idle = ?self.config.read_idle, "nothing read from the server lately; pinging through it");
                        if let Err(e) = write_within(&mut write, ping.as_bytes(), write_timeout).await {
                            return lost(&reading, e);
                        }
                        last_write = Instant::now();
                    }
                    Health::Dead => {
                        warn!(
                            idle = ?self.config.read_idle, ping_timeout = ?self.config.ping_timeout,
                            "no answer from the XMPP server to a ping; the connection is dead"
                        );
                        return lost(&reading, "no answer to a ping".into());
                    }
                },
                _ = tokio::time::sleep_until(keepalive_at), if !draining => {
                    if let Err(e) = write_within(&mut write, b" ", write_timeout).await {
                        return lost(&reading, e);
                    }
                    last_write = Instant::now();
                }
                _ = shutdown.wait(), if !draining => {
                    info!("stopping: reading and answering what the server already sent, then closing the stream");
                    draining = true;
                    stop_reading.trigger();
                    drain_deadline.as_mut().reset(Instant::now() + self.config.drain_timeout);
                }
                _ = &mut drained, if draining && reader_done.is_some() => {
                    // Everything read has been answered: flush and close.
                    batch.clear();
                    while let Ok(more) = self.rx.try_recv() {
                        batch.push_str(&more);
                    }
                    batch.push_str("</stream:stream>");
                    let closed = write_within(&mut write, batch.as_bytes(), write_timeout).await;
                    if let (Ok(()), Some(reader)) = (closed, after_close.take()) {
                        self.read_after_close(handler, *reader).await;
                    }
                    let _ = timeout(write_timeout, write.shutdown()).await;
                    return SessionEnd::Stopped(StopReason::Shutdown);
                }
                _ = &mut drain_deadline, if draining => {
                    warn!("drain timed out; closing with answers still pending");
                    batch.clear();
                    while let Ok(more) = self.rx.try_recv() {
                        batch.push_str(&more);
                    }
                    batch.push_str("</stream:stream>");
                    let _ = write_within(&mut write, batch.as_bytes(), write_timeout).await;
                    let _ = timeout(write_timeout, write.shutdown()).await;
                    reading.abort();
                    return SessionEnd::Stopped(StopReason::Shutdown);
                }
            }
        }
    }

    /// After our `</stream:stream>`: the server may have routed stanzas to
    /// this connection before it saw the close (ejabberd balances publishes
    /// over every connection of the domain, so during a handover it still
    /// sends some to the old one). They are read until the server closes
    /// its side, or for at most half the drain timeout, and handled: a
    /// publish is pushed (or put in the outbox), though its answer cannot
    /// be sent any more; neither server counts a publish left unanswered
    /// against the registration (`docs/answers.md`).
    async fn read_after_close<H: StanzaHandler>(
        &mut self,
        handler: &Arc<H>,
        mut reader: StanzaReader<OwnedReadHalf>,
    ) {
        let limit = self.config.drain_timeout / 2;
        let deadline = Instant::now() + limit;
        let mut late = 0u64;
        loop {
            match tokio::time::timeout_at(deadline, reader.next()).await {
                Ok(Ok(StreamItem::Stanza(el))) => {
                    if StreamError::from_element(&el).is_some() {
                        break;
                    }
                    late += 1;
                    handler.handle(el).await;
                }
                Ok(Ok(StreamItem::Oversize(el))) => {
                    late += 1;
                    handler.handle_oversize(el).await;
                }
                Ok(Ok(StreamItem::Keepalive | StreamItem::Header(_))) => {}
                Ok(Err(_)) => break, // closed by the server (or broken): done
                Err(_) => {
                    debug!(
                        ?limit,
                        "the server did not close its side of the stream in time"
                    );
                    break;
                }
            }
        }
        if late > 0 {
            let _ = timeout(limit, handler.drained()).await;
            // Their answers have no stream to go to any more.
            let mut unsent = 0u64;
            while self.rx.try_recv().is_ok() {
                unsent += 1;
            }
            info!(
                stanzas = late,
                unsent_answers = unsent,
                "stanzas that arrived after this instance closed its stream were handled; their answers could not be sent"
            );
        }
    }
}

/// Writes all of `bytes`, or says why not (an error, or `limit` passed: the
/// server stopped reading).
async fn write_within(
    write: &mut OwnedWriteHalf,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), String> {
    match timeout(limit, write.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write: {e}")),
        Err(_) => Err(format!(
            "write: blocked for {limit:?} (the server is not reading)"
        )),
    }
}

/// What the reader task shares with the watchdog: bytes read so far, and
/// whether it is waiting for the handler (backpressure: then it does not
/// read, and silence is ours, not the server's).
#[derive(Debug, Clone)]
struct Activity {
    bytes: BytesRead,
    in_handler: Arc<AtomicBool>,
    /// Stanzas handed to the handler so far.
    handled: Arc<AtomicU64>,
}

impl Activity {
    fn new(bytes: BytesRead) -> Self {
        Activity {
            bytes,
            in_handler: Arc::new(AtomicBool::new(false)),
            handled: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A value that changes whenever something was read or handled.
    fn progress(&self) -> u64 {
        self.bytes
            .get()
            .wrapping_add(self.handled.load(Ordering::Relaxed))
    }
}

/// The watchdog's verdict at one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Fine,
    /// Silent for `read_idle` (or still silent after the last ping): send
    /// a ping now.
    Idle,
    /// The pings went unanswered for `ping_timeout`.
    Dead,
}

/// Pings sent within one `ping_timeout` before the link counts as dead.
/// With several connections for the domain ejabberd routes each stanza to
/// one of them at random, the ping and its answer too (seen in the interop
/// test): with two connections a single ping reaches neither way back with
/// probability 1/4; with this many, (1/4)^8 ≈ 1.5e-5.
const PINGS_PER_TIMEOUT: u32 = 8;

/// Detects a silent server: see the module documentation.
struct Watchdog {
    activity: Activity,
    read_idle: Duration,
    ping_timeout: Duration,
    /// Between two pings while no answer came.
    ping_every: Duration,
    /// How often the activity is looked at.
    every: Duration,
    next_check: Instant,
    last_progress: u64,
    last_active: Instant,
    /// When the first unanswered ping, and the latest, were sent.
    first_ping: Option<Instant>,
    last_ping: Instant,
    pings: u64,
}

impl Watchdog {
    fn new(config: &StreamConfig, activity: Activity) -> Self {
        let ping_every = (config.ping_timeout / PINGS_PER_TIMEOUT).max(Duration::from_millis(10));
        let every = (config.read_idle / 4)
            .min(ping_every)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let now = Instant::now();
        Watchdog {
            last_progress: activity.progress(),
            activity,
            read_idle: config.read_idle,
            ping_timeout: config.ping_timeout,
            ping_every,
            every,
            next_check: now + every,
            last_active: now,
            first_ping: None,
            last_ping: now,
            pings: 0,
        }
    }

    /// Waits for the next check and makes it.
    async fn tick(&mut self) -> Health {
        tokio::time::sleep_until(self.next_check).await;
        let now = Instant::now();
        self.next_check = now + self.every;
        let progress = self.activity.progress();
        if progress != self.last_progress || self.activity.in_handler.load(Ordering::Relaxed) {
            self.last_progress = progress;
            self.last_active = now;
            self.first_ping = None;
            return Health::Fine;
        }
        let ping_due = match self.first_ping {
            Some(first) if now >= first + self.ping_timeout => return Health::Dead,
            Some(_) => now >= self.last_ping + self.ping_every,
            None => now >= self.last_active + self.read_idle,
        };
        if !ping_due {
            return Health::Fine;
        }
        self.first_ping.get_or_insert(now);
        self.last_ping = now;
        self.pings += 1;
        Health::Idle
    }
}

/// How the reader task ended.
enum ReadOutcome {
    Error(ReadError),
    StreamError(StreamError),
    /// Stopped after the stop signal, the socket quiet; the reader is
    /// handed back so that what the server sends after our close can
    /// still be read ([`read_after_close`]).
    Stopped(Box<StanzaReader<OwnedReadHalf>>),
}

/// Reads stanzas and hands them to the handler, in order. After `stop`,
/// goes on reading until the socket has been quiet for [`STOP_QUIET`] (or
/// `read_after_stop` passed, for a server that never pauses), so that
/// nothing the server already sent is left unanswered; a read in progress
/// is never cancelled otherwise (the reader is not cancel-safe).
async fn read_loop<H: StanzaHandler>(
    mut reader: StanzaReader<OwnedReadHalf>,
    handler: Arc<H>,
    stop: Shutdown,
    activity: Activity,
    read_after_stop: Duration,
) -> ReadOutcome {
    let mut stopping = false;
    let read_until = tokio::time::sleep(Duration::from_secs(86400 * 365));
    tokio::pin!(read_until);
    loop {
        let item = {
            let next = reader.next();
            tokio::pin!(next);
            loop {
                tokio::select! {
                    biased;
                    item = &mut next => break Some(item),
                    () = stop.wait(), if !stopping => {
                        stopping = true;
                        read_until.as_mut().reset(Instant::now() + read_after_stop);
                    }
                    quiet = quiet_for(&activity.bytes, STOP_QUIET), if stopping => {
                        if quiet {
                            break None;
                        }
                    }
                    () = &mut read_until, if stopping => {
                        warn!("the server kept sending after the stop; reading no more");
                        break None;
                    }
                }
            }
        };
        // Quiet: the server sends whole stanzas, so the read given up here
        // was between two of them.
        let Some(item) = item else {
            return ReadOutcome::Stopped(Box::new(reader));
        };
        let (el, oversize) = match item {
            Ok(StreamItem::Stanza(el)) => (el, false),
            Ok(StreamItem::Oversize(el)) => (el, true),
            Ok(StreamItem::Keepalive) => continue,
            Ok(StreamItem::Header(_)) => {
                return ReadOutcome::Error(ReadError::NotWellFormed("second stream header".into()));
            }
            Err(e) => return ReadOutcome::Error(e),
        };
        if let Some(e) = StreamError::from_element(&el) {
            return ReadOutcome::StreamError(e);
        }
        activity.in_handler.store(true, Ordering::Relaxed);
        if oversize {
            warn!(name = %el.name, id = el.get_attr("id").unwrap_or(""), from = el.get_attr("from").unwrap_or(""), "stanza over component.max_stanza_size; its text was cut");
            handler.handle_oversize(el).await;
        } else {
            handler.handle(el).await;
        }
        activity.handled.fetch_add(1, Ordering::Relaxed);
        activity.in_handler.store(false, Ordering::Relaxed);
    }
}

/// Waits `period` and says whether no byte was read meanwhile.
async fn quiet_for(bytes: &BytesRead, period: Duration) -> bool {
    let before = bytes.get();
    tokio::time::sleep(period).await;
    bytes.get() == before
}

/// Opens the stream and authenticates (XEP-0114 §3).
async fn handshake(
    config: &StreamConfig,
    reader: &mut StanzaReader<OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
) -> Result<(), SessionEnd> {
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' to='{}'>",
        ns::COMPONENT,
        ns::STREAM,
        quick_xml::escape::escape(config.domain.as_str())
    );
    write
        .write_all(header.as_bytes())
        .await
        .map_err(|e| SessionEnd::Lost(format!("write: {e}")))?;
    let id = loop {
        match reader.next().await {
            Ok(StreamItem::Header(attrs)) => {
                match attrs.into_iter().find(|(k, _)| k == "id").map(|(_, v)| v) {
                    Some(id) => break id,
                    None => return Err(SessionEnd::Lost("stream header without id".into())),
                }
            }
            Ok(StreamItem::Keepalive) => continue,
            Ok(StreamItem::Stanza(el) | StreamItem::Oversize(el)) => return Err(unexpected(el)),
            Err(e) => return Err(SessionEnd::Lost(format!("stream header: {e}"))),
        }
    };
    let digest = hex::encode(Sha1::digest(format!("{id}{}", config.secret).as_bytes()));
    write
        .write_all(format!("<handshake>{digest}</handshake>").as_bytes())
        .await
        .map_err(|e| SessionEnd::Lost(format!("write: {e}")))?;
    loop {
        match reader.next().await {
            Ok(StreamItem::Stanza(el)) if el.is("handshake", ns::COMPONENT) => return Ok(()),
            Ok(StreamItem::Keepalive) => continue,
            Ok(StreamItem::Stanza(el) | StreamItem::Oversize(el)) => return Err(unexpected(el)),
            Ok(StreamItem::Header(_)) => {
                return Err(SessionEnd::Lost("second stream header".into()));
            }
            Err(e) => return Err(SessionEnd::Lost(format!("handshake: {e}"))),
        }
    }
}

fn unexpected(el: Element) -> SessionEnd {
    match StreamError::from_element(&el) {
        Some(e) => SessionEnd::ServerError(e),
        None => {
            debug!(?el, "unexpected element during handshake");
            SessionEnd::Lost(format!("unexpected <{}> during handshake", el.name))
        }
    }
}

/// Prosody's text when `component_conflict_resolve = "kick_old"` lets a new
/// connection take over.
fn is_replaced(e: &StreamError) -> bool {
    e.text
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().contains("replaced"))
}

/// 100 ms doubling per failure, capped.
fn backoff(failures: u32, max: Duration) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1u32 << failures.min(16))
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped() {
        let max = Duration::from_secs(1);
        assert_eq!(backoff(0, max), Duration::from_millis(100));
        assert_eq!(backoff(2, max), Duration::from_millis(400));
        assert_eq!(backoff(10, max), max);
        assert_eq!(backoff(u32::MAX, max), max);
    }

    #[test]
    fn replaced_is_told_apart_from_already_connected() {
        let replaced = StreamError {
            condition: "conflict".into(),
            text: Some("Replaced by a new connection".into()),
        };
        let taken = StreamError {
            condition: "conflict".into(),
            text: Some("Component already connected".into()),
        };
        assert!(is_replaced(&replaced));
        assert!(!is_replaced(&taken));
    }
}
