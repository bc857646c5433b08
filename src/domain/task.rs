//! The task model: what the control plane assigns, in domain terms (no wire encoding).

use std::collections::BTreeMap;
use std::fmt;

/// The identifier of a run (the wire's `task_id`): the key of every report about it.
///
/// Always non-empty; build one with [`TaskId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(String);

/// Why a string is not a valid [`TaskId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task_id must be a non-empty string")]
pub struct EmptyTaskId;

impl TaskId {
    /// Accepts any non-empty string.
    ///
    /// # Errors
    /// [`EmptyTaskId`] for the empty string.
    pub fn parse(raw: impl Into<String>) -> Result<Self, EmptyTaskId> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(EmptyTaskId);
        }
        Ok(Self(raw))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One assignment from the control plane: a task plus everything needed to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// The run this assignment belongs to (the wire `task_id`).
    pub task_id: TaskId,
    /// The concrete execution; empty when the server sent none.
    pub execution_id: String,
    /// The task itself.
    pub task: Task,
    /// The image the server resolved from the environment, if any.
    pub docker_image: Option<String>,
    /// The warp-agent sidecar image, if any.
    pub sidecar_image: Option<String>,
    /// Task-scoped environment (secrets: never log the values).
    pub env_vars: BTreeMap<String, String>,
    /// Extra images to mount.
    pub additional_sidecars: Vec<SidecarMount>,
    /// Extra `oz` CLI tokens, forwarded verbatim.
    pub additional_oz_args: Vec<String>,
    /// Requested resources; `None` means no shape.
    pub instance_shape: Option<InstanceShape>,
}

impl Assignment {
    /// A minimal assignment for `task_id` whose task has the same id and nothing else set.
    pub fn new(task_id: TaskId) -> Self {
        let task = Task {
            id: task_id.as_str().to_owned(),
            ..Task::default()
        };
        Self {
            task_id,
            execution_id: String::new(),
            task,
            docker_image: None,
            sidecar_image: None,
            env_vars: BTreeMap::new(),
            additional_sidecars: Vec::new(),
            additional_oz_args: Vec::new(),
            instance_shape: None,
        }
    }
}

/// The task object inside an assignment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Task {
    /// Used for `--task-id` and `TASK_ID`; in practice equal to the run id.
    pub id: String,
    /// Only used in logs.
    pub title: String,
    /// The prompt definition (unused by the worker; echoed to the Command backend).
    pub prompt: Option<String>,
    /// RFC 3339 creation time as sent (echoed to the Command backend).
    pub created_at: Option<String>,
    /// RFC 3339 update time as sent (echoed to the Command backend).
    pub updated_at: Option<String>,
    /// Who owns the task; only `TEAM` changes the argv.
    pub owner: Option<Owner>,
    /// The agent configuration snapshot: the source of truth for CLI flags.
    pub agent_config: Option<AgentConfig>,
    /// Parsed but deliberately never forwarded as `--conversation`.
    pub agent_conversation_id: Option<String>,
}

/// The owner of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `USER`, `TEAM`, or something this worker does not know.
    pub kind: OwnerType,
    /// The numeric id of the user or team.
    pub id: i64,
}

/// The kind of a task owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerType {
    /// A single user.
    User,
    /// A team: adds `--share team:edit`.
    Team,
    /// Any other value, kept verbatim.
    Other(String),
}

impl OwnerType {
    /// Maps the exact, case-sensitive wire value.
    pub fn from_wire(raw: &str) -> Self {
        match raw {
            "USER" => Self::User,
            "TEAM" => Self::Team,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The wire value.
    pub fn as_wire(&self) -> &str {
        match self {
            Self::User => "USER",
            Self::Team => "TEAM",
            Self::Other(raw) => raw,
        }
    }
}

/// The agent configuration snapshot (`agent_config_snapshot`); every field is optional.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentConfig {
    /// `environment_id`.
    pub environment_id: Option<String>,
    /// `base_prompt` (unused by the worker).
    pub base_prompt: Option<String>,
    /// `model_id`.
    pub model_id: Option<String>,
    /// `profile_id`.
    pub profile_id: Option<String>,
    /// `skill_spec`.
    pub skill_spec: Option<String>,
    /// `mcp_servers`: name to arbitrary JSON. A `BTreeMap`, so it serialises with sorted keys.
    pub mcp_servers: BTreeMap<String, serde_json::Value>,
    /// `computer_use_enabled`.
    pub computer_use_enabled: Option<bool>,
    /// `idle_timeout_minutes`.
    pub idle_timeout_minutes: Option<i64>,
    /// `harness.type`; `Some("")` when the harness object has an empty type.
    pub harness_type: Option<String>,
    /// `harness_auth_secrets.claude_auth_secret_name` (unused by the core).
    pub claude_auth_secret_name: Option<String>,
    /// `inference_providers.aws`.
    pub aws_inference: Option<AwsInference>,
    /// `session_sharing.public_access`.
    pub public_access: Option<String>,
    /// `snapshot_disabled`.
    pub snapshot_disabled: Option<bool>,
    /// `snapshot_upload_timeout_secs`.
    pub snapshot_upload_timeout_secs: Option<i64>,
    /// `snapshot_script_timeout_secs`.
    pub snapshot_script_timeout_secs: Option<i64>,
}

impl AgentConfig {
    /// True when the harness is Warp's own: absent, empty or exactly `oz` (no trimming, as the
    /// reference does).
    pub fn is_oz_harness(&self) -> bool {
        matches!(self.harness_type.as_deref(), None | Some("") | Some("oz"))
    }

    /// The trimmed harness type, if non-empty after trimming.
    pub fn trimmed_harness(&self) -> Option<&str> {
        self.harness_type
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
    }
}

/// `inference_providers.aws`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwsInference {
    /// `disabled`.
    pub disabled: bool,
    /// `role_arn`.
    pub role_arn: String,
    /// `region`.
    pub region: String,
}

/// An image mounted into the task (`{image, mount_path, read_write}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarMount {
    /// The image reference.
    pub image: String,
    /// Where its filesystem is mounted in the task.
    pub mount_path: String,
    /// False means read-only.
    pub read_write: bool,
}

/// Requested resources; a non-positive axis means "unset" for that axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InstanceShape {
    /// Virtual CPUs.
    pub vcpus: Option<i64>,
    /// Memory in GiB.
    pub memory_gb: Option<i64>,
}

impl InstanceShape {
    /// The CPU count if set and positive.
    pub fn cpus(&self) -> Option<i64> {
        self.vcpus.filter(|v| *v > 0)
    }

    /// The memory in GiB if set and positive.
    pub fn memory_gib(&self) -> Option<i64> {
        self.memory_gb.filter(|v| *v > 0)
    }
}
