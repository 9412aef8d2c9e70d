//! Rows `survives-*`: a server may send what the App Server cannot take
//! (not well-formed XML, restricted XML, a publish larger than it
//! expects: docs/answers.md, "How large a publish can be"). The App Server
//! may keep the stream or drop it, but it must come back and go on
//! answering publishes. For malformed and restricted input the kit, being
//! the server, closes the stream itself if the App Server does not.

use std::time::Duration;

use super::row;
use super::session::{Answer, Condition, ErrorType, Outcome, Session};
use super::stanzas::{Capture, oversize_publish, publish, publish_to};
use crate::conformance::Row;

/// How long the kit waits for the App Server to react to hostile input.
const REACT: Duration = Duration::from_secs(3);
/// The oversize publish's body length.
const OVERSIZE: usize = 2 << 20;

/// What the kit sends.
#[derive(Clone, Copy, Debug)]
enum Hostile {
    /// Not well-formed: a mismatched end tag.
    Malformed,
    /// A comment, a PI, a DOCTYPE or an undeclared entity.
    Restricted(&'static str),
    /// A 2 MB publish.
    Oversize,
}

/// How the App Server came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Survival {
    /// Same stream, next publish answered.
    Kept,
    /// It closed the stream, reconnected and answered.
    Reconnected,
    /// The kit closed the stream; it reconnected and answered.
    ReconnectedAfterKitClose,
}

impl Survival {
    fn value(self) -> &'static str {
        match self {
            Survival::Kept => "kept",
            Survival::Reconnected => "reconnected",
            Survival::ReconnectedAfterKitClose => "reconnected-after-kit-close",
        }
    }
}

const RESTRICTED: &[&str] = &[
    "<!-- a comment -->",
    "<?nudge-kit processing-instruction?>",
    "<!DOCTYPE iq [<!ENTITY x 'y'>]>",
    "<message from='alice@localhost/phone' to='DOMAIN'><body>&nudgekit;</body></message>",
];

/// Runs the survival checks.
pub async fn check(s: &mut Session) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Err(why) = s.connected().await {
        for id in [
            "survives-malformed",
            "survives-restricted",
            "survives-oversize",
        ] {
            rows.push(row(id).skipped(why.clone()));
        }
        return rows;
    }
    let r = row("survives-malformed");
    rows.push(match survive(s, Hostile::Malformed).await {
        Ok(how) => r.pass(
            format!("then answered a publish ({})", how.value()),
            how.value(),
        ),
        Err(why) => r.fail(why, "failed"),
    });
    let r = row("survives-restricted");
    let mut seen = Vec::new();
    let mut failed = None;
    for text in RESTRICTED {
        match survive(s, Hostile::Restricted(text)).await {
            Ok(how) => seen.push(how.value()),
            Err(why) => {
                failed = Some(format!("after {text}: {why}"));
                break;
            }
        }
    }
    rows.push(match failed {
        None => r.pass(
            format!(
                "answered a publish after each of the four ({})",
                seen.join(", ")
            ),
            seen,
        ),
        Some(why) => r.fail(why, "failed"),
    });
    let r = row("survives-oversize");
    rows.push(match survive(s, Hostile::Oversize).await {
        Ok(how) => r.pass(
            format!("then answered a publish ({})", how.value()),
            how.value(),
        ),
        Err(why) => r.fail(why, "failed"),
    });
    rows
}

/// Sends the hostile input, then checks a publish is answered correctly,
/// on the same stream or after a reconnection.
async fn survive(s: &mut Session, what: Hostile) -> Result<Survival, String> {
    s.connected().await?;
    let (domain, from) = (s.domain.clone(), s.user_domain.clone());
    match what {
        Hostile::Malformed => {
            s.send_raw("<iq type='set' id='kit-malformed' to='x'><pubsub></iq>")
                .await?;
        }
        Hostile::Restricted(text) => s.send_raw(&text.replace("DOMAIN", &domain)).await?,
        Hostile::Oversize => {
            let id = s.id("big");
            let (node, secret) = match &s.probe {
                Some(reg) => (reg.node.clone(), reg.secret.clone()),
                None => (
                    "kit-unknown-oversize".to_owned(),
                    Some("kit-secret".to_owned()),
                ),
            };
            let el = oversize_publish(&id, &from, &domain, &node, secret.as_deref(), OVERSIZE);
            // Any answer (or a closed stream) will do for the big one, so
            // it is not one of the publishes answer-in-time judges.
            let _ = s.request(&el).await;
        }
    }
    // Does the same stream still work?
    if s.is_up() {
        let probe = probe_publish(s);
        let out = s.request_within(&probe, REACT).await;
        match out {
            Outcome::Answered(a, _) if correct(s, &a) => return Ok(Survival::Kept),
            Outcome::Answered(a, _) => {
                return Err(format!("after it, a publish got {}", a.describe()));
            }
            _ => {}
        }
    }
    let closed_by_app_server = !s.is_up() || s.wait_for_end(Duration::from_millis(100)).await;
    if !closed_by_app_server {
        s.close_stream(match what {
            Hostile::Malformed => Some("not-well-formed"),
            Hostile::Restricted(_) => Some("restricted-xml"),
            Hostile::Oversize => Some("policy-violation"),
        })
        .await;
    }
    s.connected().await?;
    let probe = probe_publish(s);
    let out = s.publish(&probe).await;
    match out.answer() {
        Some(a) if correct(s, a) => Ok(if closed_by_app_server {
            Survival::Reconnected
        } else {
            Survival::ReconnectedAfterKitClose
        }),
        _ => Err(format!(
            "after reconnecting, a publish got {}",
            out.describe()
        )),
    }
}

/// A publish to the probe registration (or to an unknown node without one).
fn probe_publish(s: &mut Session) -> crate::conformance::xml::Element {
    let id = s.id("probe");
    let (domain, from) = (s.domain.clone(), s.user_domain.clone());
    match &s.probe {
        Some(reg) => publish_to(reg, &id, &from, &domain),
        None => publish(
            Capture::Prosody,
            &id,
            &from,
            &domain,
            "kit-unknown-probe",
            Some("kit-secret"),
        ),
    }
}

/// The right answer to [`probe_publish`].
fn correct(s: &Session, a: &Answer) -> bool {
    match s.probe {
        Some(_) => matches!(a, Answer::Result(_)),
        None => a.is(ErrorType::Cancel, Condition::ItemNotFound),
    }
}
