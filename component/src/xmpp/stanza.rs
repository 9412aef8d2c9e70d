//! Typed views of the stanzas the component handles, and the stanza errors
//! it answers with (RFC 6120 §8.3).

use super::element::Element;
use super::ns;

/// `type` of an iq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IqType {
    Get,
    Set,
    Result,
    Error,
}

/// An iq addressed to the component.
#[derive(Debug, Clone)]
pub struct Iq {
    pub id: String,
    pub from: String,
    pub to: String,
    pub kind: IqType,
    /// The payload child of a get/set (exactly one is required).
    pub payload: Option<Element>,
}

/// Why an iq could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IqParseError {
    #[error("iq without id")]
    MissingId,
    #[error("iq without from")]
    MissingFrom,
    #[error("iq with unknown type {0:?}")]
    BadType(String),
}

impl Iq {
    /// Reads an `<iq/>`; `None` when the element is not an iq.
    pub fn from_element(mut el: Element) -> Option<Result<Iq, (IqParseError, Element)>> {
        if !el.is("iq", ns::COMPONENT) {
            return None;
        }
        let kind = match el.get_attr("type") {
            Some("get") => IqType::Get,
            Some("set") => IqType::Set,
            Some("result") => IqType::Result,
            Some("error") => IqType::Error,
            other => {
                let t = other.unwrap_or("").to_owned();
                return Some(Err((IqParseError::BadType(t), el)));
            }
        };
        let Some(id) = el.get_attr("id").map(str::to_owned) else {
            return Some(Err((IqParseError::MissingId, el)));
        };
        let Some(from) = el.get_attr("from").map(str::to_owned) else {
            return Some(Err((IqParseError::MissingFrom, el)));
        };
        let to = el.get_attr("to").unwrap_or("").to_owned();
        let payload = if el.children.is_empty() {
            None
        } else {
            Some(el.children.swap_remove(0))
        };
        Some(Ok(Iq {
            id,
            from,
            to,
            kind,
            payload,
        }))
    }

    /// An empty or payload-carrying `result` for this iq.
    pub fn result(&self, payload: Option<Element>) -> Element {
        let mut el = reply_base(&self.to, &self.from, &self.id, "result");
        if let Some(p) = payload {
            el.children.push(p);
        }
        el
    }

    /// The reply for an outcome: `result` with the payload, or the error.
    pub fn reply(&self, outcome: Result<(), StanzaError>, payload: Option<Element>) -> Element {
        match outcome {
            Ok(()) => self.result(payload),
            Err(e) => self.error(&e),
        }
    }

    /// An `error` reply for this iq.
    pub fn error(&self, error: &StanzaError) -> Element {
        reply_base(&self.to, &self.from, &self.id, "error").child(error.to_element())
    }
}

/// The reply skeleton: from the address the request was sent to (so that a
/// request to `push.example.org` is answered by `push.example.org`).
fn reply_base(from: &str, to: &str, id: &str, kind: &str) -> Element {
    let mut el = Element::new("iq", ns::COMPONENT)
        .attr("type", kind)
        .attr("id", id);
    if !from.is_empty() {
        el.attrs.push(("from".into(), from.into()));
    }
    el.attrs.push(("to".into(), to.into()));
    el
}

/// The `type` of a stanza error: what the requester should do about it.
/// It decides how the user's server treats our answer (`docs/answers.md`): only
/// `wait` is guaranteed never to disable push for the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// The defined conditions of stanza errors this component sends or reads
/// (RFC 6120 §8.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefinedCondition {
    BadRequest,
    /// A client-chosen name is taken (mod_push_appserver's `node`).
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    InternalServerError,
    ItemNotFound,
    NotAuthorized,
    PolicyViolation,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    UndefinedCondition,
}

impl DefinedCondition {
    /// How many conditions there are.
    pub const COUNT: usize = 13;

    /// Every condition, in declaration order.
    pub const ALL: [DefinedCondition; Self::COUNT] = [
        DefinedCondition::BadRequest,
        DefinedCondition::Conflict,
        DefinedCondition::FeatureNotImplemented,
        DefinedCondition::Forbidden,
        DefinedCondition::InternalServerError,
        DefinedCondition::ItemNotFound,
        DefinedCondition::NotAuthorized,
        DefinedCondition::PolicyViolation,
        DefinedCondition::RemoteServerNotFound,
        DefinedCondition::RemoteServerTimeout,
        DefinedCondition::ResourceConstraint,
        DefinedCondition::ServiceUnavailable,
        DefinedCondition::UndefinedCondition,
    ];

    /// Its position in [`Self::ALL`] (for tables indexed by condition,
    /// `metrics.rs`).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The element name of the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            DefinedCondition::BadRequest => "bad-request",
            DefinedCondition::Conflict => "conflict",
            DefinedCondition::FeatureNotImplemented => "feature-not-implemented",
            DefinedCondition::Forbidden => "forbidden",
            DefinedCondition::InternalServerError => "internal-server-error",
            DefinedCondition::ItemNotFound => "item-not-found",
            DefinedCondition::NotAuthorized => "not-authorized",
            DefinedCondition::PolicyViolation => "policy-violation",
            DefinedCondition::RemoteServerNotFound => "remote-server-not-found",
            DefinedCondition::RemoteServerTimeout => "remote-server-timeout",
            DefinedCondition::ResourceConstraint => "resource-constraint",
            DefinedCondition::ServiceUnavailable => "service-unavailable",
            DefinedCondition::UndefinedCondition => "undefined-condition",
        }
    }
}

impl TryFrom<Element> for DefinedCondition {
    type Error = Element;

    /// Reads a condition element; hands it back when it is not one.
    fn try_from(el: Element) -> Result<Self, Element> {
        if el.ns != ns::STANZA_ERRORS {
            return Err(el);
        }
        match Self::ALL.iter().find(|c| c.as_str() == el.name) {
            Some(c) => Ok(*c),
            None => Err(el),
        }
    }
}

impl std::fmt::Display for DefinedCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stanza error: type, defined condition and optional text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    pub kind: ErrorType,
    pub condition: DefinedCondition,
    pub text: Option<String>,
}

impl StanzaError {
    pub fn new(kind: ErrorType, condition: DefinedCondition) -> Self {
        StanzaError {
            kind,
            condition,
            text: None,
        }
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    pub fn bad_request(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Modify, DefinedCondition::BadRequest).with_text(text)
    }

    pub fn item_not_found() -> Self {
        Self::new(ErrorType::Cancel, DefinedCondition::ItemNotFound)
    }

    pub fn forbidden() -> Self {
        Self::new(ErrorType::Auth, DefinedCondition::Forbidden)
    }

    pub fn service_unavailable() -> Self {
        Self::new(ErrorType::Cancel, DefinedCondition::ServiceUnavailable)
    }

    pub fn feature_not_implemented() -> Self {
        Self::new(ErrorType::Cancel, DefinedCondition::FeatureNotImplemented)
    }

    /// A transient failure on our side or the provider's: `wait` keeps the
    /// user's registration on every server.
    pub fn resource_constraint(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Wait, DefinedCondition::ResourceConstraint).with_text(text)
    }

    pub fn internal_server_error(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Wait, DefinedCondition::InternalServerError).with_text(text)
    }

    pub fn remote_server_timeout(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Wait, DefinedCondition::RemoteServerTimeout).with_text(text)
    }

    pub fn to_element(&self) -> Element {
        let mut el = Element::new("error", ns::COMPONENT)
            .attr("type", self.kind.as_str())
            .child(Element::new(self.condition.as_str(), ns::STANZA_ERRORS));
        if let Some(t) = &self.text {
            el.children
                .push(Element::new("text", ns::STANZA_ERRORS).text(t.clone()));
        }
        el
    }
}

/// A `<stream:error/>` received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    pub condition: String,
    pub text: Option<String>,
}

impl StreamError {
    pub fn from_element(el: &Element) -> Option<StreamError> {
        if !el.is("error", ns::STREAM) {
            return None;
        }
        let condition = el
            .children
            .iter()
            .find(|c| c.ns == ns::STREAM_ERRORS && c.name != "text")
            .map(|c| c.name.to_string())
            .unwrap_or_else(|| "undefined-condition".into());
        let text = el
            .get_child("text", ns::STREAM_ERRORS)
            .map(|t| t.text.clone())
            .filter(|t| !t.is_empty());
        Some(StreamError { condition, text })
    }
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.text {
            Some(t) => write!(f, "{} ({t})", self.condition),
            None => f.write_str(&self.condition),
        }
    }
}

/// Serializes the stream error we send before closing.
pub fn stream_error_xml(condition: &str, text: &str) -> String {
    let mut s = String::from("<stream:error>");
    Element::new(condition.to_owned(), ns::STREAM_ERRORS).write_to(&mut s, "");
    Element::new("text", ns::STREAM_ERRORS)
        .text(text)
        .write_to(&mut s, "");
    s.push_str("</stream:error></stream:stream>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_read_back_what_they_write() {
        for c in DefinedCondition::ALL {
            let el = StanzaError::new(ErrorType::Cancel, c).to_element();
            let cond = el.children[0].clone();
            assert_eq!(DefinedCondition::try_from(cond), Ok(c));
        }
        // Another namespace or an unknown name is handed back.
        let other = Element::new("item-not-found", "urn:example");
        assert_eq!(DefinedCondition::try_from(other.clone()), Err(other));
        let unknown = Element::new("gone-fishing", ns::STANZA_ERRORS);
        assert_eq!(DefinedCondition::try_from(unknown.clone()), Err(unknown));
    }

    #[test]
    fn a_live_ejabberd_error_condition_parses() {
        // The error ejabberd bounces while the App Server is away
        // (docs/answers.md): `cancel` / `remote-server-not-found`.
        let el = Element::new("remote-server-not-found", ns::STANZA_ERRORS);
        assert_eq!(
            DefinedCondition::try_from(el),
            Ok(DefinedCondition::RemoteServerNotFound)
        );
    }
}
