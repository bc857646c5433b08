//! `CommandExecutor`: runs the operator's dispatch command with the payload on stdin and treats
//! exit 0 as a hand-off (`Exit::Spawned`); runs `cancel_command` on user cancellation.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal as UnixSignal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::config::{CommandConfig, DEFAULT_DISPATCH_TIMEOUT};
use super::payload::dispatch_payload;
use crate::domain::{Exit, FailureReason, TaskFailure, TaskId, TaskSpec};
use crate::ports::{CancelError, Executor};

/// Why the Command backend cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// `dispatch_command` is empty.
    #[error("command backend requires a dispatch command (backend.command.dispatch_command)")]
    MissingDispatchCommand,
}

/// The Command backend.
#[derive(Debug, Clone)]
pub struct CommandExecutor {
    config: CommandConfig,
}

impl CommandExecutor {
    /// Checks the config (the preflight is only that a dispatch command is set).
    ///
    /// # Errors
    /// [`CommandError::MissingDispatchCommand`].
    pub fn from_config(config: &CommandConfig) -> Result<Self, CommandError> {
        if config.dispatch_command.trim().is_empty() {
            return Err(CommandError::MissingDispatchCommand);
        }
        let mut config = config.clone();
        if config.dispatch_timeout.is_zero() {
            config.dispatch_timeout = DEFAULT_DISPATCH_TIMEOUT;
        }
        Ok(Self { config })
    }

    fn shell(&self, script: &str, task_id: &str, execution_id: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(script);
        // Host env (inherited), then operator env, then the OZ_* variables, which operator env
        // can never clobber. Task secrets never go into the environment.
        for (key, value) in self.config.environment.iter() {
            command.env(key, value);
        }
        command
            .env("OZ_RUN_ID", task_id)
            .env("OZ_EXECUTION_ID", execution_id)
            .env("OZ_WORKER_BACKEND", "command")
            .process_group(0)
            .kill_on_drop(true);
        command
    }
}

#[async_trait]
impl Executor for CommandExecutor {
    async fn run(&self, spec: &TaskSpec, cancel: CancellationToken) -> Result<Exit, TaskFailure> {
        if cancel.is_cancelled() {
            return Ok(Exit::Cancelled);
        }
        let payload = dispatch_payload(spec, &self.config.worker_id, &self.config.server_root_url);
        let mut command = self.shell(
            &self.config.dispatch_command,
            spec.task_id.as_str(),
            &spec.execution_id,
        );
        command
            .env("OZ_SERVER_ROOT_URL", &self.config.server_root_url)
            .env("OZ_DOCKER_IMAGE", &spec.image)
            .stdin(Stdio::piped());
        let mut child = command.spawn().map_err(|err| {
            TaskFailure::backend(
                FailureReason::DispatchCommand,
                format!("dispatch command failed: cannot start /bin/sh: {err}"),
            )
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            let bytes = payload.to_string().into_bytes();
            // A command that does not read its stdin is not an error.
            let _ = stdin.write_all(&bytes).await;
        }
        let timeout = self.config.dispatch_timeout;
        tokio::select! {
            status = child.wait() => match status {
                Ok(status) if status.success() => Ok(Exit::Spawned),
                Ok(status) => Err(TaskFailure::backend(
                    FailureReason::DispatchCommand,
                    format!("dispatch command failed: {status}"),
                )),
                Err(err) => Err(TaskFailure::backend(
                    FailureReason::DispatchCommand,
                    format!("dispatch command failed: {err}"),
                )),
            },
            () = cancel.cancelled() => {
                kill_group(&mut child).await;
                Ok(Exit::Cancelled)
            }
            () = tokio::time::sleep(timeout) => {
                kill_group(&mut child).await;
                Err(TaskFailure::backend(
                    FailureReason::DispatchTimeout,
                    format!("dispatch command timed out after {}", humantime::format_duration(timeout)),
                ))
            }
        }
    }

    async fn cancel(&self, task_id: &TaskId, execution_id: &str) -> Result<(), CancelError> {
        let Some(script) = self.config.cancel_command.as_deref() else {
            return Ok(());
        };
        let status = self
            .shell(script, task_id.as_str(), execution_id)
            .stdin(Stdio::null())
            .status()
            .await
            .map_err(|err| CancelError(format!("cancel command could not start: {err}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(CancelError(format!("cancel command failed: {status}")))
        }
    }

    fn survives_daemon_restart(&self) -> bool {
        true
    }
}

/// Kills the dispatch command's whole process group and reaps it.
async fn kill_group(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok())
        && let Err(err) = killpg(Pid::from_raw(pid), UnixSignal::SIGKILL)
    {
        warn!("could not kill the dispatch command's process group: {err}");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}

#[cfg(test)]
mod tests;
