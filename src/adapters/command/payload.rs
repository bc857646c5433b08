//! The dispatch payload (schema version 1) written to the dispatch command's stdin: the Command
//! backend's own wire contract, which dispatch commands parse: keep it stable.

use serde_json::{Map, Value, json};

use crate::domain::{AgentConfig, Task, TaskSpec};

/// Timestamp the reference emits for a missing `created_at`/`updated_at` (Go's zero time).
pub(super) const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Builds the payload. Keys are always present; `sidecars` is `null` when there are none (as
/// the reference); `env` is the task env as an object (last duplicate wins).
pub(super) fn dispatch_payload(spec: &TaskSpec, worker_id: &str, server_root_url: &str) -> Value {
    let env: Map<String, Value> = spec
        .env
        .iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
        .collect();
    let sidecars = if spec.sidecars.is_empty() {
        Value::Null
    } else {
        spec.sidecars
            .iter()
            .map(|s| json!({"image": s.image, "mount_path": s.mount_path, "read_write": s.read_write}))
            .collect()
    };
    json!({
        "version": 1,
        "run_id": spec.task_id.as_str(),
        "execution_id": spec.execution_id,
        "server_root_url": server_root_url,
        "worker_id": worker_id,
        "docker_image": spec.image,
        "base_args": spec.args,
        "env": env,
        "sidecars": sidecars,
        "task": task_json(&spec.task),
    })
}

fn task_json(task: &Task) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(task.id));
    out.insert("title".into(), json!(task.title));
    out.insert(
        "task_definition".into(),
        json!({"prompt": task.prompt.clone().unwrap_or_default()}),
    );
    for (key, value) in [
        ("created_at", &task.created_at),
        ("updated_at", &task.updated_at),
    ] {
        let value = value.clone().filter(|v| !v.is_empty());
        out.insert(
            key.into(),
            json!(value.unwrap_or_else(|| ZERO_TIME.to_owned())),
        );
    }
    if let Some(owner) = &task.owner {
        out.insert(
            "owner".into(),
            json!({"Type": owner.kind.as_wire(), "Id": owner.id}),
        );
    }
    if let Some(config) = &task.agent_config {
        out.insert("agent_config_snapshot".into(), config_json(config));
    }
    if let Some(conversation) = &task.agent_conversation_id {
        out.insert("agent_conversation_id".into(), json!(conversation));
    }
    Value::Object(out)
}

fn config_json(c: &AgentConfig) -> Value {
    let mut out = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            out.insert(key.to_owned(), value);
        }
    };
    put(
        "environment_id",
        c.environment_id.as_ref().map(|v| json!(v)),
    );
    put("base_prompt", c.base_prompt.as_ref().map(|v| json!(v)));
    put("model_id", c.model_id.as_ref().map(|v| json!(v)));
    put("profile_id", c.profile_id.as_ref().map(|v| json!(v)));
    put("skill_spec", c.skill_spec.as_ref().map(|v| json!(v)));
    put(
        "mcp_servers",
        (!c.mcp_servers.is_empty()).then(|| json!(c.mcp_servers)),
    );
    put(
        "computer_use_enabled",
        c.computer_use_enabled.map(|v| json!(v)),
    );
    put(
        "idle_timeout_minutes",
        c.idle_timeout_minutes.map(|v| json!(v)),
    );
    put(
        "harness",
        c.harness_type.as_ref().map(|t| json!({"type": t})),
    );
    put(
        "harness_auth_secrets",
        c.claude_auth_secret_name
            .as_ref()
            .map(|n| json!({"claude_auth_secret_name": n})),
    );
    put(
        "inference_providers",
        c.aws_inference.as_ref().map(|a| {
            json!({"aws": {"disabled": a.disabled, "role_arn": a.role_arn, "region": a.region}})
        }),
    );
    put(
        "session_sharing",
        c.public_access
            .as_ref()
            .map(|p| json!({"public_access": p})),
    );
    put("snapshot_disabled", c.snapshot_disabled.map(|v| json!(v)));
    put(
        "snapshot_upload_timeout_secs",
        c.snapshot_upload_timeout_secs.map(|v| json!(v)),
    );
    put(
        "snapshot_script_timeout_secs",
        c.snapshot_script_timeout_secs.map(|v| json!(v)),
    );
    Value::Object(out)
}
