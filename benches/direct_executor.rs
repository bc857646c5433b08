//! Direct backend overhead, printed as figures (no assertions): the wall time of one succeeding
//! task through `HostExecutor` (workspace, env file, spawn in a process group, piped output,
//! cleanup) next to spawning the same `scripts/oz-standin` directly, and the latency from
//! cancellation to `run` returning for a running agent.
//!
//! Run: `cargo bench --bench direct_executor` (add `--profile dev` to skip a release build).

#![allow(
    clippy::disallowed_methods,
    reason = "benches read their service addresses from the environment, time phases and spawn tasks they await"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use oz_agent_worker::adapters::host::{DirectConfig, HostEnv, HostExecutor};
use oz_agent_worker::domain::spec::{SpecSettings, prepare};
use oz_agent_worker::domain::{Assignment, Exit, TaskId};
use oz_agent_worker::ports::Executor;
use tokio_util::sync::CancellationToken;

const RUNS: usize = 40;
const CANCELS: usize = 10;
/// Iterations when run by `cargo test --all-targets` (no `--bench` argument): a smoke run.
const SMOKE: usize = 2;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let full = std::env::args().any(|a| a == "--bench");
    let (runs, cancels) = if full {
        (RUNS, CANCELS)
    } else {
        (SMOKE, SMOKE)
    };
    runtime.block_on(bench(runs, cancels));
}

async fn bench(runs: usize, cancels: usize) {
    let standin = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/oz-standin");
    let root = tempfile::TempDir::new().expect("temp dir");
    let config = DirectConfig {
        workspace_root: root.path().join("ws"),
        oz_path: Some(standin.clone()),
        ..DirectConfig::default()
    };
    let host = HostEnv::from_pairs(
        ["PATH", "HOME"]
            .into_iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v))),
    );
    let executor = HostExecutor::with_host_env(&config, host).expect("preflight");

    let mut direct = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let status = tokio::process::Command::new(&standin)
            .args(["agent", "run"])
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .expect("spawn");
        assert!(status.success());
        direct.push(start.elapsed());
    }

    let mut through_executor = Vec::new();
    for i in 0..runs {
        let spec = spec(&format!("bench-{i}"), &[]);
        let start = Instant::now();
        let outcome = executor.run(&spec, CancellationToken::new()).await;
        through_executor.push(start.elapsed());
        assert_eq!(outcome, Ok(Exit::Succeeded));
    }

    let mut cancel_latency = Vec::new();
    for i in 0..cancels {
        let report = root.path().join(format!("cancel-{i}.report"));
        let spec = spec(
            &format!("cancel-{i}"),
            &[
                ("OZ_STANDIN_SLEEP", "forever"),
                ("OZ_STANDIN_REPORT", &report.to_string_lossy()),
            ],
        );
        let token = CancellationToken::new();
        let run = {
            let (executor, token) = (executor.clone(), token.clone());
            tokio::spawn(async move { executor.run(&spec, token).await })
        };
        while !std::fs::read_to_string(&report).is_ok_and(|r| r.contains("pid: ")) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let start = Instant::now();
        token.cancel();
        let outcome = run.await.expect("no panic");
        cancel_latency.push(start.elapsed());
        assert_eq!(outcome, Ok(Exit::Cancelled));
    }

    print("spawn oz-standin directly", &mut direct);
    print("HostExecutor::run, succeeding task", &mut through_executor);
    print(
        "cancel -> run returns (SIGTERM honoured)",
        &mut cancel_latency,
    );
}

fn spec(id: &str, env: &[(&str, &str)]) -> oz_agent_worker::domain::TaskSpec {
    let assignment = Assignment::new(TaskId::parse(id).expect("id"));
    let mut spec = prepare(&assignment, &SpecSettings::default());
    for (k, v) in env {
        spec.env.push(*k, *v);
    }
    spec
}

fn print(label: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{label:<44} n={:<3} median={:>8.2?} p90={:>8.2?} max={:>8.2?}",
        samples.len(),
        at(0.5),
        at(0.9),
        samples[samples.len() - 1]
    );
}
