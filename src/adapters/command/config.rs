//! Configuration of the Command backend: the raw `backend.command` YAML block, its
//! validation (merged with `-e`) into [`CommandConfig`], and its effective-config section.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::adapters::backend_config::duration::{format_go_duration, parse_go_duration};
use crate::adapters::backend_config::{
    BackendSection, Context, Findings, RawEnvEntry, RedactedEnv, Unknown, bad_duration, merged_env,
    redacted, scalar_text, to_yaml, unknown_with_env,
};
use crate::domain::env::EnvList;

/// Default `dispatch_timeout`.
pub const DEFAULT_DISPATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The Command backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandConfig {
    /// This worker's id (goes into the payload).
    pub worker_id: String,
    /// The server root URL (goes into the payload and `OZ_SERVER_ROOT_URL`).
    pub server_root_url: String,
    /// Run with `/bin/sh -c`, the payload on stdin. Required.
    pub dispatch_command: String,
    /// Run with `/bin/sh -c` on user cancellation.
    pub cancel_command: Option<String>,
    /// Bound on one dispatch (default 60 s; ≤ 0 means the default).
    pub dispatch_timeout: Duration,
    /// Operator environment for the dispatch and cancel subprocesses only.
    pub environment: EnvList,
}

/// `backend.command`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawCommand {
    dispatch_command: Option<String>,
    cancel_command: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    dispatch_timeout: Option<String>,
    #[serde(default)]
    environment: Vec<RawEnvEntry>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// The effective `backend.command` section.
#[derive(Serialize)]
struct Effective<'a> {
    dispatch_command: &'a str,
    cancel_command: Option<&'a str>,
    dispatch_timeout: String,
    environment: Vec<RedactedEnv<'a>>,
}

impl BackendSection for CommandConfig {
    const NAME: &'static str = "command";
    const CLI_FLAGS: &'static [&'static str] = &[];
    type Raw = RawCommand;

    fn unknown_keys(raw: &RawCommand) -> Vec<String> {
        unknown_with_env(&raw.unknown, &raw.environment)
    }

    fn parse(raw: RawCommand, context: &Context<'_>, findings: &mut Findings) -> Self {
        let dispatch_command = raw
            .dispatch_command
            .clone()
            .filter(|c| !c.trim().is_empty());
        if dispatch_command.is_none() {
            findings.problem(
                "backend.command.dispatch_command is required: the command backend needs a \
                 dispatch command",
            );
        }
        let dispatch_timeout = match raw.dispatch_timeout.as_deref() {
            None => DEFAULT_DISPATCH_TIMEOUT,
            Some(text) => match parse_go_duration(text) {
                Ok(parsed) if parsed.is_non_positive() => DEFAULT_DISPATCH_TIMEOUT,
                Ok(parsed) => parsed.magnitude,
                Err(_) => {
                    findings.problem(bad_duration("backend.command.dispatch_timeout", text));
                    DEFAULT_DISPATCH_TIMEOUT
                }
            },
        };
        CommandConfig {
            worker_id: context.worker_id.clone(),
            server_root_url: context.server_root_url.to_owned(),
            dispatch_command: dispatch_command.unwrap_or_default(),
            cancel_command: raw.cancel_command.clone().filter(|c| !c.trim().is_empty()),
            dispatch_timeout,
            environment: merged_env("backend.command", &raw.environment, context, findings),
        }
    }

    fn effective(&self) -> serde_norway::Value {
        to_yaml(&Effective {
            dispatch_command: &self.dispatch_command,
            cancel_command: self.cancel_command.as_deref(),
            dispatch_timeout: format_go_duration(self.dispatch_timeout),
            environment: redacted(&self.environment),
        })
    }
}
