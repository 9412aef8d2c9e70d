//! The XEP-0357 publish parser (`component/src/push/publish.rs`) on what
//! the stanza reader makes of arbitrary bytes inside the skeleton of a
//! publish as Prosody and ejabberd send it
//! (`component/tests/fixtures/*-publish-*.xml`): the fuzzer writes the
//! inside of `<pubsub/>`. The parser must not panic, and what it accepts
//! must be what the service can use: a non-empty node, no form bookkeeping
//! (`FORM_TYPE`, the secret) among the forwarded fields, and the summary's
//! interpreted fields non-blank. Each stateless mode
//! (`component/src/push/stateless/`, both enabled here) reads the publish
//! without panicking. The replies the service would send are checked to be
//! well-formed.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use nudge::config::{DialectsConfig, FpushConfig, MongooseImConfig};
use nudge::push::PublishRequest;
use nudge::push::stateless::StatelessPublish;
use nudge::xmpp::ns;
use nudge::xmpp::stanza::{Iq, StanzaError};
use nudge_fuzz::{STREAM_HEADER, check_writes_back, read_all};

const OPEN: &[u8] = b"<iq to='push.localhost' from='localhost' type='set' id='fuzz'><pubsub xmlns='http://jabber.org/protocol/pubsub'>";
const CLOSE: &[u8] = b"</pubsub></iq>";

fuzz_target!(|data: &[u8]| {
    let input = [STREAM_HEADER, OPEN, data, CLOSE].concat();
    let transcript = read_all(&input[..], input.len(), nudge_fuzz::MAX_STANZA);
    for stanza in transcript.stanzas() {
        let Some(Ok(iq)) = Iq::from_element(stanza.clone()) else {
            continue;
        };
        let Some(payload) = &iq.payload else {
            continue;
        };
        if !payload.is("pubsub", ns::PUBSUB) {
            continue;
        }
        let reply = match PublishRequest::from_pubsub(payload) {
            Some(Ok(request)) => {
                check_request(&request);
                let _ = StatelessPublish::from_request(&request, &dialects());
                iq.result(None)
            }
            Some(Err(e)) => iq.error(&StanzaError::bad_request(e.to_string())),
            None => iq.error(&StanzaError::feature_not_implemented()),
        };
        check_writes_back(&reply);
    }
});

/// Both stateless modes on, as an operator would configure them.
fn dialects() -> DialectsConfig {
    DialectsConfig {
        fpush: Some(FpushConfig {
            modules: BTreeMap::from([("ios".into(), vec!["monalProdiOS".into()])]),
            default_module: Some("monalProdiOS".into()),
            limits: Default::default(),
        }),
        mongooseim: Some(MongooseImConfig {
            apns: Some("ios".into()),
            fcm: Some("android".into()),
            limits: Default::default(),
        }),
        ..DialectsConfig::default()
    }
}

fn check_request(request: &PublishRequest) {
    assert!(
        !request.node.is_empty(),
        "accepted a publish without a node"
    );
    assert!(
        request
            .options
            .iter()
            .all(|(var, _)| var != "FORM_TYPE" && var != "secret"),
        "form bookkeeping among the options: {:?}",
        request.options
    );
    let n = &request.notification;
    assert!(
        n.fields.iter().all(|(var, _)| var != "FORM_TYPE"),
        "FORM_TYPE among the summary fields"
    );
    for value in [&n.last_message_sender, &n.last_message_body]
        .into_iter()
        .flatten()
    {
        assert!(!value.trim().is_empty(), "a blank summary value kept");
    }
}
