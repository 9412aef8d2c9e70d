//! The limits on one stanza, and the input filter that enforces them while
//! the bytes arrive, so that no publish can break the stream and no input
//! can make one stanza cost more than a fixed amount of memory.
//!
//! A user's server forwards what its clients send: Prosody 0.12 accepts
//! client stanzas up to 256 KiB (`c2s_stanza_size_limit`) and server-to-server
//! stanzas up to 512 KiB (`s2s_stanza_size_limit`); ejabberd's shipped
//! `ejabberd.yml` sets `max_stanza_size: 262144` on c2s and `524288` on s2s.
//! The body of such a message reaches us escaped again inside the publish:
//! Prosody writes `'` as `&apos;`, so 512 KiB of text can arrive as 3 MiB.
//! Closing the stream for such a publish made ejabberd delete the
//! registrations of everyone pushed while Nudge reconnected, so instead:
//!
//! - each text node and attribute value keeps only its first bytes
//!   ([`MAX_TEXT`], [`MAX_ATTR_VALUE`]; a provider takes about 4 KB), cut at
//!   a UTF-8 character boundary and never inside an `&…;` reference;
//! - names, tags, nesting and the number of elements are capped
//!   ([`MAX_NAME`], [`MAX_TAG`], [`MAX_DEPTH`], [`MAX_ELEMENTS`],
//!   [`MAX_KEPT`]); what is beyond is dropped, but still read, so that the
//!   stanza's end is found;
//! - beyond the stanza's hard cap (`component.max_stanza_size`, default
//!   [`DEFAULT_MAX_STANZA`]) text is cut to [`OVERSIZE_TEXT`] bytes and the
//!   stanza is marked oversize: a `<?oversize?>` processing instruction is
//!   put into the filtered stream, where no peer's can be (the filter
//!   refuses theirs), so the mark travels in order with the stanza.
//!
//! The filter sits between the socket and quick-xml ([`CappedInput`]), so
//! quick-xml never sees a large event. It follows the XML tokens just enough
//! to know what it may drop (text, tags, attribute values, CDATA,
//! references); it refuses restricted XML (RFC 6120 §11.1: comments,
//! processing instructions, DOCTYPE, entities other than the predefined
//! five) as soon as it starts, because quick-xml would buffer it whole before
//! reporting it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

/// Raw (still escaped) bytes kept of one text node or CDATA section, and
/// decoded bytes kept of one element's text.
pub const MAX_TEXT: usize = 8 * 1024;
/// Raw bytes kept of one attribute value (a JID is at most 3071 bytes).
pub const MAX_ATTR_VALUE: usize = 4 * 1024;
/// Bytes kept of an element name (start and end tags are cut alike); an
/// attribute whose name is longer is dropped with its value.
pub const MAX_NAME: usize = 1024;
/// Once a start tag has this many bytes, its further attributes are dropped.
pub const MAX_TAG: usize = 8 * 1024;
/// Levels of elements kept in a stanza (the stanza itself is level 1);
/// deeper ones are dropped with their content, but counted so that the
/// stanza's end is found. Real stanzas are under 10 levels deep.
pub const MAX_DEPTH: usize = 64;
/// Elements kept per stanza (a publish has about 20); later ones are
/// dropped with their content.
pub const MAX_ELEMENTS: usize = 256;
/// Bytes passed to the parser per stanza; beyond, new elements and text are
/// dropped (end tags still pass).
pub const MAX_KEPT: usize = 256 * 1024;
/// Raw bytes kept of each text node once a stanza is oversize: enough for a
/// node name or a secret.
pub const OVERSIZE_TEXT: usize = 256;
/// Default hard cap on the raw bytes of one stanza: above the worst case a
/// server forwards (512 KiB from s2s, escaped up to 6 times: 3 MiB).
pub const DEFAULT_MAX_STANZA: usize = 4 * 1024 * 1024;
/// The target of the processing instruction that marks an oversize stanza.
pub const OVERSIZE_TARGET: &str = "oversize";
/// The mark put into the filtered stream in an oversize stanza.
const OVERSIZE_MARK: &[u8] = b"<?oversize?>";

/// Longest XML declaration accepted before the stream header.
const MAX_DECL: usize = 1024;
/// Longest entity name accepted (the predefined ones have at most 4).
const MAX_ENTITY_NAME: usize = 8;
/// Bytes read from the socket at a time.
const SCRATCH: usize = 8 * 1024;

/// Input refused by the filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("restricted XML: {0}")]
    Restricted(&'static str),
    #[error("not well-formed: {0}")]
    NotWellFormed(&'static str),
}

/// Bytes read from the socket so far; cheap to clone and to read from
/// another task (the link's read-idle watchdog).
#[derive(Debug, Clone, Default)]
pub struct BytesRead(Arc<AtomicU64>);

impl BytesRead {
    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Where the filter is within the XML tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Character data, inside or between elements.
    Content,
    /// After `&`, in text or in the attribute value quoted with the byte.
    Ref(Option<u8>),
    /// After `<`.
    Lt,
    /// After `<!` and this many bytes of `[CDATA[`.
    Bang(u8),
    /// Inside CDATA, with this many `]` held back (they may end it).
    CData(u8),
    /// Inside the XML declaration; true after a `?`.
    Decl(bool),
    StartName,
    /// Inside a start tag, between attributes.
    InTag,
    AttrName,
    AfterAttrName,
    BeforeValue,
    /// Inside an attribute value quoted with this byte.
    AttrValue(u8),
    /// After `/` in a start tag.
    Slash,
    EndName,
    /// After an end tag's name, before `>`.
    EndTail,
}

/// The kind of the reference being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefKind {
    Start,
    Hash,
    Decimal,
    Hex,
    Named,
}

/// The byte state machine; see the module documentation.
#[derive(Debug)]
struct Cutter {
    max_stanza: u64,
    state: State,
    /// Open elements (1 inside the stream header).
    depth: usize,
    /// Open elements that were passed on (the rest are being dropped).
    kept_depth: usize,
    /// Whether the XML declaration may still come.
    seen_element: bool,
    /// Whether the current tag (or CDATA section) is passed on.
    keep_token: bool,
    /// Whether the bytes of the current character are passed on.
    keep_char: bool,
    /// Raw bytes of the current text node or CDATA section.
    text_len: usize,
    name_len: usize,
    tag_len: usize,
    /// The last byte passed in the tag was whitespace.
    tag_space: bool,
    attr_name: Vec<u8>,
    attr_skip: bool,
    value_len: usize,
    decl_len: usize,
    ref_kind: RefKind,
    ref_keep: bool,
    ref_raw: usize,
    ref_value: u32,
    ref_digits: usize,
    ref_name: [u8; MAX_ENTITY_NAME],
    ref_name_len: usize,
    /// Inside a stanza (from its `<` to its end).
    stanza_open: bool,
    /// The stanza's name as passed on, while its start tag is read (an
    /// oversize empty stanza is rewritten to carry the mark inside).
    stanza_name: Vec<u8>,
    stanza_bytes: u64,
    stanza_elements: usize,
    stanza_kept: usize,
    /// The stanza passed [`MAX_KEPT`]: no new elements or text.
    stanza_full: bool,
    oversize: bool,
    mark_pending: bool,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_lead(b: u8) -> bool {
    b & 0xC0 != 0x80
}

/// XML 1.0's `Char` production.
fn is_xml_char(c: u32) -> bool {
    matches!(c, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

impl Cutter {
    fn new(max_stanza: usize) -> Cutter {
        Cutter {
            max_stanza: max_stanza as u64,
            state: State::Content,
            depth: 0,
            kept_depth: 0,
            seen_element: false,
            keep_token: true,
            keep_char: true,
            text_len: 0,
            name_len: 0,
            tag_len: 0,
            tag_space: false,
            attr_name: Vec::with_capacity(MAX_NAME + 8),
            attr_skip: false,
            value_len: 0,
            decl_len: 0,
            ref_kind: RefKind::Start,
            ref_keep: false,
            ref_raw: 0,
            ref_value: 0,
            ref_digits: 0,
            ref_name: [0; MAX_ENTITY_NAME],
            ref_name_len: 0,
            stanza_open: false,
            stanza_name: Vec::with_capacity(MAX_NAME + 4),
            stanza_bytes: 0,
            stanza_elements: 0,
            stanza_kept: 0,
            stanza_full: false,
            oversize: false,
            mark_pending: false,
        }
    }

    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), InputError> {
        let mut rest = input;
        while let Some((&b, after)) = rest.split_first() {
            let run = self.plain_run(rest);
            if run > 0 {
                self.pass_run(&rest[..run], out);
                rest = &rest[run..];
            } else {
                self.step(b, out)?;
                rest = after;
            }
        }
        Ok(())
    }

    /// How many bytes at the start of `rest` are plain text or attribute
    /// value that [`Self::step`] would pass on one by one, each kept and
    /// none crossing a limit: those can be passed on at once (found with
    /// memchr), which is most of a stanza's bytes. Zero when the next byte
    /// needs the state machine.
    fn plain_run(&self, rest: &[u8]) -> usize {
        let room = match self.state {
            State::Content if !self.mark_pending && self.text_here() => {
                self.text_cap().saturating_sub(self.text_len)
            }
            State::AttrValue(_) if !self.attr_skip => MAX_ATTR_VALUE.saturating_sub(self.value_len),
            _ => return 0,
        };
        let mut n = room.min(rest.len());
        if self.stanza_open {
            n = n.min(MAX_KEPT.saturating_sub(self.stanza_kept));
            if !self.oversize {
                let left = self.max_stanza.saturating_sub(self.stanza_bytes);
                n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
            }
        }
        // The rest of a character that was dropped stays dropped.
        match rest.first() {
            Some(&b) if n > 0 && (self.keep_char || is_lead(b)) => {}
            _ => return 0,
        }
        // Only as far as could be passed: a text beyond its cap is dropped
        // byte by byte, and must not be scanned again for every byte.
        let window = &rest[..n];
        match self.state {
            State::AttrValue(quote) => memchr::memchr3(quote, b'<', b'&', window).unwrap_or(n),
            _ => memchr::memchr2(b'<', b'&', window).unwrap_or(n),
        }
    }

    /// Passes on a run [`Self::plain_run`] found, with the counts and state
    /// [`Self::step`] would leave after it.
    fn pass_run(&mut self, run: &[u8], out: &mut Vec<u8>) {
        if self.stanza_open {
            self.stanza_bytes += run.len() as u64;
        }
        match self.state {
            State::AttrValue(_) => self.value_len += run.len(),
            _ => self.text_len += run.len(),
        }
        self.keep_char = true;
        self.emit(out, run);
    }

    /// Passes bytes on, counting them against the stanza's budget.
    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(bytes);
        self.tag_len += bytes.len();
        if self.stanza_open {
            self.stanza_kept += bytes.len();
            if self.stanza_kept > MAX_KEPT {
                self.stanza_full = true;
            }
        }
    }

    fn text_cap(&self) -> usize {
        if self.oversize {
            OVERSIZE_TEXT
        } else {
            MAX_TEXT
        }
    }

    /// Whether text here is passed on at all.
    fn text_here(&self) -> bool {
        self.depth == self.kept_depth && !(self.stanza_open && self.stanza_full)
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> Result<(), InputError> {
        if self.stanza_open {
            self.stanza_bytes += 1;
            if self.stanza_bytes > self.max_stanza && !self.oversize {
                self.oversize = true;
                self.mark_pending = true;
            }
        }
        match self.state {
            State::Content => {
                if self.mark_pending && is_lead(b) {
                    self.mark_pending = false;
                    self.emit(out, OVERSIZE_MARK);
                }
                match b {
                    b'<' => self.state = State::Lt,
                    b'&' => {
                        let keep = self.text_here() && self.text_len < self.text_cap();
                        self.begin_ref(None, keep);
                    }
                    _ => {
                        if is_lead(b) {
                            self.keep_char = self.text_here() && self.text_len < self.text_cap();
                        }
                        self.text_len += 1;
                        if self.keep_char {
                            self.emit(out, &[b]);
                        }
                    }
                }
            }
            State::Ref(quote) => self.ref_byte(b, quote, out)?,
            State::Lt => self.after_lt(b, out)?,
            State::Bang(n) => {
                const CDATA: &[u8] = b"[CDATA[";
                match (n, b) {
                    (0, b'-') => return Err(InputError::Restricted("comment")),
                    (0, b'[') => self.state = State::Bang(1),
                    (0, _) => return Err(InputError::Restricted("DOCTYPE")),
                    (n, b) if CDATA.get(usize::from(n)) == Some(&b) => {
                        if usize::from(n) + 1 == CDATA.len() {
                            self.keep_token = self.text_here();
                            self.text_len = 0;
                            if self.keep_token {
                                self.emit(out, b"<![CDATA[");
                            }
                            self.state = State::CData(0);
                        } else {
                            self.state = State::Bang(n + 1);
                        }
                    }
                    _ => return Err(InputError::NotWellFormed("invalid markup after '<!'")),
                }
            }
            State::CData(held) => match b {
                b']' if held == 2 => self.cdata_content(b']', out),
                b']' => self.state = State::CData(held + 1),
                b'>' if held == 2 => {
                    if self.keep_token {
                        self.emit(out, b"]]>");
                    }
                    self.enter_content();
                }
                _ => {
                    for _ in 0..held {
                        self.cdata_content(b']', out);
                    }
                    self.cdata_content(b, out);
                    self.state = State::CData(0);
                }
            },
            State::Decl(question) => {
                self.decl_len += 1;
                if self.decl_len > MAX_DECL {
                    return Err(InputError::Restricted("processing instruction"));
                }
                self.emit(out, &[b]);
                if question && b == b'>' {
                    self.enter_content();
                } else {
                    self.state = State::Decl(b == b'?');
                }
            }
            State::StartName => match b {
                b if is_space(b) => {
                    self.tag_space = true;
                    if self.keep_token {
                        self.emit(out, b" ");
                    }
                    self.state = State::InTag;
                }
                b'/' => self.state = State::Slash,
                b'>' => self.finish_start(false, out),
                b'<' | b'\'' | b'"' | b'=' => {
                    return Err(InputError::NotWellFormed("invalid element name"));
                }
                _ => self.name_byte(b, out),
            },
            State::InTag => match b {
                b if is_space(b) => {
                    if self.keep_token && !self.tag_space {
                        self.emit(out, b" ");
                    }
                    self.tag_space = true;
                }
                b'/' => self.state = State::Slash,
                b'>' => self.finish_start(false, out),
                b'<' | b'\'' | b'"' | b'=' => {
                    return Err(InputError::NotWellFormed("attribute without a name"));
                }
                _ => {
                    self.attr_name.clear();
                    self.attr_skip = !self.keep_token || self.tag_len > MAX_TAG;
                    if !self.attr_skip {
                        self.attr_name.push(b);
                    }
                    self.state = State::AttrName;
                }
            },
            State::AttrName => match b {
                b'=' => self.attr_equals(out),
                b if is_space(b) => self.state = State::AfterAttrName,
                b'>' | b'/' | b'<' | b'\'' | b'"' => {
                    return Err(InputError::NotWellFormed("attribute without a value"));
                }
                _ if self.attr_skip => {}
                // Room for a prefix such as `xmlns:` on a name of MAX_NAME.
                _ if self.attr_name.len() < MAX_NAME + 8 => self.attr_name.push(b),
                _ => {
                    self.attr_skip = true;
                    self.attr_name.clear();
                }
            },
            State::AfterAttrName => match b {
                b'=' => self.attr_equals(out),
                b if is_space(b) => {}
                _ => return Err(InputError::NotWellFormed("attribute without a value")),
            },
            State::BeforeValue => match b {
                b'\'' | b'"' => {
                    if !self.attr_skip {
                        self.emit(out, &[b]);
                    }
                    self.value_len = 0;
                    self.state = State::AttrValue(b);
                }
                b if is_space(b) => {}
                _ => return Err(InputError::NotWellFormed("attribute value without quotes")),
            },
            State::AttrValue(quote) => match b {
                b if b == quote => {
                    if !self.attr_skip {
                        self.emit(out, &[b]);
                        self.tag_space = false;
                    }
                    self.state = State::InTag;
                }
                b'<' => return Err(InputError::NotWellFormed("'<' in an attribute value")),
                b'&' => {
                    let keep = !self.attr_skip && self.value_len < MAX_ATTR_VALUE;
                    self.begin_ref(Some(quote), keep);
                }
                _ => {
                    if is_lead(b) {
                        self.keep_char = !self.attr_skip && self.value_len < MAX_ATTR_VALUE;
                    }
                    self.value_len += 1;
                    if self.keep_char {
                        self.emit(out, &[b]);
                    }
                }
            },
            State::Slash => match b {
                b'>' => self.finish_start(true, out),
                _ => return Err(InputError::NotWellFormed("'/' not followed by '>'")),
            },
            State::EndName => match b {
                b'>' => self.finish_end(out),
                b if is_space(b) => self.state = State::EndTail,
                b'<' | b'\'' | b'"' | b'=' | b'/' => {
                    return Err(InputError::NotWellFormed("invalid end tag"));
                }
                _ => self.name_byte(b, out),
            },
            State::EndTail => match b {
                b'>' => self.finish_end(out),
                b if is_space(b) => {}
                _ => return Err(InputError::NotWellFormed("invalid end tag")),
            },
        }
        Ok(())
    }

    fn enter_content(&mut self) {
        self.text_len = 0;
        self.keep_char = true;
        self.state = State::Content;
    }

    fn after_lt(&mut self, b: u8, out: &mut Vec<u8>) -> Result<(), InputError> {
        match b {
            b'/' => {
                // An end tag passes when it closes an element that passed
                // (or when there is none: the parser then reports it).
                self.keep_token = self.depth == 0 || self.depth == self.kept_depth;
                self.name_len = 0;
                self.tag_len = 0;
                if self.keep_token {
                    self.emit(out, b"</");
                }
                self.state = State::EndName;
            }
            b'!' => self.state = State::Bang(0),
            b'?' if !self.seen_element => {
                self.decl_len = 2;
                self.emit(out, b"<?");
                self.state = State::Decl(false);
            }
            b'?' => return Err(InputError::Restricted("processing instruction")),
            b if is_space(b) || matches!(b, b'>' | b'<' | b'=' | b'\'' | b'"' | b'&') => {
                return Err(InputError::NotWellFormed("'<' not starting markup"));
            }
            _ => {
                self.seen_element = true;
                self.stanza_name.clear();
                if self.depth == 1 {
                    self.stanza_open = true;
                    self.stanza_bytes = 2;
                    self.stanza_elements = 0;
                    self.stanza_kept = 0;
                    self.stanza_full = false;
                    self.oversize = false;
                    self.mark_pending = false;
                }
                self.keep_token = self.depth == self.kept_depth;
                if self.stanza_open {
                    self.stanza_elements += 1;
                    self.keep_token &= self.depth <= MAX_DEPTH
                        && self.stanza_elements <= MAX_ELEMENTS
                        && !self.stanza_full;
                }
                self.name_len = 0;
                self.tag_len = 0;
                self.tag_space = false;
                if self.keep_token {
                    self.emit(out, b"<");
                }
                self.name_byte(b, out);
                self.state = State::StartName;
            }
        }
        Ok(())
    }

    fn name_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if is_lead(b) {
            self.keep_char = self.keep_token && self.name_len < MAX_NAME;
        }
        self.name_len += 1;
        if self.keep_char {
            self.emit(out, &[b]);
            let stanza_tag = matches!(self.state, State::Lt | State::StartName);
            if stanza_tag && self.stanza_open && self.depth == 1 {
                self.stanza_name.push(b);
            }
        }
    }

    fn attr_equals(&mut self, out: &mut Vec<u8>) {
        if !self.attr_skip {
            let name = std::mem::take(&mut self.attr_name);
            self.emit(out, &name);
            self.emit(out, b"=");
            self.attr_name = name;
        }
        self.state = State::BeforeValue;
    }

    fn finish_start(&mut self, empty: bool, out: &mut Vec<u8>) {
        if empty && self.depth == 1 && self.mark_pending {
            // `<iq …/>` over the cap: `<iq …><?oversize?></iq>`.
            self.mark_pending = false;
            let name = std::mem::take(&mut self.stanza_name);
            self.emit(out, b">");
            self.emit(out, OVERSIZE_MARK);
            self.emit(out, b"</");
            self.emit(out, &name);
            self.emit(out, b">");
            self.stanza_name = name;
            self.stanza_open = false;
            self.enter_content();
            return;
        }
        if self.keep_token {
            self.emit(out, if empty { b"/>" } else { b">" });
        }
        if empty {
            if self.depth == 1 {
                self.stanza_open = false;
                self.mark_pending = false;
            }
        } else {
            self.depth += 1;
            if self.keep_token {
                self.kept_depth = self.depth;
            }
        }
        self.enter_content();
    }

    fn finish_end(&mut self, out: &mut Vec<u8>) {
        if self.keep_token {
            self.emit(out, b">");
        }
        if self.depth > 0 {
            if self.kept_depth == self.depth {
                self.kept_depth -= 1;
            }
            self.depth -= 1;
            if self.depth == 1 {
                self.stanza_open = false;
                self.mark_pending = false;
            }
        }
        self.enter_content();
    }

    fn cdata_content(&mut self, b: u8, out: &mut Vec<u8>) {
        if is_lead(b) {
            self.keep_char = self.keep_token && self.text_len < self.text_cap();
        }
        self.text_len += 1;
        if self.keep_char {
            self.emit(out, &[b]);
        }
    }

    fn begin_ref(&mut self, quote: Option<u8>, keep: bool) {
        self.ref_kind = RefKind::Start;
        self.ref_keep = keep;
        self.ref_raw = 1;
        self.ref_value = 0;
        self.ref_digits = 0;
        self.ref_name_len = 0;
        self.state = State::Ref(quote);
    }

    fn ref_byte(&mut self, b: u8, quote: Option<u8>, out: &mut Vec<u8>) -> Result<(), InputError> {
        const BAD_CHAR: InputError = InputError::NotWellFormed("invalid character reference");
        self.ref_raw += 1;
        let name_byte = b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':');
        match (self.ref_kind, b) {
            (RefKind::Start, b'#') => self.ref_kind = RefKind::Hash,
            (RefKind::Start, _) if name_byte => {
                self.ref_kind = RefKind::Named;
                self.ref_name[0] = b;
                self.ref_name_len = 1;
            }
            (RefKind::Start, _) => {
                return Err(InputError::NotWellFormed("'&' not starting a reference"));
            }
            (RefKind::Hash, b'x') => self.ref_kind = RefKind::Hex,
            (RefKind::Hash, b'0'..=b'9') => {
                self.ref_kind = RefKind::Decimal;
                self.add_digit(10, b - b'0');
            }
            (RefKind::Hash, _) => return Err(BAD_CHAR),
            (RefKind::Decimal | RefKind::Hex, b';') => {
                if self.ref_digits == 0 || !is_xml_char(self.ref_value) {
                    return Err(BAD_CHAR);
                }
                if self.ref_keep {
                    let canonical = format!("&#{};", self.ref_value);
                    self.emit(out, canonical.as_bytes());
                }
                self.end_ref(quote);
            }
            (RefKind::Decimal, b'0'..=b'9') => self.add_digit(10, b - b'0'),
            (RefKind::Hex, _) if b.is_ascii_hexdigit() => {
                let d = (b as char).to_digit(16).unwrap_or(0) as u8;
                self.add_digit(16, d);
            }
            (RefKind::Decimal | RefKind::Hex, _) => return Err(BAD_CHAR),
            (RefKind::Named, b';') => {
                let name = &self.ref_name[..self.ref_name_len];
                if !matches!(name, b"amp" | b"lt" | b"gt" | b"quot" | b"apos") {
                    return Err(InputError::Restricted("undeclared entity"));
                }
                if self.ref_keep {
                    let mut r = [0u8; MAX_ENTITY_NAME + 2];
                    r[0] = b'&';
                    r[1..=name.len()].copy_from_slice(name);
                    r[name.len() + 1] = b';';
                    let len = name.len() + 2;
                    self.emit(out, &r[..len]);
                }
                self.end_ref(quote);
            }
            (RefKind::Named, _) if name_byte && self.ref_name_len < MAX_ENTITY_NAME => {
                self.ref_name[self.ref_name_len] = b;
                self.ref_name_len += 1;
            }
            (RefKind::Named, _) if name_byte => {
                return Err(InputError::Restricted("undeclared entity"));
            }
            (RefKind::Named, _) => {
                return Err(InputError::NotWellFormed("invalid entity reference"));
            }
        }
        Ok(())
    }

    fn add_digit(&mut self, base: u32, d: u8) {
        self.ref_digits += 1;
        self.ref_value = self
            .ref_value
            .saturating_mul(base)
            .saturating_add(u32::from(d))
            .min(0x11_0000);
    }

    fn end_ref(&mut self, quote: Option<u8>) {
        match quote {
            None => {
                self.text_len += self.ref_raw;
                // The next character decides for itself.
                self.keep_char = true;
                self.state = State::Content;
            }
            Some(q) => {
                self.value_len += self.ref_raw;
                self.keep_char = true;
                self.state = State::AttrValue(q);
            }
        }
    }
}

/// The socket as the parser sees it: the bytes of the stream with what is
/// beyond the limits dropped (see the module documentation).
#[derive(Debug)]
pub struct CappedInput<R> {
    inner: R,
    cutter: Cutter,
    scratch: Box<[u8]>,
    out: Vec<u8>,
    out_pos: usize,
    failed: Option<InputError>,
    eof: bool,
    bytes_read: BytesRead,
}

impl<R> CappedInput<R> {
    /// Filters `inner`, marking stanzas over `max_stanza` raw bytes as
    /// oversize.
    pub fn new(inner: R, max_stanza: usize) -> Self {
        CappedInput {
            inner,
            cutter: Cutter::new(max_stanza),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            out: Vec::with_capacity(SCRATCH),
            out_pos: 0,
            failed: None,
            eof: false,
            bytes_read: BytesRead::default(),
        }
    }

    /// The counter of bytes read from `inner`.
    pub fn bytes_read(&self) -> BytesRead {
        self.bytes_read.clone()
    }

    /// Capacity of the buffer of filtered bytes not yet handed on (for
    /// tests that check memory stays bounded).
    pub fn buffered_capacity(&self) -> usize {
        self.out.capacity() + self.scratch.len() + self.cutter.attr_name.capacity()
    }
}

/// Recovers the filter's verdict from an I/O error that carries it.
pub fn input_error(e: &io::Error) -> Option<&InputError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<InputError>())
}

impl<R: AsyncRead + Unpin> AsyncRead for CappedInput<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e.clone())));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                this.eof = true;
                continue;
            }
            this.bytes_read.add(n);
            if let Err(e) = this.cutter.feed(&this.scratch[..n], &mut this.out) {
                this.failed = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(input: &[u8], max_stanza: usize) -> Result<String, InputError> {
        let mut c = Cutter::new(max_stanza);
        let mut out = Vec::new();
        // Byte by byte and whole must give the same result.
        let mut whole = Cutter::new(max_stanza);
        let mut out_whole = Vec::new();
        let a = input.iter().try_for_each(|b| c.step(*b, &mut out));
        let b = whole.feed(input, &mut out_whole);
        assert_eq!(a, b);
        assert_eq!(out, out_whole);
        // And in pieces, so that runs end where reads end.
        for piece in [2, 3, 7, 64] {
            let mut pieces = Cutter::new(max_stanza);
            let mut out_pieces = Vec::new();
            let p = input
                .chunks(piece)
                .try_for_each(|chunk| pieces.feed(chunk, &mut out_pieces));
            assert_eq!(a, p, "in pieces of {piece}");
            assert_eq!(out, out_pieces, "in pieces of {piece}");
        }
        a.map(|()| String::from_utf8(out).expect("output is UTF-8"))
    }

    /// The runs passed at once ([`Cutter::plain_run`]) change nothing:
    /// stanzas made of random pieces (long and multi-byte text, long
    /// attribute values, references) give the same output whole as byte by
    /// byte, at stanza caps that fall anywhere in them.
    #[test]
    fn runs_passed_at_once_equal_byte_by_byte() {
        const PIECES: &[&str] = &[
            "<a x='",
            "' y=\"",
            "\">",
            "</a>",
            "<b/>",
            "&amp;",
            "&#233;",
            "é",
            "日本",
            "😀",
            "plain text ",
            "'",
            "\"",
            "<![CDATA[x]]>",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..120 {
            let mut stanza = String::from("<iq id='1'>");
            for _ in 0..(next() % 40) {
                let piece = PIECES[(next() % PIECES.len() as u64) as usize];
                let times = if next() % 8 == 0 {
                    1 + next() % 1200
                } else {
                    1
                };
                for _ in 0..times {
                    stanza.push_str(piece);
                }
            }
            stanza.push_str("</iq>");
            let input = format!("{S}{stanza}{stanza}");
            let cap = 64 + (next() % (2 * input.len() as u64)) as usize;
            // Errors are fine (random pieces are not always well formed);
            // `cut` checks both ways agree, output and error alike.
            let _ = cut(input.as_bytes(), cap);
        }
    }

    const S: &str = "<stream:stream xmlns='jabber:component:accept'>";

    #[test]
    fn passes_ordinary_stanzas_unchanged() {
        let input = format!(
            "<?xml version='1.0'?>{S} <iq id=\"a\" type='get'><q xmlns='x'>t&amp;&#65;&#x42;<![CDATA[<c>]]]></q></iq><a/></stream:stream>"
        );
        let expected = input.replace("&#x42;", "&#66;");
        assert_eq!(cut(input.as_bytes(), 1 << 20).unwrap(), expected);
    }

    #[test]
    fn long_text_is_cut_at_a_char_boundary_and_outside_references() {
        let body = "é".repeat(MAX_TEXT);
        let out = cut(format!("{S}<m><b>{body}</b></m>").as_bytes(), 1 << 30).unwrap();
        let kept = out
            .split("<b>")
            .nth(1)
            .unwrap()
            .split("</b>")
            .next()
            .unwrap();
        assert!(
            kept.len() >= MAX_TEXT && kept.len() <= MAX_TEXT + 1,
            "{}",
            kept.len()
        );
        assert!(kept.chars().all(|c| c == 'é'));
        let body = "&lt;".repeat(MAX_TEXT);
        let out = cut(format!("{S}<m><b>{body}</b></m>").as_bytes(), 1 << 30).unwrap();
        let kept = out
            .split("<b>")
            .nth(1)
            .unwrap()
            .split("</b>")
            .next()
            .unwrap();
        assert_eq!(kept, "&lt;".repeat(MAX_TEXT / 4));
    }

    #[test]
    fn restricted_xml_is_refused_as_it_starts() {
        for (input, want) in [
            ("<!-- x", InputError::Restricted("comment")),
            ("<!DOCTYPE", InputError::Restricted("DOCTYPE")),
            ("<?pi", InputError::Restricted("processing instruction")),
            ("<m>&lol;", InputError::Restricted("undeclared entity")),
            (
                "<m a='&xxxxxxxxxxxx",
                InputError::Restricted("undeclared entity"),
            ),
            (
                "<m>&#0;",
                InputError::NotWellFormed("invalid character reference"),
            ),
        ] {
            let got = cut(format!("{S}{input}").as_bytes(), 1 << 20);
            assert_eq!(got, Err(want), "{input}");
        }
    }

    #[test]
    fn deep_and_numerous_elements_are_dropped_but_counted() {
        let deep = format!("{S}<m>{}{}</m><n/>", "<a>".repeat(200), "</a>".repeat(200));
        let out = cut(deep.as_bytes(), 1 << 30).unwrap();
        assert_eq!(out.matches("<a>").count(), MAX_DEPTH - 1);
        assert_eq!(out.matches("</a>").count(), MAX_DEPTH - 1);
        assert!(out.ends_with("</m><n/>"), "{out}");
        let many = format!("{S}<m>{}</m>", "<a x='1'>t</a>".repeat(10_000));
        let out = cut(many.as_bytes(), 1 << 30).unwrap();
        assert_eq!(out.matches("<a").count(), MAX_ELEMENTS - 1);
        assert!(out.ends_with("</a></m>"));
    }

    #[test]
    fn long_names_and_tags_are_cut_consistently() {
        let name = "n".repeat(5000);
        let attrs: String = (0..5000).map(|i| format!(" a{i}='v'")).collect();
        let input = format!("{S}<m{attrs} {name}='x' id='i'><{name}/><{name}></{name} ></m>");
        let out = cut(input.as_bytes(), 1 << 30).unwrap();
        let short = "n".repeat(MAX_NAME);
        assert!(
            out.contains(&format!("<{short}/><{short}></{short}></m>")),
            "{out}"
        );
        assert!(out.len() < MAX_TAG + 4 * MAX_NAME, "{}", out.len());
        assert!(
            !out.contains("id='i'"),
            "attributes beyond the tag cap are dropped"
        );
    }

    #[test]
    fn oversize_stanzas_are_marked_and_keep_their_skeleton() {
        let input = format!(
            "{S}<iq id='1'><v>{}</v><s>secret</s></iq><iq id='2'/>",
            "x".repeat(10_000)
        );
        let out = cut(input.as_bytes(), 5000).unwrap();
        assert!(
            out.contains("x<?oversize?></v><s>secret</s></iq><iq id='2'/>"),
            "{out}"
        );
        assert_eq!(out.matches("<?oversize?>").count(), 1);
        let input = format!("{S}<iq id='{}'/><iq/>", "v".repeat(10_000));
        let out = cut(input.as_bytes(), 5000).unwrap();
        assert!(out.ends_with("'><?oversize?></iq><iq/>"), "{out}");
    }
}
