//! YAML file tests: precedence against the CLI, strictness, null blocks, raw sub-trees and
//! the defaults that depend on the file.

use std::time::Duration;

use super::*;
use crate::adapters::command::CommandConfig;
use crate::adapters::kubernetes::{ImagePullPolicy, KubernetesConfig};

fn loaded(text: &str, args: &[&str]) -> Loaded {
    with_file(text, args).unwrap_or_else(|err| panic!("{text:?} {args:?}: {err}"))
}

fn config(text: &str, args: &[&str]) -> Config {
    loaded(text, args).invocation.config().clone()
}

fn failure(text: &str, args: &[&str]) -> String {
    match with_file(text, args) {
        Ok(ok) => panic!("{text:?} {args:?} should fail, got {ok:?}"),
        Err(err) => err.to_string(),
    }
}

fn kubernetes(config: &Config) -> &KubernetesConfig {
    match &config.backend {
        Backend::Kubernetes(k8s) => k8s,
        other => panic!("expected kubernetes, got {other:?}"),
    }
}

fn command(config: &Config) -> &CommandConfig {
    match &config.backend {
        Backend::Command(command) => command,
        other => panic!("expected command, got {other:?}"),
    }
}

#[test]
fn the_cli_wins_over_the_file_which_wins_over_defaults() {
    let file = "worker_id: from-file\nmax_concurrent_tasks: 5\nidle_on_complete: 10m\n\
                health_listen: 127.0.0.1:1\nbackend:\n  docker:\n    pull_policy: never\n";
    let argv = |args: &[&'static str]| -> Vec<&'static str> { args.to_vec() };
    let temp = yaml(file);
    let base = [
        "oz-agent-worker",
        "--api-key",
        "k",
        "--config-file",
        path_of(&temp),
    ];
    let run = |extra: Vec<&str>| {
        let mut all = base.to_vec();
        all.extend(extra);
        load(all, &env_map(&[]))
            .unwrap()
            .invocation
            .config()
            .clone()
    };
    let only_file = run(argv(&[]));
    assert_eq!(only_file.worker_id, "from-file");
    assert_eq!(only_file.max_concurrent_tasks, 5);
    assert_eq!(only_file.idle_on_complete.as_deref(), Some("10m"));
    assert_eq!(only_file.health_listen.unwrap().to_string(), "127.0.0.1:1");
    assert_eq!(docker(&only_file).pull_policy, PullPolicy::Never);
    assert_eq!(docker(&only_file).worker_id, "from-file");

    let cli = run(argv(&[
        "--worker-id=cli",
        "--max-concurrent-tasks=2",
        "--idle-on-complete=1m",
        "--health-listen=127.0.0.1:2",
        "--pull-policy=always",
    ]));
    assert_eq!(cli.worker_id, "cli");
    assert_eq!(cli.max_concurrent_tasks, 2);
    assert_eq!(cli.idle_on_complete.as_deref(), Some("1m"));
    assert_eq!(cli.health_listen.unwrap().to_string(), "127.0.0.1:2");
    assert_eq!(docker(&cli).pull_policy, PullPolicy::Always);
    assert_eq!(docker(&cli).worker_id, "cli");
    // A negative CLI value counts as set; 0 cannot override the file.
    assert_eq!(
        run(argv(&["--max-concurrent-tasks=-1"])).max_concurrent_tasks,
        -1
    );
    assert_eq!(
        run(argv(&["--max-concurrent-tasks=0"])).max_concurrent_tasks,
        5
    );
}

#[test]
fn cleanup_is_off_when_either_the_flag_or_the_file_says_so() {
    for (file, flag, expected) in [
        ("worker_id: w\n", false, true),
        ("cleanup: true\n", false, true),
        ("cleanup: false\n", false, false),
        ("cleanup: true\n", true, false),
        ("worker_id: w\n", true, false),
    ] {
        let args: &[&str] = if flag { &["--no-cleanup"] } else { &[] };
        let config = config(file, args);
        assert_eq!(config.cleanup, expected, "{file:?} {flag}");
        assert_eq!(docker(&config).cleanup, expected);
    }
}

#[test]
fn the_backend_comes_from_the_cli_then_the_file_then_defaults_to_docker() {
    assert_eq!(config("worker_id: w\n", &[]).backend.name(), "docker");
    for name in ["direct", "kubernetes", "docker"] {
        let text = format!("backend:\n  {name}: {{}}\n");
        assert_eq!(config(&text, &[]).backend.name(), name);
    }
    let command_file = "backend:\n  command:\n    dispatch_command: ./dispatch\n";
    assert_eq!(config(command_file, &[]).backend.name(), "command");
    // A CLI choice ignores the file's block, with a warning.
    let overridden = loaded(
        "backend:\n  direct:\n    workspace_root: /w\n",
        &["--backend", "docker"],
    );
    assert_eq!(overridden.invocation.config().backend.name(), "docker");
    assert!(
        overridden
            .warnings
            .iter()
            .any(|w| w.contains("backend.direct") && w.contains("ignored"))
    );
    // The CLI choice uses the file's block of the same backend.
    let same = config(
        "backend:\n  direct:\n    workspace_root: /w\n",
        &["--backend", "direct"],
    );
    assert_eq!(direct(&same).workspace_root, std::path::Path::new("/w"));
}

#[test]
fn env_is_the_file_list_then_cli_entries_with_the_cli_winning() {
    let file = "backend:\n  direct:\n    environment:\n      - {name: A, value: file-a}\n      \
                - {name: B, value: file-b}\n      - {name: FROM_HOST}\n      - {name: UNSET}\n";
    let temp = yaml(file);
    let argv = [
        "oz-agent-worker",
        "--worker-id",
        "w",
        "--api-key",
        "k",
        "--config-file",
        path_of(&temp),
        "-e",
        "A=cli-a",
        "-e",
        "C=cli-c",
    ];
    let loaded = load(argv, &env_map(&[("FROM_HOST", "host-value")])).unwrap();
    let env = &direct(loaded.invocation.config()).environment;
    assert_eq!(
        env.to_kv_strings(),
        [
            "A=cli-a",
            "B=file-b",
            "FROM_HOST=host-value",
            "UNSET=",
            "C=cli-c"
        ]
    );
    // Command and Docker merge the same way; Kubernetes takes the CLI entries only.
    let command_config = config(
        "backend:\n  command:\n    dispatch_command: d\n    environment: [{name: X, value: '1'}]\n",
        &["-e", "X=2", "-e", "X=3"],
    );
    assert_eq!(
        command(&command_config).environment.to_kv_strings(),
        ["X=3"]
    );
    let k8s = config("backend:\n  kubernetes: {}\n", &["-e", "T=1", "-e", "T=2"]);
    assert_eq!(kubernetes(&k8s).environment.to_kv_strings(), ["T=2"]);
}

#[test]
fn volumes_are_the_file_list_then_the_cli_list_and_target_dir_flag_wins() {
    let docker_config = config(
        "backend:\n  docker:\n    volumes: [/f:/f, /g:/g]\n",
        &["-v", "/c:/c", "-v", "/f:/f"],
    );
    assert_eq!(
        docker(&docker_config).volumes,
        ["/f:/f", "/g:/g", "/c:/c", "/f:/f"]
    );
    let file = "backend:\n  direct:\n    target_dir: /from/file\n";
    assert_eq!(
        direct(&config(file, &[])).target_dir.as_deref(),
        Some(std::path::Path::new("/from/file"))
    );
    let flag = config(file, &["--target-dir", "/from/flag"]);
    assert_eq!(
        direct(&flag).target_dir.as_deref(),
        Some(std::path::Path::new("/from/flag"))
    );
}

#[test]
fn the_new_duration_keys_are_read_and_default_to_ten_seconds() {
    let docker_config = config("backend:\n  docker:\n    stop_grace_period: 1m30s\n", &[]);
    assert_eq!(docker(&docker_config).stop_grace, Duration::from_secs(90));
    let direct_config = config(
        "backend:\n  direct:\n    kill_grace_period: 300ms\n    oz_path: oz\n",
        &[],
    );
    assert_eq!(
        direct(&direct_config).kill_grace,
        Duration::from_millis(300)
    );
    assert_eq!(
        direct(&direct_config).oz_path.as_deref(),
        Some(std::path::Path::new("oz"))
    );
    assert_eq!(
        direct(&config("backend:\n  direct: {}\n", &[])).kill_grace,
        Duration::from_secs(10)
    );
}

#[test]
fn dispatch_timeout_defaults_to_sixty_seconds_also_when_not_positive() {
    for (raw, expected) in [
        (None, 60),
        (Some("0"), 60),
        (Some("-5s"), 60),
        (Some("1.5h"), 5400),
        (Some("2m"), 120),
    ] {
        let mut text = "backend:\n  command:\n    dispatch_command: ./d\n".to_owned();
        if let Some(raw) = raw {
            text.push_str(&format!("    dispatch_timeout: {raw}\n"));
        }
        let config = config(&text, &[]);
        let command = command(&config);
        assert_eq!(
            command.dispatch_timeout,
            Duration::from_secs(expected),
            "{raw:?}"
        );
        assert_eq!(command.worker_id, "w1");
        assert_eq!(command.server_root_url, DEFAULT_SERVER_ROOT_URL);
    }
}

#[test]
fn kubernetes_defaults_depend_on_cleanup() {
    let with_cleanup = config("backend:\n  kubernetes: {}\n", &[]);
    let k8s = kubernetes(&with_cleanup);
    let expected = KubernetesConfig {
        worker_id: "w1".into(),
        ..KubernetesConfig::default()
    };
    assert_eq!(k8s, &expected);
    assert_eq!(k8s.ttl_seconds_after_finished, Some(86_400));
    assert_eq!(k8s.active_deadline_seconds, Some(28_800));
    assert_eq!(k8s.unschedulable_timeout, Some(Duration::from_secs(30)));
    let without = config("backend:\n  kubernetes: {}\n", &["--no-cleanup"]);
    assert_eq!(kubernetes(&without).ttl_seconds_after_finished, None);
    assert!(!kubernetes(&without).cleanup);
    let explicit = config(
        "backend:\n  kubernetes:\n    ttl_seconds_after_finished: 60\n    active_deadline_seconds: 0\n    \
         unschedulable_timeout: 0s\n    image_pull_policy: Always\n    kubeconfig: /etc/kube/config\n    \
         namespace: jobs\n    workspace_size_limit: 8Gi\n    extra_labels: {team: infra, tier: 2}\n",
        &[],
    );
    let k8s = kubernetes(&explicit);
    assert_eq!(k8s.ttl_seconds_after_finished, Some(60));
    assert_eq!(k8s.active_deadline_seconds, None);
    assert_eq!(k8s.unschedulable_timeout, None);
    assert_eq!(k8s.image_pull_policy, ImagePullPolicy::Always);
    assert_eq!(k8s.namespace, "jobs");
    assert_eq!(
        k8s.kubeconfig.as_deref(),
        Some(std::path::Path::new("/etc/kube/config"))
    );
    assert_eq!(k8s.workspace_size_limit.as_deref(), Some("8Gi"));
    assert_eq!(k8s.extra_labels.get("tier").map(String::as_str), Some("2"));
    // `~` needs HOME from the env seam; without it the path stays relative and is rejected.
    assert!(
        failure(
            "backend:\n  kubernetes:\n    kubeconfig: ~/.kube/config\n",
            &[]
        )
        .contains("kubeconfig")
    );
}

#[test]
fn kubeconfig_tilde_is_expanded_through_the_env_seam() {
    let temp = yaml("backend:\n  kubernetes:\n    kubeconfig: ~/.kube/config\n");
    let argv = [
        "oz-agent-worker",
        "--worker-id",
        "w",
        "--api-key",
        "k",
        "--config-file",
        path_of(&temp),
    ];
    let loaded = load(argv, &env_map(&[("HOME", "/home/op")])).unwrap();
    let kubeconfig = kubernetes(loaded.invocation.config()).kubeconfig.clone();
    assert_eq!(
        kubeconfig.as_deref(),
        Some(std::path::Path::new("/home/op/.kube/config"))
    );
}

#[test]
fn pod_template_keeps_its_camel_case_keys_verbatim() {
    let text = "backend:\n  kubernetes:\n    pod_template:\n      serviceAccountName: x\n      \
                nodeSelector:\n        kubernetes.io/arch: amd64\n        diskType: ssd\n      \
                tolerations:\n        - {key: dedicated, operator: Exists, tolerationSeconds: 30}\n    \
                preflight_resources:\n      limits: {cpu: 100m, memory: 64Mi}\n";
    let config = config(text, &[]);
    let k8s = kubernetes(&config);
    let expected = serde_json::json!({
        "serviceAccountName": "x",
        "nodeSelector": {"kubernetes.io/arch": "amd64", "diskType": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "tolerationSeconds": 30}],
    });
    assert_eq!(k8s.pod_template.as_ref(), Some(&expected));
    let resources = serde_json::json!({"limits": {"cpu": "100m", "memory": "64Mi"}});
    assert_eq!(k8s.preflight_resources.as_ref(), Some(&resources));
}

#[test]
fn an_empty_or_comment_only_file_is_an_error() {
    for text in ["", "\n", "# just a comment\n# another\n"] {
        let message = failure(text, &[]);
        assert!(message.contains("failed to parse config file"), "{message}");
        assert!(message.contains("empty"), "{message}");
    }
    assert!(failure("- a\n- b\n", &[]).contains("mapping"));
    assert!(failure("worker_id: [unclosed\n", &[]).contains("failed to parse config file"));
}

#[test]
fn a_null_backend_block_selects_nothing_and_warns() {
    let null_block = loaded("backend:\n  direct:\n", &[]);
    assert_eq!(null_block.invocation.config().backend.name(), "docker");
    let warnings = &null_block.warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("backend.direct"), "{warnings:?}");
    assert!(warnings[0].contains("direct: {}"), "{warnings:?}");
    // A null block next to a real one is not "more than one backend".
    let two = loaded("backend:\n  kubernetes:\n  docker: {}\n", &[]);
    assert_eq!(two.invocation.config().backend.name(), "docker");
}

#[test]
fn unknown_keys_are_all_reported_with_path_file_and_line() {
    let text = "worker_id: w\nworkr_id: typo\nbackend:\n  docker:\n    volumes: []\n    \
                environment:\n      - name: A\n        vaule: x\n    pullpolicy: never\n";
    let temp = yaml(text);
    let path = path_of(&temp);
    let argv = ["oz-agent-worker", "--api-key", "k", "--config-file", path];
    let error = load(argv, &env_map(&[])).unwrap_err();
    let problems = error.problems();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems.contains(&format!("{path}:2: unknown key \"workr_id\"")),
        "{problems:#?}"
    );
    assert!(
        problems.contains(&format!(
            "{path}:8: unknown key \"backend.docker.environment[0].vaule\""
        )),
        "{problems:#?}"
    );
    assert!(
        problems.contains(&format!(
            "{path}:9: unknown key \"backend.docker.pullpolicy\""
        )),
        "{problems:#?}"
    );
    // Flow style has no line to point at, but still names the path and the file.
    let flow = failure("backend: {docker: {bogus: 1}}\n", &[]);
    assert!(
        flow.contains("unknown key \"backend.docker.bogus\"") && flow.contains(".yaml"),
        "{flow}"
    );
    // Unknown keys inside raw sub-trees are fine.
    config(
        "backend:\n  kubernetes:\n    pod_template: {anythingGoes: 1}\n",
        &[],
    );
}

#[test]
fn legacy_kubernetes_keys_are_rejected_pointing_to_pod_template() {
    for key in [
        "image_pull_secret",
        "service_account",
        "node_selector",
        "tolerations",
        "resources",
        "termination_grace_period_seconds",
        "environment",
    ] {
        let message = failure(&format!("backend:\n  kubernetes:\n    {key}: x\n"), &[]);
        assert!(
            message.contains(&format!("backend.kubernetes.{key}")),
            "{message}"
        );
        assert!(message.contains("pod_template"), "{message}");
        assert!(message.contains(":3:"), "line missing: {message}");
    }
}

#[test]
fn type_errors_in_the_file_name_the_path_and_line() {
    let message = failure("max_concurrent_tasks: many\n", &[]);
    assert!(
        message.contains("max_concurrent_tasks") && message.contains("line 1"),
        "{message}"
    );
}

#[test]
fn the_config_file_path_is_expanded_and_read_failures_name_it() {
    let message = failure_for_path("/nonexistent/oz.yaml");
    assert!(
        message.contains("failed to read config file /nonexistent/oz.yaml"),
        "{message}"
    );
    let temp = yaml("worker_id: from-home\n");
    let dir = temp.path().parent().unwrap().to_str().unwrap();
    let name = temp.path().file_name().unwrap().to_str().unwrap();
    let argv = [
        "oz-agent-worker",
        "--api-key",
        "k",
        "--config-file",
        &format!("~/{name}"),
    ];
    let loaded = load(argv, &env_map(&[("HOME", dir)])).unwrap();
    assert_eq!(loaded.invocation.config().worker_id, "from-home");
    assert_eq!(loaded.config_file.as_deref(), Some(temp.path()));
    let relative = failure_for_path("surely-missing-oz.yaml");
    let cwd = std::env::current_dir().unwrap();
    assert!(
        relative.contains(&cwd.join("surely-missing-oz.yaml").display().to_string()),
        "{relative}"
    );
}

fn failure_for_path(path: &str) -> String {
    let argv = [
        "oz-agent-worker",
        "--api-key",
        "k",
        "--worker-id",
        "w",
        "--config-file",
        path,
    ];
    let error = load(argv, &env_map(&[])).unwrap_err();
    assert_eq!(error.exit_code(), 64);
    error.to_string()
}

#[test]
fn type_errors_inside_a_backend_block_name_the_path_and_line() {
    let message = failure("backend:\n  docker:\n    volumes: nope\n", &[]);
    assert!(
        message.contains("backend.docker.volumes") && message.contains("line 3"),
        "{message}"
    );
    let unknown = failure("backend:\n  dokker: {}\n", &[]);
    assert!(
        unknown.contains("unknown key \"backend.dokker\""),
        "{unknown}"
    );
}

#[test]
fn log_level_in_the_file_is_used_unless_the_flag_is_given() {
    assert_eq!(config("log_level: debug\n", &[]).log_level, LogLevel::Debug);
    assert_eq!(config("log_level: WARN\n", &[]).log_level, LogLevel::Warn);
    assert_eq!(
        config("log_level: debug\n", &["--log-level", "error"]).log_level,
        LogLevel::Error
    );
    assert_eq!(config("worker_id: w1\n", &[]).log_level, LogLevel::Info);
    let message = failure("log_level: loud\n", &[]);
    assert!(message.contains("invalid log_level \"loud\""), "{message}");
    assert!(message.contains("debug, info, warn, error"), "{message}");
    // The flag wins even over an invalid file value.
    assert_eq!(
        config("log_level: loud\n", &["--log-level", "info"]).log_level,
        LogLevel::Info
    );
}

#[test]
fn debug_log_capture_is_validated_and_accepted_with_one_warning() {
    let warning = "debug_log_capture is accepted";
    let ok = loaded("debug_log_capture:\n  enabled: true\n", &[]);
    let matching: Vec<_> = ok.warnings.iter().filter(|w| w.contains(warning)).collect();
    assert_eq!(matching.len(), 1, "{:?}", ok.warnings);
    let quiet = loaded("worker_id: w1\n", &[]);
    assert!(!quiet.warnings.iter().any(|w| w.contains(warning)));
    // Null is treated like absent, as for backend blocks.
    let null = loaded("debug_log_capture:\n", &[]);
    assert!(!null.warnings.iter().any(|w| w.contains(warning)));
    let message = failure("debug_log_capture: yes\n", &[]);
    assert!(message.contains("invalid debug_log_capture"), "{message}");
    let message = failure("debug_log_capture:\n  enabled: sometimes\n", &[]);
    assert!(
        message.contains("invalid debug_log_capture.enabled: expected true or false"),
        "{message}"
    );
}

#[test]
fn kubernetes_lease_duration_is_whole_seconds_of_at_least_one() {
    let default = config("backend:\n  kubernetes: {}\n", &[]);
    assert_eq!(kubernetes(&default).lease_duration, Duration::from_secs(30));
    let short = config("backend:\n  kubernetes:\n    lease_duration: 2s\n", &[]);
    assert_eq!(kubernetes(&short).lease_duration, Duration::from_secs(2));
    for bad in ["0s", "500ms", "1.5s", "-3s"] {
        let text = failure(
            &format!("backend:\n  kubernetes:\n    lease_duration: {bad}\n"),
            &[],
        );
        assert!(
            text.contains("backend.kubernetes.lease_duration"),
            "{bad}: {text}"
        );
    }
    let text = failure("backend:\n  kubernetes:\n    lease_duration: soon\n", &[]);
    assert!(text.contains("backend.kubernetes.lease_duration"), "{text}");
}
