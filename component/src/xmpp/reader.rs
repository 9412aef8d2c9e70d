//! The streaming reader of the component stream: bytes in, one [`Element`]
//! per stanza out.
//!
//! quick-xml parses the socket incrementally, so a stanza costs one pass and
//! no DOM library. Between the socket and quick-xml sits the filter of
//! [`super::limits`], which drops what is beyond the per-stanza limits while
//! reading (long text, deep nesting, too many elements) and refuses
//! restricted XML as soon as it starts. This module builds the elements,
//! caps each element's text, and reports a stanza the filter marked as
//! oversize as [`StreamItem::Oversize`]: it is still answered, never a
//! reason to close the stream.
//!
//! The stream is closed only for what leaves no other answer (RFC 6120
//! §4.9.3, XEP-0114): not well-formed XML and XMPP's restricted XML (RFC
//! 6120 §11.1: no DOCTYPE, no processing instructions, no comments, no
//! entities other than the five predefined ones and character references).

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use tokio::io::{AsyncRead, BufReader};

use super::element::{Element, Name, intern};
use super::limits::{self, BytesRead, CappedInput, InputError, MAX_TEXT};

/// What went wrong with the incoming stream. Each maps to a stream error
/// condition (RFC 6120 §4.9.3) the component sends before closing.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the stream")]
    Closed,
    #[error("restricted XML: {0}")]
    Restricted(&'static str),
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
}

impl ReadError {
    /// The stream error condition to send for this error, if any is owed.
    pub fn stream_condition(&self) -> Option<&'static str> {
        match self {
            ReadError::Io(_) | ReadError::Closed => None,
            ReadError::Restricted(_) => Some("restricted-xml"),
            ReadError::NotWellFormed(_) => Some("not-well-formed"),
        }
    }
}

impl From<InputError> for ReadError {
    fn from(e: InputError) -> Self {
        match e {
            InputError::Restricted(what) => ReadError::Restricted(what),
            InputError::NotWellFormed(what) => ReadError::NotWellFormed(what.into()),
        }
    }
}

/// One thing read from the stream.
#[derive(Debug)]
pub enum StreamItem {
    /// The server's `<stream:stream>` header; its attributes (`id`, `from`).
    Header(Vec<(Name, String)>),
    /// A complete top-level element (a stanza, `<handshake/>`, `<stream:error>`).
    Stanza(Element),
    /// A stanza over the hard cap (`max_stanza_size`): its skeleton, with
    /// text beyond the cap cut to a few hundred bytes per text node.
    Oversize(Element),
    /// Whitespace between stanzas (the server's keepalive).
    Keepalive,
}

/// Size of the buffered reader between the filter and the parser.
const READ_BUF: usize = 16 * 1024;
/// Capacity the event buffer is shrunk back to after a large event.
const EVENT_BUF: usize = 4 * 1024;

/// Reads the server's side of a component stream.
pub struct StanzaReader<R> {
    xml: NsReader<BufReader<CappedInput<R>>>,
    buf: Vec<u8>,
    /// Elements open inside the current stanza (index 0 = the stanza).
    stack: Vec<Element>,
    /// The filter marked the current stanza as oversize.
    oversize: bool,
    header_seen: bool,
    bytes_read: BytesRead,
}

impl<R: AsyncRead + Unpin> StanzaReader<R> {
    /// Reads `inner`; stanzas over `max_stanza` raw bytes come as
    /// [`StreamItem::Oversize`].
    pub fn new(inner: R, max_stanza: usize) -> Self {
        let input = CappedInput::new(inner, max_stanza);
        let bytes_read = input.bytes_read();
        let mut xml = NsReader::from_reader(BufReader::with_capacity(READ_BUF, input));
        let config = xml.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.expand_empty_elements = false;
        config.trim_text_start = false;
        config.trim_text_end = false;
        StanzaReader {
            xml,
            buf: Vec::with_capacity(EVENT_BUF),
            stack: Vec::new(),
            oversize: false,
            header_seen: false,
            bytes_read,
        }
    }

    /// The count of bytes read from the socket (for the link's watchdog).
    pub fn bytes_read(&self) -> BytesRead {
        self.bytes_read.clone()
    }

    /// Capacity of the buffers this reader owns (for tests that check
    /// memory stays bounded).
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity() + READ_BUF + self.xml.get_ref().get_ref().buffered_capacity()
    }

    /// Reads the next header, stanza or keepalive.
    pub async fn next(&mut self) -> Result<StreamItem, ReadError> {
        loop {
            if self.buf.capacity() > 4 * EVENT_BUF {
                self.buf = Vec::with_capacity(EVENT_BUF);
            }
            self.buf.clear();
            let event = match self.xml.read_resolved_event_into_async(&mut self.buf).await {
                Ok(ev) => ev,
                Err(quick_xml::Error::Io(io)) => {
                    return Err(match limits::input_error(&io) {
                        Some(e) => e.clone().into(),
                        None => ReadError::Io(std::io::Error::new(io.kind(), io.to_string())),
                    });
                }
                Err(other) => return Err(ReadError::NotWellFormed(other.to_string())),
            };
            let (ns, event) = event;
            let ns = match ns {
                ResolveResult::Bound(n) => intern(n.as_ref()),
                ResolveResult::Unbound => Name::Borrowed(""),
                // An undeclared prefix: either the declaration was among the
                // attributes the filter dropped (a start tag over MAX_TAG),
                // or the server forwarded it (their parsers refuse it).
                // Neither is worth closing the stream: no namespace.
                ResolveResult::Unknown(_) => Name::Borrowed(""),
            };
            match event {
                Event::Decl(_) if !self.header_seen => continue,
                Event::PI(pi)
                    if !self.stack.is_empty() && pi.target() == limits::OVERSIZE_TARGET =>
                {
                    self.oversize = true;
                }
                Event::Decl(_) | Event::PI(_) => {
                    return Err(ReadError::Restricted("processing instruction"));
                }
                Event::DocType(_) => return Err(ReadError::Restricted("DOCTYPE")),
                Event::Comment(_) => return Err(ReadError::Restricted("comment")),
                Event::Eof => return Err(ReadError::Closed),
                Event::Start(start) if !self.header_seen => {
                    let el = element_from_start(&start, ns)?;
                    if !el.is("stream", super::ns::STREAM) {
                        return Err(ReadError::NotWellFormed(format!(
                            "expected stream header, got <{}>",
                            el.name
                        )));
                    }
                    self.header_seen = true;
                    return Ok(StreamItem::Header(el.attrs));
                }
                Event::Start(start) => {
                    let el = element_from_start(&start, ns)?;
                    self.stack.push(el);
                }
                Event::Empty(start) => {
                    if !self.header_seen {
                        return Err(ReadError::NotWellFormed("expected stream header".into()));
                    }
                    let el = element_from_start(&start, ns)?;
                    if let Some(done) = self.close(el) {
                        return Ok(done);
                    }
                }
                Event::End(_) => match self.stack.pop() {
                    Some(el) => {
                        if let Some(done) = self.close(el) {
                            return Ok(done);
                        }
                    }
                    // `</stream:stream>`: the server ends the stream.
                    None => return Err(ReadError::Closed),
                },
                Event::Text(t) => {
                    let text = t.xml10_content();
                    match self.stack.last_mut() {
                        Some(el) => push_capped(&mut el.text, &text),
                        None if text.trim().is_empty() => return Ok(StreamItem::Keepalive),
                        None => {
                            return Err(ReadError::NotWellFormed(
                                "text outside of a stanza".into(),
                            ));
                        }
                    }
                }
                Event::CData(t) => match self.stack.last_mut() {
                    Some(el) => push_capped(&mut el.text, &t.xml10_content()),
                    None => {
                        return Err(ReadError::NotWellFormed("CDATA outside of a stanza".into()));
                    }
                },
                Event::GeneralRef(r) => {
                    let c = resolve_reference(&r)?;
                    match self.stack.last_mut() {
                        Some(el) => push_capped(&mut el.text, c.encode_utf8(&mut [0; 4])),
                        None => {
                            return Err(ReadError::NotWellFormed(
                                "reference outside of a stanza".into(),
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Attaches a finished element to its parent, or returns it when it was
    /// a whole stanza.
    fn close(&mut self, el: Element) -> Option<StreamItem> {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.children.push(el);
                None
            }
            None if std::mem::take(&mut self.oversize) => Some(StreamItem::Oversize(el)),
            None => Some(StreamItem::Stanza(el)),
        }
    }
}

/// Appends text to an element's, keeping at most [`MAX_TEXT`] bytes (an
/// element's text may come in many pieces, between child elements).
fn push_capped(text: &mut String, more: &str) {
    let room = MAX_TEXT.saturating_sub(text.len());
    if more.len() <= room {
        text.push_str(more);
    } else {
        let mut end = room;
        while !more.is_char_boundary(end) {
            end -= 1;
        }
        text.push_str(&more[..end]);
    }
}

/// The five predefined entities and character references; anything else is
/// an entity XMPP forbids (there is no DTD to declare it).
fn resolve_reference(r: &quick_xml::events::BytesRef<'_>) -> Result<char, ReadError> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) => Ok(c),
            _ => Err(ReadError::NotWellFormed(
                "invalid character reference".into(),
            )),
        };
    }
    match &**r {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        _ => Err(ReadError::Restricted("undeclared entity")),
    }
}

fn element_from_start(start: &BytesStart<'_>, ns: Name) -> Result<Element, ReadError> {
    let name = intern(start.local_name().as_ref());
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| ReadError::NotWellFormed(e.to_string()))?;
        let key = attr.key.as_ref();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| match e {
                quick_xml::Error::Escape(_) => ReadError::Restricted("undeclared entity"),
                other => ReadError::NotWellFormed(other.to_string()),
            })?;
        attrs.push((intern(key), value.into_owned()));
    }
    Ok(Element {
        name,
        ns,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn items(input: &str, max: usize) -> Vec<Result<StreamItem, ReadError>> {
        let mut r = StanzaReader::new(input.as_bytes(), max);
        let mut out = Vec::new();
        loop {
            let item = r.next().await;
            let stop = item.is_err();
            out.push(item);
            if stop {
                return out;
            }
        }
    }

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='1'>";

    #[tokio::test]
    async fn reads_header_stanzas_and_keepalives() {
        let input = format!(
            "{HEADER} <iq id='a'><q xmlns='x'>t&amp;&#65;</q></iq>  <handshake/></stream:stream>"
        );
        let got = items(&input, 4096).await;
        assert!(matches!(got[0], Ok(StreamItem::Header(_))), "{got:?}");
        assert!(matches!(got[1], Ok(StreamItem::Keepalive)), "{got:?}");
        match &got[2] {
            Ok(StreamItem::Stanza(el)) => {
                assert!(el.is("iq", crate::xmpp::ns::COMPONENT));
                assert_eq!(el.children[0].ns, "x");
                assert_eq!(el.children[0].text, "t&A");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(got[3], Ok(StreamItem::Keepalive)), "{got:?}");
        assert!(matches!(got[4], Ok(StreamItem::Stanza(_))), "{got:?}");
        assert!(matches!(got[5], Err(ReadError::Closed)), "{got:?}");
    }

    /// Heap bytes allocated and not yet freed by this thread, and the
    /// peak since the last reset: the tests run the reader on their own
    /// thread (tokio's current-thread runtime), so this measures what
    /// reading one stanza costs.
    mod heap {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static LIVE: Cell<isize> = const { Cell::new(0) };
            static PEAK: Cell<isize> = const { Cell::new(0) };
        }

        pub struct Counting;

        fn add(n: isize) {
            let _ = LIVE.try_with(|live| {
                live.set(live.get() + n);
                let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
            });
        }

        // SAFETY: delegates to the system allocator; only counts.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                add(layout.size() as isize);
                // SAFETY: same contract as ours.
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                add(-(layout.size() as isize));
                // SAFETY: same contract as ours.
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        #[global_allocator]
        static COUNTING: Counting = Counting;

        /// Starts a measurement; returns the baseline.
        pub fn reset() -> isize {
            let live = LIVE.with(Cell::get);
            PEAK.with(|p| p.set(live));
            live
        }

        /// Peak growth over the baseline since [`reset`].
        pub fn peak_over(baseline: isize) -> isize {
            PEAK.with(Cell::get) - baseline
        }
    }

    /// Input made of pieces repeated many times, handed out in small
    /// reads, so that a 10 MB stanza costs the test no 10 MB buffer.
    struct Pieces {
        pieces: std::collections::VecDeque<(Vec<u8>, usize)>,
        pos: usize,
        chunk: usize,
    }

    impl Pieces {
        fn new(chunk: usize, pieces: &[(&[u8], usize)]) -> Pieces {
            Pieces {
                pieces: pieces.iter().map(|(p, n)| (p.to_vec(), *n)).collect(),
                pos: 0,
                chunk,
            }
        }
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let chunk = self.chunk.min(buf.remaining());
            let this = &mut *self;
            while let Some((piece, n)) = this.pieces.front_mut() {
                if *n == 0 {
                    this.pieces.pop_front();
                    continue;
                }
                let take = (piece.len() - this.pos).min(chunk);
                buf.put_slice(&piece[this.pos..this.pos + take]);
                this.pos += take;
                if this.pos == piece.len() {
                    this.pos = 0;
                    *n -= 1;
                }
                break;
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    const PING: &[u8] = b"<iq id='after' type='get'><ping xmlns='urn:xmpp:ping'/></iq>";

    /// Reads a stream of: header, `prefix`, `repeated` × `times`, `suffix`,
    /// a ping; returns the big stanza and the peak heap growth, checking
    /// that the ping after it is read too and the buffers stayed small.
    async fn read_big(
        prefix: &str,
        repeated: &str,
        times: usize,
        suffix: &str,
    ) -> (StreamItem, isize) {
        let input = Pieces::new(
            1000,
            &[
                (HEADER.as_bytes(), 1),
                (prefix.as_bytes(), 1),
                (repeated.as_bytes(), times),
                (suffix.as_bytes(), 1),
                (PING, 1),
            ],
        );
        let baseline = heap::reset();
        let mut r = StanzaReader::new(input, limits::DEFAULT_MAX_STANZA);
        assert!(matches!(r.next().await, Ok(StreamItem::Header(_))));
        let big = r.next().await.expect("the big stanza");
        let peak = heap::peak_over(baseline);
        eprintln!(
            "peak heap growth {peak} bytes for {prefix}… ({} bytes × {times})",
            repeated.len()
        );
        assert!(
            r.buffered_capacity() < 64 * 1024,
            "{}",
            r.buffered_capacity()
        );
        match r.next().await {
            Ok(StreamItem::Stanza(el)) => assert_eq!(el.get_attr("id"), Some("after")),
            other => panic!("the stanza after the big one: {other:?}"),
        }
        (big, peak)
    }

    /// Peak heap growth allowed while reading any one stanza: the limits
    /// of `limits.rs` bound it, whatever the input.
    const MAX_HEAP: isize = 1024 * 1024;

    #[tokio::test]
    async fn a_10_mb_text_node_costs_a_bounded_amount_of_memory() {
        let (big, peak) = read_big(
            "<message><body>",
            &"y".repeat(1000),
            10_000,
            "</body></message>",
        )
        .await;
        assert!(peak < MAX_HEAP, "peak heap growth {peak}");
        match big {
            StreamItem::Oversize(el) => {
                assert_eq!(el.children[0].text.len(), MAX_TEXT);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_10_mb_attribute_value_costs_a_bounded_amount_of_memory() {
        let (big, peak) = read_big("<message id='", &"v".repeat(1000), 10_000, "'/>").await;
        assert!(peak < MAX_HEAP, "peak heap growth {peak}");
        match big {
            StreamItem::Oversize(el) => {
                assert_eq!(
                    el.get_attr("id").map(str::len),
                    Some(limits::MAX_ATTR_VALUE)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn millions_of_tiny_elements_cost_a_bounded_amount_of_memory() {
        let (big, peak) = read_big("<message>", "<a/>", 2_500_000, "</message>").await;
        assert!(peak < MAX_HEAP, "peak heap growth {peak}");
        match big {
            StreamItem::Oversize(el) => {
                assert_eq!(el.children.len(), limits::MAX_ELEMENTS - 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn deep_nesting_is_read_to_its_end_without_keeping_it() {
        // 1 million levels (7 MB): the stanza is found whole, the stream
        // goes on, and only MAX_DEPTH levels were kept.
        let input = Pieces::new(
            1000,
            &[
                (HEADER.as_bytes(), 1),
                (b"<message>", 1),
                (b"<a>", 1_000_000),
                (b"</a>", 1_000_000),
                (b"</message>", 1),
                (PING, 1),
            ],
        );
        let baseline = heap::reset();
        let mut r = StanzaReader::new(input, limits::DEFAULT_MAX_STANZA);
        assert!(matches!(r.next().await, Ok(StreamItem::Header(_))));
        let big = r.next().await.expect("the deep stanza");
        let peak = heap::peak_over(baseline);
        assert!(peak < MAX_HEAP, "peak heap growth {peak}");
        let StreamItem::Oversize(mut el) = big else {
            panic!("{big:?}");
        };
        let mut levels = 1;
        while let Some(child) = el.children.pop() {
            levels += 1;
            el = child;
        }
        assert_eq!(levels, limits::MAX_DEPTH);
        assert!(matches!(r.next().await, Ok(StreamItem::Stanza(_))));
    }

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .replace("{NODE}", "node1")
            .replace("{SECRET}", "secret1")
    }

    /// A publish as Prosody delivered it, with the body replaced.
    fn big_publish(escaped_body: &str) -> String {
        let publish = fixture("prosody-publish-body-sender.xml");
        let old = "Secret plans &lt;&amp;&gt; &apos;quoted&apos;";
        assert!(publish.contains(old));
        publish.replace(old, escaped_body)
    }

    async fn read_publish(xml: &str) -> crate::push::PublishRequest {
        let got = items(&format!("{HEADER}{xml}"), limits::DEFAULT_MAX_STANZA).await;
        let Ok(StreamItem::Stanza(el)) = &got[1] else {
            panic!("{got:?}");
        };
        let iq = crate::xmpp::stanza::Iq::from_element(el.clone())
            .expect("an iq")
            .expect("a valid iq");
        crate::push::PublishRequest::from_pubsub(iq.payload.as_ref().expect("payload"))
            .expect("a publish")
            .expect("a valid publish")
    }

    #[tokio::test]
    async fn a_70_kb_body_is_cut_and_the_rest_of_the_publish_kept() {
        let publish = read_publish(&big_publish(&"a".repeat(70 * 1024))).await;
        assert_eq!(publish.node, "node1");
        assert_eq!(publish.secret.as_deref(), Some("secret1"));
        let body = publish.notification.last_message_body.expect("body");
        assert_eq!(body, "a".repeat(MAX_TEXT));
        assert_eq!(
            publish.notification.last_message_sender.as_deref(),
            Some("bob@localhost/phone")
        );
    }

    #[tokio::test]
    async fn a_17_kb_body_of_escaped_lt_is_cut_between_references() {
        // 17 KB of '<' arrive as 68 KB of "&lt;".
        let publish = read_publish(&big_publish(&"&lt;".repeat(17 * 1024))).await;
        assert_eq!(publish.secret.as_deref(), Some("secret1"));
        let body = publish.notification.last_message_body.expect("body");
        assert_eq!(body, "<".repeat(MAX_TEXT / 4));
    }

    #[tokio::test]
    async fn an_oversize_publish_keeps_its_node_and_secret() {
        let xml = big_publish(&"&apos;".repeat(1024 * 1024));
        let got = items(
            &format!("{HEADER}{xml}{}", String::from_utf8_lossy(PING)),
            1 << 20,
        )
        .await;
        let Ok(StreamItem::Oversize(el)) = &got[1] else {
            panic!("{got:?}");
        };
        let iq = crate::xmpp::stanza::Iq::from_element(el.clone())
            .unwrap()
            .unwrap();
        let publish = crate::push::PublishRequest::from_pubsub(iq.payload.as_ref().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(publish.node, "node1");
        assert_eq!(publish.secret.as_deref(), Some("secret1"));
        assert!(matches!(got[2], Ok(StreamItem::Stanza(_))), "{got:?}");
    }

    #[tokio::test]
    async fn a_namespace_declaration_dropped_with_a_long_tag_does_not_break_the_stream() {
        let attrs: String = (0..2000).map(|i| format!(" a{i}='v'")).collect();
        let input = format!(
            "{HEADER}<message><x{attrs} xmlns:p='urn:p'><p:y/></x></message>{}",
            String::from_utf8_lossy(PING)
        );
        let got = items(&input, limits::DEFAULT_MAX_STANZA).await;
        assert!(matches!(got[1], Ok(StreamItem::Stanza(_))), "{:?}", got[1]);
        match &got[2] {
            Ok(StreamItem::Stanza(el)) => assert_eq!(el.get_attr("id"), Some("after")),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn restricted_xml_and_bad_xml_are_errors() {
        for (bad, condition) in [
            ("<!-- c -->", "restricted-xml"),
            ("<?pi x?>", "restricted-xml"),
            ("<m>&lol;</m>", "restricted-xml"),
            ("<m></n>", "not-well-formed"),
        ] {
            let got = items(&format!("{HEADER}{bad}"), 4096).await;
            let last = got.last().unwrap();
            assert_eq!(
                last.as_ref().err().and_then(ReadError::stream_condition),
                Some(condition),
                "{bad}: {got:?}"
            );
        }
    }
}
