//! The raw YAML config file (same keys as the Go worker's): serde structs that mirror the file exactly, strict
//! about keys. Each struct captures keys it does not know in `unknown` (instead of
//! `deny_unknown_fields`, which stops at the first), so every unknown key is reported at once,
//! with its path, the file and, for block-style YAML, its line. The raw sub-trees
//! `pod_template` and `preflight_resources` are kept verbatim (camelCase keys intact).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::backends::{BACKENDS, Presence, entry};
use crate::adapters::backend_config::{Unknown, scalar_text};

/// The top level of the file. Backend blocks are read separately, each by its own table entry
/// (see [`super::backends`]), into `blocks`.
#[derive(Default, Deserialize)]
pub(crate) struct RawFile {
    pub worker_id: Option<String>,
    pub cleanup: Option<bool>,
    pub max_concurrent_tasks: Option<i64>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub idle_on_complete: Option<String>,
    pub health_listen: Option<String>,
    /// `log_level`: used when `--log-level` is absent.
    pub log_level: Option<String>,
    /// `debug_log_capture`: newer Go workers' block, kept raw and checked in validation.
    pub debug_log_capture: Option<serde_norway::Value>,
    pub state_dir: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub drain_timeout: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub orphan_scan_interval: Option<String>,
    /// `backend:` as read here only for its keys; each block's content is in `blocks`.
    backend: Option<BTreeMap<String, serde_norway::Value>>,
    #[serde(flatten)]
    pub unknown: Unknown,
    /// Each backend block present in the file, by backend name.
    #[serde(skip)]
    pub blocks: Vec<(&'static str, Presence)>,
}

/// Parses the file's text. Hard errors (YAML syntax, a wrong type, an empty document) come back
/// as one message; unknown keys come back as a list so that validation can report them with
/// everything else.
pub(crate) fn parse(path: &Path, text: &str) -> Result<(RawFile, Vec<String>), String> {
    let shown = path.display();
    let document: serde_norway::Value = serde_norway::from_str(text)
        .map_err(|err| format!("failed to parse config file {shown}: {err}"))?;
    match document {
        serde_norway::Value::Null => {
            return Err(format!(
                "failed to parse config file {shown}: the file is empty (or only comments); \
                 expected a mapping with keys such as worker_id and backend"
            ));
        }
        serde_norway::Value::Mapping(_) => {}
        _ => {
            return Err(format!(
                "failed to parse config file {shown}: expected a mapping at the top level"
            ));
        }
    }
    let failed = |err: serde_norway::Error| format!("failed to parse config file {shown}: {err}");
    let mut raw: RawFile = serde_norway::from_str(text).map_err(failed)?;
    for entry in &BACKENDS {
        if let Some(presence) = (entry.read)(text).map_err(failed)? {
            raw.blocks.push((entry.name, presence));
        }
    }
    let problems = unknown_keys(&raw)
        .into_iter()
        .map(|(parent, key)| {
            let full = if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            };
            let at = match locate_key(text, &full) {
                Some(line) => format!("{shown}:{line}"),
                None => shown.to_string(),
            };
            match retired_hint(&parent, &key) {
                Some(hint) => format!("{at}: {full} is no longer supported: {hint}"),
                None => format!("{at}: unknown key {full:?}"),
            }
        })
        .collect();
    Ok((raw, problems))
}

/// Where a retired key's setting now belongs, when `key` is one directly under a backend block.
fn retired_hint(parent: &str, key: &str) -> Option<String> {
    let name = parent.strip_prefix("backend.")?;
    (entry(name)?.retired_key)(key)
}

/// Every unknown key as `(parent path, key)`, in file-structure order.
fn unknown_keys(raw: &RawFile) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = raw
        .unknown
        .keys()
        .map(|key| (String::new(), key.clone()))
        .collect();
    let Some(backends) = &raw.backend else {
        return out;
    };
    out.extend(
        backends
            .keys()
            .filter(|key| entry(key).is_none())
            .map(|key| ("backend".to_owned(), key.clone())),
    );
    for (name, presence) in &raw.blocks {
        let (Some(entry), Presence::Given(block)) = (entry(name), presence) else {
            continue;
        };
        for relative in (entry.unknown_keys)(block) {
            // `environment[0].vaule` → parent `backend.docker.environment[0]`, key `vaule`.
            let full = format!("backend.{name}.{relative}");
            let (parent, key) = full.rsplit_once('.').unwrap_or(("", &full));
            out.push((parent.to_owned(), key.to_owned()));
        }
    }
    out
}

/// The 1-based line of the key at dotted `path` (list indices like `[0]` are skipped), for
/// block-style YAML. `None` when it cannot be told (flow style, odd layout).
pub(crate) fn locate_key(text: &str, path: &str) -> Option<usize> {
    let wanted: Vec<&str> = path
        .split('.')
        .map(|segment| segment.split('[').next().unwrap_or(segment))
        .collect();
    let lines: Vec<Option<(usize, &str)>> = text.lines().map(key_of_line).collect();
    'candidates: for (index, line) in lines.iter().enumerate() {
        let Some((mut indent, key)) = *line else {
            continue;
        };
        if Some(&key) != wanted.last() {
            continue;
        }
        // Walk up through ancestors: each is the nearest earlier line with a smaller key indent.
        let mut depth = wanted.len() - 1;
        for earlier in lines[..index].iter().rev() {
            let Some((parent_indent, parent_key)) = *earlier else {
                continue;
            };
            if parent_indent >= indent {
                continue;
            }
            if depth == 0 || wanted[depth - 1] != parent_key {
                continue 'candidates;
            }
            depth -= 1;
            indent = parent_indent;
        }
        if depth == 0 {
            return Some(index + 1);
        }
    }
    None
}

/// The key on a block-YAML line and the column it starts at (after any `- ` list markers).
fn key_of_line(line: &str) -> Option<(usize, &str)> {
    let mut column = line.len() - line.trim_start_matches(' ').len();
    let mut rest = &line[column..];
    while let Some(after) = rest.strip_prefix("- ") {
        let trimmed = after.trim_start_matches(' ');
        column += rest.len() - trimmed.len();
        rest = trimmed;
    }
    if rest.starts_with('#') {
        return None;
    }
    let (key, _) = rest.split_once(':')?;
    let key = key.trim_end().trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty() && !key.contains([' ', '{', '['])).then_some((column, key))
}
