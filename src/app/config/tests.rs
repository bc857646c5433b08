//! Tests of the configuration layer, driven through [`load`] with an env map and temp files.
//! Command-line tests are here; the error table in `tests/errors.rs`, YAML-specific ones in
//! `tests/yaml.rs`, pure helpers in `tests/helpers.rs`.

mod errors;
mod helpers;
mod yaml;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::adapters::docker::{DockerConfig, PullPolicy};
use crate::adapters::host::DirectConfig;

/// The env seam backed by a map.
fn env_map(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

/// `oz-agent-worker --worker-id w1 --api-key secret-key <args>` with `env`.
fn load_with(args: &[&str], env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let mut argv = vec![
        "oz-agent-worker",
        "--worker-id",
        "w1",
        "--api-key",
        "secret-key",
    ];
    argv.extend_from_slice(args);
    load(argv, &env_map(env))
}

fn ok(args: &[&str]) -> Config {
    match load_with(args, &[]) {
        Ok(loaded) => loaded.invocation.config().clone(),
        Err(err) => panic!("expected {args:?} to load, got: {err}"),
    }
}

fn err(args: &[&str]) -> ConfigError {
    match load_with(args, &[]) {
        Ok(loaded) => panic!("expected {args:?} to fail, got {loaded:?}"),
        Err(err) => err,
    }
}

/// A temp YAML file with `text`; keep it alive while loading.
fn yaml(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn path_of(file: &tempfile::NamedTempFile) -> &str {
    file.path().to_str().unwrap()
}

/// Loads with a YAML file plus extra args.
fn with_file(text: &str, args: &[&str]) -> Result<Loaded, ConfigError> {
    let file = yaml(text);
    let mut argv = vec!["--config-file", path_of(&file)];
    argv.extend_from_slice(args);
    load_with(&argv, &[])
}

fn docker(config: &Config) -> &DockerConfig {
    match &config.backend {
        Backend::Docker(docker) => docker,
        other => panic!("expected docker, got {other:?}"),
    }
}

fn direct(config: &Config) -> &DirectConfig {
    match &config.backend {
        Backend::Direct(direct) => direct,
        other => panic!("expected direct, got {other:?}"),
    }
}

#[test]
fn every_flag_has_its_documented_default() {
    let config = ok(&[]);
    assert_eq!(config.worker_id, "w1");
    assert_eq!(config.api_key.expose(), "secret-key");
    assert_eq!(config.web_socket_url, DEFAULT_WEB_SOCKET_URL);
    assert_eq!(config.server_root_url, DEFAULT_SERVER_ROOT_URL);
    assert_eq!(config.session_sharing_server_url, None);
    assert_eq!(config.log_level, LogLevel::Info);
    assert_eq!(config.log_format, LogFormat::Text);
    assert_eq!(config.max_concurrent_tasks, 0);
    assert_eq!(config.idle_on_complete, None);
    assert!(config.cleanup);
    assert_eq!(config.health_listen, None);
    let expected = DockerConfig {
        worker_id: "w1".into(),
        ..DockerConfig::default()
    };
    assert_eq!(docker(&config), &expected);
    assert_eq!(expected.pull_policy, PullPolicy::Always);
    assert_eq!(expected.stop_grace, Duration::from_secs(10));
}

#[test]
fn every_flag_is_read_when_given() {
    let config = ok(&[
        "--web-socket-url=ws://127.0.0.1:9/ws",
        "--server-root-url=http://127.0.0.1:9",
        "--session-sharing-server-url=https://share.example",
        "--log-level=debug",
        "--log-format=json",
        "--max-concurrent-tasks=3",
        "--idle-on-complete=10m",
        "--no-cleanup",
        "--pull-policy=if-not-present",
        "--health-listen=127.0.0.1:8080",
        "-v",
        "/a:/b",
        "--volumes=data:/data:ro",
        "-e",
        "A=1",
        "--env=B",
    ]);
    assert_eq!(config.web_socket_url, "ws://127.0.0.1:9/ws");
    assert_eq!(config.server_root_url, "http://127.0.0.1:9");
    assert_eq!(
        config.session_sharing_server_url.as_deref(),
        Some("https://share.example")
    );
    assert_eq!(config.log_level, LogLevel::Debug);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.max_concurrent_tasks, 3);
    assert_eq!(config.idle_on_complete.as_deref(), Some("10m"));
    assert!(!config.cleanup);
    assert_eq!(
        config.health_listen,
        Some("127.0.0.1:8080".parse::<SocketAddr>().unwrap())
    );
    let docker = docker(&config);
    assert!(!docker.cleanup);
    assert_eq!(docker.pull_policy, PullPolicy::IfNotPresent);
    assert_eq!(docker.volumes, ["/a:/b", "data:/data:ro"]);
    assert_eq!(docker.environment.to_kv_strings(), ["A=1", "B="]);
}

#[test]
fn log_levels_and_backends_parse_from_their_names() {
    for (name, level) in [
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
    ] {
        assert_eq!(ok(&["--log-level", name]).log_level, level);
    }
    for name in ["docker", "direct", "kubernetes"] {
        assert_eq!(ok(&["--backend", name]).backend.name(), name);
    }
    assert_eq!(ok(&["--backend", ""]).backend.name(), "docker");
    assert_eq!(
        ok(&["--max-concurrent-tasks", "-1"]).max_concurrent_tasks,
        -1
    );
}

#[test]
fn the_api_key_flag_wins_over_warp_api_key_and_the_variable_is_a_fallback() {
    let env = [("WARP_API_KEY", "from-env")];
    let from_flag = load_with(&[], &env).unwrap();
    assert_eq!(from_flag.invocation.config().api_key.expose(), "secret-key");
    let from_env = load(["oz-agent-worker", "--worker-id", "w1"], &env_map(&env)).unwrap();
    assert_eq!(from_env.invocation.config().api_key.expose(), "from-env");
    let missing = load(["oz-agent-worker", "--worker-id", "w1"], &env_map(&[])).unwrap_err();
    assert!(missing.to_string().contains("missing API key"), "{missing}");
    assert!(missing.to_string().contains("WARP_API_KEY"), "{missing}");
    let empty = [("WARP_API_KEY", "")];
    assert!(load(["oz-agent-worker", "--worker-id", "w1"], &env_map(&empty)).is_err());
}

#[test]
fn worker_ids_starting_with_lowercase_warp_are_reserved() {
    for (id, allowed) in [
        ("warp-1", false),
        ("warpy", false),
        ("warp", false),
        ("Warp-1", true),
        ("my-warp", true),
    ] {
        let argv = ["oz-agent-worker", "--api-key", "k", "--worker-id", id];
        let result = load(argv, &env_map(&[]));
        assert_eq!(result.is_ok(), allowed, "{id}: {result:?}");
        if let Err(err) = result {
            assert!(err.to_string().contains("reserved"), "{err}");
            assert!(err.to_string().contains("worker-id"), "{err}");
        }
    }
    let missing = load(["oz-agent-worker", "--api-key", "k"], &env_map(&[])).unwrap_err();
    assert!(
        missing.to_string().contains("worker-id is required"),
        "{missing}"
    );
}

#[test]
fn the_check_subcommand_takes_flags_before_and_after_it() {
    for argv in [
        vec![
            "oz-agent-worker",
            "check",
            "--worker-id",
            "w1",
            "--api-key",
            "k",
            "--no-cleanup",
        ],
        vec![
            "oz-agent-worker",
            "--worker-id",
            "w1",
            "--no-cleanup",
            "check",
            "--api-key",
            "k",
        ],
    ] {
        let loaded = load(argv.clone(), &env_map(&[])).unwrap();
        match loaded.invocation {
            Invocation::Check(config) => assert!(!config.cleanup, "{argv:?}"),
            other => panic!("expected check for {argv:?}, got {other:?}"),
        }
    }
    assert!(matches!(
        load_with(&[], &[]).unwrap().invocation,
        Invocation::Run(_)
    ));
    let invalid = load(["oz-agent-worker", "check"], &env_map(&[])).unwrap_err();
    assert_eq!(invalid.exit_code(), 64);
}

#[test]
fn version_and_help_exit_zero_with_the_text_for_stdout() {
    let version = load(["oz-agent-worker", "--version"], &env_map(&[])).unwrap_err();
    assert_eq!(version.exit_code(), 0);
    assert!(version.is_informational());
    assert_eq!(
        version.to_string(),
        format!("oz-agent-worker {}", env!("OZ_BUILD_VERSION"))
    );
    assert!(env!("OZ_BUILD_VERSION").starts_with(env!("CARGO_PKG_VERSION")));
    let help = load(["oz-agent-worker", "--help"], &env_map(&[])).unwrap_err();
    assert_eq!(help.exit_code(), 0);
    let text = help.to_string();
    assert!(
        text.contains("Self-hosted worker for Warp ambient agents."),
        "{text}"
    );
    for flag in [
        "--config-file",
        "--backend",
        "--api-key",
        "--worker-id",
        "--log-level",
        "--target-dir",
        "--no-cleanup",
        "--volumes",
        "--env",
        "--max-concurrent-tasks",
        "--idle-on-complete",
        "--log-format",
        "--pull-policy",
        "--health-listen",
        "check",
        "WARP_API_KEY",
    ] {
        assert!(text.contains(flag), "help lacks {flag}: {text}");
    }
    for hidden in [
        "--web-socket-url",
        "--server-root-url",
        "--session-sharing-server-url",
    ] {
        assert!(!text.contains(hidden), "help shows hidden {hidden}");
    }
}

#[test]
fn usage_errors_exit_64_with_clap_text() {
    for args in [
        &["--no-such-flag"][..],
        &["--backend", "podman"],
        &["--log-level", "trace"],
        &["--log-format", "xml"],
        &["--pull-policy", "sometimes"],
        &["--max-concurrent-tasks", "many"],
        &["--worker-id"],
    ] {
        let error = err(args);
        assert!(
            matches!(error, ConfigError::Usage(_)),
            "{args:?}: {error:?}"
        );
        assert_eq!(error.exit_code(), 64, "{args:?}");
    }
    let bad_backend = err(&["--backend", "podman"]).to_string();
    assert!(
        bad_backend.contains("podman") && bad_backend.contains("--backend"),
        "{bad_backend}"
    );
}

#[test]
fn values_with_commas_are_rejected_with_advice_to_repeat_the_flag() {
    let env_error = err(&["-e", "FOO=secret-a,secret-b"]).to_string();
    assert!(env_error.contains("--env entry #1"), "{env_error}");
    assert!(env_error.contains("\"FOO\""), "{env_error}");
    assert!(env_error.contains("repeat -e"), "{env_error}");
    assert!(
        !env_error.contains("secret-a"),
        "an env value leaked: {env_error}"
    );
    let volume_error = err(&["-v", "/a:/b:ro,z"]).to_string();
    assert!(
        volume_error.contains("--volumes value #1"),
        "{volume_error}"
    );
    assert!(volume_error.contains("repeat -v"), "{volume_error}");
    assert!(volume_error.contains("config file"), "{volume_error}");
    // The same mode list is fine in the file.
    let config = with_file("backend:\n  docker:\n    volumes: ['/a:/b:ro,z']\n", &[]).unwrap();
    assert_eq!(docker(config.invocation.config()).volumes, ["/a:/b:ro,z"]);
}

#[test]
fn the_effective_config_redacts_the_api_key_and_every_env_value() {
    let file = yaml(
        "backend:\n  direct:\n    environment:\n      - name: FROM_FILE\n        value: file-secret-value\n",
    );
    let argv = [
        "oz-agent-worker",
        "check",
        "--config-file",
        path_of(&file),
        "--worker-id",
        "w1",
        "--api-key",
        "api-secret-value",
        "-e",
        "CLI_TOKEN=cli-secret-value",
        "-e",
        "INHERITED",
    ];
    let loaded = load(argv, &env_map(&[("INHERITED", "host-secret-value")])).unwrap();
    let config = loaded.invocation.config();
    assert_eq!(
        direct(config).environment.get("INHERITED"),
        Some("host-secret-value")
    );
    let text = effective_config_text(config);
    for secret in [
        "api-secret-value",
        "file-secret-value",
        "cli-secret-value",
        "host-secret-value",
    ] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    for shown in [
        "FROM_FILE",
        "CLI_TOKEN",
        "INHERITED",
        "<redacted>",
        "worker_id: w1",
        "direct:",
        "kill_grace_period: 10s",
    ] {
        assert!(text.contains(shown), "{shown} missing:\n{text}");
    }
    // It is valid YAML.
    let parsed: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(parsed["api_key"], serde_norway::Value::from("<redacted>"));
    assert!(!format!("{config:?}").contains("api-secret-value"));
}

#[test]
fn the_effective_config_of_every_backend_is_yaml_under_the_backend_name() {
    for (text, name, shown) in [
        (
            "backend:\n  docker: {volumes: ['/a:/b']}\n",
            "docker",
            "pull_policy: always",
        ),
        (
            "backend:\n  direct: {}\n",
            "direct",
            "workspace_root: /var/lib/oz/workspaces",
        ),
        (
            "backend:\n  command: {dispatch_command: ./d}\n",
            "command",
            "dispatch_timeout: 1m",
        ),
        (
            "backend:\n  kubernetes: {pod_template: {nodeSelector: {a: b}}}\n",
            "kubernetes",
            "nodeSelector:",
        ),
    ] {
        let loaded = with_file(text, &["-e", "K=v-secret"]).unwrap();
        let rendered = effective_config_text(loaded.invocation.config());
        let parsed: serde_norway::Value = serde_norway::from_str(&rendered).unwrap();
        assert!(parsed["backend"][name].is_mapping(), "{rendered}");
        assert!(rendered.contains(shown), "{shown} missing:\n{rendered}");
        assert!(!rendered.contains("v-secret"), "{rendered}");
    }
}

#[test]
fn state_dir_and_drain_timeout_default_come_from_the_file_and_the_flag_wins() {
    let config = ok(&[]);
    assert_eq!(
        config.state_dir,
        std::path::PathBuf::from(crate::adapters::state::DEFAULT_STATE_DIR)
    );
    assert_eq!(config.drain_timeout, Duration::ZERO);

    let loaded = with_file("state_dir: /srv/oz\ndrain_timeout: 10m\n", &[]).unwrap();
    let config = loaded.invocation.config();
    assert_eq!(config.state_dir, std::path::PathBuf::from("/srv/oz"));
    assert_eq!(config.drain_timeout, Duration::from_secs(600));

    let loaded = with_file(
        "state_dir: /srv/oz\ndrain_timeout: 10m\n",
        &["--state-dir", "/x", "--drain-timeout", "30s"],
    )
    .unwrap();
    let config = loaded.invocation.config();
    assert_eq!(config.state_dir, std::path::PathBuf::from("/x"));
    assert_eq!(config.drain_timeout, Duration::from_secs(30));
}

#[test]
fn a_bad_state_dir_or_drain_timeout_names_the_field() {
    let problems = err(&["--state-dir", "relative/dir", "--drain-timeout", "soon"]);
    let text = problems.to_string();
    assert!(
        text.contains("invalid --state-dir \"relative/dir\": must be an absolute path"),
        "{text}"
    );
    assert!(text.contains("invalid --drain-timeout \"soon\""), "{text}");
    let problems = with_file("state_dir: ''\ndrain_timeout: -1s\n", &[]).unwrap_err();
    let text = problems.to_string();
    assert!(text.contains("invalid state_dir \"\""), "{text}");
    assert!(
        text.contains("invalid drain_timeout \"-1s\": must not be negative"),
        "{text}"
    );
}

#[test]
fn orphan_scan_interval_defaults_to_thirty_seconds_the_flag_wins_and_a_bad_one_names_the_field() {
    assert_eq!(ok(&[]).orphan_scan_interval, Duration::from_secs(30));
    let loaded = with_file("orphan_scan_interval: 0\n", &[]).unwrap();
    assert_eq!(
        loaded.invocation.config().orphan_scan_interval,
        Duration::ZERO
    );
    let loaded = with_file(
        "orphan_scan_interval: 2m\n",
        &["--orphan-scan-interval", "5s"],
    )
    .unwrap();
    assert_eq!(
        loaded.invocation.config().orphan_scan_interval,
        Duration::from_secs(5)
    );
    let text = err(&["--orphan-scan-interval", "often"]).to_string();
    assert!(
        text.contains("invalid --orphan-scan-interval \"often\""),
        "{text}"
    );
    let text = with_file("orphan_scan_interval: -3s\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("invalid orphan_scan_interval \"-3s\": must not be negative"),
        "{text}"
    );
}
