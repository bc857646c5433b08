//! The Kubernetes backend: one Job per task (plus a Secret owned by the Job for the task env
//! values), through kube and k8s-openapi. Cluster selection and the start-up preflight live in
//! `client`/`preflight`, the Job spec in `job`/`template`/`names`, the outcome in
//! `watch`/`failure`. Jobs survive a worker restart.

pub mod client;
pub mod config;
pub mod executor;
pub mod failure;
pub mod job;
pub mod names;
pub mod preflight;
pub mod template;
pub mod watch;

#[cfg(test)]
mod tests;

pub use client::KubeError;
pub use config::{ImagePullPolicy, KubernetesConfig};
pub use executor::KubernetesExecutor;
