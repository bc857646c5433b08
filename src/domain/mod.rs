//! The pure core of the worker: tasks, their lifecycle, the concurrency policy, the `oz agent
//! run` argv and environment derivation, and failure classification.
//!
//! Nothing here does I/O, spawns, logs or reads a clock: time arrives as an argument. The domain
//! knows nothing about WebSockets, Docker, Kubernetes or OpenTelemetry.

pub mod argv;
pub mod env;
pub mod failure;
pub mod lifecycle;
pub mod policy;
pub mod redact;
pub mod report;
pub mod secret;
pub mod spec;
pub mod task;

pub use failure::{CancelSource, Exit, FailurePhase, FailureReason, TaskFailure, TaskResult};
pub use lifecycle::{
    Capacity, Effect, TaskEvent, TaskState, Transition, TransitionError, adopt, assign,
};
pub use policy::{Admission, ConcurrencyPolicy, Intake, RejectReason};
pub use report::TaskReport;
pub use secret::ApiKey;
pub use spec::{SpecSettings, TaskSpec};
pub use task::{
    AgentConfig, Assignment, AwsInference, InstanceShape, Owner, OwnerType, SidecarMount, Task,
    TaskId,
};
