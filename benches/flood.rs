//! The daemon under a frame flood: 60,000 frames as fast as the loopback WebSocket takes them,
//! 11,000 of them valid assignments (run by a no-op executor) and the rest malformed (not JSON,
//! not an object, unknown types, missing or mistyped fields, truncated frames, random bytes).
//! Prints the daemon's RSS idle, per running task (1,000 tasks holding their slot), at its
//! peak during the flood (sampled every 10 ms, and the kernel's high-water mark), and 30 s
//! after the flood ended and its tasks finished.
//!
//! The daemon (WsTaskSource + Supervisor + a no-op executor) runs in a child process of this
//! binary, so its RSS is its own; the parent is the control plane.
//!
//! Run: `cargo bench --bench flood`; set `OZ_BENCH_CHILD_WRAPPER` to run the daemon under a
//! heap profiler (e.g. `valgrind --tool=massif --massif-out-file=/tmp/flood.massif`).
//! Without `--bench` (e.g. under `cargo test --all-targets`) it does a small smoke run.
#![allow(
    clippy::disallowed_methods,
    reason = "a bench reads its knobs from the environment, times phases, and spawns a sampler thread and the daemon's tasks that live as long as its child process"
)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oz_local_control_plane::{LocalControlPlane, sample_assignment};
use oz_protocol::WorkerMessage;

const KEY: &str = "bench-key";
const CHILD_ENV: &str = "OZ_BENCH_FLOOD_URL";

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
    let (frames, valid, holds, settle) = if full {
        (60_000, 11_000, 1_000, Duration::from_secs(30))
    } else {
        println!("flood bench: smoke run; use `cargo bench --bench flood` for figures");
        (6_000, 1_100, 100, Duration::from_secs(1))
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let cp = LocalControlPlane::start(addr, KEY)
        .await
        .expect("control plane");
    let mut child = spawn_child(&cp.ws_url());
    cp.wait_connections(Duration::from_secs(300), |c| c.iter().any(|c| c.open))
        .await
        .expect("daemon connected");
    let pid = child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(pid, "VmRSS:");
    let template = sample_assignment("t");

    // Per running task: tasks that hold their slot until cancelled.
    for i in 0..holds {
        cp.assign(&assignment(&template, &format!("hold-{i}")))
            .unwrap();
    }
    wait_for(
        &cp,
        holds,
        |m| matches!(m, WorkerMessage::TaskClaimed { task_id, .. } if task_id.starts_with("hold-")),
    )
    .await;
    let holding = rss_kib(pid, "VmRSS:");
    for i in 0..holds {
        cp.cancel(&format!("hold-{i}")).unwrap();
    }
    wait_for(&cp, holds, |m| matches!(m, WorkerMessage::TaskCompleted { task_id, .. } if task_id.starts_with("hold-"))).await;

    // The flood, with RSS sampled every 10 ms by a thread.
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let every = frames / valid;
    let started = Instant::now();
    let mut sent_valid = 0;
    for i in 0..frames {
        let frame = if i % every == 0 && sent_valid < valid {
            sent_valid += 1;
            oz_protocol::encode_assignment(&assignment(&template, &format!("fl-{i}")))
        } else {
            malformed(i, &template)
        };
        cp.send_raw(frame).expect("the daemon is connected");
    }
    let sent = started.elapsed();
    wait_for(
        &cp,
        sent_valid,
        |m| matches!(m, WorkerMessage::TaskCompleted { task_id, .. } if task_id.starts_with("fl-")),
    )
    .await;
    let finished = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let after_flood = rss_kib(pid, "VmRSS:");
    tokio::time::sleep(settle).await;
    let after = rss_kib(pid, "VmRSS:");
    let hwm = rss_kib(pid, "VmHWM:");
    let peak = peak.load(Ordering::Relaxed).max(after_flood);

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("flood bench (loopback WebSocket, no-op executor, daemon in a child process)");
    println!("  daemon RSS idle: {:.1} MiB", mib(idle));
    println!(
        "  per running task: {:.1} KiB ({holds} tasks holding their slot: {:.1} MiB)",
        (holding.saturating_sub(idle)) as f64 / holds as f64,
        mib(holding)
    );
    println!(
        "  flood: {frames} frames ({sent_valid} valid assignments) sent in {:.2} s, all tasks finished after {:.2} s ({:.0} tasks/s)",
        sent.as_secs_f64(),
        finished.as_secs_f64(),
        sent_valid as f64 / finished.as_secs_f64()
    );
    println!(
        "  RSS peak during the flood: {:.1} MiB sampled, {:.1} MiB high-water mark (incl. the per-task phase)",
        mib(peak),
        mib(hwm)
    );
    println!(
        "  RSS when the flood's tasks finished: {:.1} MiB; {} s later: {:.1} MiB ({:+.1} MiB vs idle)",
        mib(after_flood),
        settle.as_secs(),
        mib(after),
        mib(after) - mib(idle)
    );
    stop(&mut child);
}

/// Waits until `count` worker messages matching `wanted` arrived.
async fn wait_for(cp: &LocalControlPlane, count: usize, wanted: impl Fn(&WorkerMessage) -> bool) {
    let mut seen = 0;
    while seen < count {
        let received = cp
            .next_message(Duration::from_secs(120))
            .await
            .expect("message");
        if received.message.as_ref().is_some_and(&wanted) {
            seen += 1;
        }
    }
}

/// The `i`th malformed frame: each kind of bad input the worker must shrug off.
fn malformed(i: usize, template: &serde_json::Value) -> String {
    match i % 8 {
        0 => format!("not json {i}"),
        1 => format!("[{i}, 2, 3]"),
        2 => format!(r#"{{"type":"heartbeat","n":{i}}}"#),
        3 => format!(r#"{{"type":"task_assignment","data":{{"task_id":"bad-{i}","task":null}}}}"#),
        4 => {
            let mut data = assignment(template, &format!("mistyped-{i}"));
            data["task"]["agent_config_snapshot"]["idle_timeout_minutes"] = 15.5.into();
            oz_protocol::encode_assignment(&data)
        }
        5 => {
            let text = oz_protocol::encode_assignment(&assignment(template, &format!("cut-{i}")));
            text[..text.len() / 2].to_owned()
        }
        6 => format!(r#"{{"type":"task_cancellation","data":{{"task_id":"unknown-{i}"}}}}"#),
        _ => (0..256)
            .map(|n| char::from(b'!' + ((i * 31 + n * 7) % 90) as u8))
            .collect(),
    }
}

fn assignment(template: &serde_json::Value, id: &str) -> serde_json::Value {
    let mut data = template.clone();
    data["task_id"] = id.into();
    data["task"]["id"] = id.into();
    data
}

fn spawn_child(url: &str) -> Child {
    let exe = std::env::current_exe().expect("bench binary");
    // OZ_BENCH_CHILD_WRAPPER runs the daemon under a profiler, e.g.
    // `valgrind --tool=massif --massif-out-file=/tmp/flood.massif`.
    let mut command = match std::env::var("OZ_BENCH_CHILD_WRAPPER") {
        Ok(wrapper) if !wrapper.trim().is_empty() => {
            let mut words = wrapper.split_whitespace();
            let mut command = Command::new(words.next().unwrap_or_default());
            command.args(words).arg(exe);
            command
        }
        _ => Command::new(exe),
    };
    command
        .env(CHILD_ENV, url)
        .spawn()
        .expect("spawn the daemon child")
}

fn stop(child: &mut Child) {
    // SIGTERM first, so a profiler wrapping the daemon writes its report.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..600 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A `/proc/<pid>/status` field (`VmRSS:`, `VmHWM:`) of a process, in KiB.
fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
