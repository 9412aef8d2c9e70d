//! Row `handshake`: the first connection's XEP-0114 handshake (stream
//! header to the domain in `jabber:component:accept`, digest
//! sha1(stream id + secret)). A wrong handshake gets the `not-authorized`
//! stream error (`session.rs`) and leaves nothing else to check.

use super::session::Session;
use super::{AppServerError, row};
use crate::conformance::Row;
use crate::conformance::xml::ns;

/// Waits for the App Server's first connection and judges its handshake.
pub async fn check(s: &mut Session) -> Result<Vec<Row>, AppServerError> {
    let r = row("handshake");
    let hs = s
        .accept(s.wait)
        .await
        .map_err(AppServerError::Accept)?
        .ok_or(AppServerError::NoConnection(s.wait))?;
    s.first_handshake = Some(hs.clone());
    if hs.ok(&s.domain) {
        return Ok(vec![r.pass(
            format!("to={}, {}, correct digest", s.domain, ns::COMPONENT),
            "ok",
        )]);
    }
    let (observed, value) = if let Some(problem) = &hs.problem {
        (problem.clone(), "broken")
    } else if hs.to.as_deref() != Some(s.domain.as_str()) {
        (
            format!("stream header to={:?}, expected {}", hs.to, s.domain),
            "wrong-to",
        )
    } else if hs.ns.as_deref() != Some(ns::COMPONENT) {
        (
            format!("stream namespace {:?}, expected {}", hs.ns, ns::COMPONENT),
            "wrong-namespace",
        )
    } else {
        (
            format!(
                "digest {:?}, expected {} (sha1 of stream id + secret); answered not-authorized",
                hs.digest.as_deref().unwrap_or_default(),
                hs.expected
            ),
            "wrong-digest",
        )
    };
    s.broken = Some("no authenticated stream: the handshake failed".to_owned());
    Ok(vec![r.fail(observed, value)])
}
