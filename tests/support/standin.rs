//! Helpers for tests that run `scripts/oz-standin` as the `oz` CLI: its path, its report file,
//! and whether a process it reported is still alive.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a test waits for a real process to reach a state before failing.
pub(crate) const PROCESS_BOUND: Duration = Duration::from_secs(30);

/// The stand-in `oz` script in this repository.
pub(crate) fn standin_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/oz-standin")
}

/// The lines of a stand-in report file (empty when it does not exist yet).
pub(crate) fn report_lines(report: &Path) -> Vec<String> {
    std::fs::read_to_string(report)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The value after `<key>: ` on the last report line with that key.
pub(crate) fn report_value(report: &Path, key: &str) -> Option<String> {
    let prefix = format!("{key}: ");
    report_lines(report)
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
}

/// Every `pid:` and `child:` the report names.
pub(crate) fn reported_pids(report: &Path) -> Vec<i32> {
    report_lines(report)
        .iter()
        .filter_map(|line| {
            line.strip_prefix("pid: ")
                .or_else(|| line.strip_prefix("child: "))
        })
        .filter_map(|pid| pid.trim().parse().ok())
        .collect()
}

/// The `show NAME=value` entries of the report.
pub(crate) fn shown(report: &Path, name: &str) -> Option<String> {
    let prefix = format!("show {name}=");
    report_lines(report)
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
}

/// The env var names the stand-in saw on its last run.
pub(crate) fn seen_env_names(report: &Path) -> Vec<String> {
    report_value(report, "env")
        .map(|names| names.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Waits (polling, bounded by [`PROCESS_BOUND`]) until the report has a `pid:` line: the
/// stand-in is then running with its traps installed.
///
/// # Panics
/// When the bound passes first.
pub(crate) async fn wait_for_pid(report: &Path) -> i32 {
    let what = format!("the stand-in to report its pid in {}", report.display());
    crate::support::eventually_some(&what, PROCESS_BOUND, || async {
        report_value(report, "pid").and_then(|p| p.parse().ok())
    })
    .await
}

/// True while `pid` exists and is not a zombie.
pub(crate) fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits (bounded) until none of `pids` is alive; returns the survivors.
pub(crate) async fn wait_all_dead(pids: &[i32]) -> Vec<i32> {
    // A survivor is reported by the caller, with its pid, rather than as a timeout here.
    crate::support::poll_until(Duration::from_secs(5), || async {
        !pids.iter().any(|pid| alive(*pid))
    })
    .await;
    pids.iter().copied().filter(|pid| alive(*pid)).collect()
}
