//! The stop signal: one flag that every long-running part of Nudge can
//! wait on, set once (by SIGTERM, by a test, or by `Running::stop`).
//!
//! A named type instead of a bare `watch<bool>`, so that "is a stop asked
//! for" and "wait until one is" read as what they mean, and so that the
//! flag can only go from not triggered to triggered.

use std::sync::Arc;

use tokio::sync::watch;

/// A stop signal; clones share it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    flag: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        let (flag, _) = watch::channel(false);
        Shutdown {
            flag: Arc::new(flag),
        }
    }

    /// Asks everything that waits on this signal to stop; idempotent.
    pub fn trigger(&self) {
        self.flag.send_replace(true);
    }

    /// Whether a stop was asked for.
    pub fn is_triggered(&self) -> bool {
        *self.flag.borrow()
    }

    /// Resolves once a stop is asked for (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.flag.subscribe();
        // The sender lives in `self`, so the channel cannot close here.
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wait_resolves_once_triggered_in_every_clone() {
        let shutdown = Shutdown::new();
        let other = shutdown.clone();
        assert!(!other.is_triggered());
        let waiting = tokio::spawn(async move { other.wait().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("wait resolved")
            .expect("task ran");
        assert!(shutdown.is_triggered());
        // Already triggered: resolves at once.
        tokio::time::timeout(Duration::from_millis(100), shutdown.wait())
            .await
            .expect("immediate");
    }
}
