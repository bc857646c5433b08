//! `oz-local-control-plane`: a stand-in for Warp's server, for trying the worker locally.
//!
//! It listens on a loopback address, waits for a worker to connect, sends `--tasks N` sample
//! assignments, prints every lifecycle event on stdout as it happens, optionally cancels each
//! task `--cancel-after` seconds after assigning it, and with `--exit-when-done` exits once
//! every task is terminal: 0 when none failed, 1 otherwise. Rejected tasks are re-sent after a
//! second, as the real server re-queues them.
//!
//! It also serves the run API of Oz's public API under `http://<listen>/api/v1` (create, get,
//! list and cancel runs, with the same bearer key), so the official `oz-agent-sdk` can drive
//! workers through it; use `--tasks 0` to serve only that. `--secret KEY=VALUE` (repeatable),
//! `--docker-image` and `--sidecar-image` go into the assignments of those runs.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use oz_local_control_plane::{Dispatch, LocalControlPlane, RunOptions, sample_assignment};
use oz_protocol::{TASK_STATE_CANCELLED, WorkerMessage};
use tokio::time::Instant;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "A local stand-in for Warp's control plane, for running the worker locally")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8765")]
    listen: SocketAddr,
    /// The API key the worker must present as `Authorization: Bearer <key>`.
    #[arg(long, env = "OZ_LOCAL_CONTROL_PLANE_API_KEY")]
    api_key: String,
    /// How many sample tasks to assign once a worker connects.
    #[arg(long, default_value_t = 1)]
    tasks: usize,
    /// Cancel each task this many seconds after assigning it.
    #[arg(long)]
    cancel_after: Option<f64>,
    /// Exit when every task is terminal (0 if none failed, 1 otherwise).
    #[arg(long)]
    exit_when_done: bool,
    /// Sets `docker_image` in the sample assignments and in those of API runs.
    #[arg(long)]
    docker_image: Option<String>,
    /// Sets `sidecar_image` in the assignments of API runs.
    #[arg(long)]
    sidecar_image: Option<String>,
    /// An env var for every API run's assignment (`env_vars`), as KEY=VALUE; repeatable.
    /// Values are secrets and are never printed.
    #[arg(long = "secret", value_name = "KEY=VALUE")]
    secrets: Vec<String>,
    /// How API runs are offered to workers: `capacity` (one slot at a time, learning each
    /// connection's limit from its first rejection) or `fixed-delay` (every queued run at
    /// once, a rejected one again after `--retry-delay`; the old behaviour, as a fallback).
    #[arg(long, value_enum, default_value_t = DispatchArg::Capacity)]
    dispatch: DispatchArg,
    /// How long a rejected run waits before it is offered again (every rejection with
    /// `--dispatch fixed-delay`; only non-capacity rejections otherwise), e.g. `1s`, `500ms`.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    retry_delay: Duration,
    /// Marks a claimed run `FAILED` when its worker has had no connection for this long
    /// (killed, never came back), e.g. `5m`, `90s`.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    orphan_timeout: Duration,
}

/// `--dispatch` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DispatchArg {
    /// Capacity-aware.
    Capacity,
    /// Offer all at once, retry rejected runs after a fixed delay.
    FixedDelay,
}

/// Parses `500ms`, `90s`, `5m`, `1h` (a bare number is seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration such as 500ms, 90s or 5m, got {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown duration unit {unit:?} in {text:?} (ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("duration out of range: {text:?}"))
}

/// Parses the `--secret` values; the error names the argument's position, never its text
/// (which may be a secret).
fn parse_secrets(raw: &[String]) -> Result<std::collections::BTreeMap<String, String>, String> {
    raw.iter()
        .enumerate()
        .map(|(n, text)| match text.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(format!(
                "--secret number {}: expected KEY=VALUE with a non-empty KEY",
                n + 1
            )),
        })
        .collect()
}

/// Where one sample task stands.
#[derive(Debug, Clone, PartialEq)]
enum Stage {
    /// Waiting to be (re-)sent at this instant.
    Pending(Instant),
    /// Sent; a cancellation is due at this instant, if any.
    Assigned(Option<Instant>),
    /// Terminal; true when it failed.
    Done(bool),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let secrets = match parse_secrets(&args.secrets) {
        Ok(secrets) => secrets,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(64);
        }
    };
    let options = RunOptions {
        secrets,
        docker_image: args.docker_image.clone(),
        sidecar_image: args.sidecar_image.clone(),
        retry_delay: args.retry_delay,
        dispatch: match args.dispatch {
            DispatchArg::Capacity => Dispatch::Capacity,
            DispatchArg::FixedDelay => Dispatch::FixedDelay,
        },
        orphan_timeout: args.orphan_timeout,
    };
    let cp = match LocalControlPlane::start_with(args.listen, args.api_key.clone(), options).await {
        Ok(cp) => cp,
        Err(err) => {
            eprintln!("cannot listen on {}: {err}", args.listen);
            return ExitCode::from(2);
        }
    };
    println!("listening url={}", cp.ws_url());
    println!("run-api base_url={}", cp.api_base_url());
    let ids: Vec<String> = (1..=args.tasks)
        .map(|n| format!("local-task-{n}"))
        .collect();
    let mut stages: Vec<Stage> = vec![Stage::Pending(Instant::now()); ids.len()];
    let mut connections = cp.watch_connections();
    let mut seen_open = BTreeSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            changed = connections.changed() => {
                if changed.is_err() { return ExitCode::FAILURE; }
                for conn in connections.borrow_and_update().iter() {
                    if conn.open && seen_open.insert(conn.id) {
                        let worker = conn.handshake.query_pairs().into_iter()
                            .find(|(k, _)| k == "worker_id").map(|(_, v)| v).unwrap_or_default();
                        println!("connected connection={} worker_id={worker}", conn.id);
                    } else if !conn.open && seen_open.remove(&conn.id) {
                        println!("disconnected connection={}", conn.id);
                    }
                }
            }
            received = cp.next_message(Duration::from_secs(3600)) => {
                if let Some(received) = received {
                    if let (true, Some(message)) = (received.duplicate, &received.message) {
                        println!(
                            "duplicate-report type={} task_id={} total={}",
                            message.kind(), message.task_id(), cp.duplicate_reports()
                        );
                    } else {
                        handle_message(&received.text, received.message, &ids, &mut stages);
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for (n, stage) in stages.iter_mut().enumerate() {
                    match stage {
                        Stage::Pending(at) if *at <= now => {
                            let mut data = sample_assignment(&ids[n]);
                            if let Some(image) = &args.docker_image {
                                data["docker_image"] = image.clone().into();
                            }
                            if let Ok(conn) = cp.assign(&data) {
                                println!("assigned task_id={} connection={conn}", ids[n]);
                                let due = args.cancel_after
                                    .map(|secs| now + Duration::from_secs_f64(secs.max(0.0)));
                                *stage = Stage::Assigned(due);
                            }
                        }
                        Stage::Assigned(Some(due))
                            if *due <= now && cp.cancel(&ids[n]).is_ok() =>
                        {
                            println!("cancel-requested task_id={}", ids[n]);
                            *stage = Stage::Assigned(None);
                        }
                        _ => {}
                    }
                }
            }
        }
        if args.exit_when_done && stages.iter().all(|s| matches!(s, Stage::Done(_))) {
            let failed = stages.iter().filter(|s| **s == Stage::Done(true)).count();
            println!("done tasks={} failed={failed}", stages.len());
            return if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    }
}

/// Prints one worker message and advances the task's stage.
fn handle_message(
    text: &str,
    message: Option<WorkerMessage>,
    ids: &[String],
    stages: &mut [Stage],
) {
    let Some(message) = message else {
        println!("unrecognised-message bytes={}", text.len());
        return;
    };
    let index = ids.iter().position(|id| id == message.task_id());
    let mut set = |stage: Stage| {
        if let Some(n) = index
            && !matches!(stages[n], Stage::Done(_))
        {
            stages[n] = stage;
        }
    };
    match message {
        WorkerMessage::TaskClaimed { task_id, worker_id } => {
            println!("claimed task_id={task_id} worker_id={worker_id}");
        }
        WorkerMessage::TaskRejected { task_id, reason } => {
            println!("rejected task_id={task_id} reason={reason:?} (re-sending in 1s)");
            set(Stage::Pending(Instant::now() + Duration::from_secs(1)));
        }
        WorkerMessage::TaskCompleted {
            task_id,
            message,
            task_state,
        } => {
            let kind = if task_state.as_deref() == Some(TASK_STATE_CANCELLED) {
                "cancelled"
            } else {
                "completed"
            };
            println!("{kind} task_id={task_id} message={message:?}");
            set(Stage::Done(false));
        }
        WorkerMessage::TaskFailed {
            task_id,
            message,
            failure_reason,
            exit_code,
        } => {
            let reason = failure_reason.unwrap_or_default();
            let code = exit_code.unwrap_or(0);
            println!(
                "failed task_id={task_id} reason={reason} exit_code={code} message={message:?}"
            );
            set(Stage::Done(true));
        }
    }
}
