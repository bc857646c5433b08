//! The Direct backend against real processes: setup/teardown env contract, the env file,
//! harness vars, target-dir and no-cleanup modes, process-group kills, exit codes, the
//! redacted output tail, preflight errors and shutdown. `scripts/oz-standin` plays `oz`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oz_agent_worker::adapters::host::{DirectConfig, HostEnv, HostError, HostExecutor};
use oz_agent_worker::domain::{AgentConfig, Exit, FailureReason, TaskFailure, TaskSpec};
use oz_agent_worker::ports::Executor;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::contract::executor::base_spec;
use crate::contract::executor_host::{WORKER_KEY, host_env};
use crate::support::standin::{self, PROCESS_BOUND, alive, report_value, shown, wait_all_dead};

/// A scratch area: a workspace root, a place for reports and markers, and a config.
struct Direct {
    dir: TempDir,
    config: DirectConfig,
}

impl Direct {
    fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let config = DirectConfig {
            workspace_root: dir.path().join("workspaces"),
            oz_path: Some(standin::standin_path()),
            kill_grace: Duration::from_secs(2),
            ..DirectConfig::default()
        };
        Self { dir, config }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn executor(&self) -> HostExecutor {
        HostExecutor::with_host_env(&self.config, host_env()).expect("preflight")
    }

    fn workspace(&self, id: &str) -> PathBuf {
        self.config.workspace_root.join(id)
    }

    /// A spec whose stand-in reports to `<dir>/<id>.report` and shows `show`'s values.
    fn spec(&self, id: &str, env: &[(&str, &str)], show: &[&str]) -> TaskSpec {
        let mut spec = base_spec(id, env);
        spec.env
            .push("OZ_STANDIN_REPORT", self.report(id).to_string_lossy());
        spec.env.push("OZ_STANDIN_SHOW", show.join(","));
        spec
    }

    fn report(&self, id: &str) -> PathBuf {
        self.path(&format!("{id}.report"))
    }
}

async fn run(executor: &HostExecutor, spec: &TaskSpec) -> Result<Exit, TaskFailure> {
    tokio::time::timeout(PROCESS_BOUND, executor.run(spec, CancellationToken::new()))
        .await
        .expect("the run finishes within the bound")
}

fn lines(path: &Path) -> Vec<String> {
    standin::report_lines(path)
}

fn entries(dir: &Path) -> Vec<String> {
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

#[tokio::test]
async fn setup_and_teardown_get_the_oz_variables_and_the_right_env() {
    let mut d = Direct::new();
    let (setup_out, teardown_out) = (d.path("setup.txt"), d.path("teardown.txt"));
    d.config.setup_command = Some(format!(
        "printf '%s\\n' \"$OZ_WORKSPACE_ROOT\" \"$OZ_WORKER_BACKEND\" \"$OZ_RUN_ID\" \"$OZ_ENVIRONMENT_FILE\" \"${{TASK_VAR-unset}}\" \"${{WARP_API_KEY-unset}}\" \"$(pwd)\" > {}",
        setup_out.display()
    ));
    d.config.teardown_command = Some(format!(
        "printf '%s\\n' \"$OZ_WORKSPACE_ROOT\" \"$OZ_WORKER_BACKEND\" \"$OZ_RUN_ID\" \"${{OZ_ENVIRONMENT_FILE-unset}}\" \"${{TASK_VAR-unset}}\" \"$GIT_CONFIG_GLOBAL\" \"$(ls -A)\" > {}",
        teardown_out.display()
    ));
    let spec = d.spec("t-setup", &[("TASK_VAR", "task-value")], &[]);
    assert_eq!(run(&d.executor(), &spec).await, Ok(Exit::Succeeded));

    let ws = d.workspace("t-setup").display().to_string();
    let setup = lines(&setup_out);
    assert_eq!(setup[..3], [ws.clone(), "direct".into(), "t-setup".into()]);
    assert!(
        setup[3].starts_with(&format!("{ws}/oz-env-")),
        "{}",
        setup[3]
    );
    assert_eq!(setup[4..], ["task-value", WORKER_KEY, ws.as_str()]);

    let teardown = lines(&teardown_out);
    assert_eq!(
        teardown[..6],
        [
            ws.clone(),
            "direct".into(),
            "t-setup".into(),
            "unset".into(),
            "unset".into(),
            format!("{ws}/.gitconfig")
        ]
    );
    assert!(
        !teardown[6].contains("oz-env-"),
        "env file removed before teardown"
    );
    assert!(
        !d.workspace("t-setup").exists(),
        "workspace removed after teardown"
    );
}

#[tokio::test]
async fn env_file_merges_over_the_task_env_but_cannot_move_git_config() {
    let mut d = Direct::new();
    d.config.environment.push("SHARED", "operator");
    d.config.environment.push("OPERATOR_ONLY", "op");
    d.config.setup_command = Some(
        "cat > \"$OZ_ENVIRONMENT_FILE\" <<'EOF'\n# written by setup\nexport FROM_SETUP=\"hello world\" # comment\nOPERATOR_ONLY='from setup'\nGIT_CONFIG_GLOBAL=/tmp/evil\nEOF"
            .into(),
    );
    let show = [
        "SHARED",
        "FROM_SETUP",
        "OPERATOR_ONLY",
        "GIT_CONFIG_GLOBAL",
        "HOME",
        "PWD",
    ];
    let spec = d.spec("t-envfile", &[("SHARED", "server")], &show);
    assert_eq!(run(&d.executor(), &spec).await, Ok(Exit::Succeeded));

    let report = d.report("t-envfile");
    let ws = d.workspace("t-envfile");
    assert_eq!(shown(&report, "SHARED").as_deref(), Some("operator"));
    assert_eq!(shown(&report, "FROM_SETUP").as_deref(), Some("hello world"));
    assert_eq!(
        shown(&report, "OPERATOR_ONLY").as_deref(),
        Some("from setup")
    );
    let git = ws.join(".gitconfig").display().to_string();
    assert_eq!(shown(&report, "GIT_CONFIG_GLOBAL"), Some(git));
    assert_eq!(
        shown(&report, "HOME"),
        std::env::var("HOME").ok(),
        "HOME is not repointed"
    );
    assert_eq!(shown(&report, "PWD"), Some(ws.display().to_string()));
    let names = standin::seen_env_names(&report);
    for absent in [
        "WARP_API_KEY",
        "OZ_RUN_ID",
        "OZ_WORKSPACE_ROOT",
        "OZ_ENVIRONMENT_FILE",
    ] {
        assert!(
            !names.iter().any(|n| n == absent),
            "{absent} leaked: {names:?}"
        );
    }
}

#[tokio::test]
async fn harness_vars_point_into_the_workspace() {
    let d = Direct::new();
    for (harness, var, dir) in [
        ("claude", "CLAUDE_CONFIG_DIR", ".claude"),
        ("codex", "CODEX_HOME", ".codex"),
    ] {
        let id = format!("t-{harness}");
        let mut spec = d.spec(&id, &[], &[var]);
        spec.task.agent_config = Some(AgentConfig {
            harness_type: Some(harness.into()),
            ..AgentConfig::default()
        });
        assert_eq!(run(&d.executor(), &spec).await, Ok(Exit::Succeeded));
        let expected = d.workspace(&id).join(dir).display().to_string();
        assert_eq!(shown(&d.report(&id), var), Some(expected), "{harness}");
    }
}

#[tokio::test]
async fn workspace_is_private_while_running_and_removed_after_cancel() {
    let d = Direct::new();
    let executor = d.executor();
    let mut spec = d.spec("t-private", &[], &[]);
    spec.env.push("OZ_STANDIN_SLEEP", "forever");
    let token = CancellationToken::new();
    let task = {
        let (executor, spec, token) = (executor.clone(), spec.clone(), token.clone());
        tokio::spawn(async move { executor.run(&spec, token).await })
    };
    standin::wait_for_pid(&d.report("t-private")).await;
    let ws = d.workspace("t-private");
    let mode = std::fs::metadata(&ws).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let root_mode = std::fs::metadata(&d.config.workspace_root)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(root_mode & 0o777, 0o700);
    assert!(entries(&ws).iter().any(|n| n.starts_with("oz-env-")));
    token.cancel();
    let outcome = tokio::time::timeout(PROCESS_BOUND, task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Ok(Exit::Cancelled));
    assert!(!ws.exists());
}

#[tokio::test]
async fn target_dir_mode_uses_the_directory_and_keeps_it() {
    let mut d = Direct::new();
    let target = d.path("checkout");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("README"), "keep me").unwrap();
    d.config.target_dir = Some(target.clone());
    d.config.workspace_root = d.path("never-created");
    let marker = d.path("teardown-ran");
    d.config.teardown_command = Some(format!("pwd > {}", marker.display()));
    let spec = d.spec("t-target", &[], &["GIT_CONFIG_GLOBAL"]);
    assert_eq!(run(&d.executor(), &spec).await, Ok(Exit::Succeeded));

    let report = d.report("t-target");
    assert_eq!(
        report_value(&report, "cwd"),
        Some(target.display().to_string())
    );
    let git = PathBuf::from(shown(&report, "GIT_CONFIG_GLOBAL").unwrap());
    assert!(
        !git.starts_with(&target),
        "git config lives outside the checkout"
    );
    let git_dir = git.parent().unwrap();
    assert!(
        git_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("oz-gitconfig-")
    );
    assert!(!git_dir.exists(), "temp git-config dir removed");
    assert_eq!(
        entries(&target),
        ["README"],
        "env file removed, checkout kept"
    );
    assert_eq!(lines(&marker), [target.display().to_string()]);
    assert!(!d.config.workspace_root.exists());
}

#[tokio::test]
async fn no_cleanup_keeps_the_workspace_and_skips_teardown() {
    let mut d = Direct::new();
    d.config.cleanup = false;
    let marker = d.path("teardown-ran");
    d.config.teardown_command = Some(format!("touch {}", marker.display()));
    let spec = d.spec("t-keep", &[], &[]);
    let executor = d.executor();
    assert_eq!(run(&executor, &spec).await, Ok(Exit::Succeeded));
    let ws = d.workspace("t-keep");
    assert!(ws.is_dir());
    assert!(!entries(&ws).iter().any(|n| n.starts_with("oz-env-")));
    assert!(!marker.exists());
    executor.shutdown().await;
    assert!(ws.is_dir(), "shutdown honours no-cleanup");
}

#[tokio::test]
async fn grandchildren_die_with_the_agent_on_exit_and_on_cancel() {
    let d = Direct::new();
    let executor = d.executor();
    // Normal exit: the grandchild holds the pipes and would hang a naive wait.
    let mut spec = d.spec("t-orphan", &[], &[]);
    spec.env.push("OZ_STANDIN_SPAWN_CHILD", "1");
    assert_eq!(run(&executor, &spec).await, Ok(Exit::Succeeded));
    let pids = standin::reported_pids(&d.report("t-orphan"));
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert_eq!(wait_all_dead(&pids).await, Vec::<i32>::new());

    // Cancellation: SIGTERM to the whole group.
    let mut spec = d.spec("t-group", &[], &[]);
    spec.env.push("OZ_STANDIN_SPAWN_CHILD", "1");
    spec.env.push("OZ_STANDIN_SLEEP", "forever");
    let token = CancellationToken::new();
    let task = {
        let (executor, spec, token) = (executor.clone(), spec.clone(), token.clone());
        tokio::spawn(async move { executor.run(&spec, token).await })
    };
    standin::wait_for_pid(&d.report("t-group")).await;
    let pids = standin::reported_pids(&d.report("t-group"));
    assert!(pids.iter().all(|pid| alive(*pid)));
    token.cancel();
    let outcome = tokio::time::timeout(PROCESS_BOUND, task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Ok(Exit::Cancelled));
    assert_eq!(wait_all_dead(&pids).await, Vec::<i32>::new());
}

#[tokio::test]
async fn an_agent_ignoring_sigterm_gets_sigkill_after_the_grace() {
    let mut d = Direct::new();
    d.config.kill_grace = Duration::from_millis(300);
    let executor = d.executor();
    let mut spec = d.spec("t-stubborn", &[], &[]);
    spec.env.push("OZ_STANDIN_IGNORE_TERM", "1");
    spec.env.push("OZ_STANDIN_SLEEP", "forever");
    let token = CancellationToken::new();
    let task = {
        let (executor, spec, token) = (executor.clone(), spec.clone(), token.clone());
        tokio::spawn(async move { executor.run(&spec, token).await })
    };
    let report = d.report("t-stubborn");
    let pid = standin::wait_for_pid(&report).await;
    token.cancel();
    let outcome = tokio::time::timeout(PROCESS_BOUND, task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Ok(Exit::Cancelled));
    assert!(
        lines(&report).iter().any(|l| l == "ignored SIGTERM"),
        "SIGTERM came first: {:?}",
        lines(&report)
    );
    assert!(!alive(pid));
}

#[tokio::test]
async fn a_sigterm_death_is_exit_143() {
    let d = Direct::new();
    let spec = d.spec("t-term", &[("OZ_STANDIN_KILL_SELF", "TERM")], &[]);
    let failure = run(&d.executor(), &spec).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::AgentInvocation);
    assert_eq!(failure.exit_code, Some(143));
    assert!(
        failure
            .message
            .starts_with("oz agent exited with error: signal: terminated"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn failure_message_ends_with_the_redacted_output_tail() {
    let d = Direct::new();
    let secret = "ghp_supersecret123";
    let env = [
        ("GITHUB_TOKEN", secret),
        ("OZ_STANDIN_PRINT_VAR", "GITHUB_TOKEN"),
        ("OZ_STANDIN_EXIT", "2"),
    ];
    let spec = d.spec("t-tail", &env, &[]);
    let failure = run(&d.executor(), &spec).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::AgentInvocation);
    assert_eq!(failure.exit_code, Some(2));
    let message = &failure.message;
    assert!(
        message.starts_with("oz agent exited with error: exit status 2; last output: "),
        "{message}"
    );
    // The knob's own value (`GITHUB_TOKEN`) is a task env value too, so it is masked as well.
    assert!(message.contains("oz-standin: *** is ***\n"), "{message}");
    assert!(
        message.contains("oz-standin: exiting with status 2"),
        "stderr too: {message}"
    );
    assert!(
        message.contains("--task-id t-tail"),
        "the task id is not a secret: {message}"
    );
    assert!(!message.contains(secret), "{message}");
}

#[tokio::test]
async fn setup_failure_is_setup_command_with_code_and_redacted_tail() {
    let mut d = Direct::new();
    d.config.setup_command = Some("echo \"key=$WARP_API_KEY token=$TOKEN\"; exit 5".into());
    let spec = d.spec("t-setupfail", &[("TOKEN", "task-token-value")], &[]);
    let failure = run(&d.executor(), &spec).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::SetupCommand);
    assert_eq!(failure.exit_code, Some(5));
    assert_eq!(
        failure.message,
        "setup command failed: exit status 5; last output: key=*** token=***"
    );
    assert!(!d.report("t-setupfail").exists(), "the agent never ran");
    assert!(!d.workspace("t-setupfail").exists());
}

#[tokio::test]
async fn cancel_during_setup_is_cancelled_and_the_agent_never_runs() {
    let mut d = Direct::new();
    let started = d.path("setup-started");
    d.config.setup_command = Some(format!("touch {}; sleep 3600", started.display()));
    let executor = d.executor();
    let spec = d.spec("t-setupcancel", &[], &[]);
    let token = CancellationToken::new();
    let task = {
        let (executor, spec, token) = (executor.clone(), spec.clone(), token.clone());
        tokio::spawn(async move { executor.run(&spec, token).await })
    };
    let poll = async {
        while !started.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PROCESS_BOUND, poll)
        .await
        .expect("setup starts");
    token.cancel();
    let outcome = tokio::time::timeout(PROCESS_BOUND, task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Ok(Exit::Cancelled));
    assert!(!d.report("t-setupcancel").exists());
    assert!(!d.workspace("t-setupcancel").exists());
}

#[tokio::test]
async fn a_missing_oz_binary_is_agent_invocation_without_a_code() {
    let mut d = Direct::new();
    d.config.oz_path = Some(d.path("no-such-oz"));
    let spec = d.spec("t-noz", &[], &[]);
    let failure = run(&d.executor(), &spec).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::AgentInvocation);
    assert_eq!(failure.exit_code, None);
    assert!(
        failure
            .message
            .starts_with("oz agent exited with error: cannot start"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn preflight_checks_oz_target_dir_and_workspace_root() {
    let d = Direct::new();
    let bin = d.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let no_oz = HostEnv::from_pairs([("PATH", bin.display().to_string())]);
    let mut config = d.config.clone();
    config.oz_path = None;
    let error = HostExecutor::with_host_env(&config, no_oz.clone()).unwrap_err();
    assert!(matches!(error, HostError::OzNotFound));
    assert_eq!(error.to_string(), "oz CLI not found in PATH");

    std::os::unix::fs::symlink(standin::standin_path(), bin.join("oz")).unwrap();
    let found = HostExecutor::with_host_env(&config, no_oz).expect("oz found on PATH");
    assert_eq!(found.oz_path(), bin.join("oz"));

    let mut missing = d.config.clone();
    missing.target_dir = Some(d.path("missing"));
    let error = HostExecutor::with_host_env(&missing, host_env()).unwrap_err();
    assert!(
        matches!(error, HostError::TargetDirUnavailable { .. }),
        "{error}"
    );
    std::fs::write(d.path("file"), "").unwrap();
    missing.target_dir = Some(d.path("file"));
    let error = HostExecutor::with_host_env(&missing, host_env()).unwrap_err();
    assert!(error.to_string().ends_with("is not a directory"), "{error}");

    let mut nested = d.config.clone();
    nested.workspace_root = d.path("a/b/c");
    HostExecutor::with_host_env(&nested, host_env()).expect("created");
    let mode = std::fs::metadata(d.path("a/b/c"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let mut blocked = d.config.clone();
    blocked.workspace_root = d.path("file/sub");
    let error = HostExecutor::with_host_env(&blocked, host_env()).unwrap_err();
    assert!(matches!(error, HostError::WorkspaceRoot { .. }), "{error}");
}

#[tokio::test]
async fn shutdown_kills_live_groups_and_removes_only_its_own_workspaces() {
    let d = Direct::new();
    let executor = d.executor();
    let foreign = d.config.workspace_root.join("someone-else");
    std::fs::create_dir_all(&foreign).unwrap();
    let mut spec = d.spec("t-shutdown", &[], &[]);
    spec.env.push("OZ_STANDIN_SLEEP", "forever");
    let task = {
        let (executor, spec) = (executor.clone(), spec.clone());
        tokio::spawn(async move { executor.run(&spec, CancellationToken::new()).await })
    };
    let pid = standin::wait_for_pid(&d.report("t-shutdown")).await;
    executor.shutdown().await;
    let outcome = tokio::time::timeout(PROCESS_BOUND, task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        outcome.unwrap_err().exit_code,
        Some(137),
        "SIGKILLed by shutdown"
    );
    assert!(!alive(pid));
    assert!(!d.workspace("t-shutdown").exists());
    assert!(
        foreign.is_dir(),
        "entries this worker did not create are left alone"
    );
}

#[tokio::test]
async fn teardown_still_runs_after_cancellation() {
    let mut d = Direct::new();
    let marker = d.path("teardown-ran");
    d.config.teardown_command = Some(format!("echo \"$OZ_RUN_ID\" > {}", marker.display()));
    let executor = d.executor();
    let mut spec = d.spec("t-cancel-teardown", &[], &[]);
    spec.env.push("OZ_STANDIN_SLEEP", "forever");
    let token = CancellationToken::new();
    let task = {
        let (executor, spec, token) = (executor.clone(), spec.clone(), token.clone());
        tokio::spawn(async move { executor.run(&spec, token).await })
    };
    standin::wait_for_pid(&d.report("t-cancel-teardown")).await;
    token.cancel();
    let outcome = tokio::time::timeout(PROCESS_BOUND, task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Ok(Exit::Cancelled));
    assert_eq!(lines(&marker), ["t-cancel-teardown"]);
    assert!(!d.workspace("t-cancel-teardown").exists());
}

#[tokio::test]
async fn a_hung_teardown_after_cancellation_is_stopped_and_never_fails_the_task() {
    let mut d = Direct::new();
    let pid_file = d.path("teardown.pid");
    d.config.teardown_command = Some(format!("echo $$ > {}; exec sleep 3600", pid_file.display()));
    let executor = d.executor();
    let mut spec = d.spec("t-hung-teardown", &[], &[]);
    spec.env.push("OZ_STANDIN_SLEEP", "forever");
    let token = CancellationToken::new();
    let task = {
        let (executor, spec, token) = (executor.clone(), spec.clone(), token.clone());
        tokio::spawn(async move { executor.run(&spec, token).await })
    };
    standin::wait_for_pid(&d.report("t-hung-teardown")).await;
    token.cancel();
    let bound = oz_agent_worker::adapters::host::TEARDOWN_AFTER_CANCEL
        + oz_agent_worker::adapters::host::TEARDOWN_KILL_GRACE
        + PROCESS_BOUND;
    let outcome = tokio::time::timeout(bound, task).await.unwrap().unwrap();
    assert_eq!(outcome, Ok(Exit::Cancelled));
    let pid: i32 = lines(&pid_file)[0].parse().unwrap();
    assert!(!alive(pid), "the teardown was stopped");
    assert!(!d.workspace("t-hung-teardown").exists());
}
