//! Turns inbound frames into domain values and domain reports into wire messages. The JSON
//! itself is the `oz-protocol` crate's business; this file only maps between its DTOs and the
//! domain, so neither side depends on the other's types.
//!
//! A rejected frame is logged by the connection once, at warn, with its reason and, when it
//! could be read, the `task_id`; the raw frame never reaches a log line (assignments carry
//! `env_vars` secrets).

use oz_protocol::{
    AgentConfigDto, AssignmentData, FrameRejection, InstanceShapeDto, OwnerDto, Rejection,
    ServerFrame, SidecarDto, TASK_STATE_CANCELLED, TaskDto, WorkerMessage, decode_server_frame,
};

use crate::domain::{
    AgentConfig, Assignment, AwsInference, InstanceShape, Owner, OwnerType, SidecarMount, Task,
    TaskId, TaskReport,
};

/// What one inbound frame means to the worker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Inbound {
    /// A well-formed assignment.
    Assignment(Box<Assignment>),
    /// A well-formed cancellation.
    Cancellation(TaskId),
    /// A frame the worker ignores, and why.
    Rejected(Rejection),
}

/// Classifies one frame. `max_frame_size` bounds what is parsed at all.
pub(crate) fn decode_frame(frame: &[u8], max_frame_size: usize) -> Inbound {
    match decode_server_frame(frame, max_frame_size) {
        Ok(ServerFrame::Assignment(data)) => match assignment(*data) {
            Ok(assignment) => Inbound::Assignment(Box::new(assignment)),
            Err(reason) => Inbound::Rejected(Rejection {
                reason,
                task_id: None,
            }),
        },
        Ok(ServerFrame::Cancellation(task_id)) => match TaskId::parse(task_id) {
            Ok(task_id) => Inbound::Cancellation(task_id),
            Err(_) => Inbound::Rejected(Rejection {
                reason: FrameRejection::MissingTaskId {
                    kind: "task cancellation",
                },
                task_id: None,
            }),
        },
        Err(rejection) => Inbound::Rejected(rejection),
    }
}

/// An assignment from its DTO. `decode_server_frame` already rejects an empty `task_id` and a
/// missing `task`; the checks here keep the conversion total on its own.
fn assignment(data: AssignmentData) -> Result<Assignment, FrameRejection> {
    let kind = "task assignment";
    let task_id = TaskId::parse(data.task_id.unwrap_or_default())
        .map_err(|_| FrameRejection::MissingTaskId { kind })?;
    let task = data.task.ok_or(FrameRejection::MissingTask)?;
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

/// The wire message for a report, with the Go worker's omissions: no `failure_reason` when it
/// is empty, no `exit_code` when it is absent or 0, `task_state` only for a user cancellation.
pub(crate) fn message(report: &TaskReport) -> WorkerMessage {
    match report {
        TaskReport::Claimed { task_id, worker_id } => WorkerMessage::TaskClaimed {
            task_id: task_id.to_string(),
            worker_id: worker_id.clone(),
        },
        TaskReport::Rejected { task_id, reason } => WorkerMessage::TaskRejected {
            task_id: task_id.to_string(),
            reason: reason.clone(),
        },
        TaskReport::Completed {
            task_id,
            message,
            cancelled,
        } => WorkerMessage::TaskCompleted {
            task_id: task_id.to_string(),
            message: message.clone(),
            task_state: cancelled.then(|| TASK_STATE_CANCELLED.to_owned()),
        },
        TaskReport::Failed {
            task_id,
            message,
            failure_reason,
            exit_code,
        } => WorkerMessage::TaskFailed {
            task_id: task_id.to_string(),
            message: message.clone(),
            failure_reason: Some(failure_reason.as_str())
                .filter(|reason| !reason.is_empty())
                .map(str::to_owned),
            exit_code: exit_code.filter(|code| *code != 0).map(i64::from),
        },
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
