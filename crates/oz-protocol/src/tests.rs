//! Round trips and rejections at the JSON level. The worker's own golden tests
//! (`adapters/control_plane/tests.rs`) pin every outbound frame byte for byte.

use serde_json::json;

use crate::{FrameRejection, ServerFrame, WorkerMessage, decode_server_frame};

#[test]
fn every_worker_message_parses_back_to_itself() {
    let messages = [
        WorkerMessage::TaskClaimed {
            task_id: "t".into(),
            worker_id: "w".into(),
        },
        WorkerMessage::TaskRejected {
            task_id: "t".into(),
            reason: "at capacity".into(),
        },
        WorkerMessage::TaskCompleted {
            task_id: "t".into(),
            message: "done".into(),
            task_state: Some(crate::TASK_STATE_CANCELLED.into()),
        },
        WorkerMessage::TaskFailed {
            task_id: "t".into(),
            message: "boom".into(),
            failure_reason: Some("image_pull".into()),
            exit_code: Some(3),
        },
    ];
    for message in messages {
        let text = message.encode();
        assert!(
            text.starts_with(&format!(r#"{{"type":"{}","data":"#, message.kind())),
            "{text}"
        );
        assert_eq!(WorkerMessage::parse(&text).unwrap(), message);
    }
}

#[test]
fn absent_optional_fields_are_omitted_not_null() {
    let text = WorkerMessage::TaskFailed {
        task_id: "t".into(),
        message: "m".into(),
        failure_reason: None,
        exit_code: None,
    }
    .encode();
    assert_eq!(
        text,
        r#"{"type":"task_failed","data":{"task_id":"t","message":"m"}}"#
    );
}

fn decode(value: serde_json::Value) -> Result<ServerFrame, FrameRejection> {
    decode_server_frame(value.to_string().as_bytes(), 1 << 20).map_err(|r| r.reason)
}

#[test]
fn an_assignment_needs_a_task_id_and_a_task() {
    let no_id = decode(json!({"type": "task_assignment", "data": {"task": {}}}));
    assert!(
        matches!(no_id, Err(FrameRejection::MissingTaskId { .. })),
        "{no_id:?}"
    );
    let empty_id = decode(json!({"type": "task_assignment", "data": {"task_id": "", "task": {}}}));
    assert!(
        matches!(empty_id, Err(FrameRejection::MissingTaskId { .. })),
        "{empty_id:?}"
    );
    let no_task = decode(json!({"type": "task_assignment", "data": {"task_id": "t"}}));
    assert!(
        matches!(no_task, Err(FrameRejection::MissingTask)),
        "{no_task:?}"
    );
    let ok = decode(json!({"type": "task_assignment", "data": {"task_id": "t", "task": {}}}));
    assert!(matches!(ok, Ok(ServerFrame::Assignment(_))), "{ok:?}");
}

#[test]
fn a_cancellation_carries_its_task_id() {
    let frame = decode(json!({"type": "task_cancellation", "data": {"task_id": "t5"}}));
    assert!(
        matches!(frame, Ok(ServerFrame::Cancellation(ref id)) if id == "t5"),
        "{frame:?}"
    );
}

#[test]
fn a_frame_over_the_limit_is_not_parsed() {
    let rejection = decode_server_frame(&[b' '; 65], 64).unwrap_err();
    assert_eq!(
        rejection.reason,
        FrameRejection::TooLarge {
            size: 65,
            limit: 64
        }
    );
}
