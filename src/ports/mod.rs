//! The ports: small traits, in domain terms, through which the app drives the outside world.
//! No bollard, kube, tungstenite or OpenTelemetry type appears here.

pub mod clock;
pub mod executor;
pub mod health;
pub mod metrics;
pub mod task_source;

pub use clock::Clock;
pub use executor::{CancelError, Executor, Orphan};
pub use health::Readiness;
pub use metrics::{Metrics, Signal};
pub use task_source::{ControlEvent, SourceError, TaskSource};

use std::sync::Arc;

/// The ports the supervisor works against, bundled once.
#[derive(Clone)]
pub struct Ports {
    /// The control plane.
    pub source: Arc<dyn TaskSource>,
    /// The execution backend.
    pub executor: Arc<dyn Executor>,
    /// Monotonic time.
    pub clock: Arc<dyn Clock>,
    /// Typed metric signals.
    pub metrics: Arc<dyn Metrics>,
}
