//! Masking secret values in text (process and container output, failure messages) before it
//! reaches a log line or the server. One rule for every backend.

use crate::domain::env::EnvList;

/// Values shorter than this are not masked: `0`, `1`, `yes` are flags, not secrets, and masking
/// them would mangle every number in the output (exit codes included).
pub const MIN_REDACTED_LEN: usize = 4;
/// What a masked value is replaced with.
pub const MASK: &str = "***";
/// Injected variables whose values are not secret.
pub const PUBLIC_KEYS: [&str; 4] = [
    "TASK_ID",
    "GIT_TERMINAL_PROMPT",
    "GH_PROMPT_DISABLED",
    "WARP_SERVER_ROOT_URL",
];

/// Replaces known secret values with [`MASK`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    /// Longest first, so a value containing another is masked whole.
    values: Vec<String>,
}

impl Redactor {
    /// A redactor for `values` (short and duplicate values are ignored).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|v| v.chars().count() >= MIN_REDACTED_LEN)
            .map(str::to_owned)
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self { values }
    }

    /// A redactor for every value of `env` except the [`PUBLIC_KEYS`].
    pub fn for_env(env: &EnvList) -> Self {
        Self::new(
            env.iter()
                .filter(|(key, _)| !PUBLIC_KEYS.contains(key))
                .map(|(_, value)| value),
        )
    }

    /// `text` with every known value masked.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), MASK);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_long_values_whole_and_leaves_short_and_public_ones() {
        let mut env = EnvList::new();
        env.push("TASK_ID", "task-123456");
        env.push("TOKEN", "ghp_secret");
        env.push("LONGER", "ghp_secret_longer");
        env.push("FLAG", "1");
        let r = Redactor::for_env(&env);
        assert_eq!(
            r.redact("task-123456 ghp_secret_longer ghp_secret exit 1"),
            "task-123456 *** *** exit 1"
        );
        assert_eq!(Redactor::new(["abc"]).redact("abc"), "abc");
    }
}
