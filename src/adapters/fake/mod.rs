//! Honest in-memory fakes of the ports, for unit tests, `tests/` and benches (feature
//! `test-util`). Each behaves as the contract suites require of the real adapters.

mod executor;

pub use executor::{FakeExecutor, Script};
