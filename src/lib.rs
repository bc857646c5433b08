//! oz-agent-worker: a self-hosted worker for Warp's Oz cloud agents.
//!
//! Modules in reading order: `domain` (pure rules), `ports` (traits in domain terms), `app`
//! (config, wiring, the supervisor loop, shutdown) and `adapters` (WebSocket, backends,
//! OpenTelemetry, fakes).

pub mod adapters;
pub mod app;
pub mod domain;
pub mod ports;
