//! The integration test binary: real processes, a real WebSocket server on loopback, and the
//! real Docker Engine / Kubernetes API server / Prometheus where the machine has them.

#![allow(
    clippy::disallowed_methods,
    reason = "integration tests read their service addresses from the environment, time phases and spawn tasks they await"
)]

mod contract;
mod scenarios;
mod support;
