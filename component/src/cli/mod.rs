//! The operator's commands that are more than a few lines, one file each
//! (the short ones stay in `main.rs`): `nudge status` ([`status`]) and
//! `nudge send-test` ([`send_test`]), and how a command finds a
//! registration from what an operator copies out of a log line
//! ([`find_registration`]).

pub mod send_test;
pub mod status;

use nudge::store::{Registration, RegistrationStore, is_node_hash};

use crate::BoxError;

/// The registration named by `node_or_hash`: its node, or the 8-digit hash
/// log lines and `registrations list` show.
pub async fn find_registration(
    store: &RegistrationStore,
    node_or_hash: &str,
) -> Result<Registration, BoxError> {
    if let Some(reg) = store.find(node_or_hash).await? {
        return Ok(Registration::clone(&reg));
    }
    if is_node_hash(node_or_hash) {
        let mut found = store.find_by_hash(node_or_hash).await?;
        match found.len() {
            1 => return Ok(found.remove(0)),
            0 => {}
            _ => {
                let nodes: Vec<&str> = found.iter().map(|r| r.node.as_str()).collect();
                return Err(format!(
                    "the hash {node_or_hash} matches several registrations; name one by its node: {}",
                    nodes.join(", ")
                )
                .into());
            }
        }
    }
    Err(format!("no registration with node (or node hash) {node_or_hash}").into())
}

/// A duration in seconds as a person reads it: `42 s`, `5 min`, `3 h 10 min`, `2 d`.
pub fn human_secs(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86400, secs % 86400 / 3600),
    }
}
