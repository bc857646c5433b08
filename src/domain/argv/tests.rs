//! Golden argv cases: exact equality, as the reference's `AugmentArgsForTask` table.

use super::*;
use crate::domain::task::{AwsInference, Owner, TaskId};
use serde_json::json;

const BASE: &str = "agent run --task-id T --sandboxed --server-root-url U";

fn settings() -> ArgvSettings {
    ArgvSettings {
        server_root_url: "U".into(),
        idle_on_complete: None,
        session_sharing_server_url: None,
    }
}

fn assignment(config: Option<AgentConfig>) -> Assignment {
    let mut a = Assignment::new(TaskId::parse("T").unwrap());
    a.task.agent_config = config;
    a
}

fn check(a: &Assignment, s: &ArgvSettings, expected_tail: &str) {
    let expected: Vec<String> = format!("{BASE} {expected_tail}")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(agent_run_args(a, s), expected);
}

fn harness(kind: &str) -> AgentConfig {
    AgentConfig {
        harness_type: Some(kind.into()),
        model_id: Some("m".into()),
        ..AgentConfig::default()
    }
}

#[test]
fn no_snapshot_emits_only_the_base_and_a_bare_idle_flag() {
    check(&assignment(None), &settings(), "--idle-on-complete");
}

#[test]
fn empty_snapshot_defaults_to_computer_use_for_oz() {
    check(
        &assignment(Some(AgentConfig::default())),
        &settings(),
        "--computer-use --idle-on-complete",
    );
}

#[test]
fn idle_precedence_task_minutes_then_worker_setting_then_bare() {
    let mut s = settings();
    s.idle_on_complete = Some("10m".into());
    let cfg = |m| {
        Some(AgentConfig {
            idle_timeout_minutes: m,
            ..AgentConfig::default()
        })
    };
    check(
        &assignment(cfg(Some(15))),
        &s,
        "--computer-use --idle-on-complete 15m",
    );
    check(
        &assignment(cfg(Some(0))),
        &s,
        "--computer-use --idle-on-complete 10m",
    );
    check(
        &assignment(cfg(Some(-3))),
        &s,
        "--computer-use --idle-on-complete 10m",
    );
    check(
        &assignment(cfg(None)),
        &s,
        "--computer-use --idle-on-complete 10m",
    );
    check(&assignment(None), &s, "--idle-on-complete 10m");
    s.idle_on_complete = Some(String::new());
    check(
        &assignment(cfg(None)),
        &s,
        "--computer-use --idle-on-complete",
    );
    s.idle_on_complete = Some("0s".into());
    check(&assignment(None), &s, "--idle-on-complete 0s");
}

#[test]
fn model_only_for_the_oz_harness() {
    let s = settings();
    check(
        &assignment(Some(harness(""))),
        &s,
        "--model m --computer-use --idle-on-complete",
    );
    check(
        &assignment(Some(harness("oz"))),
        &s,
        "--model m --computer-use --harness oz --idle-on-complete",
    );
    check(
        &assignment(Some(harness("claude"))),
        &s,
        "--no-computer-use --harness claude --idle-on-complete",
    );
    let mut absent = harness("x");
    absent.harness_type = None;
    check(
        &assignment(Some(absent)),
        &s,
        "--model m --computer-use --idle-on-complete",
    );
}

#[test]
fn padded_oz_counts_as_third_party_but_emits_trimmed_harness() {
    check(
        &assignment(Some(harness("  oz  "))),
        &settings(),
        "--no-computer-use --harness oz --idle-on-complete",
    );
    check(
        &assignment(Some(harness("   "))),
        &settings(),
        "--no-computer-use --idle-on-complete",
    );
}

#[test]
fn whitespace_model_profile_skill_are_skipped_and_values_trimmed() {
    let cfg = AgentConfig {
        model_id: Some("  ".into()),
        profile_id: Some(" p ".into()),
        skill_spec: Some("\ts\n".into()),
        environment_id: Some("  ".into()),
        ..AgentConfig::default()
    };
    check(
        &assignment(Some(cfg)),
        &settings(),
        "--profile p --skill s --computer-use --idle-on-complete",
    );
}

#[test]
fn explicit_computer_use_wins_over_the_harness_default() {
    let mut oz = harness("oz");
    oz.computer_use_enabled = Some(false);
    check(
        &assignment(Some(oz)),
        &settings(),
        "--model m --no-computer-use --harness oz --idle-on-complete",
    );
    let mut claude = harness("claude");
    claude.computer_use_enabled = Some(true);
    check(
        &assignment(Some(claude)),
        &settings(),
        "--computer-use --harness claude --idle-on-complete",
    );
}

#[test]
fn bedrock_role_and_region_are_trimmed_and_conditional() {
    let cfg = |disabled, role: &str, region: &str| {
        Some(AgentConfig {
            aws_inference: Some(AwsInference {
                disabled,
                role_arn: role.into(),
                region: region.into(),
            }),
            ..AgentConfig::default()
        })
    };
    let s = settings();
    check(
        &assignment(cfg(false, " arn:r ", " us-east-1 ")),
        &s,
        "--computer-use --bedrock-inference-role arn:r --bedrock-role-region us-east-1 --idle-on-complete",
    );
    check(
        &assignment(cfg(false, "arn:r", "  ")),
        &s,
        "--computer-use --bedrock-inference-role arn:r --idle-on-complete",
    );
    check(
        &assignment(cfg(true, "arn:r", "r")),
        &s,
        "--computer-use --idle-on-complete",
    );
    check(
        &assignment(cfg(false, "  ", "r")),
        &s,
        "--computer-use --idle-on-complete",
    );
}

#[test]
fn public_share_levels() {
    let cfg = |level: &str| {
        Some(AgentConfig {
            public_access: Some(level.into()),
            ..AgentConfig::default()
        })
    };
    let s = settings();
    check(
        &assignment(cfg("VIEWER")),
        &s,
        "--computer-use --share public:view --idle-on-complete",
    );
    check(
        &assignment(cfg("EDITOR")),
        &s,
        "--computer-use --share public:edit --idle-on-complete",
    );
    check(
        &assignment(cfg("FULL")),
        &s,
        "--computer-use --idle-on-complete",
    );
    check(
        &assignment(cfg("viewer")),
        &s,
        "--computer-use --idle-on-complete",
    );
}

#[test]
fn team_owner_adds_team_share_before_task_id_and_can_share_twice() {
    let mut a = assignment(Some(AgentConfig {
        public_access: Some("VIEWER".into()),
        ..AgentConfig::default()
    }));
    a.task.owner = Some(Owner {
        kind: OwnerType::Team,
        id: 7,
    });
    let args = agent_run_args(&a, &settings()).join(" ");
    assert_eq!(
        args,
        "agent run --share team:edit --task-id T --sandboxed --server-root-url U --computer-use --share public:view --idle-on-complete"
    );
    a.task.owner = Some(Owner {
        kind: OwnerType::User,
        id: 7,
    });
    assert!(
        !agent_run_args(&a, &settings())
            .join(" ")
            .contains("team:edit")
    );
}

#[test]
fn snapshot_flags_only_when_set_and_positive() {
    let cfg = AgentConfig {
        snapshot_disabled: Some(true),
        snapshot_upload_timeout_secs: Some(90),
        snapshot_script_timeout_secs: Some(45),
        ..AgentConfig::default()
    };
    check(
        &assignment(Some(cfg)),
        &settings(),
        "--computer-use --no-snapshot --snapshot-upload-timeout 90s --snapshot-script-timeout 45s --idle-on-complete",
    );
    let zero = AgentConfig {
        snapshot_disabled: Some(false),
        snapshot_upload_timeout_secs: Some(0),
        snapshot_script_timeout_secs: Some(-1),
        ..AgentConfig::default()
    };
    check(
        &assignment(Some(zero)),
        &settings(),
        "--computer-use --idle-on-complete",
    );
}

#[test]
fn mcp_is_compact_sorted_json_with_go_escapes() {
    let mut cfg = AgentConfig::default();
    cfg.mcp_servers
        .insert("zeta".into(), json!({"b": 1, "a": "x<y>&z"}));
    cfg.mcp_servers
        .insert("alpha".into(), json!({"cmd": ["run"]}));
    let args = agent_run_args(&assignment(Some(cfg)), &settings());
    let i = args.iter().position(|a| a == "--mcp").unwrap();
    assert_eq!(
        args[i + 1],
        r#"{"alpha":{"cmd":["run"]},"zeta":{"a":"x\u003cy\u003e\u0026z","b":1}}"#
    );
    let parsed: serde_json::Value = serde_json::from_str(&args[i + 1]).unwrap();
    assert_eq!(parsed["zeta"]["a"], "x<y>&z");
}

#[test]
fn additional_args_verbatim_before_idle_and_session_url_last() {
    let mut a = assignment(None);
    a.additional_oz_args = vec!["--skip-initial-turn".into(), "x y".into()];
    let mut s = settings();
    s.session_sharing_server_url = Some("ws://share".into());
    let args = agent_run_args(&a, &s);
    assert_eq!(
        &args[args.len() - 5..],
        [
            "--skip-initial-turn",
            "x y",
            "--idle-on-complete",
            "--session-sharing-server-url",
            "ws://share"
        ]
    );
}

#[test]
fn empty_server_root_url_is_still_emitted() {
    let mut s = settings();
    s.server_root_url = String::new();
    let args = agent_run_args(&assignment(None), &s);
    assert_eq!(args[5..7], ["--server-root-url".to_owned(), String::new()]);
}

#[test]
fn maximal_team_owned_oz_task_matches_the_spec_example() {
    let mut cfg = AgentConfig {
        model_id: Some("M".into()),
        profile_id: Some("P".into()),
        skill_spec: Some("S".into()),
        harness_type: Some("oz".into()),
        aws_inference: Some(AwsInference {
            disabled: false,
            role_arn: "arn:x".into(),
            region: "us-east-1".into(),
        }),
        public_access: Some("VIEWER".into()),
        snapshot_disabled: Some(true),
        snapshot_upload_timeout_secs: Some(90),
        snapshot_script_timeout_secs: Some(45),
        environment_id: Some("E".into()),
        idle_timeout_minutes: Some(15),
        ..AgentConfig::default()
    };
    cfg.mcp_servers.insert("srv".into(), json!({}));
    let mut a = assignment(Some(cfg));
    a.task.owner = Some(Owner {
        kind: OwnerType::Team,
        id: 1,
    });
    a.additional_oz_args = vec!["--skip-initial-turn".into()];
    let s = ArgvSettings {
        server_root_url: "https://app.warp.dev".into(),
        idle_on_complete: Some("45m".into()),
        session_sharing_server_url: Some("ws://s".into()),
    };
    assert_eq!(
        agent_run_args(&a, &s).join(" "),
        "agent run --share team:edit --task-id T --sandboxed --server-root-url https://app.warp.dev \
         --model M --profile P --skill S --mcp {\"srv\":{}} --computer-use \
         --bedrock-inference-role arn:x --bedrock-role-region us-east-1 --harness oz \
         --share public:view --no-snapshot --snapshot-upload-timeout 90s --snapshot-script-timeout 45s \
         --environment E --skip-initial-turn --idle-on-complete 15m --session-sharing-server-url ws://s"
    );
}

#[test]
fn idle_flag_is_always_present_and_after_every_task_derived_flag() {
    for additional in [vec![], vec!["--x".to_owned()]] {
        for config in [None, Some(AgentConfig::default()), Some(harness("codex"))] {
            let mut a = assignment(config);
            a.additional_oz_args = additional.clone();
            let args = agent_run_args(&a, &settings());
            let idle = args.iter().position(|t| t == "--idle-on-complete").unwrap();
            assert!(args[idle + 1..].iter().all(|t| !t.starts_with("--")));
        }
    }
}
