//! Table tests for the run store's state machine and routing.

#![allow(
    clippy::disallowed_methods,
    reason = "tests start fixed clock origins, helper tasks and threads the test awaits"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;

const DELAY: Duration = Duration::from_secs(1);

/// A store with the fallback dispatch: every queued run offered at once.
fn fixed_delay() -> RunStore {
    RunStore::new(DELAY).configured(Dispatch::FixedDelay, DEFAULT_ORPHAN_TIMEOUT)
}

/// A store with capacity-aware dispatch and a 60 s orphan timeout.
fn capacity() -> RunStore {
    RunStore::new(DELAY).configured(Dispatch::Capacity, Duration::from_secs(60))
}

fn spec(worker: &str) -> NewRun {
    NewRun {
        prompt: "p".into(),
        title: "t".into(),
        config: serde_json::json!({"worker_host": worker}),
        worker_host: worker.into(),
        team: false,
        metadata: BTreeMap::new(),
    }
}

fn workers(list: &[(ConnectionId, &str)]) -> BTreeMap<ConnectionId, String> {
    list.iter().map(|(c, w)| (*c, (*w).to_owned())).collect()
}

fn claimed(id: &str) -> WorkerMessage {
    WorkerMessage::TaskClaimed {
        task_id: id.into(),
        worker_id: "w".into(),
    }
}

fn rejected(id: &str) -> WorkerMessage {
    WorkerMessage::TaskRejected {
        task_id: id.into(),
        reason: "worker at maximum concurrency".into(),
    }
}

fn completed(id: &str, state: Option<&str>) -> WorkerMessage {
    WorkerMessage::TaskCompleted {
        task_id: id.into(),
        message: "done".into(),
        task_state: state.map(str::to_owned),
    }
}

fn failed(id: &str) -> WorkerMessage {
    WorkerMessage::TaskFailed {
        task_id: id.into(),
        message: "boom".into(),
        failure_reason: Some("agent_invocation".into()),
        exit_code: Some(3),
    }
}

#[test]
fn worker_messages_move_a_run_through_its_states() {
    type Case = (
        &'static str,
        Vec<fn(&str) -> WorkerMessage>,
        RunState,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "claim",
            vec![claimed],
            RunState::Claimed,
            "Claimed by worker \"w\"",
        ),
        (
            "success",
            vec![claimed, |id| completed(id, None)],
            RunState::Succeeded,
            "done",
        ),
        ("failure", vec![claimed, failed], RunState::Failed, "boom"),
        (
            "cancelled",
            vec![claimed, |id| completed(id, Some("CANCELLED"))],
            RunState::Cancelled,
            "done",
        ),
        (
            "rejection",
            vec![rejected],
            RunState::Queued,
            "Re-queued: worker rejected it: worker at maximum concurrency",
        ),
        (
            "late message after terminal",
            vec![claimed, failed, claimed],
            RunState::Failed,
            "boom",
        ),
    ];
    for (name, messages, want, status) in cases {
        let mut store = fixed_delay();
        let now = Instant::now();
        let id = store.create(spec("w"), 1).id;
        assert_eq!(store.offers(now, &workers(&[(1, "w")])).len(), 1, "{name}");
        for message in messages {
            store.on_message(1, &message(&id), now, 2);
        }
        let run = store.get(&id).unwrap();
        assert_eq!(run.state, want, "{name}");
        assert_eq!(run.status_message.as_deref(), Some(status), "{name}");
    }
}

#[test]
fn a_claimed_run_is_in_progress_after_the_next_tick() {
    let mut store = fixed_delay();
    let now = Instant::now();
    let id = store.create(spec("w"), 1).id;
    store.offers(now, &workers(&[(1, "w")]));
    store.on_message(1, &claimed(&id), now, 5);
    assert_eq!(store.get(&id).unwrap().started_at, Some(5));
    store.tick(now, 6, &BTreeMap::new());
    assert_eq!(store.get(&id).unwrap().state, RunState::InProgress);
}

#[test]
fn a_repeated_claim_or_terminal_report_changes_nothing() {
    let mut store = RunStore::new(DELAY);
    let now = Instant::now();
    let id = store.create(spec("w"), 1).id;
    store.offers(now, &workers(&[(1, "w")]));
    store.on_message(1, &claimed(&id), now, 5);
    store.tick(now, 6, &BTreeMap::new());
    // Sent again on the worker's next connection.
    assert_eq!(
        store.on_message(2, &claimed(&id), now, 7),
        Reaction::Ignored
    );
    let run = store.get(&id).unwrap();
    assert_eq!((run.state, run.started_at), (RunState::InProgress, Some(5)));
    assert_eq!(run.connection, Some(2));
    store.on_message(2, &completed(&id, None), now, 8);
    assert_eq!(
        store.on_message(3, &claimed(&id), now, 9),
        Reaction::Ignored
    );
    assert_eq!(
        store.on_message(3, &completed(&id, None), now, 9),
        Reaction::Ignored
    );
    let run = store.get(&id).unwrap();
    assert_eq!((run.state, run.updated_at), (RunState::Succeeded, 8));
}

#[test]
fn a_run_for_an_absent_worker_stays_queued_until_one_connects() {
    let mut store = fixed_delay();
    let now = Instant::now();
    let id = store.create(spec("gpu"), 1).id;
    assert!(store.offers(now, &workers(&[(1, "cpu")])).is_empty());
    assert!(store.offers(now, &BTreeMap::new()).is_empty());
    assert_eq!(
        store.offers(now, &workers(&[(1, "cpu"), (2, "gpu")])),
        vec![(id, 2)]
    );
}

#[test]
fn a_rejected_run_waits_the_retry_delay_then_is_offered_again() {
    let mut store = fixed_delay();
    let now = Instant::now();
    let both = workers(&[(1, "w"), (2, "w")]);
    let busy = store.create(spec("w"), 1).id;
    let id = store.create(spec("w"), 1).id;
    let first = store.offers(now, &both);
    assert_eq!(first.len(), 2);
    let conn_of_id = first.iter().find(|(r, _)| *r == id).unwrap().1;
    store.on_message(conn_of_id, &rejected(&id), now, 2);
    assert!(store.offers(now, &both).is_empty(), "not before the delay");
    // The other connection now has the lighter load once `busy` claimed on its own one.
    let conn_of_busy = first.iter().find(|(r, _)| *r == busy).unwrap().1;
    store.on_message(conn_of_busy, &completed(&busy, None), now, 3);
    let again = store.offers(now + DELAY, &both);
    assert_eq!(again.len(), 1);
    assert_eq!(store.get(&id).unwrap().offers, 2);
}

#[test]
fn a_burst_is_spread_over_connections_of_one_worker_id() {
    let mut store = fixed_delay();
    let now = Instant::now();
    for _ in 0..6 {
        store.create(spec("w"), 1);
    }
    let sent = store.offers(now, &workers(&[(1, "w"), (2, "w"), (3, "other")]));
    let on = |c| sent.iter().filter(|(_, conn)| *conn == c).count();
    assert_eq!((on(1), on(2), on(3)), (3, 3, 0));
}

#[test]
fn an_unclaimed_run_returns_to_the_queue_when_its_connection_ends() {
    let mut store = fixed_delay();
    let now = Instant::now();
    let id = store.create(spec("w"), 1).id;
    store.offers(now, &workers(&[(1, "w")]));
    store.on_disconnected(1, 2);
    assert_eq!(store.offers(now, &workers(&[(2, "w")])), vec![(id, 2)]);
}

#[test]
fn cancel_depends_on_where_the_run_is() {
    let mut store = fixed_delay();
    let now = Instant::now();
    let none = BTreeMap::new();
    let queued = store.create(spec("absent"), 1).id;
    assert_eq!(
        store.cancel(&queued, &none, 2),
        Ok(CancelAction::CancelledInQueue)
    );
    assert_eq!(store.get(&queued).unwrap().state, RunState::Cancelled);
    assert_eq!(
        store.cancel(&queued, &none, 3),
        Err(CancelError::Finished(RunState::Cancelled))
    );
    assert_eq!(store.cancel("nope", &none, 3), Err(CancelError::NotFound));

    let live = workers(&[(7, "w")]);
    let running = store.create(spec("w"), 1).id;
    store.offers(now, &live);
    store.on_message(7, &claimed(&running), now, 2);
    assert_eq!(store.cancel(&running, &live, 3), Ok(CancelAction::Send(7)));
    assert_eq!(store.get(&running).unwrap().state, RunState::Claimed);
}

#[test]
fn a_run_cancelled_before_its_claim_ends_cancelled_when_its_connection_drops() {
    let mut store = fixed_delay();
    let now = Instant::now();
    let live = workers(&[(1, "w")]);
    let id = store.create(spec("w"), 1).id;
    store.offers(now, &live);
    assert_eq!(store.cancel(&id, &live, 2), Ok(CancelAction::Send(1)));
    store.on_disconnected(1, 3);
    let run = store.get(&id).unwrap();
    assert_eq!(run.state, RunState::Cancelled);
    assert_eq!(run.updated_at, 3);
    assert!(store.offers(now + DELAY, &workers(&[(2, "w")])).is_empty());
    // The worker had claimed it before the cancellation reached it: its claim, arriving on
    // its next connection, is answered with the cancellation again.
    assert_eq!(
        store.on_message(2, &claimed(&id), now, 4),
        Reaction::CancelAgain
    );
    assert_eq!(store.get(&id).unwrap().state, RunState::Cancelled);
    assert_eq!(
        store.on_message(2, &completed(&id, Some("CANCELLED")), now, 5),
        Reaction::Ignored
    );
}

#[test]
fn a_claimed_run_survives_its_connection_and_takes_reports_from_the_next_one() {
    type Case = (
        &'static str,
        fn(&str) -> WorkerMessage,
        RunState,
        &'static str,
    );
    let cases: [Case; 2] = [
        (
            "success",
            |id| completed(id, None),
            RunState::Succeeded,
            "done",
        ),
        ("failure", failed, RunState::Failed, "boom"),
    ];
    for (name, report, want, status) in cases {
        let mut store = fixed_delay();
        let now = Instant::now();
        let id = store.create(spec("w"), 1).id;
        store.offers(now, &workers(&[(1, "w")]));
        store.on_message(1, &claimed(&id), now, 2);
        store.tick(now, 3, &BTreeMap::new());
        store.on_disconnected(1, 4);
        let run = store.get(&id).unwrap();
        assert_eq!(run.state, RunState::InProgress, "{name}");
        assert_eq!(run.connection, None, "{name}");
        assert!(
            store.offers(now + DELAY, &workers(&[(2, "w")])).is_empty(),
            "{name}: a claimed run is not offered again"
        );
        assert_eq!(store.on_message(2, &report(&id), now, 5), Reaction::Applied);
        let run = store.get(&id).unwrap();
        assert_eq!(run.state, want, "{name}");
        assert_eq!(run.status_message.as_deref(), Some(status), "{name}");
    }
}

#[test]
fn a_detached_runs_cancellation_waits_for_its_worker_id_to_connect() {
    let mut store = fixed_delay();
    let now = Instant::now();
    let id = store.create(spec("w"), 1).id;
    store.offers(now, &workers(&[(1, "w")]));
    store.on_message(1, &claimed(&id), now, 2);
    store.on_disconnected(1, 3);
    // Another worker with that id is connected; the one holding the run is not.
    let live = workers(&[(2, "w"), (3, "other")]);
    assert_eq!(
        store.cancel(&id, &live, 4),
        Ok(CancelAction::Pending(vec![2]))
    );
    let run = store.get(&id).unwrap();
    assert_eq!(run.state, RunState::Claimed);
    assert!(
        run.status_message
            .as_deref()
            .unwrap()
            .contains("disconnected"),
        "{run:?}"
    );
    assert_eq!(store.on_connected("w"), vec![id.clone()]);
    assert!(store.on_connected("other").is_empty());
    store.on_message(4, &completed(&id, Some("CANCELLED")), now, 5);
    assert_eq!(store.get(&id).unwrap().state, RunState::Cancelled);
    assert!(
        store.on_connected("w").is_empty(),
        "delivered: nothing pending"
    );
}

#[test]
fn a_cancellation_its_connection_did_not_take_is_pending_or_final() {
    let mut store = fixed_delay();
    let now = Instant::now();
    let live = workers(&[(1, "w")]);
    let offered = store.create(spec("w"), 1).id;
    let running = store.create(spec("w"), 1).id;
    store.offers(now, &live);
    store.on_message(1, &claimed(&running), now, 2);
    // Connection 1 is already gone from the open set (its task is ending).
    let none = BTreeMap::new();
    assert_eq!(
        store.cancel(&offered, &none, 3),
        Ok(CancelAction::CancelledInQueue)
    );
    assert_eq!(
        store.cancel(&running, &none, 3),
        Ok(CancelAction::Pending(vec![]))
    );
    // The send to a connection the store still believed open failed.
    let other = store.create(spec("w"), 1).id;
    store.offers(now, &live);
    store.on_message(1, &claimed(&other), now, 4);
    assert_eq!(store.cancel(&other, &live, 5), Ok(CancelAction::Send(1)));
    assert_eq!(
        store.cancel_undelivered(&other, &BTreeMap::new()),
        CancelAction::Pending(vec![])
    );
    assert_eq!(store.on_connected("w"), vec![running, other]);
}

#[test]
fn a_rejection_from_a_connection_that_no_longer_holds_the_offer_is_ignored() {
    let mut store = fixed_delay();
    let now = Instant::now();
    let id = store.create(spec("w"), 1).id;
    store.offers(now, &workers(&[(1, "w")]));
    store.on_disconnected(1, 2);
    assert_eq!(
        store.offers(now, &workers(&[(2, "w")])),
        vec![(id.clone(), 2)]
    );
    // The first worker's rejection, kept in its outbox, arrives on its new connection 3.
    assert_eq!(
        store.on_message(3, &rejected(&id), now, 3),
        Reaction::Ignored
    );
    assert_eq!(store.get(&id).unwrap().connection, Some(2));
    assert_eq!(
        store.on_message(2, &claimed(&id), now, 4),
        Reaction::Applied
    );
}

#[test]
fn states_round_trip_their_api_spelling() {
    for state in [
        "QUEUED",
        "CLAIMED",
        "INPROGRESS",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
    ] {
        assert_eq!(RunState::parse(state).unwrap().as_str(), state);
    }
    assert_eq!(RunState::parse("PENDING"), None);
}

#[test]
fn capacity_dispatch_probes_one_offer_at_a_time_then_learns_the_limit_from_a_rejection() {
    let mut store = capacity();
    let now = Instant::now();
    let one = workers(&[(1, "w")]);
    let ids: Vec<String> = (0..8).map(|_| store.create(spec("w"), 1).id).collect();
    // Limit unknown: one unclaimed offer at a time; each claim lets the next one go.
    for id in &ids[..3] {
        assert_eq!(store.offers(now, &one), vec![(id.clone(), 1)]);
        assert!(
            store.offers(now, &one).is_empty(),
            "one unclaimed offer at a time"
        );
        store.on_message(1, &claimed(id), now, 2);
    }
    // The fourth is rejected: the worker is full with three.
    assert_eq!(store.offers(now, &one), vec![(ids[3].clone(), 1)]);
    store.on_message(1, &rejected(&ids[3]), now, 3);
    assert_eq!(store.learned_limit(1), Some(3));
    assert_eq!(store.rejections(), 1);
    assert!(
        store.offers(now, &one).is_empty(),
        "no slot until a run ends"
    );
    // A slot frees: the rejected run goes at once, without waiting the retry delay.
    store.on_message(1, &completed(&ids[0], None), now, 4);
    assert_eq!(store.offers(now, &one), vec![(ids[3].clone(), 1)]);
    assert!(store.offers(now, &one).is_empty(), "full again");
    // Two free slots: two offers at once, now that the limit is known.
    store.on_message(1, &claimed(&ids[3]), now, 5);
    store.on_message(1, &completed(&ids[1], None), now, 6);
    store.on_message(1, &failed(&ids[2]), now, 6);
    assert_eq!(
        store.offers(now, &one),
        vec![(ids[4].clone(), 1), (ids[5].clone(), 1)]
    );
    assert_eq!(store.rejections(), 1);
}

#[test]
fn capacity_dispatch_forgets_a_limit_with_its_connection() {
    let mut store = capacity();
    let now = Instant::now();
    let a = store.create(spec("w"), 1).id;
    let b = store.create(spec("w"), 1).id;
    store.offers(now, &workers(&[(1, "w")]));
    store.on_message(1, &claimed(&a), now, 2);
    store.offers(now, &workers(&[(1, "w")]));
    store.on_message(1, &rejected(&b), now, 3);
    assert_eq!(store.learned_limit(1), Some(1));
    store.on_disconnected(1, 4);
    assert_eq!(store.learned_limit(1), None);
}

#[test]
fn a_rejection_while_shutting_down_waits_the_retry_delay_in_capacity_mode() {
    let mut store = capacity();
    let now = Instant::now();
    let one = workers(&[(1, "w")]);
    let id = store.create(spec("w"), 1).id;
    store.offers(now, &one);
    let shutting_down = WorkerMessage::TaskRejected {
        task_id: id.clone(),
        reason: "worker shutting down".into(),
    };
    store.on_message(1, &shutting_down, now, 2);
    assert_eq!(store.learned_limit(1), None, "not a capacity rejection");
    assert!(store.offers(now, &one).is_empty());
    assert_eq!(store.offers(now + DELAY, &one), vec![(id, 1)]);
}

#[test]
fn a_run_whose_worker_vanished_fails_after_the_orphan_timeout() {
    let timeout = Duration::from_secs(60);
    let mut store = capacity();
    let now = Instant::now();
    let id = store.create(spec("w"), 1).id;
    store.offers(now, &workers(&[(1, "w")]));
    store.on_message(1, &claimed(&id), now, 2);
    store.on_disconnected(1, 3);
    let nobody = BTreeMap::new();
    store.tick(now, 4, &nobody);
    store.tick(now + timeout - Duration::from_millis(1), 5, &nobody);
    assert_eq!(store.get(&id).unwrap().state, RunState::InProgress);
    store.tick(now + timeout, 6, &nobody);
    let run = store.get(&id).unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.failure_reason.as_deref(), Some(ORPHANED));
    let message = run.status_message.clone().unwrap();
    assert!(
        message.contains("vanished") && message.contains("\"w\""),
        "{message}"
    );
    // A report that arrives after the run was failed is ignored.
    assert_eq!(
        store.on_message(2, &completed(&id, None), now + timeout, 7),
        Reaction::Ignored
    );
    assert_eq!(store.get(&id).unwrap().state, RunState::Failed);
}

#[test]
fn a_report_from_the_returning_worker_wins_before_the_orphan_timeout() {
    let timeout = Duration::from_secs(60);
    let mut store = capacity();
    let now = Instant::now();
    let id = store.create(spec("w"), 1).id;
    store.offers(now, &workers(&[(1, "w")]));
    store.on_message(1, &claimed(&id), now, 2);
    store.on_disconnected(1, 3);
    store.tick(now, 4, &BTreeMap::new());
    // Its worker id reconnects: the orphan clock stops, however long the run takes.
    store.tick(now + timeout * 2, 5, &workers(&[(2, "w")]));
    assert_eq!(store.get(&id).unwrap().state, RunState::InProgress);
    // Another worker id being connected does not count.
    store.tick(now + timeout * 2, 6, &workers(&[(3, "other")]));
    store.tick(
        now + timeout * 3 - Duration::from_millis(1),
        7,
        &workers(&[(3, "other")]),
    );
    store.on_message(2, &completed(&id, None), now + timeout * 3, 8);
    assert_eq!(store.get(&id).unwrap().state, RunState::Succeeded);
}

#[test]
fn failure_reasons_map_to_the_sdk_error_codes() {
    let cases = [
        ("image_pull", Some(("environment_setup_failed", false))),
        ("setup_command", Some(("environment_setup_failed", false))),
        ("evicted", Some(("resource_unavailable", true))),
        (ORPHANED, Some(("resource_unavailable", true))),
        ("agent_invocation", None),
        ("task_timeout", None),
        ("unknown", None),
    ];
    for (reason, want) in cases {
        assert_eq!(error_for_reason(reason), want, "{reason}");
    }
}
