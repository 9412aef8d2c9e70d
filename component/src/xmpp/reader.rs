//! The streaming reader of the component stream: bytes in, one [`Element`]
//! per stanza out.
//!
//! quick-xml parses the socket incrementally, so a stanza costs one pass and
//! no DOM library. This module also owns the stream's defences against
//! hostile input, because they only work at this level:
//! - a per-stanza size cap, enforced on the bytes read from the socket
//!   (so a single gigantic text node is refused before it is buffered),
//! - a nesting depth cap (deep trees would make recursive code overflow),
//! - XMPP's restricted XML (RFC 6120 §11.1): no DOCTYPE, no processing
//!   instructions, no comments, no entities other than the five predefined
//!   ones and character references.

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, Take};

use super::element::{Element, Name, intern};

/// Deepest element nesting accepted inside a stanza. Real stanzas are under
/// 10 levels deep.
pub const MAX_DEPTH: usize = 64;

/// What went wrong with the incoming stream. Each maps to a stream error
/// condition (RFC 6120 §4.9.3) the component sends before closing.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the stream")]
    Closed,
    #[error("stanza larger than {limit} bytes")]
    TooLarge { limit: usize },
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
            ReadError::TooLarge { .. } => Some("policy-violation"),
            ReadError::Restricted(_) => Some("restricted-xml"),
            ReadError::NotWellFormed(_) => Some("not-well-formed"),
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
    /// Whitespace between stanzas (the server's keepalive).
    Keepalive,
}

/// Size of the buffered reader between the socket and the parser. The byte
/// budget allows one buffer beyond the stanza cap, because read-ahead of
/// the next stanza is counted against the current one.
const READ_BUF: usize = 16 * 1024;

/// Reads the server's side of a component stream.
pub struct StanzaReader<R> {
    /// The `Take` bounds the bytes read from the socket for the current
    /// stanza; it reads as end-of-file when the budget is spent.
    xml: NsReader<BufReader<Take<R>>>,
    buf: Vec<u8>,
    max_stanza: usize,
    /// Elements open inside the current stanza (index 0 = the stanza).
    stack: Vec<Element>,
    /// Byte offset where the current stanza started.
    stanza_start: u64,
    header_seen: bool,
}

impl<R: AsyncRead + Unpin> StanzaReader<R> {
    pub fn new(inner: R, max_stanza: usize) -> Self {
        let capped = inner.take((max_stanza + READ_BUF) as u64);
        let mut xml = NsReader::from_reader(BufReader::with_capacity(READ_BUF, capped));
        let config = xml.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.expand_empty_elements = false;
        config.trim_text_start = false;
        config.trim_text_end = false;
        StanzaReader {
            xml,
            buf: Vec::with_capacity(1024),
            max_stanza,
            stack: Vec::new(),
            stanza_start: 0,
            header_seen: false,
        }
    }

    fn reset_budget(&mut self) {
        let limit = (self.max_stanza + READ_BUF) as u64;
        self.xml.get_mut().get_mut().set_limit(limit);
    }

    fn budget_spent(&self) -> bool {
        self.xml.get_ref().get_ref().limit() == 0
    }

    /// Reads the next header, stanza or keepalive.
    pub async fn next(&mut self) -> Result<StreamItem, ReadError> {
        loop {
            if self.stack.is_empty() {
                // Between stanzas: the next one gets the whole budget.
                self.reset_budget();
                self.stanza_start = self.xml.buffer_position();
            }
            self.buf.clear();
            let event = match self.xml.read_resolved_event_into_async(&mut self.buf).await {
                Ok(ev) => ev,
                Err(e) => {
                    return Err(if self.budget_spent() {
                        ReadError::TooLarge {
                            limit: self.max_stanza,
                        }
                    } else {
                        match e {
                            quick_xml::Error::Io(io) => {
                                ReadError::Io(std::io::Error::new(io.kind(), io.to_string()))
                            }
                            other => ReadError::NotWellFormed(other.to_string()),
                        }
                    });
                }
            };
            let (ns, event) = event;
            let ns = match ns {
                ResolveResult::Bound(n) => intern(n.as_ref()),
                ResolveResult::Unbound => Name::Borrowed(""),
                ResolveResult::Unknown(p) => {
                    return Err(ReadError::NotWellFormed(format!("unbound prefix {p}")));
                }
            };
            if !self.stack.is_empty()
                && self.xml.buffer_position() - self.stanza_start > self.max_stanza as u64
            {
                return Err(ReadError::TooLarge {
                    limit: self.max_stanza,
                });
            }
            match event {
                Event::Decl(_) if !self.header_seen => continue,
                Event::Decl(_) | Event::PI(_) => {
                    return Err(ReadError::Restricted("processing instruction"));
                }
                Event::DocType(_) => return Err(ReadError::Restricted("DOCTYPE")),
                Event::Comment(_) => return Err(ReadError::Restricted("comment")),
                Event::Eof if self.xml.get_ref().get_ref().limit() == 0 => {
                    return Err(ReadError::TooLarge {
                        limit: self.max_stanza,
                    });
                }
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
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(ReadError::Restricted("elements nested too deep"));
                    }
                    let el = element_from_start(&start, ns)?;
                    self.stack.push(el);
                }
                Event::Empty(start) => {
                    if !self.header_seen {
                        return Err(ReadError::NotWellFormed("expected stream header".into()));
                    }
                    let el = element_from_start(&start, ns)?;
                    if let Some(done) = self.close(el) {
                        return Ok(StreamItem::Stanza(done));
                    }
                }
                Event::End(_) => match self.stack.pop() {
                    Some(el) => {
                        if let Some(done) = self.close(el) {
                            return Ok(StreamItem::Stanza(done));
                        }
                    }
                    // `</stream:stream>`: the server ends the stream.
                    None => return Err(ReadError::Closed),
                },
                Event::Text(t) => {
                    let text = t.xml10_content();
                    match self.stack.last_mut() {
                        Some(el) => el.text.push_str(&text),
                        None if text.trim().is_empty() => return Ok(StreamItem::Keepalive),
                        None => {
                            return Err(ReadError::NotWellFormed(
                                "text outside of a stanza".into(),
                            ));
                        }
                    }
                }
                Event::CData(t) => match self.stack.last_mut() {
                    Some(el) => el.text.push_str(&t.xml10_content()),
                    None => {
                        return Err(ReadError::NotWellFormed("CDATA outside of a stanza".into()));
                    }
                },
                Event::GeneralRef(r) => {
                    let c = resolve_reference(&r)?;
                    match self.stack.last_mut() {
                        Some(el) => el.text.push(c),
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
    fn close(&mut self, el: Element) -> Option<Element> {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.children.push(el);
                None
            }
            None => Some(el),
        }
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

    #[tokio::test]
    async fn size_cap_counts_each_stanza_separately() {
        let stanza = format!("<message><body>{}</body></message>", "x".repeat(3000));
        let input = format!("{HEADER}{}", stanza.repeat(20));
        let got = items(&input, 4096).await;
        assert_eq!(
            got.iter()
                .filter(|i| matches!(i, Ok(StreamItem::Stanza(_))))
                .count(),
            20
        );
        let input = format!(
            "{HEADER}<message><body>{}</body></message>",
            "x".repeat(5000)
        );
        let got = items(&input, 4096).await;
        assert!(
            matches!(got.last(), Some(Err(ReadError::TooLarge { .. }))),
            "{got:?}"
        );
    }
}
