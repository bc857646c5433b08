//! The wire protocol (spec §2): the only place with `serde` DTOs for the control-plane messages,
//! and the conversions between them and the domain (`Assignment`, `TaskReport`).
//!
//! Every message is an envelope `{"type": "<type>", "data": {...}}`. Inbound DTOs are lenient
//! like the Go reference (unknown fields ignored, `null` treated as absent, `created_at` and
//! `updated_at` accepted in any shape) but strict about types (integers reject `15.0`).
//! Outbound messages are compact JSON with the reference's exact key order.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::{
    AgentConfig, Assignment, AwsInference, InstanceShape, Owner, OwnerType, SidecarMount, Task,
    TaskId, TaskReport,
};

/// `task_assignment` (server → worker).
pub const TASK_ASSIGNMENT: &str = "task_assignment";
/// `task_cancellation` (server → worker).
pub const TASK_CANCELLATION: &str = "task_cancellation";
/// `task_claimed` (worker → server).
pub const TASK_CLAIMED: &str = "task_claimed";
/// `task_rejected` (worker → server).
pub const TASK_REJECTED: &str = "task_rejected";
/// `task_completed` (worker → server).
pub const TASK_COMPLETED: &str = "task_completed";
/// `task_failed` (worker → server).
pub const TASK_FAILED: &str = "task_failed";
/// The only defined `task_state` value.
pub const TASK_STATE_CANCELLED: &str = "CANCELLED";

/// The envelope, for encoding: `type` first, then `data`.
#[derive(Debug, Serialize)]
pub struct Envelope<'a, T> {
    /// The message type string.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The type-specific object.
    pub data: T,
}

/// Encodes `data` under `kind` as compact JSON.
pub fn encode<T: Serialize>(kind: &str, data: T) -> String {
    // Serialising plain structs of strings and integers into a String cannot fail.
    serde_json::to_string(&Envelope { kind, data }).unwrap_or_default()
}

// === Inbound: task_assignment ===

/// `task_assignment.data`.
#[derive(Debug, Deserialize)]
pub struct AssignmentData {
    /// The run.
    pub task_id: Option<String>,
    /// The concrete execution.
    pub execution_id: Option<String>,
    /// The task object; the decoder rejects `null` or absent.
    pub task: Option<TaskDto>,
    /// The resolved task image.
    pub docker_image: Option<String>,
    /// The warp-agent sidecar image.
    pub sidecar_image: Option<String>,
    /// Secrets: never log the values.
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Extra images to mount.
    pub additional_sidecars: Option<Vec<SidecarDto>>,
    /// Extra `oz` tokens.
    pub additional_oz_args: Option<Vec<String>>,
    /// Requested resources.
    pub instance_shape: Option<InstanceShapeDto>,
}

/// The `task` object.
#[derive(Debug, Deserialize)]
pub struct TaskDto {
    /// `--task-id`.
    pub id: Option<String>,
    /// Only for logs.
    pub title: Option<String>,
    /// `{"prompt": string}`.
    pub task_definition: Option<TaskDefinitionDto>,
    /// Any JSON; only a string is kept.
    #[serde(default, deserialize_with = "lenient_timestamp")]
    pub created_at: Option<String>,
    /// Any JSON; only a string is kept.
    #[serde(default, deserialize_with = "lenient_timestamp")]
    pub updated_at: Option<String>,
    /// `{"Type", "Id"}` (lower-case aliases accepted).
    pub owner: Option<OwnerDto>,
    /// The agent configuration.
    pub agent_config_snapshot: Option<AgentConfigDto>,
    /// Parsed, never forwarded.
    pub agent_conversation_id: Option<String>,
}

/// `task.task_definition`.
#[derive(Debug, Deserialize)]
pub struct TaskDefinitionDto {
    /// The prompt (unused by the worker).
    pub prompt: Option<String>,
}

/// `task.owner`: the server's PermissionSubjectAndID, with capitalised keys.
#[derive(Debug, Deserialize)]
pub struct OwnerDto {
    /// `USER` or `TEAM`.
    #[serde(rename = "Type", alias = "type")]
    pub kind: Option<String>,
    /// The numeric id.
    #[serde(rename = "Id", alias = "id")]
    pub id: Option<i64>,
}

/// `task.agent_config_snapshot` (AmbientAgentConfig).
#[derive(Debug, Deserialize)]
pub struct AgentConfigDto {
    /// `environment_id`.
    pub environment_id: Option<String>,
    /// `base_prompt`.
    pub base_prompt: Option<String>,
    /// `model_id`.
    pub model_id: Option<String>,
    /// `profile_id`.
    pub profile_id: Option<String>,
    /// `skill_spec`.
    pub skill_spec: Option<String>,
    /// `mcp_servers`.
    pub mcp_servers: Option<BTreeMap<String, serde_json::Value>>,
    /// `computer_use_enabled`.
    pub computer_use_enabled: Option<bool>,
    /// `idle_timeout_minutes`.
    pub idle_timeout_minutes: Option<i64>,
    /// `harness`.
    pub harness: Option<HarnessDto>,
    /// `harness_auth_secrets`.
    pub harness_auth_secrets: Option<HarnessAuthSecretsDto>,
    /// `inference_providers`.
    pub inference_providers: Option<InferenceProvidersDto>,
    /// `session_sharing`.
    pub session_sharing: Option<SessionSharingDto>,
    /// `snapshot_disabled`.
    pub snapshot_disabled: Option<bool>,
    /// `snapshot_upload_timeout_secs`.
    pub snapshot_upload_timeout_secs: Option<i64>,
    /// `snapshot_script_timeout_secs`.
    pub snapshot_script_timeout_secs: Option<i64>,
}

/// `harness`.
#[derive(Debug, Deserialize)]
pub struct HarnessDto {
    /// `type`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `harness_auth_secrets`.
#[derive(Debug, Deserialize)]
pub struct HarnessAuthSecretsDto {
    /// `claude_auth_secret_name`.
    pub claude_auth_secret_name: Option<String>,
}

/// `inference_providers`.
#[derive(Debug, Deserialize)]
pub struct InferenceProvidersDto {
    /// `aws`.
    pub aws: Option<AwsDto>,
}

/// `inference_providers.aws`.
#[derive(Debug, Deserialize)]
pub struct AwsDto {
    /// `disabled`.
    pub disabled: Option<bool>,
    /// `role_arn`.
    pub role_arn: Option<String>,
    /// `region`.
    pub region: Option<String>,
}

/// `session_sharing`.
#[derive(Debug, Deserialize)]
pub struct SessionSharingDto {
    /// `public_access`.
    pub public_access: Option<String>,
}

/// One entry of `additional_sidecars`.
#[derive(Debug, Deserialize)]
pub struct SidecarDto {
    /// The image.
    pub image: Option<String>,
    /// Where to mount it.
    pub mount_path: Option<String>,
    /// Defaults to false (read-only).
    pub read_write: Option<bool>,
}

/// `instance_shape`.
#[derive(Debug, Deserialize)]
pub struct InstanceShapeDto {
    /// CPUs.
    pub vcpus: Option<i64>,
    /// GiB.
    pub memory_gb: Option<i64>,
}

/// `task_cancellation.data`.
#[derive(Debug, Deserialize, Serialize)]
pub struct CancellationData {
    /// The run to cancel.
    pub task_id: Option<String>,
}

/// Accepts any JSON for a timestamp: strings are kept verbatim, anything else becomes `None`.
/// The worker never interprets these; it only echoes them (spec §2.1 "Improve").
fn lenient_timestamp<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(de)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

/// Why a decoded `task_assignment` is not a valid [`Assignment`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    /// `task_id` is absent or `null`.
    #[error("data.task_id is missing")]
    MissingTaskId,
    /// `task_id` is the empty string.
    #[error("data.task_id is empty")]
    EmptyTaskId,
    /// `task` is absent or `null` (the reference crashes on this).
    #[error("data.task is missing or null")]
    MissingTask,
}

impl TryFrom<AssignmentData> for Assignment {
    type Error = AssignmentError;

    fn try_from(data: AssignmentData) -> Result<Self, Self::Error> {
        let raw_id = data.task_id.ok_or(AssignmentError::MissingTaskId)?;
        let task_id = TaskId::parse(raw_id).map_err(|_| AssignmentError::EmptyTaskId)?;
        let task = data.task.ok_or(AssignmentError::MissingTask)?;
        Ok(Assignment {
            task_id,
            execution_id: data.execution_id.unwrap_or_default(),
            task: task.into(),
            docker_image: data.docker_image,
            sidecar_image: data.sidecar_image,
            env_vars: data.env_vars.unwrap_or_default(),
            additional_sidecars: data
                .additional_sidecars
                .unwrap_or_default()
                .into_iter()
                .map(SidecarMount::from)
                .collect(),
            additional_oz_args: data.additional_oz_args.unwrap_or_default(),
            instance_shape: data.instance_shape.map(InstanceShape::from),
        })
    }
}

impl From<TaskDto> for Task {
    fn from(dto: TaskDto) -> Self {
        Task {
            id: dto.id.unwrap_or_default(),
            title: dto.title.unwrap_or_default(),
            prompt: dto.task_definition.and_then(|d| d.prompt),
            created_at: dto.created_at,
            updated_at: dto.updated_at,
            owner: dto.owner.map(Owner::from),
            agent_config: dto.agent_config_snapshot.map(AgentConfig::from),
            agent_conversation_id: dto.agent_conversation_id,
        }
    }
}

impl From<OwnerDto> for Owner {
    fn from(dto: OwnerDto) -> Self {
        Owner {
            kind: OwnerType::from_wire(dto.kind.as_deref().unwrap_or_default()),
            id: dto.id.unwrap_or_default(),
        }
    }
}

impl From<AgentConfigDto> for AgentConfig {
    fn from(dto: AgentConfigDto) -> Self {
        AgentConfig {
            environment_id: dto.environment_id,
            base_prompt: dto.base_prompt,
            model_id: dto.model_id,
            profile_id: dto.profile_id,
            skill_spec: dto.skill_spec,
            mcp_servers: dto.mcp_servers.unwrap_or_default(),
            computer_use_enabled: dto.computer_use_enabled,
            idle_timeout_minutes: dto.idle_timeout_minutes,
            harness_type: dto.harness.map(|h| h.kind.unwrap_or_default()),
            claude_auth_secret_name: dto
                .harness_auth_secrets
                .and_then(|s| s.claude_auth_secret_name),
            aws_inference: dto
                .inference_providers
                .and_then(|p| p.aws)
                .map(|aws| AwsInference {
                    disabled: aws.disabled.unwrap_or_default(),
                    role_arn: aws.role_arn.unwrap_or_default(),
                    region: aws.region.unwrap_or_default(),
                }),
            public_access: dto.session_sharing.and_then(|s| s.public_access),
            snapshot_disabled: dto.snapshot_disabled,
            snapshot_upload_timeout_secs: dto.snapshot_upload_timeout_secs,
            snapshot_script_timeout_secs: dto.snapshot_script_timeout_secs,
        }
    }
}

impl From<SidecarDto> for SidecarMount {
    fn from(dto: SidecarDto) -> Self {
        SidecarMount {
            image: dto.image.unwrap_or_default(),
            mount_path: dto.mount_path.unwrap_or_default(),
            read_write: dto.read_write.unwrap_or(false),
        }
    }
}

impl From<InstanceShapeDto> for InstanceShape {
    fn from(dto: InstanceShapeDto) -> Self {
        InstanceShape {
            vcpus: dto.vcpus,
            memory_gb: dto.memory_gb,
        }
    }
}

// === Outbound ===

/// `task_claimed.data`.
#[derive(Debug, Serialize)]
pub struct ClaimedData<'a> {
    /// The run.
    pub task_id: &'a str,
    /// This worker.
    pub worker_id: &'a str,
}

/// `task_rejected.data`.
#[derive(Debug, Serialize)]
pub struct RejectedData<'a> {
    /// The run.
    pub task_id: &'a str,
    /// Why.
    pub reason: &'a str,
}

/// `task_completed.data`.
#[derive(Debug, Serialize)]
pub struct CompletedData<'a> {
    /// The run.
    pub task_id: &'a str,
    /// The message.
    pub message: &'a str,
    /// `CANCELLED` for a user cancellation, omitted otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_state: Option<&'a str>,
}

/// `task_failed.data`.
#[derive(Debug, Serialize)]
pub struct FailedData<'a> {
    /// The run.
    pub task_id: &'a str,
    /// User-facing text.
    pub message: &'a str,
    /// Omitted when empty.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub failure_reason: &'a str,
    /// Omitted when `None` or 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// Encodes a report as the exact outbound message (compact JSON, reference key order).
pub fn encode_report(report: &TaskReport) -> String {
    match report {
        TaskReport::Claimed { task_id, worker_id } => encode(
            TASK_CLAIMED,
            ClaimedData {
                task_id: task_id.as_str(),
                worker_id,
            },
        ),
        TaskReport::Rejected { task_id, reason } => encode(
            TASK_REJECTED,
            RejectedData {
                task_id: task_id.as_str(),
                reason,
            },
        ),
        TaskReport::Completed {
            task_id,
            message,
            cancelled,
        } => encode(
            TASK_COMPLETED,
            CompletedData {
                task_id: task_id.as_str(),
                message,
                task_state: cancelled.then_some(TASK_STATE_CANCELLED),
            },
        ),
        TaskReport::Failed {
            task_id,
            message,
            failure_reason,
            exit_code,
        } => encode(
            TASK_FAILED,
            FailedData {
                task_id: task_id.as_str(),
                message,
                failure_reason: failure_reason.as_str(),
                exit_code: exit_code.filter(|code| *code != 0),
            },
        ),
    }
}

// === Server side (used by the local control plane) ===

/// A worker → server message as the server decodes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// `task_claimed`.
    TaskClaimed {
        /// The run.
        task_id: String,
        /// The worker.
        worker_id: String,
    },
    /// `task_rejected`.
    TaskRejected {
        /// The run.
        task_id: String,
        /// Why.
        reason: String,
    },
    /// `task_completed`.
    TaskCompleted {
        /// The run.
        task_id: String,
        /// The message.
        message: String,
        /// `CANCELLED` or absent.
        #[serde(default)]
        task_state: Option<String>,
    },
    /// `task_failed`.
    TaskFailed {
        /// The run.
        task_id: String,
        /// User-facing text.
        message: String,
        /// The reason label.
        #[serde(default)]
        failure_reason: Option<String>,
        /// The exit code, when non-zero.
        #[serde(default)]
        exit_code: Option<i64>,
    },
}

impl WorkerMessage {
    /// Decodes one worker frame.
    ///
    /// # Errors
    /// The serde error when the frame is not one of the four worker messages.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The run the message is about.
    pub fn task_id(&self) -> &str {
        match self {
            Self::TaskClaimed { task_id, .. }
            | Self::TaskRejected { task_id, .. }
            | Self::TaskCompleted { task_id, .. }
            | Self::TaskFailed { task_id, .. } => task_id,
        }
    }

    /// True for `task_completed` and `task_failed`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::TaskCompleted { .. } | Self::TaskFailed { .. })
    }
}

/// Encodes a `task_cancellation` frame (server side).
pub fn encode_cancellation(task_id: &str) -> String {
    encode(
        TASK_CANCELLATION,
        CancellationData {
            task_id: Some(task_id.to_owned()),
        },
    )
}

/// Encodes a `task_assignment` frame around a `data` object (server side).
pub fn encode_assignment(data: &serde_json::Value) -> String {
    encode(TASK_ASSIGNMENT, data)
}
