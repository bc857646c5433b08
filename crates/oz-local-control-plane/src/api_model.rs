//! The run API's JSON: validating a create-run body, rendering a run as the SDK's `RunItem`,
//! and building the worker's `task_assignment` data from a run.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::RunOptions;
use super::runs::{NewRun, Run, RunState, error_for_reason};
use super::timestamp;

/// `POST /agent/runs` body (the SDK's `AgentRunParams`); unknown keys are ignored.
#[derive(Debug, Deserialize)]
struct CreateBody {
    prompt: Option<String>,
    title: Option<String>,
    config: Option<ConfigCheck>,
    team: Option<bool>,
    metadata: Option<BTreeMap<String, String>>,
    skill: Option<String>,
}

/// The typed fields of `config` (AmbientAgentConfig) the worker reads; checked for types only.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ConfigCheck {
    worker_host: Option<String>,
    model_id: Option<String>,
    profile_id: Option<String>,
    environment_id: Option<String>,
    base_prompt: Option<String>,
    skill_spec: Option<String>,
    name: Option<String>,
    mcp_servers: Option<BTreeMap<String, serde_json::Map<String, Value>>>,
    computer_use_enabled: Option<bool>,
    idle_timeout_minutes: Option<i64>,
    harness: Option<HarnessCheck>,
    snapshot_disabled: Option<bool>,
    snapshot_upload_timeout_secs: Option<i64>,
    snapshot_script_timeout_secs: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct HarnessCheck {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Validates a create-run body; the error is the 422 detail (which field, what was expected).
pub(crate) fn parse_create(body: &[u8]) -> Result<NewRun, String> {
    let raw: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    if !raw.is_object() {
        return Err("body must be a JSON object".into());
    }
    let parsed: CreateBody = serde_path_to_error::deserialize(&raw)
        .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
    let config_raw = raw.get("config").cloned().unwrap_or(Value::Null);
    let config_raw = if config_raw.is_null() {
        json!({})
    } else {
        config_raw
    };
    let config = parsed.config;
    let skill_given = parsed.skill.as_deref().is_some_and(|s| !s.is_empty())
        || config
            .as_ref()
            .and_then(|c| c.skill_spec.as_deref())
            .is_some_and(|s| !s.is_empty());
    let prompt = parsed.prompt.unwrap_or_default();
    if prompt.trim().is_empty() && !skill_given {
        return Err("prompt: required (a non-empty string) unless a skill is given".into());
    }
    let worker_host = config
        .as_ref()
        .and_then(|c| c.worker_host.clone())
        .unwrap_or_default();
    if worker_host.is_empty() || worker_host == "warp" {
        return Err(
            "config.worker_host: required: the id of a self-hosted worker (this \
             local control plane has no Warp-hosted workers)"
                .into(),
        );
    }
    let metadata = parsed.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    let title = parsed
        .title
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| prompt.chars().take(80).collect());
    Ok(NewRun {
        prompt,
        title,
        config: config_raw,
        worker_host,
        // The SDK documents an omitted `team` as true "for users on a single team"; the local
        // control plane's one API key is such a user.
        team: parsed.team.unwrap_or(true),
        metadata,
    })
}

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), String> {
    if metadata.len() > 20 {
        return Err(format!("metadata: at most 20 keys, got {}", metadata.len()));
    }
    for (key, value) in metadata {
        let key_ok = (1..=64).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !key_ok {
            return Err(format!(
                "metadata: key {key:?} must be 1-64 bytes of [a-zA-Z0-9._-]"
            ));
        }
        if value.len() > 256 || value.contains('\0') {
            return Err(format!(
                "metadata.{key}: value must be at most 256 bytes without NUL"
            ));
        }
    }
    Ok(())
}

/// A run as the SDK's `RunItem`.
pub(crate) fn run_item(run: &Run) -> Value {
    let mut item = json!({
        "run_id": run.id,
        "task_id": run.id,
        "state": run.state.as_str(),
        "title": run.spec.title,
        "prompt": run.spec.prompt,
        "created_at": timestamp::format(run.created_at),
        "updated_at": timestamp::format(run.updated_at),
        "agent_config": run.spec.config,
        "metadata": run.spec.metadata,
        "scope": {"type": if run.spec.team { "Team" } else { "User" }},
        "source": "API",
        "execution_location": "REMOTE",
        "is_run_type_cancellable": true,
    });
    if let Some(started) = run.started_at {
        item["started_at"] = timestamp::format(started).into();
    }
    if let Some(message) = &run.status_message {
        let mut status = json!({"message": message});
        if run.state == RunState::Failed
            && let Some((code, retryable)) =
                run.failure_reason.as_deref().and_then(error_for_reason)
        {
            status["error_code"] = code.into();
            status["retryable"] = retryable.into();
        }
        item["status_message"] = status;
    }
    item
}

/// The `task_assignment` data for the `offer`-th sending of `run`: the task, the config as
/// `agent_config_snapshot`, the owner from `team`, and env vars, images from `options`.
pub(crate) fn assignment(run: &Run, options: &RunOptions) -> Value {
    let created = timestamp::format(run.created_at);
    let mut data = json!({
        "task_id": run.id,
        "execution_id": format!("{}-exec-{}", run.id, run.offers),
        "task": {
            "id": run.id,
            "title": run.spec.title,
            "task_definition": {"prompt": run.spec.prompt},
            "created_at": created,
            "updated_at": timestamp::format(run.updated_at),
            "owner": {"Type": if run.spec.team { "TEAM" } else { "USER" }, "Id": 1},
            "agent_config_snapshot": run.spec.config,
        },
        "env_vars": options.secrets,
        "additional_sidecars": [],
        "additional_oz_args": [],
    });
    if let Some(image) = &options.docker_image {
        data["docker_image"] = image.clone().into();
    }
    if let Some(image) = &options.sidecar_image {
        data["sidecar_image"] = image.clone().into();
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bodies_name_the_field() {
        let cases = [
            ("not json", "body is not valid JSON"),
            ("[1]", "body must be a JSON object"),
            (r#"{"prompt": 3}"#, "prompt: invalid type"),
            (r#"{"config": {"worker_host": "w"}}"#, "prompt: required"),
            (r#"{"prompt": "p"}"#, "config.worker_host: required"),
            (
                r#"{"prompt": "p", "config": {"worker_host": "warp"}}"#,
                "config.worker_host: required",
            ),
            (
                r#"{"prompt": "p", "config": {"worker_host": "w", "idle_timeout_minutes": 1.5}}"#,
                "config.idle_timeout_minutes: invalid type",
            ),
            (
                r#"{"prompt": "p", "config": {"worker_host": "w"}, "metadata": {"a b": "x"}}"#,
                "metadata: key \"a b\"",
            ),
        ];
        for (body, want) in cases {
            let err = parse_create(body.as_bytes()).unwrap_err();
            assert!(err.starts_with(want), "{body}: {err}");
        }
    }

    #[test]
    fn the_assignment_carries_the_run_config_owner_secrets_and_images() {
        use crate::runs::RunStore;
        use oz_protocol::AssignmentData;

        let body = r#"{"prompt": "hi", "title": "T", "team": true,
            "config": {"worker_host": "w", "model_id": "m", "idle_timeout_minutes": 3}}"#;
        let mut store = RunStore::new(std::time::Duration::from_secs(1));
        let run = store.create(parse_create(body.as_bytes()).unwrap(), 0);
        let options = RunOptions {
            secrets: BTreeMap::from([("GITHUB_ACCESS_TOKEN".to_owned(), "s3cret".to_owned())]),
            docker_image: Some("img:1".into()),
            sidecar_image: Some("side:2".into()),
            ..RunOptions::default()
        };
        let data = assignment(&run, &options);
        assert_eq!(data["task"]["owner"], json!({"Type": "TEAM", "Id": 1}));
        assert_eq!(data["task"]["task_definition"]["prompt"], "hi");
        assert_eq!(data["task"]["agent_config_snapshot"]["model_id"], "m");
        assert_eq!(data["env_vars"]["GITHUB_ACCESS_TOKEN"], "s3cret");
        assert_eq!(
            (
                data["docker_image"].as_str(),
                data["sidecar_image"].as_str()
            ),
            (Some("img:1"), Some("side:2"))
        );
        // The worker's own decoder accepts it.
        let decoded: AssignmentData = serde_json::from_value(data).unwrap();
        assert_eq!(decoded.task_id.as_deref(), Some(run.id.as_str()));
        let snapshot = decoded.task.unwrap().agent_config_snapshot.unwrap();
        assert_eq!(snapshot.idle_timeout_minutes, Some(3));
    }

    #[test]
    fn an_omitted_team_means_team_owned_as_for_a_user_on_a_single_team() {
        let cases = [
            ("", true),
            (r#", "team": true"#, true),
            (r#", "team": false"#, false),
        ];
        for (team, want) in cases {
            let body = format!(r#"{{"prompt": "p", "config": {{"worker_host": "w"}}{team}}}"#);
            assert_eq!(parse_create(body.as_bytes()).unwrap().team, want, "{body}");
        }
    }

    #[test]
    fn a_good_body_keeps_the_config_as_the_snapshot() {
        let body = r#"{"prompt": "hello", "team": true,
            "config": {"worker_host": "w", "model_id": "m", "mcp_servers": {"x": {"url": "u"}}}}"#;
        let run = parse_create(body.as_bytes()).unwrap();
        assert_eq!(run.worker_host, "w");
        assert_eq!(run.title, "hello");
        assert!(run.team);
        assert_eq!(run.config["mcp_servers"]["x"]["url"], "u");
    }
}
