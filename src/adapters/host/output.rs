//! What happens to a child's stdout and stderr: split into lines, secrets redacted, logged as
//! `info` events (with `task_id`, `phase` and `stream` fields) through the worker's own
//! `tracing` subscriber, and the last ~2 KiB kept for the failure message.
//!
//! Redaction happens per line *before* a line enters the tail, so trimming the tail to its byte
//! budget can never leave a fragment of a secret behind.

use std::collections::VecDeque;

pub(crate) use crate::domain::redact::Redactor;

/// How many bytes of recent output a failure message carries.
pub(crate) const TAIL_BYTES: usize = 2048;
/// Longer lines are cut into pieces of this size.
pub(crate) const MAX_LINE_BYTES: usize = 8192;
/// The `tracing` target of task output events (inside this crate, so `--log-level` applies).
pub(crate) const OUTPUT_TARGET: &str = "oz_agent_worker::task_output";

/// Which step of a task a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `setup_command`.
    Setup,
    /// The `oz agent run` process.
    Agent,
    /// `teardown_command`.
    Teardown,
}

impl Phase {
    /// The `phase` field of an output event.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Agent => "agent",
            Self::Teardown => "teardown",
        }
    }
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// The child's stdout.
    Stdout,
    /// The child's stderr.
    Stderr,
}

impl Stream {
    /// The `stream` field of an output event.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Collects one process's output.
#[derive(Debug)]
pub(crate) struct OutputSink {
    task_id: String,
    phase: Phase,
    redactor: Redactor,
    tail: VecDeque<String>,
    tail_bytes: usize,
}

impl OutputSink {
    /// A sink for `phase` of task `task_id`; `redactor` masks the task's secrets.
    pub(crate) fn new(task_id: &str, phase: Phase, redactor: Redactor) -> Self {
        Self {
            task_id: task_id.to_owned(),
            phase,
            redactor,
            tail: VecDeque::new(),
            tail_bytes: 0,
        }
    }

    /// Takes one complete line (without its newline) from `stream`.
    pub(crate) fn line(&mut self, stream: Stream, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let line = self.redactor.redact(text.trim_end_matches('\r'));
        tracing::info!(
            target: OUTPUT_TARGET,
            task_id = %self.task_id,
            phase = %self.phase.as_str(),
            stream = %stream.as_str(),
            "{line}"
        );
        self.tail_bytes += line.len() + 1;
        self.tail.push_back(line);
        while self.tail_bytes > TAIL_BYTES && self.tail.len() > 1 {
            if let Some(old) = self.tail.pop_front() {
                self.tail_bytes -= old.len() + 1;
            }
        }
    }

    /// The last output, at most [`TAIL_BYTES`] bytes, already redacted; empty when the process
    /// printed nothing.
    pub(crate) fn tail(&self) -> String {
        let joined = self
            .tail
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n");
        let joined = joined.trim();
        if joined.len() <= TAIL_BYTES {
            return joined.to_owned();
        }
        let mut start = joined.len() - TAIL_BYTES;
        while !joined.is_char_boundary(start) {
            start += 1;
        }
        format!("…{}", &joined[start..])
    }
}

/// Splits a byte stream into lines, cutting overlong ones.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    /// A splitter for the lines of `stream`.
    pub(crate) fn new(stream: Stream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    /// Feeds `chunk`, passing every complete line to `sink`.
    pub(crate) fn feed(&mut self, chunk: &[u8], sink: &mut OutputSink) {
        self.pending.extend_from_slice(chunk);
        while let Some(newline) = self.pending.iter().position(|b| *b == b'\n') {
            let rest = self.pending.split_off(newline + 1);
            sink.line(self.stream, &self.pending[..newline]);
            self.pending = rest;
        }
        while self.pending.len() > MAX_LINE_BYTES {
            let rest = self.pending.split_off(MAX_LINE_BYTES);
            sink.line(self.stream, &self.pending);
            self.pending = rest;
        }
    }

    /// Flushes a last line without a newline.
    pub(crate) fn finish(&mut self, sink: &mut OutputSink) {
        if !self.pending.is_empty() {
            sink.line(self.stream, &std::mem::take(&mut self.pending));
        }
    }
}
