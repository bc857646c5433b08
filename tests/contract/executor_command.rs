//! The executor contract against the Command backend (`CommandExecutor`), with a real
//! `/bin/sh` dispatch command. The dispatch command is the workload: it saves the payload and
//! its pid, then exits 0 (a hand-off, `Spawned`), exits with the code the task asks for, or
//! hangs in a child process until killed. The task env reaches the receiver through the
//! payload's `env`, so that is what the suite inspects.

use std::path::PathBuf;
use std::time::Duration;

use oz_agent_worker::adapters::command::{CommandConfig, CommandExecutor};
use oz_agent_worker::domain::env::EnvList;
use oz_agent_worker::domain::{Exit, FailureReason, TaskSpec};
use tempfile::TempDir;

use super::executor::{Capabilities, Harness, Workload, base_spec, executor_contract};
use crate::support::standin;

/// The dispatch script: `$DIR` holds one payload and one pid list per task id.
const DISPATCH: &str = r#"p="$CONTRACT_DIR/$OZ_RUN_ID"
cat > "$p.payload"
echo "pid: $$" > "$p.pids"
code=$(sed -n 's/.*"CONTRACT_EXIT":"\([0-9]*\)".*/\1/p' "$p.payload")
if [ -n "$code" ]; then exit "$code"; fi
if grep -q '"CONTRACT_HANG":"1"' "$p.payload"; then
  sleep 1000 &
  echo "pid: $!" >> "$p.pids"
  echo running > "$p.running"
  wait
fi
exit 0
"#;

/// A `CommandExecutor` whose dispatch command writes into a temp dir.
pub(crate) struct CommandHarness {
    executor: CommandExecutor,
    dir: TempDir,
}

impl CommandHarness {
    pub(crate) fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let mut environment = EnvList::new();
        environment.push("CONTRACT_DIR", dir.path().to_string_lossy());
        let config = CommandConfig {
            worker_id: "contract-worker".to_owned(),
            server_root_url: "http://127.0.0.1:1".to_owned(),
            dispatch_command: DISPATCH.to_owned(),
            cancel_command: None,
            dispatch_timeout: Duration::from_secs(60),
            environment,
        };
        let executor = CommandExecutor::from_config(&config).expect("dispatch command set");
        Self { executor, dir }
    }

    fn file(&self, id: &str, suffix: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.{suffix}"))
    }
}

impl Harness for CommandHarness {
    type Exec = CommandExecutor;

    fn executor(&self) -> &CommandExecutor {
        &self.executor
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            success: Exit::Spawned,
            exit_code: false,
            validates_specs: false,
        }
    }

    fn spec(&self, id: &str, workload: Workload, env: &[(&str, &str)]) -> TaskSpec {
        let mut spec = base_spec(id, env);
        match workload {
            Workload::Succeeds => {}
            Workload::ExitsWith(code) => spec.env.push("CONTRACT_EXIT", code.to_string()),
            Workload::Hangs => spec.env.push("CONTRACT_HANG", "1"),
        }
        spec
    }

    async fn wait_running(&self, id: &str) {
        let running = self.file(id, "running");
        crate::support::eventually(
            &format!("the dispatch command of {id} to start its child"),
            Duration::from_secs(10),
            || {
                let running = running.clone();
                async move { running.exists() }
            },
        )
        .await;
    }

    fn seen_env_names(&self, id: &str) -> Vec<String> {
        let Ok(text) = std::fs::read_to_string(self.file(id, "payload")) else {
            return Vec::new();
        };
        let payload: serde_json::Value = serde_json::from_str(&text).expect("payload is JSON");
        payload["env"]
            .as_object()
            .map(|env| env.keys().cloned().collect())
            .unwrap_or_default()
    }

    async fn leftovers(&self, id: &str) -> Vec<String> {
        standin::wait_all_dead(&standin::reported_pids(&self.file(id, "pids")))
            .await
            .into_iter()
            .map(|pid| format!("process {pid} still alive"))
            .collect()
    }

    fn exit_reason(&self) -> FailureReason {
        FailureReason::DispatchCommand
    }

    fn bad_spec(&self) -> (TaskSpec, FailureReason) {
        // A task id no filesystem-based backend accepts; a hand-off passes it on as is.
        (base_spec("bad spec", &[]), FailureReason::DispatchCommand)
    }
}

executor_contract!(command, Some(super::CommandHarness::new()));
