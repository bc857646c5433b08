//! Classifies every server → worker frame: an assignment, a cancellation, or a rejected frame
//! with a specific reason. Pure and panic-free; the worker's connection logs rejections.
//!
//! A rejected frame is logged once at warn with its reason and, when it can be extracted, the
//! `task_id`. The raw frame is never logged at any level (assignments carry `env_vars`
//! secrets), and reasons never quote a value from the frame, only field paths and JSON kinds.
//! The connection survives every rejection.
//!
//! What the worker replies to each kind of frame (the Go worker replies nothing to a bad frame,
//! and neither do we: a `task_failed` is terminal on the server and a `task_rejected` re-queues a
//! task that will fail the same way, so either would need Warp's server to agree first):
//!
//! | Frame | Classified as | Worker reply |
//! |---|---|---|
//! | valid `task_assignment` | `ServerFrame::Assignment` | the app claims or rejects it |
//! | valid `task_cancellation` | `ServerFrame::Cancellation` | none (the app cancels the task) |
//! | larger than `max_frame_size` | `FrameRejection::TooLarge` | none |
//! | not JSON, or invalid UTF-8 | `FrameRejection::InvalidJson` | none |
//! | JSON but not an object | `FrameRejection::NotAnObject` | none |
//! | no `type`, or `type` not a string | `FrameRejection::MissingType` | none |
//! | unknown `type` (incl. `heartbeat`) | `FrameRejection::UnknownType` | none |
//! | `data` missing, `null` or not an object | `FrameRejection::BadData` | none |
//! | assignment with `task` missing or `null` | `FrameRejection::MissingTask` | none |
//! | `task_id` missing, `null`, not a string or empty | `FrameRejection::MissingTaskId` | none |
//! | a field of the wrong type (e.g. `15.0` for an integer) | `FrameRejection::WrongFieldType` | none |

use std::fmt;

use serde_json::Value;

use crate::{AssignmentData, TASK_ASSIGNMENT, TASK_CANCELLATION};

/// A well-formed server → worker frame.
#[derive(Debug)]
pub enum ServerFrame {
    /// A `task_assignment` whose `task_id` is a non-empty string and whose `task` is an object.
    Assignment(Box<AssignmentData>),
    /// A `task_cancellation` with a non-empty `task_id`.
    Cancellation(String),
}

/// A rejected frame: the reason plus what could be extracted safely for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why the frame was rejected.
    pub reason: FrameRejection,
    /// The `task_id`, when the frame had a string one.
    pub task_id: Option<String>,
}

/// Why a frame was rejected. No variant carries a value taken from the frame, except the
/// (truncated) unknown message type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameRejection {
    /// Larger than the configured limit.
    #[error("frame too large: {size} bytes, limit {limit} bytes")]
    TooLarge {
        /// The frame length.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Not valid JSON (or not UTF-8).
    #[error("Failed to unmarshal message: {0}")]
    InvalidJson(String),
    /// Valid JSON, but not an object.
    #[error("Failed to unmarshal message: the envelope is not a JSON object")]
    NotAnObject,
    /// `type` is absent or not a string.
    #[error("Failed to unmarshal message: `type` is missing or not a string")]
    MissingType,
    /// A type this worker does not handle.
    #[error("Unknown message type: {0}")]
    UnknownType(String),
    /// `data` is absent, `null`, or not an object.
    #[error("Failed to unmarshal {kind}: `data` is {found}, expected an object")]
    BadData {
        /// The message type.
        kind: &'static str,
        /// What was found instead (`missing`, `null`, `a string`, ...).
        found: &'static str,
    },
    /// An assignment whose `task` is absent or `null`.
    #[error("Failed to unmarshal task assignment: data.task is missing or null")]
    MissingTask,
    /// `task_id` is absent, `null` or empty.
    #[error("Failed to unmarshal {kind}: data.task_id is missing or empty")]
    MissingTaskId {
        /// The message type.
        kind: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("Failed to unmarshal {kind}: {path}: {detail}")]
    WrongFieldType {
        /// The message type.
        kind: &'static str,
        /// The field path, e.g. `data.task.agent_config_snapshot.idle_timeout_minutes`.
        path: String,
        /// What was wrong, without the value.
        detail: String,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)
    }
}

/// Longest unknown message type quoted in a log line.
const MAX_TYPE_CHARS: usize = 64;

/// Classifies one frame. `max_frame_size` bounds what is parsed at all.
///
/// # Errors
/// A [`Rejection`] naming why the frame is not a well-formed assignment or cancellation.
pub fn decode_server_frame(frame: &[u8], max_frame_size: usize) -> Result<ServerFrame, Rejection> {
    let reject = |reason| Rejection {
        reason,
        task_id: None,
    };
    if frame.len() > max_frame_size {
        return Err(reject(FrameRejection::TooLarge {
            size: frame.len(),
            limit: max_frame_size,
        }));
    }
    // serde_json syntax errors name a position, never the content.
    let envelope: Value = serde_json::from_slice(frame)
        .map_err(|err| reject(FrameRejection::InvalidJson(err.to_string())))?;
    let Value::Object(mut envelope) = envelope else {
        return Err(reject(FrameRejection::NotAnObject));
    };
    let kind = match envelope.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        _ => return Err(reject(FrameRejection::MissingType)),
    };
    let kind: &'static str = match kind.as_str() {
        TASK_ASSIGNMENT => "task assignment",
        TASK_CANCELLATION => "task cancellation",
        other => {
            let shown: String = other.chars().take(MAX_TYPE_CHARS).collect();
            return Err(reject(FrameRejection::UnknownType(shown)));
        }
    };
    let data = match envelope.remove("data") {
        Some(Value::Object(data)) => data,
        other => {
            let found = json_kind(other.as_ref());
            return Err(reject(FrameRejection::BadData { kind, found }));
        }
    };
    let task_id = match data.get("task_id") {
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        _ => None,
    };
    let with_id = |reason| Rejection {
        reason,
        task_id: task_id.clone(),
    };
    if kind == "task cancellation" {
        let id = task_id
            .clone()
            .ok_or_else(|| with_id(FrameRejection::MissingTaskId { kind }))?;
        return Ok(ServerFrame::Cancellation(id));
    }
    let dto: AssignmentData =
        serde_path_to_error::deserialize(Value::Object(data)).map_err(|err| {
            let path = err.path().to_string();
            with_id(FrameRejection::WrongFieldType {
                kind,
                path: format!("data.{path}"),
                detail: sanitize(&err.into_inner().to_string()),
            })
        })?;
    if dto.task_id.as_deref().is_none_or(str::is_empty) {
        return Err(with_id(FrameRejection::MissingTaskId { kind }));
    }
    if dto.task.is_none() {
        return Err(with_id(FrameRejection::MissingTask));
    }
    Ok(ServerFrame::Assignment(Box::new(dto)))
}

fn json_kind(value: Option<&Value>) -> &'static str {
    match value {
        None => "missing",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    }
}

/// Drops any literal value from a serde error message, keeping only its kind:
/// ``invalid type: string "s3cr3t", expected i64`` becomes `invalid type: string, expected i64`.
pub fn sanitize(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (found, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, "?"));
            let found_kind = found.split(['`', '"']).next().unwrap_or_default().trim();
            return format!("{prefix}{found_kind}, expected {expected}");
        }
    }
    if message.contains('"') {
        "invalid value".to_owned()
    } else {
        message.to_owned()
    }
}
