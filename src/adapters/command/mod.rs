//! The Command backend: hands each task to an operator-provided dispatch command.

pub mod config;

pub use config::CommandConfig;
