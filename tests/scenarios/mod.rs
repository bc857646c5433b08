//! End-to-end scenarios: the daemon against a local control plane.

mod binary;
mod control_plane;
mod daemon;
mod daemon_metrics;
mod delivery;
mod deploy;
mod direct;
mod direct_processes;
mod docker;
mod docker_images;
mod kubernetes;
mod kubernetes_node;
mod kubernetes_restart;
mod local_control_plane;
mod restart;
mod restart_chaos;
mod restart_docker;
mod sdk;
