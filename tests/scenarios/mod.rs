//! End-to-end scenarios: the daemon against a local control plane.

mod docker;
mod docker_images;
