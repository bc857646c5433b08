//! The Command backend: hands each task to an operator-provided dispatch command (payload on
//! stdin) and treats its success as a hand-off to a remote runtime.

pub mod config;
mod executor;
pub mod payload;

pub use config::CommandConfig;
pub use executor::{CommandError, CommandExecutor};
