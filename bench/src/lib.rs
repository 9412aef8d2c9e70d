//! `nudge-bench`: the load harness of issue 19 ("Performance"), as a library
//! so that `bench/tests/scenarios.rs` runs every scenario with small counts
//! (the harness cannot rot) and `main.rs` stays a thin command line.
//!
//! Two modes:
//! - [`inproc`]: Nudge linked into the harness (library API), with a no-op
//!   backend or the mock APNs; quick, and one profile shows both sides.
//! - [`external`]: the `nudge` binary as its own process, the harness
//!   playing the XMPP server and (through the test-app) the provider. Only
//!   this mode can say what Nudge alone costs: CPU per push and memory are
//!   read from the child's `/proc` entries ([`child`]).
//!
//! The external mode's parts, one concern each: [`child`] (the process),
//! [`seed`] (registrations written straight into SQLite), [`xmpp`] (the
//! server side of the component stream), [`load`] (the pipelined publishes
//! and the matching of replies and provider requests to them), [`stats`]
//! (percentiles), [`report`] (what a run prints), [`scenarios`] (one file
//! per scenario, dispatched in one place).

pub mod child;
pub mod external;
pub mod inproc;
pub mod load;
pub mod report;
pub mod scenarios;
pub mod seed;
pub mod stats;
pub mod xmpp;
