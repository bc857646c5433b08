//! Preparing a task for an executor: the backend-agnostic `TaskSpec` built from an assignment
//! (argv, injected env, image and sidecar resolution).

use std::collections::BTreeMap;

use crate::domain::argv::{ArgvSettings, agent_run_args};
use crate::domain::env::{EnvList, task_env};
use crate::domain::task::{Assignment, InstanceShape, SidecarMount, Task, TaskId};

/// The image used when neither the server nor the config names one.
pub const FALLBACK_IMAGE: &str = "ubuntu:22.04";

/// Where the warp-agent sidecar is mounted.
pub const AGENT_SIDECAR_MOUNT: &str = "/agent";

/// Everything an executor needs to run one task. Built by [`prepare`]; backends add only their
/// own invocation prefix and operator environment.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// The run (the wire `task_id`).
    pub task_id: TaskId,
    /// The concrete execution, possibly empty.
    pub execution_id: String,
    /// The task object as assigned.
    pub task: Task,
    /// The `oz` argv, starting `agent run`.
    pub args: Vec<String>,
    /// Injected env plus the server's `env_vars`, de-duplicated (last wins). Values may be
    /// secrets: never log them.
    pub env: EnvList,
    /// The resolved image; never empty.
    pub image: String,
    /// Images to mount, in order.
    pub sidecars: Vec<SidecarMount>,
    /// Requested resources.
    pub instance_shape: Option<InstanceShape>,
}

/// Worker settings that shape every [`TaskSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpecSettings {
    /// Settings for the argv.
    pub argv: ArgvSettings,
    /// Kubernetes `default_image`, used when the server sent no image.
    pub default_image: Option<String>,
    /// Kubernetes `sidecar_image`: replaces the server's sidecar image when it sent one.
    pub sidecar_image_override: Option<String>,
    /// Kubernetes `coding_cli_sidecars`: harness → image at `/mnt/<harness>-cli-sidecar`.
    pub coding_cli_sidecars: BTreeMap<String, String>,
}

/// Builds the spec for one assignment.
pub fn prepare(assignment: &Assignment, settings: &SpecSettings) -> TaskSpec {
    let image = assignment
        .docker_image
        .clone()
        .filter(|i| !i.is_empty())
        .or_else(|| settings.default_image.clone().filter(|i| !i.is_empty()))
        .unwrap_or_else(|| FALLBACK_IMAGE.to_owned());
    TaskSpec {
        task_id: assignment.task_id.clone(),
        execution_id: assignment.execution_id.clone(),
        task: assignment.task.clone(),
        args: agent_run_args(assignment, &settings.argv),
        env: task_env(assignment, &settings.argv.server_root_url).dedup_last_wins(),
        image,
        sidecars: sidecars(assignment, settings),
        instance_shape: assignment.instance_shape,
    }
}

fn sidecars(assignment: &Assignment, settings: &SpecSettings) -> Vec<SidecarMount> {
    let mut out = Vec::new();
    if let Some(image) = assignment
        .sidecar_image
        .as_deref()
        .filter(|i| !i.is_empty())
    {
        let image = settings
            .sidecar_image_override
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| image.to_owned());
        out.push(SidecarMount {
            image,
            mount_path: AGENT_SIDECAR_MOUNT.to_owned(),
            read_write: false,
        });
    }
    out.extend(assignment.additional_sidecars.iter().cloned());
    let harness = assignment
        .task
        .agent_config
        .as_ref()
        .and_then(|c| c.trimmed_harness());
    if let Some(harness) = harness
        && let Some(image) = settings
            .coding_cli_sidecars
            .get(harness)
            .filter(|i| !i.is_empty())
    {
        let mount_path = format!("/mnt/{harness}-cli-sidecar");
        match out.iter_mut().find(|s| s.mount_path == mount_path) {
            Some(existing) => existing.image.clone_from(image),
            None => out.push(SidecarMount {
                image: image.clone(),
                mount_path,
                read_write: false,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::task::AgentConfig;

    fn assignment() -> Assignment {
        Assignment::new(TaskId::parse("t").unwrap())
    }

    #[test]
    fn image_precedence_server_then_default_then_fallback() {
        let mut a = assignment();
        let mut s = SpecSettings::default();
        assert_eq!(prepare(&a, &s).image, FALLBACK_IMAGE);
        s.default_image = Some("corp/base:1".into());
        assert_eq!(prepare(&a, &s).image, "corp/base:1");
        a.docker_image = Some("server/img:2".into());
        assert_eq!(prepare(&a, &s).image, "server/img:2");
        a.docker_image = Some(String::new());
        assert_eq!(prepare(&a, &s).image, "corp/base:1");
    }

    #[test]
    fn sidecar_first_then_additional_and_override_only_when_server_sent_one() {
        let mut a = assignment();
        let mut s = SpecSettings {
            sidecar_image_override: Some("mirror/agent:1".into()),
            ..SpecSettings::default()
        };
        assert!(prepare(&a, &s).sidecars.is_empty());
        a.sidecar_image = Some("warp/agent:1".into());
        a.additional_sidecars.push(SidecarMount {
            image: "x".into(),
            mount_path: "/mnt/x".into(),
            read_write: true,
        });
        let spec = prepare(&a, &s);
        assert_eq!(spec.sidecars[0].image, "mirror/agent:1");
        assert_eq!(spec.sidecars[0].mount_path, "/agent");
        assert!(!spec.sidecars[0].read_write);
        assert_eq!(spec.sidecars[1].mount_path, "/mnt/x");
        s.sidecar_image_override = None;
        assert_eq!(prepare(&a, &s).sidecars[0].image, "warp/agent:1");
    }

    #[test]
    fn coding_cli_sidecar_replaces_or_appends_for_the_trimmed_harness() {
        let mut a = assignment();
        a.task.agent_config = Some(AgentConfig {
            harness_type: Some(" claude ".into()),
            ..AgentConfig::default()
        });
        let mut s = SpecSettings::default();
        s.coding_cli_sidecars
            .insert("claude".into(), "corp/claude:2".into());
        s.coding_cli_sidecars
            .insert("codex".into(), "corp/codex:1".into());
        let spec = prepare(&a, &s);
        assert_eq!(spec.sidecars.len(), 1);
        assert_eq!(spec.sidecars[0].mount_path, "/mnt/claude-cli-sidecar");
        a.additional_sidecars.push(SidecarMount {
            image: "server/claude:1".into(),
            mount_path: "/mnt/claude-cli-sidecar".into(),
            read_write: true,
        });
        let spec = prepare(&a, &s);
        assert_eq!(spec.sidecars.len(), 1);
        assert_eq!(spec.sidecars[0].image, "corp/claude:2");
        assert!(spec.sidecars[0].read_write, "other fields are kept");
    }

    #[test]
    fn env_is_deduplicated_with_server_values_winning() {
        let mut a = assignment();
        a.env_vars.insert("TASK_ID".into(), "override".into());
        let spec = prepare(&a, &SpecSettings::default());
        assert_eq!(spec.env.get("TASK_ID"), Some("override"));
        assert_eq!(spec.env.keys().filter(|k| *k == "TASK_ID").count(), 1);
    }
}
