//! The stanza reader (`component/src/xmpp/reader.rs`) on arbitrary bytes
//! after a valid stream header, as they follow the handshake on a live
//! stream: the same properties as `reader_raw`, with the fuzzer's effort
//! spent on stanzas rather than on the header. Each iq is also read as the
//! service reads it (`component/src/xmpp/stanza.rs`) and its error reply,
//! which echoes the iq's addresses and id, must be well-formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nudge::xmpp::stanza::{Iq, StanzaError, StreamError};
use nudge_fuzz::{STREAM_HEADER, check_writes_back, read_both_ways};

fuzz_target!(|data: &[u8]| {
    let input = [STREAM_HEADER, data].concat();
    let transcript = read_both_ways(&input);
    for stanza in transcript.stanzas() {
        let _ = StreamError::from_element(stanza);
        if let Some(Ok(iq)) = Iq::from_element(stanza.clone()) {
            check_writes_back(&iq.error(&StanzaError::service_unavailable()));
        }
    }
});
