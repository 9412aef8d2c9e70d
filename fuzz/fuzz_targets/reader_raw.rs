//! The stanza reader (`component/src/xmpp/reader.rs`) on arbitrary bytes
//! as the whole stream, stream header included: whatever the server sends,
//! the reader must not panic, must end with an error at the end of the
//! input, must read the same from one buffer as from many small reads, and
//! must hold no stanza larger than its cap allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nudge::xmpp::stanza::{Iq, StreamError};
use nudge_fuzz::read_both_ways;

fuzz_target!(|data: &[u8]| {
    let transcript = read_both_ways(data);
    for stanza in transcript.stanzas() {
        let _ = StreamError::from_element(stanza);
        let _ = Iq::from_element(stanza.clone());
    }
});
