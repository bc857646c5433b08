//! Runs the real worker daemon in-process (config → bootstrap → run) on the Direct backend
//! with the stand-in `oz`, against a local control plane on 127.0.0.1.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use oz_agent_worker::adapters::host::HostEnv;
use oz_agent_worker::app::bootstrap;
use oz_agent_worker::app::config::{self, Invocation};
use oz_local_control_plane::{LocalControlPlane, Received, sample_assignment};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::standin::standin_path;

/// The API key the tests' control plane expects.
pub(crate) const API_KEY: &str = "worker-key-do-not-log-1234";

/// A running daemon.
pub(crate) struct Daemon {
    /// Fires the graceful shutdown.
    pub shutdown: CancellationToken,
    /// Resolves when the daemon stopped.
    pub handle: JoinHandle<anyhow::Result<()>>,
    /// Temp dir holding the config, workspaces and the stand-in report.
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// The stand-in's report file (set with `OZ_STANDIN_REPORT`).
    pub(crate) fn report(&self) -> PathBuf {
        self.dir.path().join("report.txt")
    }

    /// Shuts down gracefully and returns the daemon's result.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("daemon did not stop within 60s")
            .expect("daemon task panicked")
    }
}

/// A control plane on an ephemeral loopback port.
pub(crate) async fn control_plane() -> LocalControlPlane {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    LocalControlPlane::start(addr, API_KEY).await.unwrap()
}

/// Starts the daemon on the Direct backend. `extra` are more CLI flags (e.g. `-e` knobs).
pub(crate) async fn spawn_direct(cp: &LocalControlPlane, extra: &[&str]) -> Daemon {
    spawn_direct_with_env(cp, extra, &[]).await
}

/// As [`spawn_direct`], with process environment overrides (e.g. `OTEL_*`).
pub(crate) async fn spawn_direct_with_env(
    cp: &LocalControlPlane,
    extra: &[&str],
    env_overrides: &[(&str, &str)],
) -> Daemon {
    try_spawn_direct_with_env(cp, extra, env_overrides)
        .await
        .expect("daemon builds")
}

/// As [`spawn_direct_with_env`], but a failed build (e.g. a `--health-listen` address that
/// cannot be bound) is returned instead of failing the test.
pub(crate) async fn try_spawn_direct_with_env(
    cp: &LocalControlPlane,
    extra: &[&str],
    env_overrides: &[(&str, &str)],
) -> anyhow::Result<Daemon> {
    let dir = tempfile::tempdir().unwrap();
    let config_file = direct_config_file(&dir);
    let report = format!(
        "OZ_STANDIN_REPORT={}",
        dir.path().join("report.txt").display()
    );
    let mut args: Vec<String> = [
        "--config-file",
        &config_file.display().to_string(),
        "--web-socket-url",
        &cp.ws_url(),
        "--server-root-url",
        "http://127.0.0.1:1",
        "--log-level",
        "debug",
        "-e",
        &report,
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    start(dir, args, env_overrides).await
}

/// Loads `args` (after the program name) as a run invocation, with `WARP_API_KEY` set, the
/// metrics exporter off and `env_overrides` on top of the process environment; builds the
/// daemon and runs it in a task. `dir` is kept alive as the daemon's.
pub(crate) async fn start(
    dir: tempfile::TempDir,
    args: Vec<String>,
    env_overrides: &[(&str, &str)],
) -> anyhow::Result<Daemon> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = std::iter::once("oz-agent-worker".to_owned()).chain(args);
    let mut env: HashMap<String, String> = std::env::vars().collect();
    env.insert("WARP_API_KEY".into(), API_KEY.into());
    env.insert("OTEL_METRICS_EXPORTER".into(), "none".into());
    for (key, value) in env_overrides {
        env.insert((*key).into(), (*value).into());
    }
    let process_env = env.clone();
    let lookup = move |name: &str| env.get(name).cloned();
    let loaded = config::load(args, &lookup).expect("valid scenario config");
    let Invocation::Run(config) = loaded.invocation else {
        panic!("expected a run invocation");
    };
    // The daemon's process environment is `env`, as if it had been started with it.
    let app = bootstrap::build(&config, &HostEnv::from_pairs(process_env)).await?;
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run(shutdown.clone()));
    Ok(Daemon {
        shutdown,
        handle,
        dir,
    })
}

/// Waits for the next frame from the worker, failing the test after 30 s.
pub(crate) async fn next(cp: &LocalControlPlane) -> Received {
    cp.next_message(Duration::from_secs(30))
        .await
        .expect("no message from the worker within 30s")
}

/// A sample assignment whose task carries a secret env value.
pub(crate) fn assignment_with_secret(task_id: &str, secret: &str) -> serde_json::Value {
    let mut data = sample_assignment(task_id);
    data["env_vars"]["GITHUB_ACCESS_TOKEN"] = serde_json::json!(secret);
    data
}

/// Writes the Direct-backend config file of the scenario daemons into `dir`.
pub(crate) fn direct_config_file(dir: &tempfile::TempDir) -> PathBuf {
    let config_file = dir.path().join("config.yaml");
    std::fs::write(
        &config_file,
        format!(
            "worker_id: scenario-worker\nstate_dir: {}\nbackend:\n  direct:\n    workspace_root: {}\n    oz_path: {}\n",
            dir.path().join("state").display(),
            dir.path().join("workspaces").display(),
            standin_path().display()
        ),
    )
    .unwrap();
    config_file
}

/// A loopback port that was free a moment ago (for flags that take a fixed address).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The worker binary under test.
pub(crate) const WORKER_BIN: &str = env!("CARGO_BIN_EXE_oz-agent-worker");

/// The worker binary on `config`, dialling `cp`, with `extra` arguments: the API key in the
/// environment, metrics off, stdin and stdout closed, stderr piped, killed when dropped.
pub(crate) fn worker_command(
    cp: &LocalControlPlane,
    config: &std::path::Path,
    extra: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(WORKER_BIN);
    command
        .arg("--config-file")
        .arg(config)
        .args(["--web-socket-url", &cp.ws_url()])
        .args(["--server-root-url", "http://127.0.0.1:1"])
        .args(extra)
        .env("WARP_API_KEY", API_KEY)
        .env("OTEL_METRICS_EXPORTER", "none")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}
