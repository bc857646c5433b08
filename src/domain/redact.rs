//! Masking secret values in text (process and container output, failure messages) before it
//! reaches a log line or the server. One rule for every backend.
//!
//! Output is usually handled line by line, so a multi-line secret (a PEM key, a JSON
//! credentials file) is masked whole *and* line by line: every line of it that is at least
//! [`MIN_REDACTED_LEN`] characters long (surrounding whitespace ignored) is itself a value to
//! mask. A shorter line (e.g. a closing `}`) is left alone, by the same rule as a short value.

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
    /// A redactor for `values` (short and duplicate values are ignored). A value spanning
    /// several lines also masks each of its lines that is long enough on its own.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .flat_map(|value| {
                let lines = value
                    .contains(['\n', '\r'])
                    .then(|| value.split(['\n', '\r']).map(str::trim))
                    .into_iter()
                    .flatten();
                std::iter::once(value).chain(lines)
            })
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

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\r\n  bJ1mQ0xXk2pZ  \nAB\n-----END PRIVATE KEY-----\n";

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

    #[test]
    fn multi_line_values_are_masked_whole_and_line_by_line() {
        // (secrets, text, expected)
        let cases: &[(&[&str], &str, &str)] = &[
            // The whole value in one piece of text: one mask.
            (&[PEM], &format!("key={PEM}end"), "key=***end"),
            // Each line on its own, as output arrives line by line.
            (&[PEM], "-----BEGIN PRIVATE KEY-----", "***"),
            (&[PEM], "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "***"),
            // `\r\n` endings and indentation do not hide a line.
            (
                &[PEM],
                "got MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\r",
                "got ***\r",
            ),
            (&[PEM], "    bJ1mQ0xXk2pZ", "    ***"),
            // A line shorter than the minimum is not masked (same rule as short values).
            (&[PEM], "AB", "AB"),
            // A single-line value still needs no newline around it.
            (&["ghp_single_line"], "x ghp_single_line y", "x *** y"),
            // A value whose only long line is the whole value.
            (&["\nlong-enough\n"], "long-enough", "***"),
            // A multi-line value made of short lines masks only as a whole.
            (&["ab\ncd\nef"], "ab\ncd\nef and ab", "*** and ab"),
        ];
        for (secrets, text, expected) in cases {
            let redactor = Redactor::new(secrets.iter().copied());
            assert_eq!(
                redactor.redact(text),
                *expected,
                "secrets {secrets:?}, text {text:?}"
            );
        }
    }

    #[test]
    fn a_multi_line_secret_never_survives_line_wise_redaction() {
        let redactor = Redactor::new([PEM]);
        let output = format!("before\n{PEM}after");
        let masked: Vec<String> = output.lines().map(|l| redactor.redact(l)).collect();
        for line in PEM
            .lines()
            .map(str::trim)
            .filter(|l| l.len() >= MIN_REDACTED_LEN)
        {
            assert!(
                masked.iter().all(|m| !m.contains(line)),
                "{line:?} survived in {masked:?}"
            );
        }
        assert_eq!(
            masked.iter().filter(|m| *m == MASK).count(),
            3,
            "{masked:?}"
        );
    }
}
