//! Fakes: small, honest implementations of the ports for unit tests, `tests/` and benches
//! (feature `test-util`). Each behaves as the contract suites require of the real adapters.

mod clock;
mod executor;
mod metrics;
mod task_source;

pub use clock::ManualClock;
pub use executor::{FakeExecutor, Script};
pub use metrics::RecordingMetrics;
pub use task_source::FakeTaskSource;
