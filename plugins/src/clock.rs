//! The wall clock the backends read, behind a trait so that tests can move
//! time forward.
//!
//! Provider credentials age: an APNs provider token must be replaced after
//! 20–60 minutes, an FCM OAuth token expires after about an hour. Tests of
//! that refresh logic must not sleep for an hour, so every backend takes an
//! `Arc<dyn Clock>`: [`SystemClock`] in production, [`ManualClock`] in tests.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time as whole seconds since the UNIX epoch (0 if the
    /// clock reads before 1970, which no real clock does).
    fn unix_secs(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to. It starts at the system time of its
/// creation, so that anything sent to a real-looking server (JWT `iat`,
/// `apns-expiration`) stays plausible.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock reading the current system time, frozen.
    pub fn new() -> Self {
        Self::at(SystemTime::now())
    }

    /// A clock reading `now`, frozen.
    pub fn at(now: SystemTime) -> Self {
        Self {
            now: Mutex::new(now),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }

    /// Sets the clock to `to` (which may be in the past).
    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(1000));
        assert_eq!(clock.unix_secs(), 1000);
        clock.advance(Duration::from_secs(61));
        assert_eq!(clock.unix_secs(), 1061);
        clock.set(UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(clock.unix_secs(), 5);
    }
}
