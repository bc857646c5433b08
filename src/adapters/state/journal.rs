//! The crash journal's files: one JSON document per claimed-but-unreported task, written
//! atomically (temporary file, fsync, rename, directory fsync).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{path_key, sync_dir};

/// The most process groups one entry keeps (setup, agent and teardown run one after another).
pub(crate) const MAX_GROUPS: usize = 4;

/// A process group the Direct backend started for a task: its leader's pid (= the group id)
/// and the leader's start time, so a later instance kills it only if it is still that process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The process group id (the leader's pid).
    pub pgid: i32,
    /// The leader's start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
}

/// One journaled task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The run.
    pub task_id: String,
    /// True once its `task_claimed` was written to the socket. A claim that never left the
    /// worker was never seen by the server, which offers the run again: nothing to report.
    #[serde(default)]
    pub claim_sent: bool,
    /// Process groups started for it (Direct backend).
    #[serde(default)]
    pub groups: Vec<GroupRecord>,
    /// Its per-task workspace (Direct backend; never a shared target directory).
    #[serde(default)]
    pub workspace: Option<PathBuf>,
    /// Its terminal report, once queued: a later instance sends exactly this report again when
    /// the server never confirmed reading it.
    #[serde(default)]
    pub terminal: Option<TerminalRecord>,
}

/// A terminal report as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TerminalRecord {
    /// `task_completed`.
    Completed {
        /// The message.
        message: String,
        /// True for a run the user cancelled.
        cancelled: bool,
    },
    /// `task_failed`.
    Failed {
        /// The message.
        message: String,
        /// The wire spelling of the failure reason.
        failure_reason: String,
        /// The exit code, when there is one.
        exit_code: Option<i32>,
    },
}

impl JournalEntry {
    /// A fresh entry for `task_id`.
    pub fn new(task_id: &str) -> Self {
        Self {
            task_id: task_id.to_owned(),
            claim_sent: false,
            groups: Vec::new(),
            workspace: None,
            terminal: None,
        }
    }

    pub(crate) fn push_group(&mut self, group: GroupRecord) {
        self.groups.push(group);
        if self.groups.len() > MAX_GROUPS {
            self.groups.remove(0);
        }
    }
}

/// The file name of `task_id`'s entry.
pub(crate) fn file_name(task_id: &str) -> String {
    format!("{}.json", path_key(task_id))
}

/// Writes `entry` into `dir` atomically; `durable` adds the fsyncs that make it survive a
/// power loss (a process crash never loses a completed rename).
pub(crate) fn write(dir: &Path, entry: &JournalEntry, durable: bool) -> io::Result<()> {
    let name = file_name(&entry.task_id);
    let temp = dir.join(format!(".{name}.tmp"));
    let text = serde_json::to_vec(entry).map_err(io::Error::other)?;
    {
        let mut file = File::create(&temp)?;
        file.write_all(&text)?;
        if durable {
            file.sync_all()?;
        }
    }
    fs::rename(&temp, dir.join(&name))?;
    if durable { sync_dir(dir) } else { Ok(()) }
}

/// Reads one entry; `None` when the file does not exist.
pub(crate) fn read(path: &Path) -> io::Result<Option<JournalEntry>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every readable entry of `dir` (temporary files are ignored; unreadable ones are logged).
pub(crate) fn read_all(dir: &Path) -> Vec<JournalEntry> {
    let Ok(listing) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries = Vec::new();
    for file in listing.flatten() {
        let name = file.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match read(&file.path()) {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(file = %file.path().display(), error = %e, "Skipping an unreadable crash-journal entry.");
            }
        }
    }
    entries.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    entries
}
