//! The Direct backend's process supervision against real processes: process-group kills,
//! SIGTERM then SIGKILL, exit codes of signal deaths, the redacted output tail, setup
//! failures and cancellation, teardown after cancellation, and shutdown.

use std::time::Duration;

use oz_agent_worker::domain::{Exit, FailureReason};
use oz_agent_worker::ports::Executor;
use tokio_util::sync::CancellationToken;

use crate::support::direct::{Direct, lines, run, start};
use crate::support::standin::{self, PROCESS_BOUND, alive, wait_all_dead};

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
    let (token, task) = d.start_agent(&executor, &spec).await;
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
    let (token, task) = start(&executor, &spec);
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
    let (token, task) = start(&executor, &spec);
    crate::support::eventually("the setup command to start", PROCESS_BOUND, || async {
        started.exists()
    })
    .await;
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
    let task = d.cancel_running_agent("t-cancel-teardown").await;
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
    let task = d.cancel_running_agent("t-hung-teardown").await;
    let bound = oz_agent_worker::adapters::host::TEARDOWN_AFTER_CANCEL
        + oz_agent_worker::adapters::host::TEARDOWN_KILL_GRACE
        + PROCESS_BOUND;
    let outcome = tokio::time::timeout(bound, task).await.unwrap().unwrap();
    assert_eq!(outcome, Ok(Exit::Cancelled));
    let pid: i32 = lines(&pid_file)[0].parse().unwrap();
    assert!(!alive(pid), "the teardown was stopped");
    assert!(!d.workspace("t-hung-teardown").exists());
}
