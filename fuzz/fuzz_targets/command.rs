//! The XEP-0050 command parser (`component/src/register/adhoc.rs`) and the
//! XEP-0004 data form reader (`component/src/xmpp/dataform.rs`) on what
//! the stanza reader makes of arbitrary bytes inside an iq set from a
//! client, as a registration command arrives
//! (`component/tests/fixtures/*-register-push-fcm.xml`): the fuzzer writes
//! the iq's payload. Nothing may panic; every data form anywhere in the
//! stanza must survive being written and read again unchanged; the sender's
//! JID is read as the registration code reads it and must print back to
//! itself; each dialect (`component/src/register/`, all of them enabled
//! here) is offered the command and its forms; a Web Push subscription in
//! a form (`endpoint`, `p256dh`, `auth`, or `token`, as
//! `component/src/register/webpush.rs` reads it) that parses must write
//! back to a token that parses to the same subscription; and every answer
//! the command code can build (`completed`, `executing`, `canceled`) must
//! be well-formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

use nudge::config::{DialectTarget, DialectsConfig, PushAppserverConfig, SiskinConfig};
use nudge::dispatch::Backends;
use nudge::register::adhoc::CommandRequest;
use nudge::register::{Command, push_appserver, siskin};
use nudge::xmpp::dataform::DataForm;
use nudge::xmpp::jid::Jid;
use nudge::xmpp::ns;
use nudge::xmpp::stanza::{Iq, StanzaError};
use nudge_fuzz::{STREAM_HEADER, check_writes_back, read_all, walk};

const OPEN: &[u8] =
    b"<iq xml:lang='en' to='push.localhost' from='alice@localhost/phone' type='set' id='fuzz'>";
const CLOSE: &[u8] = b"</iq>";

fuzz_target!(|data: &[u8]| {
    let input = [STREAM_HEADER, OPEN, data, CLOSE].concat();
    let transcript = read_all(&input[..], input.len(), nudge_fuzz::MAX_STANZA);
    for stanza in transcript.stanzas() {
        walk(stanza, &mut |el| {
            if let Some(form) = DataForm::from_element(el) {
                check_form(&form);
            }
        });
        let Some(Ok(iq)) = Iq::from_element(stanza.clone()) else {
            continue;
        };
        check_jid(&iq.from);
        let Some(payload) = &iq.payload else {
            continue;
        };
        if !payload.is("command", ns::COMMANDS) {
            continue;
        }
        match CommandRequest::from_element(payload) {
            Ok(cmd) => {
                assert!(!cmd.node.is_empty(), "accepted a command without a node");
                let _ = Command::from_request(cmd.clone(), &Backends::new(), &dialects());
                if let Some(form) = &cmd.form {
                    let _ = siskin::RegisterForm::try_from(form);
                    let _ = siskin::UnregisterForm::try_from(form);
                    let _ = push_appserver::RegisterForm::try_from(form);
                    let _ = push_appserver::UnregisterForm::try_from(form);
                    check_subscription(form);
                    for var in ["muc", "channel"] {
                        if let Some(room) = form.non_empty(var) {
                            check_jid(room);
                        }
                    }
                }
                let answers = [
                    cmd.completed(cmd.form.clone()),
                    cmd.executing(cmd.form.clone().unwrap_or_else(|| DataForm::new("form"))),
                    cmd.canceled(),
                ];
                for answer in answers {
                    check_writes_back(&iq.result(Some(answer)));
                }
            }
            Err(e) => check_writes_back(&iq.error(&StanzaError::bad_request(e))),
        }
    }
});

/// Every dialect on, as an operator would configure them.
fn dialects() -> DialectsConfig {
    let app = |name: &str| DialectTarget::App(name.into());
    DialectsConfig {
        siskin: Some(SiskinConfig {
            providers: BTreeMap::from([("tigase:messenger:apns:1".into(), app("ios"))]),
        }),
        push_appserver: Some(PushAppserverConfig {
            types: BTreeMap::from([("apns".into(), app("ios")), ("fcm".into(), app("android"))]),
        }),
        ..DialectsConfig::default()
    }
}

fn check_subscription(form: &DataForm) {
    use nudge_plugins::webpush::Subscription;
    let parts = (
        form.non_empty("endpoint"),
        form.non_empty("p256dh"),
        form.non_empty("auth"),
    );
    let mut found = Vec::new();
    if let (Some(endpoint), Some(p256dh), Some(auth)) = parts {
        found.push(Subscription::from_parts(endpoint, p256dh, auth));
    }
    if let Some(token) = form.non_empty("token") {
        found.push(Subscription::parse(token));
    }
    for sub in found.into_iter().flatten() {
        let token = sub.to_token();
        let again = Subscription::parse(&token).expect("a written token parses");
        assert_eq!(again.to_token(), token, "a subscription changed on the way out");
    }
}

fn check_form(form: &DataForm) {
    let again = DataForm::from_element(&form.to_element());
    assert_eq!(
        again.as_ref(),
        Some(form),
        "a data form changed on the way out"
    );
    check_writes_back(&form.to_element());
}

fn check_jid(s: &str) {
    if let Ok(jid) = Jid::parse(s) {
        assert_eq!(
            Jid::parse(&jid.to_string()).as_ref(),
            Ok(&jid),
            "a parsed JID does not print back to itself"
        );
        let bare = Jid::parse(&jid.bare()).expect("a bare JID parses");
        assert_eq!((bare.local(), bare.domain()), (jid.local(), jid.domain()));
    }
}
