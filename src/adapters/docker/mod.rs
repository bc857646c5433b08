//! The Docker backend: one container per task on a Docker Engine, through bollard.

pub mod config;

pub use config::{DockerConfig, PullPolicy};
