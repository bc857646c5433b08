//! Adapters: the outside world behind the ports. Each folder is one technology; adapters
//! translate between library or wire types and domain types and make no decisions of their own.

pub mod command;
pub mod control_plane;
pub mod docker;
pub mod host;
pub mod kubernetes;
pub mod otel;
pub mod state;
pub mod system_clock;

#[cfg(any(test, feature = "test-util"))]
pub mod fake;
