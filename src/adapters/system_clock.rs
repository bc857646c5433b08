//! The real clock, read through tokio so paused test time applies.

use std::time::Instant;

use crate::ports::Clock;

/// Monotonic time from tokio's clock (pausable in tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}
