//! The App Server the kit plays: a XEP-0114 component that records every
//! publish and answers it the way the scenario under way asks.
//!
//! A reader task owns the stream: it answers each publish at once by the
//! current [`Answer`] (so the server's view of the answer does not depend
//! on when a scenario looks), answers disco#info as a push service and
//! pings, and queues what it saw as [`Event`]s with their arrival time for
//! the scenarios to read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::conformance::xml::{
    Element, STREAM_CLOSE, StreamEvent, StreamReader, XmlError, default_reply, error_condition,
    handshake_digest, iq_reply, ns, stanza_error, stream_open,
};

pub use crate::conformance::xml::{Condition, ErrorType};

use super::client::STEP_TIMEOUT;

/// Publishes carry a message body of the kit's making; ejabberd's
/// component listener has no limit of its own (docs/answers.md).
const MAX_STANZA: usize = 4 << 20;
/// Events kept unread at most; a server flooding the component past this
/// blocks the reader (bounded memory).
const QUEUE: usize = 4096;

/// How the component answers publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `<iq type='result'/>`.
    Result,
    /// `<iq type='error'>` with this type and condition.
    Error(ErrorType, Condition),
    /// `<iq type='error'/>` with no `<error/>` child.
    BareError,
    /// Nothing at all.
    Silence,
}

impl Answer {
    /// The iq answering `iq`, if any.
    fn to_iq(self, iq: &Element) -> Option<Element> {
        match self {
            Answer::Result => Some(iq_reply(iq, ns::COMPONENT, "result")),
            Answer::Error(kind, condition) => Some(
                iq_reply(iq, ns::COMPONENT, "error").with_child(stanza_error(
                    ns::COMPONENT,
                    kind,
                    condition,
                )),
            ),
            Answer::BareError => Some(iq_reply(iq, ns::COMPONENT, "error")),
            Answer::Silence => None,
        }
    }
}

/// A publish as it reached the component.
#[derive(Clone, Debug)]
pub struct Publish {
    /// The whole iq.
    pub iq: Element,
    /// When it arrived.
    pub at: Instant,
}

impl Publish {
    /// The publish's node.
    pub fn node(&self) -> Option<&str> {
        self.iq
            .child("pubsub", ns::PUBSUB)
            .and_then(|p| p.child("publish", ns::PUBSUB))
            .and_then(|p| p.attr("node"))
    }
}

/// What the component saw.
#[derive(Clone, Debug)]
pub enum Event {
    /// A publish (already answered).
    Publish(Publish),
    /// Any other stanza.
    Other(Element),
    /// A stream error, with its condition; the stream is over.
    StreamError(String),
    /// The stream ended or broke.
    Closed,
}

/// Why the component could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// TCP.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The component address.
        addr: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Reading the stream.
    #[error("component stream: {0}")]
    Xml(#[from] XmlError),
    /// Writing.
    #[error("component write: {0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("no answer within {0:?} while {1}")]
    Timeout(Duration, &'static str),
    /// The server refused the handshake with this stream error condition.
    #[error("the server refused the component: stream error {0}")]
    Refused(String),
    /// The server closed the stream without a stream error.
    #[error("the server closed the component stream without a stream error")]
    Closed,
    /// Anything else unexpected.
    #[error("{0}")]
    Protocol(String),
}

/// A connected component.
pub struct Component {
    events: mpsc::Receiver<Event>,
    writer: Arc<Mutex<OwnedWriteHalf>>,
    answer: Arc<std::sync::Mutex<Answer>>,
    reader: JoinHandle<()>,
}

impl Component {
    /// Connects and handshakes (XEP-0114 §3) for `domain`.
    pub async fn connect(
        addr: &str,
        domain: &str,
        secret: &str,
    ) -> Result<Component, ComponentError> {
        let tcp = timeout(STEP_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ComponentError::Timeout(STEP_TIMEOUT, "connecting"))?
            .map_err(|source| ComponentError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let (r, mut w) = tcp.into_split();
        let mut reader = StreamReader::new(r, MAX_STANZA);
        w.write_all(stream_open(ns::COMPONENT, &[("to", domain)]).as_bytes())
            .await?;
        let header = timeout(STEP_TIMEOUT, reader.header()).await.map_err(|_| {
            ComponentError::Timeout(STEP_TIMEOUT, "waiting for the stream header")
        })??;
        let Some(id) = header.attr("id") else {
            // Some servers refuse an unknown domain in the header with a
            // stream error right after it.
            return Err(match timeout(STEP_TIMEOUT, reader.next()).await {
                Ok(Ok(StreamEvent::Stanza(el))) if el.is("error", ns::STREAM) => {
                    ComponentError::Refused(error_condition(&el))
                }
                _ => ComponentError::Protocol("stream header without an id".into()),
            });
        };
        let handshake =
            Element::new("handshake", ns::COMPONENT).with_text(handshake_digest(id, secret));
        w.write_all(handshake.to_xml(ns::COMPONENT).as_bytes())
            .await?;
        match timeout(STEP_TIMEOUT, reader.next()).await {
            Err(_) => {
                return Err(ComponentError::Timeout(
                    STEP_TIMEOUT,
                    "waiting for <handshake/>",
                ));
            }
            Ok(Err(XmlError::Closed)) | Ok(Ok(StreamEvent::End)) => {
                return Err(ComponentError::Closed);
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(StreamEvent::Stanza(el))) if el.is("handshake", ns::COMPONENT) => {}
            Ok(Ok(StreamEvent::Stanza(el))) if el.is("error", ns::STREAM) => {
                return Err(ComponentError::Refused(error_condition(&el)));
            }
            Ok(Ok(StreamEvent::Stanza(el))) => {
                return Err(ComponentError::Protocol(format!(
                    "expected <handshake/>, got <{}>",
                    el.name
                )));
            }
        }
        let writer = Arc::new(Mutex::new(w));
        let answer = Arc::new(std::sync::Mutex::new(Answer::Result));
        let (tx, events) = mpsc::channel(QUEUE);
        let reader = tokio::spawn(read_loop(reader, writer.clone(), answer.clone(), tx));
        Ok(Component {
            events,
            writer,
            answer,
            reader,
        })
    }

    /// How publishes are answered from now on.
    pub fn set_answer(&self, answer: Answer) {
        if let Ok(mut a) = self.answer.lock() {
            *a = answer;
        }
    }

    /// The next event within `wait`.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Event> {
        timeout(wait, self.events.recv()).await.ok().flatten()
    }

    /// The next publish for `node` within `wait`; other publishes and
    /// stanzas are dropped (another scenario's leftovers).
    pub async fn next_publish(&mut self, node: &str, wait: Duration) -> Option<Publish> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await? {
                Event::Publish(p) if p.node() == Some(node) => return Some(p),
                Event::Closed | Event::StreamError(_) => return None,
                _ => {}
            }
        }
    }

    /// Every publish for `node` until `quiet` passes without one, for at
    /// most `max`.
    pub async fn publishes_until_quiet(
        &mut self,
        node: &str,
        quiet: Duration,
        max: Duration,
    ) -> Vec<Publish> {
        let deadline = Instant::now() + max;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.next_publish(node, quiet.min(left)).await {
                Some(p) => out.push(p),
                None => return out,
            }
        }
    }

    /// Everything that arrives within `wait`.
    pub async fn events_for(&mut self, wait: Duration) -> Vec<Event> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.next_event(left).await {
                Some(e) => out.push(e),
                None => return out,
            }
        }
    }

    /// Whether the stream is still up.
    pub fn is_open(&self) -> bool {
        !self.reader.is_finished()
    }

    /// Closes the stream cleanly (`</stream:stream>`), waiting (bounded)
    /// for the server's close.
    pub async fn close(&mut self) {
        {
            let mut w = self.writer.lock().await;
            let _ = w.write_all(STREAM_CLOSE.as_bytes()).await;
            let _ = w.flush().await;
        }
        if timeout(Duration::from_secs(3), &mut self.reader)
            .await
            .is_err()
        {
            self.reader.abort();
        }
        let mut w = self.writer.lock().await;
        let _ = w.shutdown().await;
    }
}

async fn read_loop(
    mut reader: StreamReader<tokio::net::tcp::OwnedReadHalf>,
    writer: Arc<Mutex<OwnedWriteHalf>>,
    answer: Arc<std::sync::Mutex<Answer>>,
    events: mpsc::Sender<Event>,
) {
    loop {
        let el = match reader.next().await {
            Ok(StreamEvent::Stanza(el)) => el,
            Ok(StreamEvent::End) | Err(_) => {
                let _ = events.send(Event::Closed).await;
                return;
            }
        };
        if el.is("error", ns::STREAM) {
            let _ = events.send(Event::StreamError(error_condition(&el))).await;
            return;
        }
        let reply = if el.is("iq", ns::COMPONENT) {
            match el.attr("type") {
                Some("set") if is_publish(&el) => {
                    let current = answer.lock().map(|a| *a).unwrap_or(Answer::Result);
                    current.to_iq(&el)
                }
                Some("get" | "set") => Some(answer_request(&el)),
                _ => None,
            }
        } else {
            None
        };
        if let Some(reply) = reply {
            let mut w = writer.lock().await;
            let _ = w.write_all(reply.to_xml(ns::COMPONENT).as_bytes()).await;
            let _ = w.flush().await;
        }
        let event = if is_publish(&el) {
            Event::Publish(Publish {
                iq: el,
                at: Instant::now(),
            })
        } else {
            Event::Other(el)
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

fn is_publish(iq: &Element) -> bool {
    iq.is("iq", ns::COMPONENT)
        && iq.attr("type") == Some("set")
        && iq
            .child("pubsub", ns::PUBSUB)
            .and_then(|p| p.child("publish", ns::PUBSUB))
            .is_some()
}

/// Disco#info as a push service (XEP-0357 §4.2); ping and
/// `service-unavailable` for the rest.
fn answer_request(iq: &Element) -> Element {
    if iq.attr("type") == Some("get") && iq.child("query", ns::DISCO_INFO).is_some() {
        iq_reply(iq, ns::COMPONENT, "result").with_child(
            Element::new("query", ns::DISCO_INFO)
                .with_child(
                    Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", "pubsub")
                        .with_attr("type", "push"),
                )
                .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::PUSH)),
        )
    } else {
        default_reply(iq, ns::COMPONENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish() -> Element {
        Element::parse(
            "<iq xmlns='jabber:component:accept' type='set' id='p1' from='localhost' \
             to='push.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <publish node='n1'><item/></publish></pubsub></iq>",
        )
        .unwrap()
    }

    #[test]
    fn answers_address_the_publisher() {
        let iq = publish();
        assert!(is_publish(&iq));
        let result = Answer::Result.to_iq(&iq).unwrap();
        assert_eq!(result.attr("type"), Some("result"));
        assert_eq!(result.attr("to"), Some("localhost"));
        assert_eq!(result.attr("from"), Some("push.localhost"));
        assert_eq!(result.attr("id"), Some("p1"));
        let error = Answer::Error(ErrorType::Wait, Condition::ResourceConstraint)
            .to_iq(&iq)
            .unwrap();
        let e = error.child("error", ns::COMPONENT).unwrap();
        assert_eq!(e.attr("type"), Some("wait"));
        assert!(e.child("resource-constraint", ns::STANZAS).is_some());
        let bare = Answer::BareError.to_iq(&iq).unwrap();
        assert_eq!(bare.attr("type"), Some("error"));
        assert!(bare.children.is_empty());
        assert!(Answer::Silence.to_iq(&iq).is_none());
    }
}
