//! The integration test binary: real processes, a real WebSocket server on loopback, and the
//! real Docker Engine / Kubernetes API server / Prometheus where the machine has them.

mod contract;
mod scenarios;
mod support;
