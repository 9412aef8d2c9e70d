//! Mutated versions of real stanzas (bytes flipped, cut, markup and
//! entities injected) never make Nudge panic or stop serving: the parsers
//! return errors, and the running service answers or closes the stream and
//! comes back. The mutations are pseudo-random with a fixed seed, so a
//! failure is reproducible; the loops are bounded.

mod common;

use common::{DbKind, Harness, answer_kind, fixture};
use nudge::push::PublishRequest;
use nudge::register::adhoc::CommandRequest;
use nudge::xmpp::reader::{StanzaReader, StreamItem};
use nudge::xmpp::stanza::Iq;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INSERTS: &[&[u8]] = &[
    b"<",
    b">",
    b"&",
    b"'",
    b"\"",
    b"&amp;",
    b"&#0;",
    b"&#x110000;",
    b"&bogus;",
    b"<!--x-->",
    b"<?pi x?>",
    b"<![CDATA[x]]>",
    b"</iq>",
    b"<x xmlns:p='u'><p:y/>",
    b"<q:z/>",
    b"\xff\xfe",
    b"\0",
    b" xmlns=''",
    b" id='dup' id='dup'",
    b"<!DOCTYPE x>",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(out.len() + 1);
        match rng.below(4) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = rng.next() as u8;
            }
            1 => out.truncate(at),
            2 => {
                let ins = INSERTS[rng.below(INSERTS.len())];
                out.splice(at..at, ins.iter().copied());
            }
            _ => {
                let end = (at + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
        }
    }
    out
}

fn corpus() -> Vec<String> {
    [
        "prosody-publish-silent.xml",
        "prosody-publish-important.xml",
        "prosody-publish-body-sender.xml",
        "ejabberd-publish-summary.xml",
        "ejabberd-publish-empty.xml",
        "prosody-register-push-fcm.xml",
        "prosody-disco-info.xml",
    ]
    .iter()
    .map(|f| fixture(f, "node123", "secret123"))
    .collect()
}

/// Every typed parser on every element a mutated stream yields.
#[tokio::test]
async fn parsers_never_panic_on_mutated_stanzas() {
    let corpus = corpus();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let header = "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='1'>";
    let mut stanzas = 0;
    for round in 0..5_000 {
        let base = corpus[round % corpus.len()].as_bytes();
        let mut input = header.as_bytes().to_vec();
        input.extend(mutate(&mut rng, base));
        input.extend_from_slice(base);
        let mut reader = StanzaReader::new(input.as_slice(), 4096);
        while let Ok(item) = reader.next().await {
            let StreamItem::Stanza(el) = item else {
                continue;
            };
            stanzas += 1;
            if let Some(Ok(iq)) = Iq::from_element(el)
                && let Some(payload) = &iq.payload
            {
                let _ = PublishRequest::from_pubsub(payload);
                let _ = CommandRequest::from_element(payload);
            }
        }
    }
    assert!(
        stanzas > 1_000,
        "the mutations left too little to parse: {stanzas}"
    );
}

/// The running service, fed mutated stanzas over its real stream, keeps
/// answering (reconnecting when a mutation was bad enough to close it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_survives_mutated_stanzas() {
    let mut h = Harness::start(DbKind::Sqlite).await;
    let (node, secret) = h.register("alice@localhost", "d", "tok").await;
    let corpus: Vec<String> = [
        "prosody-publish-important.xml",
        "ejabberd-publish-summary.xml",
        "prosody-register-push-fcm.xml",
    ]
    .iter()
    .map(|f| fixture(f, &node, &secret))
    .collect();
    let mut rng = Rng(42);
    let mut reconnects = 0;
    for round in 0..80 {
        let bad = mutate(&mut rng, corpus[round % corpus.len()].as_bytes());
        h.conn.send_lossy(&bad).await;
        // A ping after the mutation: answered on this stream; or the stream
        // was closed (the component comes back on a new one); or the
        // mutation left an element open, so the ping became part of it and
        // the component rightly waits for the rest: then this side hangs up
        // like a server would, and the component must come back.
        let ping = format!(
            "<iq id='ping-{round}' type='get' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        );
        h.conn.send_lossy(ping.as_bytes()).await;
        let mut answered = false;
        while let Some(el) = h.conn.try_recv(std::time::Duration::from_millis(500)).await {
            if el.get_attr("id") == Some(&format!("ping-{round}")) {
                answered = true;
                break;
            }
        }
        if !answered {
            reconnects += 1;
            h.conn.hang_up().await;
            h.conn = h.server.accept().await;
            let a = h.conn.request(&ping).await;
            assert_eq!(answer_kind(&a).0, "result");
        }
    }
    // The original registration still works.
    let a = h
        .conn
        .request(&fixture("prosody-publish-important.xml", &node, &secret))
        .await;
    assert_eq!(answer_kind(&a).0, "result");
    assert!(reconnects < 80, "every mutation closed the stream");
    eprintln!("{reconnects} of 80 mutations ended a stream");
    h.finish().await;
}
