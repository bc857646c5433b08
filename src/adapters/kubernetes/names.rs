//! Job names, label values and hashes (the Go worker's, byte for byte): pure functions, no API types.

use std::collections::BTreeMap;

/// Label with the worker id (sanitized).
pub const LABEL_WORKER_ID: &str = "oz-worker-id";
/// Label with the hash of the raw worker id.
pub const LABEL_WORKER_HASH: &str = "oz-worker-hash";
/// Label with the task (run) id (sanitized).
pub const LABEL_TASK_ID: &str = "oz-task-id";
/// Label with the hash of the raw task id.
pub const LABEL_TASK_HASH: &str = "oz-task-hash";
/// Label with the execution key (sanitized).
pub const LABEL_EXECUTION_ID: &str = "oz-execution-id";
/// Label with the hash of the raw execution key; the task's pod selector.
pub const LABEL_EXECUTION_HASH: &str = "oz-execution-hash";
/// Label with the id of the worker process (instance) that owns the task: the one that created
/// it, or the one that adopted it after that instance died. Also on every Lease.
pub const LABEL_INSTANCE_ID: &str = "oz-instance-id";
/// Label set to [`REPORTED`] on a finished Job whose owner returned its outcome for reporting:
/// no later instance adopts it.
pub const LABEL_REPORTED: &str = "oz-reported";
/// The value of [`LABEL_REPORTED`].
pub const REPORTED: &str = "true";
/// Annotation with the raw task (run) id, which the label holds only sanitized.
pub const ANNOTATION_TASK_ID: &str = "oz-agent-worker.warp.dev/task-id";
/// Annotation with the raw execution id.
pub const ANNOTATION_EXECUTION_ID: &str = "oz-agent-worker.warp.dev/execution-id";
/// Marks every object this worker creates for a task, so a restarted worker can find them
/// (`app.kubernetes.io/managed-by=oz-agent-worker,oz-worker-hash=<hash>`).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "oz-agent-worker";

/// The identity of one task execution in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNames {
    /// The Job name (also the per-task Secret's name).
    pub job_name: String,
    /// Labels for the Job, its pod template and the Secret.
    pub labels: BTreeMap<String, String>,
    /// The value of `oz-execution-hash`.
    pub execution_hash: String,
}

impl TaskNames {
    /// Names and labels for `(task_id, execution_id)` run by `worker_id`; `extra` labels come
    /// first and are overridden by the worker's own.
    pub fn new(
        worker_id: &str,
        task_id: &str,
        execution_id: &str,
        extra: &BTreeMap<String, String>,
    ) -> Self {
        let key = execution_key(task_id, execution_id);
        let execution_hash = short_hash(key);
        let mut labels = extra.clone();
        for (name, value) in [
            (LABEL_WORKER_ID, sanitize_label_value(worker_id)),
            (LABEL_WORKER_HASH, short_hash(worker_id)),
            (LABEL_TASK_ID, sanitize_label_value(task_id)),
            (LABEL_TASK_HASH, short_hash(task_id)),
            (LABEL_EXECUTION_ID, sanitize_label_value(key)),
            (LABEL_EXECUTION_HASH, execution_hash.clone()),
            (LABEL_MANAGED_BY, MANAGED_BY.to_owned()),
        ] {
            labels.insert(name.to_owned(), value);
        }
        Self {
            job_name: job_name(task_id, execution_id),
            labels,
            execution_hash,
        }
    }

    /// The label selector of this execution's pods.
    pub fn pod_selector(&self) -> String {
        format!("{LABEL_EXECUTION_HASH}={}", self.execution_hash)
    }
}

/// The label selector of every Job a worker created (for finding them after a restart).
pub fn worker_job_selector(worker_id: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_WORKER_HASH}={}",
        short_hash(worker_id)
    )
}

/// The label selector of the Jobs another instance may adopt: this worker's, carrying an
/// instance id, not marked reported.
pub fn adoptable_job_selector(worker_id: &str) -> String {
    format!(
        "{},{LABEL_INSTANCE_ID},!{LABEL_REPORTED}",
        worker_job_selector(worker_id)
    )
}

/// The name of the Lease that says instance `instance_id` is alive.
pub fn lease_name(instance_id: &str) -> String {
    format!("oz-worker-instance-{}", sanitize_name(instance_id))
}

/// The trimmed execution id, or the task id when it is empty.
pub fn execution_key<'a>(task_id: &'a str, execution_id: &'a str) -> &'a str {
    match execution_id.trim() {
        "" => task_id,
        trimmed => trimmed,
    }
}

/// `oz-task-<run>-exec-<exec>`, at most 63 characters.
pub fn job_name(task_id: &str, execution_id: &str) -> String {
    let key = sanitize_name(execution_key(task_id, execution_id));
    let tail: String = key
        .chars()
        .skip(key.chars().count().saturating_sub(8))
        .collect();
    let exec = match tail.trim_matches('-') {
        "" => "exec".to_owned(),
        e => e.to_owned(),
    };
    let budget = 63 - 8 - 6 - exec.len();
    let run: String = sanitize_name(task_id).chars().take(budget).collect();
    let run = match run.trim_matches('-') {
        "" => "run",
        r => r,
    };
    format!("oz-task-{run}-exec-{exec}")
}

/// Lowercases, keeps `[a-z0-9]`, turns every other character into `-`, trims `-` at both ends.
pub fn sanitize_name(raw: &str) -> String {
    let mapped: String = raw
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_owned()
}

/// A valid label value: lowercase, `[a-z0-9-_.]`, trimmed of `-_.`, at most 63, `unknown` when
/// empty.
pub fn sanitize_label_value(raw: &str) -> String {
    let is_edge = |c: char| matches!(c, '-' | '_' | '.');
    let mapped: String = raw
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || is_edge(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(is_edge);
    if trimmed.is_empty() {
        return "unknown".to_owned();
    }
    let cut: String = trimmed.chars().take(63).collect();
    cut.trim_end_matches(is_edge).to_owned()
}

/// Lowercase hex of the first 8 bytes of SHA-256 of `raw` (16 characters).
pub fn short_hash(raw: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
