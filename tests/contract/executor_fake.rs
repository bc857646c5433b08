//! The executor contract against `FakeExecutor`, so the fake the app scenarios use stays honest.

use oz_agent_worker::adapters::fake::{FakeExecutor, Script};
use oz_agent_worker::domain::{FailureReason, TaskId, TaskSpec};

use super::executor::{Harness, Workload, base_spec, executor_contract};

/// `FakeExecutor` scripted per task id.
#[derive(Default)]
pub(crate) struct FakeHarness {
    fake: FakeExecutor,
}

impl Harness for FakeHarness {
    type Exec = FakeExecutor;

    fn executor(&self) -> &FakeExecutor {
        &self.fake
    }

    fn spec(&self, id: &str, workload: Workload, env: &[(&str, &str)]) -> TaskSpec {
        let script = match workload {
            Workload::Succeeds => Script::default(),
            Workload::ExitsWith(code) => Script::exits_after(std::time::Duration::ZERO, code),
            Workload::Hangs => Script::hangs_until_cancelled(),
        };
        self.fake
            .script(&TaskId::parse(id).expect("non-empty"), script);
        base_spec(id, env)
    }

    async fn wait_running(&self, id: &str) {
        let id = TaskId::parse(id).expect("non-empty");
        tokio::time::timeout(
            crate::support::standin::PROCESS_BOUND,
            self.fake.wait_until_running(&id),
        )
        .await
        .expect("the fake task starts");
    }

    fn seen_env_names(&self, id: &str) -> Vec<String> {
        self.fake
            .started_specs()
            .iter()
            .rev()
            .find(|s| s.task_id.as_str() == id)
            .map(|s| s.env.keys().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    async fn leftovers(&self, id: &str) -> Vec<String> {
        self.fake
            .running()
            .iter()
            .filter(|t| t.as_str() == id)
            .map(|t| format!("fake run of {t} still running"))
            .collect()
    }

    fn exit_reason(&self) -> FailureReason {
        FailureReason::AgentInvocation
    }

    fn bad_spec(&self) -> (TaskSpec, FailureReason) {
        (base_spec("../x", &[]), FailureReason::WorkspaceSetup)
    }
}

executor_contract!(fake, Some(super::FakeHarness::default()));
