//! The Command backend: hands each task to an operator-provided dispatch command (payload on
//! stdin) and treats its success as a hand-off to a remote runtime.

mod config;
mod executor;
mod payload;

pub use config::{CommandConfig, DEFAULT_DISPATCH_TIMEOUT};
pub use executor::{CommandError, CommandExecutor};
