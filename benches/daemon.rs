//! The daemon end to end over a loopback WebSocket with a no-op executor: throughput (tasks/s
//! for 10,000 tasks), assignment→`task_claimed` latency (p50/p99 at 1,000 tasks/s), and the
//! daemon's RSS idle and with 1,000 tasks in flight.
//!
//! The daemon (WsTaskSource + Supervisor + a no-op executor) runs in a child process of this
//! binary, so its RSS is its own; the parent is the control plane.
//!
//! Run: `cargo bench --bench daemon`. Without `--bench` (e.g. under `cargo test --all-targets`)
//! it does a small smoke run.

#![allow(
    clippy::disallowed_methods,
    reason = "benches read their service addresses from the environment, time phases and spawn tasks they await"
)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use oz_local_control_plane::{LocalControlPlane, sample_assignment};
use oz_protocol::WorkerMessage;

const KEY: &str = "bench-key";
const CHILD_ENV: &str = "OZ_BENCH_DAEMON_URL";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Ok(url) = std::env::var(CHILD_ENV) {
        runtime.block_on(common::run_noop_daemon(url));
        return;
    }
    let full = std::env::args().any(|arg| arg == "--bench");
    runtime.block_on(run_bench(full));
}

async fn run_bench(full: bool) {
    let (n_throughput, latency_rate, latency_secs, n_inflight) = if full {
        (10_000, 1_000, 5, 1_000)
    } else {
        println!("daemon bench: smoke run; use `cargo bench --bench daemon` for figures");
        (200, 1_000, 1, 50)
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let cp = LocalControlPlane::start(addr, KEY)
        .await
        .expect("control plane");
    let mut child = spawn_child(&cp.ws_url());
    cp.wait_connections(Duration::from_secs(30), |c| c.iter().any(|c| c.open))
        .await
        .expect("daemon connected");
    let pid = child.id();
    // Let start-up allocations settle before reading the idle figure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib(pid);

    // Throughput: push every assignment, wait for every completion.
    let template = sample_assignment("t");
    let started = Instant::now();
    for i in 0..n_throughput {
        cp.assign(&assignment(&template, &format!("tp-{i}")))
            .unwrap();
    }
    let mut completed = 0;
    while completed < n_throughput {
        let received = cp
            .next_message(Duration::from_secs(60))
            .await
            .expect("message");
        if matches!(received.message, Some(WorkerMessage::TaskCompleted { .. })) {
            completed += 1;
        }
    }
    let elapsed = started.elapsed();
    let throughput = n_throughput as f64 / elapsed.as_secs_f64();

    // Latency at a fixed rate: assignment sent → task_claimed received.
    let n_latency = latency_rate * latency_secs;
    let interval = Duration::from_secs(1) / latency_rate as u32;
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(n_latency);
    let mut latencies: Vec<Duration> = Vec::with_capacity(n_latency);
    let mut ticker = tokio::time::interval(interval);
    let mut next_task = 0;
    while latencies.len() < n_latency {
        tokio::select! {
            _ = ticker.tick(), if next_task < n_latency => {
                let id = format!("lat-{next_task}");
                sent_at.insert(id.clone(), Instant::now());
                cp.assign(&assignment(&template, &id)).unwrap();
                next_task += 1;
            }
            received = cp.next_message(Duration::from_secs(60)) => {
                if let Some(WorkerMessage::TaskClaimed { task_id, .. }) = received.expect("message").message
                    && let Some(at) = sent_at.remove(&task_id)
                {
                    latencies.push(at.elapsed());
                }
            }
        }
    }
    latencies.sort_unstable();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];

    // In flight: tasks that hold their slot until cancelled.
    for i in 0..n_inflight {
        cp.assign(&assignment(&template, &format!("hold-{i}")))
            .unwrap();
    }
    let mut claimed = 0;
    while claimed < n_inflight {
        let received = cp
            .next_message(Duration::from_secs(60))
            .await
            .expect("message");
        if let Some(WorkerMessage::TaskClaimed { task_id, .. }) = received.message
            && task_id.starts_with("hold-")
        {
            claimed += 1;
        }
    }
    let inflight_rss = rss_kib(pid);

    println!("daemon bench (loopback WebSocket, no-op executor, daemon in a child process)");
    println!(
        "  throughput: {n_throughput} tasks in {:.3} s = {throughput:.0} tasks/s (assignment → task_completed)",
        elapsed.as_secs_f64()
    );
    println!(
        "  assignment → task_claimed at {latency_rate} tasks/s over {n_latency} tasks: p50 {:.3} ms, p99 {:.3} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    println!("  daemon RSS idle: {:.1} MiB", idle_rss as f64 / 1024.0);
    println!(
        "  daemon RSS with {n_inflight} tasks in flight: {:.1} MiB",
        inflight_rss as f64 / 1024.0
    );
    stop(&mut child);
}

fn assignment(template: &serde_json::Value, id: &str) -> serde_json::Value {
    let mut data = template.clone();
    data["task_id"] = id.into();
    data["task"]["id"] = id.into();
    data
}

fn spawn_child(url: &str) -> Child {
    Command::new(std::env::current_exe().expect("bench binary"))
        .env(CHILD_ENV, url)
        .spawn()
        .expect("spawn the daemon child")
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
