//! Chaos scenario: 200 runs through the real worker binary while the worker is killed and
//! restarted 10 times, SIGKILL and SIGTERM alternately, on one state directory: on the Direct
//! backend (stand-in `oz` that leaves a grandchild running) and on the Docker backend (where a
//! SIGKILLed worker's containers are adopted and followed by the next process). The driver plays the server: it re-offers runs
//! that were rejected or never acknowledged by a worker that went away, and counts terminal
//! reports per run. Prints runs reported exactly once / twice or more / never, and what is left
//! behind (processes, workspaces, journal entries). The target is 0 for all but the first; the
//! test asserts what the design guarantees (never reported, workspaces and journal entries: 0).
//!
//! `cargo test --test main scenarios::restart_chaos -- --nocapture` shows the figures.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use oz_local_control_plane::{LocalControlPlane, sample_assignment};
use oz_protocol::WorkerMessage;

use super::restart::{Scratch, Worker};
use crate::support::daemon::control_plane;
use crate::support::docker::Images;
use crate::support::standin::{alive, report_lines};

const RUNS: usize = 200;
const RESTARTS: usize = 10;
/// Terminal reports per worker life before it is killed.
const PER_LIFE: usize = RUNS / (RESTARTS + 1);
/// How many runs the driver keeps offered but unacknowledged at once.
const IN_FLIGHT: usize = 12;
/// Hang guard for the whole scenario (Direct; Docker gets twice as long: every run is a
/// container).
const OVERALL: Duration = Duration::from_secs(240);

#[derive(Default)]
struct Server {
    queue: VecDeque<String>,
    unacknowledged: HashSet<String>,
    claimed: HashSet<String>,
    terminal: HashMap<String, u32>,
    failed_by_restart: usize,
    completed: usize,
    terminal_this_life: usize,
    /// Per run: what the server saw, in order (for the diagnosis of a double report).
    history: HashMap<String, Vec<String>>,
    life: usize,
}

impl Server {
    fn on(&mut self, message: WorkerMessage) {
        let task = message.task_id().to_owned();
        let seen = match &message {
            WorkerMessage::TaskFailed { failure_reason, .. } => format!(
                "life {}: failed {}",
                self.life,
                failure_reason.as_deref().unwrap_or("")
            ),
            other => format!("life {}: {}", self.life, other.kind()),
        };
        self.history.entry(task.clone()).or_default().push(seen);
        match message {
            WorkerMessage::TaskClaimed { .. } => {
                self.unacknowledged.remove(&task);
                self.claimed.insert(task);
            }
            WorkerMessage::TaskRejected { .. } => {
                if self.unacknowledged.remove(&task) {
                    self.queue.push_back(task);
                }
            }
            WorkerMessage::TaskCompleted { .. } | WorkerMessage::TaskFailed { .. } => {
                if matches!(message, WorkerMessage::TaskCompleted { .. }) {
                    self.completed += 1;
                } else {
                    self.failed_by_restart += 1;
                }
                *self.terminal.entry(task).or_default() += 1;
                self.terminal_this_life += 1;
            }
        }
    }

    fn offer(&mut self, cp: &LocalControlPlane, images: Option<&Images>) {
        while self.unacknowledged.len() < IN_FLIGHT {
            let Some(task) = self.queue.pop_front() else {
                return;
            };
            let mut assignment = sample_assignment(&task);
            if let Some(images) = images {
                assignment["docker_image"] = images.image.clone().into();
                assignment["sidecar_image"] = images.sidecar.clone().into();
                assignment["env_vars"]["OZ_STANDIN_SLEEP"] = "0.3".into();
            }
            if cp.assign(&assignment).is_err() {
                self.queue.push_front(task);
                return;
            }
            self.history
                .entry(task.clone())
                .or_default()
                .push(format!("life {}: offered", self.life));
            self.unacknowledged.insert(task);
        }
    }

    /// Everything the server already received, until nothing more comes for a moment.
    async fn settle(&mut self, cp: &LocalControlPlane) {
        while let Some(received) = cp.next_message(Duration::from_millis(300)).await {
            if let Some(message) = received.message {
                self.on(message);
            }
        }
    }

    fn all_reported(&self) -> bool {
        self.terminal.len() == RUNS
    }
}

#[tokio::test]
async fn runs_survive_ten_kills_and_restarts_reported_exactly_once_leaving_nothing() {
    chaos(None).await;
}

#[tokio::test]
async fn docker_runs_survive_ten_kills_and_restarts_reported_exactly_once_leaving_nothing() {
    let Some(images) = crate::support::docker::setup().await else {
        return;
    };
    chaos(Some(images)).await;
}

/// The scenario on the Direct backend (`images` absent) or on the Docker backend.
async fn chaos(images: Option<Images>) {
    let started = Instant::now();
    let cp = control_plane().await;
    let scratch = Scratch::new(if images.is_some() { "dchaos" } else { "chaos" });
    let report_knob = format!("OZ_STANDIN_REPORT={}", scratch.report().display());
    let docker_config = scratch.report().with_file_name("docker.yaml");
    let config = match &images {
        Some(_) => {
            let worker_id = crate::support::docker::worker_id("chaos");
            std::fs::write(
                &docker_config,
                format!(
                    "worker_id: {worker_id}\nstate_dir: {}\nbackend:\n  docker:\n    pull_policy: if-not-present\n",
                    scratch.state().display()
                ),
            )
            .unwrap();
            docker_config.clone()
        }
        None => scratch.config(),
    };
    let worker_id = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("worker_id: ").map(str::to_owned))
        .unwrap();
    let direct_args = [
        "--max-concurrent-tasks",
        "8",
        "-e",
        "OZ_STANDIN_SLEEP=0.3",
        "-e",
        "OZ_STANDIN_SPAWN_CHILD=1",
        "-e",
        &report_knob,
    ];
    let docker_args = ["--max-concurrent-tasks", "8"];
    let args: &[&str] = if images.is_some() {
        &docker_args
    } else {
        &direct_args
    };
    let mut server = Server {
        queue: (0..RUNS).map(|i| format!("chaos-{i:03}")).collect(),
        ..Server::default()
    };
    let mut kills = 0;
    let mut connections = 0;
    loop {
        let mut worker = Worker::spawn(&cp, &config, args);
        connections += 1;
        super::restart::wait_nth_open(&cp, connections).await;
        server.terminal_this_life = 0;
        server.life = kills;
        let last_life = kills == RESTARTS;
        while !(server.all_reported() || (!last_life && server.terminal_this_life >= PER_LIFE)) {
            let overall = if images.is_some() {
                OVERALL * 2
            } else {
                OVERALL
            };
            assert!(started.elapsed() < overall, "the scenario did not finish");
            server.offer(&cp, images.as_ref());
            if let Some(received) = cp.next_message(Duration::from_millis(100)).await
                && let Some(message) = received.message
            {
                server.on(message);
            }
        }
        let signal = if kills % 2 == 0 && !last_life {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        worker.signal_and_wait(signal).await;
        // The connection is gone: what it sent has arrived; offers it never answered go back
        // into the queue, as the server re-offers unclaimed runs.
        server.settle(&cp).await;
        server.queue.extend(server.unacknowledged.drain());
        if last_life {
            break;
        }
        kills += 1;
    }

    let once = server.terminal.values().filter(|n| **n == 1).count();
    let twice = server.terminal.values().filter(|n| **n > 1).count();
    let never = RUNS - server.terminal.len();
    // Every pid the stand-ins reported (agents and their grandchildren) must be gone.
    let pids: Vec<i32> = report_lines(&scratch.report())
        .iter()
        .filter_map(|l| {
            l.strip_prefix("pid: ")
                .or_else(|| l.strip_prefix("child: "))
        })
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let orphans: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    let workspaces = std::fs::read_dir(scratch.workspaces())
        .map(|d| d.count())
        .unwrap_or(0);
    let journal = scratch.journal_files().len();
    let containers = match &images {
        Some(_) => {
            let docker = crate::support::docker::client().await.unwrap();
            crate::support::docker::containers(&docker, &worker_id)
                .await
                .len()
        }
        None => 0,
    };
    println!(
        "restart chaos ({}): {RUNS} runs, {RESTARTS} kills (SIGKILL/SIGTERM alternately), {:.1}s",
        if images.is_some() { "docker" } else { "direct" },
        started.elapsed().as_secs_f64()
    );
    println!(
        "  reported exactly once: {once} (completed {}, failed by a restart {})",
        server.completed, server.failed_by_restart
    );
    println!("  reported twice or more: {twice}");
    println!("  never reported: {never}");
    println!(
        "  left behind: {} processes (of {} started), {containers} containers, {workspaces} workspaces, {journal} journal entries",
        orphans.len(),
        pids.len()
    );
    for (task, n) in &server.terminal {
        if *n > 1 {
            let history = &server.history[task];
            println!(
                "  {task}: {:?}",
                &history[history.len().saturating_sub(6)..]
            );
        }
    }
    for pid in &orphans {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL);
    }
    // Guaranteed: no run is lost and nothing is left in the state directory or the workspace
    // root. Not guaranteed (printed above, see docs/restarts.md): a SIGKILL between the server
    // reading a terminal report and the worker seeing that confirmed makes the next worker send
    // it again (identical), and one between an agent's spawn and its record leaves that agent
    // running. This driver kills right after receiving a report, so it aims at the first window.
    assert_eq!(never, 0, "runs never reported");
    assert_eq!(
        (workspaces, journal, containers),
        (0, 0, 0),
        "workspaces, journal entries and containers left"
    );
}
