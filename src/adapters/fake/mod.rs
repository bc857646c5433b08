//! Fakes: small, honest implementations of the ports for tests and benches. Compiled only for
//! tests or with the `test-util` feature.

mod clock;
mod metrics;
mod task_source;

pub use clock::ManualClock;
pub use metrics::RecordingMetrics;
pub use task_source::FakeTaskSource;
