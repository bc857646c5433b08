//! The report ledger: every report the worker sent, per task, applied idempotently.
//!
//! The worker delivers reports at least once: after an abrupt connection drop it sends again,
//! byte for byte and in order, the reports the server had not yet proved it read, so a report
//! can arrive twice. The ledger recognises such a repeat (the same frame text for the same task
//! since the task was last assigned) and counts it as a duplicate instead of applying it again;
//! a new assignment of the task (a follow-up execution) starts its record afresh.

use std::collections::{BTreeMap, BTreeSet};

use oz_protocol::WorkerMessage;

/// What arrived for one task since its latest assignment, duplicates not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskReports {
    /// `task_claimed` received.
    pub claimed: bool,
    /// `task_rejected` received.
    pub rejected: bool,
    /// The terminal report (`task_completed` or `task_failed`) received.
    pub terminal: bool,
    /// How many repeated reports about this task arrived.
    pub duplicates: u64,
    /// Report frames applied, by text.
    seen: BTreeSet<String>,
}

/// Every task's reports, and the total of duplicates.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    tasks: BTreeMap<String, TaskReports>,
    duplicates: u64,
}

impl Ledger {
    /// Task `task_id` was assigned (again): its record starts afresh.
    pub(crate) fn assigned(&mut self, task_id: &str) {
        self.tasks.remove(task_id);
    }

    /// Records one report; true when it repeats one already applied, and so must not be applied
    /// again.
    pub(crate) fn record(&mut self, text: &str, message: &WorkerMessage) -> bool {
        let task = self.tasks.entry(message.task_id().to_owned()).or_default();
        if !task.seen.insert(text.to_owned()) {
            task.duplicates += 1;
            self.duplicates += 1;
            return true;
        }
        match message {
            WorkerMessage::TaskClaimed { .. } => task.claimed = true,
            WorkerMessage::TaskRejected { .. } => task.rejected = true,
            WorkerMessage::TaskCompleted { .. } | WorkerMessage::TaskFailed { .. } => {
                task.terminal = true;
            }
        }
        false
    }

    /// The total of duplicates.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Every task's record.
    pub(crate) fn tasks(&self) -> BTreeMap<String, TaskReports> {
        self.tasks.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_report_is_counted_once_and_a_new_assignment_starts_afresh() {
        let mut ledger = Ledger::default();
        let claimed = WorkerMessage::TaskClaimed {
            task_id: "t".into(),
            worker_id: "w".into(),
        };
        let text = claimed.encode();
        assert!(!ledger.record(&text, &claimed));
        assert!(ledger.record(&text, &claimed));
        assert_eq!(ledger.duplicates(), 1);
        assert!(ledger.tasks()["t"].claimed);
        ledger.assigned("t");
        assert!(
            !ledger.record(&text, &claimed),
            "a follow-up execution's claim is new"
        );
        assert_eq!(ledger.duplicates(), 1);
    }
}
