//! The Command backend against real `/bin/sh` commands.

#![allow(
    clippy::disallowed_methods,
    reason = "unit tests spawn the task under test and await or abort it"
)]

use std::path::Path;

use super::*;
use crate::domain::env::EnvList;
use crate::domain::spec::{SpecSettings, prepare};
use crate::domain::{Assignment, Owner, OwnerType, SidecarMount, TaskId};

fn config(dispatch: &str) -> CommandConfig {
    let mut environment = EnvList::new();
    environment.push("OPERATOR_VAR", "op");
    environment.push("OZ_RUN_ID", "clobbered");
    CommandConfig {
        worker_id: "w1".into(),
        server_root_url: "https://root".into(),
        dispatch_command: dispatch.into(),
        cancel_command: None,
        dispatch_timeout: Duration::from_secs(30),
        environment,
    }
}

fn spec() -> TaskSpec {
    let mut a = Assignment::new(TaskId::parse("run-1").unwrap());
    a.execution_id = "exec-1".into();
    a.task.title = "Fix it".into();
    a.task.owner = Some(Owner {
        kind: OwnerType::Team,
        id: 4,
    });
    a.env_vars
        .insert("SECRET_TOKEN".into(), "s3cr3t-value".into());
    prepare(&a, &SpecSettings::default())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn payload_goes_to_stdin_and_success_is_a_hand_off() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("payload.json");
    let env_out = dir.path().join("env.txt");
    let executor = CommandExecutor::from_config(&config(&format!(
        "cat > {}; env > {}",
        out.display(),
        env_out.display()
    )))
    .unwrap();
    let outcome = executor.run(&spec(), CancellationToken::new()).await;
    assert_eq!(outcome, Ok(Exit::Spawned));
    let payload: serde_json::Value = serde_json::from_str(&read(&out)).unwrap();
    assert_eq!(payload["version"], 1);
    assert_eq!(payload["run_id"], "run-1");
    assert_eq!(payload["execution_id"], "exec-1");
    assert_eq!(payload["worker_id"], "w1");
    assert_eq!(payload["server_root_url"], "https://root");
    assert_eq!(payload["docker_image"], "ubuntu:22.04");
    assert_eq!(payload["base_args"][0], "agent");
    assert_eq!(payload["env"]["SECRET_TOKEN"], "s3cr3t-value");
    assert_eq!(payload["env"]["TASK_ID"], "run-1");
    assert!(payload["sidecars"].is_null());
    assert_eq!(payload["task"]["owner"]["Type"], "TEAM");
    assert_eq!(payload["task"]["created_at"], "0001-01-01T00:00:00Z");
    let env = read(&env_out);
    assert!(
        env.contains("OZ_RUN_ID=run-1\n"),
        "OZ_* wins over operator env"
    );
    assert!(env.contains("OZ_EXECUTION_ID=exec-1\n"));
    assert!(env.contains("OZ_WORKER_BACKEND=command\n"));
    assert!(env.contains("OZ_DOCKER_IMAGE=ubuntu:22.04\n"));
    assert!(env.contains("OPERATOR_VAR=op\n"));
    assert!(
        !env.contains("s3cr3t-value"),
        "task secrets never reach the subprocess env"
    );
}

#[tokio::test]
async fn sidecars_are_listed_when_present() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("payload.json");
    let executor =
        CommandExecutor::from_config(&config(&format!("cat > {}", out.display()))).unwrap();
    let mut spec = spec();
    spec.sidecars.push(SidecarMount {
        image: "warp/agent:1".into(),
        mount_path: "/agent".into(),
        read_write: false,
    });
    executor.run(&spec, CancellationToken::new()).await.unwrap();
    let payload: serde_json::Value = serde_json::from_str(&read(&out)).unwrap();
    assert_eq!(
        payload["sidecars"],
        serde_json::json!([{"image": "warp/agent:1", "mount_path": "/agent", "read_write": false}])
    );
}

#[tokio::test]
async fn non_zero_exit_is_a_dispatch_command_failure_without_exit_code() {
    let executor = CommandExecutor::from_config(&config("exit 7")).unwrap();
    let failure = executor
        .run(&spec(), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(failure.reason, FailureReason::DispatchCommand);
    assert_eq!(failure.exit_code, None);
    assert!(
        failure.message.starts_with("dispatch command failed: "),
        "{}",
        failure.message
    );
    assert!(failure.message.contains('7'));
}

#[tokio::test]
async fn a_slow_dispatch_times_out_and_is_killed() {
    let mut cfg = config("sleep 30");
    cfg.dispatch_timeout = Duration::from_millis(200);
    let executor = CommandExecutor::from_config(&cfg).unwrap();
    let failure = executor
        .run(&spec(), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(failure.reason, FailureReason::DispatchTimeout);
    assert_eq!(failure.message, "dispatch command timed out after 200ms");
}

#[tokio::test]
async fn cancel_during_dispatch_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let executor = CommandExecutor::from_config(&config(&format!(
        "sleep 60 & echo $! > {}; wait",
        pid_file.display()
    )))
    .unwrap();
    let cancel = CancellationToken::new();
    let run = {
        let cancel = cancel.clone();
        let spec = spec();
        tokio::spawn(async move { executor.run(&spec, cancel).await })
    };
    let pid = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && let Ok(pid) = text.trim().parse::<i32>()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    cancel.cancel();
    assert_eq!(run.await.unwrap(), Ok(Exit::Cancelled));
    let alive = tokio::time::timeout(Duration::from_secs(5), async {
        while Path::new(&format!("/proc/{pid}")).exists()
            && !read(Path::new(&format!("/proc/{pid}/stat"))).contains(") Z ")
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(alive.is_ok(), "the grandchild {pid} outlived its task");
}

#[tokio::test]
async fn cancel_command_runs_with_the_ids_and_reports_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cancel.txt");
    let mut cfg = config("true");
    cfg.cancel_command = Some(format!(
        "echo \"$OZ_RUN_ID $OZ_EXECUTION_ID $OZ_WORKER_BACKEND\" > {}",
        out.display()
    ));
    let executor = CommandExecutor::from_config(&cfg).unwrap();
    let id = TaskId::parse("run-9").unwrap();
    executor.cancel(&id, "exec-9").await.unwrap();
    assert_eq!(read(&out), "run-9 exec-9 command\n");

    cfg.cancel_command = Some("exit 3".into());
    let executor = CommandExecutor::from_config(&cfg).unwrap();
    let err = executor.cancel(&id, "exec-9").await.unwrap_err();
    assert!(
        err.to_string().starts_with("cancel command failed"),
        "{err}"
    );
}

#[test]
fn an_empty_dispatch_command_is_rejected_at_start_up() {
    let err = CommandExecutor::from_config(&config("  ")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "command backend requires a dispatch command (backend.command.dispatch_command)"
    );
}

#[test]
fn command_tasks_survive_a_worker_restart() {
    assert!(
        CommandExecutor::from_config(&config("true"))
            .unwrap()
            .survives_daemon_restart()
    );
}
