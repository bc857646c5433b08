//! The executor contract against the Direct backend (`HostExecutor`), running
//! `scripts/oz-standin` as the `oz` CLI in real processes.

use std::path::PathBuf;
use std::time::Duration;

use oz_agent_worker::adapters::host::{DirectConfig, HostEnv, HostExecutor};
use oz_agent_worker::domain::{FailureReason, TaskSpec};
use tempfile::TempDir;

use super::executor::{Harness, Workload, base_spec, executor_contract};
use crate::support::standin;

/// The worker's own API key in the harness's host env: must never reach the agent.
pub(crate) const WORKER_KEY: &str = "worker-secret-key-123";

/// A `HostExecutor` over a temporary workspace root, with reports in a second temp dir.
pub(crate) struct HostHarness {
    executor: HostExecutor,
    root: TempDir,
    reports: TempDir,
}

impl HostHarness {
    /// A harness with `kill_grace` of 2 s.
    pub(crate) fn new() -> Self {
        let root = TempDir::new().expect("temp dir");
        let config = DirectConfig {
            workspace_root: root.path().join("workspaces"),
            oz_path: Some(standin::standin_path()),
            kill_grace: Duration::from_secs(2),
            ..DirectConfig::default()
        };
        let executor = HostExecutor::with_host_env(&config, host_env()).expect("preflight");
        Self {
            executor,
            root,
            reports: TempDir::new().expect("temp dir"),
        }
    }

    fn report(&self, id: &str) -> PathBuf {
        self.reports.path().join(id)
    }

    fn workspace(&self, id: &str) -> PathBuf {
        self.root.path().join("workspaces").join(id)
    }
}

/// The worker environment the harness hands the executor: this process's `PATH` and `HOME`,
/// plus a worker API key.
pub(crate) fn host_env() -> HostEnv {
    let mut pairs: Vec<(String, String)> = ["PATH", "HOME"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
        .collect();
    pairs.push(("WARP_API_KEY".into(), WORKER_KEY.into()));
    HostEnv::from_pairs(pairs)
}

impl Harness for HostHarness {
    type Exec = HostExecutor;

    fn executor(&self) -> &HostExecutor {
        &self.executor
    }

    fn spec(&self, id: &str, workload: Workload, env: &[(&str, &str)]) -> TaskSpec {
        let mut spec = base_spec(id, env);
        spec.env
            .push("OZ_STANDIN_REPORT", self.report(id).to_string_lossy());
        match workload {
            Workload::Succeeds => {}
            Workload::ExitsWith(code) => spec.env.push("OZ_STANDIN_EXIT", code.to_string()),
            Workload::Hangs => {
                spec.env.push("OZ_STANDIN_SLEEP", "forever");
                spec.env.push("OZ_STANDIN_SPAWN_CHILD", "1");
            }
        }
        spec
    }

    async fn wait_running(&self, id: &str) {
        standin::wait_for_pid(&self.report(id)).await;
    }

    fn seen_env_names(&self, id: &str) -> Vec<String> {
        standin::seen_env_names(&self.report(id))
    }

    async fn leftovers(&self, id: &str) -> Vec<String> {
        let mut left: Vec<String> =
            standin::wait_all_dead(&standin::reported_pids(&self.report(id)))
                .await
                .into_iter()
                .map(|pid| format!("process {pid} still alive"))
                .collect();
        if self.workspace(id).exists() {
            left.push(format!(
                "workspace {} still exists",
                self.workspace(id).display()
            ));
        }
        left
    }

    fn exit_reason(&self) -> FailureReason {
        FailureReason::AgentInvocation
    }

    fn bad_spec(&self) -> (TaskSpec, FailureReason) {
        (base_spec("../x", &[]), FailureReason::WorkspaceSetup)
    }
}

executor_contract!(host, Some(super::HostHarness::new()));
