//! End-to-end scenarios: the daemon against a local control plane.

mod direct;
mod direct_processes;
