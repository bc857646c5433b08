//! The executor contract: every backend, and the fake, must behave the same way on these
//! cases (style item 40). A backend joins by implementing [`Harness`] and invoking
//! [`executor_contract!`] with a constructor returning `Option<Harness>` (`None` = skip, after
//! `support::require`).

use std::time::Duration;

use oz_agent_worker::domain::spec::{SpecSettings, prepare};
use oz_agent_worker::domain::{Assignment, Exit, FailureReason, TaskId, TaskSpec};
use oz_agent_worker::ports::Executor;
use tokio_util::sync::CancellationToken;

/// How long a cancelled run may take to return.
pub(crate) const CANCEL_BOUND: Duration = Duration::from_secs(30);

/// What the workload of a contract case does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// Exits 0 at once.
    Succeeds,
    /// Exits with this non-zero code at once.
    ExitsWith(i32),
    /// Runs until stopped.
    Hangs,
}

/// What a backend promises, where backends legitimately differ. Cases read these flags instead
/// of being skipped, so a hand-off backend runs every case against what it does promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capabilities {
    /// What a successful run returns: `Succeeded` for a backend that waits for the agent,
    /// `Spawned` for a hand-off (Command: the dispatch command exited 0).
    pub success: Exit,
    /// Whether a failure carries the workload's exit code. A hand-off reports only its dispatch
    /// command's status, in the message.
    pub exit_code: bool,
    /// Whether the backend rejects a spec it cannot run. A hand-off passes the spec on
    /// unvalidated (the receiver decides), so its "bad" spec must be handed off like any other.
    pub validates_specs: bool,
}

impl Capabilities {
    /// A backend that runs the agent and waits for it (Direct, Docker, Kubernetes, the fake).
    pub(crate) const WAITS_FOR_THE_AGENT: Self = Self {
        success: Exit::Succeeded,
        exit_code: true,
        validates_specs: true,
    };
}

/// Adapts one executor (and its way of scripting and observing workloads) to the suite.
pub(crate) trait Harness {
    /// The executor under test.
    type Exec: Executor + Clone + 'static;

    /// The executor.
    fn executor(&self) -> &Self::Exec;

    /// Where this backend legitimately differs from one that waits for the agent.
    fn capabilities(&self) -> Capabilities {
        Capabilities::WAITS_FOR_THE_AGENT
    }

    /// A spec for task `id` whose workload does `workload` and gets the extra `env`.
    fn spec(&self, id: &str, workload: Workload, env: &[(&str, &str)]) -> TaskSpec;

    /// Waits until the workload of `id` is running (bounded; panics otherwise).
    async fn wait_running(&self, id: &str);

    /// The env var names the workload of `id` saw on its last run.
    fn seen_env_names(&self, id: &str) -> Vec<String>;

    /// Resources of `id` still present (processes, workspaces, containers), described.
    async fn leftovers(&self, id: &str) -> Vec<String>;

    /// The reason a non-zero exit is reported with (`agent_invocation`, `container_exit`, …).
    fn exit_reason(&self) -> FailureReason;

    /// A spec the backend must reject, and the reason it must give (a backend that does not
    /// validate specs hands it off instead, see [`Capabilities::validates_specs`]).
    fn bad_spec(&self) -> (TaskSpec, FailureReason);
}

/// A spec built the way the app builds one, plus `env`.
pub(crate) fn base_spec(id: &str, env: &[(&str, &str)]) -> TaskSpec {
    let assignment = Assignment::new(TaskId::parse(id).expect("non-empty id"));
    let mut spec = prepare(&assignment, &SpecSettings::default());
    for (key, value) in env {
        spec.env.push(*key, *value);
    }
    spec
}

/// Success maps to `Ok(Exit::Succeeded)` (`Ok(Exit::Spawned)` for a hand-off) and leaves
/// nothing behind.
pub(crate) async fn success_is_succeeded(h: &impl Harness) {
    let spec = h.spec("contract-ok", Workload::Succeeds, &[]);
    let outcome = h.executor().run(&spec, CancellationToken::new()).await;
    assert_eq!(outcome, Ok(h.capabilities().success));
    assert_eq!(h.leftovers("contract-ok").await, Vec::<String>::new());
}

/// A non-zero exit is an `Err` with the backend's exit reason and the exit code (in the message
/// only, for a backend without [`Capabilities::exit_code`]).
pub(crate) async fn nonzero_exit_is_a_failure_with_the_code(h: &impl Harness) {
    let spec = h.spec("contract-exit", Workload::ExitsWith(3), &[]);
    let failure = h
        .executor()
        .run(&spec, CancellationToken::new())
        .await
        .expect_err("exit 3 must fail");
    assert_eq!(failure.reason, h.exit_reason());
    let code = h.capabilities().exit_code.then_some(3);
    assert_eq!(failure.exit_code, code);
    assert!(failure.message.contains('3'), "{}", failure.message);
    assert_eq!(h.leftovers("contract-exit").await, Vec::<String>::new());
}

/// Cancel → `Ok(Exit::Cancelled)` within [`CANCEL_BOUND`], with nothing left running.
pub(crate) async fn cancel_stops_the_workload(h: &impl Harness) {
    let spec = h.spec("contract-cancel", Workload::Hangs, &[]);
    let token = CancellationToken::new();
    let run = {
        let (executor, token) = (h.executor().clone(), token.clone());
        tokio::spawn(async move { executor.run(&spec, token).await })
    };
    h.wait_running("contract-cancel").await;
    token.cancel();
    let outcome = tokio::time::timeout(CANCEL_BOUND, run)
        .await
        .expect("a cancelled run returns within the bound")
        .expect("the run does not panic");
    assert_eq!(outcome, Ok(Exit::Cancelled));
    assert_eq!(h.leftovers("contract-cancel").await, Vec::<String>::new());
}

/// A token that fired before `run` yields `Ok(Exit::Cancelled)` without running anything.
pub(crate) async fn already_cancelled_token_runs_nothing(h: &impl Harness) {
    let spec = h.spec("contract-precancel", Workload::Hangs, &[]);
    let token = CancellationToken::new();
    token.cancel();
    let outcome = tokio::time::timeout(CANCEL_BOUND, h.executor().run(&spec, token)).await;
    assert_eq!(outcome.expect("returns at once"), Ok(Exit::Cancelled));
    assert!(h.seen_env_names("contract-precancel").is_empty());
    assert_eq!(
        h.leftovers("contract-precancel").await,
        Vec::<String>::new()
    );
}

/// A bad spec is an `Err` with a specific reason; a backend that does not validate specs hands
/// it off like any other.
pub(crate) async fn bad_spec_is_rejected_with_a_specific_reason(h: &impl Harness) {
    let (spec, reason) = h.bad_spec();
    if !h.capabilities().validates_specs {
        let outcome = h.executor().run(&spec, CancellationToken::new()).await;
        assert_eq!(outcome, Ok(h.capabilities().success));
        return;
    }
    let failure = h
        .executor()
        .run(&spec, CancellationToken::new())
        .await
        .expect_err("a bad spec must fail");
    assert_eq!(failure.reason, reason);
    assert_ne!(failure.reason, FailureReason::Unknown);
    assert!(!failure.message.is_empty());
}

/// Running the same task twice, and shutting down twice, works and leaves nothing behind.
pub(crate) async fn cleanup_is_idempotent(h: &impl Harness) {
    for _ in 0..2 {
        let spec = h.spec("contract-again", Workload::Succeeds, &[]);
        let outcome = h.executor().run(&spec, CancellationToken::new()).await;
        assert_eq!(outcome, Ok(h.capabilities().success));
        assert_eq!(h.leftovers("contract-again").await, Vec::<String>::new());
    }
    h.executor().shutdown().await;
    h.executor().shutdown().await;
    assert_eq!(h.leftovers("contract-again").await, Vec::<String>::new());
}

/// The task env reaches the workload; the worker's own `WARP_API_KEY` does not.
pub(crate) async fn env_reaches_the_workload_but_not_the_worker_key(h: &impl Harness) {
    let env = [("CONTRACT_VAR", "contract-value")];
    let spec = h.spec("contract-env", Workload::Succeeds, &env);
    let outcome = h.executor().run(&spec, CancellationToken::new()).await;
    assert_eq!(outcome, Ok(h.capabilities().success));
    let names = h.seen_env_names("contract-env");
    for expected in ["CONTRACT_VAR", "TASK_ID", "GIT_TERMINAL_PROMPT"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n == "WARP_API_KEY"), "{names:?}");
}

/// Instantiates every contract case as a `#[tokio::test]` in module `$name`, for the harness
/// built by `$make` (an expression of type `Option<impl Harness>`; `None` skips).
macro_rules! executor_contract {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::contract::executor as suite;

            $crate::contract::executor::executor_contract!(@case $make, success_is_succeeded);
            $crate::contract::executor::executor_contract!(@case $make, nonzero_exit_is_a_failure_with_the_code);
            $crate::contract::executor::executor_contract!(@case $make, cancel_stops_the_workload);
            $crate::contract::executor::executor_contract!(@case $make, already_cancelled_token_runs_nothing);
            $crate::contract::executor::executor_contract!(@case $make, bad_spec_is_rejected_with_a_specific_reason);
            $crate::contract::executor::executor_contract!(@case $make, cleanup_is_idempotent);
            $crate::contract::executor::executor_contract!(@case $make, env_reaches_the_workload_but_not_the_worker_key);
        }
    };
    (@case $make:expr, $case:ident) => {
        #[tokio::test]
        async fn $case() {
            if let Some(harness) = $make {
                suite::$case(&harness).await;
            }
        }
    };
}
pub(crate) use executor_contract;
