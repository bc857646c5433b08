//! The task container: its create body (command, env, binds, limits, labels), and the Docker
//! calls around it (wait, OOM check, output, stop, remove).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::config::DockerConfig;
use crate::domain::InstanceShape;
use crate::domain::env::EnvList;
use crate::domain::spec::TaskSpec;

/// The program every task container runs, from the `/agent` sidecar.
pub const ENTRYPOINT: &str = "/agent/entrypoint.sh";
/// The task's working directory.
pub const WORKDIR: &str = "/workspace";
/// The bound on removal and other clean-up calls (the Go worker's `BackendShutdownTimeout`).
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many lines of output a failure message carries.
pub const TAIL_LINES: usize = 20;
/// The most characters of output a failure message carries.
pub const TAIL_CHARS: usize = 2000;

/// The env the container gets: the task's env, then the operator's (`-e` / YAML), de-duplicated
/// with the last entry winning.
pub fn container_env(spec: &TaskSpec, config: &DockerConfig) -> EnvList {
    let mut env = spec.env.clone();
    env.overlay(&config.environment);
    env.dedup_last_wins()
}

/// CPU and memory limits from an instance shape: `NanoCPUs = vcpus × 1e9`;
/// `Memory = MemorySwap = memory_gb × 2^30` (no extra swap). Non-positive axes are unset.
pub fn resources(shape: Option<&InstanceShape>) -> (Option<i64>, Option<i64>) {
    let Some(shape) = shape else {
        return (None, None);
    };
    let nano_cpus = shape.cpus().map(|c| c.saturating_mul(1_000_000_000));
    let memory = shape
        .memory_gb
        .filter(|m| *m > 0)
        .map(|m| m.saturating_mul(1 << 30));
    (nano_cpus, memory)
}

/// The create body of a task container.
pub fn create_body(
    spec: &TaskSpec,
    config: &DockerConfig,
    image: &str,
    binds: Vec<String>,
    labels: HashMap<String, String>,
) -> ContainerCreateBody {
    let mut cmd = Vec::with_capacity(spec.args.len() + 1);
    cmd.push(ENTRYPOINT.to_owned());
    cmd.extend(spec.args.iter().cloned());
    let (nano_cpus, memory) = resources(spec.instance_shape.as_ref());
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(cmd),
        env: Some(container_env(spec, config).to_kv_strings()),
        working_dir: Some(WORKDIR.to_owned()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            binds: Some(binds),
            nano_cpus,
            memory,
            memory_swap: memory,
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

pub use crate::domain::redact::Redactor;

/// The last `lines` lines of `output`, at most `max_chars` characters (cut at the front).
pub fn tail(output: &str, lines: usize, max_chars: usize) -> String {
    let trimmed = output.trim_end();
    let start = trimmed
        .rmatch_indices('\n')
        .nth(lines.saturating_sub(1))
        .map_or(0, |(i, _)| i + 1);
    let last = &trimmed[start..];
    let n_chars = last.chars().count();
    if n_chars <= max_chars {
        return last.to_owned();
    }
    last.chars().skip(n_chars - max_chars).collect()
}

/// The container's stdout and stderr, interleaved, as text (at most the last `tail_lines`).
pub async fn output(
    docker: &Docker,
    id: &str,
    tail_lines: usize,
) -> Result<String, bollard::errors::Error> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&tail_lines.to_string())
        .build();
    let mut stream = docker.logs(id, Some(options));
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk? {
            LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::Console { message } => out.extend_from_slice(&message),
            LogOutput::StdIn { .. } => {}
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// True when the engine reports the container was OOM-killed.
pub async fn oom_killed(docker: &Docker, id: &str) -> bool {
    match docker.inspect_container(id, None).await {
        Ok(inspect) => inspect.state.and_then(|s| s.oom_killed).unwrap_or(false),
        Err(e) => {
            tracing::warn!(container = %id, error = %e, "Could not inspect the container for an OOM kill.");
            false
        }
    }
}

/// Stops a container gracefully: SIGTERM, then SIGKILL after `grace` (Docker's stop).
///
/// # Errors
/// The engine's error, or a timeout well past `grace`.
pub async fn stop(
    docker: &Docker,
    id: &str,
    grace: Duration,
) -> Result<(), bollard::errors::Error> {
    let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
    let options = StopContainerOptionsBuilder::default().t(seconds).build();
    // The client's timeout covers the whole stop call, which lasts up to `grace`.
    let client = docker.clone().with_timeout(grace + CLEANUP_TIMEOUT);
    client.stop_container(id, Some(options)).await
}

/// Force-removes a container (SIGKILL + remove), bounded by [`CLEANUP_TIMEOUT`]. Failures are
/// logged: clean-up never changes a task's outcome.
pub async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    let removal = tokio::time::timeout(CLEANUP_TIMEOUT, docker.remove_container(id, Some(options)));
    match removal.await {
        Ok(Ok(())) => {}
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        })) => {}
        Ok(Err(e)) => {
            tracing::warn!(container = %id, error = %e, "Could not remove the container.")
        }
        Err(_) => tracing::warn!(container = %id, "Removing the container timed out."),
    }
}
