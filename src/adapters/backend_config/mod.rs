//! The shape every backend's config module (`adapters/<name>/config.rs`) provides, and the
//! tools they share: [`BackendSection`] (name, the CLI flags it reads, its raw YAML block,
//! validation into its config struct, its effective-config section), the [`Context`] of
//! already-validated global settings, the [`Findings`] collector, and YAML/field helpers.
//!
//! `app::config` drives every backend through one table of [`BackendSection`]s and knows no
//! backend field; the backends know nothing of clap or of the rest of the file.

pub(crate) mod checks;
pub(crate) mod duration;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::env::EnvList;
use duration::parse_go_duration;

/// What replaces a secret in the effective config.
pub const REDACTED: &str = "<redacted>";

/// The env seam: looks a variable up (tests pass a map).
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Unknown keys of one mapping, with their (ignored) values.
pub(crate) type Unknown = BTreeMap<String, serde_norway::Value>;

/// Problems (fatal) and warnings (to log) found while validating.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// Each names the field and what was expected.
    pub problems: Vec<String>,
    /// Each says what was ignored and why.
    pub warnings: Vec<String>,
}

impl Findings {
    /// Records a fatal problem.
    pub(crate) fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(message.into());
    }

    /// Records a warning.
    pub(crate) fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }
}

/// What every backend section is built from besides its raw block: global settings already
/// validated by `app::config`, and the backend-specific CLI flags as plain values.
pub(crate) struct Context<'a> {
    /// This worker's id.
    pub worker_id: String,
    /// False under `--no-cleanup` / `cleanup: false`.
    pub cleanup: bool,
    /// The server root URL (`--server-root-url`).
    pub server_root_url: &'a str,
    /// The parsed `-e` entries, in order (not yet de-duplicated).
    pub cli_env: &'a EnvList,
    /// Host environment lookups (`HOME`, inherited env values).
    pub env: EnvLookup<'a>,
    /// `-v` values (Docker).
    pub volumes: &'a [String],
    /// `--pull-policy` in its config spelling (Docker).
    pub pull_policy: Option<&'static str>,
    /// `--target-dir` (Direct).
    pub target_dir: Option<&'a Path>,
}

/// One backend's config: implemented by its validated config struct in
/// `adapters/<name>/config.rs`, and listed once in `app::config`'s backend table.
pub(crate) trait BackendSection: Sized {
    /// The `--backend` value and the YAML key under `backend:`.
    const NAME: &'static str;
    /// The backend-specific CLI flags this backend reads (e.g. `--volumes`); any other
    /// backend-specific flag given on the command line is warned about as ignored.
    const CLI_FLAGS: &'static [&'static str];
    /// The raw `backend.<name>` block, mirroring the YAML; unknown keys are collected, not
    /// rejected by serde, so that all of them are reported at once.
    type Raw: DeserializeOwned + Default + 'static;

    /// The block's unknown keys as paths relative to the block (`bogus`,
    /// `environment[0].vaule`).
    fn unknown_keys(raw: &Self::Raw) -> Vec<String>;

    /// For a key this backend no longer accepts: where its setting now belongs.
    fn retired_key(_key: &str) -> Option<String> {
        None
    }

    /// Validates the raw block (merged with the CLI through `context`), recording every
    /// problem in `findings` with its field name. The value returned when problems were
    /// recorded is discarded.
    fn parse(raw: Self::Raw, context: &Context<'_>, findings: &mut Findings) -> Self;

    /// The effective-config section (secrets redacted), rendered under `backend.<name>`.
    fn effective(&self) -> serde_norway::Value;
}

/// Renders a serialisable section as a YAML value (key order kept).
pub(crate) fn to_yaml(section: &impl Serialize) -> serde_norway::Value {
    serde_norway::to_value(section).unwrap_or_else(|err| {
        serde_norway::Value::String(format!("failed to render the section: {err}"))
    })
}

/// One `environment` entry: `{name, value?}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawEnvEntry {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub value: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// The unknown keys of a block and of its `environment` entries, relative to the block.
pub(crate) fn unknown_with_env(unknown: &Unknown, environment: &[RawEnvEntry]) -> Vec<String> {
    let mut out: Vec<String> = unknown.keys().cloned().collect();
    for (index, entry) in environment.iter().enumerate() {
        out.extend(
            entry
                .unknown
                .keys()
                .map(|key| format!("environment[{index}].{key}")),
        );
    }
    out
}

/// `{name: KEY, value: <redacted>}`.
#[derive(Serialize)]
pub(crate) struct RedactedEnv<'a> {
    name: &'a str,
    value: &'static str,
}

/// Every key of `env` with its value redacted.
pub(crate) fn redacted(env: &EnvList) -> Vec<RedactedEnv<'_>> {
    env.keys()
        .map(|name| RedactedEnv {
            name,
            value: REDACTED,
        })
        .collect()
}

/// The file's `environment` list, then the CLI `-e` entries (CLI wins), de-duplicated.
pub(crate) fn merged_env(
    section: &str,
    entries: &[RawEnvEntry],
    context: &Context<'_>,
    findings: &mut Findings,
) -> EnvList {
    let mut list = EnvList::new();
    for (index, entry) in entries.iter().enumerate() {
        let field = format!("{section}.environment[{index}].name");
        match entry.name.as_deref() {
            None | Some("") => findings.problem(format!("{field} is required")),
            Some(name) if name.contains([' ', '\t']) => {
                findings.problem(format!(
                    "invalid {field} {name:?}: must not contain whitespace"
                ));
            }
            Some(name) => {
                let value = entry.value.clone().or_else(|| (context.env)(name));
                list.push(name, value.unwrap_or_default());
            }
        }
    }
    list.overlay(context.cli_env);
    list.dedup_last_wins()
}

/// A non-negative grace period, or the default when unset.
pub(crate) fn grace(
    field: &str,
    text: Option<&str>,
    default: Duration,
    findings: &mut Findings,
) -> Duration {
    let Some(text) = text else { return default };
    match parse_go_duration(text) {
        Ok(parsed) if parsed.negative => {
            findings.problem(format!("invalid {field} {text:?}: must not be negative"));
            default
        }
        Ok(parsed) => parsed.magnitude,
        Err(_) => {
            findings.problem(bad_duration(field, text));
            default
        }
    }
}

/// The message for a value that is not a Go duration.
pub(crate) fn bad_duration(field: &str, text: &str) -> String {
    format!("invalid {field} {text:?}: expected a Go duration such as 30s or 1m30s")
}

/// A scalar read as raw text, so `10m`, `0` and `30` all work unquoted.
pub(crate) fn scalar_text<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let value = Option::<serde_norway::Value>::deserialize(deserializer)?;
    value.map(scalar_to_text::<D::Error>).transpose()
}

/// A string-to-string map whose values may be any scalar (`true`, `3`), read as text.
pub(crate) fn text_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = Option::<BTreeMap<String, serde_norway::Value>>::deserialize(deserializer)?;
    map.unwrap_or_default()
        .into_iter()
        .map(|(key, value)| Ok((key, scalar_to_text::<D::Error>(value)?)))
        .collect()
}

fn scalar_to_text<E: serde::de::Error>(value: serde_norway::Value) -> Result<String, E> {
    match value {
        serde_norway::Value::String(text) => Ok(text),
        serde_norway::Value::Number(number) => Ok(number.to_string()),
        serde_norway::Value::Bool(flag) => Ok(flag.to_string()),
        _ => Err(E::custom("expected a scalar (string, number or boolean)")),
    }
}
