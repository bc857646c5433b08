//! Running one child process (setup, agent or teardown) in its own process group.
//!
//! Improvements over the reference, which SIGKILLs only the direct child and inherits the
//! worker's stdout/stderr:
//! * the child is the leader of a new process group (`process_group(0)`), so every process it
//!   starts can be signalled together;
//! * on cancellation the whole group gets SIGTERM, then SIGKILL after the grace period;
//! * when the leader exits (for any reason) the rest of its group is SIGKILLed, so no process
//!   outlives its task; the same happens if the future is dropped ([`GroupGuard`]);
//! * stdout/stderr go through pipes into an [`OutputSink`]; draining them after the exit is
//!   bounded by [`DRAIN_BOUND`], so a grandchild that escaped the group and kept the pipes open
//!   cannot hang the task.

use std::collections::HashSet;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::output::{LineSplitter, OutputSink, Stream};
use crate::domain::failure::signal_exit_code;

/// How long output is still read after the process group is gone.
pub(crate) const DRAIN_BOUND: Duration = Duration::from_secs(2);

/// Process groups currently alive, so `shutdown` can kill what a dropped run left behind.
pub(crate) type LiveGroups = Arc<Mutex<HashSet<i32>>>;

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessOutcome {
    /// Its wait status.
    pub status: ExitStatus,
    /// True when the token fired and the worker stopped it.
    pub cancelled: bool,
}

/// The normalised exit code (128+signal for signal deaths) and the Go-style text
/// (`exit status 2`, `signal: killed`).
pub(crate) fn describe(status: ExitStatus) -> (Option<i32>, String) {
    if let Some(code) = status.code() {
        return (Some(code), format!("exit status {code}"));
    }
    match status.signal() {
        Some(signal) => {
            let mut text = format!("signal: {}", signal_name(signal));
            if status.core_dumped() {
                text.push_str(" (core dumped)");
            }
            (Some(signal_exit_code(signal)), text)
        }
        None => (None, format!("{status}")),
    }
}

fn signal_name(signal: i32) -> String {
    let name = match Signal::try_from(signal) {
        Ok(Signal::SIGHUP) => "hangup",
        Ok(Signal::SIGINT) => "interrupt",
        Ok(Signal::SIGQUIT) => "quit",
        Ok(Signal::SIGILL) => "illegal instruction",
        Ok(Signal::SIGABRT) => "aborted",
        Ok(Signal::SIGBUS) => "bus error",
        Ok(Signal::SIGFPE) => "floating point exception",
        Ok(Signal::SIGKILL) => "killed",
        Ok(Signal::SIGSEGV) => "segmentation fault",
        Ok(Signal::SIGPIPE) => "broken pipe",
        Ok(Signal::SIGALRM) => "alarm clock",
        Ok(Signal::SIGTERM) => "terminated",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

/// Kills its process group with SIGKILL when dropped, and keeps it listed in [`LiveGroups`]
/// meanwhile.
pub(crate) struct GroupGuard {
    pgid: Pid,
    live: LiveGroups,
}

impl GroupGuard {
    fn new(pgid: i32, live: &LiveGroups) -> Self {
        live.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pgid);
        Self {
            pgid: Pid::from_raw(pgid),
            live: Arc::clone(live),
        }
    }

    /// Sends `signal` to every process of the group; "no such group" is fine.
    fn signal(&self, signal: Signal) {
        let _ = killpg(self.pgid, signal);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.pgid.as_raw());
    }
}

/// SIGKILLs every group in `live` (used by `shutdown`).
pub(crate) fn kill_all(live: &LiveGroups) {
    let groups: Vec<i32> = live
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .copied()
        .collect();
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Spawns `command` as a new process-group leader with piped output, and waits for it.
///
/// When `cancel` fires the group gets SIGTERM, then SIGKILL `grace` later. After the leader
/// exits, whatever is left of the group is SIGKILLed and the pipes are drained for at most
/// [`DRAIN_BOUND`]. `on_spawn` is called with the new group's id right after the spawn (the
/// crash journal records it).
///
/// # Errors
/// The spawn error, or a failure to wait for the child (its group is then killed).
pub(crate) async fn run_in_group(
    mut command: Command,
    cancel: &CancellationToken,
    grace: Duration,
    sink: &mut OutputSink,
    live: &LiveGroups,
    on_spawn: &(dyn Fn(i32) + Sync),
) -> io::Result<ProcessOutcome> {
    command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let mut child = command.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("child exited before its pid was read"))?;
    let pgid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    let guard = GroupGuard::new(pgid, live);
    on_spawn(pgid);
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out_lines, mut err_lines) = (
        LineSplitter::new(Stream::Stdout),
        LineSplitter::new(Stream::Stderr),
    );
    let (mut out_buf, mut err_buf) = (vec![0u8; 4096], vec![0u8; 4096]);
    let mut status: Option<ExitStatus> = None;
    let mut cancelled = false;
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    loop {
        if let Some(status) = status
            && stdout.is_none()
            && stderr.is_none()
        {
            return Ok(ProcessOutcome { status, cancelled });
        }
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf) => match read {
                Ok(n) if n > 0 => out_lines.feed(&out_buf[..n], sink),
                _ => { stdout = None; out_lines.finish(sink); }
            },
            read = read_some(&mut stderr, &mut err_buf) => match read {
                Ok(n) if n > 0 => err_lines.feed(&err_buf[..n], sink),
                _ => { stderr = None; err_lines.finish(sink); }
            },
            waited = child.wait(), if status.is_none() => {
                // Leftovers of the group die with the leader.
                guard.signal(Signal::SIGKILL);
                status = Some(waited?);
                drain_until = Some(Instant::now() + DRAIN_BOUND);
            },
            () = cancel.cancelled(), if !cancelled && status.is_none() => {
                cancelled = true;
                guard.signal(Signal::SIGTERM);
                kill_at = Some(Instant::now() + grace);
            },
            () = sleep_until(kill_at.unwrap_or_else(Instant::now)),
                if kill_at.is_some() && status.is_none() => {
                guard.signal(Signal::SIGKILL);
                kill_at = None;
            },
            () = sleep_until(drain_until.unwrap_or_else(Instant::now)),
                if drain_until.is_some() => {
                out_lines.finish(sink);
                err_lines.finish(sink);
                stdout = None;
                stderr = None;
            },
        }
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    stream: &mut Option<R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match stream {
        Some(stream) => stream.read(buf).await,
        None => std::future::pending().await,
    }
}
