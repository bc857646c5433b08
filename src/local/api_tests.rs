//! The run API's routing, status codes and list semantics, without a socket.

use std::time::Duration;

use http_body_util::BodyExt;

use super::*;
use crate::local::runs::RunStore;

const KEY: &str = "k";

fn call(store: &mut RunStore, method: Method, target: &str, body: &str) -> (u16, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let auth = format!("Bearer {KEY}");
    let request = ApiRequest {
        method: &method,
        path,
        query: Some(query),
        authorization: Some(auth.as_bytes()),
        body: body.as_bytes(),
    };
    let (response, _) = handle(&request, KEY, store);
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
    let (response, effect) = handle(&request, KEY, &mut store);
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(effect, Effect::None);
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
        (Method::POST, format!("/api/v1/agent/runs/{id}/cancel"), 409),
    ];
    for (method, target, want) in cases {
        let (status, body) = call(&mut store, method.clone(), &target, "");
        assert_eq!(status, want, "{method} {target}: {body}");
        if want >= 400 {
            assert_eq!(body["status"], want, "{body}");
            assert!(body["detail"].is_string(), "{body}");
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
