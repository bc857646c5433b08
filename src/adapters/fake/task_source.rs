//! A control plane in memory: tests push events straight into the supervisor's channel and read
//! back what the worker reported here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::domain::TaskReport;
use crate::ports::{ControlEvent, SourceError, TaskSource};

/// Records reports in order; clones share the record.
#[derive(Debug, Clone, Default)]
pub struct FakeTaskSource {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    reports: Mutex<Vec<TaskReport>>,
    closed: Mutex<bool>,
    flush_stalls: Mutex<bool>,
    reported: Notify,
}

impl FakeTaskSource {
    /// Every report so far.
    pub fn reports(&self) -> Vec<TaskReport> {
        self.inner
            .reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until at least `n` reports arrived, or `timeout`; returns them.
    pub async fn wait_for_reports(&self, n: usize, timeout: Duration) -> Vec<TaskReport> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.reported.notified();
            let reports = self.reports();
            if reports.len() >= n {
                return reports;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.reports();
            }
        }
    }

    /// Makes every later `flush` find the queue never drained, as over a connection that
    /// cannot write: it waits its whole timeout and returns false.
    pub fn stall_flush(&self) {
        *self
            .inner
            .flush_stalls
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Marks the source closed: later reports fail with [`SourceError::Closed`].
    pub fn close(&self) {
        *self.inner.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }
}

#[async_trait]
impl TaskSource for FakeTaskSource {
    async fn run(
        &self,
        _events: mpsc::Sender<ControlEvent>,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        cancel.cancelled().await;
        self.close();
        Ok(())
    }

    fn report(&self, report: TaskReport) -> Result<(), SourceError> {
        if *self.inner.closed.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(SourceError::Closed);
        }
        self.inner
            .reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(report);
        self.inner.reported.notify_waiters();
        Ok(())
    }

    async fn flush(&self, timeout: Duration) -> bool {
        let stalls = *self
            .inner
            .flush_stalls
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if stalls {
            tokio::time::sleep(timeout).await;
        }
        !stalls
    }
}
