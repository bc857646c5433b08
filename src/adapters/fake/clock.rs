//! A clock that only moves when told to.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ports::Clock;

/// A manual clock: starts at the moment it is built and advances only with [`ManualClock::advance`].
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl Default for ManualClock {
    #[allow(
        clippy::disallowed_methods,
        reason = "the fake clock's arbitrary origin; only differences between its readings matter"
    )]
    fn default() -> Self {
        Self {
            now: Arc::new(Mutex::new(Instant::now())),
        }
    }
}

impl ManualClock {
    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}
