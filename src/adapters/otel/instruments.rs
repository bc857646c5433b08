//! The catalogue (docs/metrics.md lists it): every instrument with its exact name, kind, unit and
//! description; the priming of every bounded series; and the mapping from a [`Signal`] to
//! instrument updates. The only place that knows instrument names.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};

use super::config::ServiceInfo;
use crate::domain::{FailurePhase, FailureReason, RejectReason, TaskResult};
use crate::ports::Signal;

/// The instrumentation scope; it becomes Prometheus' `otel_scope_name` label.
pub const SCOPE_NAME: &str = "github.com/warpdotdev/oz-agent-worker";

/// One row of the catalogue, for documentation and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstrumentSpec {
    /// The instrument name.
    pub name: &'static str,
    /// `counter`, `up_down_counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// The unit (`""` when none).
    pub unit: &'static str,
    /// The description, verbatim from the reference.
    pub description: &'static str,
}

const fn spec(
    name: &'static str,
    kind: &'static str,
    unit: &'static str,
    description: &'static str,
) -> InstrumentSpec {
    InstrumentSpec {
        name,
        kind,
        unit,
        description,
    }
}

/// `oz_worker_connected`.
pub(super) const CONNECTED: InstrumentSpec = spec(
    "oz_worker_connected",
    "gauge",
    "",
    "1 while the worker has an active WebSocket connection to warp-server, 0 otherwise.",
);
/// `oz_worker_tasks_active`.
pub(super) const TASKS_ACTIVE: InstrumentSpec = spec(
    "oz_worker_tasks_active",
    "up_down_counter",
    "",
    "Number of tasks the worker is currently executing.",
);
/// `oz_worker_tasks_max_concurrent`.
pub(super) const MAX_CONCURRENT: InstrumentSpec = spec(
    "oz_worker_tasks_max_concurrent",
    "gauge",
    "",
    "Configured upper bound on concurrent tasks for this worker. 0 means unlimited.",
);
/// `oz_worker_tasks_claimed_total`.
pub(super) const CLAIMED: InstrumentSpec = spec(
    "oz_worker_tasks_claimed_total",
    "counter",
    "",
    "Total tasks the worker has claimed since process start.",
);
/// `oz_worker_tasks_rejected_total{reason}`.
pub(super) const REJECTED: InstrumentSpec = spec(
    "oz_worker_tasks_rejected_total",
    "counter",
    "",
    "Total tasks the worker has rejected since process start.",
);
/// `oz_worker_tasks_completed_total{result}`.
pub(super) const COMPLETED: InstrumentSpec = spec(
    "oz_worker_tasks_completed_total",
    "counter",
    "",
    "Total tasks the worker has finished, labeled by terminal result.",
);
/// `oz_worker_task_duration_seconds{result}`.
pub(super) const DURATION: InstrumentSpec = spec(
    "oz_worker_task_duration_seconds",
    "histogram",
    "s",
    "Wall-clock duration of task execution on the worker, labeled by terminal result.",
);
/// `oz_worker_task_failures_total{phase,reason}`.
pub(super) const FAILURES: InstrumentSpec = spec(
    "oz_worker_task_failures_total",
    "counter",
    "",
    "Task failures labeled by bounded execution phase and reason.",
);
/// `oz_worker_websocket_reconnects_total{reason}`.
pub(super) const RECONNECTS: InstrumentSpec = spec(
    "oz_worker_websocket_reconnects_total",
    "counter",
    "",
    "Total WebSocket reconnect attempts since process start.",
);
/// `oz_worker_info{version,backend,worker_id}`.
pub(super) const INFO: InstrumentSpec = spec(
    "oz_worker_info",
    "gauge",
    "",
    "Constant 1 with build/runtime metadata as labels.",
);

/// The whole catalogue, in the reference's order.
pub const CATALOGUE: [InstrumentSpec; 10] = [
    CONNECTED,
    TASKS_ACTIVE,
    MAX_CONCURRENT,
    CLAIMED,
    REJECTED,
    COMPLETED,
    DURATION,
    FAILURES,
    RECONNECTS,
    INFO,
];

/// `reason` values of `oz_worker_websocket_reconnects_total`.
pub const RECONNECT_REASONS: [&str; 2] = ["dial_failed", "remote_close"];

/// The live instruments plus pre-built attribute sets, so recording allocates nothing.
pub(crate) struct Instruments {
    connected: Gauge<i64>,
    tasks_active: UpDownCounter<i64>,
    max_concurrent: Gauge<i64>,
    claimed: Counter<u64>,
    rejected: Counter<u64>,
    completed: Counter<u64>,
    duration: Histogram<f64>,
    failures: Counter<u64>,
    reconnects: Counter<u64>,
    info: Gauge<i64>,
    /// Indexed like `RejectReason::ALL`.
    reject_attrs: Vec<[KeyValue; 1]>,
    /// Indexed like `TaskResult::ALL`.
    result_attrs: Vec<[KeyValue; 1]>,
    /// Indexed phase-major: `phase_idx * 29 + reason_idx`.
    failure_attrs: Vec<[KeyValue; 2]>,
    /// Indexed like `RECONNECT_REASONS`.
    reconnect_attrs: Vec<[KeyValue; 1]>,
}

impl Instruments {
    /// Creates every instrument on `meter`.
    pub(crate) fn new(meter: &Meter) -> Self {
        let label = |key: &'static str, value: &'static str| [KeyValue::new(key, value)];
        Instruments {
            connected: i64_gauge(meter, CONNECTED),
            tasks_active: meter
                .i64_up_down_counter(TASKS_ACTIVE.name)
                .with_description(TASKS_ACTIVE.description)
                .build(),
            max_concurrent: i64_gauge(meter, MAX_CONCURRENT),
            claimed: u64_counter(meter, CLAIMED),
            rejected: u64_counter(meter, REJECTED),
            completed: u64_counter(meter, COMPLETED),
            duration: meter
                .f64_histogram(DURATION.name)
                .with_description(DURATION.description)
                .with_unit(DURATION.unit)
                .build(),
            failures: u64_counter(meter, FAILURES),
            reconnects: u64_counter(meter, RECONNECTS),
            info: i64_gauge(meter, INFO),
            reject_attrs: RejectReason::ALL
                .iter()
                .map(|r| label("reason", r.label()))
                .collect(),
            result_attrs: TaskResult::ALL
                .iter()
                .map(|r| label("result", r.as_str()))
                .collect(),
            failure_attrs: FailurePhase::ALL
                .iter()
                .flat_map(|phase| {
                    FailureReason::ALL.iter().map(move |reason| {
                        [
                            KeyValue::new("phase", phase.as_str()),
                            KeyValue::new("reason", reason.as_str()),
                        ]
                    })
                })
                .collect(),
            reconnect_attrs: RECONNECT_REASONS
                .iter()
                .map(|r| label("reason", r))
                .collect(),
        }
    }

    /// Records a zero for every bounded series (never the histogram, so no fake 0 s sample),
    /// then `max_concurrent` and `oz_worker_info` = 1.
    pub(crate) fn prime(&self, max_concurrent: i64, service: &ServiceInfo) {
        self.connected.record(0, &[]);
        self.tasks_active.add(0, &[]);
        self.max_concurrent.record(0, &[]);
        self.claimed.add(0, &[]);
        for attrs in &self.reject_attrs {
            self.rejected.add(0, attrs);
        }
        for attrs in &self.result_attrs {
            self.completed.add(0, attrs);
        }
        for attrs in &self.failure_attrs {
            self.failures.add(0, attrs);
        }
        for attrs in &self.reconnect_attrs {
            self.reconnects.add(0, attrs);
        }
        self.max_concurrent.record(max_concurrent, &[]);
        self.info.record(
            1,
            &[
                KeyValue::new("version", service.version.clone()),
                KeyValue::new("backend", service.backend.clone()),
                KeyValue::new("worker_id", service.worker_id.clone()),
            ],
        );
    }

    /// Sets `oz_worker_tasks_max_concurrent` (0 = unlimited, negatives as they are).
    pub(crate) fn set_max_concurrent(&self, value: i64) {
        self.max_concurrent.record(value, &[]);
    }

    /// Applies one signal. Allocation-free; never blocks on I/O.
    pub(crate) fn record(&self, signal: Signal) {
        match signal {
            Signal::Connected => self.connected.record(1, &[]),
            Signal::Disconnected => {
                self.connected.record(0, &[]);
                self.reconnects.add(1, &self.reconnect_attrs[1]);
            }
            Signal::DialFailed => self.reconnects.add(1, &self.reconnect_attrs[0]),
            Signal::TaskRejected(reason) => {
                let idx = index_of(&RejectReason::ALL, &reason);
                self.rejected.add(1, &self.reject_attrs[idx]);
            }
            Signal::TaskClaimed => {
                self.claimed.add(1, &[]);
                self.tasks_active.add(1, &[]);
            }
            Signal::TaskAdopted => self.tasks_active.add(1, &[]),
            Signal::TaskFinished {
                result,
                duration,
                failure,
            } => {
                let attrs = &self.result_attrs[index_of(&TaskResult::ALL, &result)];
                self.tasks_active.add(-1, &[]);
                self.completed.add(1, attrs);
                self.duration.record(duration.as_secs_f64(), attrs);
                if let Some((phase, reason)) = failure {
                    let idx = index_of(&FailurePhase::ALL, &phase) * FailureReason::ALL.len()
                        + index_of(&FailureReason::ALL, &reason);
                    self.failures.add(1, &self.failure_attrs[idx]);
                }
            }
        }
    }
}

/// The position of `value` in an `ALL` list; every variant is listed, so this always finds it.
fn index_of<T: PartialEq>(all: &[T], value: &T) -> usize {
    all.iter().position(|v| v == value).unwrap_or(0)
}

fn i64_gauge(meter: &Meter, spec: InstrumentSpec) -> Gauge<i64> {
    meter
        .i64_gauge(spec.name)
        .with_description(spec.description)
        .build()
}

fn u64_counter(meter: &Meter, spec: InstrumentSpec) -> Counter<u64> {
    meter
        .u64_counter(spec.name)
        .with_description(spec.description)
        .build()
}
