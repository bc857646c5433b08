//! Runs small Python scripts with the official `oz-agent-sdk` against a local control plane:
//! `OZ_TEST_PYTHON` (set by `scripts/setup/50-oz-sdk.sh`) is a Python with the SDK installed.

use std::process::Stdio;
use std::time::Duration;

use oz_local_control_plane::LocalControlPlane;
use tokio::process::Command;

use super::daemon::API_KEY;

/// How long one script may run.
const SCRIPT_BOUND: Duration = Duration::from_secs(120);

/// Helpers every script gets: `client` (an `OzAPI` built from `WARP_API_KEY` and
/// `OZ_API_BASE_URL`), `wait_for(run_id, states)` (polls, bounded) and `out(value)`.
const PRELUDE: &str = r#"
import json, sys, time
import oz_agent_sdk
from oz_agent_sdk import OzAPI
client = OzAPI()

def wait_for(run_id, states, timeout=60):
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        run = client.agent.runs.retrieve(run_id)
        if not seen or seen[-1] != run.state:
            seen.append(run.state)
        if run.state in states:
            return run
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} never reached {states}; states seen: {seen}")
        time.sleep(0.05)

def out(value):
    print(json.dumps(value, default=str))
"#;

/// The Python to use, when it has the SDK.
pub(crate) fn python() -> Option<String> {
    let python = std::env::var("OZ_TEST_PYTHON").ok()?;
    let ok = std::process::Command::new(&python)
        .args(["-c", "import oz_agent_sdk"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(python)
}

/// Runs `script` (after the prelude) with `args` against `cp`; returns the JSON of its last
/// stdout line.
///
/// # Panics
/// When the script fails, times out or prints no JSON (with its output).
pub(crate) async fn run(
    python: &str,
    cp: &LocalControlPlane,
    script: &str,
    args: &[&str],
) -> serde_json::Value {
    run_at(python, &cp.api_base_url(), script, args).await
}

/// As [`run`], against the run API at `base_url` (`OZ_API_BASE_URL`).
///
/// # Panics
/// As [`run`].
pub(crate) async fn run_at(
    python: &str,
    base_url: &str,
    script: &str,
    args: &[&str],
) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script.py");
    std::fs::write(&file, format!("{PRELUDE}\n{script}")).unwrap();
    let child = Command::new(python)
        .arg(&file)
        .args(args)
        .env("WARP_API_KEY", API_KEY)
        .env("OZ_API_BASE_URL", base_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(SCRIPT_BOUND, child.wait_with_output())
        .await
        .expect("the SDK script did not finish within 120s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the script printed no JSON ({e}):\n{stdout}\n{stderr}"))
}
