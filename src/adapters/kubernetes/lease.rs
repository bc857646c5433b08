//! Liveness of worker processes (instances) on Kubernetes: one `coordination.k8s.io/v1` Lease
//! per instance in the worker's namespace, renewed by a task the executor owns, deleted at a
//! clean shutdown. An instance whose Lease is absent, or whose `renewTime +
//! leaseDurationSeconds` is in the past, is dead, and its Jobs may be adopted.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::client::{api_code, api_message};
use super::names::{
    LABEL_INSTANCE_ID, LABEL_MANAGED_BY, LABEL_WORKER_HASH, MANAGED_BY, lease_name, short_hash,
};

/// Default `leaseDurationSeconds` of an instance's Lease (`backend.kubernetes.lease_duration`).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(30);
/// Bound on each Lease request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The renewal period for a Lease of `duration`: a third of it, so two renewals in a row may
/// fail before the Lease lapses.
pub(super) fn renew_interval(duration: Duration) -> Duration {
    (duration / 3).max(Duration::from_millis(200))
}

/// The labels of every Lease of `worker_id`, and of this instance's.
pub(super) fn lease_labels(worker_id: &str, instance_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_WORKER_HASH.to_owned(), short_hash(worker_id)),
        (LABEL_INSTANCE_ID.to_owned(), instance_id.to_owned()),
    ])
}

/// The label selector of every Lease of `worker_id`.
pub(super) fn worker_lease_selector(worker_id: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_WORKER_HASH}={}",
        short_hash(worker_id)
    )
}

/// Whether a Lease read at `now` says its holder is alive: renewed less than its duration ago.
/// A Lease without a renew time or a duration is dead.
pub(super) fn lease_alive(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return false;
    };
    let Ok(span) = k8s_openapi::jiff::SignedDuration::try_from(Duration::from_secs(
        u64::try_from(seconds).unwrap_or(0),
    )) else {
        return false;
    };
    renewed
        .0
        .checked_add(span)
        .is_ok_and(|expires| expires > now)
}

/// This process's Lease: who it is, and the task renewing it.
pub(super) struct InstanceLease {
    /// The Leases API of the worker's namespace.
    api: Api<Lease>,
    /// The worker id (for labels).
    worker_id: String,
    /// This instance's id.
    instance_id: String,
    /// `leaseDurationSeconds`.
    duration: Duration,
    /// Stops the renewal task.
    stop: CancellationToken,
    /// The renewal task, once started; awaited by [`InstanceLease::release`], aborted on drop.
    renewer: Mutex<Option<JoinSet<()>>>,
}

impl InstanceLease {
    /// A Lease for `instance_id` in `api`'s namespace; nothing is sent before
    /// [`InstanceLease::acquire`].
    pub(super) fn new(
        api: Api<Lease>,
        worker_id: &str,
        instance_id: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api,
            worker_id: worker_id.to_owned(),
            instance_id: instance_id.to_owned(),
            duration,
            stop: CancellationToken::new(),
            renewer: Mutex::new(None),
        }
    }

    /// The Lease's name.
    pub(super) fn name(&self) -> String {
        lease_name(&self.instance_id)
    }

    /// Whether the renewal task runs.
    pub(super) fn held(&self) -> bool {
        self.renewer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    /// Creates (or renews) the Lease once, then starts the task that renews it every third of
    /// its duration until [`InstanceLease::release`]. A second call does nothing.
    ///
    /// # Errors
    /// The API server's answer when the first write fails.
    pub(super) async fn acquire(&self) -> Result<(), kube::Error> {
        if self.held() {
            return Ok(());
        }
        renew(&self.api, &self.worker_id, &self.instance_id, self.duration).await?;
        let mut renewer = self
            .renewer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if renewer.is_none() {
            let mut set = JoinSet::new();
            set.spawn(keep_renewing(
                self.api.clone(),
                self.worker_id.clone(),
                self.instance_id.clone(),
                self.duration,
                self.stop.clone(),
            ));
            *renewer = Some(set);
            tracing::info!(lease = %self.name(), instance_id = %self.instance_id, "Holding this worker instance's Lease.");
        }
        Ok(())
    }

    /// Stops renewing (awaiting the renewal task) and deletes the Lease, so the next instance
    /// sees at once that this one is gone.
    pub(super) async fn release(&self) {
        self.stop.cancel();
        let renewer = self
            .renewer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut renewer) = renewer else {
            return;
        };
        while renewer.join_next().await.is_some() {}
        let name = self.name();
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.api.delete(&name, &DeleteParams::default()),
        )
        .await
        {
            Ok(Ok(_)) => tracing::info!(lease = %name, "Released this worker instance's Lease."),
            Ok(Err(e)) if api_code(&e) == Some(404) => {}
            Ok(Err(e)) => {
                tracing::warn!(lease = %name, error = %api_message(&e), "Could not delete this worker instance's Lease; it lapses on its own.")
            }
            Err(_) => {
                tracing::warn!(lease = %name, "Timed out deleting this worker instance's Lease; it lapses on its own.")
            }
        }
    }

    /// Every Lease of this worker id, live or not.
    ///
    /// # Errors
    /// The API server's answer to the list.
    pub(super) async fn worker_leases(&self) -> Result<Vec<Lease>, kube::Error> {
        let listed = self
            .api
            .list(&ListParams::default().labels(&worker_lease_selector(&self.worker_id)))
            .await?;
        Ok(listed.items)
    }

    /// Deletes the lapsed Leases among `leases` (this worker id's, as listed) whose instance
    /// labels none of `in_use` (their Jobs are all adopted or gone), each only if unchanged
    /// since it was listed.
    pub(super) async fn delete_lapsed(&self, leases: Vec<Lease>, in_use: &HashSet<String>) {
        let now = Timestamp::now();
        for lease in leases {
            let holder = lease
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_INSTANCE_ID))
                .cloned()
                .unwrap_or_default();
            if holder == self.instance_id || in_use.contains(&holder) || lease_alive(&lease, now) {
                continue;
            }
            let Some(name) = lease.metadata.name.clone() else {
                continue;
            };
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: lease.metadata.resource_version.clone(),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match self.api.delete(&name, &dp).await {
                Ok(_) => tracing::debug!(lease = %name, "Deleted a dead worker instance's Lease."),
                Err(e) => {
                    tracing::debug!(lease = %name, error = %api_message(&e), "Left a dead worker instance's Lease.")
                }
            }
        }
    }
}

/// The holders of the Leases among `leases` that are current at `now`.
pub(super) fn live_holders(leases: &[Lease], now: Timestamp) -> HashSet<String> {
    leases
        .iter()
        .filter(|lease| lease_alive(lease, now))
        .filter_map(|lease| lease.spec.as_ref()?.holder_identity.clone())
        .collect()
}

impl Drop for InstanceLease {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Renews the Lease every [`renew_interval`] until `stop` fires; a failed renewal is logged and
/// retried at the next tick.
async fn keep_renewing(
    api: Api<Lease>,
    worker_id: String,
    instance_id: String,
    duration: Duration,
    stop: CancellationToken,
) {
    let period = renew_interval(duration);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let renewal = tokio::select! {
            () = stop.cancelled() => return,
            renewal = tokio::time::timeout(REQUEST_TIMEOUT, renew(&api, &worker_id, &instance_id, duration)) => renewal,
        };
        match renewal {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(instance_id = %instance_id, error = %api_message(&e), "Could not renew this worker instance's Lease.")
            }
            Err(_) => {
                tracing::warn!(instance_id = %instance_id, "Timed out renewing this worker instance's Lease.")
            }
        }
    }
}

/// Sets the Lease's renew time to now (a merge patch), creating the Lease when it is absent.
async fn renew(
    api: &Api<Lease>,
    worker_id: &str,
    instance_id: &str,
    duration: Duration,
) -> Result<(), kube::Error> {
    let now = MicroTime(Timestamp::now());
    let seconds = i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let spec = LeaseSpec {
        holder_identity: Some(instance_id.to_owned()),
        lease_duration_seconds: Some(seconds),
        renew_time: Some(now.clone()),
        ..LeaseSpec::default()
    };
    let name = lease_name(instance_id);
    let patch = serde_json::json!({ "spec": spec });
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if api_code(&e) == Some(404) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    labels: Some(lease_labels(worker_id, instance_id)),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    acquire_time: Some(now),
                    ..spec
                }),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(renewed: Option<Timestamp>, seconds: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                renew_time: renewed.map(MicroTime),
                lease_duration_seconds: seconds,
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_alive_until_its_duration_after_the_last_renewal() {
        let renewed: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: &str| -> Timestamp { s.parse().unwrap() };
        assert!(lease_alive(
            &lease(Some(renewed), Some(30)),
            at("2026-01-01T00:00:29Z")
        ));
        assert!(!lease_alive(
            &lease(Some(renewed), Some(30)),
            at("2026-01-01T00:00:30Z")
        ));
        assert!(!lease_alive(
            &lease(None, Some(30)),
            at("2026-01-01T00:00:01Z")
        ));
        assert!(!lease_alive(
            &lease(Some(renewed), None),
            at("2026-01-01T00:00:01Z")
        ));
        assert!(!lease_alive(&Lease::default(), at("2026-01-01T00:00:01Z")));
    }

    #[test]
    fn live_holders_are_those_of_current_leases() {
        let renewed: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let held = |holder: &str, seconds: i32| Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                ..lease(Some(renewed), Some(seconds)).spec.unwrap()
            }),
            ..Lease::default()
        };
        let now: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let live = live_holders(&[held("a", 30), held("b", 5)], now);
        assert_eq!(live, HashSet::from(["a".to_owned()]));
    }

    #[test]
    fn renewal_is_a_third_of_the_duration() {
        assert_eq!(
            renew_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            renew_interval(Duration::from_millis(300)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn lease_names_and_labels_name_the_worker_and_the_instance() {
        assert_eq!(
            lease_name("00ab12cd34ef5678"),
            "oz-worker-instance-00ab12cd34ef5678"
        );
        let labels = lease_labels("w1", "00ab12cd34ef5678");
        assert_eq!(labels[LABEL_INSTANCE_ID], "00ab12cd34ef5678");
        assert_eq!(labels[LABEL_WORKER_HASH], short_hash("w1"));
        assert_eq!(
            worker_lease_selector("w1"),
            format!(
                "app.kubernetes.io/managed-by=oz-agent-worker,oz-worker-hash={}",
                short_hash("w1")
            )
        );
    }
}
