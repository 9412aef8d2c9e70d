//! The live page: the pushes each device received, shown as a phone's
//! notification list (title and body for alerts, a marker for silent
//! wake-ups, provider, priority, latency from the publish), updated live
//! over the control port's SSE feed (`/events`).
//!
//! The page is one static HTML file with inline CSS and JS and no external
//! resources, so it works offline and in a sandboxed headless browser.
//! Hooks for automated checks: `body[data-live="1"]` once the feed is open
//! and the history is loaded; each notification is an `article.push` with
//! `data-token`, `data-id`, `data-kind` and `data-status`.

/// The page, served at `/`.
pub(crate) const HTML: &str = include_str!("page.html");
