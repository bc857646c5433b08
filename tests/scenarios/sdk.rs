//! The official Python SDK (`oz-agent-sdk`) drives the local control plane's run API, which
//! routes the runs to real worker daemons (Direct backend, `scripts/oz-standin` as `oz`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use oz_local_control_plane::{LocalControlPlane, RunOptions, RunState};

use crate::support::daemon::{API_KEY, Daemon, spawn_direct};
use crate::support::require;
use crate::support::sdk;
use crate::support::standin::{report_lines, reported_pids, shown, wait_all_dead, wait_for_pid};

const SECRET: &str = "sdk-run-secret-value-9876";

fn python() -> Option<String> {
    let python = sdk::python();
    require("oz-agent-sdk (OZ_TEST_PYTHON)", python.is_some()).then(|| python.unwrap_or_default())
}

async fn control_plane() -> LocalControlPlane {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let options = RunOptions {
        secrets: BTreeMap::from([("GITHUB_ACCESS_TOKEN".to_owned(), SECRET.to_owned())]),
        retry_delay: Duration::from_millis(300),
        ..RunOptions::default()
    };
    LocalControlPlane::start_with(addr, API_KEY, options)
        .await
        .unwrap()
}

async fn worker(cp: &LocalControlPlane, id: &str, extra: &[&str]) -> Daemon {
    let mut args = vec!["--worker-id", id];
    args.extend_from_slice(extra);
    spawn_direct(cp, &args).await
}

/// The `--task-id` of every `argv:` line in a stand-in report.
fn task_ids(daemon: &Daemon) -> Vec<String> {
    report_lines(&daemon.report())
        .iter()
        .filter_map(|line| line.strip_prefix("argv: "))
        .filter_map(|argv| {
            argv.split_whitespace()
                .skip_while(|t| *t != "--task-id")
                .nth(1)
        })
        .map(str::to_owned)
        .collect()
}

const CREATE_AND_WAIT: &str = r#"
created = client.agent.run(
    prompt="Say hello",
    title="sdk scenario",
    team=True,
    metadata={"ticket": "T-1"},
    config={"worker_host": sys.argv[1], "model_id": "sdk-model", "idle_timeout_minutes": 2,
            "mcp_servers": {"docs": {"url": "http://127.0.0.1:1/mcp"}}},
)
run = wait_for(created.run_id, ["SUCCEEDED", "FAILED", "CANCELLED"])
out({"created": created.model_dump(mode="json", by_alias=True), "run": run.model_dump(mode="json", by_alias=True)})
"#;

#[tokio::test]
async fn a_run_created_with_the_sdk_is_claimed_by_its_worker_and_succeeds() {
    let Some(python) = python() else { return };
    let cp = control_plane().await;
    let daemon = worker(&cp, "sdk-w", &["-e", "OZ_STANDIN_SHOW=GITHUB_ACCESS_TOKEN"]).await;
    let result = sdk::run(&python, &cp, CREATE_AND_WAIT, &["sdk-w"]).await;
    let created = &result["created"];
    assert_eq!(created["state"], "QUEUED");
    assert_eq!(created["task_id"], created["run_id"]);
    let run = &result["run"];
    assert_eq!(run["state"], "SUCCEEDED", "{run}");
    assert_eq!(
        run["status_message"]["message"],
        "Task completed successfully"
    );
    assert!(run["started_at"].is_string(), "{run}");
    assert_eq!(run["agent_config"]["model_id"], "sdk-model");
    assert_eq!(run["agent_config"]["worker_host"], "sdk-w");
    assert_eq!(run["metadata"]["ticket"], "T-1");
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(task_ids(&daemon), vec![run_id.to_owned()]);
    let argv = report_lines(&daemon.report())
        .into_iter()
        .find(|l| l.starts_with("argv: "))
        .unwrap();
    assert!(argv.contains("--model sdk-model"), "{argv}");
    assert!(argv.contains("--idle-on-complete 2m"), "{argv}");
    assert_eq!(
        shown(&daemon.report(), "GITHUB_ACCESS_TOKEN").as_deref(),
        Some(SECRET),
        "the server's secrets reach the task as env_vars"
    );
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_agent_ends_failed_with_the_workers_reason() {
    let Some(python) = python() else { return };
    let cp = control_plane().await;
    let daemon = worker(&cp, "sdk-w", &["-e", "OZ_STANDIN_EXIT=3"]).await;
    let result = sdk::run(&python, &cp, CREATE_AND_WAIT, &["sdk-w"]).await;
    let run = &result["run"];
    assert_eq!(run["state"], "FAILED", "{run}");
    let message = run["status_message"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Failed to execute task: oz agent exited with error: exit status 3"),
        "{message}"
    );
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn cancelling_a_running_run_ends_cancelled_and_its_processes_are_gone() {
    let Some(python) = python() else { return };
    let cp = control_plane().await;
    let daemon = worker(
        &cp,
        "sdk-w",
        &[
            "-e",
            "OZ_STANDIN_SLEEP=forever",
            "-e",
            "OZ_STANDIN_SPAWN_CHILD=1",
        ],
    )
    .await;
    let started = sdk::run(
        &python,
        &cp,
        r#"
created = client.agent.run(prompt="Run forever", config={"worker_host": "sdk-w"})
run = wait_for(created.run_id, ["INPROGRESS"])
out({"run_id": run.run_id, "state": run.state})
"#,
        &[],
    )
    .await;
    assert_eq!(started["state"], "INPROGRESS");
    let run_id = started["run_id"].as_str().unwrap();
    wait_for_pid(&daemon.report()).await;
    let pids = reported_pids(&daemon.report());
    assert_eq!(pids.len(), 2, "the stand-in and its child: {pids:?}");

    let result = sdk::run(
        &python,
        &cp,
        r#"
run_id = sys.argv[1]
answer = client.agent.runs.cancel(run_id)
run = wait_for(run_id, ["CANCELLED", "SUCCEEDED", "FAILED"])
try:
    client.agent.runs.cancel(run_id)
    again = None
except oz_agent_sdk.BadRequestError as e:
    again = {"status": e.status_code, "body": e.body}
out({"answer": answer, "run": run.model_dump(mode="json", by_alias=True), "again": again})
"#,
        &[run_id],
    )
    .await;
    assert_eq!(result["answer"], run_id);
    assert_eq!(result["run"]["state"], "CANCELLED", "{result}");
    assert_eq!(
        result["run"]["status_message"]["message"],
        "Task cancelled by user request."
    );
    // As the SDK documents: a run in a terminal state cannot be cancelled (400, not retryable).
    assert_eq!(result["again"]["status"], 400, "{result}");
    assert_eq!(result["again"]["body"]["status"], 400);
    assert_eq!(result["again"]["body"]["retryable"], false);
    assert_eq!(wait_all_dead(&pids).await, Vec::<i32>::new());
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn two_workers_with_one_id_share_a_burst_of_runs() {
    let Some(python) = python() else { return };
    let cp = control_plane().await;
    // Every agent waits for this file, so both workers stay at capacity until the test has
    // seen each connection reject one run (which teaches the control plane its limit).
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("go");
    let wait = format!("OZ_STANDIN_WAIT_FILE={}", gate.display());
    let knobs = ["--max-concurrent-tasks", "1", "-e", wait.as_str()];
    let first = worker(&cp, "shared-w", &knobs).await;
    let second = worker(&cp, "shared-w", &knobs).await;
    cp.wait_connections(Duration::from_secs(30), |c| {
        c.iter().filter(|c| c.open).count() == 2
    })
    .await
    .expect("both workers connect");
    let created = sdk::run(
        &python,
        &cp,
        r#"
ids = [client.agent.run(prompt=f"burst {n}", config={"worker_host": "shared-w"}).run_id
       for n in range(4)]
out(ids)
"#,
        &[],
    )
    .await;
    let mut ids: Vec<String> = serde_json::from_value(created).unwrap();
    let runs = crate::support::eventually_some(
        "2 running runs and 2 capacity rejections",
        Duration::from_secs(30),
        || async {
            let runs = cp.runs();
            let running = runs
                .iter()
                .filter(|r| r.state == RunState::InProgress)
                .count();
            (running == 2 && cp.rejections() >= 2).then_some(runs)
        },
    )
    .await;
    assert!(runs.iter().all(|r| r.state != RunState::Failed), "{runs:?}");
    // Capacity-aware dispatch: once each connection's limit is learned, the waiting runs are
    // not offered again while both workers are full.
    let queued: Vec<_> = runs
        .iter()
        .filter(|r| r.state == RunState::Queued)
        .collect();
    assert_eq!(queued.len(), 2, "{runs:?}");
    assert_eq!(cp.rejections(), 2, "{runs:?}");
    std::fs::write(&gate, "").unwrap();

    let mut args: Vec<&str> = ids.iter().map(String::as_str).collect();
    args.sort_unstable();
    let states = sdk::run(
        &python,
        &cp,
        "out([wait_for(r, ['SUCCEEDED', 'FAILED', 'CANCELLED'], timeout=90).state for r in sys.argv[1:]])",
        &args,
    )
    .await;
    assert_eq!(
        states,
        serde_json::json!(["SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "SUCCEEDED"])
    );
    let (a, b) = (task_ids(&first), task_ids(&second));
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both workers ran some: {a:?} {b:?}"
    );
    let mut all: Vec<String> = a.into_iter().chain(b).collect();
    all.sort();
    ids.sort();
    assert_eq!(all, ids, "each run ran exactly once");
    assert_eq!(
        cp.rejections(),
        2,
        "freed slots were offered without new rejections"
    );
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}

#[tokio::test]
async fn list_filters_by_state_and_pages_and_queued_runs_wait_for_their_worker() {
    let Some(python) = python() else { return };
    let cp = control_plane().await;
    let daemon = worker(&cp, "sdk-w", &[]).await;
    let listed = sdk::run(
        &python,
        &cp,
        r#"
done = [client.agent.run(prompt=f"done {n}", config={"worker_host": "sdk-w"}).run_id
        for n in range(5)]
for run_id in done:
    wait_for(run_id, ["SUCCEEDED"])
waiting = [client.agent.run(prompt=f"wait {n}", config={"worker_host": "later-w"}).run_id
           for n in range(2)]
first = client.agent.runs.list(state=["SUCCEEDED"], limit=2)
pages = list(client.agent.runs.list(state=["SUCCEEDED"], limit=2).iter_pages())
every = [r.run_id for r in client.agent.runs.list(state=["SUCCEEDED"], limit=2)]
queued = [r.run_id for r in client.agent.runs.list(state=["QUEUED"])]
out({"done": done, "waiting": waiting, "first_len": len(first.runs),
     "first_has_next": first.page_info.has_next_page, "page_sizes": [len(p.runs) for p in pages],
     "every": every, "queued": queued})
"#,
        &[],
    )
    .await;
    assert_eq!(listed["first_len"], 2);
    assert_eq!(listed["first_has_next"], true);
    assert_eq!(listed["page_sizes"], serde_json::json!([2, 2, 1]));
    let sorted = |v: &serde_json::Value| {
        let mut ids: Vec<String> = serde_json::from_value(v.clone()).unwrap();
        ids.sort();
        ids
    };
    assert_eq!(sorted(&listed["every"]), sorted(&listed["done"]));
    assert_eq!(sorted(&listed["queued"]), sorted(&listed["waiting"]));

    // The queued runs start once a worker with their id connects.
    let later = worker(&cp, "later-w", &[]).await;
    let waiting: Vec<String> = serde_json::from_value(listed["waiting"].clone()).unwrap();
    let mut args: Vec<&str> = waiting.iter().map(String::as_str).collect();
    args.sort_unstable();
    let states = sdk::run(
        &python,
        &cp,
        "out([wait_for(r, ['SUCCEEDED', 'FAILED']).state for r in sys.argv[1:]])",
        &args,
    )
    .await;
    assert_eq!(states, serde_json::json!(["SUCCEEDED", "SUCCEEDED"]));
    let mut ran = task_ids(&later);
    ran.sort();
    assert_eq!(ran, args);
    daemon.stop().await.unwrap();
    later.stop().await.unwrap();
}

#[tokio::test]
async fn the_sdk_gets_400_401_404_and_422_as_typed_errors() {
    let Some(python) = python() else { return };
    let cp = control_plane().await;
    let result = sdk::run(
        &python,
        &cp,
        r#"
def status(call):
    try:
        call()
        return None
    except oz_agent_sdk.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code, "body": e.body}

bad_key = OzAPI(api_key="wrong-key", max_retries=0)
queued = client.agent.run(prompt="p", config={"worker_host": "nobody"}).run_id
client.agent.runs.cancel(queued)
out({
    "401": status(lambda: bad_key.agent.runs.list()),
    "404": status(lambda: client.agent.runs.retrieve("no-such-run")),
    "400": status(lambda: client.agent.runs.cancel(queued)),
    "422": status(lambda: client.agent.run(prompt="p")),
    "422_type": status(lambda: client.agent.run(prompt="p",
                        config={"worker_host": "w", "idle_timeout_minutes": "ten"})),
    "cancelled": client.agent.runs.retrieve(queued).state,
})
"#,
        &[],
    )
    .await;
    let cases = [
        ("401", "AuthenticationError"),
        ("404", "NotFoundError"),
        ("400", "BadRequestError"),
        ("422", "UnprocessableEntityError"),
        ("422_type", "UnprocessableEntityError"),
    ];
    for (key, class) in cases {
        let error = &result[key];
        assert_eq!(error["class"], class, "{key}: {error}");
        assert_eq!(error["status"].to_string(), key[..3], "{key}: {error}");
        assert_eq!(
            error["body"]["status"].to_string(),
            key[..3],
            "{key}: {error}"
        );
    }
    assert!(
        result["422"]["body"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("config.worker_host: required"),
        "{result}"
    );
    assert!(
        result["422_type"]["body"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("config.idle_timeout_minutes: invalid type"),
        "{result}"
    );
    assert_eq!(result["cancelled"], "CANCELLED");
}

/// The README's three-line script, verbatim.
const THREE_LINES: &str = r#"
from oz_agent_sdk import OzAPI
run = OzAPI().agent.run(prompt="Say hello", config={"worker_host": "demo"})
print(run.run_id, run.state)
"#;

#[tokio::test]
async fn the_binary_serves_the_run_api_to_the_three_line_script() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let Some(python) = python() else { return };
    let mut child = tokio::process::Command::new(crate::support::local_control_plane_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            API_KEY,
            "--tasks",
            "0",
        ])
        .args(["--secret", &format!("GITHUB_ACCESS_TOKEN={SECRET}")])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base_url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("run-api base_url=") {
                return url.to_owned();
            }
        }
        panic!("the binary exited without announcing the run API");
    })
    .await
    .expect("the binary announces its run API");
    // The script prints `<run id> <state>`; wrap it to get JSON back.
    let script = format!(
        "import contextlib, io\nbuf = io.StringIO()\nwith contextlib.redirect_stdout(buf):\n    exec({THREE_LINES:?})\nout(buf.getvalue().split())"
    );
    let printed = sdk::run_at(&python, &base_url, &script, &[]).await;
    assert_eq!(
        printed[1], "QUEUED",
        "no worker `demo` is connected: {printed}"
    );
    let run_id = printed[0].as_str().unwrap();
    let cancelled = sdk::run_at(
        &python,
        &base_url,
        "client.agent.runs.cancel(sys.argv[1])\nout(client.agent.runs.retrieve(sys.argv[1]).state)",
        &[run_id],
    )
    .await;
    assert_eq!(cancelled, "CANCELLED");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_bad_secret_flag_is_refused_without_echoing_it() {
    let output = tokio::process::Command::new(crate::support::local_control_plane_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            API_KEY,
            "--tasks",
            "0",
        ])
        .args(["--secret", SECRET])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--secret number 1: expected KEY=VALUE"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "{stderr}");
}

#[tokio::test]
async fn a_list_filter_the_server_does_not_implement_is_a_typed_422_naming_it() {
    let Some(python) = python() else { return };
    let cp = control_plane().await;
    let result = sdk::run(
        &python,
        &cp,
        r#"
client.agent.run(prompt="p", config={"worker_host": "nobody"})
errors = {}
for name, value in [("creator", "someone"), ("executor", "someone"),
                    ("ancestor_run_id", "run-1"), ("schedule_id", "s-1"),
                    ("artifact_type", "PLAN")]:
    try:
        client.agent.runs.list(**{name: value})
        errors[name] = None
    except oz_agent_sdk.UnprocessableEntityError as e:
        errors[name] = {"status": e.status_code, "body": e.body}
out({"errors": errors, "plain": len(client.agent.runs.list().runs)})
"#,
        &[],
    )
    .await;
    assert_eq!(result["plain"], 1, "{result}");
    for name in [
        "creator",
        "executor",
        "ancestor_run_id",
        "schedule_id",
        "artifact_type",
    ] {
        let error = &result["errors"][name];
        assert_eq!(error["status"], 422, "{name}: {result}");
        assert_eq!(
            error["body"]["detail"],
            format!("{name}: this filter is not supported by the local control plane"),
            "{name}: {result}"
        );
    }
}

#[tokio::test]
async fn the_cursor_pages_without_repeats_while_runs_change_between_pages() {
    let Some(python) = python() else { return };
    let cp = control_plane().await;
    let result = sdk::run(
        &python,
        &cp,
        r#"
ids = [client.agent.run(prompt=f"run {n}", config={"worker_host": "nobody"}).run_id
       for n in range(5)]
first = client.agent.runs.list(limit=2)
# The oldest run changes, so it moves to the front of the default updated_at order.
client.agent.runs.cancel(ids[0])
second = first.get_next_page()
out({"ids": ids, "first": [r.run_id for r in first.runs],
     "second": [r.run_id for r in second.runs]})
"#,
        &[],
    )
    .await;
    let ids = |key: &str| -> Vec<String> { serde_json::from_value(result[key].clone()).unwrap() };
    let all = ids("ids");
    assert_eq!(ids("first"), [all[4].clone(), all[3].clone()], "{result}");
    assert_eq!(ids("second"), [all[2].clone(), all[1].clone()], "{result}");
}

/// Creates a run for worker `sdk-w` with the SDK and waits until it is `INPROGRESS`; its id.
async fn start_gated_run(python: &str, cp: &LocalControlPlane) -> String {
    let started = sdk::run(
        python,
        cp,
        r#"
created = client.agent.run(prompt="Wait for the gate", config={"worker_host": "sdk-w"})
out(wait_for(created.run_id, ["INPROGRESS"]).run_id)
"#,
        &[],
    )
    .await;
    started.as_str().unwrap().to_owned()
}

/// The run `run_id` once the SDK sees it in one of `states`, as JSON.
async fn settled_run(
    python: &str,
    cp: &LocalControlPlane,
    run_id: &str,
    states: &[&str],
) -> serde_json::Value {
    let script = "out(wait_for(sys.argv[1], sys.argv[2:]).model_dump(mode='json'))";
    let args: Vec<&str> = std::iter::once(run_id)
        .chain(states.iter().copied())
        .collect();
    sdk::run(python, cp, script, &args).await
}

#[tokio::test]
async fn a_run_whose_connection_drops_mid_run_ends_with_the_report_from_the_next_one() {
    let Some(python) = python() else { return };
    let cp = control_plane().await;
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("go");
    let wait = format!("OZ_STANDIN_WAIT_FILE={}", gate.display());
    let daemon = worker(&cp, "sdk-w", &["-e", wait.as_str()]).await;
    let run_id = start_gated_run(&python, &cp).await;
    let first = cp.connections().last().unwrap().id;
    cp.drop_all_connections();
    cp.wait_connections(Duration::from_secs(30), |conns| {
        conns.iter().any(|c| c.open && c.id > first)
    })
    .await
    .expect("the worker reconnects");
    std::fs::write(&gate, "").unwrap();
    let run = settled_run(
        &python,
        &cp,
        &run_id,
        &["SUCCEEDED", "FAILED", "CANCELLED", "QUEUED"],
    )
    .await;
    assert_eq!(run["state"], "SUCCEEDED", "{run}");
    assert_eq!(
        run["status_message"]["message"],
        "Task completed successfully"
    );
    assert_eq!(task_ids(&daemon), vec![run_id], "it ran once");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_cancel_while_the_worker_is_disconnected_is_delivered_when_it_reconnects() {
    let Some(python) = python() else { return };
    let cp = control_plane().await;
    let knobs = [
        "-e",
        "OZ_STANDIN_SLEEP=forever",
        "-e",
        "OZ_STANDIN_SPAWN_CHILD=1",
    ];
    let daemon = worker(&cp, "sdk-w", &knobs).await;
    let run_id = start_gated_run(&python, &cp).await;
    wait_for_pid(&daemon.report()).await;
    let pids = reported_pids(&daemon.report());
    assert_eq!(pids.len(), 2, "the stand-in and its child: {pids:?}");

    cp.set_reject_handshakes(Some(503));
    cp.drop_all_connections();
    cp.wait_connections(Duration::from_secs(30), |conns| {
        conns.iter().all(|c| !c.open)
    })
    .await
    .expect("the connection ends");
    let pending = sdk::run(
        &python,
        &cp,
        r#"
raw = client.agent.runs.with_raw_response.cancel(sys.argv[1])
run = client.agent.runs.retrieve(sys.argv[1])
out({"status": raw.status_code, "answer": raw.parse(), "run": run.model_dump(mode="json")})
"#,
        &[&run_id],
    )
    .await;
    assert_eq!(pending["status"], 202, "{pending}");
    assert_eq!(pending["answer"], run_id.as_str());
    assert_eq!(pending["run"]["state"], "INPROGRESS", "{pending}");
    let message = pending["run"]["status_message"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("disconnected"), "{message}");

    cp.set_reject_handshakes(None);
    let run = settled_run(&python, &cp, &run_id, &["CANCELLED", "SUCCEEDED", "FAILED"]).await;
    assert_eq!(run["state"], "CANCELLED", "{run}");
    assert_eq!(
        run["status_message"]["message"],
        "Task cancelled by user request."
    );
    assert_eq!(wait_all_dead(&pids).await, Vec::<i32>::new());
    daemon.stop().await.unwrap();
}

/// Runs `scripts/setup/50-oz-sdk.sh` as `scripts/test.sh` does (sourced by a `set -euo
/// pipefail` bash) in `dir`, with a stand-in `python3` on `PATH` whose venvs' `pip` records
/// the version it was asked for; returns (success, stdout).
fn source_setup_script(dir: &std::path::Path) -> (bool, String) {
    let stub = dir.join("stub");
    std::fs::create_dir_all(&stub).unwrap();
    let python3 = r#"#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/sh\ncat "%s/version" 2>/dev/null || exit 1\n' "$3" > "$3/bin/python"
  printf '#!/bin/sh\nfor a; do v=$a; done; echo "${v#oz-agent-sdk==}" > "%s/version"\n' "$3" > "$3/bin/pip"
  chmod +x "$3/bin/python" "$3/bin/pip"
fi
"#;
    write_executable(&stub.join("python3"), python3);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup/50-oz-sdk.sh");
    let path = format!("{}:{}", stub.display(), std::env::var("PATH").unwrap());
    let output = std::process::Command::new("bash")
        .args(["-c", &format!("set -euo pipefail; . {script}")])
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("OZ_SDK_VERSION")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), stdout)
}

fn write_executable(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_setup_script_reinstalls_an_sdk_of_another_version_and_keeps_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let venv_bin = dir.path().join("target/test-tools/sdk-venv/bin");
    std::fs::create_dir_all(&venv_bin).unwrap();
    write_executable(&venv_bin.join("python"), "#!/bin/sh\necho 0.14.0\n");
    let (ok, stdout) = source_setup_script(dir.path());
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("want 0.15.0, have 0.14.0: (re)installing"),
        "{stdout}"
    );
    assert!(stdout.ends_with("oz-agent-sdk 0.15.0\n"), "{stdout}");

    let (ok, stdout) = source_setup_script(dir.path());
    assert!(ok, "{stdout}");
    assert_eq!(
        stdout, "oz-agent-sdk 0.15.0\n",
        "already right: nothing installed"
    );
}
