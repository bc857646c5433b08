//! The clock port: monotonic "now" for task durations, injectable so tests control time.

use std::time::Instant;

/// A source of the current monotonic time.
#[cfg_attr(test, mockall::automock)]
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}
