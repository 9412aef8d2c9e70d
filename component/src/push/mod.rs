//! XEP-0357 as the App Server sees it: the publish a user's server sends
//! when a device should be woken up, and the checks it must pass before the
//! push goes out (node known under the sender's domain, secret right).

pub mod publish;
pub mod stateless;

pub use publish::{PublishError, PublishRequest};

use subtle::ConstantTimeEq;

use crate::dispatch::Verdict;
use crate::store::Registration;
use crate::xmpp::jid::Jid;

/// Checks a publish against the node's registration.
///
/// The node must belong to an account of the publishing server's domain: a
/// node registered by `alice@example.org` is found only for publishes from
/// `example.org` (anything else is `item-not-found`, so that nodes cannot be
/// probed from other servers). The secret is compared in constant time;
/// registrations without a secret (dialects where the node is the
/// credential) accept any.
pub fn authorize(
    request: &PublishRequest,
    from: &Jid,
    registration: &Registration,
) -> Result<(), Verdict> {
    if !registration.domain.eq_ignore_ascii_case(from.domain()) {
        return Err(Verdict::UnknownNode);
    }
    match (&registration.secret, &request.secret) {
        (None, _) => Ok(()),
        (Some(expected), Some(given))
            if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) =>
        {
            Ok(())
        }
        (Some(_), Some(_)) => Err(Verdict::WrongSecret),
        (Some(_), None) => Err(Verdict::MissingSecret),
    }
}
