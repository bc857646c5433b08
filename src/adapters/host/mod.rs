//! The Direct backend: runs `oz agent run` as a host process in a per-task workspace.

pub mod config;

pub use config::DirectConfig;
