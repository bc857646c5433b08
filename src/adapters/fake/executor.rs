//! `FakeExecutor`: an in-memory executor whose per-task behaviour is scripted, driven by
//! `tokio::time` (so paused time drives it), and honouring the cancellation token exactly as the
//! real adapters must.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::{Exit, FailureReason, TaskFailure, TaskId};
use crate::ports::executor::{CancelError, Executor, Orphan, TaskSpec};

/// What one run of a task does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script(Behaviour);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Behaviour {
    Succeeds(Duration),
    Exits(Duration, i32),
    FailsToStart(FailureReason),
    Hangs,
    StopsSlowly(Duration),
    Spawns,
}

impl Script {
    /// Runs for `duration`, then exits 0 (`Ok(Exit::Succeeded)`).
    pub fn succeeds_after(duration: Duration) -> Self {
        Self(Behaviour::Succeeds(duration))
    }

    /// Runs for `duration`, then exits with `code`: an `agent_invocation` failure carrying the
    /// code and the Direct backend's text (`oz agent exited with error: exit status <code>`).
    /// Code 0 is a success.
    pub fn exits_after(duration: Duration, code: i32) -> Self {
        Self(Behaviour::Exits(duration, code))
    }

    /// Fails at once with `reason` (e.g. `image_pull`) and no exit code.
    pub fn fails_to_start(reason: FailureReason) -> Self {
        Self(Behaviour::FailsToStart(reason))
    }

    /// Runs until the token fires, then returns `Ok(Exit::Cancelled)`.
    pub fn hangs_until_cancelled() -> Self {
        Self(Behaviour::Hangs)
    }

    /// Runs until the token fires, then takes `grace` to stop and clean up before it returns
    /// `Ok(Exit::Cancelled)`: a workload that ignores SIGTERM until the backend's SIGKILL, or a
    /// slow cleanup.
    pub fn stops_slowly(grace: Duration) -> Self {
        Self(Behaviour::StopsSlowly(grace))
    }

    /// Hands the task off at once (`Ok(Exit::Spawned)`), like the Command backend.
    pub fn spawns() -> Self {
        Self(Behaviour::Spawns)
    }
}

impl Default for Script {
    /// Succeeds at once.
    fn default() -> Self {
        Self::succeeds_after(Duration::ZERO)
    }
}

/// An executor for app scenarios: scripted per task id, observable afterwards.
///
/// Like the Direct backend, it rejects a task id that is not one safe path component
/// (`workspace_setup`), and a token that has already fired yields `Ok(Exit::Cancelled)`
/// without running anything.
#[derive(Debug, Clone, Default)]
pub struct FakeExecutor {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    default_script: Script,
    scripts: HashMap<TaskId, Script>,
    survives_daemon_restart: bool,
    started: Vec<TaskSpec>,
    running: Vec<TaskId>,
    cancelled: Vec<TaskId>,
    outcomes: Vec<(TaskId, Result<Exit, TaskFailure>)>,
    backend_cancels: Vec<(TaskId, String)>,
    cancel_hook_takes: Duration,
    shutdown_takes: Duration,
    shutdowns: usize,
    orphans: Vec<Orphan>,
    scan_interval: Option<Duration>,
    scans: usize,
    followed: Vec<TaskId>,
    leaving: usize,
}

impl FakeExecutor {
    /// A fake whose every task succeeds at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the script of tasks that have none of their own.
    pub fn with_default(self, script: Script) -> Self {
        self.lock().default_script = script;
        self
    }

    /// Sets what `survives_daemon_restart` answers (default false).
    pub fn with_survives_daemon_restart(self, survives: bool) -> Self {
        self.lock().survives_daemon_restart = survives;
        self
    }

    /// Makes the best-effort `cancel` hook take `duration` before it returns (default: none).
    pub fn with_cancel_hook_taking(self, duration: Duration) -> Self {
        self.lock().cancel_hook_takes = duration;
        self
    }

    /// Makes `shutdown` take `duration` before it returns (default: none).
    pub fn with_shutdown_taking(self, duration: Duration) -> Self {
        self.lock().shutdown_takes = duration;
        self
    }

    /// Makes `adopt_orphans` scan every `every` after start-up (default: only at start-up).
    pub fn with_orphan_scan_every(self, every: Duration) -> Self {
        self.lock().scan_interval = Some(every);
        self
    }

    /// Leaves `orphan` on the pretend backend: the next `adopt_orphans` takes it over (once).
    pub fn leave_orphan(&self, orphan: Orphan) {
        self.update(|state| state.orphans.push(orphan));
    }

    /// How many times `leaving` was called.
    pub fn leaving_calls(&self) -> usize {
        self.lock().leaving
    }

    /// How many times `adopt_orphans` ran.
    pub fn scans(&self) -> usize {
        self.lock().scans
    }

    /// Adopted tasks whose `follow` started, in order.
    pub fn followed(&self) -> Vec<TaskId> {
        self.lock().followed.clone()
    }

    /// Scripts every later run of `task_id`.
    pub fn script(&self, task_id: &TaskId, script: Script) {
        self.lock().scripts.insert(task_id.clone(), script);
    }

    /// Tasks whose workload started, in order: not those rejected, scripted to fail to start,
    /// or whose token had already fired.
    pub fn started(&self) -> Vec<TaskId> {
        self.lock()
            .started
            .iter()
            .map(|s| s.task_id.clone())
            .collect()
    }

    /// The specs of the started workloads, in order (to check env, args, image).
    pub fn started_specs(&self) -> Vec<TaskSpec> {
        self.lock().started.clone()
    }

    /// `run` calls in progress (a task id appears once per concurrent run).
    pub fn running(&self) -> Vec<TaskId> {
        self.lock().running.clone()
    }

    /// Runs that ended because their token fired.
    pub fn cancelled(&self) -> Vec<TaskId> {
        self.lock().cancelled.clone()
    }

    /// Every `run` call that returned, with what it returned, in order.
    pub fn outcomes(&self) -> Vec<(TaskId, Result<Exit, TaskFailure>)> {
        self.lock().outcomes.clone()
    }

    /// Calls of the best-effort `cancel` hook: `(task_id, execution_id)`.
    pub fn backend_cancels(&self) -> Vec<(TaskId, String)> {
        self.lock().backend_cancels.clone()
    }

    /// How many times `shutdown` was called.
    pub fn shutdowns(&self) -> usize {
        self.lock().shutdowns
    }

    /// Waits until `condition` holds (re-checked after every state change). Bound it with
    /// `tokio::time::timeout` in tests.
    pub async fn wait_until(&self, condition: impl Fn(&FakeExecutor) -> bool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if condition(self) {
                return;
            }
            notified.await;
        }
    }

    /// Waits until `task_id` is running.
    pub async fn wait_until_running(&self, task_id: &TaskId) {
        self.wait_until(|fake| fake.running().contains(task_id))
            .await;
    }

    /// Marks `task_id` running with its script (also recorded as followed when `adopted`).
    fn begin(&self, task_id: &TaskId, adopted: bool) -> Script {
        let mut script = Script::default();
        self.update(|state| {
            script = state
                .scripts
                .get(task_id)
                .unwrap_or(&state.default_script)
                .clone();
            if adopted {
                state.followed.push(task_id.clone());
            }
            state.running.push(task_id.clone());
        });
        script
    }

    /// Records how `task_id`'s execution ended.
    fn end(&self, task_id: TaskId, outcome: &Result<Exit, TaskFailure>) {
        self.update(|state| {
            if let Some(i) = state.running.iter().position(|id| *id == task_id) {
                state.running.remove(i);
            }
            if *outcome == Ok(Exit::Cancelled) {
                state.cancelled.push(task_id.clone());
            }
            state.outcomes.push((task_id, outcome.clone()));
        });
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.changed.notify_waiters();
    }
}

#[async_trait]
impl Executor for FakeExecutor {
    async fn run(&self, spec: &TaskSpec, cancel: CancellationToken) -> Result<Exit, TaskFailure> {
        let task_id = spec.task_id.clone();
        let script = self.begin(&task_id, false);
        let outcome = if cancel.is_cancelled() {
            Ok(Exit::Cancelled)
        } else if !is_safe_path_component(task_id.as_str()) {
            Err(TaskFailure::backend(
                FailureReason::WorkspaceSetup,
                format!("invalid task ID for workspace path: {:?}", task_id.as_str()),
            ))
        } else {
            if !matches!(script.0, Behaviour::FailsToStart(_)) {
                self.update(|state| state.started.push(spec.clone()));
            }
            play(script, &cancel).await
        };
        self.end(task_id, &outcome);
        outcome
    }

    async fn adopt_orphans(&self) -> Vec<Orphan> {
        let mut taken = Vec::new();
        self.update(|state| {
            state.scans += 1;
            taken = std::mem::take(&mut state.orphans);
        });
        taken
    }

    fn leaving(&self) {
        self.update(|state| state.leaving += 1);
    }

    fn orphan_scan_interval(&self) -> Option<Duration> {
        self.lock().scan_interval
    }

    /// Plays the task id's script, as `run` would from the wait on.
    async fn follow(
        &self,
        orphan: &Orphan,
        cancel: CancellationToken,
    ) -> Result<Exit, TaskFailure> {
        let task_id = orphan.task_id.clone();
        let script = self.begin(&task_id, true);
        let outcome = play(script, &cancel).await;
        self.end(task_id, &outcome);
        outcome
    }

    async fn cancel(&self, task_id: &TaskId, execution_id: &str) -> Result<(), CancelError> {
        let mut takes = Duration::ZERO;
        self.update(|state| {
            state
                .backend_cancels
                .push((task_id.clone(), execution_id.to_owned()));
            takes = state.cancel_hook_takes;
        });
        tokio::time::sleep(takes).await;
        Ok(())
    }

    fn survives_daemon_restart(&self) -> bool {
        self.lock().survives_daemon_restart
    }

    async fn shutdown(&self) {
        let mut takes = Duration::ZERO;
        self.update(|state| {
            state.shutdowns += 1;
            takes = state.shutdown_takes;
        });
        tokio::time::sleep(takes).await;
    }
}

async fn play(script: Script, cancel: &CancellationToken) -> Result<Exit, TaskFailure> {
    let sleep_then = |duration: Duration| async move {
        tokio::select! {
            biased;
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(duration) => true,
        }
    };
    match script.0 {
        Behaviour::Succeeds(duration) => Ok(if sleep_then(duration).await {
            Exit::Succeeded
        } else {
            Exit::Cancelled
        }),
        Behaviour::Exits(duration, code) => {
            if !sleep_then(duration).await {
                Ok(Exit::Cancelled)
            } else if code == 0 {
                Ok(Exit::Succeeded)
            } else {
                Err(TaskFailure::backend(
                    FailureReason::AgentInvocation,
                    format!("oz agent exited with error: exit status {code}"),
                )
                .with_exit_code(code))
            }
        }
        Behaviour::FailsToStart(reason) => Err(TaskFailure::backend(
            reason,
            format!("fake executor: failed to start ({reason})"),
        )),
        Behaviour::Hangs => {
            cancel.cancelled().await;
            Ok(Exit::Cancelled)
        }
        Behaviour::StopsSlowly(grace) => {
            cancel.cancelled().await;
            tokio::time::sleep(grace).await;
            Ok(Exit::Cancelled)
        }
        Behaviour::Spawns => Ok(Exit::Spawned),
    }
}

/// The Direct backend's rule for a task id usable as a directory name.
fn is_safe_path_component(task_id: &str) -> bool {
    !task_id.is_empty() && task_id != "." && task_id != ".." && !task_id.contains(['/', '\\', '\0'])
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests fix an arbitrary clock origin and spawn the task under test, awaited"
)]
mod tests {
    use super::*;

    fn spec(id: &str) -> TaskSpec {
        let assignment = crate::domain::Assignment::new(TaskId::parse(id).unwrap());
        crate::domain::spec::prepare(&assignment, &Default::default())
    }

    // With tokio's `test-util` feature the same test runs under `start_paused = true`.
    #[tokio::test]
    async fn scripts_follow_time_and_the_token() {
        let fake = FakeExecutor::new().with_default(Script::hangs_until_cancelled());
        let slow = TaskId::parse("slow").unwrap();
        fake.script(&slow, Script::exits_after(Duration::from_millis(10), 3));
        let failure = fake.run(&spec("slow"), CancellationToken::new()).await;
        assert_eq!(failure.unwrap_err().exit_code, Some(3));

        let token = CancellationToken::new();
        let run = {
            let (fake, token) = (fake.clone(), token.clone());
            tokio::spawn(async move { fake.run(&spec("hang"), token).await })
        };
        fake.wait_until_running(&TaskId::parse("hang").unwrap())
            .await;
        token.cancel();
        assert_eq!(run.await.unwrap(), Ok(Exit::Cancelled));
        assert_eq!(fake.cancelled(), [TaskId::parse("hang").unwrap()]);
        assert!(fake.running().is_empty());
        assert_eq!(fake.started().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_stopper_returns_cancelled_only_after_its_grace() {
        let fake = FakeExecutor::new()
            .with_default(Script::stops_slowly(Duration::from_secs(30)))
            .with_cancel_hook_taking(Duration::from_secs(20))
            .with_shutdown_taking(Duration::from_secs(40));
        let token = CancellationToken::new();
        let run = {
            let (fake, token) = (fake.clone(), token.clone());
            tokio::spawn(async move { fake.run(&spec("slow"), token).await })
        };
        fake.wait_until_running(&TaskId::parse("slow").unwrap())
            .await;
        let cancelled_at = tokio::time::Instant::now();
        token.cancel();
        assert_eq!(run.await.unwrap(), Ok(Exit::Cancelled));
        assert_eq!(cancelled_at.elapsed(), Duration::from_secs(30));
        let id = TaskId::parse("slow").unwrap();
        let started = tokio::time::Instant::now();
        fake.cancel(&id, "e1").await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(20));
        fake.shutdown().await;
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn read_back_helpers_record_hooks() {
        let fake = FakeExecutor::new().with_survives_daemon_restart(true);
        assert!(fake.survives_daemon_restart());
        let id = TaskId::parse("t").unwrap();
        fake.cancel(&id, "e1").await.unwrap();
        fake.shutdown().await;
        assert_eq!(fake.backend_cancels(), [(id, "e1".to_owned())]);
        assert_eq!(fake.shutdowns(), 1);
        assert_eq!(
            fake.run(&spec("../x"), CancellationToken::new())
                .await
                .unwrap_err()
                .reason,
            FailureReason::WorkspaceSetup
        );
        assert_eq!(
            FakeExecutor::new()
                .with_default(Script::spawns())
                .run(&spec("s"), CancellationToken::new())
                .await,
            Ok(Exit::Spawned)
        );
    }
}
