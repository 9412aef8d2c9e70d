//! What the fuzz targets in `fuzz_targets/` share: a tokio runtime to drive
//! the async [`StanzaReader`] from a synchronous fuzz callback, a reader
//! that hands the input over in pieces as a socket does, the skeletons the
//! targets wrap the fuzzer's bytes in, and the properties every target
//! checks on what the reader produced.
//!
//! The properties go beyond "does not panic" (README.md, "Fuzzing"):
//! - the reader terminates: every item it yields consumed input, so a
//!   finite input ends in an error (`Closed` at the latest);
//! - the reader's output does not depend on how the bytes were split into
//!   reads ([`Trickle`]);
//! - a stanza held in memory is bounded by the stanza cap plus the reader's
//!   one buffer of read-ahead (`component/src/xmpp/reader.rs`);
//! - the replies the component builds from what it read are read back by
//!   the same reader without error. (A stanza read is not always written
//!   back: the reader takes element names as quick-xml delimits them,
//!   without checking that they are XML names; the service never echoes
//!   one.)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use nudge::xmpp::Element;
use nudge::xmpp::reader::{ReadError, StanzaReader, StreamItem};
use tokio::io::{AsyncRead, ReadBuf};

/// Stanza size cap for the fuzz runs: far below a deployment's, so that
/// inputs a fuzzer grows reach it.
pub const MAX_STANZA: usize = 4096;

/// The reader's read-ahead that its byte budget allows beyond the stanza
/// cap (`READ_BUF` in `component/src/xmpp/reader.rs`).
const READ_AHEAD: usize = 16 * 1024;

/// The stream header as Prosody sends it (`tests/fixtures/README.md`
/// names the captures), put before the fuzzer's bytes by the targets that
/// fuzz what follows it.
pub const STREAM_HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xml:lang='en' id='fuzz' from='push.localhost' xmlns='jabber:component:accept'>";

thread_local! {
    /// One current-thread runtime per fuzzing thread, built once: building
    /// it per input would dominate the run time.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread tokio runtime");
}

/// Runs a future to completion on this thread's runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(future))
}

/// An [`AsyncRead`] over a byte slice that hands the bytes over in small
/// pieces of varying size, and answers `Pending` between some of them, as
/// a socket under load does. The stanza reader must produce from it what it
/// produces from one contiguous slice.
pub struct Trickle<'a> {
    rest: &'a [u8],
    turn: usize,
}

/// Sizes of the successive pieces, cycled.
const PIECES: [usize; 8] = [1, 3, 64, 2, 17, 1, 700, 5];

impl<'a> Trickle<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Trickle {
            rest: input,
            turn: 0,
        }
    }
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.turn += 1;
        if this.turn.is_multiple_of(3) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = PIECES[this.turn % PIECES.len()]
            .min(this.rest.len())
            .min(buf.remaining());
        let (piece, rest) = this.rest.split_at(n);
        buf.put_slice(piece);
        this.rest = rest;
        Poll::Ready(Ok(()))
    }
}

/// Everything the reader produced from one input: the items, then the error
/// that ended the stream.
#[derive(Debug)]
pub struct Transcript {
    pub items: Vec<StreamItem>,
    pub end: ReadError,
}

impl Transcript {
    /// The stanzas, in order.
    pub fn stanzas(&self) -> impl Iterator<Item = &Element> {
        self.items.iter().filter_map(|item| match item {
            StreamItem::Stanza(el) => Some(el),
            _ => None,
        })
    }
}

/// Reads `input` to its end with a [`StanzaReader`] capped at `max_stanza`,
/// checking that each item consumed input and that each stanza is bounded.
pub fn read_all<R: AsyncRead + Unpin>(input: R, input_len: usize, max_stanza: usize) -> Transcript {
    block_on(async {
        let mut reader = StanzaReader::new(input, max_stanza);
        let mut items = Vec::new();
        loop {
            match reader.next().await {
                Ok(item) => {
                    if let StreamItem::Stanza(el) = &item {
                        let held = held_bytes(el);
                        assert!(
                            held <= max_stanza + READ_AHEAD,
                            "a stanza holds {held} bytes, over the cap {max_stanza} + read-ahead"
                        );
                    }
                    items.push(item);
                    assert!(
                        items.len() <= input_len,
                        "{} items from {input_len} bytes: the reader yields without consuming input",
                        items.len()
                    );
                }
                Err(end) => return Transcript { items, end },
            }
        }
    })
}

/// Reads `input` once from one slice and once in pieces ([`Trickle`]),
/// checks that both readings agree, and returns the first.
pub fn read_both_ways(input: &[u8]) -> Transcript {
    let whole = read_all(input, input.len(), MAX_STANZA);
    let pieces = read_all(Trickle::new(input), input.len(), MAX_STANZA);
    // Debug output compares every variant, whatever fields it has.
    assert_eq!(
        format!("{:?}", whole.items),
        format!("{:?}", pieces.items),
        "the items depend on how the input was split into reads"
    );
    assert_eq!(
        std::mem::discriminant(&whole.end),
        std::mem::discriminant(&pieces.end),
        "the stream ends differently when the input is split: {} vs {}",
        whole.end,
        pieces.end
    );
    whole
}

/// Bytes of names, attributes and text an element tree holds.
fn held_bytes(el: &Element) -> usize {
    el.name.len()
        + el.ns.len()
        + el.text.len()
        + el.attrs
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + el.children.iter().map(held_bytes).sum::<usize>()
}

/// Checks that a stanza the component writes is read back, after the stream
/// header, as exactly one stanza and nothing else.
pub fn check_writes_back(stanza: &Element) {
    let written = stanza.to_stanza_string();
    let input = [STREAM_HEADER, written.as_bytes()].concat();
    // Escaping can make the written stanza several times larger than the
    // one read: no cap here, only well-formedness is checked.
    let transcript = read_all(&input[..], input.len(), input.len());
    let stanzas = transcript.stanzas().count();
    assert!(
        stanzas == 1 && matches!(transcript.end, ReadError::Closed),
        "written stanza not read back ({stanzas} stanzas, then {}): {written}",
        transcript.end
    );
}

/// Calls `f` on an element and every element below it.
pub fn walk(el: &Element, f: &mut impl FnMut(&Element)) {
    f(el);
    for child in &el.children {
        walk(child, f);
    }
}
