//! What became of a publish, and the one rule that turns it into the answer
//! the user's server gets.
//!
//! The answer decides whether the user keeps push (the table in
//! `docs/answers.md`): ejabberd deletes a registration on any error
//! that is not `wait`, Prosody after 16. So `cancel`/`auth` are answered
//! only when the registration really is gone or the publish is really not
//! allowed; everything transient (a provider down, throttled or slow, our
//! database, a brake holding a removal) is `wait`, or `result` once the
//! push is safely in the outbox. The table test below pins that invariant.

use crate::xmpp::stanza::StanzaError;

/// What became of one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The provider took the push.
    Delivered,
    /// The push is in the outbox (the provider failed for now or was slow,
    /// a rate limit deferred it, or it was merged into a pending push); it
    /// will be delivered.
    Queued,
    /// No registration has that node under the publishing domain.
    UnknownNode,
    /// The provider declared the token dead and the registration is gone.
    TokenDead,
    /// The publish-options secret is wrong.
    WrongSecret,
    /// The publish carries no secret but the registration has one.
    MissingSecret,
    /// The publish is malformed.
    Malformed(String),
    /// The provider declared the token dead, but the removal brake is
    /// engaged for the app: the registration is kept.
    RemovalHeld,
    /// Our database failed, so nothing could be looked up or queued.
    StorageDown,
    /// The provider failed for now and the push could not be queued.
    ProviderUnavailable,
    /// The provider refused the request itself (our payload or
    /// credentials): not the user's fault, not retried blindly.
    ProviderRejected,
    /// The registration names an app this instance has no backend for.
    NoBackend,
    /// The stanza was over the size cap and is no publish that checks out
    /// (`README.md`, "Stanza limits"): its content cannot be trusted to
    /// tell, so no registration is disabled for it.
    Oversize,
    /// No decision within `dispatch.answer_deadline_secs` (a database or
    /// lock that hangs): answered before the user's server gives up on
    /// the publish (ejabberd after 32 s), as a problem of ours.
    Overdue,
}

impl Verdict {
    /// The answer to the publish: `Ok` is an empty `result`.
    pub fn answer(&self) -> Result<(), StanzaError> {
        match self {
            Verdict::Delivered | Verdict::Queued => Ok(()),
            Verdict::UnknownNode => Err(StanzaError::item_not_found()),
            Verdict::TokenDead => {
                Err(StanzaError::item_not_found().with_text("device token is no longer valid"))
            }
            Verdict::WrongSecret => Err(StanzaError::forbidden().with_text("wrong secret")),
            Verdict::MissingSecret => Err(StanzaError::forbidden().with_text("missing secret")),
            Verdict::Malformed(why) => Err(StanzaError::bad_request(why.clone())),
            Verdict::RemovalHeld => Err(StanzaError::resource_constraint(
                "push provider refused the token; held for the operator",
            )),
            Verdict::StorageDown => Err(StanzaError::internal_server_error("storage unavailable")),
            Verdict::ProviderUnavailable => Err(StanzaError::resource_constraint(
                "push provider unavailable",
            )),
            Verdict::ProviderRejected => Err(StanzaError::internal_server_error(
                "push provider rejected the request",
            )),
            Verdict::NoBackend => Err(StanzaError::internal_server_error(
                "the App Server has no backend for this registration",
            )),
            Verdict::Oversize => Err(StanzaError::resource_constraint("stanza too large")),
            Verdict::Overdue => Err(StanzaError::resource_constraint(
                "no decision in time; try again",
            )),
        }
    }

    /// A short name, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Queued => "queued",
            Verdict::UnknownNode => "unknown_node",
            Verdict::TokenDead => "token_dead",
            Verdict::WrongSecret => "wrong_secret",
            Verdict::MissingSecret => "missing_secret",
            Verdict::Malformed(_) => "malformed",
            Verdict::RemovalHeld => "removal_held",
            Verdict::StorageDown => "storage_down",
            Verdict::ProviderUnavailable => "provider_unavailable",
            Verdict::ProviderRejected => "provider_rejected",
            Verdict::NoBackend => "no_backend",
            Verdict::Oversize => "oversize",
            Verdict::Overdue => "overdue",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stanza::ErrorType;

    /// Every verdict and the error type it must get. A transient problem on
    /// our side or the provider's must never be `cancel` or `auth`: that
    /// would turn off push for a user who did nothing wrong.
    #[test]
    fn answers_follow_the_wait_versus_cancel_rule() {
        use ErrorType::*;
        let table: &[(Verdict, Option<ErrorType>, Option<&str>)] = &[
            (Verdict::Delivered, None, None),
            (Verdict::Queued, None, None),
            (Verdict::UnknownNode, Some(Cancel), Some("item-not-found")),
            (Verdict::TokenDead, Some(Cancel), Some("item-not-found")),
            (Verdict::WrongSecret, Some(Auth), Some("forbidden")),
            (Verdict::MissingSecret, Some(Auth), Some("forbidden")),
            (
                Verdict::Malformed("x".into()),
                Some(Modify),
                Some("bad-request"),
            ),
            (
                Verdict::RemovalHeld,
                Some(Wait),
                Some("resource-constraint"),
            ),
            (
                Verdict::StorageDown,
                Some(Wait),
                Some("internal-server-error"),
            ),
            (
                Verdict::ProviderUnavailable,
                Some(Wait),
                Some("resource-constraint"),
            ),
            (
                Verdict::ProviderRejected,
                Some(Wait),
                Some("internal-server-error"),
            ),
            (
                Verdict::NoBackend,
                Some(Wait),
                Some("internal-server-error"),
            ),
            (Verdict::Oversize, Some(Wait), Some("resource-constraint")),
            (Verdict::Overdue, Some(Wait), Some("resource-constraint")),
        ];
        for (verdict, kind, condition) in table {
            let answer = verdict.answer();
            assert_eq!(answer.as_ref().err().map(|e| e.kind), *kind, "{verdict:?}");
            assert_eq!(
                answer.as_ref().err().map(|e| e.condition.as_str()),
                *condition,
                "{verdict:?}"
            );
        }
        // Only these verdicts may disable push on the user's server.
        let disabling: Vec<&str> = table
            .iter()
            .filter(|(_, k, _)| matches!(k, Some(Cancel | Auth | Modify)))
            .map(|(v, _, _)| v.kind())
            .collect();
        assert_eq!(
            disabling,
            [
                "unknown_node",
                "token_dead",
                "wrong_secret",
                "missing_secret",
                "malformed"
            ]
        );
    }
}
