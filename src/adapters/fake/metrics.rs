//! A metrics sink that records every signal for assertions.

use std::sync::{Arc, Mutex};

use crate::domain::TaskResult;
use crate::ports::{Metrics, Signal};

/// Records signals in order; clones share the record.
#[derive(Debug, Clone, Default)]
pub struct RecordingMetrics {
    signals: Arc<Mutex<Vec<Signal>>>,
}

impl RecordingMetrics {
    /// Every signal so far.
    pub fn signals(&self) -> Vec<Signal> {
        self.signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many recorded signals match.
    pub fn count(&self, matches: impl Fn(&Signal) -> bool) -> usize {
        self.signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| matches(s))
            .count()
    }

    /// The value the `tasks_active` up-down counter would have.
    pub fn active(&self) -> i64 {
        let claimed = self.count(|s| matches!(s, Signal::TaskClaimed | Signal::TaskAdopted));
        let finished = self.count(|s| matches!(s, Signal::TaskFinished { .. }));
        claimed as i64 - finished as i64
    }

    /// How many executions finished with `result`.
    pub fn finished(&self, result: TaskResult) -> usize {
        self.count(|s| matches!(s, Signal::TaskFinished { result: r, .. } if *r == result))
    }
}

impl Metrics for RecordingMetrics {
    fn record(&self, signal: Signal) {
        self.signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(signal);
    }
}
