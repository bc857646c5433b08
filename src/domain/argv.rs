//! The `oz agent run …` argument vector, derived exactly as Warp's reference worker does
//! (same flags, same order). Order matters: the server-side agent parses these flags.

use crate::domain::task::{AgentConfig, Assignment, OwnerType};

/// Worker-level settings that feed the argv.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArgvSettings {
    /// `--server-root-url` value; emitted even when empty.
    pub server_root_url: String,
    /// The worker's `--idle-on-complete` / YAML `idle_on_complete`, passed verbatim.
    pub idle_on_complete: Option<String>,
    /// The hidden `--session-sharing-server-url`, forwarded when set.
    pub session_sharing_server_url: Option<String>,
}

/// Builds the argv that follows the `oz` binary (or the container entrypoint).
pub fn agent_run_args(assignment: &Assignment, settings: &ArgvSettings) -> Vec<String> {
    let task = &assignment.task;
    let mut args: Vec<String> = vec!["agent".into(), "run".into()];
    if task.owner.as_ref().map(|o| &o.kind) == Some(&OwnerType::Team) {
        push(&mut args, ["--share", "team:edit"]);
    }
    push(&mut args, ["--task-id", &task.id, "--sandboxed"]);
    push(&mut args, ["--server-root-url", &settings.server_root_url]);

    if let Some(config) = &task.agent_config {
        snapshot_args(config, &mut args);
    }
    args.extend(assignment.additional_oz_args.iter().cloned());

    args.push("--idle-on-complete".into());
    let task_idle = task
        .agent_config
        .as_ref()
        .and_then(|c| c.idle_timeout_minutes)
        .filter(|m| *m > 0);
    match (task_idle, settings.idle_on_complete.as_deref()) {
        (Some(minutes), _) => args.push(format!("{minutes}m")),
        (None, Some(worker)) if !worker.is_empty() => args.push(worker.to_owned()),
        _ => {}
    }

    if let Some(url) = settings
        .session_sharing_server_url
        .as_deref()
        .filter(|u| !u.is_empty())
    {
        push(&mut args, ["--session-sharing-server-url", url]);
    }
    args
}

/// The flags derived from the agent configuration snapshot.
fn snapshot_args(config: &AgentConfig, args: &mut Vec<String>) {
    let oz = config.is_oz_harness();
    if oz && let Some(model) = trimmed(config.model_id.as_deref()) {
        push(args, ["--model", model]);
    }
    if let Some(profile) = trimmed(config.profile_id.as_deref()) {
        push(args, ["--profile", profile]);
    }
    if let Some(skill) = trimmed(config.skill_spec.as_deref()) {
        push(args, ["--skill", skill]);
    }
    if !config.mcp_servers.is_empty() {
        push(args, ["--mcp", &mcp_json(config)]);
    }
    let computer_use = config.computer_use_enabled.unwrap_or(oz);
    args.push(
        if computer_use {
            "--computer-use"
        } else {
            "--no-computer-use"
        }
        .into(),
    );
    if let Some(aws) = config.aws_inference.as_ref().filter(|a| !a.disabled)
        && let Some(role) = trimmed(Some(&aws.role_arn))
    {
        push(args, ["--bedrock-inference-role", role]);
        if let Some(region) = trimmed(Some(&aws.region)) {
            push(args, ["--bedrock-role-region", region]);
        }
    }
    if let Some(harness) = config.trimmed_harness() {
        push(args, ["--harness", harness]);
    }
    match config.public_access.as_deref() {
        Some("VIEWER") => push(args, ["--share", "public:view"]),
        Some("EDITOR") => push(args, ["--share", "public:edit"]),
        _ => {}
    }
    if config.snapshot_disabled == Some(true) {
        args.push("--no-snapshot".into());
    }
    if let Some(secs) = config.snapshot_upload_timeout_secs.filter(|s| *s > 0) {
        push(args, ["--snapshot-upload-timeout", &format!("{secs}s")]);
    }
    if let Some(secs) = config.snapshot_script_timeout_secs.filter(|s| *s > 0) {
        push(args, ["--snapshot-script-timeout", &format!("{secs}s")]);
    }
    if let Some(environment) = trimmed(config.environment_id.as_deref()) {
        push(args, ["--environment", environment]);
    }
}

/// The MCP server map as compact JSON with sorted keys, escaping `<`, `>` and `&` as Go does,
/// so the bytes match the reference worker's.
fn mcp_json(config: &AgentConfig) -> String {
    let json = serde_json::to_string(&config.mcp_servers).unwrap_or_else(|_| "{}".to_owned());
    // Outside strings, JSON never contains these three characters, so a blanket replace is safe.
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn trimmed(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn push<const N: usize>(args: &mut Vec<String>, tokens: [&str; N]) {
    args.extend(tokens.iter().map(|t| (*t).to_owned()));
}

#[cfg(test)]
mod tests;
