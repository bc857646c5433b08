//! Unit tests for the control-plane adapter: golden JSON, the frame decoder, the back-off
//! value and the handshake URL. Socket-level tests live in `tests/scenarios/control_plane.rs`.

use std::time::Duration;

use serde_json::json;

use super::backoff::{Backoff, BackoffConfig, InvalidBackoff};
use oz_protocol::decode::sanitize;
use oz_protocol::{FrameRejection, WorkerMessage};

use super::decode::{Inbound, decode_frame};
use super::handshake::{UrlError, worker_url};
use crate::domain::{FailureReason, OwnerType, TaskId, TaskReport};

const LIMIT: usize = 1024 * 1024;

fn id(raw: &str) -> TaskId {
    TaskId::parse(raw).unwrap()
}

// === Outbound golden JSON ===

#[test]
fn every_outbound_message_matches_its_golden_json() {
    let cases = [
        (
            TaskReport::Claimed {
                task_id: id("t1"),
                worker_id: "w1".into(),
            },
            r#"{"type":"task_claimed","data":{"task_id":"t1","worker_id":"w1"}}"#,
        ),
        (
            TaskReport::Rejected {
                task_id: id("t1"),
                reason: "worker at maximum concurrency".into(),
            },
            r#"{"type":"task_rejected","data":{"task_id":"t1","reason":"worker at maximum concurrency"}}"#,
        ),
        (
            TaskReport::Completed {
                task_id: id("t1"),
                message: "Task completed successfully".into(),
                cancelled: false,
            },
            r#"{"type":"task_completed","data":{"task_id":"t1","message":"Task completed successfully"}}"#,
        ),
        (
            TaskReport::Completed {
                task_id: id("t1"),
                message: "Task cancelled by user request.".into(),
                cancelled: true,
            },
            r#"{"type":"task_completed","data":{"task_id":"t1","message":"Task cancelled by user request.","task_state":"CANCELLED"}}"#,
        ),
        (
            TaskReport::Failed {
                task_id: id("t1"),
                message: "Failed to execute task: boom".into(),
                failure_reason: FailureReason::ContainerExit,
                exit_code: Some(143),
            },
            r#"{"type":"task_failed","data":{"task_id":"t1","message":"Failed to execute task: boom","failure_reason":"container_exit","exit_code":143}}"#,
        ),
        (
            TaskReport::Failed {
                task_id: id("t1"),
                message: "m".into(),
                failure_reason: FailureReason::Unknown,
                exit_code: None,
            },
            r#"{"type":"task_failed","data":{"task_id":"t1","message":"m","failure_reason":"unknown"}}"#,
        ),
        (
            TaskReport::Failed {
                task_id: id("t1"),
                message: "m".into(),
                failure_reason: FailureReason::GracefulShutdown,
                exit_code: Some(0),
            },
            r#"{"type":"task_failed","data":{"task_id":"t1","message":"m","failure_reason":"graceful_shutdown"}}"#,
        ),
    ];
    for (report, golden) in cases {
        assert_eq!(
            super::decode::message(&report).encode(),
            golden,
            "{report:?}"
        );
    }
}

#[test]
fn outbound_messages_decode_on_the_server_side() {
    let report = TaskReport::Failed {
        task_id: id("t9"),
        message: "boom".into(),
        failure_reason: FailureReason::ImagePull,
        exit_code: Some(2),
    };
    let decoded = WorkerMessage::parse(&super::decode::message(&report).encode()).unwrap();
    assert_eq!(
        decoded,
        WorkerMessage::TaskFailed {
            task_id: "t9".into(),
            message: "boom".into(),
            failure_reason: Some("image_pull".into()),
            exit_code: Some(2),
        }
    );
    assert!(decoded.is_terminal());
}

// === Inbound fixtures ===

fn full_assignment() -> serde_json::Value {
    json!({"type": "task_assignment", "extra_envelope_key": 1, "data": {
        "task_id": "run-1",
        "execution_id": "exec-1",
        "unknown_field": {"ignored": true},
        "task": {
            "id": "run-1",
            "title": "Fix the bug",
            "task_definition": {"prompt": "do it"},
            "created_at": "2026-01-02T03:04:05Z",
            "updated_at": "",
            "owner": {"Type": "TEAM", "Id": 42},
            "agent_conversation_id": "conv-1",
            "agent_config_snapshot": {
                "environment_id": "env-1",
                "base_prompt": "bp",
                "model_id": "gpt",
                "profile_id": "prof",
                "skill_spec": "skills",
                "mcp_servers": {"github": {"url": "https://x"}},
                "computer_use_enabled": true,
                "idle_timeout_minutes": 15,
                "harness": {"type": "claude"},
                "harness_auth_secrets": {"claude_auth_secret_name": "sec"},
                "inference_providers": {"aws": {"disabled": false, "role_arn": "arn:r", "region": "us-east-1"}},
                "session_sharing": {"public_access": "VIEWER"},
                "snapshot_disabled": true,
                "snapshot_upload_timeout_secs": 30,
                "snapshot_script_timeout_secs": 40
            }
        },
        "docker_image": "img:1",
        "sidecar_image": "sidecar:1",
        "env_vars": {"WARP_API_KEY": "task-secret"},
        "additional_sidecars": [
            {"image": "a:1", "mount_path": "/a"},
            {"image": "b:1", "mount_path": "/b", "read_write": true}
        ],
        "additional_oz_args": ["--skip-initial-turn"],
        "instance_shape": {"vcpus": 2, "memory_gb": 4}
    }})
}

fn decode(value: &serde_json::Value) -> Inbound {
    decode_frame(value.to_string().as_bytes(), LIMIT)
}

fn rejection(frame: &[u8]) -> (FrameRejection, Option<String>) {
    match decode_frame(frame, LIMIT) {
        Inbound::Rejected(r) => (r.reason, r.task_id),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_full_assignment_decodes_every_field() {
    let Inbound::Assignment(a) = decode(&full_assignment()) else {
        panic!("not an assignment");
    };
    assert_eq!(a.task_id.as_str(), "run-1");
    assert_eq!(a.execution_id, "exec-1");
    assert_eq!(a.task.title, "Fix the bug");
    assert_eq!(a.task.prompt.as_deref(), Some("do it"));
    assert_eq!(a.task.created_at.as_deref(), Some("2026-01-02T03:04:05Z"));
    assert_eq!(a.task.updated_at.as_deref(), Some(""));
    let owner = a.task.owner.as_ref().unwrap();
    assert_eq!((owner.kind.clone(), owner.id), (OwnerType::Team, 42));
    assert_eq!(a.task.agent_conversation_id.as_deref(), Some("conv-1"));
    let cfg = a.task.agent_config.as_ref().unwrap();
    assert_eq!(cfg.environment_id.as_deref(), Some("env-1"));
    assert_eq!(cfg.model_id.as_deref(), Some("gpt"));
    assert_eq!(cfg.mcp_servers["github"], json!({"url": "https://x"}));
    assert_eq!(cfg.idle_timeout_minutes, Some(15));
    assert_eq!(cfg.harness_type.as_deref(), Some("claude"));
    assert_eq!(cfg.claude_auth_secret_name.as_deref(), Some("sec"));
    let aws = cfg.aws_inference.as_ref().unwrap();
    assert_eq!(
        (aws.role_arn.as_str(), aws.region.as_str()),
        ("arn:r", "us-east-1")
    );
    assert_eq!(cfg.public_access.as_deref(), Some("VIEWER"));
    assert_eq!(cfg.snapshot_disabled, Some(true));
    assert_eq!(cfg.snapshot_upload_timeout_secs, Some(30));
    assert_eq!(cfg.snapshot_script_timeout_secs, Some(40));
    assert_eq!(a.docker_image.as_deref(), Some("img:1"));
    assert_eq!(a.sidecar_image.as_deref(), Some("sidecar:1"));
    assert_eq!(a.env_vars["WARP_API_KEY"], "task-secret");
    assert!(!a.additional_sidecars[0].read_write);
    assert!(a.additional_sidecars[1].read_write);
    assert_eq!(a.additional_oz_args, ["--skip-initial-turn"]);
    let shape = a.instance_shape.unwrap();
    assert_eq!((shape.vcpus, shape.memory_gb), (Some(2), Some(4)));
}

#[test]
fn a_minimal_assignment_with_lower_case_owner_and_nulls_decodes() {
    let frame = json!({"type": "task_assignment", "data": {
        "task_id": "t", "task": {"owner": {"type": "USER", "id": 7}, "created_at": 12,
        "agent_config_snapshot": {"harness": {}}},
        "env_vars": null, "instance_shape": null, "docker_image": null
    }});
    let Inbound::Assignment(a) = decode(&frame) else {
        panic!("not an assignment");
    };
    assert_eq!(a.task.owner.unwrap().kind, OwnerType::User);
    assert_eq!(a.task.created_at, None);
    assert_eq!(
        a.task.agent_config.unwrap().harness_type.as_deref(),
        Some("")
    );
    assert!(a.env_vars.is_empty());
    assert_eq!(a.instance_shape, None);
    assert_eq!(a.task.id, "");
}

#[test]
fn a_cancellation_decodes() {
    let frame = br#"{"type":"task_cancellation","data":{"task_id":"t5"}}"#;
    assert_eq!(decode_frame(frame, LIMIT), Inbound::Cancellation(id("t5")));
}

#[test]
fn binary_json_is_decoded_like_text() {
    // The connection hands binary frames to the same decoder.
    let frame = br#"{"type":"task_cancellation","data":{"task_id":"b"}}"#.to_vec();
    assert!(matches!(
        decode_frame(&frame, LIMIT),
        Inbound::Cancellation(_)
    ));
}

#[test]
fn every_bad_frame_gets_a_specific_reason() {
    let cases: Vec<(&[u8], &str, Option<&str>)> = vec![
        (b"{not json", "Failed to unmarshal message: key must be a string", None),
        (b"\xff\xfe", "Failed to unmarshal message: expected value", None),
        (b"[1,2]", "not a JSON object", None),
        (br#"{"data":{}}"#, "`type` is missing", None),
        (br#"{"type":5,"data":{}}"#, "`type` is missing", None),
        (br#"{"type":"heartbeat"}"#, "Unknown message type: heartbeat", None),
        (br#"{"type":"task_assignment"}"#, "`data` is missing, expected an object", None),
        (br#"{"type":"task_assignment","data":"x"}"#, "`data` is a string", None),
        (br#"{"type":"task_cancellation","data":null}"#, "`data` is null", None),
        (br#"{"type":"task_assignment","data":{"task_id":"t1","task":null}}"#, "data.task is missing or null", Some("t1")),
        (br#"{"type":"task_assignment","data":{"task_id":"t1"}}"#, "data.task is missing or null", Some("t1")),
        (br#"{"type":"task_assignment","data":{"task":{}}}"#, "data.task_id is missing or empty", None),
        (br#"{"type":"task_assignment","data":{"task_id":"","task":{}}}"#, "data.task_id is missing or empty", None),
        (br#"{"type":"task_cancellation","data":{}}"#, "task cancellation: data.task_id is missing", None),
        (br#"{"type":"task_cancellation","data":{"task_id":3}}"#, "data.task_id is missing", None),
        (
            br#"{"type":"task_assignment","data":{"task_id":"t2","task":{"agent_config_snapshot":{"idle_timeout_minutes":15.0}}}}"#,
            "data.task.agent_config_snapshot.idle_timeout_minutes: invalid type: floating point, expected i64",
            Some("t2"),
        ),
        (
            br#"{"type":"task_assignment","data":{"task_id":"t3","task":{"owner":{"Type":"TEAM","Id":"7"}}}}"#,
            "data.task.owner.Id: invalid type: string, expected i64",
            Some("t3"),
        ),
        (
            br#"{"type":"task_assignment","data":{"task_id":"t4","task":{},"additional_sidecars":[{"read_write":"yes"}]}}"#,
            "data.additional_sidecars[0].read_write: invalid type: string, expected a boolean",
            Some("t4"),
        ),
    ];
    for (frame, expected, task_id) in cases {
        let (reason, got_id) = rejection(frame);
        let text = reason.to_string();
        assert!(
            text.contains(expected),
            "frame {:?}: {text:?} lacks {expected:?}",
            String::from_utf8_lossy(frame)
        );
        assert_eq!(
            got_id.as_deref(),
            task_id,
            "frame {:?}",
            String::from_utf8_lossy(frame)
        );
    }
}

#[test]
fn a_frame_over_the_limit_is_rejected_before_parsing() {
    let frame = vec![b' '; 100];
    assert_eq!(
        rejection_with_limit(&frame, 10),
        FrameRejection::TooLarge {
            size: 100,
            limit: 10
        }
    );
}

fn rejection_with_limit(frame: &[u8], limit: usize) -> FrameRejection {
    match decode_frame(frame, limit) {
        Inbound::Rejected(r) => r.reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn rejections_never_quote_values_from_the_frame() {
    let frame = json!({"type": "task_assignment", "data": {"task_id": "t", "task": {},
        "env_vars": {"WARP_API_KEY": "s3cr3t", "OTHER": 5},
        "instance_shape": {"vcpus": "s3cr3t"}}});
    let (reason, _) = rejection(frame.to_string().as_bytes());
    assert!(!reason.to_string().contains("s3cr3t"), "{reason}");
    assert!(!reason.to_string().contains('5'), "{reason}");
    assert_eq!(
        sanitize(r#"invalid type: string "a, expected b", expected i64"#),
        "invalid type: string, expected i64"
    );
    assert_eq!(sanitize(r#"custom "quoted" thing"#), "invalid value");
}

// === Backoff ===

fn no_jitter() -> BackoffConfig {
    BackoffConfig {
        jitter: 0.0,
        ..BackoffConfig::default()
    }
}

#[test]
fn backoff_doubles_from_one_second_to_a_sixty_second_cap() {
    let mut backoff = Backoff::new(no_jitter()).unwrap();
    let delays: Vec<u64> = (0..9).map(|_| backoff.next_delay().as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
}

#[test]
fn jitter_stays_within_its_bounds_and_under_the_cap() {
    let config = BackoffConfig::default();
    for unit in [0.0, 0.25, 0.5, 0.999] {
        let mut backoff = Backoff::new(config).unwrap();
        let first = backoff.next_delay_with(unit);
        assert!(first >= Duration::from_millis(800) && first <= Duration::from_millis(1200));
    }
    let mut backoff = Backoff::new(config).unwrap();
    for _ in 0..50 {
        let delay = backoff.next_delay();
        assert!(delay <= config.max, "{delay:?}");
        assert!(delay >= Duration::from_millis(800), "{delay:?}");
    }
    let mut low = Backoff::new(config).unwrap();
    assert_eq!(low.next_delay_with(0.0), Duration::from_millis(800));
}

#[test]
fn a_short_lived_connection_does_not_reset_the_backoff() {
    let mut backoff = Backoff::new(no_jitter()).unwrap();
    backoff.next_delay();
    backoff.next_delay();
    assert!(!backoff.connection_ended(Duration::from_secs(3)));
    assert_eq!(backoff.next_delay(), Duration::from_secs(4));
    assert!(backoff.connection_ended(Duration::from_secs(10)));
    assert_eq!(backoff.next_delay(), Duration::from_secs(1));
}

#[test]
fn invalid_backoff_settings_are_named() {
    let bad = |change: fn(&mut BackoffConfig)| {
        let mut config = BackoffConfig::default();
        change(&mut config);
        Backoff::new(config).unwrap_err()
    };
    assert_eq!(bad(|c| c.initial = Duration::ZERO), InvalidBackoff::Initial);
    assert_eq!(
        bad(|c| c.initial = Duration::from_secs(120)),
        InvalidBackoff::Initial
    );
    assert_eq!(bad(|c| c.factor = 0.5), InvalidBackoff::Factor);
    assert_eq!(bad(|c| c.factor = f64::NAN), InvalidBackoff::Factor);
    assert_eq!(bad(|c| c.jitter = 1.0), InvalidBackoff::Jitter);
}

// === Handshake URL ===

#[test]
fn worker_id_is_merged_into_a_sorted_form_encoded_query() {
    let check = |url: &str, worker: &str, expected: &str| {
        assert_eq!(worker_url(url, worker).unwrap().as_str(), expected);
    };
    check("ws://h/p", "w1", "ws://h/p?worker_id=w1");
    check(
        "wss://h/p?z=1&worker_id=old&a=x%20y",
        "my worker",
        "wss://h/p?a=x+y&worker_id=my+worker&z=1",
    );
    check(
        "ws://h/p?b=2&a=1&b=1",
        "w",
        "ws://h/p?a=1&b=2&b=1&worker_id=w",
    );
    check(
        "ws://h/p?k=a*b~c",
        "é&=",
        "ws://h/p?k=a%2Ab~c&worker_id=%C3%A9%26%3D",
    );
}

#[test]
fn only_ws_and_wss_urls_are_accepted() {
    assert_eq!(
        worker_url("https://h/p", "w"),
        Err(UrlError::Scheme("https".into()))
    );
    assert!(matches!(
        worker_url("not a url", "w"),
        Err(UrlError::Invalid(_))
    ));
}

#[test]
fn the_reference_timers_are_the_defaults() {
    let config = super::WsConfig::new("wss://h/p", "w", crate::domain::ApiKey::new("k"));
    assert_eq!(config.ping_interval, Duration::from_secs(30));
    assert_eq!(config.pong_wait, Duration::from_secs(60));
    assert_eq!(config.write_timeout, Duration::from_secs(10));
    assert_eq!(config.close_timeout, Duration::from_secs(10));
    assert_eq!(config.handshake_timeout, Duration::from_secs(45));
    assert_eq!(config.backoff.initial, Duration::from_secs(1));
    assert_eq!(config.backoff.max, Duration::from_secs(60));
    assert!(config.user_agent.starts_with("oz-agent-worker/"));
}

/// Liveness with the reference's own timers (30 s pings, 60 s deadline) under paused time, over
/// an in-memory pipe so no real I/O races the virtual clock.
mod liveness {
    use std::time::Duration;

    use futures_util::StreamExt;
    use tokio::sync::mpsc;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_util::sync::CancellationToken;

    use super::super::connection::{ConnectionEnd, serve};
    use super::super::outbox::Outbox;
    use crate::domain::ApiKey;

    async fn pipe() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (worker, server) = tokio::io::duplex(1 << 16);
        (
            WebSocketStream::from_raw_socket(worker, Role::Client, None).await,
            WebSocketStream::from_raw_socket(server, Role::Server, None).await,
        )
    }

    fn config() -> super::super::WsConfig {
        super::super::WsConfig::new("ws://h/p", "w", ApiKey::new("k"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_idle_connection_pings_every_30s_and_never_times_out() {
        let (worker, mut server) = pipe().await;
        let (events, _rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let outbox = Outbox::new();
        let config = config();
        let serving = serve(worker, &config, &outbox, &events, &cancel);
        // The server keeps reading, so tungstenite answers every ping with a pong.
        let server_side = async {
            let mut pings = 0;
            while let Some(Ok(message)) = server.next().await {
                if matches!(message, Message::Ping(_)) {
                    pings += 1;
                }
            }
            pings
        };
        let started = tokio::time::Instant::now();
        let stop = async {
            tokio::time::sleep(Duration::from_secs(10 * 60 + 15)).await;
            cancel.cancel();
        };
        let (end, pings, ()) = tokio::join!(serving, server_side, stop);
        assert!(matches!(end, ConnectionEnd::Cancelled), "{end:?}");
        assert_eq!(pings, 20, "one ping every 30 s over 10 minutes");
        assert!(started.elapsed() >= Duration::from_secs(600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_declared_dead_exactly_60s_after_the_last_frame() {
        let (worker, server) = pipe().await;
        let (events, _rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let outbox = Outbox::new();
        let config = config();
        let started = tokio::time::Instant::now();
        // The server never reads, so no pong ever comes back.
        let end = serve(worker, &config, &outbox, &events, &cancel).await;
        let elapsed = started.elapsed();
        drop(server);
        match end {
            ConnectionEnd::Lost(reason) => {
                assert!(reason.contains("nothing read for 60s"), "{reason}")
            }
            other => panic!("expected a lost connection, got {other:?}"),
        }
        assert!(
            elapsed >= Duration::from_secs(60) && elapsed < Duration::from_secs(61),
            "declared dead after {elapsed:?}"
        );
    }
}
