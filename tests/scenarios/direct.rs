//! The Direct backend's workspace and environment contract against real processes:
//! setup/teardown variables, the env file merge, harness vars, target-dir and no-cleanup
//! modes, workspace permissions and the startup preflight. `scripts/oz-standin` plays `oz`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use oz_agent_worker::adapters::host::{HostEnv, HostError, HostExecutor};
use oz_agent_worker::domain::{AgentConfig, Exit};
use oz_agent_worker::ports::Executor;

use crate::contract::executor_host::{WORKER_KEY, host_env};
use crate::support::direct::{Direct, entries, lines, run};
use crate::support::standin::{self, PROCESS_BOUND, report_value, shown};

#[tokio::test]
async fn setup_and_teardown_get_the_oz_variables_and_the_right_env() {
    let mut d = Direct::new();
    let (setup_out, teardown_out) = (d.path("setup.txt"), d.path("teardown.txt"));
    d.config.setup_command = Some(format!(
        "printf '%s\\n' \"$OZ_WORKSPACE_ROOT\" \"$OZ_WORKER_BACKEND\" \"$OZ_RUN_ID\" \"$OZ_ENVIRONMENT_FILE\" \"${{TASK_VAR-unset}}\" \"${{WARP_API_KEY-unset}}\" \"$(pwd)\" > {}",
        setup_out.display()
    ));
    d.config.teardown_command = Some(format!(
        "printf '%s\\n' \"$OZ_WORKSPACE_ROOT\" \"$OZ_WORKER_BACKEND\" \"$OZ_RUN_ID\" \"${{OZ_ENVIRONMENT_FILE-unset}}\" \"${{TASK_VAR-unset}}\" \"$GIT_CONFIG_GLOBAL\" \"$(ls -A)\" > {}",
        teardown_out.display()
    ));
    let spec = d.spec("t-setup", &[("TASK_VAR", "task-value")], &[]);
    assert_eq!(run(&d.executor(), &spec).await, Ok(Exit::Succeeded));

    let ws = d.workspace("t-setup").display().to_string();
    let setup = lines(&setup_out);
    assert_eq!(setup[..3], [ws.clone(), "direct".into(), "t-setup".into()]);
    assert!(
        setup[3].starts_with(&format!("{ws}/oz-env-")),
        "{}",
        setup[3]
    );
    assert_eq!(setup[4..], ["task-value", WORKER_KEY, ws.as_str()]);

    let teardown = lines(&teardown_out);
    assert_eq!(
        teardown[..6],
        [
            ws.clone(),
            "direct".into(),
            "t-setup".into(),
            "unset".into(),
            "unset".into(),
            format!("{ws}/.gitconfig")
        ]
    );
    assert!(
        !teardown[6].contains("oz-env-"),
        "env file removed before teardown"
    );
    assert!(
        !d.workspace("t-setup").exists(),
        "workspace removed after teardown"
    );
}

#[tokio::test]
async fn env_file_merges_over_the_task_env_but_cannot_move_git_config() {
    let mut d = Direct::new();
    d.config.environment.push("SHARED", "operator");
    d.config.environment.push("OPERATOR_ONLY", "op");
    d.config.setup_command = Some(
        "cat > \"$OZ_ENVIRONMENT_FILE\" <<'EOF'\n# written by setup\nexport FROM_SETUP=\"hello world\" # comment\nOPERATOR_ONLY='from setup'\nGIT_CONFIG_GLOBAL=/tmp/evil\nEOF"
            .into(),
    );
    let show = [
        "SHARED",
        "FROM_SETUP",
        "OPERATOR_ONLY",
        "GIT_CONFIG_GLOBAL",
        "HOME",
        "PWD",
    ];
    let spec = d.spec("t-envfile", &[("SHARED", "server")], &show);
    assert_eq!(run(&d.executor(), &spec).await, Ok(Exit::Succeeded));

    let report = d.report("t-envfile");
    let ws = d.workspace("t-envfile");
    assert_eq!(shown(&report, "SHARED").as_deref(), Some("operator"));
    assert_eq!(shown(&report, "FROM_SETUP").as_deref(), Some("hello world"));
    assert_eq!(
        shown(&report, "OPERATOR_ONLY").as_deref(),
        Some("from setup")
    );
    let git = ws.join(".gitconfig").display().to_string();
    assert_eq!(shown(&report, "GIT_CONFIG_GLOBAL"), Some(git));
    assert_eq!(
        shown(&report, "HOME"),
        std::env::var("HOME").ok(),
        "HOME is not repointed"
    );
    assert_eq!(shown(&report, "PWD"), Some(ws.display().to_string()));
    let names = standin::seen_env_names(&report);
    for absent in [
        "WARP_API_KEY",
        "OZ_RUN_ID",
        "OZ_WORKSPACE_ROOT",
        "OZ_ENVIRONMENT_FILE",
    ] {
        assert!(
            !names.iter().any(|n| n == absent),
            "{absent} leaked: {names:?}"
        );
    }
}

#[tokio::test]
async fn harness_vars_point_into_the_workspace() {
    let d = Direct::new();
    for (harness, var, dir) in [
        ("claude", "CLAUDE_CONFIG_DIR", ".claude"),
        ("codex", "CODEX_HOME", ".codex"),
    ] {
        let id = format!("t-{harness}");
        let mut spec = d.spec(&id, &[], &[var]);
        spec.task.agent_config = Some(AgentConfig {
            harness_type: Some(harness.into()),
            ..AgentConfig::default()
        });
        assert_eq!(run(&d.executor(), &spec).await, Ok(Exit::Succeeded));
        let expected = d.workspace(&id).join(dir).display().to_string();
        assert_eq!(shown(&d.report(&id), var), Some(expected), "{harness}");
    }
}

#[tokio::test]
async fn workspace_is_private_while_running_and_removed_after_cancel() {
    let d = Direct::new();
    let executor = d.executor();
    let mut spec = d.spec("t-private", &[], &[]);
    spec.env.push("OZ_STANDIN_SLEEP", "forever");
    let (token, task) = d.start_agent(&executor, &spec).await;
    let ws = d.workspace("t-private");
    let mode = std::fs::metadata(&ws).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let root_mode = std::fs::metadata(&d.config.workspace_root)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(root_mode & 0o777, 0o700);
    assert!(entries(&ws).iter().any(|n| n.starts_with("oz-env-")));
    token.cancel();
    let outcome = tokio::time::timeout(PROCESS_BOUND, task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Ok(Exit::Cancelled));
    assert!(!ws.exists());
}

#[tokio::test]
async fn target_dir_mode_uses_the_directory_and_keeps_it() {
    let mut d = Direct::new();
    let target = d.path("checkout");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("README"), "keep me").unwrap();
    d.config.target_dir = Some(target.clone());
    d.config.workspace_root = d.path("never-created");
    let marker = d.path("teardown-ran");
    d.config.teardown_command = Some(format!("pwd > {}", marker.display()));
    let spec = d.spec("t-target", &[], &["GIT_CONFIG_GLOBAL"]);
    assert_eq!(run(&d.executor(), &spec).await, Ok(Exit::Succeeded));

    let report = d.report("t-target");
    assert_eq!(
        report_value(&report, "cwd"),
        Some(target.display().to_string())
    );
    let git = PathBuf::from(shown(&report, "GIT_CONFIG_GLOBAL").unwrap());
    assert!(
        !git.starts_with(&target),
        "git config lives outside the checkout"
    );
    let git_dir = git.parent().unwrap();
    assert!(
        git_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("oz-gitconfig-")
    );
    assert!(!git_dir.exists(), "temp git-config dir removed");
    assert_eq!(
        entries(&target),
        ["README"],
        "env file removed, checkout kept"
    );
    assert_eq!(lines(&marker), [target.display().to_string()]);
    assert!(!d.config.workspace_root.exists());
}

#[tokio::test]
async fn no_cleanup_keeps_the_workspace_and_skips_teardown() {
    let mut d = Direct::new();
    d.config.cleanup = false;
    let marker = d.path("teardown-ran");
    d.config.teardown_command = Some(format!("touch {}", marker.display()));
    let spec = d.spec("t-keep", &[], &[]);
    let executor = d.executor();
    assert_eq!(run(&executor, &spec).await, Ok(Exit::Succeeded));
    let ws = d.workspace("t-keep");
    assert!(ws.is_dir());
    assert!(!entries(&ws).iter().any(|n| n.starts_with("oz-env-")));
    assert!(!marker.exists());
    executor.shutdown().await;
    assert!(ws.is_dir(), "shutdown honours no-cleanup");
}

#[tokio::test]
async fn preflight_checks_oz_target_dir_and_workspace_root() {
    let d = Direct::new();
    let bin = d.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let no_oz = HostEnv::from_pairs([("PATH", bin.display().to_string())]);
    let mut config = d.config.clone();
    config.oz_path = None;
    let error = HostExecutor::with_host_env(&config, no_oz.clone()).unwrap_err();
    assert!(matches!(error, HostError::OzNotFound));
    assert_eq!(error.to_string(), "oz CLI not found in PATH");

    std::os::unix::fs::symlink(standin::standin_path(), bin.join("oz")).unwrap();
    let found = HostExecutor::with_host_env(&config, no_oz).expect("oz found on PATH");
    assert_eq!(found.oz_path(), bin.join("oz"));

    let mut missing = d.config.clone();
    missing.target_dir = Some(d.path("missing"));
    let error = HostExecutor::with_host_env(&missing, host_env()).unwrap_err();
    assert!(
        matches!(error, HostError::TargetDirUnavailable { .. }),
        "{error}"
    );
    std::fs::write(d.path("file"), "").unwrap();
    missing.target_dir = Some(d.path("file"));
    let error = HostExecutor::with_host_env(&missing, host_env()).unwrap_err();
    assert!(error.to_string().ends_with("is not a directory"), "{error}");

    let mut nested = d.config.clone();
    nested.workspace_root = d.path("a/b/c");
    HostExecutor::with_host_env(&nested, host_env()).expect("created");
    let mode = std::fs::metadata(d.path("a/b/c"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let mut blocked = d.config.clone();
    blocked.workspace_root = d.path("file/sub");
    let error = HostExecutor::with_host_env(&blocked, host_env()).unwrap_err();
    assert!(matches!(error, HostError::WorkspaceRoot { .. }), "{error}");
}
