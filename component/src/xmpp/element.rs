//! A small owned XML element: what one stanza is parsed into.
//!
//! Stanzas are small (capped by `max_stanza_size`) and short-lived, so a
//! compact tree of owned strings is simpler and fast enough; the typed views
//! (`Iq`, `PublishRequest`, data forms) read from it. Mixed content is not
//! needed by any protocol we speak, so an element keeps its direct text as
//! one string.
//!
//! Names, namespaces and attribute names are [`Name`]s: the ones the
//! protocols here use are interned as `&'static str`, so that parsing a
//! publish allocates little beyond the attribute values and text (the
//! allocator was the largest cost on the publish path before).

use std::borrow::Cow;
use std::fmt::Write as _;

use quick_xml::escape::escape;

/// An element or attribute name, or a namespace: static when known.
pub type Name = Cow<'static, str>;

/// Names and namespaces that recur in the stanzas the component reads; a
/// parsed name equal to one of them is stored without allocating.
const KNOWN: &[&str] = &[
    "iq",
    "message",
    "presence",
    "id",
    "type",
    "from",
    "to",
    "xml:lang",
    "pubsub",
    "publish",
    "publish-options",
    "item",
    "notification",
    "x",
    "field",
    "value",
    "var",
    "node",
    "label",
    "query",
    "command",
    "action",
    "sessionid",
    "ping",
    "handshake",
    "stream",
    "error",
    "text",
    "body",
    super::ns::COMPONENT,
    super::ns::STREAM,
    super::ns::STREAM_ERRORS,
    super::ns::STANZA_ERRORS,
    super::ns::DISCO_INFO,
    super::ns::DISCO_ITEMS,
    super::ns::COMMANDS,
    super::ns::DATA_FORMS,
    super::ns::PING,
    super::ns::PUBSUB,
    super::ns::PUSH,
];

/// A [`Name`] for a parsed string: static when it is a known one.
pub fn intern(s: &str) -> Name {
    match KNOWN.iter().find(|k| **k == s) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(s.to_owned()),
    }
}

/// One XML element with its namespace resolved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Local name (`iq`, `pubsub`, …).
    pub name: Name,
    /// Resolved namespace URI; empty when unbound.
    pub ns: Name,
    /// Attributes other than namespace declarations, in document order.
    /// Names keep their prefix (`xml:lang`).
    pub attrs: Vec<(Name, String)>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// The concatenated character data directly inside this element.
    pub text: String,
}

impl Element {
    /// A new element with no attributes or content.
    pub fn new(name: impl Into<Name>, ns: impl Into<Name>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            ..Element::default()
        }
    }

    /// Builder: adds an attribute.
    pub fn attr(mut self, name: impl Into<Name>, value: impl Into<String>) -> Self {
        self.attrs.push((name.into(), value.into()));
        self
    }

    /// Builder: adds a child.
    pub fn child(mut self, child: Element) -> Self {
        self.children.push(child);
        self
    }

    /// Builder: sets the text content.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = text.into();
        self
    }

    /// Value of an attribute, if present.
    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this element has this name and namespace.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// First child with this name and namespace.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(name, ns))
    }

    /// All children with this name and namespace.
    pub fn children_named<'a>(
        &'a self,
        name: &'a str,
        ns: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(name, ns))
    }

    /// Serializes the element; `xmlns` is written where the namespace differs
    /// from the parent's (`parent_ns`; the stream's default namespace for a
    /// stanza).
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if *self.ns != *parent_ns {
            let _ = write!(out, " xmlns='{}'", escape(&*self.ns));
        }
        for (k, v) in &self.attrs {
            let _ = write!(out, " {k}='");
            write_attr_value(out, v);
            out.push('\'');
        }
        if self.children.is_empty() && self.text.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        out.push_str(&escape(self.text.as_str()));
        for c in &self.children {
            c.write_to(out, &self.ns);
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// Serializes a stanza of the component stream.
    pub fn to_stanza_string(&self) -> String {
        let mut s = String::with_capacity(256);
        self.write_to(&mut s, super::ns::COMPONENT);
        s
    }
}

/// An attribute value, escaped so that it reads back unchanged: besides
/// the markup characters, tab, newline and carriage return become character
/// references (a reader normalizes them to spaces otherwise, and an answer
/// would no longer carry the id of its request).
fn write_attr_value(out: &mut String, value: &str) {
    for part in escape(value).split_inclusive(['\t', '\n', '\r']) {
        match part.char_indices().last() {
            Some((i, c @ ('\t' | '\n' | '\r'))) => {
                out.push_str(&part[..i]);
                let _ = write!(out, "&#{};", u32::from(c));
            }
            _ => out.push_str(part),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn attribute_values_read_back_unchanged() {
        let e = Element::new("iq", crate::xmpp::ns::COMPONENT).attr("id", "a\tb\nc\r d'<");
        let xml = format!(
            "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams'>{}",
            e.to_stanza_string()
        );
        assert!(xml.contains("a&#9;b&#10;c&#13; d&apos;&lt;"), "{xml}");
        let mut reader = crate::xmpp::reader::StanzaReader::new(xml.as_bytes(), 4096);
        let _header = reader.next().await.unwrap();
        match reader.next().await.unwrap() {
            crate::xmpp::reader::StreamItem::Stanza(read) => {
                assert_eq!(read.get_attr("id"), Some("a\tb\nc\r d'<"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn serializes_with_namespaces_and_escaping() {
        let e = Element::new("iq", crate::xmpp::ns::COMPONENT)
            .attr("id", "a'<b")
            .child(
                Element::new("query", "urn:x").child(Element::new("item", "urn:x").text("1 & 2")),
            );
        assert_eq!(
            e.to_stanza_string(),
            "<iq id='a&apos;&lt;b'><query xmlns='urn:x'><item>1 &amp; 2</item></query></iq>"
        );
    }
}
