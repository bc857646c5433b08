//! The public run API subset, as the official `oz-agent-sdk` (0.15) sends and parses it.
//!
//! Contract (read from the SDK's request/response models), under `/api/v1`, every request
//! with `Authorization: Bearer <key>` (else 401):
//! * `POST /agent/runs`: body `AgentRunParams` (`prompt`, `title`, `config` =
//!   AmbientAgentConfig with `worker_host`, `model_id`, …, `team`, `metadata`, …); answers
//!   `AgentRunResponse` `{run_id, task_id, state, at_capacity}`. A body that is not JSON, has
//!   a mistyped field, no prompt (and no skill) or no self-hosted `config.worker_host` → 422.
//! * `GET /agent/runs/{run_id}`: `RunItem` (required: `run_id`, `task_id`, `state`, `title`,
//!   `prompt`, `created_at`, `updated_at`; also `started_at`, `status_message: {message}`,
//!   `agent_config`, `metadata`, `scope`, `source`, `execution_location`); unknown → 404.
//! * `GET /agent/runs`: query `state` (repeated), `limit` (1-100, default 20), `cursor`,
//!   `sort_by` (`updated_at` default, `created_at`, `title`, `agent`), `sort_order`
//!   (`desc` default), `model_id`, `environment_id`, `name`, `q`, `source`,
//!   `execution_location`, `skill`/`skill_spec`, `metadata[key]=value`, `created_after`,
//!   `created_before`, `updated_after` (RFC 3339); answers `{runs: [RunItem],
//!   page_info: {has_next_page, next_cursor}}`. The cursor is opaque to clients (here: the
//!   offset into the filtered, sorted list). Other filters are accepted and ignored.
//! * `POST /agent/runs/{run_id}/cancel`: the SDK casts the body to `str`; we answer the run
//!   id as `text/plain`. Unknown → 404; already terminal → 409.
//!
//! Errors are RFC 7807 problem documents, as Warp's API sends them (`type`, `title`,
//! `status`, `detail`, `instance`, `error`, `retryable`, content type
//! `application/problem+json`), with `x-should-retry: false` so the SDK does not retry a 409.

use std::collections::BTreeMap;

use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::api_model::{parse_create, run_item};
use super::runs::{CancelError, Run, RunState};
use super::timestamp;

/// The API prefix.
pub const API_PREFIX: &str = "/api/v1";

/// What the server must do besides answering.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing.
    None,
    /// Send a `task_cancellation` for this run on this connection.
    Cancel(super::ConnectionId, String),
}

/// An HTTP request, already read.
#[derive(Debug)]
pub struct ApiRequest<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path.
    pub path: &'a str,
    /// The raw query.
    pub query: Option<&'a str>,
    /// The `Authorization` header value.
    pub authorization: Option<&'a [u8]>,
    /// The body.
    pub body: &'a [u8],
}

/// Answers one API request against `store`.
pub fn handle(
    request: &ApiRequest<'_>,
    api_key: &str,
    store: &mut super::runs::RunStore,
) -> (Response<Full<Bytes>>, Effect) {
    let instance = request.path;
    let expected = format!("Bearer {api_key}");
    if request.authorization != Some(expected.as_bytes()) {
        let detail = "missing or wrong Authorization: Bearer <key>";
        return (
            problem(StatusCode::UNAUTHORIZED, instance, detail),
            Effect::None,
        );
    }
    let rest = request.path.strip_prefix(API_PREFIX).unwrap_or_default();
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').skip(1).collect();
    let now = timestamp::now_us();
    match (request.method, segments.as_slice()) {
        (&Method::POST, ["agent", "runs"]) => match parse_create(request.body) {
            Ok(spec) => {
                let run = store.create(spec, now);
                let body = json!({
                    "run_id": run.id, "task_id": run.id,
                    "state": run.state.as_str(), "at_capacity": false,
                });
                (json_response(StatusCode::OK, &body), Effect::None)
            }
            Err(detail) => (
                problem(StatusCode::UNPROCESSABLE_ENTITY, instance, &detail),
                Effect::None,
            ),
        },
        (&Method::GET, ["agent", "runs"]) => match list(store, request.query.unwrap_or("")) {
            Ok(body) => (json_response(StatusCode::OK, &body), Effect::None),
            Err(detail) => (
                problem(StatusCode::UNPROCESSABLE_ENTITY, instance, &detail),
                Effect::None,
            ),
        },
        (&Method::GET, ["agent", "runs", id]) => match store.get(id) {
            Some(run) => (json_response(StatusCode::OK, &run_item(run)), Effect::None),
            None => (not_found(instance, id), Effect::None),
        },
        (&Method::POST, ["agent", "runs", id, "cancel"]) => match store.cancel(id, now) {
            Ok(action) => {
                let effect = match action {
                    super::runs::CancelAction::Send(conn) => Effect::Cancel(conn, (*id).into()),
                    super::runs::CancelAction::CancelledInQueue => Effect::None,
                };
                let mut response = Response::new(Full::new(Bytes::from((*id).to_owned())));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain"),
                );
                (response, effect)
            }
            Err(CancelError::NotFound) => (not_found(instance, id), Effect::None),
            Err(CancelError::Finished(state)) => {
                let detail = format!("run {id} already finished ({})", state.as_str());
                (
                    problem(StatusCode::CONFLICT, instance, &detail),
                    Effect::None,
                )
            }
        },
        _ => {
            let detail = format!("no route for {} {}", request.method, request.path);
            (
                problem(StatusCode::NOT_FOUND, instance, &detail),
                Effect::None,
            )
        }
    }
}

fn not_found(instance: &str, id: &str) -> Response<Full<Bytes>> {
    problem(StatusCode::NOT_FOUND, instance, &format!("no run {id:?}"))
}

/// The list filters.
#[derive(Debug, Default)]
struct Filters {
    states: Vec<RunState>,
    unknown_state: bool,
    strings: Vec<(String, String)>,
    metadata: BTreeMap<String, String>,
    created_after: Option<u64>,
    created_before: Option<u64>,
    updated_after: Option<u64>,
    q: Option<String>,
}

fn list(store: &super::runs::RunStore, query: &str) -> Result<Value, String> {
    let mut filters = Filters::default();
    let (mut limit, mut offset) = (20usize, 0usize);
    let (mut sort_by, mut descending) = ("updated_at".to_owned(), true);
    let time = |key: &str, value: &str| {
        timestamp::parse(value).ok_or_else(|| format!("{key}: expected an RFC 3339 timestamp"))
    };
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let (key, value) = (key.into_owned(), value.into_owned());
        match key.as_str() {
            "state" => match RunState::parse(&value) {
                Some(state) => filters.states.push(state),
                None if ["PENDING", "BLOCKED", "ERROR"].contains(&value.as_str()) => {
                    filters.unknown_state = true;
                }
                None => return Err(format!("state: unknown run state {value:?}")),
            },
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or("limit: expected an integer from 1 to 100")?;
            }
            "cursor" => {
                offset = value
                    .parse()
                    .map_err(|_| "cursor: not a cursor we issued")?
            }
            "sort_by" => {
                if !["updated_at", "created_at", "title", "agent"].contains(&value.as_str()) {
                    return Err("sort_by: expected updated_at, created_at, title or agent".into());
                }
                sort_by = value;
            }
            "sort_order" => {
                descending = match value.as_str() {
                    "desc" => true,
                    "asc" => false,
                    _ => return Err("sort_order: expected asc or desc".into()),
                };
            }
            "created_after" => filters.created_after = Some(time(&key, &value)?),
            "created_before" => filters.created_before = Some(time(&key, &value)?),
            "updated_after" => filters.updated_after = Some(time(&key, &value)?),
            "q" => filters.q = Some(value.to_lowercase()),
            "model_id" | "environment_id" | "name" | "source" | "execution_location" | "skill"
            | "skill_spec" => filters.strings.push((key, value)),
            _ => {
                if let Some(name) = key
                    .strip_prefix("metadata[")
                    .and_then(|k| k.strip_suffix(']'))
                {
                    filters.metadata.insert(name.to_owned(), value);
                }
            }
        }
    }
    let mut runs: Vec<&Run> = store
        .all()
        .into_iter()
        .filter(|r| matches(r, &filters))
        .collect();
    runs.sort_by(|a, b| {
        let order = match sort_by.as_str() {
            "created_at" => a.created_at.cmp(&b.created_at),
            "title" => a.spec.title.cmp(&b.spec.title),
            "agent" => skill(a).cmp(&skill(b)),
            _ => a.updated_at.cmp(&b.updated_at),
        }
        .then(a.seq.cmp(&b.seq));
        if descending { order.reverse() } else { order }
    });
    let page: Vec<Value> = runs
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| run_item(r))
        .collect();
    let next = offset + page.len();
    let has_next = next < runs.len();
    Ok(json!({
        "runs": page,
        "page_info": {
            "has_next_page": has_next,
            "next_cursor": if has_next { Value::from(next.to_string()) } else { Value::Null },
        },
    }))
}

fn skill(run: &Run) -> String {
    run.spec.config["skill_spec"]
        .as_str()
        .unwrap_or("\u{10ffff}")
        .to_owned()
}

fn matches(run: &Run, f: &Filters) -> bool {
    if (!f.states.is_empty() || f.unknown_state) && !f.states.contains(&run.state) {
        return false;
    }
    let config = &run.spec.config;
    let string_ok = f.strings.iter().all(|(key, value)| {
        let have = match key.as_str() {
            "source" => Some("API"),
            "execution_location" => Some("REMOTE"),
            "name" => config["name"].as_str(),
            "skill" | "skill_spec" => config["skill_spec"].as_str(),
            other => config[other].as_str(),
        };
        have == Some(value.as_str())
    });
    let meta_ok = f
        .metadata
        .iter()
        .all(|(k, v)| run.spec.metadata.get(k) == Some(v));
    let q_ok = f.q.as_ref().is_none_or(|q| {
        run.spec.title.to_lowercase().contains(q) || run.spec.prompt.to_lowercase().contains(q)
    });
    string_ok
        && meta_ok
        && q_ok
        && f.created_after.is_none_or(|t| run.created_at > t)
        && f.created_before.is_none_or(|t| run.created_at < t)
        && f.updated_after.is_none_or(|t| run.updated_at > t)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// An RFC 7807 problem document, shaped like Warp's.
pub fn problem(status: StatusCode, instance: &str, detail: &str) -> Response<Full<Bytes>> {
    let (slug, title) = match status {
        StatusCode::UNAUTHORIZED => (
            "authentication-required",
            "The request lacks valid authentication credentials.",
        ),
        StatusCode::NOT_FOUND => (
            "resource-not-found",
            "The requested resource does not exist.",
        ),
        StatusCode::CONFLICT => (
            "conflict",
            "The request conflicts with the current state of the resource.",
        ),
        _ => (
            "invalid-request",
            "The request contains invalid or missing parameters.",
        ),
    };
    let body = json!({
        "type": format!("/reference/api-and-sdk/troubleshooting/errors/{slug}/"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "instance": instance,
        "error": format!("{title} ({detail})"),
        "retryable": false,
    });
    let mut response = json_response(status, &body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/problem+json"),
    );
    headers.insert("x-should-retry", header::HeaderValue::from_static("false"));
    response
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
