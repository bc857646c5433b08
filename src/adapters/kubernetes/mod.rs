//! The Kubernetes backend: one Job per task, through kube and k8s-openapi.

pub mod config;

pub use config::{ImagePullPolicy, KubernetesConfig};
