//! The worker's local state directory (`state_dir`): who is alive, and what each instance has
//! claimed and not yet reported.
//!
//! Every worker process is an *instance* with a random id. It holds an exclusive `flock` on
//! `<state_dir>/workers/<worker id>/<instance id>/lock` for its whole life, so an instance whose
//! lock can be taken is dead (the kernel drops a lock when its process dies, even under
//! SIGKILL). Only a dead instance's resources may be cleaned up or adopted, and taking its lock
//! is how one instance claims that job, so two starting instances never both do it.
//!
//! Next to the lock, `tasks/` is the instance's crash journal: one small JSON file per task that
//! was claimed and whose terminal report has not been written to the socket yet, with the
//! process groups and the workspace the Direct backend made for it. Files are written to a
//! temporary name, fsync'd, renamed and the directory fsync'd, so after a crash each is either
//! the old or the new version. The journal holds at most one file per running task (plus those
//! whose terminal report is still queued), each a few hundred bytes.
//!
//! All calls are blocking and short (a few small writes and fsyncs); they run on the caller's
//! thread so that the order of journal writes follows the order of events.

mod journal;
mod process;

pub use journal::{GroupRecord, JournalEntry, TerminalRecord};
pub use process::{kill_recorded_group, start_ticks};

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use nix::fcntl::{Flock, FlockArg};

/// The default `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/oz-agent-worker";

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A directory or the lock file could not be created or locked.
    #[error("state_dir {}: cannot {what}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Whether an instance is alive, as seen from this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// This process.
    Mine,
    /// Another process holds its lock (it runs, or another instance is cleaning up after it).
    Live,
    /// Dead: this process now holds its lock (or it left no state at all).
    Dead,
}

/// This process's instance in the state directory: its lock, its journal, and the locks of
/// the dead instances it has claimed. Cheap to clone; clones share everything. Two handles are
/// equal when they are clones of one another.
#[derive(Clone)]
pub struct Instances {
    inner: Arc<Inner>,
}

struct Inner {
    /// `<state_dir>/workers/<worker id>`.
    worker_dir: PathBuf,
    instance_id: String,
    _lock: Flock<File>,
    /// Dead instances claimed by this process: their lock, held until [`Instances::release`].
    claimed: Mutex<HashMap<String, Flock<File>>>,
    /// Serialises read-modify-write of journal entries.
    journal: Mutex<()>,
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances")
            .field("worker_dir", &self.inner.worker_dir)
            .field("instance_id", &self.inner.instance_id)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Instances {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Instances {}

/// A fresh random instance id: 16 hex digits.
#[allow(
    clippy::disallowed_methods,
    reason = "the wall clock only mixes entropy into a random id, it times nothing"
)]
pub fn new_instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Mixing in the pid and the time keeps two processes started together apart even if their
    // generators were seeded alike.
    let mixed = fastrand::u64(..) ^ (u64::from(std::process::id()) << 32) ^ (nanos as u64);
    format!("{mixed:016x}")
}

impl Instances {
    /// Creates `<state_dir>/workers/<worker id>/` (mode 0700) and registers a new instance with
    /// a random id, holding its lock until the returned handle (and every clone) is dropped.
    ///
    /// # Errors
    /// [`StateError`] naming the directory and the failed step (not writable, not a
    /// directory, no `flock` support).
    pub fn open(state_dir: &Path, worker_id: &str) -> Result<Self, StateError> {
        let worker_dir = state_dir.join("workers").join(path_key(worker_id));
        let io_error = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { what, path, source }
        };
        private_dir(&worker_dir).map_err(io_error("create the directory", &worker_dir))?;
        let instance_id = new_instance_id();
        // Lock under a hidden name first, then rename into place: a scanner never sees the
        // instance directory before its lock is held.
        let staging = worker_dir.join(format!(".{instance_id}"));
        private_dir(&staging.join("tasks")).map_err(io_error("create the directory", &staging))?;
        let lock_path = staging.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error("create the lock file", &lock_path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| io_error("lock", &lock_path)(io::Error::from(errno)))?;
        let final_dir = worker_dir.join(&instance_id);
        fs::rename(&staging, &final_dir).map_err(io_error("register the instance", &final_dir))?;
        sync_dir(&worker_dir).map_err(io_error("sync", &worker_dir))?;
        Ok(Self {
            inner: Arc::new(Inner {
                worker_dir,
                instance_id,
                _lock: lock,
                claimed: Mutex::new(HashMap::new()),
                journal: Mutex::new(()),
            }),
        })
    }

    /// This instance's id (on every container and volume it creates).
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    fn instance_dir(&self, instance_id: &str) -> PathBuf {
        self.inner.worker_dir.join(path_key(instance_id))
    }

    fn tasks_dir(&self, instance_id: &str) -> PathBuf {
        self.instance_dir(instance_id).join("tasks")
    }

    /// Whether `instance_id` is alive. A dead instance is claimed by this call (its lock is
    /// taken and held until [`Instances::release`]), so no other instance acts on it meanwhile.
    pub fn liveness(&self, instance_id: &str) -> Liveness {
        if instance_id == self.inner.instance_id {
            return Liveness::Mine;
        }
        let mut claimed = self
            .inner
            .claimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if claimed.contains_key(instance_id) {
            return Liveness::Dead;
        }
        let lock_path = self.instance_dir(instance_id).join("lock");
        let file = match File::options().write(true).open(&lock_path) {
            Ok(file) => file,
            // No state: it was cleaned up already (or never lived on this host's state dir).
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Liveness::Dead,
            Err(e) => {
                tracing::warn!(instance_id, error = %e, "Cannot open another instance's lock; treating it as alive.");
                return Liveness::Live;
            }
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                claimed.insert(instance_id.to_owned(), lock);
                Liveness::Dead
            }
            Err(_) => Liveness::Live,
        }
    }

    /// Claims every dead instance of this worker id found in the state directory and returns
    /// the ids of all the instances this process holds claims on (including earlier claims).
    pub fn claim_dead(&self) -> Vec<String> {
        let entries = match fs::read_dir(&self.inner.worker_dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %self.inner.worker_dir.display(), error = %e, "Cannot scan the state directory.");
                return self.claimed();
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                remove_stale_staging(&entry.path());
                continue;
            }
            let _ = self.liveness(&name);
        }
        self.claimed()
    }

    /// Whether a live instance (this one included) journals `task_id`: it has taken the task
    /// over, whatever instance label the task's resources carry.
    pub fn journaled_by_live(&self, task_id: &str) -> bool {
        let Ok(entries) = fs::read_dir(&self.inner.worker_dir) else {
            return false;
        };
        let file = journal::file_name(task_id);
        entries.flatten().any(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            !name.starts_with('.')
                && entry.path().join("tasks").join(&file).exists()
                && self.liveness(&name) != Liveness::Dead
        })
    }

    /// The journal entry for `task_id` in a dead instance this process has claimed, if any.
    pub fn dead_entry(&self, task_id: &str) -> Option<JournalEntry> {
        let file = journal::file_name(task_id);
        self.claimed().into_iter().find_map(|dead| {
            journal::read(&self.tasks_dir(&dead).join(&file))
                .ok()
                .flatten()
        })
    }

    /// The dead instances this process holds claims on.
    pub fn claimed(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .inner
            .claimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// The journal of a claimed dead instance (unreadable entries are logged and skipped).
    pub fn journal_of(&self, instance_id: &str) -> Vec<JournalEntry> {
        journal::read_all(&self.tasks_dir(instance_id))
    }

    /// This instance's own journal.
    pub fn journal(&self) -> Vec<JournalEntry> {
        journal::read_all(&self.tasks_dir(&self.inner.instance_id))
    }

    /// Moves a dead instance's journal entry into this instance's journal (atomically), so that
    /// if this process dies too before reporting it, the next one still finds it.
    ///
    /// # Errors
    /// The rename's error.
    pub fn take_over(&self, from_instance: &str, task_id: &str) -> io::Result<()> {
        let from = self
            .tasks_dir(from_instance)
            .join(journal::file_name(task_id));
        let to_dir = self.tasks_dir(&self.inner.instance_id);
        fs::rename(&from, to_dir.join(journal::file_name(task_id)))?;
        sync_dir(&to_dir)?;
        sync_dir(&self.tasks_dir(from_instance))
    }

    /// Removes a claimed dead instance's directory and drops its lock. Its journal must have
    /// been taken over first; entries still there are lost.
    pub fn release(&self, instance_id: &str) {
        let lock = self
            .inner
            .claimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(instance_id);
        if lock.is_none() {
            return;
        }
        let dir = self.instance_dir(instance_id);
        if let Err(e) = fs::remove_dir_all(&dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "Cannot remove a dead instance's state.");
        }
        let _ = sync_dir(&self.inner.worker_dir);
        drop(lock);
    }

    /// Journals that `task_id` was claimed (durably, before `task_claimed` is queued).
    ///
    /// # Errors
    /// The write's error.
    pub fn record_claim(&self, task_id: &str) -> io::Result<()> {
        // No journal lock: this creates the task's entry, which nothing else touches before
        // it exists; holding the lock through the fsyncs would delay other tasks' records.
        journal::write(
            &self.tasks_dir(&self.inner.instance_id),
            &JournalEntry::new(task_id),
            true,
        )
    }

    /// Adds a process group (leader pid and its start time) to `task_id`'s entry, if the task
    /// is journaled (no fsync, see the body). At most `journal::MAX_GROUPS` are kept (the
    /// oldest are dropped: they belong to phases that are over).
    ///
    /// # Errors
    /// The write's error.
    pub fn record_group(&self, task_id: &str, group: GroupRecord) -> io::Result<()> {
        // No fsync: a process group does not outlive a power loss, and a process crash sees
        // the rename at once. Skipping it keeps the window between a spawn and its record (in
        // which a SIGKILL leaves the group unknown to the next worker) to microseconds.
        self.update(task_id, false, |entry| entry.push_group(group))
    }

    /// Marks that `task_id`'s `task_claimed` may have reached the server (it is about to be
    /// written), if the task is journaled (no fsync: a process crash sees the rename).
    ///
    /// # Errors
    /// The write's error.
    pub fn record_claim_sent(&self, task_id: &str) -> io::Result<()> {
        self.update(task_id, false, |entry| entry.claim_sent = true)
    }

    /// Records the terminal report queued for `task_id`, if the task is journaled (durably: it
    /// is what a later instance sends when this one dies before the server confirmed it).
    ///
    /// # Errors
    /// The write's error.
    pub fn record_terminal(&self, task_id: &str, terminal: TerminalRecord) -> io::Result<()> {
        self.update(task_id, true, |entry| entry.terminal = Some(terminal))
    }

    /// Records the per-task workspace of `task_id`, if the task is journaled.
    ///
    /// # Errors
    /// The write's error.
    pub fn record_workspace(&self, task_id: &str, workspace: &Path) -> io::Result<()> {
        self.update(task_id, true, |entry| {
            entry.workspace = Some(workspace.to_path_buf());
        })
    }

    /// Drops `task_id` from the journal (once the server confirmed reading its terminal
    /// report). No fsync: the unlink is done the moment it returns, which is what a process
    /// crash can see; a power loss that brings the entry back only makes the report repeat.
    pub fn forget(&self, task_id: &str) {
        // No journal lock: nothing updates an entry once its terminal report is confirmed, and
        // waiting here for another task's fsync would only slow the connection down.
        let dir = self.tasks_dir(&self.inner.instance_id);
        match fs::remove_file(dir.join(journal::file_name(task_id))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(task_id, error = %e, "Cannot remove a task from the crash journal.");
            }
        }
    }

    fn update(
        &self,
        task_id: &str,
        durable: bool,
        change: impl FnOnce(&mut JournalEntry),
    ) -> io::Result<()> {
        let _guard = self.journal_guard();
        let dir = self.tasks_dir(&self.inner.instance_id);
        let Some(mut entry) = journal::read(&dir.join(journal::file_name(task_id)))? else {
            return Ok(());
        };
        change(&mut entry);
        journal::write(&dir, &entry, durable)
    }

    fn journal_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .journal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A hidden staging directory left by an instance that died between locking and renaming.
fn remove_stale_staging(path: &Path) {
    let lock_path = path.join("lock");
    let Ok(file) = File::options().write(true).open(&lock_path) else {
        return;
    };
    if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        let _ = fs::remove_dir_all(path);
        drop(lock);
    }
}

/// One path component for any id: ASCII letters, digits, `-`, `_` and `.` stay (a leading `.`
/// does not); everything else becomes `%XX`.
pub fn path_key(id: &str) -> String {
    let mut key = String::with_capacity(id.len());
    for (i, byte) in id.bytes().enumerate() {
        let keep =
            byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || (byte == b'.' && i > 0);
        if keep {
            key.push(char::from(byte));
        } else {
            key.push_str(&format!("%{byte:02X}"));
        }
    }
    if key.is_empty() {
        key.push_str("%00");
    }
    key
}

fn private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests;
