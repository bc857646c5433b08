//! One Direct task from workspace to cleanup (spec §3.2, §3.4): validate the id, prepare the
//! workspace, build the task env, run setup, merge the env file, run the agent, then clean up
//! in the reference's order.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::dotenv;
use super::environment::{self, API_KEY_VAR};
use super::executor::Inner;
use super::output::{OutputSink, Phase, Redactor};
use super::process::{ProcessOutcome, describe, run_in_group};
use super::workspace::Workspace;
use crate::adapters::state::{GroupRecord, start_ticks};
use crate::domain::env::EnvList;
use crate::domain::{Exit, FailureReason, TaskFailure};
use crate::ports::executor::TaskSpec;

/// How long teardown may still run once the task has been cancelled (then its group gets
/// SIGTERM, and SIGKILL [`TEARDOWN_KILL_GRACE`] later).
pub const TEARDOWN_AFTER_CANCEL: Duration = Duration::from_secs(10);
/// SIGTERM → SIGKILL grace for a teardown that overran [`TEARDOWN_AFTER_CANCEL`].
pub const TEARDOWN_KILL_GRACE: Duration = Duration::from_secs(2);

/// Runs one task to a terminal state and cleans up after it.
pub(super) async fn run_task(
    inner: &Inner,
    spec: &TaskSpec,
    cancel: &CancellationToken,
) -> Result<Exit, TaskFailure> {
    if cancel.is_cancelled() {
        return Ok(Exit::Cancelled);
    }
    let config = &inner.config;
    let task_id = spec.task_id.as_str();
    let mut workspace = Workspace::prepare(
        task_id,
        &config.workspace_root,
        config.target_dir.as_deref(),
    )
    .map_err(|e| TaskFailure::backend(FailureReason::WorkspaceSetup, e.to_string()))?;
    if !workspace.shared {
        inner.hold_workspace(&workspace.dir);
        if let Some(instances) = &config.instances
            && let Err(error) = instances.record_workspace(task_id, &workspace.dir)
        {
            tracing::warn!(task_id, %error, "Cannot record the workspace in the crash journal.");
        }
    }
    tracing::debug!(task_id, workspace = %workspace.dir.display(), "direct task starting");
    let outcome = execute(inner, spec, &workspace, cancel).await;
    cleanup(inner, task_id, &mut workspace, cancel).await;
    outcome
}

async fn execute(
    inner: &Inner,
    spec: &TaskSpec,
    workspace: &Workspace,
    cancel: &CancellationToken,
) -> Result<Exit, TaskFailure> {
    let config = &inner.config;
    let task_id = spec.task_id.as_str();
    let task_env = environment::task_env(
        spec,
        &config.environment,
        &workspace.dir,
        &workspace.git_config,
    );

    if let Some(setup) = &config.setup_command {
        let oz_vars = environment::oz_vars(task_id, &workspace.dir, workspace.env_file_path());
        let env = environment::setup_env(&inner.host_env, &task_env, &oz_vars);
        let redactor = redactor(inner, &task_env);
        let mut sink = OutputSink::new(task_id, Phase::Setup, redactor.clone());
        let outcome = run_in_group(
            shell(setup, &workspace.dir, env),
            cancel,
            config.kill_grace,
            &mut sink,
            &inner.groups,
            &|pgid| journal_group(inner, task_id, pgid),
        )
        .await;
        match outcome {
            Err(error) => {
                return Err(TaskFailure::backend(
                    FailureReason::SetupCommand,
                    redactor.redact(&format!("setup command failed: {error}")),
                ));
            }
            Ok(ProcessOutcome {
                cancelled: true, ..
            }) => return Ok(Exit::Cancelled),
            Ok(ProcessOutcome { status, .. }) if !status.success() => {
                let (code, text) = describe(status);
                return Err(failure(
                    FailureReason::SetupCommand,
                    &format!("setup command failed: {text}"),
                    code,
                    &sink,
                    &redactor,
                ));
            }
            Ok(_) => {}
        }
    }

    let task_env = with_env_file(task_id, &task_env, workspace);
    if cancel.is_cancelled() {
        return Ok(Exit::Cancelled);
    }
    let redactor = redactor(inner, &task_env);
    let mut command = Command::new(&inner.oz);
    command
        .args(&spec.args)
        .current_dir(&workspace.dir)
        .env_clear()
        .envs(environment::agent_env(&inner.host_env, &task_env));
    let mut sink = OutputSink::new(task_id, Phase::Agent, redactor.clone());
    let on_spawn = |pgid| journal_group(inner, task_id, pgid);
    match run_in_group(
        command,
        cancel,
        config.kill_grace,
        &mut sink,
        &inner.groups,
        &on_spawn,
    )
    .await
    {
        Err(error) => Err(TaskFailure::backend(
            FailureReason::AgentInvocation,
            redactor.redact(&format!(
                "oz agent exited with error: cannot start {}: {error}",
                inner.oz.display()
            )),
        )),
        Ok(ProcessOutcome {
            cancelled: true, ..
        }) => Ok(Exit::Cancelled),
        Ok(ProcessOutcome { status, .. }) if status.success() => Ok(Exit::Succeeded),
        Ok(ProcessOutcome { status, .. }) => {
            let (code, text) = describe(status);
            Err(failure(
                FailureReason::AgentInvocation,
                &format!("oz agent exited with error: {text}"),
                code,
                &sink,
                &redactor,
            ))
        }
    }
}

/// Records a process group the task started in the crash journal (with its leader's start
/// time), so a worker restarted after a crash can end it.
fn journal_group(inner: &Inner, task_id: &str, pgid: i32) {
    let Some(instances) = &inner.config.instances else {
        return;
    };
    let Some(start_ticks) = start_ticks(pgid) else {
        return;
    };
    if let Err(error) = instances.record_group(task_id, GroupRecord { pgid, start_ticks }) {
        tracing::warn!(task_id, %error, "Cannot record a process group in the crash journal.");
    }
}

/// Merges the env file written by setup; a missing or malformed file only warns.
fn with_env_file(task_id: &str, task_env: &EnvList, workspace: &Workspace) -> EnvList {
    let pairs = workspace
        .read_env_file()
        .map_err(|e| e.to_string())
        .and_then(|text| dotenv::parse(&text).map_err(|e| e.to_string()));
    match pairs {
        Ok(pairs) => environment::merge_env_file(task_env, pairs, &workspace.git_config),
        Err(error) => {
            tracing::warn!(task_id, %error, "ignoring the environment file written by setup");
            task_env.clone()
        }
    }
}

/// Spec §3.4: env file, then teardown and workspace removal, then the temp git-config dir.
async fn cleanup(
    inner: &Inner,
    task_id: &str,
    workspace: &mut Workspace,
    cancel: &CancellationToken,
) {
    let config = &inner.config;
    if let Err(error) = workspace.remove_env_file() {
        tracing::warn!(task_id, %error, operation = "remove_env_file", "cleanup.failed");
    }
    if (workspace.shared || config.cleanup)
        && let Some(teardown) = &config.teardown_command
    {
        run_teardown(inner, task_id, teardown, workspace, cancel).await;
    }
    if !workspace.shared {
        if config.cleanup
            && let Err(error) = workspace.remove_dir().await
        {
            tracing::warn!(task_id, %error, operation = "remove_workspace", "cleanup.failed");
        }
        inner.release_workspace(&workspace.dir);
    }
    if let Err(error) = workspace.remove_git_config_dir() {
        tracing::warn!(task_id, %error, operation = "remove_git_config", "cleanup.failed");
    }
}

/// Teardown runs even after cancellation, but then for at most [`TEARDOWN_AFTER_CANCEL`].
/// Its failure only warns.
async fn run_teardown(
    inner: &Inner,
    task_id: &str,
    teardown: &str,
    workspace: &Workspace,
    cancel: &CancellationToken,
) {
    let oz_vars = environment::oz_vars(task_id, &workspace.dir, None);
    let env = environment::teardown_env(&inner.host_env, &oz_vars, &workspace.git_config);
    let redactor = redactor(inner, &EnvList::new());
    let mut sink = OutputSink::new(task_id, Phase::Teardown, redactor.clone());
    let stop = CancellationToken::new();
    let deadline = async {
        cancel.cancelled().await;
        tokio::time::sleep(TEARDOWN_AFTER_CANCEL).await;
        stop.cancel();
        std::future::pending::<std::convert::Infallible>().await
    };
    let on_spawn = |pgid| journal_group(inner, task_id, pgid);
    let run = run_in_group(
        shell(teardown, &workspace.dir, env),
        &stop,
        TEARDOWN_KILL_GRACE,
        &mut sink,
        &inner.groups,
        &on_spawn,
    );
    let outcome = tokio::select! {
        outcome = run => outcome,
        never = deadline => match never {},
    };
    let error = match outcome {
        Err(error) => format!("teardown command failed: {error}"),
        Ok(ProcessOutcome { status, cancelled }) if cancelled || !status.success() => {
            let (code, text) = describe(status);
            failure(
                FailureReason::TeardownCommand,
                &format!("teardown command failed: {text}"),
                code,
                &sink,
                &redactor,
            )
            .message
        }
        Ok(_) => return,
    };
    tracing::warn!(task_id, error = %redactor.redact(&error), operation = "teardown", "cleanup.failed");
}

/// Task env variables whose values the worker itself derives and which are not secret (the
/// task id, fixed flags, the server URL, workspace paths): masking them would only blur the
/// output.
pub const NOT_REDACTED: [&str; 7] = [
    "TASK_ID",
    "GIT_TERMINAL_PROMPT",
    "GH_PROMPT_DISABLED",
    "WARP_SERVER_ROOT_URL",
    "GIT_CONFIG_GLOBAL",
    "CLAUDE_CONFIG_DIR",
    "CODEX_HOME",
];

/// Secrets to mask: every task env value (except [`NOT_REDACTED`] ones) and the worker's own
/// API key.
fn redactor(inner: &Inner, task_env: &EnvList) -> Redactor {
    let api_key = inner
        .host_env
        .get(API_KEY_VAR)
        .and_then(|v| v.to_str())
        .unwrap_or_default();
    let secrets = task_env
        .iter()
        .filter(|(k, _)| !NOT_REDACTED.contains(k))
        .map(|(_, v)| v);
    Redactor::new(secrets.chain([api_key]))
}

fn failure(
    reason: FailureReason,
    text: &str,
    code: Option<i32>,
    sink: &OutputSink,
    redactor: &Redactor,
) -> TaskFailure {
    let tail = sink.tail();
    let message = if tail.is_empty() {
        text.to_owned()
    } else {
        format!("{text}; last output: {tail}")
    };
    let failure = TaskFailure::backend(reason, redactor.redact(&message));
    match code {
        Some(code) => failure.with_exit_code(code),
        None => failure,
    }
}

fn shell(script: &str, cwd: &Path, env: Vec<(OsString, OsString)>) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env_clear()
        .envs(env);
    command
}
