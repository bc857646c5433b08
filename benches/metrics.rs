//! Cost of the metrics path: nanoseconds per recorded task lifecycle (`TaskClaimed` +
//! `TaskFinished`) with each exporter against `none`, and the RSS of a fresh process with the
//! Prometheus exporter as lifecycles accumulate (10k, 20k, ... 100k; it should plateau, since
//! every series is bounded), with the number of exported series.
//!
//! Run: `cargo bench --bench metrics`. The console exporter and the RSS measurement each run in
//! a child process of this binary (so the RSS is not inflated by the other pipelines); the
//! console child's stdout goes to /dev/null.

#![allow(
    clippy::disallowed_methods,
    reason = "benches read their service addresses from the environment, time phases and spawn tasks they await"
)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use oz_agent_worker::adapters::otel::{ServiceInfo, WorkerMetrics};
use oz_agent_worker::domain::{FailurePhase, FailureReason, TaskResult};
use oz_agent_worker::ports::{Metrics, Readiness, Signal};

const WARMUP: u64 = 20_000;
const MEASURED: u64 = 200_000;
/// Under `cargo test --all-targets` (no `--bench` argument): a quick smoke run instead.
const SMOKE: u64 = 1_000;
const CHILD_ENV: &str = "OZ_BENCH_METRICS_CHILD";
/// Lifecycles of the RSS measurement, and how often it scrapes and prints.
const RSS_LIFECYCLES: u64 = 100_000;
const RSS_CHECKPOINT: u64 = 10_000;

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (warmup, measured) = if full { (WARMUP, MEASURED) } else { (0, SMOKE) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if std::env::var(CHILD_ENV).as_deref() == Ok("rss") {
        let (total, every) = if full {
            (RSS_LIFECYCLES, RSS_CHECKPOINT)
        } else {
            (SMOKE, SMOKE / 10)
        };
        rss_plateau(&runtime, total, every);
        return;
    }
    if std::env::var(CHILD_ENV).as_deref() == Ok("console") {
        let ns = runtime.block_on(start(&[
            ("OTEL_METRICS_EXPORTER", "console"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ]));
        let ns = per_lifecycle(&ns, warmup, measured);
        eprintln!("{ns:.1}");
        return;
    }

    if !full {
        println!("metrics bench: smoke run; use `cargo bench --bench metrics` for figures");
    }
    println!("metrics bench: {measured} task lifecycles (TaskClaimed + TaskFinished) per exporter");
    let none = runtime.block_on(start(&[("OTEL_METRICS_EXPORTER", "none")]));
    let none_ns = per_lifecycle(&none, warmup, measured);
    report("none", none_ns, none_ns);

    let prometheus = runtime.block_on(start(&[
        ("OTEL_METRICS_EXPORTER", "prometheus"),
        ("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "0"),
    ]));
    report(
        "prometheus",
        per_lifecycle(&prometheus, warmup, measured),
        none_ns,
    );
    runtime.block_on(prometheus.shutdown());

    let sink = runtime.block_on(start_otlp_sink());
    let endpoint = format!("http://{sink}");
    let otlp = runtime.block_on(start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
    ]));
    report(
        "otlp (http/protobuf, 1 s push)",
        per_lifecycle(&otlp, warmup, measured),
        none_ns,
    );
    runtime.block_on(otlp.shutdown());

    match console_in_child(full) {
        Some(ns) => report("console (stdout to /dev/null)", ns, none_ns),
        None => println!("  console: the child process failed"),
    }

    if !rss_in_child(full) {
        println!("  RSS: the child process failed");
    }
}

/// Runs [`rss_plateau`] in a fresh child process and prints its report; false if it failed.
fn rss_in_child(full: bool) -> bool {
    let Ok(exe) = std::env::current_exe() else {
        return false;
    };
    let output = Command::new(exe)
        .args(full.then_some("--bench"))
        .env(CHILD_ENV, "rss")
        .stderr(Stdio::inherit())
        .output();
    match output {
        Ok(output) if output.status.success() => {
            print!("{}", String::from_utf8_lossy(&output.stdout));
            true
        }
        _ => false,
    }
}

async fn start(vars: &[(&str, &str)]) -> WorkerMetrics {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let service = ServiceInfo {
        version: "bench".to_owned(),
        backend: "docker".to_owned(),
        worker_id: "w-bench".to_owned(),
    };
    WorkerMetrics::init(&|k| vars.get(k).cloned(), service, 8, Readiness::default())
}

/// One claimed-and-finished task; every fourth one fails with a rotating reason.
fn lifecycle(metrics: &dyn Metrics, idx: u64) {
    metrics.record(Signal::TaskClaimed);
    let result = TaskResult::ALL[(idx % 4) as usize];
    let failure = (result == TaskResult::Failed).then(|| {
        let reason = FailureReason::ALL[(idx % FailureReason::ALL.len() as u64) as usize];
        (FailurePhase::Backend, reason)
    });
    metrics.record(Signal::TaskFinished {
        result,
        duration: Duration::from_millis(idx % 600_000),
        failure,
    });
}

fn per_lifecycle(metrics: &WorkerMetrics, warmup: u64, measured: u64) -> f64 {
    // Called through `dyn Metrics`, as the app does, and opaque to the optimiser.
    let metrics: &dyn Metrics = std::hint::black_box(metrics);
    for idx in 0..warmup {
        lifecycle(metrics, idx);
    }
    let started = Instant::now();
    for idx in 0..measured {
        lifecycle(metrics, idx);
    }
    started.elapsed().as_nanos() as f64 / measured as f64
}

fn report(name: &str, ns: f64, none_ns: f64) {
    println!(
        "  {name:<32} {ns:>8.1} ns/lifecycle  (+{:.1} ns over none)",
        ns - none_ns
    );
}

fn console_in_child(full: bool) -> Option<f64> {
    let output = Command::new(std::env::current_exe().ok()?)
        .args(full.then_some("--bench"))
        .env(CHILD_ENV, "console")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()
}

/// An OTLP/HTTP sink that accepts and discards every export.
async fn start_otlp_sink() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async {
                    let _ = request.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/x-protobuf")
                            .body(Full::new(Bytes::new()))
                            .expect("response"),
                    )
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// RSS of this (fresh) process with the Prometheus exporter, scraped every `every` lifecycles
/// like a real Prometheus, printed at each scrape with the number of series exposed.
fn rss_plateau(runtime: &tokio::runtime::Runtime, total: u64, every: u64) {
    let baseline = rss_kib();
    let metrics = runtime.block_on(start(&[
        ("OTEL_METRICS_EXPORTER", "prometheus"),
        ("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "0"),
    ]));
    let addr = metrics
        .otel()
        .and_then(|otel| otel.prometheus_addr())
        .expect("prometheus exporter");
    println!(
        "RSS of a fresh process with the prometheus exporter (scraped every {every} lifecycles):"
    );
    println!("  before the pipeline:      {baseline:>7} KiB");
    let (_, series) = runtime.block_on(scrape(addr));
    println!(
        "  {:>7} lifecycles: {:>7} KiB, {series:>4} series",
        0,
        rss_kib()
    );
    let mut body_bytes = 0;
    for idx in 0..total {
        lifecycle(&metrics, idx);
        if (idx + 1) % every == 0 {
            let (bytes, series) = runtime.block_on(scrape(addr));
            body_bytes = bytes;
            println!(
                "  {:>7} lifecycles: {:>7} KiB, {series:>4} series",
                idx + 1,
                rss_kib()
            );
        }
    }
    println!("  /metrics response after {total} lifecycles: {body_bytes} bytes");
    runtime.block_on(metrics.shutdown());
}

/// Scrapes `/metrics`; the response size and the number of series (sample lines).
async fn scrape(addr: std::net::SocketAddr) -> (usize, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, 0);
    };
    let _ = stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let series = body
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .count();
    (response.len(), series)
}
