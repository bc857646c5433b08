//! Stage two: merge the raw CLI and the raw file (CLI > file > defaults, as the Go worker merges them) into a
//! typed [`Config`], collecting every problem instead of stopping at the first. No I/O: the
//! environment comes in through the `env` seam. Each backend's block is validated by its own
//! config module, through the table in [`super::backends`].
//!
//! `-e`/`-v` and commas: the Go worker (kong) splits every repeatable flag value on commas, so
//! `-e FOO=a,b` meant `FOO=a` plus an inherited `b`, and `-v /a:/b:ro,z` meant two broken specs.
//! Splitting silently would keep that trap; not splitting silently would change what existing
//! command lines mean. So a `-e` or `-v` value containing a comma is rejected with an error
//! telling the operator to repeat the flag, or to use the config file (whose lists have no such
//! ambiguity, so `ro,z` modes and values with commas work there).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::backends::{BACKENDS, Backend, DEFAULT_BACKEND, Presence, entry};
use super::cli::{CliArgs, CliLogFormat, CliLogLevel};
use super::file::RawFile;
use super::{ApiKey, Config, LogFormat, LogLevel};
use crate::adapters::backend_config::checks;
use crate::adapters::backend_config::{Context, EnvLookup, Findings};
use crate::adapters::state::DEFAULT_STATE_DIR;
use crate::app::restart::RESCAN_INTERVAL as DEFAULT_ORPHAN_SCAN_INTERVAL;
use crate::domain::env::{EnvEntryError, EnvList, parse_env_entry};

/// The file, already parsed, with where it came from.
pub(crate) struct FileInput<'a> {
    /// The absolute path, for messages.
    pub path: &'a str,
    /// The raw contents.
    pub raw: &'a mut RawFile,
}

/// Validates and merges. Returns the config only when there are no problems.
pub(crate) fn validate(
    cli: &CliArgs,
    file: Option<FileInput<'_>>,
    env: EnvLookup<'_>,
    findings: &mut Findings,
) -> Option<Config> {
    let mut empty = RawFile::default();
    let file_path = file.as_ref().map(|f| f.path);
    let raw = match file {
        Some(f) => f.raw,
        None => &mut empty,
    };

    let worker_id = worker_id(cli, raw, findings);
    let api_key = api_key(cli, env, findings);
    check_web_socket_url(&cli.web_socket_url, findings);
    let health_listen = health_listen(cli, raw, findings);
    let log_level = log_level(cli, raw, findings);
    debug_log_capture(raw, findings);
    let state_dir = state_dir(cli, raw, env, findings);
    let drain_timeout = match (&cli.drain_timeout, &raw.drain_timeout) {
        (Some(text), _) => crate::adapters::backend_config::grace(
            "--drain-timeout",
            Some(text),
            Duration::ZERO,
            findings,
        ),
        (None, text) => crate::adapters::backend_config::grace(
            "drain_timeout",
            text.as_deref(),
            Duration::ZERO,
            findings,
        ),
    };
    let orphan_scan_interval = match (&cli.orphan_scan_interval, &raw.orphan_scan_interval) {
        (Some(text), _) => crate::adapters::backend_config::grace(
            "--orphan-scan-interval",
            Some(text),
            DEFAULT_ORPHAN_SCAN_INTERVAL,
            findings,
        ),
        (None, text) => crate::adapters::backend_config::grace(
            "orphan_scan_interval",
            text.as_deref(),
            DEFAULT_ORPHAN_SCAN_INTERVAL,
            findings,
        ),
    };
    let cli_env = cli_env(&cli.env, env, findings);
    for (index, spec) in cli.volumes.iter().enumerate() {
        if spec.contains(',') {
            findings.problem(format!(
                "invalid --volumes value #{} {spec:?}: contains a comma; repeat -v for each \
                 volume, or list volumes with mode lists such as ro,z under \
                 backend.docker.volumes in the config file",
                index + 1
            ));
        }
    }

    let cleanup = !(cli.no_cleanup || raw.cleanup == Some(false));
    let max_concurrent_tasks = match cli.max_concurrent_tasks {
        0 => raw.max_concurrent_tasks.unwrap_or(0),
        from_cli => from_cli,
    };
    let idle_on_complete = Some(cli.idle_on_complete.clone())
        .filter(|v| !v.is_empty())
        .or_else(|| raw.idle_on_complete.clone().filter(|v| !v.is_empty()));

    let context = Context {
        worker_id: worker_id.clone().unwrap_or_default(),
        cleanup,
        server_root_url: &cli.server_root_url,
        cli_env: &cli_env,
        env,
        volumes: &cli.volumes,
        pull_policy: cli.pull_policy.map(|policy| policy.as_str()),
        target_dir: cli.target_dir.as_deref(),
    };
    let backend = backend(cli.backend.as_deref(), raw, file_path, &context, findings);
    warn_about_ignored_flags(cli, backend.as_ref().map(|b| b.name()), findings);

    if !findings.problems.is_empty() {
        return None;
    }
    Some(Config {
        worker_id: worker_id?,
        api_key: api_key?,
        web_socket_url: cli.web_socket_url.clone(),
        server_root_url: cli.server_root_url.clone(),
        session_sharing_server_url: Some(cli.session_sharing_server_url.clone())
            .filter(|v| !v.is_empty()),
        log_level: log_level?,
        log_format: match cli.log_format {
            CliLogFormat::Text => LogFormat::Text,
            CliLogFormat::Json => LogFormat::Json,
        },
        max_concurrent_tasks,
        idle_on_complete,
        cleanup,
        backend: backend?,
        health_listen,
        state_dir: state_dir?,
        drain_timeout,
        orphan_scan_interval,
    })
}

/// `--state-dir` / `state_dir`: `~` expanded, absolute, default [`DEFAULT_STATE_DIR`]. Whether
/// it is usable is checked at start-up (it is created if missing).
fn state_dir(
    cli: &CliArgs,
    raw: &RawFile,
    env: EnvLookup<'_>,
    findings: &mut Findings,
) -> Option<PathBuf> {
    let (field, text) = match (&cli.state_dir, &raw.state_dir) {
        (Some(path), _) => ("--state-dir", path.display().to_string()),
        (None, Some(text)) => ("state_dir", text.clone()),
        (None, None) => return Some(PathBuf::from(DEFAULT_STATE_DIR)),
    };
    if text.is_empty() {
        findings.problem(format!(
            "invalid {field} \"\": expected an absolute directory path such as {DEFAULT_STATE_DIR}"
        ));
        return None;
    }
    let expanded = checks::expand_tilde(&text, env("HOME").as_deref());
    match checks::absolute(&expanded) {
        Ok(path) => Some(path),
        Err(reason) => {
            findings.problem(format!("invalid {field} {text:?}: {reason}"));
            None
        }
    }
}

fn worker_id(cli: &CliArgs, raw: &RawFile, findings: &mut Findings) -> Option<String> {
    let chosen = cli
        .worker_id
        .clone()
        .filter(|v| !v.is_empty())
        .or_else(|| raw.worker_id.clone().filter(|v| !v.is_empty()));
    match chosen {
        None => {
            findings.problem(
                "worker-id is required (via --worker-id flag or worker_id in the config file)",
            );
            None
        }
        Some(id) if id.starts_with("warp") => {
            findings.problem(format!(
                "invalid worker-id {id:?}: values starting with 'warp' are reserved and cannot \
                 be used"
            ));
            None
        }
        Some(id) => Some(id),
    }
}

fn api_key(cli: &CliArgs, env: EnvLookup<'_>, findings: &mut Findings) -> Option<ApiKey> {
    let key = cli
        .api_key
        .clone()
        .filter(|v| !v.is_empty())
        .or_else(|| env("WARP_API_KEY").filter(|v| !v.is_empty()));
    if key.is_none() {
        findings.problem("missing API key: pass --api-key or set the WARP_API_KEY variable");
    }
    key.map(ApiKey::new)
}

fn check_web_socket_url(raw: &str, findings: &mut Findings) {
    let parsed = url::Url::parse(raw);
    let ok = parsed
        .as_ref()
        .is_ok_and(|url| matches!(url.scheme(), "ws" | "wss") && url.host().is_some());
    if !ok {
        findings.problem(format!(
            "invalid --web-socket-url {raw:?}: expected a ws:// or wss:// URL"
        ));
    }
}

fn health_listen(cli: &CliArgs, raw: &RawFile, findings: &mut Findings) -> Option<SocketAddr> {
    let (field, text) = match (&cli.health_listen, &raw.health_listen) {
        (Some(text), _) => ("--health-listen", text),
        (None, Some(text)) => ("health_listen", text),
        (None, None) => return None,
    };
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            findings.problem(format!(
                "invalid {field} {text:?}: expected IP:PORT such as 127.0.0.1:8080 or [::]:8080"
            ));
            None
        }
    }
}

/// `--log-level` wins over the file's `log_level`; the default is info.
fn log_level(cli: &CliArgs, raw: &RawFile, findings: &mut Findings) -> Option<LogLevel> {
    if let Some(level) = cli.log_level {
        return Some(match level {
            CliLogLevel::Debug => LogLevel::Debug,
            CliLogLevel::Info => LogLevel::Info,
            CliLogLevel::Warn => LogLevel::Warn,
            CliLogLevel::Error => LogLevel::Error,
        });
    }
    match raw.log_level.as_deref().map(str::trim) {
        None => Some(LogLevel::Info),
        Some(text) => match text.to_ascii_lowercase().as_str() {
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warn" | "warning" => Some(LogLevel::Warn),
            "error" => Some(LogLevel::Error),
            _ => {
                findings.problem(format!(
                    "invalid log_level {text:?}: expected one of debug, info, warn, error"
                ));
                None
            }
        },
    }
}

/// `debug_log_capture` (rendered by newer Go charts): a mapping whose `enabled`, when present,
/// is a boolean. This worker does not capture debug logs yet, so a valid block is accepted with
/// one warning saying it is ignored.
fn debug_log_capture(raw: &RawFile, findings: &mut Findings) {
    use serde_norway::Value;
    let Some(value) = &raw.debug_log_capture else {
        return;
    };
    let Value::Mapping(block) = value else {
        if !value.is_null() {
            findings
                .problem("invalid debug_log_capture: expected a mapping such as {enabled: true}");
        }
        return;
    };
    if let Some(enabled) = block.get("enabled")
        && !enabled.is_bool()
    {
        findings.problem("invalid debug_log_capture.enabled: expected true or false");
        return;
    }
    findings.warn(
        "debug_log_capture is accepted for compatibility with the Go worker but not used by \
         this worker yet: no debug logs are captured or uploaded",
    );
}

/// Parses the CLI `-e` entries. Messages never include a value (it may be a secret).
fn cli_env(entries: &[String], env: EnvLookup<'_>, findings: &mut Findings) -> EnvList {
    let mut list = EnvList::new();
    for (index, entry) in entries.iter().enumerate() {
        let number = index + 1;
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        if entry.contains(',') {
            findings.problem(format!(
                "invalid --env entry #{number} (key {key:?}): contains a comma, which the Go \
                 worker split into separate entries; repeat -e for each variable, or set values \
                 containing commas in the config file's environment list"
            ));
            continue;
        }
        match parse_env_entry(entry, env) {
            Ok((key, value)) => list.push(key, value),
            Err(EnvEntryError::Empty) => {
                findings.problem(format!("invalid --env entry #{number}: empty value"));
            }
            Err(EnvEntryError::MissingKey(_)) => findings.problem(format!(
                "invalid --env entry #{number}: missing key before '=' (expected KEY=VALUE or KEY)"
            )),
            Err(EnvEntryError::WhitespaceInKey(_)) => findings.problem(format!(
                "invalid --env entry #{number}: key {key:?} contains whitespace"
            )),
        }
    }
    list
}

/// Picks the backend (CLI `--backend`, else the first block configured in the file in table
/// order, else the default) and validates its block. Reports more than one configured block,
/// and warns about null blocks and blocks that the CLI's choice makes the worker ignore.
fn backend(
    cli_backend: Option<&str>,
    raw: &mut RawFile,
    file_path: Option<&str>,
    context: &Context<'_>,
    findings: &mut Findings,
) -> Option<Backend> {
    let in_file = file_path.unwrap_or("the config file");
    let presence = |name: &str| {
        raw.blocks
            .iter()
            .find(|(block, _)| *block == name)
            .map(|(_, presence)| matches!(presence, Presence::Given(_)))
    };
    for name in BACKENDS
        .iter()
        .map(|e| e.name)
        .filter(|n| presence(n) == Some(false))
    {
        findings.warn(format!(
            "backend.{name} in {in_file} has no value, so it does not select the {name} \
             backend; write `{name}: {{}}` to select it with defaults"
        ));
    }
    let configured: Vec<&str> = BACKENDS
        .iter()
        .map(|e| e.name)
        .filter(|n| presence(n) == Some(true))
        .collect();
    if configured.len() > 1 {
        findings.problem(format!(
            "at most one backend may be configured (backend in {in_file} has: {})",
            configured.join(", ")
        ));
    }
    let name = match cli_backend.filter(|b| !b.is_empty()) {
        Some(from_cli) => {
            for other in configured.iter().filter(|b| **b != from_cli) {
                findings.warn(format!(
                    "backend.{other} in {in_file} is ignored because --backend {from_cli} was given"
                ));
            }
            from_cli
        }
        None => configured.first().copied().unwrap_or(DEFAULT_BACKEND),
    };
    let entry = entry(name).or_else(|| entry(DEFAULT_BACKEND))?;
    let block = raw
        .blocks
        .iter()
        .position(|(block, _)| *block == entry.name)
        .map(|index| raw.blocks.swap_remove(index).1)
        .and_then(|presence| match presence {
            Presence::Given(block) => Some(block),
            Presence::Null => None,
        });
    let before = findings.problems.len();
    let backend = (entry.build)(block, context, findings);
    (findings.problems.len() == before).then_some(backend)
}

/// Warns about each backend-specific flag given that the selected backend does not read.
fn warn_about_ignored_flags(cli: &CliArgs, backend: Option<&str>, findings: &mut Findings) {
    let Some(entry) = backend.and_then(entry) else {
        return;
    };
    let given = [
        ("--volumes", !cli.volumes.is_empty()),
        ("--pull-policy", cli.pull_policy.is_some()),
        ("--target-dir", cli.target_dir.is_some()),
    ];
    for (flag, _) in given.iter().filter(|(_, given)| *given) {
        if !entry.cli_flags.contains(flag) {
            findings.warn(format!("{flag} is ignored by the {} backend", entry.name));
        }
    }
}
