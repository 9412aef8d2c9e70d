//! Device registration over XEP-0050 ad-hoc commands: the generic command
//! protocol (`adhoc`) and the dialects real clients already speak. Each
//! dialect is its own module; today Conversations' `register-push-<name>` /
//! `unregister-push-<name>`, which Conversations and most Android clients
//! send. `limits` keeps one account from filling the database.

pub mod adhoc;
pub mod conversations;
pub mod limits;
