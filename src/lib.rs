//! oz-agent-worker: a self-hosted worker for Warp's Oz cloud agents.
//!
//! Modules in reading order: `domain` (pure rules), `ports` (traits in domain terms), `app`
//! (config, wiring, the supervisor loop, shutdown) and `adapters` (WebSocket, backends,
//! OpenTelemetry, fakes). The wire format lives in the `oz-protocol` crate; the local stand-in
//! for Warp's control plane is the `oz-local-control-plane` crate, which the worker never uses.

pub mod adapters;
pub mod app;
pub mod domain;
pub mod ports;
