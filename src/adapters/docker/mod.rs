//! The Docker backend: one container per task on a Docker Engine, through bollard.
//!
//! [`DockerExecutor::connect`] is the start-up preflight (engine reachable, API version
//! negotiated, platform supported) followed by a sweep of what a crashed predecessor left. Each
//! task then resolves and pulls its image ([`image`]), materialises its sidecars into
//! digest-keyed volumes ([`sidecar`]), and runs one labelled container ([`container`],
//! [`labels`]).

mod config;
pub mod container;
mod credentials;
mod executor;
pub mod image;
pub mod labels;
pub mod reference;
pub mod sidecar;

#[cfg(test)]
mod tests;

pub use config::{DockerConfig, PullPolicy};
pub use executor::{
    DEFAULT_DOCKER_HOST, DockerError, DockerExecutor, client_config_dir, docker_host,
};

use crate::domain::TaskFailure;

/// Why a task step stopped early: the task's token fired, or the step failed.
#[derive(Debug)]
pub enum Halt {
    /// The cancellation token fired.
    Cancelled,
    /// The step failed.
    Failed(TaskFailure),
}

impl From<TaskFailure> for Halt {
    fn from(failure: TaskFailure) -> Self {
        Self::Failed(failure)
    }
}
