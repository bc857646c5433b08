//! The Kubernetes backend: one Job per task (plus a Secret owned by the Job for the task env
//! values), through kube and k8s-openapi. Cluster selection and the start-up preflight live in
//! `client`/`preflight`, the Job spec in `job`/`template`/`names`, the outcome in
//! `watch`/`failure`. Jobs survive a worker restart: each worker process holds a Lease
//! (`lease`), and the Jobs of processes whose Lease is gone or lapsed are adopted (`adopt`).

mod adopt;
mod client;
mod config;
mod executor;
mod failure;
mod job;
mod lease;
pub mod names;
mod preflight;
mod template;
mod watch;

#[cfg(test)]
mod tests;

pub use client::KubeError;
pub use config::{
    DEFAULT_ACTIVE_DEADLINE_SECONDS, DEFAULT_TTL_SECONDS_AFTER_FINISHED, ImagePullPolicy,
    KubernetesConfig,
};
pub use executor::KubernetesExecutor;
pub use lease::DEFAULT_LEASE_DURATION;
