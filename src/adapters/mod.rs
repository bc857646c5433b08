//! Adapters: the outside world behind the ports. Each folder is one technology; adapters
//! translate between library or wire types and domain types and make no decisions of their own.

pub mod command;
pub mod docker;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod host;
pub mod kubernetes;
