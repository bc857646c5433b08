//! The wire protocol between Warp's control plane and a self-hosted worker, in both
//! directions, as JSON: the only crate of the workspace that knows how frames are encoded.
//!
//! Every message is an envelope `{"type": "<type>", "data": {...}}`. Inbound DTOs (server →
//! worker) are lenient like Warp's Go worker (unknown fields ignored, `null` treated as absent,
//! `created_at` and `updated_at` accepted in any shape) but strict about types (integers reject
//! `15.0`). Worker → server messages are compact JSON with the Go worker's exact key order.
//! `docs/protocol.md` describes the contract in prose.
//!
//! Both sides use this crate: the worker (`oz-agent-worker`) decodes server frames with
//! [`decode_server_frame`] and encodes its reports as [`WorkerMessage`]; the local control plane
//! (`oz-local-control-plane`) does the opposite.

pub mod decode;

pub use decode::{FrameRejection, Rejection, ServerFrame, decode_server_frame};

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

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
/// The worker never interprets these; it only echoes them (a deliberate leniency: the Go worker fails the whole frame on an unexpected shape).
fn lenient_timestamp<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(de)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

// === Worker → server ===

/// A worker → server message. The worker encodes it with [`WorkerMessage::encode`]; the server
/// decodes it with [`WorkerMessage::parse`]. Field order is the wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        /// [`TASK_STATE_CANCELLED`] for a user cancellation, omitted otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_state: Option<String>,
    },
    /// `task_failed`.
    TaskFailed {
        /// The run.
        task_id: String,
        /// User-facing text.
        message: String,
        /// The reason label; omitted when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure_reason: Option<String>,
        /// The exit code; omitted when absent (the worker never sends 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
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

    /// Encodes the message as the exact frame text (compact JSON, wire key order).
    pub fn encode(&self) -> String {
        // A tagged enum of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The wire `type` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TaskClaimed { .. } => TASK_CLAIMED,
            Self::TaskRejected { .. } => TASK_REJECTED,
            Self::TaskCompleted { .. } => TASK_COMPLETED,
            Self::TaskFailed { .. } => TASK_FAILED,
        }
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

// === Server → worker encoders (the local control plane) ===

/// Encodes a `task_cancellation` frame.
pub fn encode_cancellation(task_id: &str) -> String {
    encode(
        TASK_CANCELLATION,
        CancellationData {
            task_id: Some(task_id.to_owned()),
        },
    )
}

/// Encodes a `task_assignment` frame around a `data` object.
pub fn encode_assignment(data: &serde_json::Value) -> String {
    encode(TASK_ASSIGNMENT, data)
}

#[cfg(test)]
mod tests;
