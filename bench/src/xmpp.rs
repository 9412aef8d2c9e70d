//! The XMPP server's side of Nudge's component stream (XEP-0114) for the
//! external mode: accept the connection, check the handshake, write
//! publishes, and read Nudge's answers on a task of their own that stamps
//! each with its arrival time (so that a slow writer never delays a reply's
//! timestamp). Nudge's own pings (after `read_idle_secs` of silence) are
//! answered there, as a server would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nudge::xmpp::Element;
use nudge::xmpp::reader::{StanzaReader, StreamItem};
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, mpsc};

/// The component domain Nudge serves in every run.
pub const DOMAIN: &str = "push.bench";
/// The component secret of every run.
pub const SECRET: &str = "bench-secret";

/// Why the stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("stream i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("reading the stream: {0}")]
    Read(String),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("Nudge did not connect within {0:?}")]
    ConnectTimeout(Duration),
}

/// How Nudge answered one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `type='result'`.
    Result,
    /// `type='error'` with this defined condition (`item-not-found`, …).
    Error(String),
}

/// One answer to a publish, as read.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The publish's index (its stanza id is `p<index>`).
    pub index: usize,
    pub answer: Answer,
    /// When the stanza was read off the socket.
    pub at: Instant,
}

/// The accepted stream: the write half (shared with the reader task, which
/// answers pings) and the replies.
#[derive(Debug)]
pub struct ServerSide {
    pub writer: Arc<Mutex<OwnedWriteHalf>>,
    pub replies: mpsc::UnboundedReceiver<Reply>,
    /// When the handshake was acknowledged.
    pub connected_at: Instant,
}

/// Waits for Nudge on `listener`, does the component handshake and starts
/// the reader task.
pub async fn accept(listener: &TcpListener, within: Duration) -> Result<ServerSide, StreamError> {
    let (tcp, _) = tokio::time::timeout(within, listener.accept())
        .await
        .map_err(|_| StreamError::ConnectTimeout(within))??;
    tcp.set_nodelay(true)?;
    let (r, mut w) = tcp.into_split();
    let mut reader = StanzaReader::new(r, 1 << 20);
    match reader.next().await {
        Ok(StreamItem::Header(_)) => {}
        Ok(other) => {
            return Err(StreamError::Handshake(format!(
                "expected a stream header, got {other:?}"
            )));
        }
        Err(e) => return Err(StreamError::Read(e.to_string())),
    }
    let id = "bench-stream";
    w.write_all(
        format!(
            "<stream:stream id='{id}' from='{DOMAIN}' xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        .as_bytes(),
    )
    .await?;
    let hs = loop {
        match reader.next().await {
            Ok(StreamItem::Stanza(el)) => break el,
            Ok(StreamItem::Keepalive) => continue,
            Ok(other) => return Err(StreamError::Handshake(format!("got {other:?}"))),
            Err(e) => return Err(StreamError::Read(e.to_string())),
        }
    };
    let expected = hex::encode(Sha1::digest(format!("{id}{SECRET}").as_bytes()));
    if hs.name != "handshake" || hs.text != expected {
        return Err(StreamError::Handshake("wrong digest".into()));
    }
    w.write_all(b"<handshake/>").await?;
    let connected_at = Instant::now();
    let writer = Arc::new(Mutex::new(w));
    let (tx, replies) = mpsc::unbounded_channel();
    tokio::spawn(read_loop(reader, writer.clone(), tx));
    Ok(ServerSide {
        writer,
        replies,
        connected_at,
    })
}

async fn read_loop<R: tokio::io::AsyncRead + Unpin>(
    mut reader: StanzaReader<R>,
    writer: Arc<Mutex<OwnedWriteHalf>>,
    tx: mpsc::UnboundedSender<Reply>,
) {
    // Ends when the stream ends or fails, or when nobody listens any more.
    while let Ok(item) = reader.next().await {
        let StreamItem::Stanza(el) = item else {
            continue;
        };
        let at = Instant::now();
        if el.name != "iq" {
            continue;
        }
        let kind = el.get_attr("type").unwrap_or_default();
        if kind == "get" || kind == "set" {
            // Nudge's ping (or any request): answer it, as a server does.
            let answer = format!(
                "<iq type='result' id='{}' from='{}' to='{}'/>",
                xml_escape(el.get_attr("id").unwrap_or_default()),
                xml_escape(el.get_attr("to").unwrap_or_default()),
                xml_escape(el.get_attr("from").unwrap_or_default()),
            );
            if writer
                .lock()
                .await
                .write_all(answer.as_bytes())
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let Some(index) = el
            .get_attr("id")
            .and_then(|id| id.strip_prefix('p'))
            .and_then(|i| i.parse().ok())
        else {
            continue;
        };
        let answer = if kind == "result" {
            Answer::Result
        } else {
            Answer::Error(error_condition(&el))
        };
        if tx.send(Reply { index, answer, at }).is_err() {
            return;
        }
    }
}

/// The defined condition of an error stanza (`item-not-found`, …).
fn error_condition(el: &Element) -> String {
    el.children
        .iter()
        .find(|c| c.name == "error")
        .and_then(|e| {
            e.children
                .iter()
                .find(|c| c.ns == "urn:ietf:params:xml:ns:xmpp-stanzas")
        })
        .map(|c| c.name.to_string())
        .unwrap_or_else(|| "undefined-condition".into())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// A publish as Prosody sends it (an important message, ~1 KB), with id
/// `p<index>` and `message-count` `count` (which the APNs payload carries
/// as `unread-messages`, so that a push can be matched to the publish it
/// carries).
pub fn publish(index: usize, node: &str, secret: &str, count: u32) -> String {
    format!(
        "<iq id='p{index}' to='{DOMAIN}' from='{}' type='set'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'><x type='form' xmlns='jabber:x:data'><field type='hidden' var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field type='text-single' var='message-count'><value>{count}</value></field><field type='text-single' var='pending-subscription-count'/><field type='jid-single' var='last-message-sender'/><field type='text-single' var='last-message-body'><value>New Message!</value></field></x></notification></item></publish><publish-options><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>{secret}</value></field></x></publish-options></pubsub></iq>",
        crate::seed::ACCOUNT_DOMAIN
    )
}
