//! Polling until a condition holds: the one helper for state that has no event to await (a
//! file a child process writes, a process that dies, an HTTP endpoint that starts answering).

use std::future::Future;
use std::time::Duration;

/// How often a condition is re-checked.
const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` until it yields `Some` or `bound` passes; `None` on timeout. For callers that
/// report a timeout themselves (with the last thing they saw).
pub(crate) async fn poll_some<T, F, Fut>(bound: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let poll = async {
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(bound, poll).await.ok()
}

/// Polls `probe` until it yields `Some`, and returns that value.
///
/// # Panics
/// When `bound` passes first, naming `what` was awaited.
pub(crate) async fn eventually_some<T, F, Fut>(what: &str, bound: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_some(bound, probe)
        .await
        .unwrap_or_else(|| panic!("timed out after {bound:?} waiting for {what}"))
}

/// Polls `condition` until it is true or `bound` passes; returns whether it became true. For
/// callers that report a timeout themselves (with what is still wrong).
pub(crate) async fn poll_until<F, Fut>(bound: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let poll = async {
        while !condition().await {
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(bound, poll).await.is_ok()
}

/// Polls `condition` until it is true.
///
/// # Panics
/// When `bound` passes first, naming `what` was awaited.
pub(crate) async fn eventually<F, Fut>(what: &str, bound: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_some(what, bound, || {
        let check = condition();
        async move { check.await.then_some(()) }
    })
    .await;
}
