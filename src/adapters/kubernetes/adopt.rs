//! Adoption: taking over the Jobs that dead instances of this worker id left, running or
//! finished without a report. A Job's `oz-instance-id` label names its owner; an owner whose
//! Lease is absent or lapsed is dead, and the takeover replaces the label with this instance's
//! id under a resourceVersion precondition, so of two live instances scanning at once exactly
//! one wins (the other gets a 409 Conflict and skips the Job).

use std::collections::HashSet;

use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};

use super::client::{api_code, api_message};
use super::executor::KubernetesExecutor;
use super::lease::live_holders;
use super::names::{
    ANNOTATION_EXECUTION_ID, ANNOTATION_TASK_ID, LABEL_EXECUTION_ID, LABEL_INSTANCE_ID,
    LABEL_TASK_ID, adoptable_job_selector,
};
use crate::domain::TaskId;
use crate::ports::executor::Orphan;

/// The task a Job runs, from its annotations (raw ids), else its labels (sanitized ids).
pub(super) fn orphan_of(job: &Job) -> Option<Orphan> {
    let meta = &job.metadata;
    let annotation = |key: &str| meta.annotations.as_ref()?.get(key).cloned();
    let label = |key: &str| meta.labels.as_ref()?.get(key).cloned();
    let task_id = annotation(ANNOTATION_TASK_ID).or_else(|| label(LABEL_TASK_ID))?;
    let execution_id = annotation(ANNOTATION_EXECUTION_ID)
        .or_else(|| label(LABEL_EXECUTION_ID))
        .unwrap_or_default();
    Some(Orphan {
        task_id: TaskId::parse(task_id).ok()?,
        execution_id,
        handle: meta.name.clone()?,
    })
}

/// The instance a Job belongs to (empty when unlabelled).
pub(super) fn owner_of(job: &Job) -> &str {
    job.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_INSTANCE_ID))
        .map_or("", String::as_str)
}

impl KubernetesExecutor {
    /// Takes over every adoptable Job (see [`adoptable_job_selector`]) whose owner is neither
    /// this instance nor a live one, then deletes the lapsed Leases no Job names any more.
    /// Adopts nothing while this instance holds no Lease or is shutting down, or when the
    /// Leases or Jobs cannot be listed (logged; the next scan tries again).
    pub(super) async fn adopt(&self) -> Vec<Orphan> {
        if !self.lease.held() || self.is_leaving() {
            return Vec::new();
        }
        let jobs: Api<Job> = self.jobs_api();
        let selector = adoptable_job_selector(&self.config().worker_id);
        let listed = match jobs.list(&ListParams::default().labels(&selector)).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(error = %api_message(&e), "Cannot list this worker's Kubernetes Jobs; adopting nothing for now.");
                return Vec::new();
            }
        };
        // Leases after Jobs: an instance creates its Lease before its first Job, so the owner of
        // every listed Job that is alive has a Lease in this later list.
        let leases = match self.lease.worker_leases().await {
            Ok(leases) => leases,
            Err(e) => {
                tracing::warn!(error = %api_message(&e), "Cannot list worker instance Leases; adopting nothing for now.");
                return Vec::new();
            }
        };
        let live = live_holders(&leases, k8s_openapi::jiff::Timestamp::now());
        let me = self.instance_id().to_owned();
        let mut in_use = HashSet::new();
        let mut orphans = Vec::new();
        for job in listed.items {
            let owner = owner_of(&job).to_owned();
            if owner.is_empty() || owner == me || job.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if live.contains(&owner) {
                in_use.insert(owner);
                continue;
            }
            let Some(orphan) = orphan_of(&job) else {
                continue;
            };
            let patch = serde_json::json!({ "metadata": {
                "resourceVersion": job.metadata.resource_version,
                "labels": { LABEL_INSTANCE_ID: me },
            }});
            match jobs
                .patch(
                    &orphan.handle,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(job = %orphan.handle, task_id = %orphan.task_id, dead_instance = %owner, "Took over a Kubernetes Job a dead worker instance left.");
                    orphans.push(orphan);
                }
                Err(e) if api_code(&e) == Some(409) => {
                    tracing::debug!(job = %orphan.handle, "Another worker instance took this Kubernetes Job over first.");
                }
                Err(e) => {
                    tracing::warn!(job = %orphan.handle, error = %api_message(&e), "Could not take over a dead worker instance's Kubernetes Job; trying again at the next scan.");
                    in_use.insert(owner);
                }
            }
        }
        self.lease.delete_lapsed(leases, &in_use).await;
        orphans
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn job(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Job {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Job {
            metadata: ObjectMeta {
                name: Some("oz-task-run-exec-1".to_owned()),
                labels: Some(map(labels)),
                annotations: Some(map(annotations)),
                ..ObjectMeta::default()
            },
            ..Job::default()
        }
    }

    #[test]
    fn an_orphan_takes_the_raw_ids_from_the_annotations() {
        let found = orphan_of(&job(
            &[(LABEL_TASK_ID, "run-a"), (LABEL_INSTANCE_ID, "i1")],
            &[
                (ANNOTATION_TASK_ID, "Run_A"),
                (ANNOTATION_EXECUTION_ID, "Exec 1"),
            ],
        ))
        .unwrap();
        assert_eq!(found.task_id.as_str(), "Run_A");
        assert_eq!(found.execution_id, "Exec 1");
        assert_eq!(found.handle, "oz-task-run-exec-1");
    }

    #[test]
    fn an_orphan_without_annotations_falls_back_to_the_labels() {
        let found = orphan_of(&job(
            &[(LABEL_TASK_ID, "run-a"), (LABEL_EXECUTION_ID, "exec-1")],
            &[],
        ))
        .unwrap();
        assert_eq!(found.task_id.as_str(), "run-a");
        assert_eq!(found.execution_id, "exec-1");
        assert!(orphan_of(&job(&[], &[])).is_none());
    }

    #[test]
    fn adoptable_jobs_are_the_workers_own_with_an_owner_and_no_report_mark() {
        assert_eq!(
            adoptable_job_selector("w1"),
            format!(
                "app.kubernetes.io/managed-by=oz-agent-worker,oz-worker-hash={},oz-instance-id,!oz-reported",
                crate::adapters::kubernetes::names::short_hash("w1")
            )
        );
    }

    #[test]
    fn the_owner_is_the_instance_label() {
        assert_eq!(owner_of(&job(&[(LABEL_INSTANCE_ID, "i1")], &[])), "i1");
        assert_eq!(owner_of(&job(&[], &[])), "");
    }
}
