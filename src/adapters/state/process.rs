//! Process identity for the crash journal: a pid is reused by the kernel, so a journaled
//! process group is killed only while its leader is still the process that was recorded, known
//! by its start time in `/proc/<pid>/stat`.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::journal::GroupRecord;

/// The start time of process `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22), or
/// `None` when it does not exist (or `/proc` is unavailable).
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields resume after the
    // last ')'. Field 3 is then the first one, so field 22 is the 20th.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// SIGKILLs the recorded group when its leader is still the recorded process. Returns true when
/// it sent the signal. A leader that has exited while the rest of its group lives on cannot be
/// told apart from a reused id, so such leftovers are left alone (the Direct backend kills the
/// rest of a group whenever its leader exits, so only a worker crash at that instant leaves one).
pub fn kill_recorded_group(group: GroupRecord) -> bool {
    if group.pgid <= 1 || start_ticks(group.pgid) != Some(group.start_ticks) {
        return false;
    }
    killpg(Pid::from_raw(group.pgid), Signal::SIGKILL).is_ok()
}
