//! The server side of one App Server's component connections: accepts
//! them, runs the XEP-0114 handshake, reads everything the App Server
//! sends, answers its own pings (a server-side ping to the domain is
//! legitimate traffic, `component/src/xmpp/stream.rs` sends one), and
//! counts every iq answer by id for `one-answer-per-iq`. Checks that break
//! the stream expect the App Server to come back: [`Session::connected`]
//! accepts the next connection, bounded by the run's wait.

pub use crate::conformance::xml::{Condition, ErrorType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::conformance::xml::{
    Element, STREAM_CLOSE, StreamEvent, StreamReader, XmlError, default_reply, handshake_digest,
    ns, stream_open,
};

/// The largest stanza the kit reads from the App Server.
const MAX_STANZA: usize = 4 << 20;
/// How long one step of the handshake may take.
const HANDSHAKE_STEP: Duration = Duration::from_secs(10);
/// How long the kit waits for the answer to one of its iqs: past
/// ejabberd's 32 s (docs/answers.md), so that a late answer is seen late
/// rather than not at all.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(33);

/// What an iq answer said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `type='result'`.
    Result(Element),
    /// `type='error'`: the error type (None when missing or unknown) and
    /// the defined condition ("" when none).
    Error {
        /// The `<error type=…>`, if it is one of RFC 6120's.
        kind: Option<ErrorType>,
        /// The defined condition's element name.
        condition: String,
    },
}

impl Answer {
    /// Reads an iq answer; `None` when `el` is no iq result or error.
    pub fn from_element(el: &Element) -> Option<Answer> {
        if el.name != "iq" {
            return None;
        }
        match el.attr("type") {
            Some("result") => Some(Answer::Result(el.clone())),
            Some("error") => {
                let err = el.children.iter().find(|c| c.name == "error");
                let kind = err
                    .and_then(|e| e.attr("type"))
                    .and_then(|t| ErrorType::try_from(t).ok());
                let condition = err
                    .and_then(|e| {
                        e.children
                            .iter()
                            .find(|c| c.ns == ns::STANZAS && c.name != "text")
                    })
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                Some(Answer::Error { kind, condition })
            }
            _ => None,
        }
    }

    /// `result`, or `type/condition` (`cancel/item-not-found`).
    pub fn describe(&self) -> String {
        match self {
            Answer::Result(_) => "result".to_owned(),
            Answer::Error { kind, condition } => format!(
                "{}/{}",
                kind.map_or("(no type)", ErrorType::as_str),
                if condition.is_empty() {
                    "(no condition)"
                } else {
                    condition
                }
            ),
        }
    }

    /// Whether this is an error of type `kind` (any condition).
    pub fn is_error(&self, kind: ErrorType) -> bool {
        matches!(self, Answer::Error { kind: Some(k), .. } if *k == kind)
    }

    /// Whether this is an error of type `kind` with condition `condition`.
    pub fn is(&self, kind: ErrorType, condition: Condition) -> bool {
        matches!(self, Answer::Error { kind: Some(k), condition: c } if *k == kind && c == condition.as_str())
    }
}

/// What happened to a request.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Answered, after this long.
    Answered(Answer, Duration),
    /// Nothing within [`ANSWER_LIMIT`].
    Unanswered,
    /// The stream ended before the answer.
    StreamEnded(String),
    /// There was no stream to send it on.
    NotConnected(String),
}

impl Outcome {
    /// The answer, if any.
    pub fn answer(&self) -> Option<&Answer> {
        match self {
            Outcome::Answered(a, _) => Some(a),
            _ => None,
        }
    }

    /// Human text.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Answered(a, took) => format!("{} in {} ms", a.describe(), took.as_millis()),
            Outcome::Unanswered => format!("no answer within {} s", ANSWER_LIMIT.as_secs()),
            Outcome::StreamEnded(why) => format!("stream ended before an answer: {why}"),
            Outcome::NotConnected(why) => format!("not connected: {why}"),
        }
    }

    /// The machine-readable kind of answer (`result`, `cancel/item-not-found`,
    /// `none`, `closed`).
    pub fn value(&self) -> String {
        match self {
            Outcome::Answered(a, _) => a.describe(),
            Outcome::Unanswered => "none".to_owned(),
            Outcome::StreamEnded(_) | Outcome::NotConnected(_) => "closed".to_owned(),
        }
    }
}

/// What the reader task hands on.
enum Incoming {
    Stanza(Element),
    Ended(String),
}

/// Counts the App Server's iq answers by id, across connections.
#[derive(Default)]
struct AnswerLog {
    counts: HashMap<String, u32>,
}

/// One authenticated component connection.
struct Conn {
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    rx: mpsc::Receiver<Incoming>,
    task: JoinHandle<()>,
    ended: Option<String>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the handshake of one connection went.
#[derive(Clone, Debug)]
pub struct Handshake {
    /// The header's `to`.
    pub to: Option<String>,
    /// The namespace of the handshake element (the stream's default).
    pub ns: Option<String>,
    /// The digest the App Server sent.
    pub digest: Option<String>,
    /// The digest it should have sent.
    pub expected: String,
    /// What went wrong before a digest came, if anything.
    pub problem: Option<String>,
}

impl Handshake {
    /// Whether the handshake was right in every respect.
    pub fn ok(&self, domain: &str) -> bool {
        self.problem.is_none()
            && self.to.as_deref() == Some(domain)
            && self.ns.as_deref() == Some(ns::COMPONENT)
            && self.digest.as_deref() == Some(self.expected.as_str())
    }
}

/// The kit's side of the App Server's connections.
pub struct Session {
    listener: TcpListener,
    /// The component domain.
    pub domain: String,
    secret: String,
    /// The domain publishes come from.
    pub user_domain: String,
    /// The bound on (re)connection waits.
    pub wait: Duration,
    conn: Option<Conn>,
    log: Arc<Mutex<AnswerLog>>,
    next_id: u64,
    streams: u64,
    /// The first handshake, once one was seen.
    pub first_handshake: Option<Handshake>,
    /// Why the checks cannot run (no authenticated stream), once known.
    pub broken: Option<String>,
    /// Every publish the kit sent: id and how long its answer took (None:
    /// unanswered or the stream ended first).
    pub publishes: Vec<(String, Option<Duration>)>,
    /// The App Server's software (XEP-0092), if it said.
    pub software: Option<String>,
    /// The registration the survival checks publish to, once one exists.
    pub probe: Option<super::stanzas::Registration>,
    /// Ids of the kit's requests so far (answers to them are not strays).
    sent: std::collections::HashSet<String>,
}

impl Session {
    /// A session on `listener`; nothing is accepted yet.
    pub fn new(
        listener: TcpListener,
        domain: &str,
        secret: &str,
        user_domain: &str,
        wait: Duration,
    ) -> Session {
        Session {
            listener,
            domain: domain.to_owned(),
            secret: secret.to_owned(),
            user_domain: user_domain.to_owned(),
            wait,
            conn: None,
            log: Arc::default(),
            next_id: 0,
            streams: 0,
            first_handshake: None,
            broken: None,
            publishes: Vec::new(),
            software: None,
            probe: None,
            sent: Default::default(),
        }
    }

    /// A fresh iq id.
    pub fn id(&mut self, tag: &str) -> String {
        self.next_id += 1;
        format!("kit-{tag}-{}", self.next_id)
    }

    /// Accepts one connection and runs the handshake on it. `Ok(None)`
    /// when nothing connected within `limit`.
    pub async fn accept(&mut self, limit: Duration) -> Result<Option<Handshake>, std::io::Error> {
        let tcp = match tokio::time::timeout(limit, self.listener.accept()).await {
            Err(_) => return Ok(None),
            Ok(r) => r?.0,
        };
        self.conn = None;
        self.streams += 1;
        let stream_id = format!("nudge-kit-{}-{}", self.streams, rand::random::<u32>());
        let expected = handshake_digest(&stream_id, &self.secret);
        let mut hs = Handshake {
            to: None,
            ns: None,
            digest: None,
            expected,
            problem: None,
        };
        let (r, w) = tcp.into_split();
        let mut reader = StreamReader::new(r, MAX_STANZA);
        let writer = Arc::new(tokio::sync::Mutex::new(w));
        match tokio::time::timeout(HANDSHAKE_STEP, reader.header()).await {
            Ok(Ok(header)) => hs.to = header.attr("to").map(str::to_owned),
            Ok(Err(e)) => {
                hs.problem = Some(format!("no stream header: {e}"));
                return Ok(Some(hs));
            }
            Err(_) => {
                hs.problem = Some("no stream header within 10 s".into());
                return Ok(Some(hs));
            }
        }
        let open = stream_open(ns::COMPONENT, &[("from", &self.domain), ("id", &stream_id)]);
        if let Err(e) = write(&writer, &open).await {
            hs.problem = Some(format!("writing the stream header failed: {e}"));
            return Ok(Some(hs));
        }
        match tokio::time::timeout(HANDSHAKE_STEP, reader.next()).await {
            Ok(Ok(StreamEvent::Stanza(el))) if el.name == "handshake" => {
                hs.ns = Some(el.ns.clone());
                hs.digest = Some(el.text.trim().to_owned());
            }
            Ok(Ok(StreamEvent::Stanza(el))) => {
                hs.problem = Some(format!("expected <handshake/>, got <{}>", el.name));
            }
            Ok(Ok(StreamEvent::End)) => hs.problem = Some("the stream ended".into()),
            Ok(Err(e)) => hs.problem = Some(format!("no handshake: {e}")),
            Err(_) => hs.problem = Some("no handshake within 10 s".into()),
        }
        if !hs.ok(&self.domain) {
            let condition = if hs.digest.is_some() && hs.digest.as_deref() != Some(&hs.expected) {
                "not-authorized"
            } else if hs.to.as_deref() != Some(&self.domain) {
                "host-unknown"
            } else if hs.ns.as_deref().is_some_and(|n| n != ns::COMPONENT) {
                "invalid-namespace"
            } else {
                "not-authorized"
            };
            let err = Element::new("error", ns::STREAM)
                .with_child(Element::new(condition, ns::STREAM_ERRORS));
            let _ = write(
                &writer,
                &format!("{}{STREAM_CLOSE}", err.to_xml(ns::COMPONENT)),
            )
            .await;
            let _ = writer.lock().await.shutdown().await;
            return Ok(Some(hs));
        }
        if let Err(e) = write(&writer, "<handshake/>").await {
            hs.problem = Some(format!("writing <handshake/> failed: {e}"));
            return Ok(Some(hs));
        }
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(read_loop(
            reader,
            writer.clone(),
            tx,
            self.log.clone(),
            self.domain.clone(),
        ));
        self.conn = Some(Conn {
            writer,
            rx,
            task,
            ended: None,
        });
        Ok(Some(hs))
    }

    /// Whether a stream is up (as far as the kit knows).
    pub fn is_up(&mut self) -> bool {
        self.drain_ended();
        self.conn.as_ref().is_some_and(|c| c.ended.is_none())
    }

    /// Makes sure an authenticated stream is up, accepting the App
    /// Server's next connection within the run's wait if it is not.
    pub async fn connected(&mut self) -> Result<(), String> {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        if self.is_up() {
            return Ok(());
        }
        let deadline = Instant::now() + self.wait;
        // A few attempts: a handshake can fail once on a race with the
        // App Server's own reconnect timer; bounded by the deadline.
        for _ in 0..5 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.accept(left).await {
                Ok(Some(hs)) if hs.ok(&self.domain) => return Ok(()),
                Ok(Some(hs)) => {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "the App Server came back with a bad handshake: {hs:?}"
                        ));
                    }
                }
                Ok(None) => {
                    return Err(format!(
                        "the App Server did not connect within {} s",
                        self.wait.as_secs()
                    ));
                }
                Err(e) => return Err(format!("accept failed: {e}")),
            }
        }
        Err("the App Server's handshakes kept failing".into())
    }

    fn drain_ended(&mut self) {
        if let Some(conn) = &mut self.conn {
            // Look for an end notice without losing stanzas: only when the
            // task finished can the channel hold one.
            if conn.ended.is_none() && conn.task.is_finished() {
                let mut kept = Vec::new();
                while let Ok(item) = conn.rx.try_recv() {
                    match item {
                        Incoming::Ended(why) => conn.ended = Some(why),
                        Incoming::Stanza(el) => kept.push(el),
                    }
                }
                if conn.ended.is_none() {
                    conn.ended = Some("the connection closed".into());
                }
                // Stanzas read before the end are late answers nobody
                // waits for now; the answer log has counted them.
                drop(kept);
            }
        }
    }

    /// Sends raw text on the current stream.
    pub async fn send_raw(&mut self, text: &str) -> Result<(), String> {
        let conn = self.conn.as_ref().ok_or("not connected")?;
        write(&conn.writer, text).await.map_err(|e| e.to_string())
    }

    /// Sends a stanza on the current stream.
    pub async fn send(&mut self, el: &Element) -> Result<(), String> {
        self.send_raw(&el.to_xml(ns::COMPONENT)).await
    }

    /// Sends iq `el` (its id is the caller's) and waits for its answer,
    /// up to `limit`.
    pub async fn request_within(&mut self, el: &Element, limit: Duration) -> Outcome {
        if let Err(why) = self.connected().await {
            return Outcome::NotConnected(why);
        }
        let id = el.attr("id").unwrap_or_default().to_owned();
        self.sent.insert(id.clone());
        let started = Instant::now();
        if let Err(e) = self.send(el).await {
            return Outcome::StreamEnded(format!("writing failed: {e}"));
        }
        let deadline = started + limit;
        loop {
            match self.next_within(deadline).await {
                Some(Incoming::Stanza(got)) => {
                    if got.attr("id") == Some(id.as_str())
                        && let Some(answer) = Answer::from_element(&got)
                    {
                        return Outcome::Answered(answer, started.elapsed());
                    }
                    // Anything else here is a late or duplicate answer: the
                    // answer log counts it for one-answer-per-iq.
                }
                Some(Incoming::Ended(why)) => return Outcome::StreamEnded(why),
                None => return Outcome::Unanswered,
            }
        }
    }

    /// [`Self::request_within`] with [`ANSWER_LIMIT`].
    pub async fn request(&mut self, el: &Element) -> Outcome {
        self.request_within(el, ANSWER_LIMIT).await
    }

    /// Sends a publish and records how long its answer took.
    pub async fn publish(&mut self, el: &Element) -> Outcome {
        let out = self.request(el).await;
        let took = match &out {
            Outcome::Answered(_, took) => Some(*took),
            _ => None,
        };
        // A publish that never reached a stream says nothing about time.
        if !matches!(out, Outcome::NotConnected(_)) {
            let id = el.attr("id").unwrap_or_default().to_owned();
            self.publishes.push((id, took));
        }
        out
    }

    /// Everything the App Server sends within `period` that is not an
    /// answer to one of the kit's earlier requests (those are
    /// one-answer-per-iq's business), unless its id is in `probes`.
    pub async fn quiet(&mut self, period: Duration, probes: &[String]) -> Vec<Element> {
        let deadline = Instant::now() + period;
        let mut got = Vec::new();
        while let Some(item) = self.next_within(deadline).await {
            match item {
                Incoming::Stanza(el) => {
                    let id = el.attr("id").unwrap_or_default();
                    let answer_to_earlier = Answer::from_element(&el).is_some()
                        && self.sent.contains(id)
                        && !probes.iter().any(|p| p == id);
                    if !answer_to_earlier {
                        got.push(el);
                    }
                }
                Incoming::Ended(_) => break,
            }
        }
        got
    }

    /// Waits up to `period` for the current stream to end; true if it did.
    pub async fn wait_for_end(&mut self, period: Duration) -> bool {
        let deadline = Instant::now() + period;
        loop {
            match self.next_within(deadline).await {
                Some(Incoming::Ended(_)) => return true,
                Some(Incoming::Stanza(_)) => continue,
                None => return !self.is_up(),
            }
        }
    }

    async fn next_within(&mut self, deadline: Instant) -> Option<Incoming> {
        let conn = self.conn.as_mut()?;
        if let Some(why) = &conn.ended {
            return Some(Incoming::Ended(why.clone()));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.rx.recv()).await {
            Ok(Some(Incoming::Ended(why))) => {
                conn.ended = Some(why.clone());
                Some(Incoming::Ended(why))
            }
            Ok(Some(item)) => Some(item),
            Ok(None) => {
                let why = "the connection closed".to_owned();
                conn.ended = Some(why.clone());
                Some(Incoming::Ended(why))
            }
            Err(_) => None,
        }
    }

    /// The kit (as the server) closes the current stream.
    pub async fn close_stream(&mut self, error: Option<&str>) {
        if let Some(conn) = self.conn.take() {
            let mut text = String::new();
            if let Some(condition) = error {
                let err = Element::new("error", ns::STREAM)
                    .with_child(Element::new(condition, ns::STREAM_ERRORS));
                text.push_str(&err.to_xml(ns::COMPONENT));
            }
            text.push_str(STREAM_CLOSE);
            let _ = write(&conn.writer, &text).await;
            let _ = conn.writer.lock().await.shutdown().await;
        }
    }

    /// Ids answered more than once, with their counts.
    pub fn answered_twice(&self) -> Vec<(String, u32)> {
        let log = match self.log.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut twice: Vec<(String, u32)> = log
            .counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| (id.clone(), *n))
            .collect();
        twice.sort();
        twice
    }

    /// Ends the run's stream.
    pub async fn close(&mut self) {
        self.close_stream(None).await;
    }
}

async fn write(writer: &tokio::sync::Mutex<OwnedWriteHalf>, text: &str) -> std::io::Result<()> {
    let mut w = writer.lock().await;
    tokio::time::timeout(Duration::from_secs(30), w.write_all(text.as_bytes()))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}

/// Reads the App Server's stream until it ends: answers its own iq
/// requests (ping → result, anything else → service-unavailable) and
/// forwards the rest.
async fn read_loop(
    mut reader: StreamReader<tokio::net::tcp::OwnedReadHalf>,
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    tx: mpsc::Sender<Incoming>,
    log: Arc<Mutex<AnswerLog>>,
    domain: String,
) {
    loop {
        let el = match reader.next().await {
            Ok(StreamEvent::Stanza(el)) => el,
            Ok(StreamEvent::End) => {
                let _ = tx
                    .send(Incoming::Ended("the App Server closed the stream".into()))
                    .await;
                return;
            }
            Err(XmlError::Closed) => {
                let _ = tx
                    .send(Incoming::Ended("the connection closed".into()))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx
                    .send(Incoming::Ended(format!("unreadable stream: {e}")))
                    .await;
                return;
            }
        };
        if el.name == "iq" && matches!(el.attr("type"), Some("get") | Some("set")) {
            answer_request(&el, &writer, &domain).await;
            continue;
        }
        if Answer::from_element(&el).is_some() {
            let id = el.attr("id").unwrap_or_default().to_owned();
            let mut log = match log.lock() {
                Ok(l) => l,
                Err(poisoned) => poisoned.into_inner(),
            };
            *log.counts.entry(id).or_insert(0) += 1;
        }
        if tx.send(Incoming::Stanza(el)).await.is_err() {
            return;
        }
    }
}

/// The server's answer to an iq the App Server sent: a ping gets a result,
/// anything else `service-unavailable` (the kit is no full server).
async fn answer_request(el: &Element, writer: &tokio::sync::Mutex<OwnedWriteHalf>, domain: &str) {
    let mut answer = default_reply(el, ns::COMPONENT);
    if answer.attr("from").is_none() {
        answer.set_attr("from", domain);
    }
    let _ = write(writer, &answer.to_xml(ns::COMPONENT)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_by_type_and_condition() {
        let parse = |xml: &str| {
            Element::parse(xml)
                .ok()
                .and_then(|e| Answer::from_element(&e))
        };
        let wait = parse("<iq type='error' id='a'><error type='wait'><remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>x</text></error></iq>")
            .expect("an answer");
        assert!(wait.is(ErrorType::Wait, Condition::RemoteServerTimeout));
        assert_eq!(wait.describe(), "wait/remote-server-timeout");
        let bare = parse("<iq type='error' id='b'/>").expect("an answer");
        assert_eq!(bare.describe(), "(no type)/(no condition)");
        assert!(!bare.is_error(ErrorType::Cancel));
        assert!(matches!(
            parse("<iq type='result' id='c'/>"),
            Some(Answer::Result(_))
        ));
        assert_eq!(parse("<iq type='set' id='d'/>"), None);
        assert_eq!(parse("<message id='e'/>"), None);
    }

    #[test]
    fn error_types_parse() {
        assert_eq!(ErrorType::try_from("auth"), Ok(ErrorType::Auth));
        assert!(ErrorType::try_from("fatal").is_err());
    }
}
