//! The run API's routing, status codes and list semantics, without a socket.

#![allow(
    clippy::disallowed_methods,
    reason = "tests start fixed clock origins, helper tasks and threads the test awaits"
)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use super::*;
use crate::runs::NewRun;
use oz_protocol::WorkerMessage;

const KEY: &str = "k";

/// Open connections by worker id; records every cancellation sent, and fails sends to `gone`.
#[derive(Default)]
struct FakeConnections {
    open: BTreeMap<ConnectionId, String>,
    gone: BTreeSet<ConnectionId>,
    sent: RefCell<Vec<(ConnectionId, String)>>,
}

impl Connections for FakeConnections {
    fn worker_ids(&self) -> BTreeMap<ConnectionId, String> {
        self.open.clone()
    }

    fn send_cancellation(&self, conn: ConnectionId, run_id: &str) -> bool {
        if self.gone.contains(&conn) || !self.open.contains_key(&conn) {
            return false;
        }
        self.sent.borrow_mut().push((conn, run_id.to_owned()));
        true
    }
}

fn call(store: &mut RunStore, method: Method, target: &str, body: &str) -> (u16, Value) {
    call_with(store, &FakeConnections::default(), method, target, body)
}

fn call_with(
    store: &mut RunStore,
    connections: &FakeConnections,
    method: Method,
    target: &str,
    body: &str,
) -> (u16, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let auth = format!("Bearer {KEY}");
    let request = ApiRequest {
        method: &method,
        path,
        query: Some(query),
        authorization: Some(auth.as_bytes()),
        body: body.as_bytes(),
    };
    let response = handle(&request, KEY, store, connections);
    let status = response.status().as_u16();
    let bytes = futures_util::FutureExt::now_or_never(response.into_body().collect())
        .unwrap()
        .unwrap()
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

fn create(store: &mut RunStore, title: &str, worker: &str) -> String {
    let body = json!({"prompt": "p", "title": title, "config": {"worker_host": worker}});
    let (status, value) = call(store, Method::POST, "/api/v1/agent/runs", &body.to_string());
    assert_eq!(status, 200, "{value}");
    value["run_id"].as_str().unwrap().to_owned()
}

#[test]
fn a_wrong_key_is_401_before_anything_else() {
    let mut store = RunStore::new(Duration::from_secs(1));
    let request = ApiRequest {
        method: &Method::GET,
        path: "/api/v1/agent/runs/whatever",
        query: None,
        authorization: Some(b"Bearer nope"),
        body: b"",
    };
    let response = handle(&request, KEY, &mut store, &FakeConnections::default());
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn list_pages_with_the_cursor_and_sorts_as_asked() {
    let mut store = RunStore::new(Duration::from_secs(1));
    for title in ["c", "a", "e", "b", "d"] {
        create(&mut store, title, "w");
    }
    let mut titles = Vec::new();
    let mut target = "/api/v1/agent/runs?limit=2&sort_by=title&sort_order=asc".to_owned();
    loop {
        let (status, page) = call(&mut store, Method::GET, &target, "");
        assert_eq!(status, 200, "{page}");
        for run in page["runs"].as_array().unwrap() {
            titles.push(run["title"].as_str().unwrap().to_owned());
        }
        match page["page_info"]["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(page["page_info"]["has_next_page"], true);
                target = format!(
                    "/api/v1/agent/runs?limit=2&sort_by=title&sort_order=asc&cursor={cursor}"
                );
            }
            None => break,
        }
    }
    assert_eq!(titles, ["a", "b", "c", "d", "e"]);
}

#[test]
fn bad_queries_and_unknown_runs_get_their_status() {
    let mut store = RunStore::new(Duration::from_secs(1));
    let id = create(&mut store, "t", "absent");
    let cases = [
        (Method::GET, "/api/v1/agent/runs?state=DONE".to_owned(), 422),
        (Method::GET, "/api/v1/agent/runs?limit=0".to_owned(), 422),
        (
            Method::GET,
            "/api/v1/agent/runs?created_after=yesterday".to_owned(),
            422,
        ),
        (Method::GET, "/api/v1/agent/runs/nope".to_owned(), 404),
        (
            Method::POST,
            "/api/v1/agent/runs/nope/cancel".to_owned(),
            404,
        ),
        (Method::DELETE, format!("/api/v1/agent/runs/{id}"), 404),
        (Method::POST, format!("/api/v1/agent/runs/{id}/cancel"), 200),
        (Method::POST, format!("/api/v1/agent/runs/{id}/cancel"), 400),
    ];
    for (method, target, want) in cases {
        let (status, body) = call(&mut store, method.clone(), &target, "");
        assert_eq!(status, want, "{method} {target}: {body}");
        if want >= 400 {
            assert_eq!(body["status"], want, "{body}");
            assert!(body["detail"].is_string(), "{body}");
            assert_eq!(
                body["retryable"], false,
                "client errors are not retryable: {body}"
            );
        }
    }
}

#[test]
fn filters_combine_state_metadata_and_text() {
    let mut store = RunStore::new(Duration::from_secs(1));
    let body = json!({"prompt": "fix the Bug", "config": {"worker_host": "w", "model_id": "m1"},
        "metadata": {"ticket": "T-1"}});
    let (_, created) = call(
        &mut store,
        Method::POST,
        "/api/v1/agent/runs",
        &body.to_string(),
    );
    create(&mut store, "other", "w");
    let cases = [
        ("state=QUEUED", 2),
        ("state=SUCCEEDED", 0),
        ("state=SUCCEEDED&state=QUEUED", 2),
        ("metadata%5Bticket%5D=T-1", 1),
        ("model_id=m1", 1),
        ("q=bug", 1),
        ("source=API&execution_location=REMOTE", 2),
        ("created_after=2000-01-01T00:00:00Z", 2),
        ("created_before=2000-01-01T00:00:00Z", 0),
    ];
    for (query, want) in cases {
        let (_, page) = call(
            &mut store,
            Method::GET,
            &format!("/api/v1/agent/runs?{query}"),
            "",
        );
        assert_eq!(
            page["runs"].as_array().unwrap().len(),
            want,
            "{query}: {page}"
        );
    }
    let (_, page) = call(&mut store, Method::GET, "/api/v1/agent/runs?q=bug", "");
    assert_eq!(page["runs"][0]["run_id"], created["run_id"]);
}

#[test]
fn filters_the_server_does_not_implement_are_refused_by_name() {
    let mut store = RunStore::new(Duration::from_secs(1));
    create(&mut store, "t", "w");
    let mut queries: Vec<String> = UNSUPPORTED_FILTERS
        .iter()
        .map(|name| format!("{name}=x"))
        .collect();
    queries.push("state=QUEUED&creator=someone".into());
    queries.push("made_up_filter=1".into());
    for query in queries {
        let target = format!("/api/v1/agent/runs?{query}");
        let (status, body) = call(&mut store, Method::GET, &target, "");
        assert_eq!(status, 422, "{query}: {body}");
        let name = query.rsplit('&').next().unwrap().split('=').next().unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("{name}: ")),
            "{query}: {detail}"
        );
        assert_eq!(
            body["type"], "/reference/api-and-sdk/troubleshooting/errors/operation-not-supported/",
            "{body}"
        );
    }
    let (status, body) = call(&mut store, Method::GET, "/api/v1/agent/runs?creator=x", "");
    assert_eq!(
        (status, body["detail"].as_str()),
        (
            422,
            Some("creator: this filter is not supported by the local control plane")
        )
    );
}

fn new_run(title: &str) -> NewRun {
    NewRun {
        prompt: "p".into(),
        title: title.into(),
        config: json!({"worker_host": "w"}),
        worker_host: "w".into(),
        team: true,
        metadata: BTreeMap::new(),
    }
}

fn titles(page: &Value) -> Vec<&str> {
    page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["title"].as_str().unwrap())
        .collect()
}

#[test]
fn the_cursor_resumes_after_the_last_run_even_when_runs_change_between_pages() {
    let mut store = RunStore::new(Duration::from_secs(1));
    let ids: Vec<String> = (1..=5u64)
        .map(|n| store.create(new_run(&format!("r{n}")), n * 10).id)
        .collect();
    let (_, first) = call(&mut store, Method::GET, "/api/v1/agent/runs?limit=2", "");
    assert_eq!(titles(&first), ["r5", "r4"]);
    // r1 changes (and so moves to the front of the updated_at order), and a new run arrives.
    store.cancel(&ids[0], &BTreeMap::new(), 100).unwrap();
    store.create(new_run("r6"), 110);
    let cursor = first["page_info"]["next_cursor"].as_str().unwrap();
    let target = format!("/api/v1/agent/runs?limit=2&cursor={cursor}");
    let (status, second) = call(&mut store, Method::GET, &target, "");
    assert_eq!(status, 200, "{second}");
    assert_eq!(titles(&second), ["r3", "r2"]);
    assert_eq!(second["page_info"]["has_next_page"], false, "{second}");
    assert_eq!(second["page_info"]["next_cursor"], Value::Null);

    let bad = [
        format!("/api/v1/agent/runs?limit=2&sort_by=title&cursor={cursor}"),
        format!("/api/v1/agent/runs?limit=2&sort_order=asc&cursor={cursor}"),
        "/api/v1/agent/runs?cursor=2".to_owned(),
    ];
    for target in bad {
        let (status, body) = call(&mut store, Method::GET, &target, "");
        assert_eq!(status, 422, "{target}: {body}");
        assert!(
            body["detail"].as_str().unwrap().starts_with("cursor: "),
            "{body}"
        );
    }
}

#[test]
fn empty_environment_matches_runs_without_one_and_q_searches_the_skill() {
    let mut store = RunStore::new(Duration::from_secs(1));
    let mut with_env = new_run("env");
    with_env.config = json!({"worker_host": "w", "environment_id": "E1"});
    store.create(with_env, 1);
    let mut skilled = new_run("plain");
    skilled.config = json!({"worker_host": "w", "skill_spec": "org/repo:Review.md"});
    store.create(skilled, 2);
    let cases = [
        ("environment_id=empty-environment", vec!["plain"]),
        ("environment_id=E1", vec!["env"]),
        ("q=review", vec!["plain"]),
    ];
    for (query, want) in cases {
        let (_, page) = call(
            &mut store,
            Method::GET,
            &format!("/api/v1/agent/runs?{query}"),
            "",
        );
        assert_eq!(titles(&page), want, "{query}");
    }
    let six: String = (0..6).map(|n| format!("&metadata%5Bk{n}%5D=v")).collect();
    let (status, _) = call(
        &mut store,
        Method::GET,
        &format!("/api/v1/agent/runs?{six}"),
        "",
    );
    assert_eq!(status, 422);
}

#[test]
fn cancel_answers_200_when_delivered_and_202_when_the_worker_is_disconnected() {
    let mut store = RunStore::new(Duration::from_secs(1));
    let now = Instant::now();
    let run = |store: &mut RunStore| {
        let id = store.create(new_run("t"), 1).id;
        store.offers(now, &BTreeMap::from([(1, "w".to_owned())]));
        let claimed = WorkerMessage::TaskClaimed {
            task_id: id.clone(),
            worker_id: "w".into(),
        };
        store.on_message(1, &claimed, now, 2);
        id
    };
    let cancel = |id: &str| format!("/api/v1/agent/runs/{id}/cancel");

    // Held by open connection 1: sent there.
    let held = run(&mut store);
    let open = FakeConnections {
        open: BTreeMap::from([(1, "w".to_owned()), (2, "w".to_owned())]),
        ..FakeConnections::default()
    };
    let (status, body) = call_with(&mut store, &open, Method::POST, &cancel(&held), "");
    assert_eq!((status, body.as_str()), (200, Some(held.as_str())));
    assert_eq!(*open.sent.borrow(), [(1, held.clone())]);

    // Connection 1 ended before the send: pending, sent to the other connection of "w".
    let lost = run(&mut store);
    let closing = FakeConnections {
        open: BTreeMap::from([(1, "w".to_owned()), (2, "w".to_owned())]),
        gone: BTreeSet::from([1]),
        ..FakeConnections::default()
    };
    let (status, _) = call_with(&mut store, &closing, Method::POST, &cancel(&lost), "");
    assert_eq!(status, 202);
    assert_eq!(*closing.sent.borrow(), [(2, lost.clone())]);

    // Detached, no connection of "w" open: pending, nothing sent yet.
    let detached = run(&mut store);
    store.on_disconnected(1, 3);
    let (status, _) = call(&mut store, Method::POST, &cancel(&detached), "");
    assert_eq!(status, 202);
    let (_, item) = call(
        &mut store,
        Method::GET,
        &format!("/api/v1/agent/runs/{detached}"),
        "",
    );
    assert_eq!(item["state"], "CLAIMED");
    assert!(
        item["status_message"]["message"]
            .as_str()
            .unwrap()
            .contains("disconnected"),
        "{item}"
    );
    assert!(store.on_connected("w").contains(&detached));
}

#[test]
fn problem_documents_are_retryable_only_for_conflicts_rate_limits_and_server_errors() {
    let cases = [
        (StatusCode::BAD_REQUEST, false),
        (StatusCode::UNAUTHORIZED, false),
        (StatusCode::NOT_FOUND, false),
        (StatusCode::UNPROCESSABLE_ENTITY, false),
        (StatusCode::CONFLICT, true),
        (StatusCode::TOO_MANY_REQUESTS, true),
        (StatusCode::INTERNAL_SERVER_ERROR, true),
        (StatusCode::SERVICE_UNAVAILABLE, true),
    ];
    for (status, want) in cases {
        let response = problem(status, "/x", "d");
        let should_retry = response.headers()["x-should-retry"].to_str().unwrap();
        assert_eq!(should_retry, want.to_string(), "{status}");
        let bytes = futures_util::FutureExt::now_or_never(response.into_body().collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["retryable"], want, "{status}: {body}");
    }
}

#[test]
fn cancelling_a_terminal_run_is_400_operation_not_supported() {
    let mut store = RunStore::new(Duration::from_secs(1));
    let id = create(&mut store, "t", "w");
    let target = format!("/api/v1/agent/runs/{id}/cancel");
    assert_eq!(call(&mut store, Method::POST, &target, "").0, 200);
    let (status, body) = call(&mut store, Method::POST, &target, "");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["retryable"], false, "{body}");
    let kind = body["type"].as_str().unwrap();
    assert!(kind.contains("/operation-not-supported/"), "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("CANCELLED"),
        "{body}"
    );
}

#[test]
fn a_failed_run_carries_error_code_and_retryable_where_its_reason_maps_to_one() {
    let mut store = RunStore::new(Duration::from_secs(1));
    let now = Instant::now();
    let conns = BTreeMap::from([(1, "w".to_owned())]);
    let mapped = create(&mut store, "mapped", "w");
    let unmapped = create(&mut store, "unmapped", "w");
    for (id, reason) in [(&mapped, "image_pull"), (&unmapped, "agent_invocation")] {
        store.offers(now, &conns);
        let claimed = WorkerMessage::TaskClaimed {
            task_id: id.clone(),
            worker_id: "w".into(),
        };
        store.on_message(1, &claimed, now, 2);
        let failed = WorkerMessage::TaskFailed {
            task_id: id.clone(),
            message: "boom".into(),
            failure_reason: Some(reason.into()),
            exit_code: None,
        };
        store.on_message(1, &failed, now, 3);
    }
    let (_, run) = call(
        &mut store,
        Method::GET,
        &format!("/api/v1/agent/runs/{mapped}"),
        "",
    );
    assert_eq!(run["state"], "FAILED", "{run}");
    assert_eq!(run["status_message"]["message"], "boom", "{run}");
    assert_eq!(
        run["status_message"]["error_code"],
        "environment_setup_failed"
    );
    assert_eq!(run["status_message"]["retryable"], false);
    let (_, run) = call(
        &mut store,
        Method::GET,
        &format!("/api/v1/agent/runs/{unmapped}"),
        "",
    );
    assert_eq!(run["status_message"]["message"], "boom", "{run}");
    assert!(run["status_message"].get("error_code").is_none(), "{run}");
    assert!(run["status_message"].get("retryable").is_none(), "{run}");
}
