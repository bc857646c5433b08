//! Dispatch bench: runs/s for runs created through the HTTP run API (as the SDK creates them)
//! on two real worker daemons with `--max-concurrent-tasks 4` (Direct backend, the stand-in
//! `oz` sleeping `OZ_STANDIN_SLEEP`), against the same workers' raw capacity when fed
//! directly (a feeder per worker that keeps exactly 4 assignments in flight), printed as a
//! ratio, with the rejections per run; for capacity-aware dispatch and the fixed-delay
//! fallback.
//!
//! Needs the worker binary: `cargo build --bin oz-agent-worker` (or set `OZ_WORKER_BIN`).
//! Run: `cargo bench -p oz-local-control-plane --bench dispatch` (`OZ_BENCH_RUNS`,
//! `OZ_BENCH_SLEEP` change the run count, default 200, and the stand-in's sleep, default 0.1 s).
#![allow(
    clippy::disallowed_methods,
    reason = "a bench reads its knobs from the environment and times phases with the wall clock"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use oz_local_control_plane::{Dispatch, LocalControlPlane, RunOptions, sample_assignment};
use oz_protocol::WorkerMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

const KEY: &str = "bench-key";
const LIMIT: usize = 4;
const WORKERS: usize = 2;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn worker_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("OZ_WORKER_BIN") {
        return bin.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("oz-agent-worker"))
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!("no oz-agent-worker binary: run `cargo build --bin oz-agent-worker` or set OZ_WORKER_BIN")
        })
}

/// A worker daemon process connected to `ws_url` as `bench`.
struct Worker {
    child: Child,
    _dir: tempfile_dir::Dir,
}

mod tempfile_dir {
    //! A directory removed on drop (no extra dependency).
    use std::path::PathBuf;

    pub(crate) struct Dir(pub(crate) PathBuf);

    impl Dir {
        pub(crate) fn new(tag: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "oz-dispatch-bench-{}-{tag}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            ));
            std::fs::create_dir_all(&path).expect("temp dir");
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Worker {
    fn spawn(ws_url: &str, tag: &str, sleep: &str) -> Worker {
        let dir = tempfile_dir::Dir::new(tag);
        let config = dir.0.join("config.yaml");
        let standin = workspace().join("scripts/oz-standin");
        std::fs::write(
            &config,
            format!(
                "backend:\n  direct:\n    workspace_root: {}\n    oz_path: {}\n",
                dir.0.join("ws").display(),
                standin.display()
            ),
        )
        .expect("config");
        let child = Command::new(worker_bin())
            .args(["--backend", "direct", "--worker-id", "bench"])
            .args(["--web-socket-url", ws_url])
            .args(["--server-root-url", "http://127.0.0.1:1"])
            .args(["--max-concurrent-tasks", &LIMIT.to_string()])
            .arg("--config-file")
            .arg(&config)
            .args(["-e", &format!("OZ_STANDIN_SLEEP={sleep}")])
            .args(["--log-level", "warn"])
            .env("WARP_API_KEY", KEY)
            .env("OTEL_METRICS_EXPORTER", "none")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the worker");
        Worker { child, _dir: dir }
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

async fn wait_open(cp: &LocalControlPlane, count: usize) {
    cp.wait_connections(Duration::from_secs(30), |c| {
        c.iter().filter(|c| c.open).count() >= count
    })
    .await
    .expect("the workers connect");
}

/// Raw capacity: one control plane per worker, each keeping exactly `LIMIT` assignments in
/// flight and sending the next one the moment a task ends. Returns tasks/s over `runs` tasks.
async fn raw_capacity(runs: usize, sleep: &str) -> f64 {
    let mut planes = Vec::new();
    let mut workers = Vec::new();
    for index in 0..WORKERS {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let cp = LocalControlPlane::start(addr, KEY)
            .await
            .expect("control plane");
        workers.push(Worker::spawn(&cp.ws_url(), &format!("raw{index}"), sleep));
        wait_open(&cp, 1).await;
        planes.push(cp);
    }
    let started = Instant::now();
    let per_worker = runs / WORKERS;
    let feeders = planes.iter().enumerate().map(|(index, cp)| async move {
        let mut sent = 0;
        let mut done = 0;
        while sent < LIMIT.min(per_worker) {
            cp.assign(&sample_assignment(&format!("raw-{index}-{sent}")))
                .expect("assign");
            sent += 1;
        }
        while done < per_worker {
            let received = cp
                .next_message(Duration::from_secs(60))
                .await
                .expect("a message within 60 s");
            match received.message {
                Some(WorkerMessage::TaskCompleted { .. } | WorkerMessage::TaskFailed { .. }) => {
                    done += 1;
                    if sent < per_worker {
                        cp.assign(&sample_assignment(&format!("raw-{index}-{sent}")))
                            .expect("assign");
                        sent += 1;
                    }
                }
                Some(WorkerMessage::TaskRejected { .. }) => panic!("raw feeding was rejected"),
                _ => {}
            }
        }
    });
    futures_util::future::join_all(feeders).await;
    let elapsed = started.elapsed();
    for worker in workers {
        worker.stop().await;
    }
    (per_worker * WORKERS) as f64 / elapsed.as_secs_f64()
}

/// POSTs one run to the run API with a fresh connection; panics on a non-200 answer.
async fn create_run(addr: SocketAddr, index: usize) {
    let body = serde_json::json!({
        "prompt": "Say hello",
        "title": format!("bench {index}"),
        "config": {"worker_host": "bench"},
    })
    .to_string();
    let request = format!(
        "POST /api/v1/agent/runs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "create run: {answer}");
}

/// Runs created through the HTTP run API on one control plane with both workers connected
/// under one worker id. Returns (runs/s from the first create to the last terminal run,
/// rejections).
async fn through_api(runs: usize, sleep: &str, dispatch: Dispatch) -> (f64, u64) {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let options = RunOptions {
        dispatch,
        retry_delay: Duration::from_secs(1),
        ..RunOptions::default()
    };
    let cp = LocalControlPlane::start_with(addr, KEY, options)
        .await
        .expect("control plane");
    let workers: Vec<Worker> = (0..WORKERS)
        .map(|index| Worker::spawn(&cp.ws_url(), &format!("api{index}"), sleep))
        .collect();
    wait_open(&cp, WORKERS).await;
    let started = Instant::now();
    let creates = (0..runs).map(|index| create_run(cp.local_addr(), index));
    futures_util::future::join_all(creates).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    // The bench waits for a state, not an event: polling the store is the measurement's end.
    loop {
        let all = cp.runs();
        if all.len() == runs && all.iter().all(|run| run.state.is_terminal()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runs did not finish within 600 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let rejections = cp.rejections();
    for worker in workers {
        worker.stop().await;
    }
    (runs as f64 / elapsed.as_secs_f64(), rejections)
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("OZ_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let sleep = std::env::var("OZ_BENCH_SLEEP").unwrap_or_else(|_| "0.1".to_owned());
    println!(
        "dispatch bench: {runs} runs, {WORKERS} Direct workers with --max-concurrent-tasks {LIMIT}, \
         stand-in sleep {sleep}s, worker {}",
        worker_bin().display()
    );
    // The machine is shared: raw and API rounds alternate, and the medians are compared.
    let rounds: usize = std::env::var("OZ_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (mut raws, mut rates, mut rejected) = (Vec::new(), Vec::new(), 0);
    for round in 1..=rounds {
        let raw = raw_capacity(runs, &sleep).await;
        let (rate, rejections) = through_api(runs, &sleep, Dispatch::Capacity).await;
        println!(
            "round {round}: raw (fed directly, {LIMIT} in flight per worker) {raw:6.1} tasks/s, \
             capacity-aware API runs {rate:6.1} runs/s, ratio {:.3}, rejections {rejections}",
            rate / raw
        );
        raws.push(raw);
        rates.push(rate);
        rejected += rejections;
    }
    let raw = median(raws);
    let rate = median(rates);
    println!(
        "capacity-aware: median {rate:.1} runs/s vs raw median {raw:.1} tasks/s: ratio {:.3} \
         (target >= 0.9); rejections {:.1}% of runs (target < 5%)",
        rate / raw,
        100.0 * rejected as f64 / (runs * rounds) as f64
    );
    let (rate, rejections) = through_api(runs, &sleep, Dispatch::FixedDelay).await;
    println!(
        "fixed-delay (fallback, 1 s retry delay): {rate:.1} runs/s, ratio {:.3} of the raw median, \
         rejections {rejections} ({:.1}% of runs)",
        rate / raw,
        100.0 * rejections as f64 / runs as f64
    );
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
