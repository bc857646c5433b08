//! The application layer: configuration, wiring, the supervisor loop and shutdown. Only this
//! layer spawns long-lived tasks; only `main` exits the process.

pub mod bootstrap;
pub mod config;
pub mod logging;
pub mod restart;
pub mod shutdown;
pub mod supervisor;
