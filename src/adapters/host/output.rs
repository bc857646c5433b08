//! What happens to a child's stdout and stderr: split into lines, secrets redacted, forwarded
//! to the worker's own stderr, and the last ~2 KiB kept for the failure message.
//!
//! Redaction happens per line *before* a line enters the tail, so trimming the tail to its byte
//! budget can never leave a fragment of a secret behind.

use std::collections::VecDeque;
use std::io::Write;

pub(crate) use crate::domain::redact::Redactor;

/// How many bytes of recent output a failure message carries.
pub(crate) const TAIL_BYTES: usize = 2048;
/// Longer lines are cut into pieces of this size.
pub(crate) const MAX_LINE_BYTES: usize = 8192;
/// Collects one process's output.
#[derive(Debug)]
pub(crate) struct OutputSink {
    prefix: String,
    redactor: Redactor,
    forward: bool,
    tail: VecDeque<String>,
    tail_bytes: usize,
}

impl OutputSink {
    /// A sink whose forwarded lines start with `prefix` (e.g. `[oz task t1 agent] `).
    pub(crate) fn new(prefix: String, redactor: Redactor, forward: bool) -> Self {
        Self {
            prefix,
            redactor,
            forward,
            tail: VecDeque::new(),
            tail_bytes: 0,
        }
    }

    /// Takes one complete line (without its newline).
    pub(crate) fn line(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let line = self.redactor.redact(text.trim_end_matches('\r'));
        if self.forward {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "{}{}", self.prefix, line);
        }
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
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `chunk`, passing every complete line to `sink`.
    pub(crate) fn feed(&mut self, chunk: &[u8], sink: &mut OutputSink) {
        self.pending.extend_from_slice(chunk);
        while let Some(newline) = self.pending.iter().position(|b| *b == b'\n') {
            let rest = self.pending.split_off(newline + 1);
            sink.line(&self.pending[..newline]);
            self.pending = rest;
        }
        while self.pending.len() > MAX_LINE_BYTES {
            let rest = self.pending.split_off(MAX_LINE_BYTES);
            sink.line(&self.pending);
            self.pending = rest;
        }
    }

    /// Flushes a last line without a newline.
    pub(crate) fn finish(&mut self, sink: &mut OutputSink) {
        if !self.pending.is_empty() {
            sink.line(&std::mem::take(&mut self.pending));
        }
    }
}
