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
//!   page_info: {has_next_page, next_cursor}}`. The cursor is opaque to clients; here it
//!   encodes the sort, and the sort key and id of the page's last run, so the next page starts
//!   right after that run however the list changed meanwhile. Any other parameter, including
//!   the SDK's `creator`, `executor`, `ancestor_run_id`, `schedule_id`, `artifact_type`,
//!   `automation_id` and `factory_uid`, is refused with 422 naming it, rather than ignored.
//! * `POST /agent/runs/{run_id}/cancel`: the SDK casts the body to `str`; we answer the run
//!   id as `text/plain`: 200 when the cancellation was sent to the connection holding the run
//!   (or the run was only queued), 202 when the worker holding it is disconnected and the
//!   cancellation is pending (sent to each connection of its worker id until the run ends).
//!   Unknown → 404; already terminal (`SUCCEEDED`, `FAILED`, `CANCELLED`) → 400
//!   `operation_not_supported`, as the SDK's `runs.cancel` documents ("Runs that are in a
//!   terminal state … return 400"; 409 is Warp's "pending, retry after a moment").
//!
//! Errors are RFC 7807 problem documents, as Warp's API sends them (`type`, `title`,
//! `status`, `detail`, `instance`, `error`, `retryable`, content type
//! `application/problem+json`). `retryable` is true only where retrying the same request can
//! succeed (409 conflict, 429, 5xx), and `x-should-retry` says the same to the SDK.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::ConnectionId;
use super::api_model::{parse_create, run_item};
use super::runs::{CancelAction, CancelError, Run, RunState, RunStore};
use super::timestamp;

/// The API prefix.
pub(crate) const API_PREFIX: &str = "/api/v1";

/// The list parameters of the SDK's `RunListParams` that this server does not implement.
const UNSUPPORTED_FILTERS: [&str; 7] = [
    "ancestor_run_id",
    "artifact_type",
    "automation_id",
    "creator",
    "executor",
    "factory_uid",
    "schedule_id",
];

/// The server's open worker connections, as the cancel endpoint needs them.
pub(crate) trait Connections {
    /// The `worker_id` of each open connection.
    fn worker_ids(&self) -> BTreeMap<ConnectionId, String>;
    /// Sends a `task_cancellation` for `run_id` on `conn`; false when that connection is gone.
    fn send_cancellation(&self, conn: ConnectionId, run_id: &str) -> bool;
}

/// An HTTP request, already read.
#[derive(Debug)]
pub(crate) struct ApiRequest<'a> {
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

/// Answers one API request against `store`; a cancel sends its `task_cancellation`s through
/// `connections` before answering.
pub(crate) fn handle(
    request: &ApiRequest<'_>,
    api_key: &str,
    store: &mut RunStore,
    connections: &dyn Connections,
) -> Response<Full<Bytes>> {
    let instance = request.path;
    let expected = format!("Bearer {api_key}");
    if request.authorization != Some(expected.as_bytes()) {
        let detail = "missing or wrong Authorization: Bearer <key>";
        return problem(StatusCode::UNAUTHORIZED, instance, detail);
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
                json_response(StatusCode::OK, &body)
            }
            Err(detail) => problem(StatusCode::UNPROCESSABLE_ENTITY, instance, &detail),
        },
        (&Method::GET, ["agent", "runs"]) => match list(store, request.query.unwrap_or("")) {
            Ok(body) => json_response(StatusCode::OK, &body),
            Err(ListError::Invalid(detail)) => {
                problem(StatusCode::UNPROCESSABLE_ENTITY, instance, &detail)
            }
            Err(ListError::Unsupported(name)) => {
                let detail = if UNSUPPORTED_FILTERS.contains(&name.as_str()) {
                    format!("{name}: this filter is not supported by the local control plane")
                } else {
                    format!("{name}: unknown list parameter")
                };
                unsupported(instance, &detail)
            }
        },
        (&Method::GET, ["agent", "runs", id]) => match store.get(id) {
            Some(run) => json_response(StatusCode::OK, &run_item(run)),
            None => not_found(instance, id),
        },
        (&Method::POST, ["agent", "runs", id, "cancel"]) => {
            match cancel(store, connections, id, now) {
                Ok(status) => {
                    let mut response = Response::new(Full::new(Bytes::from((*id).to_owned())));
                    *response.status_mut() = status;
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("text/plain"),
                    );
                    response
                }
                Err(CancelError::NotFound) => not_found(instance, id),
                Err(CancelError::Finished(state)) => {
                    let detail = format!(
                        "run {id} is in a terminal state ({}) and cannot be cancelled",
                        state.as_str()
                    );
                    problem_with(
                        StatusCode::BAD_REQUEST,
                        (
                            "operation-not-supported",
                            "The requested operation is not supported for this resource or state.",
                        ),
                        instance,
                        detail.as_str(),
                    )
                }
            }
        }
        _ => {
            let detail = format!("no route for {} {}", request.method, request.path);
            problem(StatusCode::NOT_FOUND, instance, &detail)
        }
    }
}

/// Requests cancellation of run `id` and sends what it takes; 200 when it reached the
/// connection holding the run (or the run was only queued), 202 when it is pending.
fn cancel(
    store: &mut RunStore,
    connections: &dyn Connections,
    id: &str,
    now: u64,
) -> Result<StatusCode, CancelError> {
    let workers = connections.worker_ids();
    let mut action = store.cancel(id, &workers, now)?;
    if let CancelAction::Send(conn) = action {
        if connections.send_cancellation(conn, id) {
            return Ok(StatusCode::OK);
        }
        action = store.cancel_undelivered(id, &workers);
    }
    match action {
        CancelAction::Pending(targets) => {
            for conn in targets {
                connections.send_cancellation(conn, id);
            }
            Ok(StatusCode::ACCEPTED)
        }
        CancelAction::CancelledInQueue | CancelAction::Send(_) => Ok(StatusCode::OK),
    }
}

fn unsupported(instance: &str, detail: &str) -> Response<Full<Bytes>> {
    let title = "The requested operation is not supported.";
    problem_with(
        StatusCode::UNPROCESSABLE_ENTITY,
        ("operation-not-supported", title),
        instance,
        detail,
    )
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

/// Why a list query is refused (422).
#[derive(Debug)]
enum ListError {
    /// A parameter has a bad value; the detail says which and why.
    Invalid(String),
    /// A parameter this server does not implement, by name.
    Unsupported(String),
}

impl From<String> for ListError {
    fn from(detail: String) -> Self {
        Self::Invalid(detail)
    }
}

impl From<&str> for ListError {
    fn from(detail: &str) -> Self {
        Self::Invalid(detail.to_owned())
    }
}

/// Where a page starts: right after the run with this sort key and id, in this sort.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// `sort_by`.
    s: String,
    /// True for `sort_order=desc`.
    d: bool,
    /// The last run's sort key (a number of microseconds, or text).
    k: Value,
    /// The last run's id.
    r: String,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The sort key of `run` for `sort_by`, as stored in a [`Cursor`].
fn sort_key(run: &Run, sort_by: &str) -> Value {
    match sort_by {
        "created_at" => run.created_at.into(),
        "title" => run.spec.title.clone().into(),
        "agent" => skill(run).into(),
        _ => run.updated_at.into(),
    }
}

/// Orders `(sort key, run id)` pairs ascending; keys of one sort are all numbers or all text.
fn compare_keys(a: (&Value, &str), b: (&Value, &str)) -> std::cmp::Ordering {
    let by_key = match (a.0, b.0) {
        (Value::Number(x), Value::Number(y)) => x.as_u64().cmp(&y.as_u64()),
        (x, y) => x.as_str().cmp(&y.as_str()),
    };
    by_key.then_with(|| a.1.cmp(b.1))
}

fn list(store: &RunStore, query: &str) -> Result<Value, ListError> {
    let mut filters = Filters::default();
    let mut limit = 20usize;
    let mut cursor = None;
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
                None => return Err(format!("state: unknown run state {value:?}").into()),
            },
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or("limit: expected an integer from 1 to 100")?;
            }
            "cursor" => {
                cursor = Some(Cursor::decode(&value).ok_or("cursor: not a cursor we issued")?);
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
            _ => match key
                .strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
            {
                Some(name) => {
                    filters.metadata.insert(name.to_owned(), value);
                }
                None => return Err(ListError::Unsupported(key)),
            },
        }
    }
    if filters.metadata.len() > 5 {
        return Err("metadata: at most 5 pairs per request".into());
    }
    if let Some(cursor) = &cursor
        && (cursor.s != sort_by || cursor.d != descending)
    {
        return Err("cursor: issued for another sort_by or sort_order".into());
    }
    let runs: Vec<&Run> = store
        .all()
        .into_iter()
        .filter(|r| matches(r, &filters))
        .collect();
    let mut keyed: Vec<(Value, &Run)> = runs
        .into_iter()
        .map(|run| (sort_key(run, &sort_by), run))
        .collect();
    let in_order = |a: (&Value, &str), b: (&Value, &str)| {
        let order = compare_keys(a, b);
        if descending { order.reverse() } else { order }
    };
    keyed.sort_by(|(ka, a), (kb, b)| in_order((ka, &a.id), (kb, &b.id)));
    if let Some(cursor) = &cursor {
        keyed.retain(|(key, run)| in_order((key, &run.id), (&cursor.k, &cursor.r)).is_gt());
    }
    let has_next = keyed.len() > limit;
    keyed.truncate(limit);
    let next_cursor = match keyed.last() {
        Some((key, run)) if has_next => Value::from(
            Cursor {
                s: sort_by.clone(),
                d: descending,
                k: key.clone(),
                r: run.id.clone(),
            }
            .encode(),
        ),
        _ => Value::Null,
    };
    let page: Vec<Value> = keyed.iter().map(|(_, run)| run_item(run)).collect();
    Ok(json!({
        "runs": page,
        "page_info": {"has_next_page": has_next, "next_cursor": next_cursor},
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
            "environment_id" if value == "empty-environment" => {
                return config["environment_id"].as_str().is_none_or(str::is_empty);
            }
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
        let skill_spec = config["skill_spec"].as_str().unwrap_or_default();
        [run.spec.title.as_str(), &run.spec.prompt, skill_spec]
            .iter()
            .any(|text| text.to_lowercase().contains(q))
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
pub(crate) fn problem(status: StatusCode, instance: &str, detail: &str) -> Response<Full<Bytes>> {
    let kind = match status {
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
    problem_with(status, kind, instance, detail)
}

/// A problem document of `kind` (the type's slug, which is the SDK's `ErrorCode` spelled with
/// dashes, and the title).
fn problem_with(
    status: StatusCode,
    (slug, title): (&str, &str),
    instance: &str,
    detail: &str,
) -> Response<Full<Bytes>> {
    let body = json!({
        "type": format!("/reference/api-and-sdk/troubleshooting/errors/{slug}/"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "instance": instance,
        "error": format!("{title} ({detail})"),
        "retryable": retryable(status),
    });
    let mut response = json_response(status, &body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/problem+json"),
    );
    let should_retry = if retryable(status) { "true" } else { "false" };
    headers.insert(
        "x-should-retry",
        header::HeaderValue::from_static(should_retry),
    );
    response
}

/// Whether the same request may succeed when retried: a conflict with a passing state (409),
/// rate limiting (429) and server errors; never a client error.
pub(crate) fn retryable(status: StatusCode) -> bool {
    status == StatusCode::CONFLICT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
