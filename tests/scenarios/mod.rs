//! End-to-end scenarios: the daemon against a local control plane.

mod control_plane;
mod docker;
mod kubernetes;
mod local_control_plane;
mod direct;
mod direct_processes;
