//! The compiled `oz-agent-worker` binary as an operator runs it: `--version`, config errors,
//! `check`, and SIGTERM/SIGINT against the local control plane on the Direct backend with the
//! stand-in `oz`; plus `scripts/quickstart.sh` with the prebuilt binaries. Tests wait on events
//! (lines on the child's stderr, frames and connections seen by the control plane), never on
//! sleeps; every wait is bounded so a hang fails the test.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use oz_agent_worker::app::shutdown::stop_runtime;
use oz_local_control_plane::{LocalControlPlane, sample_assignment};
use oz_protocol::WorkerMessage;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::support::daemon::{API_KEY, control_plane, next, worker_command};
use crate::support::standin::{standin_path, wait_all_dead};

/// The binary under test, built by cargo for this test run.
const WORKER: &str = env!("CARGO_BIN_EXE_oz-agent-worker");
/// Hang guard for every wait on a process or an event.
const BOUND: Duration = Duration::from_secs(30);
/// The worker id of the daemon scenarios.
const WORKER_ID: &str = "binary-worker";

/// A worker process; its stderr is collected line by line (and echoed, so a failing test shows
/// it). Killed when dropped.
struct WorkerProcess {
    child: Child,
    pid: Pid,
    stderr: watch::Receiver<Vec<String>>,
    /// Holds the config and the workspaces.
    _dir: TempDir,
}

impl WorkerProcess {
    /// Starts the binary on the Direct backend against `cp`. `direct_yaml` is appended to the
    /// `backend.direct` section; `extra` are more CLI flags.
    fn spawn(cp: &LocalControlPlane, direct_yaml: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("config.yaml");
        std::fs::write(
            &config_file,
            format!(
                "worker_id: {WORKER_ID}\nstate_dir: {}\nbackend:\n  direct:\n    \
                 workspace_root: {}\n    oz_path: {}\n{direct_yaml}",
                dir.path().join("state").display(),
                dir.path().join("workspaces").display(),
                standin_path().display()
            ),
        )
        .unwrap();
        let mut child = worker_command(cp, &config_file, extra)
            .spawn()
            .expect("the worker binary starts");
        let pid = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
        let stderr = collect_lines(child.stderr.take().unwrap());
        Self {
            child,
            pid,
            stderr,
            _dir: dir,
        }
    }

    /// Sends `signal` to the worker.
    fn signal(&self, signal: Signal) {
        kill(self.pid, signal).expect("the worker is alive to receive the signal");
    }

    /// Waits (bounded) for a stderr line containing `needle` and returns it.
    async fn line(&self, needle: &str) -> String {
        let mut stderr = self.stderr.clone();
        let waited = tokio::time::timeout(
            BOUND,
            stderr.wait_for(|lines| lines.iter().any(|l| l.contains(needle))),
        )
        .await;
        match waited {
            Ok(Ok(lines)) => lines.iter().find(|l| l.contains(needle)).unwrap().clone(),
            _ => panic!(
                "no stderr line containing {needle:?} within {BOUND:?}; stderr:\n{}",
                self.stderr_text()
            ),
        }
    }

    /// The agent's pid, from the stand-in's `pid:` line (its traps are installed by then).
    async fn agent_pid(&self) -> i32 {
        let line = self.line("oz-standin: pid: ").await;
        // The output event's fields (task_id=… phase=… stream=…) follow the message.
        let after = line.rsplit("oz-standin: pid: ").next().unwrap();
        after.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Waits (bounded) for the process to exit and for the end of its stderr, so
    /// [`WorkerProcess::stderr_text`] then holds every line.
    async fn exit(&mut self) -> ExitStatus {
        let status = match tokio::time::timeout(BOUND, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "the worker did not exit within {BOUND:?}; stderr:\n{}",
                self.stderr_text()
            ),
        };
        let mut stderr = self.stderr.clone();
        let end = async { while stderr.changed().await.is_ok() {} };
        tokio::time::timeout(BOUND, end)
            .await
            .expect("the worker's stderr ends with the worker");
        status
    }

    /// Everything written to stderr so far.
    fn stderr_text(&self) -> String {
        self.stderr.borrow().join("\n")
    }
}

/// Reads `stream` line by line into a watch channel (closed at end of stream).
fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> watch::Receiver<Vec<String>> {
    let (lines_tx, lines_rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[worker stderr] {line}");
            lines_tx.send_modify(|all| all.push(line));
        }
    });
    lines_rx
}

/// Runs the worker binary with `args` and `env` to the end (bounded), stdin closed.
async fn run_worker(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(WORKER);
    command
        .args(args)
        .env_remove("WARP_API_KEY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(BOUND, command.output())
        .await
        .expect("the worker exits within the bound")
        .expect("the worker binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn connected(cp: &LocalControlPlane) {
    cp.wait_connections(BOUND, |c| c.iter().any(|c| c.open))
        .await
        .expect("the worker did not connect");
}

/// Assigns `task_id` and waits until it is claimed and its agent runs; returns the agent's pid.
async fn start_task(cp: &LocalControlPlane, worker: &WorkerProcess, task_id: &str) -> i32 {
    connected(cp).await;
    cp.assign(&sample_assignment(task_id)).unwrap();
    assert_eq!(
        next(cp).await.message,
        Some(WorkerMessage::TaskClaimed {
            task_id: task_id.into(),
            worker_id: WORKER_ID.into(),
        })
    );
    worker.agent_pid().await
}

/// SIGKILLs the groups of `pids` that are still alive after a bounded wait, so a failing test
/// leaks nothing; returns those survivors.
async fn survivors(pids: &[i32]) -> Vec<i32> {
    let alive = wait_all_dead(pids).await;
    for pid in &alive {
        let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    alive
}

#[tokio::test]
async fn version_prints_the_crate_version_on_stdout() {
    let output = run_worker(&["--version"], &[]).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    // The crate version, then the commit when built from a git checkout (build.rs).
    assert_eq!(
        text(&output.stdout).trim(),
        format!("oz-agent-worker {}", env!("OZ_BUILD_VERSION"))
    );
    assert!(env!("OZ_BUILD_VERSION").starts_with(env!("CARGO_PKG_VERSION")));
    if std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".git")
        .exists()
    {
        assert!(
            env!("OZ_BUILD_VERSION").contains(" (git "),
            "{}",
            env!("OZ_BUILD_VERSION")
        );
    }
    assert_eq!(text(&output.stderr), "");
}

#[tokio::test]
async fn a_bad_config_exits_64_naming_every_field_and_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("bad.yaml");
    std::fs::write(
        &config_file,
        "bogus_key: 1\nbackend:\n  docker:\n    stop_grace_period: 10 parsecs\n",
    )
    .unwrap();
    let config_arg = config_file.to_str().unwrap();
    let common = [
        "unknown key \"bogus_key\"",
        config_arg,
        "invalid --volumes value #1 \"relative/path:/data\"",
        "must be an absolute path",
        "invalid backend.docker.stop_grace_period \"10 parsecs\"",
        "expected a Go duration",
    ];
    let cases: [(&[&str], &str); 2] = [
        (&[], "worker-id is required"),
        (
            &["--worker-id", "warp-1"],
            "invalid worker-id \"warp-1\": values starting with 'warp' are reserved",
        ),
    ];
    for (worker_id_args, worker_id_problem) in cases {
        let mut args = vec!["--config-file", config_arg, "-v", "relative/path:/data"];
        args.extend_from_slice(worker_id_args);
        let output = run_worker(&args, &[("WARP_API_KEY", API_KEY)]).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains("4 problems"), "{args:?}: {stderr}");
        for expected in common.iter().chain([&worker_id_problem]) {
            assert!(
                stderr.contains(expected),
                "{args:?}: no {expected:?} in {stderr}"
            );
        }
        assert!(!stderr.contains(API_KEY), "{stderr}");
        assert_eq!(text(&output.stdout), "", "{args:?}");
    }
}

#[tokio::test]
async fn check_prints_the_effective_config_with_secrets_redacted_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.yaml");
    std::fs::write(
        &config_file,
        format!(
            "worker_id: check-worker\nbackend:\n  direct:\n    workspace_root: {}\n",
            dir.path().join("workspaces").display()
        ),
    )
    .unwrap();
    let url = format!("ws://127.0.0.1:{}/api/v1/selfhosted/worker/ws", free_port());
    let env_secret = "check-env-value-do-not-print-5678";
    let env_arg = format!("OZ_CHECK_TOKEN={env_secret}");
    let args = [
        "check",
        "--config-file",
        config_file.to_str().unwrap(),
        "--web-socket-url",
        &url,
        "-e",
        &env_arg,
    ];
    let output = run_worker(&args, &[("WARP_API_KEY", API_KEY)]).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"worker_id: check-worker"), "{stdout}");
    assert!(
        lines.contains(&format!("web_socket_url: {url}").as_str()),
        "{stdout}"
    );
    let api_key = lines.iter().find(|l| l.starts_with("api_key:"));
    assert!(api_key.is_some(), "no api_key field in {stdout}");
    assert!(stdout.contains("OZ_CHECK_TOKEN"), "{stdout}");
    for secret in [API_KEY, env_secret] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}{stderr}"
        );
    }
    assert!(!stderr.contains("Connecting to"), "{stderr}");
}

/// The first signal shuts down gracefully: the running task is reported as
/// `graceful_shutdown` before the close frame, and the process exits 0.
async fn graceful_shutdown_on(signal: Signal, signal_name: &str) {
    let cp = control_plane().await;
    let mut worker = WorkerProcess::spawn(&cp, "", &["-e", "OZ_STANDIN_SLEEP=forever"]);
    let agent = start_task(&cp, &worker, "bin-graceful").await;
    worker.signal(signal);
    worker
        .line(&format!(
            "Received signal {signal_name}, shutting down gracefully"
        ))
        .await;
    let closed = cp
        .wait_connections(BOUND, |c| c.iter().any(|c| c.close_code.is_some()))
        .await
        .expect("no close frame");
    let closed = closed.iter().find(|c| c.close_code.is_some()).unwrap();
    assert_eq!(closed.close_code, Some(1000));
    // The server reads a connection's frames in order, so a report sent before the close frame
    // is already queued, on the same connection.
    let report = next(&cp).await;
    assert_eq!(report.connection, closed.id);
    match report.message {
        Some(WorkerMessage::TaskFailed {
            task_id,
            failure_reason,
            ..
        }) => {
            assert_eq!(task_id, "bin-graceful");
            assert_eq!(failure_reason.as_deref(), Some("graceful_shutdown"));
        }
        other => panic!("expected task_failed(graceful_shutdown), got {other:?}"),
    }
    let status = worker.exit().await;
    assert_eq!(status.code(), Some(0), "{}", worker.stderr_text());
    assert!(worker.stderr_text().contains("Worker shutdown complete"));
    assert!(!worker.stderr_text().contains(API_KEY));
    assert_eq!(survivors(&[agent]).await, Vec::<i32>::new());
}

#[tokio::test]
async fn sigterm_reports_the_running_task_closes_and_exits_0() {
    graceful_shutdown_on(Signal::SIGTERM, "terminated").await;
}

#[tokio::test]
async fn sigint_reports_the_running_task_closes_and_exits_0() {
    graceful_shutdown_on(Signal::SIGINT, "interrupt").await;
}

#[tokio::test]
async fn a_second_signal_during_a_slow_shutdown_exits_at_once_with_128_plus_signal() {
    let cp = control_plane().await;
    // The agent ignores SIGTERM and the kill grace outlasts the 15 s stop deadline, so the
    // graceful shutdown would take at least that long and then exit 0.
    let mut worker = WorkerProcess::spawn(
        &cp,
        "    kill_grace_period: 5m\n",
        &[
            "-e",
            "OZ_STANDIN_SLEEP=forever",
            "-e",
            "OZ_STANDIN_IGNORE_TERM=1",
        ],
    );
    let agent = start_task(&cp, &worker, "bin-stubborn").await;
    worker.signal(Signal::SIGTERM);
    // The shutdown has begun and is now waiting for the agent.
    worker.line("oz-standin: ignored SIGTERM").await;
    worker.signal(Signal::SIGINT);
    let status = worker.exit().await;
    assert_eq!(status.code(), Some(130), "{}", worker.stderr_text());
    assert!(
        worker
            .stderr_text()
            .contains("Received signal interrupt again, exiting immediately")
    );
    assert!(!worker.stderr_text().contains("Worker shutdown complete"));
    // Exiting at once still kills the agent's process group.
    assert_eq!(survivors(&[agent]).await, Vec::<i32>::new());
}

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn stopping_the_runtime_drops_its_tasks_and_does_not_wait_for_a_stuck_blocking_call() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    runtime.spawn_blocking(move || {
        started_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    started_rx
        .recv_timeout(BOUND)
        .expect("the blocking call started");
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = SetOnDrop(dropped.clone());
    runtime.spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        stop_runtime(runtime);
        let _ = stopped_tx.send(());
    });
    let stopped = stopped_rx.recv_timeout(BOUND);
    release_tx.send(()).unwrap();
    stopped.expect("stop_runtime waited for the blocking call");
    assert!(dropped.load(Ordering::SeqCst), "a task was not dropped");
}

/// A directory with a `cargo` that fails, to prove the script does not build.
fn failing_cargo() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cargo = dir.path().join("cargo");
    std::fs::write(
        &cargo,
        "#!/bin/sh\necho 'cargo must not run' >&2\nexit 97\n",
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test]
async fn the_quick_start_runs_one_task_to_completion_with_prebuilt_binaries() {
    let bin_dir = Path::new(WORKER).parent().unwrap();
    let control_plane_bin = crate::support::local_control_plane_bin();
    assert_eq!(control_plane_bin.parent(), Some(bin_dir));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/quickstart.sh");
    let no_cargo = failing_cargo();
    let path = format!(
        "{}:{}",
        no_cargo.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = Command::new("bash")
        .arg(&script)
        .arg("1")
        .env("OZ_QUICKSTART_BIN_DIR", bin_dir)
        .env("OZ_QUICKSTART_PORT", free_port().to_string())
        .env("PATH", path)
        .env_remove("WARP_API_KEY")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let group = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    let Ok(output) = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await
    else {
        let _ = killpg(group, Signal::SIGKILL);
        panic!("the quick start did not finish within 60s");
    };
    let output = output.unwrap();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let position = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{stdout}{stderr}"))
    };
    let connected = position("[control plane] connected connection=1 worker_id=quickstart");
    let claimed = position("[control plane] claimed task_id=local-task-1 worker_id=quickstart");
    let completed = position("[control plane] completed task_id=local-task-1");
    assert!(connected < claimed && claimed < completed, "{stdout}");
    position("[control plane] done tasks=1 failed=0");
    let agent_output = lines.iter().any(|l| {
        l.starts_with("[worker] ")
            && l.contains("oz-standin: argv: agent run --task-id local-task-1")
    });
    assert!(agent_output, "no agent output in:\n{stdout}");
    // The script's SIGTERM reached the worker itself, which shut down gracefully.
    let worker_stopped = lines
        .iter()
        .any(|l| l.starts_with("[worker] ") && l.contains("Received signal terminated"));
    assert!(worker_stopped, "{stdout}");
    assert!(stdout.contains("worker with 0"), "{stdout}");
    assert!(!stderr.contains("cargo must not run"), "{stderr}");
}

/// The task secrets of [`a_task_printing_its_secrets_leaks_none_into_any_log_line`]: one line,
/// the task's own `WARP_API_KEY`, and a multi-line PEM block.
const PRINTED_SECRET: &str = "single-line-secret-value-9876";
const PRINTED_TASK_KEY: &str = "task-warp-key-value-5432";
const PRINTED_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nqL0pemBodyLineTwo7Zx\n-----END PRIVATE KEY-----";

/// Runs one task whose agent prints every secret on stdout and stderr and then fails, with the
/// worker at `--log-level debug` (the most it logs) in `format`; returns the worker's stderr.
async fn run_secret_printing_task(format: &str, task_id: &str) -> String {
    let cp = control_plane().await;
    // A value with commas goes in the config file (`-e` refuses commas, as the Go worker
    // would split them).
    let knobs = "    environment:\n      - {name: OZ_STANDIN_PRINT_VAR, value: \"WARP_API_KEY,OZ_TEST_SECRET,OZ_TEST_PEM\"}\n";
    let mut worker = WorkerProcess::spawn(
        &cp,
        knobs,
        &[
            "--log-level",
            "debug",
            "--log-format",
            format,
            "-e",
            "OZ_STANDIN_EXIT=3",
        ],
    );
    connected(&cp).await;
    let mut assignment = sample_assignment(task_id);
    assignment["env_vars"] = serde_json::json!({
        "WARP_API_KEY": PRINTED_TASK_KEY,
        "OZ_TEST_SECRET": PRINTED_SECRET,
        "OZ_TEST_PEM": PRINTED_PEM,
    });
    cp.assign(&assignment).unwrap();
    assert!(matches!(
        next(&cp).await.message,
        Some(WorkerMessage::TaskClaimed { .. })
    ));
    let Some(WorkerMessage::TaskFailed { message, .. }) = next(&cp).await.message else {
        panic!("the task must fail (exit 3)");
    };
    assert!(
        message.contains("oz-standin: OZ_TEST_SECRET is ***"),
        "{message}"
    );
    assert_no_secret(&message);
    worker.signal(Signal::SIGTERM);
    assert_eq!(worker.exit().await.code(), Some(0));
    worker.stderr_text()
}

/// Fails when `text` holds a secret: the worker's API key, a task secret, or any line of the
/// PEM block's body.
fn assert_no_secret(text: &str) {
    let pem_body = PRINTED_PEM.lines().filter(|l| !l.starts_with("-----"));
    for secret in [API_KEY, PRINTED_SECRET, PRINTED_TASK_KEY]
        .into_iter()
        .chain(pem_body)
    {
        assert!(!text.contains(secret), "{secret:?} leaked into:\n{text}");
    }
}

#[tokio::test]
async fn a_task_printing_its_secrets_leaks_none_into_any_log_line_in_text() {
    let task_id = "bin-secrets-text";
    let stderr = run_secret_printing_task("text", task_id).await;
    assert_no_secret(&stderr);
    // Every line about the task carries its id, the failure report's (one line, its output
    // tail's newlines escaped) too.
    for line in stderr.lines().filter(|l| l.contains("oz-standin: ")) {
        assert!(line.contains(&format!("task_id={task_id}")), "{line}");
    }
    let output: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("oz-standin: ") && !l.contains("Task execution failed"))
        .collect();
    // argv, cwd, env, 3 values on stdout and again on stderr, pid, exit, the exit status.
    assert!(output.len() >= 11, "{stderr}");
    for line in &output {
        assert!(line.contains(" INFO "), "output is an info event: {line}");
        assert!(line.contains(&format!("task_id={task_id}")), "{line}");
        assert!(line.contains("phase=agent"), "{line}");
        assert!(
            line.contains("stream=stdout") || line.contains("stream=stderr"),
            "{line}"
        );
    }
    for shown in [
        "oz-standin: WARP_API_KEY is ***",
        "oz-standin: OZ_TEST_SECRET on stderr: ***",
        "oz-standin: OZ_TEST_PEM is ***",
    ] {
        assert!(
            output.iter().any(|l| l.contains(shown)),
            "{shown}: {stderr}"
        );
    }
    // Reports are logged at debug by type and task id; a frame itself never is.
    let sent = stderr
        .lines()
        .find(|l| l.contains("WebSocket sent task_failed"))
        .unwrap_or_else(|| panic!("no debug line for the sent report:\n{stderr}"));
    assert!(sent.contains(&format!("task_id={task_id}")), "{sent}");
    assert!(
        !stderr.contains("\"type\":\"task_"),
        "a raw frame: {stderr}"
    );
}

#[tokio::test]
async fn a_task_printing_its_secrets_leaks_none_into_any_log_line_in_json() {
    let task_id = "bin-secrets-json";
    let stderr = run_secret_printing_task("json", task_id).await;
    assert_no_secret(&stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let message = |l: &serde_json::Value| l["message"].as_str().unwrap_or_default().to_owned();
    let output: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| message(l).starts_with("oz-standin: "))
        .collect();
    assert!(output.len() >= 11, "{stderr}");
    for line in &output {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["phase"], "agent", "{line}");
        assert!(
            line["stream"] == "stdout" || line["stream"] == "stderr",
            "{line}"
        );
    }
    // Every line about the task carries its id as a top-level field.
    let about_task: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.to_string().contains(task_id))
        .collect();
    assert!(about_task.len() > output.len(), "{stderr}");
    for line in about_task {
        assert_eq!(line["task_id"], task_id, "{line}");
    }
    let masked_pem = lines
        .iter()
        .filter(|l| message(l) == "***" && l["stream"] == "stdout")
        .count();
    assert_eq!(
        masked_pem, 3,
        "the PEM's lines after the first, masked: {stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| message(l) == "WebSocket sent task_failed" && l["task_id"] == task_id),
        "{stderr}"
    );
    assert!(
        !stderr.contains("\"type\":\"task_"),
        "a raw frame: {stderr}"
    );
}
