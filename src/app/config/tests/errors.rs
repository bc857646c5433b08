//! The error table: every bad field is reported by name, all at once, without secrets.

use super::*;

/// One case of the error table: extra args, optional YAML, and the fragments the message must
/// contain (the field name first).
struct ErrorCase {
    args: &'static [&'static str],
    yaml: Option<&'static str>,
    expect: &'static [&'static str],
}

#[test]
fn every_bad_field_is_reported_by_name() {
    let cases = [
        ErrorCase {
            args: &["--web-socket-url", "https://x/ws"],
            yaml: None,
            expect: &["--web-socket-url", "ws://"],
        },
        ErrorCase {
            args: &["--web-socket-url", "nope"],
            yaml: None,
            expect: &["--web-socket-url"],
        },
        ErrorCase {
            args: &["--health-listen", "localhost"],
            yaml: None,
            expect: &["--health-listen", "IP:PORT"],
        },
        ErrorCase {
            args: &["-e", ""],
            yaml: None,
            expect: &["--env entry #1", "empty"],
        },
        ErrorCase {
            args: &["-e", "=hunter2"],
            yaml: None,
            expect: &["--env entry #1", "missing key"],
        },
        ErrorCase {
            args: &["-e", "A B=x"],
            yaml: None,
            expect: &["--env entry #1", "whitespace"],
        },
        ErrorCase {
            args: &["-v", "/only-one"],
            yaml: None,
            expect: &["--volumes value #1", "HOST:CONTAINER"],
        },
        ErrorCase {
            args: &["-v", "rel/x:/b"],
            yaml: None,
            expect: &["--volumes value #1", "absolute path or a volume name"],
        },
        ErrorCase {
            args: &["-v", "/a:rel"],
            yaml: None,
            expect: &["--volumes value #1", "container path"],
        },
        ErrorCase {
            args: &["-v", "/a:/b:rx"],
            yaml: None,
            expect: &["--volumes value #1", "unknown mode"],
        },
        ErrorCase {
            args: &["--backend", "direct", "--target-dir", "rel"],
            yaml: None,
            expect: &["--target-dir", "absolute"],
        },
        ErrorCase {
            args: &["--backend", "command"],
            yaml: None,
            expect: &["backend.command.dispatch_command is required"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  direct:\n    workspace_root: rel\n"),
            expect: &["backend.direct.workspace_root", "absolute"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  direct:\n    target_dir: rel\n"),
            expect: &["backend.direct.target_dir", "absolute"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  direct:\n    oz_path: bin/oz\n"),
            expect: &["backend.direct.oz_path", "absolute"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  direct:\n    kill_grace_period: 5\n"),
            expect: &["backend.direct.kill_grace_period", "Go duration"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  direct:\n    kill_grace_period: -1s\n"),
            expect: &["backend.direct.kill_grace_period", "negative"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  docker:\n    stop_grace_period: soon\n"),
            expect: &["backend.docker.stop_grace_period", "Go duration"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  docker:\n    pull_policy: sometimes\n"),
            expect: &["backend.docker.pull_policy", "if-not-present"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  docker:\n    volumes: ['x:/b']\n"),
            expect: &["backend.docker.volumes[0]", "volume name"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  docker:\n    environment: [{value: x}]\n"),
            expect: &["backend.docker.environment[0].name is required"],
        },
        ErrorCase {
            args: &[],
            yaml: Some(
                "backend:\n  command:\n    environment: [{name: 'A B'}]\n    dispatch_command: x\n",
            ),
            expect: &["backend.command.environment[0].name", "whitespace"],
        },
        ErrorCase {
            args: &[],
            yaml: Some(
                "backend:\n  command:\n    dispatch_command: x\n    dispatch_timeout: nope\n",
            ),
            expect: &[
                "invalid backend.command.dispatch_timeout \"nope\": expected a Go duration such as 30s or 1m30s",
            ],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  command:\n    dispatch_command: '  '\n"),
            expect: &["backend.command.dispatch_command is required"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  kubernetes:\n    unschedulable_timeout: 30\n"),
            expect: &["backend.kubernetes.unschedulable_timeout", "Go duration"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  kubernetes:\n    default_image: 'ubuntu 22.04'\n"),
            expect: &["backend.kubernetes.default_image", "whitespace"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  kubernetes:\n    preflight_image: 'busybox\t1'\n"),
            expect: &["backend.kubernetes.preflight_image", "whitespace"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  kubernetes:\n    sidecar_image: 'a b'\n"),
            expect: &["backend.kubernetes.sidecar_image", "whitespace"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  kubernetes:\n    image_pull_policy: always\n"),
            expect: &["backend.kubernetes.image_pull_policy", "IfNotPresent"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  kubernetes:\n    kubeconfig: kube/config\n"),
            expect: &["backend.kubernetes.kubeconfig", "absolute"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  kubernetes:\n    workspace_size_limit: lots\n"),
            expect: &["backend.kubernetes.workspace_size_limit", "quantity"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  kubernetes:\n    ttl_seconds_after_finished: 99999999999\n"),
            expect: &["backend.kubernetes.ttl_seconds_after_finished"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  kubernetes:\n    active_deadline_seconds: -5\n"),
            expect: &["backend.kubernetes.active_deadline_seconds"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  kubernetes:\n    pod_template: [1]\n"),
            expect: &["backend.kubernetes.pod_template", "mapping"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("health_listen: nowhere\n"),
            expect: &["health_listen", "IP:PORT"],
        },
        ErrorCase {
            args: &[],
            yaml: Some("backend:\n  direct: {}\n  docker: {}\n"),
            expect: &["at most one backend may be configured", "direct, docker"],
        },
    ];
    for case in cases {
        let result = match case.yaml {
            Some(text) => with_file(text, case.args),
            None => load_with(case.args, &[]),
        };
        let error = result.expect_err(&format!("{:?} {:?} should fail", case.args, case.yaml));
        assert_eq!(error.exit_code(), 64);
        let text = error.to_string();
        for fragment in case.expect {
            assert!(
                text.contains(fragment),
                "{:?} {:?}: {text:?} lacks {fragment:?}",
                case.args,
                case.yaml
            );
        }
        assert!(!text.contains("hunter2"), "a value leaked: {text}");
    }
}

#[test]
fn several_problems_are_reported_together() {
    let argv = [
        "oz-agent-worker",
        "--worker-id",
        "warp-9",
        "--web-socket-url",
        "http://x",
        "-e",
        "=v",
        "-v",
        "a,b",
        "--backend",
        "command",
    ];
    let error = load(argv, &env_map(&[])).unwrap_err();
    let problems = error.problems();
    assert_eq!(problems.len(), 6, "{problems:#?}");
    let text = error.to_string();
    assert!(
        text.starts_with("invalid configuration (6 problems):\n  - "),
        "{text}"
    );
    for fragment in [
        "worker-id",
        "API key",
        "--web-socket-url",
        "--env entry #1",
        "--volumes value #1",
        "dispatch_command",
    ] {
        assert!(text.contains(fragment), "{text} lacks {fragment}");
    }
}
