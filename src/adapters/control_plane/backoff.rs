//! The reconnect back-off: a validated value type, exponential with jitter, reset only after a
//! connection that stayed up long enough to count as healthy.

use std::time::Duration;

/// Back-off settings: the Go worker's exponential back-off, plus jitter and no reset after a
/// short-lived connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// The first delay (1 s).
    pub initial: Duration,
    /// The cap (60 s).
    pub max: Duration,
    /// The growth factor per failure (2.0).
    pub factor: f64,
    /// Relative jitter: each delay is drawn uniformly from `base × [1 − jitter, 1 + jitter]`,
    /// then capped at `max` (0.2).
    pub jitter: f64,
    /// A connection that lived at least this long resets the delay (10 s). A shorter one
    /// counts as a failure, so a server that accepts and closes at once is not hammered.
    pub healthy_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            factor: 2.0,
            jitter: 0.2,
            healthy_after: Duration::from_secs(10),
        }
    }
}

/// Why a [`BackoffConfig`] is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBackoff {
    /// `initial` is zero or larger than `max`.
    #[error("backoff initial delay must be positive and at most the maximum")]
    Initial,
    /// `factor` is below 1 or not finite.
    #[error("backoff factor must be a finite number >= 1")]
    Factor,
    /// `jitter` is outside `[0, 1)`.
    #[error("backoff jitter must be in [0, 1)")]
    Jitter,
}

/// The current back-off state.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    config: BackoffConfig,
    base: Duration,
}

impl Backoff {
    /// Validates `config` and starts at `initial`.
    ///
    /// # Errors
    /// [`InvalidBackoff`] naming the bad setting.
    pub fn new(config: BackoffConfig) -> Result<Self, InvalidBackoff> {
        if config.initial.is_zero() || config.initial > config.max {
            return Err(InvalidBackoff::Initial);
        }
        if !config.factor.is_finite() || config.factor < 1.0 {
            return Err(InvalidBackoff::Factor);
        }
        if !(0.0..1.0).contains(&config.jitter) {
            return Err(InvalidBackoff::Jitter);
        }
        Ok(Self {
            base: config.initial,
            config,
        })
    }

    /// The delay before the next attempt after a failure, with random jitter; grows the base.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(fastrand::f64())
    }

    /// Like [`Backoff::next_delay`] with the random draw given (`unit` in `[0, 1)`), for tests.
    pub fn next_delay_with(&mut self, unit: f64) -> Duration {
        let spread = self.config.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let delay = self.base.mul_f64(1.0 + spread).min(self.config.max);
        self.base = self.base.mul_f64(self.config.factor).min(self.config.max);
        delay
    }

    /// The un-jittered delay the next failure would start from.
    pub fn current_base(&self) -> Duration {
        self.base
    }

    /// Records that a connection ended after `lived`. Returns true when it counted as healthy:
    /// the delay is reset and the caller reconnects at once; otherwise it should wait
    /// [`Backoff::next_delay`].
    pub fn connection_ended(&mut self, lived: Duration) -> bool {
        let healthy = lived >= self.config.healthy_after;
        if healthy {
            self.base = self.config.initial;
        }
        healthy
    }
}
