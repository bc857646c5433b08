//! The Direct backend's test scratch area: a temp workspace root, reports and markers, and a
//! config running `scripts/oz-standin` as `oz`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oz_agent_worker::adapters::host::{DirectConfig, HostExecutor};
use oz_agent_worker::domain::{Exit, TaskFailure, TaskSpec};
use oz_agent_worker::ports::Executor;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::standin::{self, PROCESS_BOUND};
use crate::contract::executor::base_spec;
use crate::contract::executor_host::host_env;

/// A scratch area: a workspace root, a place for reports and markers, and a config.
pub(crate) struct Direct {
    /// The scratch directory.
    pub dir: TempDir,
    /// The config `executor()` builds from.
    pub config: DirectConfig,
}

impl Direct {
    /// A fresh scratch area with a 2 s kill grace.
    pub(crate) fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let config = DirectConfig {
            workspace_root: dir.path().join("workspaces"),
            oz_path: Some(standin::standin_path()),
            kill_grace: Duration::from_secs(2),
            ..DirectConfig::default()
        };
        Self { dir, config }
    }

    /// A path inside the scratch directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Builds the executor (preflight included) with the contract harness's host env.
    pub(crate) fn executor(&self) -> HostExecutor {
        HostExecutor::with_host_env(&self.config, host_env()).expect("preflight")
    }

    /// The per-task workspace of `id`.
    pub(crate) fn workspace(&self, id: &str) -> PathBuf {
        self.config.workspace_root.join(id)
    }

    /// A spec whose stand-in reports to `<dir>/<id>.report` and shows `show`'s values.
    pub(crate) fn spec(&self, id: &str, env: &[(&str, &str)], show: &[&str]) -> TaskSpec {
        let mut spec = base_spec(id, env);
        spec.env
            .push("OZ_STANDIN_REPORT", self.report(id).to_string_lossy());
        spec.env.push("OZ_STANDIN_SHOW", show.join(","));
        spec
    }

    /// Starts `spec` in the background and waits until its agent reported its pid; returns the
    /// token that cancels it and the run's handle.
    pub(crate) async fn start_agent(
        &self,
        executor: &HostExecutor,
        spec: &TaskSpec,
    ) -> (
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<Result<Exit, TaskFailure>>,
    ) {
        let started = start(executor, spec);
        super::standin::wait_for_pid(&self.report(spec.task_id.as_str())).await;
        started
    }

    /// Starts task `id` with an agent that sleeps until stopped, waits until it runs and
    /// cancels it; returns the run's handle.
    pub(crate) async fn cancel_running_agent(
        &self,
        id: &str,
    ) -> tokio::task::JoinHandle<Result<Exit, TaskFailure>> {
        let mut spec = self.spec(id, &[], &[]);
        spec.env.push("OZ_STANDIN_SLEEP", "forever");
        let (token, task) = self.start_agent(&self.executor(), &spec).await;
        token.cancel();
        task
    }

    /// The stand-in report file of `id`.
    pub(crate) fn report(&self, id: &str) -> PathBuf {
        self.path(&format!("{id}.report"))
    }
}

/// Runs `spec` to the end, bounded by [`PROCESS_BOUND`].
/// Starts `spec` in the background; returns the token that cancels it and the run's handle.
pub(crate) fn start(
    executor: &HostExecutor,
    spec: &TaskSpec,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<Result<Exit, TaskFailure>>,
) {
    let token = tokio_util::sync::CancellationToken::new();
    let (executor, spec, run_token) = (executor.clone(), spec.clone(), token.clone());
    let handle = tokio::spawn(async move { executor.run(&spec, run_token).await });
    (token, handle)
}

pub(crate) async fn run(executor: &HostExecutor, spec: &TaskSpec) -> Result<Exit, TaskFailure> {
    tokio::time::timeout(PROCESS_BOUND, executor.run(spec, CancellationToken::new()))
        .await
        .expect("the run finishes within the bound")
}

/// The lines of a file (empty when missing).
pub(crate) fn lines(path: &Path) -> Vec<String> {
    standin::report_lines(path)
}

/// The sorted names in a directory.
pub(crate) fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
