//! The environment a task runs with: the variables the core injects (as the Go worker does), operator
//! entries (`-e`, YAML `environment`) and the last-entry-wins merge every backend applies.

use crate::domain::task::Assignment;

/// An ordered list of `KEY=VALUE` pairs. Later entries win once de-duplicated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvList(Vec<(String, String)>);

impl EnvList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one pair.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.push((key.into(), value.into()));
    }

    /// Appends every pair of `other`, after this list's own, so `other` wins on conflicts.
    pub fn overlay(&mut self, other: &EnvList) {
        self.0.extend(other.0.iter().cloned());
    }

    /// Removes duplicates, keeping the last value of each key at the position of its first
    /// occurrence, so the order stays stable.
    pub fn dedup_last_wins(&self) -> EnvList {
        let mut out: Vec<(String, String)> = Vec::with_capacity(self.0.len());
        for (key, value) in &self.0 {
            match out.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1.clone_from(value),
                None => out.push((key.clone(), value.clone())),
            }
        }
        EnvList(out)
    }

    /// The value of `key`, the last one when duplicated.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The keys in order (safe to log: values may be secrets).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// `KEY=VALUE` strings, in order.
    pub fn to_kv_strings(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, String)> for EnvList {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// The variables the core injects for every task, in order: `TASK_ID`, `GIT_TERMINAL_PROMPT`,
/// `GH_PROMPT_DISABLED`, `WARP_SERVER_ROOT_URL` (when non-empty), then the assignment's
/// `env_vars` (sorted by key, so the order is deterministic). Not de-duplicated: callers overlay
/// operator env and then call [`EnvList::dedup_last_wins`].
///
/// The worker's own API key is never added here.
pub fn task_env(assignment: &Assignment, server_root_url: &str) -> EnvList {
    let mut env = EnvList::new();
    env.push("TASK_ID", assignment.task.id.as_str());
    env.push("GIT_TERMINAL_PROMPT", "0");
    env.push("GH_PROMPT_DISABLED", "1");
    if !server_root_url.is_empty() {
        env.push("WARP_SERVER_ROOT_URL", server_root_url);
    }
    for (key, value) in &assignment.env_vars {
        env.push(key.as_str(), value.as_str());
    }
    env
}

/// Why an operator env entry (`-e` or YAML `environment`) is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvEntryError {
    /// `-e ""`.
    #[error("invalid --env flag: empty value")]
    Empty,
    /// `-e =x`.
    #[error("invalid --env flag: missing key in {0:?}")]
    MissingKey(String),
    /// `-e "A B=x"`.
    #[error("invalid --env flag: key contains whitespace in {0:?}")]
    WhitespaceInKey(String),
}

/// Parses one `-e` entry: `KEY=VALUE` (value may be empty or contain `=`), or a bare `KEY`
/// whose value is looked up with `host` (the empty string when unset).
///
/// # Errors
/// [`EnvEntryError`] for an empty entry, an empty key, or a key with a space or tab.
pub fn parse_env_entry(
    entry: &str,
    host: impl Fn(&str) -> Option<String>,
) -> Result<(String, String), EnvEntryError> {
    if entry.is_empty() {
        return Err(EnvEntryError::Empty);
    }
    let (key, value) = match entry.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (entry, None),
    };
    if key.is_empty() {
        return Err(EnvEntryError::MissingKey(entry.to_owned()));
    }
    if key.contains([' ', '\t']) {
        return Err(EnvEntryError::WhitespaceInKey(entry.to_owned()));
    }
    let value = match value {
        Some(v) => v.to_owned(),
        None => host(key).unwrap_or_default(),
    };
    Ok((key.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::task::TaskId;

    #[test]
    fn injected_env_order_and_server_values_after_core_values() {
        let mut a = Assignment::new(TaskId::parse("run-1").unwrap());
        a.task.id = "task-1".into();
        a.env_vars.insert("WARP_API_KEY".into(), "task-key".into());
        a.env_vars.insert("GIT_TERMINAL_PROMPT".into(), "1".into());
        let env = task_env(&a, "https://app.warp.dev");
        assert_eq!(
            env.to_kv_strings(),
            [
                "TASK_ID=task-1",
                "GIT_TERMINAL_PROMPT=0",
                "GH_PROMPT_DISABLED=1",
                "WARP_SERVER_ROOT_URL=https://app.warp.dev",
                "GIT_TERMINAL_PROMPT=1",
                "WARP_API_KEY=task-key",
            ]
        );
        assert_eq!(
            env.dedup_last_wins().to_kv_strings(),
            [
                "TASK_ID=task-1",
                "GIT_TERMINAL_PROMPT=1",
                "GH_PROMPT_DISABLED=1",
                "WARP_SERVER_ROOT_URL=https://app.warp.dev",
                "WARP_API_KEY=task-key",
            ]
        );
    }

    #[test]
    fn empty_server_root_url_is_not_injected() {
        let a = Assignment::new(TaskId::parse("t").unwrap());
        assert_eq!(task_env(&a, "").get("WARP_SERVER_ROOT_URL"), None);
    }

    #[test]
    fn operator_env_overlays_and_wins() {
        let mut base = EnvList::new();
        base.push("A", "1");
        base.push("B", "2");
        let mut operator = EnvList::new();
        operator.push("A", "9");
        base.overlay(&operator);
        assert_eq!(base.dedup_last_wins().to_kv_strings(), ["A=9", "B=2"]);
    }

    #[test]
    fn env_entry_rules() {
        let host = |k: &str| (k == "HOSTVAR").then(|| "from-host".to_owned());
        let ok = |e: &str| parse_env_entry(e, host).unwrap();
        assert_eq!(ok("A=b"), ("A".into(), "b".into()));
        assert_eq!(ok("A="), ("A".into(), String::new()));
        assert_eq!(ok("A=b=c"), ("A".into(), "b=c".into()));
        assert_eq!(ok("HOSTVAR"), ("HOSTVAR".into(), "from-host".into()));
        assert_eq!(ok("UNSET_VAR"), ("UNSET_VAR".into(), String::new()));
        assert_eq!(parse_env_entry("", host), Err(EnvEntryError::Empty));
        assert_eq!(
            parse_env_entry("=x", host),
            Err(EnvEntryError::MissingKey("=x".into()))
        );
        assert_eq!(
            parse_env_entry("A B=x", host),
            Err(EnvEntryError::WhitespaceInKey("A B=x".into()))
        );
        assert_eq!(
            parse_env_entry("A\tB", host).unwrap_err().to_string(),
            "invalid --env flag: key contains whitespace in \"A\\tB\""
        );
    }
}
