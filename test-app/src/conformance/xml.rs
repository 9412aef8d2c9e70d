//! The XML both conformance modes speak: an XMPP stream read into small
//! owned elements, and elements written back out.
//!
//! The kit judges other implementations, so it does not borrow Nudge's own
//! stream code (`component/src/xmpp/`): a bug shared by the judge and the
//! judged would pass unseen. It is deliberately plain: quick-xml's
//! namespace-resolving reader, one element tree per top-level child of the
//! stream, a size cap per stanza, and no mixed content (an element keeps
//! its direct text as one string, which is all XMPP's push protocols use).

use std::fmt::Write as _;

use quick_xml::NsReader;
use quick_xml::escape::escape;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, BufReader};

/// The namespaces both modes use.
pub mod ns {
    /// The stream element's own (`stream:` prefix).
    pub const STREAM: &str = "http://etherx.jabber.org/streams";
    /// Client-to-server streams (RFC 6120).
    pub const CLIENT: &str = "jabber:client";
    /// XEP-0114 component streams.
    pub const COMPONENT: &str = "jabber:component:accept";
    /// Stream error conditions (RFC 6120 §4.9.3).
    pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
    /// Stanza error conditions (RFC 6120 §8.3.3).
    pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    /// STARTTLS (RFC 6120 §5).
    pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
    /// SASL (RFC 6120 §6).
    pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
    /// Resource binding (RFC 6120 §7).
    pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
    /// The legacy session establishment (RFC 3921 §3).
    pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
    /// XEP-0198 stream management.
    pub const SM: &str = "urn:xmpp:sm:3";
    /// XEP-0357 push notifications.
    pub const PUSH: &str = "urn:xmpp:push:0";
    /// XEP-0060 publish-subscribe.
    pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
    /// XEP-0004 data forms.
    pub const DATA_FORMS: &str = "jabber:x:data";
    /// XEP-0030 service discovery, info.
    pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    /// XEP-0030 service discovery, items.
    pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
    /// XEP-0050 ad-hoc commands.
    pub const COMMANDS: &str = "http://jabber.org/protocol/commands";
    /// XEP-0199 ping.
    pub const PING: &str = "urn:xmpp:ping";
    /// XEP-0085 chat state notifications.
    pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
    /// XEP-0092 software version.
    pub const VERSION: &str = "jabber:iq:version";
}

/// The type of a stanza error (RFC 6120 §8.3.2): what the requester should
/// do about it, and what decides how a server treats an App Server's answer
/// (docs/answers.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// Retry after waiting: transient.
    Wait,
    /// Do not retry.
    Cancel,
    /// Retry with other credentials.
    Auth,
    /// Retry with other data.
    Modify,
    /// Proceed (a warning).
    Continue,
}

impl ErrorType {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Wait => "wait",
            ErrorType::Cancel => "cancel",
            ErrorType::Auth => "auth",
            ErrorType::Modify => "modify",
            ErrorType::Continue => "continue",
        }
    }
}

impl TryFrom<&str> for ErrorType {
    type Error = String;

    /// The type named by an `<error type='…'>`; the unknown name back.
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        match s {
            "wait" => Ok(ErrorType::Wait),
            "cancel" => Ok(ErrorType::Cancel),
            "auth" => Ok(ErrorType::Auth),
            "modify" => Ok(ErrorType::Modify),
            "continue" => Ok(ErrorType::Continue),
            other => Err(other.to_owned()),
        }
    }
}

/// A stanza error's defined condition (RFC 6120 §8.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // each is RFC 6120's condition of the same name
pub enum Condition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    Gone,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    Redirect,
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    SubscriptionRequired,
    UndefinedCondition,
    UnexpectedRequest,
}

/// Every condition with its element name: one table for both directions.
const CONDITIONS: [(Condition, &str); 22] = [
    (Condition::BadRequest, "bad-request"),
    (Condition::Conflict, "conflict"),
    (Condition::FeatureNotImplemented, "feature-not-implemented"),
    (Condition::Forbidden, "forbidden"),
    (Condition::Gone, "gone"),
    (Condition::InternalServerError, "internal-server-error"),
    (Condition::ItemNotFound, "item-not-found"),
    (Condition::JidMalformed, "jid-malformed"),
    (Condition::NotAcceptable, "not-acceptable"),
    (Condition::NotAllowed, "not-allowed"),
    (Condition::NotAuthorized, "not-authorized"),
    (Condition::PolicyViolation, "policy-violation"),
    (Condition::RecipientUnavailable, "recipient-unavailable"),
    (Condition::Redirect, "redirect"),
    (Condition::RegistrationRequired, "registration-required"),
    (Condition::RemoteServerNotFound, "remote-server-not-found"),
    (Condition::RemoteServerTimeout, "remote-server-timeout"),
    (Condition::ResourceConstraint, "resource-constraint"),
    (Condition::ServiceUnavailable, "service-unavailable"),
    (Condition::SubscriptionRequired, "subscription-required"),
    (Condition::UndefinedCondition, "undefined-condition"),
    (Condition::UnexpectedRequest, "unexpected-request"),
];

impl Condition {
    /// The element name.
    pub fn as_str(self) -> &'static str {
        CONDITIONS
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("undefined-condition", |(_, name)| name)
    }
}

impl TryFrom<&str> for Condition {
    type Error = String;

    /// The condition an element name stands for; an unknown name back.
    fn try_from(name: &str) -> Result<Self, Self::Error> {
        CONDITIONS
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(c, _)| *c)
            .ok_or_else(|| name.to_owned())
    }
}

/// An iq answering `iq` with `type='{kind}'`: its id, addressed back (`from`
/// its `to`, `to` its `from`), in the stream's namespace.
pub fn iq_reply(iq: &Element, stream_ns: &str, kind: &str) -> Element {
    let mut reply = Element::new("iq", stream_ns)
        .with_attr("type", kind)
        .with_attr("id", iq.attr("id").unwrap_or_default());
    if let Some(to) = iq.attr("to") {
        reply.set_attr("from", to);
    }
    if let Some(from) = iq.attr("from") {
        reply.set_attr("to", from);
    }
    reply
}

/// An `<error type='…'><condition/></error>` child for a stanza.
pub fn stanza_error(stream_ns: &str, kind: ErrorType, condition: Condition) -> Element {
    Element::new("error", stream_ns)
        .with_attr("type", kind.as_str())
        .with_child(Element::new(condition.as_str(), ns::STANZAS))
}

/// The answer to a request nobody serves specially (RFC 6120 §8.4): a
/// result to a ping, `cancel`/`service-unavailable` to anything else.
pub fn default_reply(iq: &Element, stream_ns: &str) -> Element {
    if iq.attr("type") == Some("get") && iq.child("ping", ns::PING).is_some() {
        iq_reply(iq, stream_ns, "result")
    } else {
        iq_reply(iq, stream_ns, "error").with_child(stanza_error(
            stream_ns,
            ErrorType::Cancel,
            Condition::ServiceUnavailable,
        ))
    }
}

/// The defined condition of a `<stream:error/>` or a stanza `<error/>`
/// (`undefined-condition` when it names none).
pub fn error_condition(error: &Element) -> String {
    error
        .children
        .iter()
        .find(|c| (c.ns == ns::STREAM_ERRORS || c.ns == ns::STANZAS) && c.name != "text")
        .map_or_else(|| "undefined-condition".into(), |c| c.name.clone())
}

/// What went wrong reading or parsing XML.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// The transport failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection or ended the stream.
    #[error("the peer closed the stream")]
    Closed,
    /// The input is not XML, or not XML XMPP allows.
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// One stanza was larger than the reader's cap.
    #[error("a stanza exceeded {limit} bytes")]
    TooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// Nothing arrived in time (for callers that map their timeouts here).
    #[error("timed out")]
    Timeout,
}

/// An owned element. No mixed content: `text` is the concatenation of the
/// element's direct text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// Local name.
    pub name: String,
    /// Namespace ("" when none is in scope).
    pub ns: String,
    /// Attributes in document order, qualified names as written (namespace
    /// declarations left out).
    pub attrs: Vec<(String, String)>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// Direct text, unescaped.
    pub text: String,
}

impl Element {
    /// An empty element.
    pub fn new(name: &str, ns: &str) -> Element {
        Element {
            name: name.to_owned(),
            ns: ns.to_owned(),
            attrs: Vec::new(),
            children: Vec::new(),
            text: String::new(),
        }
    }

    /// Adds (or replaces) an attribute; a builder.
    pub fn with_attr(mut self, key: &str, value: impl Into<String>) -> Element {
        self.set_attr(key, value);
        self
    }

    /// Appends a child; a builder.
    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(child);
        self
    }

    /// Sets the text; a builder.
    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.text = text.into();
        self
    }

    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets an attribute, replacing an existing one of that name.
    pub fn set_attr(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.attrs.push((key.to_owned(), value)),
        }
    }

    /// Whether this is `<name xmlns='ns'>`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// The first child `<name xmlns='ns'>`.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(name, ns))
    }

    /// Every child `<name xmlns='ns'>`.
    pub fn children_named<'a>(
        &'a self,
        name: &'a str,
        ns: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(name, ns))
    }

    /// Serialises the element. `default_ns` is the namespace in scope where
    /// it is written (the stream's), so a `jabber:client` stanza written
    /// with `to_xml(ns::CLIENT)` carries no `xmlns`. A stream-level element
    /// (`stream:features`, `stream:error`) keeps its `stream:` prefix.
    pub fn to_xml(&self, default_ns: &str) -> String {
        let mut out = String::new();
        self.write(&mut out, default_ns);
        out
    }

    fn write(&self, out: &mut String, scope: &str) {
        let prefixed = self.ns == ns::STREAM;
        out.push('<');
        if prefixed {
            out.push_str("stream:");
        }
        out.push_str(&self.name);
        if !prefixed && self.ns != scope {
            let _ = write!(out, " xmlns='{}'", escape(&self.ns));
        }
        for (k, v) in &self.attrs {
            let _ = write!(out, " {k}='{}'", escape(v));
        }
        if self.children.is_empty() && self.text.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        out.push_str(&escape(&self.text));
        let inner = if prefixed { scope } else { &self.ns };
        for child in &self.children {
            child.write(out, inner);
        }
        out.push_str("</");
        if prefixed {
            out.push_str("stream:");
        }
        out.push_str(&self.name);
        out.push('>');
    }

    /// Parses one complete element (fixtures, tests). The `stream:` prefix
    /// is bound to the stream namespace, as inside a stream.
    pub fn parse(xml: &str) -> Result<Element, XmlError> {
        let wrapped = format!("<w xmlns:stream='{}'>{xml}</w>", ns::STREAM);
        let mut reader = NsReader::from_str(&wrapped);
        let mut stack: Vec<Element> = Vec::new();
        let mut found = None;
        loop {
            let (resolved, event) = reader
                .read_resolved_event()
                .map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
            let namespace = namespace_of(resolved);
            match event {
                Event::Start(start) => stack.push(element_from_start(&start, namespace)?),
                Event::Empty(start) => {
                    let el = element_from_start(&start, namespace)?;
                    attach(&mut stack, &mut found, el);
                }
                Event::End(_) => match stack.pop() {
                    Some(el) if stack.is_empty() => {
                        // The wrapper closed: its first child is the element.
                        return el
                            .children
                            .into_iter()
                            .next()
                            .or(found)
                            .ok_or_else(|| XmlError::NotWellFormed("no element".into()));
                    }
                    Some(el) => attach(&mut stack, &mut found, el),
                    None => return Err(XmlError::NotWellFormed("unbalanced end tag".into())),
                },
                Event::Text(t) => {
                    if let Some(el) = stack.last_mut() {
                        el.text.push_str(&t.xml10_content());
                    }
                }
                Event::CData(t) => {
                    if let Some(el) = stack.last_mut() {
                        el.text.push_str(&t.xml10_content());
                    }
                }
                Event::GeneralRef(r) => {
                    let c = resolve_reference(&r)?;
                    if let Some(el) = stack.last_mut() {
                        el.text.push(c);
                    }
                }
                Event::Eof => return Err(XmlError::NotWellFormed("unexpected end".into())),
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
            }
        }
    }
}

fn attach(stack: &mut [Element], found: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *found = Some(el),
    }
}

/// A data form field's value (XEP-0004). A field that is present with no
/// value is kept apart from one that is absent: servers differ exactly
/// there (docs/answers.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// The field is there, with no `<value/>` or an empty one.
    Empty,
    /// The field's first `<value/>`.
    Value(&'a str),
}

/// The value of field `var` of a `jabber:x:data` form; `None` when absent.
pub fn form_field<'a>(form: &'a Element, var: &str) -> Option<FieldValue<'a>> {
    let field = form
        .children_named("field", ns::DATA_FORMS)
        .find(|f| f.attr("var") == Some(var))?;
    Some(match field.child("value", ns::DATA_FORMS) {
        Some(v) if !v.text.is_empty() => FieldValue::Value(v.text.as_str()),
        _ => FieldValue::Empty,
    })
}

/// A `<x xmlns='jabber:x:data' type='submit'>` form, with the hidden
/// `FORM_TYPE` first when one is given.
pub fn submit_form(form_type: Option<&str>, fields: &[(&str, &str)]) -> Element {
    let field = |var: &str, value: &str| {
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_child(Element::new("value", ns::DATA_FORMS).with_text(value))
    };
    let mut form = Element::new("x", ns::DATA_FORMS).with_attr("type", "submit");
    if let Some(form_type) = form_type {
        form = form.with_child(field("FORM_TYPE", form_type).with_attr("type", "hidden"));
    }
    for (var, value) in fields {
        form = form.with_child(field(var, value));
    }
    form
}

/// The stream's opening tag, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// Its attributes (namespace declarations left out).
    pub attrs: Vec<(String, String)>,
}

impl StreamHeader {
    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What the peer sent next on a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// A top-level element: a stanza, or `stream:features`, `stream:error`,
    /// `handshake` and the like.
    Stanza(Element),
    /// `</stream:stream>`.
    End,
}

/// The initial size of the event buffer.
const EVENT_BUF: usize = 4096;

/// Reads an XMPP stream: its header, then one element per top-level child.
/// Whitespace between stanzas (keepalives) is skipped.
pub struct StreamReader<R> {
    xml: NsReader<BufReader<R>>,
    buf: Vec<u8>,
    stack: Vec<Element>,
    max_stanza: usize,
    stanza_start: u64,
}

impl<R: AsyncRead + Unpin> StreamReader<R> {
    /// A reader that refuses any stanza larger than `max_stanza_bytes`.
    pub fn new(inner: R, max_stanza_bytes: usize) -> Self {
        let mut xml = NsReader::from_reader(BufReader::new(inner));
        let config = xml.config_mut();
        config.expand_empty_elements = false;
        config.trim_text_start = false;
        config.trim_text_end = false;
        StreamReader {
            xml,
            buf: Vec::with_capacity(EVENT_BUF),
            stack: Vec::new(),
            max_stanza: max_stanza_bytes,
            stanza_start: 0,
        }
    }

    async fn event(&mut self) -> Result<(String, Event<'static>), XmlError> {
        self.buf.clear();
        let (resolved, event) = match self.xml.read_resolved_event_into_async(&mut self.buf).await {
            Ok(ev) => ev,
            Err(quick_xml::Error::Io(io)) => {
                return Err(XmlError::Io(std::io::Error::new(io.kind(), io.to_string())));
            }
            Err(other) => return Err(XmlError::NotWellFormed(other.to_string())),
        };
        Ok((namespace_of(resolved), event.into_owned()))
    }

    /// Reads up to and including the `<stream:stream>` opening tag.
    pub async fn header(&mut self) -> Result<StreamHeader, XmlError> {
        loop {
            let (namespace, event) = self.event().await?;
            match event {
                Event::Decl(_) => {}
                Event::Text(t) if t.xml10_content().trim().is_empty() => {}
                Event::Start(start) => {
                    let el = element_from_start(&start, namespace)?;
                    if !el.is("stream", ns::STREAM) {
                        return Err(XmlError::NotWellFormed(format!(
                            "expected a stream header, got <{}>",
                            el.name
                        )));
                    }
                    return Ok(StreamHeader { attrs: el.attrs });
                }
                Event::Eof => return Err(XmlError::Closed),
                other => {
                    return Err(XmlError::NotWellFormed(format!(
                        "expected a stream header, got {other:?}"
                    )));
                }
            }
        }
    }

    /// The next top-level element, or the end of the stream.
    pub async fn next(&mut self) -> Result<StreamEvent, XmlError> {
        loop {
            if self.stack.is_empty() {
                self.stanza_start = self.xml.buffer_position();
            } else if self.xml.buffer_position() - self.stanza_start > self.max_stanza as u64 {
                return Err(XmlError::TooLarge {
                    limit: self.max_stanza,
                });
            }
            let (namespace, event) = self.event().await?;
            match event {
                Event::Start(start) => {
                    let el = element_from_start(&start, namespace)?;
                    self.stack.push(el);
                }
                Event::Empty(start) => {
                    let el = element_from_start(&start, namespace)?;
                    if let Some(done) = self.close(el) {
                        return Ok(StreamEvent::Stanza(done));
                    }
                }
                Event::End(_) => match self.stack.pop() {
                    Some(el) => {
                        if let Some(done) = self.close(el) {
                            return Ok(StreamEvent::Stanza(done));
                        }
                    }
                    None => return Ok(StreamEvent::End),
                },
                Event::Text(t) => {
                    let text = t.xml10_content();
                    match self.stack.last_mut() {
                        Some(el) => el.text.push_str(&text),
                        None if text.trim().is_empty() => {}
                        None => {
                            return Err(XmlError::NotWellFormed("text outside of a stanza".into()));
                        }
                    }
                }
                Event::CData(t) => match self.stack.last_mut() {
                    Some(el) => el.text.push_str(&t.xml10_content()),
                    None => {
                        return Err(XmlError::NotWellFormed("CDATA outside of a stanza".into()));
                    }
                },
                Event::GeneralRef(r) => {
                    let c = resolve_reference(&r)?;
                    match self.stack.last_mut() {
                        Some(el) => el.text.push(c),
                        None => {
                            return Err(XmlError::NotWellFormed(
                                "a reference outside of a stanza".into(),
                            ));
                        }
                    }
                }
                Event::Eof => return Err(XmlError::Closed),
                Event::Comment(_) => {
                    return Err(XmlError::NotWellFormed("a comment (restricted XML)".into()));
                }
                Event::PI(_) | Event::Decl(_) => {
                    return Err(XmlError::NotWellFormed(
                        "a processing instruction (restricted XML)".into(),
                    ));
                }
                Event::DocType(_) => {
                    return Err(XmlError::NotWellFormed("a DOCTYPE (restricted XML)".into()));
                }
            }
        }
    }

    /// Gives the transport back, for STARTTLS: after `<proceed/>` the
    /// server sends nothing until the TLS handshake, so nothing is lost in
    /// the buffer.
    pub fn into_inner(self) -> R {
        self.xml.into_inner().into_inner()
    }

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

fn namespace_of(resolved: ResolveResult<'_>) -> String {
    match resolved {
        ResolveResult::Bound(n) => n.as_ref().to_owned(),
        ResolveResult::Unbound | ResolveResult::Unknown(_) => String::new(),
    }
}

/// The five predefined entities and character references; XMPP allows no
/// other (there is no DTD to declare one).
fn resolve_reference(r: &quick_xml::events::BytesRef<'_>) -> Result<char, XmlError> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) => Ok(c),
            _ => Err(XmlError::NotWellFormed(
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
        other => Err(XmlError::NotWellFormed(format!(
            "undeclared entity &{other}; (restricted XML)"
        ))),
    }
}

fn element_from_start(start: &BytesStart<'_>, namespace: String) -> Result<Element, XmlError> {
    let name = start.local_name().as_ref().to_owned();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
        let key = attr.key.as_ref().to_owned();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
        attrs.push((key, value.into_owned()));
    }
    Ok(Element {
        name,
        ns: namespace,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

/// A `<stream:stream>` opening tag, with the XML declaration. `attrs` are
/// written as given (to, from, id, version, xml:lang).
pub fn stream_open(default_ns: &str, attrs: &[(&str, &str)]) -> String {
    let mut out = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}'",
        escape(default_ns),
        ns::STREAM
    );
    for (k, v) in attrs {
        let _ = write!(out, " {k}='{}'", escape(*v));
    }
    out.push('>');
    out
}

/// The closing tag of a stream.
pub const STREAM_CLOSE: &str = "</stream:stream>";

/// XEP-0114's handshake digest: the lowercase hex SHA-1 of the stream id
/// followed by the secret.
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(stream_id.as_bytes());
    sha.update(secret.as_bytes());
    hex::encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn events(input: &str, max: usize) -> (StreamHeader, Vec<Result<StreamEvent, XmlError>>) {
        let mut reader = StreamReader::new(input.as_bytes(), max);
        let header = reader.header().await.expect("header");
        let mut out = Vec::new();
        loop {
            let ev = reader.next().await;
            let stop = !matches!(ev, Ok(StreamEvent::Stanza(_)));
            out.push(ev);
            if stop {
                return (header, out);
            }
        }
    }

    #[tokio::test]
    async fn reads_a_component_stream() {
        // The header ejabberd 23.01 sends, as in component/tests/fixtures.
        let input = "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='1234567890' from='push.localhost'> <handshake/>\n <iq from='localhost' to='push.localhost' id='a&amp;b' type='set'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'/></item></publish></pubsub></iq></stream:stream>";
        let (header, evs) = events(input, 10_000).await;
        assert_eq!(header.attr("id"), Some("1234567890"));
        let Ok(StreamEvent::Stanza(hs)) = &evs[0] else {
            panic!("{evs:?}")
        };
        assert!(hs.is("handshake", ns::COMPONENT));
        let Ok(StreamEvent::Stanza(iq)) = &evs[1] else {
            panic!("{evs:?}")
        };
        assert_eq!(iq.attr("id"), Some("a&b"));
        let publish = iq
            .child("pubsub", ns::PUBSUB)
            .and_then(|p| p.child("publish", ns::PUBSUB))
            .expect("publish");
        assert_eq!(publish.attr("node"), Some("n"));
        assert!(matches!(evs[2], Ok(StreamEvent::End)));
    }

    #[tokio::test]
    async fn refuses_restricted_xml_and_oversize() {
        let head =
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";
        for bad in [
            "<!-- c -->",
            "<?pi x?>",
            "<message>&foo;</message>",
            "<a></b>",
        ] {
            let (_, evs) = events(&format!("{head}{bad}"), 10_000).await;
            assert!(
                matches!(evs.last(), Some(Err(XmlError::NotWellFormed(_)))),
                "{bad}: {evs:?}"
            );
        }
        let big = format!(
            "{head}<message><body>{}</body></message>",
            "x".repeat(20_000)
        );
        let (_, evs) = events(&big, 1_000).await;
        assert!(
            matches!(evs.last(), Some(Err(XmlError::TooLarge { limit: 1_000 }))),
            "{evs:?}"
        );
    }

    #[test]
    fn round_trips_and_reads_forms() {
        let xml = "<iq type='set' id='x'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='last-message-body'><value/></field><field var='last-message-sender'><value>a@b/c &lt;</value></field></x></notification></item></publish></pubsub></iq>";
        let el = Element::parse(xml).expect("parse");
        assert_eq!(el.ns, "");
        let again = Element::parse(&el.to_xml("")).expect("reparse");
        assert_eq!(el, again);
        let form = el.children[0].children[0].children[0].children[0].children[0].clone();
        assert_eq!(
            form_field(&form, "last-message-body"),
            Some(FieldValue::Empty)
        );
        assert_eq!(
            form_field(&form, "last-message-sender"),
            Some(FieldValue::Value("a@b/c <"))
        );
        assert_eq!(form_field(&form, "message-count"), None);
        let built = submit_form(Some("urn:xmpp:push:summary"), &[("a", "1")]);
        assert_eq!(
            form_field(&built, "FORM_TYPE"),
            Some(FieldValue::Value("urn:xmpp:push:summary"))
        );
    }

    #[test]
    fn writes_stream_elements_with_their_prefix() {
        let err = Element::new("error", ns::STREAM)
            .with_child(Element::new("not-authorized", ns::STREAM_ERRORS));
        assert_eq!(
            err.to_xml(ns::COMPONENT),
            "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
        );
        let iq = Element::new("iq", ns::CLIENT).with_attr("type", "result");
        assert_eq!(iq.to_xml(ns::CLIENT), "<iq type='result'/>");
    }

    #[test]
    fn replies_address_the_requester() {
        let ping = Element::parse(
            "<iq type='get' id='p1' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .expect("parse");
        assert_eq!(
            default_reply(&ping, ns::COMPONENT).to_xml(ns::COMPONENT),
            "<iq type='result' id='p1' from='push.localhost' to='localhost'/>"
        );
        let other = Element::parse("<iq type='get' id='q'><query xmlns='x'/></iq>").expect("parse");
        let reply = default_reply(&other, ns::CLIENT);
        assert_eq!(
            reply.to_xml(ns::CLIENT),
            "<iq type='error' id='q'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        );
        assert_eq!(
            error_condition(reply.child("error", ns::CLIENT).expect("error")),
            "service-unavailable"
        );
        for (condition, name) in CONDITIONS {
            assert_eq!(Condition::try_from(name), Ok(condition));
            assert_eq!(condition.as_str(), name);
        }
        assert_eq!(Condition::try_from("x-custom"), Err("x-custom".to_owned()));
    }

    #[test]
    fn digest_is_sha1_of_id_and_secret() {
        // Pinned with Python's hashlib: sha1(b"3BF96D75sesame").
        assert_eq!(
            handshake_digest("3BF96D75", "sesame"),
            "7d9ebd743a486205e137f8c168c192e3495856d2"
        );
    }
}
