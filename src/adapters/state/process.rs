//! Process identity for the crash journal: a pid is reused by the kernel, so a journaled
//! process group is killed only while its leader is still the process that was recorded, known
//! by its start time in `/proc/<pid>/stat`.

use nix::sys::signal::{Signal, kill, killpg};
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

/// SIGKILLs the recorded group if it is still that group. Returns true when it sent the signal.
///
/// The group is the recorded one when its leader is the recorded process (same start time).
/// When the leader has exited but members remain (a worker killed between the agent's exit and
/// its group clean-up), the id cannot have been reused: Linux keeps a process-group id allocated
/// while any process is in that group. If a process with the leader's pid exists with another
/// start time, the id now names another group, which is left alone.
pub fn kill_recorded_group(group: GroupRecord) -> bool {
    if group.pgid <= 1 {
        return false;
    }
    match start_ticks(group.pgid) {
        Some(ticks) if ticks == group.start_ticks => {
            killpg(Pid::from_raw(group.pgid), Signal::SIGKILL).is_ok()
        }
        Some(_) => false,
        None => {
            let members = group_members(group.pgid, group.start_ticks);
            for pid in &members {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            !members.is_empty()
        }
    }
}

/// Processes in group `pgid` that started no earlier than `since` (clock ticks since boot).
fn group_members(pgid: i32, since: u64) -> Vec<i32> {
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // After the name: state (0), ppid (1), pgrp (2), …, starttime (19).
            fields.get(2).and_then(|f| f.parse::<i32>().ok()) == Some(pgid)
                && fields.get(19).and_then(|f| f.parse::<u64>().ok()) >= Some(since)
        })
        .collect()
}
