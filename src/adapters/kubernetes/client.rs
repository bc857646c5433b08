//! Cluster selection (explicit kubeconfig → in-cluster → default loading rules), the client
//! with its request counter, and the start-up errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kube::Client;
use kube::client::ClientBuilder;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

use super::config::KubernetesConfig;

/// Why the Kubernetes backend could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// A config value is invalid (names the field).
    #[error("invalid kubernetes backend config: {0}")]
    Config(String),
    /// No usable client configuration (kubeconfig unreadable, no in-cluster env, …).
    #[error("failed to load Kubernetes client configuration: {0}")]
    ClientConfig(String),
    /// The API server did not answer the version request.
    #[error("failed to reach Kubernetes API server {server}: {message}")]
    Unreachable {
        /// The server URL.
        server: String,
        /// What went wrong.
        message: String,
    },
    /// The worker's identity lacks permissions the backend needs in the namespace.
    #[error(
        "kubernetes startup preflight failed: the worker's identity is missing RBAC permissions in namespace {namespace:?}: {missing}; grant the Role in docs/kubernetes-rbac.yaml (and check that the namespace exists)"
    )]
    Rbac {
        /// The namespace.
        namespace: String,
        /// The missing permissions, e.g. `batch/jobs: create, watch; pods/log: get`.
        missing: String,
    },
    /// The namespace does not exist.
    #[error("kubernetes startup preflight failed: namespace {0:?} does not exist")]
    MissingNamespace(String),
    /// The preflight Job did not prove that task Jobs can run.
    #[error("kubernetes startup preflight failed: {0}")]
    Preflight(String),
}

/// A client plus the count of API requests it has sent.
#[derive(Clone)]
pub(super) struct CountingClient {
    /// The client.
    pub client: Client,
    /// Requests sent so far.
    pub requests: Arc<AtomicU64>,
    /// The API server URL (for messages).
    pub server: String,
}

impl CountingClient {
    /// Requests sent so far.
    pub(super) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Loads the client configuration: `kubeconfig` when set, else in-cluster, else the default
/// loading rules (`$KUBECONFIG`, `~/.kube/config`, current context).
///
/// # Errors
/// [`KubeError::ClientConfig`] naming the source that failed.
pub(super) async fn client_config(config: &KubernetesConfig) -> Result<Config, KubeError> {
    let loaded = if let Some(path) = &config.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|e| KubeError::ClientConfig(format!("kubeconfig {}: {e}", path.display())))?;
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| KubeError::ClientConfig(format!("kubeconfig {}: {e}", path.display())))?
    } else if let Ok(in_cluster) = Config::incluster() {
        in_cluster
    } else {
        Config::from_kubeconfig(&KubeConfigOptions::default())
            .await
            .map_err(|e| {
                KubeError::ClientConfig(format!(
                    "no kubeconfig configured, not running in a cluster, and the default kubeconfig failed: {e}"
                ))
            })?
    };
    let mut loaded = loaded;
    loaded.connect_timeout = Some(Duration::from_secs(10));
    loaded.default_namespace.clone_from(&config.namespace);
    Ok(loaded)
}

/// Builds a client that counts its requests.
///
/// # Errors
/// [`KubeError::ClientConfig`] when the TLS or auth settings cannot be used.
pub(super) fn counting_client(config: Config) -> Result<CountingClient, KubeError> {
    let server = config.cluster_url.to_string();
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        counter.fetch_add(1, Ordering::Relaxed);
        req
    });
    let client = ClientBuilder::try_from(config)
        .map_err(|e| KubeError::ClientConfig(e.to_string()))?
        .with_layer(&count)
        .build();
    Ok(CountingClient {
        client,
        requests,
        server,
    })
}

/// The API server's own words for an error: the Status message when there is one.
pub(super) fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} ({})", status.message, status.code)
        }
        other => other.to_string(),
    }
}

/// The HTTP status of an API error, if it is one.
pub(super) fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
