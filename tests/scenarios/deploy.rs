//! What a release ships, tested as operators use it (scripts/setup/60-deploy.sh provides the
//! tools and runs scripts/release.sh once):
//! - the release artefacts: tarball with the stripped binary, image archive, packaged chart, each
//!   with its sha256;
//! - the container image, built here from the root Dockerfile with `docker build` (offline: the
//!   Debian base is imported locally) and the release binary: `--version`, `check`, exit 64,
//!   uid 10001, and a Docker-backend task run to `task_completed` from inside the container
//!   with the engine's socket mounted, against the local control plane;
//! - the Helm chart with the real Helm engine and the test API server (tests/deploy/chart.py),
//!   and the chart's Role passing the worker's preflight with and without `secrets: create`;
//! - the systemd unit, with `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use oz_agent_worker::adapters::kubernetes::KubernetesExecutor;
use oz_agent_worker::domain::Exit;
use oz_agent_worker::ports::executor::Executor;
use oz_local_control_plane::sample_assignment;
use oz_protocol::WorkerMessage;
use tokio_util::sync::CancellationToken;

use crate::support::daemon::{self, API_KEY};
use crate::support::kubernetes::{self as k8s, PodStatus};
use crate::support::logs::capture_logs;
use crate::support::require;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn env_path(var: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(var)?);
    path.exists().then_some(path)
}

fn run(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    command
        .output()
        .unwrap_or_else(|e| panic!("{shown} did not start: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(command: &mut Command) -> String {
    let shown = format!("{command:?}");
    let out = run(command);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Straight to stderr (libtest captures the print macros of passing tests).
fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn release_dir() -> Option<PathBuf> {
    env_path("OZ_TEST_RELEASE_DIR")
}

fn target_triple() -> String {
    let out = ok(Command::new("rustc").arg("-vV"));
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

/// The release tarball's binary, extracted into `dir`.
fn release_binary(dir: &Path) -> PathBuf {
    let name = format!("oz-agent-worker-{VERSION}-{}", target_triple());
    let tarball = release_dir().unwrap().join(format!("{name}.tar.gz"));
    ok(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir));
    dir.join(name).join("oz-agent-worker")
}

#[test]
fn deploy_release_artifacts_are_complete_checksummed_and_stripped() {
    if !require("release artefacts (60-deploy.sh)", release_dir().is_some()) {
        return;
    }
    let out = release_dir().unwrap();
    let triple = target_triple();
    let tarball = format!("oz-agent-worker-{VERSION}-{triple}.tar.gz");
    let image = format!("oz-agent-worker-image-{VERSION}.tar.gz");
    let chart = format!("oz-agent-worker-{VERSION}.tgz");
    for file in [&tarball, &image, &chart] {
        assert!(out.join(file).is_file(), "{file} missing in {out:?}");
        // Each .sha256 checks its own file, and SHA256SUMS lists them all.
        ok(Command::new("sha256sum")
            .args(["--check", "--strict", &format!("{file}.sha256")])
            .current_dir(&out));
    }
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    for file in [&tarball, &image, &chart] {
        assert!(sums.contains(file.as_str()), "SHA256SUMS lacks {file}");
    }
    ok(Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&out));
    let listing = ok(Command::new("tar").arg("-tzf").arg(out.join(&tarball)));
    let prefix = format!("oz-agent-worker-{VERSION}-{triple}/");
    for member in [
        "oz-agent-worker",
        "README.md",
        "deploy/systemd/oz-agent-worker.service",
        "docs/kubernetes-rbac.yaml",
    ] {
        let want = format!("{prefix}{member}");
        assert!(
            listing.lines().any(|l| l == want),
            "{want} not in {listing}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let binary = release_binary(dir.path());
    let version = ok(Command::new(&binary).arg("--version"));
    assert!(
        version.starts_with(&format!("oz-agent-worker {VERSION} (git ")),
        "{version}"
    );
    let sections = ok(Command::new("readelf").arg("-S").arg(&binary));
    assert!(!sections.contains(".symtab"), "the binary is not stripped");
    report(&format!(
        "release binary: {} bytes stripped",
        std::fs::metadata(&binary).unwrap().len()
    ));
    let chart_listing = ok(Command::new("tar").arg("-tzf").arg(out.join(&chart)));
    for member in [
        "oz-agent-worker/values.schema.json",
        "oz-agent-worker/files/kubernetes-rbac.yaml",
        "oz-agent-worker/templates/deployment.yaml",
    ] {
        assert!(chart_listing.lines().any(|l| l == member), "{member}");
    }
}

fn docker_ready() -> bool {
    run(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]))
        .status
        .success()
}

/// The engine's socket on this host, and the group that owns it.
fn docker_socket() -> (String, u32) {
    use std::os::unix::fs::MetadataExt as _;
    let path = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
    let gid = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .gid();
    (path, gid)
}

/// An image built from the root Dockerfile with the release binary, removed on drop.
struct TestImage(String);

impl TestImage {
    fn build(binary: &Path) -> Self {
        let context = tempfile::tempdir().unwrap();
        std::fs::copy(
            Path::new(ROOT).join("Dockerfile"),
            context.path().join("Dockerfile"),
        )
        .unwrap();
        std::fs::copy(binary, context.path().join("oz-agent-worker")).unwrap();
        let tag = format!("oz-agent-worker-test:{:08x}", fastrand::u32(..));
        ok(Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", &tag])
            .arg(context.path()));
        Self(tag)
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = run(Command::new("docker").args(["rmi", "-f", &self.0]));
    }
}

/// A detached container, removed on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run(Command::new("docker").args(["rm", "-f", &self.0]));
    }
}

#[tokio::test]
async fn deploy_image_runs_as_uid_10001_and_completes_a_docker_task() {
    let task_images = std::env::var("OZ_TEST_DOCKER_IMAGE")
        .ok()
        .zip(std::env::var("OZ_TEST_DOCKER_SIDECAR").ok());
    if !require(
        "docker engine, test images and release artefacts",
        docker_ready() && task_images.is_some() && release_dir().is_some(),
    ) {
        return;
    }
    let (task_image, sidecar) = task_images.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = TestImage::build(&release_binary(dir.path()));
    let size: u64 =
        ok(Command::new("docker").args(["image", "inspect", "--format", "{{.Size}}", &image.0]))
            .trim()
            .parse()
            .unwrap();
    report(&format!(
        "image {}: {:.1} MB",
        image.0,
        size as f64 / 1_000_000.0
    ));
    // The binary plus glibc, dash and the CA bundle: nothing of a distribution's userland.
    assert!(size < 40_000_000, "the image grew to {size} bytes");

    // --version carries the crate version and the commit.
    let version = ok(Command::new("docker").args(["run", "--rm", &image.0, "--version"]));
    assert!(
        version.starts_with(&format!("oz-agent-worker {VERSION} (git ")),
        "{version}"
    );
    // `check` validates without connecting; a bad config exits 64 naming the problem.
    let checked = ok(Command::new("docker").args([
        "run",
        "--rm",
        "-e",
        "WARP_API_KEY=k",
        &image.0,
        "check",
        "--worker-id",
        "image-check",
    ]));
    assert!(checked.contains("image-check"), "{checked}");
    let bad =
        run(Command::new("docker").args(["run", "--rm", &image.0, "--worker-id", "warp-reserved"]));
    assert_eq!(bad.status.code(), Some(64), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("reserved"),
        "{}",
        text(&bad.stderr)
    );
    // ca-certificates and /bin/sh (the Go chart's `kill -0 1` probe) are there.
    ok(Command::new("docker").args([
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &image.0,
        "-c",
        "test -s /etc/ssl/certs/ca-certificates.crt && kill -0 1 && test \"$(pwd)\" = /app",
    ]));

    // The worker in the container, on the host's engine, against the local control plane.
    let cp = daemon::control_plane().await;
    let (socket, gid) = docker_socket();
    let worker_id = format!("deploy-image-{:06x}", fastrand::u32(..0xff_ffff));
    let id = ok(Command::new("docker").args([
        "run",
        "-d",
        "--network",
        "host",
        "-v",
        &format!("{socket}:/var/run/docker.sock"),
        "--group-add",
        &gid.to_string(),
        "-e",
        &format!("WARP_API_KEY={API_KEY}"),
        "-e",
        "OTEL_METRICS_EXPORTER=none",
        &image.0,
        "--worker-id",
        &worker_id,
        "--web-socket-url",
        &cp.ws_url(),
        "--pull-policy",
        "never",
    ]));
    let container = Container(id.trim().to_owned());
    let logs = |c: &Container| {
        let out = run(Command::new("docker").args(["logs", &c.0]));
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    };
    let connected = cp
        .wait_connections(Duration::from_secs(60), |c| c.iter().any(|c| c.open))
        .await;
    assert!(
        connected.is_some(),
        "the containerised worker did not connect:\n{}",
        logs(&container)
    );
    // The image has no coreutils: read the worker's status from the host, by its host pid.
    let pid =
        ok(Command::new("docker").args(["inspect", "--format", "{{.State.Pid}}", &container.0]));
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["Uid:", "10001", "10001", "10001", "10001"]),
        "{status}"
    );

    let task_id = format!("019f5de4-{:04x}-762e-92ed-199c971abcba", fastrand::u16(..));
    let mut assignment = sample_assignment(&task_id);
    assignment["docker_image"] = serde_json::json!(task_image);
    assignment["sidecar_image"] = serde_json::json!(sidecar);
    cp.assign(&assignment).unwrap();
    let outcome = loop {
        let Some(received) = cp.next_message(Duration::from_secs(120)).await else {
            panic!("no task outcome within 120 s:\n{}", logs(&container));
        };
        match received.message {
            Some(m @ WorkerMessage::TaskCompleted { .. }) => break m,
            Some(m @ WorkerMessage::TaskFailed { .. }) => {
                panic!("task failed: {m:?}\n{}", logs(&container))
            }
            _ => {}
        }
    };
    assert!(
        matches!(&outcome, WorkerMessage::TaskCompleted { task_id: t, .. } if *t == task_id),
        "{outcome:?}"
    );
    // Graceful stop: SIGTERM, exit 0, and the lines operators are told to look for.
    ok(Command::new("docker").args(["stop", "-t", "60", &container.0]));
    let exit = ok(Command::new("docker").args([
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &container.0,
    ]));
    let log = logs(&container);
    assert_eq!(exit.trim(), "0", "{log}");
    for line in [
        "Successfully connected to server",
        "Connected to Oz",
        "Listening for tasks",
    ] {
        assert!(log.contains(line), "{line:?} not logged:\n{log}");
    }
    assert!(!log.contains(API_KEY), "the API key was logged");
}

fn chart_tools() -> Option<(PathBuf, PathBuf)> {
    Some((
        env_path("OZ_TEST_DEPLOY_PYTHON")?,
        env_path("OZ_TEST_KUBECTL")?,
    ))
}

#[test]
fn deploy_chart_lints_renders_and_installs_with_the_real_helm_engine() {
    if !require(
        "helm-python-sdk, kubectl and the kubernetes api server",
        chart_tools().is_some() && k8s::available(),
    ) {
        return;
    }
    let (python, kubectl) = chart_tools().unwrap();
    let out = ok(Command::new(python)
        .arg(Path::new(ROOT).join("tests/deploy/chart.py"))
        .arg("check")
        .arg("--kubeconfig")
        .arg(k8s::admin_kubeconfig().unwrap())
        .arg("--kubectl")
        .arg(kubectl)
        .arg("--worker-bin")
        .arg(env!("CARGO_BIN_EXE_oz-agent-worker")));
    assert!(
        out.contains("renderings validated by the API server"),
        "{out}"
    );
}

/// Installs the chart in a fresh namespace (optionally taking `secrets: create` out of its
/// Role), then runs the worker's preflight and one task as the chart's ServiceAccount.
async fn chart_role_runs_a_task(with_secrets: bool) {
    let (python, kubectl) = chart_tools().unwrap();
    let admin = k8s::admin().await;
    let namespace = k8s::namespace(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    let mut driver = Command::new(python);
    driver
        .arg(Path::new(ROOT).join("tests/deploy/chart.py"))
        .arg("rbac")
        .arg("--kubeconfig")
        .arg(k8s::admin_kubeconfig().unwrap())
        .arg("--kubectl")
        .arg(kubectl)
        .args(["--namespace", &namespace, "--out"])
        .arg(dir.path());
    if !with_secrets {
        driver.arg("--without-secrets");
    }
    ok(&mut driver);

    let mut config = k8s::worker_config(&namespace);
    config.kubeconfig = Some(dir.path().join("kubeconfig"));
    let spec = k8s::task_spec("chart-secret-value");
    let names = k8s::names(&config, &spec);
    let (logs, guard) = capture_logs();
    let executor = KubernetesExecutor::connect(&config)
        .await
        .expect("the chart's ServiceAccount passes the preflight");
    let token = CancellationToken::new();
    let task = spec.clone();
    let run = tokio::spawn(async move { executor.run(&task, token).await });
    let pod = k8s::task_pod(&admin, &namespace, &names).await;

    let job = Api::<Job>::namespaced(admin.clone(), &namespace)
        .get(&names.job_name)
        .await
        .unwrap();
    let containers = job.spec.unwrap().template.spec.unwrap().containers;
    let env = containers[0].env.clone().unwrap_or_default();
    let token_var = env.iter().find(|e| e.name == "GITHUB_TOKEN").unwrap();
    let secrets = Api::<Secret>::namespaced(admin.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    let task_secret = secrets
        .items
        .iter()
        .any(|s| s.metadata.name.as_deref() == Some(names.job_name.as_str()));
    let warning = "may not create Secrets in namespace";
    if with_secrets {
        assert!(token_var.value.is_none(), "the value is in the Job spec");
        assert!(token_var.value_from.is_some() && task_secret);
        assert!(!logs.contents().contains(warning), "{}", logs.contents());
    } else {
        assert_eq!(token_var.value.as_deref(), Some("chart-secret-value"));
        assert!(token_var.value_from.is_none() && !task_secret);
        assert_eq!(
            logs.contents().matches(warning).count(),
            1,
            "{}",
            logs.contents()
        );
    }
    k8s::set_pod_status(&admin, &namespace, &pod, PodStatus::Exited(0)).await;
    let exit = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the task ends")
        .unwrap();
    drop(guard);
    assert_eq!(exit, Ok(Exit::Succeeded));
    // No namespace controller runs in the test cluster: the namespace stays Terminating, its
    // objects unused.
    let _ = Api::<Namespace>::all(admin)
        .delete(&namespace, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn deploy_chart_role_with_secrets_create_keeps_task_env_in_a_secret() {
    if !require(
        "helm-python-sdk, kubectl and the kubernetes api server",
        chart_tools().is_some() && k8s::available(),
    ) {
        return;
    }
    chart_role_runs_a_task(true).await;
}

#[tokio::test]
async fn deploy_chart_role_without_secrets_create_puts_task_env_in_the_job_with_one_warning() {
    if !require(
        "helm-python-sdk, kubectl and the kubernetes api server",
        chart_tools().is_some() && k8s::available(),
    ) {
        return;
    }
    chart_role_runs_a_task(false).await;
}

#[test]
fn deploy_systemd_unit_passes_systemd_analyze_verify() {
    let analyze = env_path("OZ_TEST_SYSTEMD_ANALYZE");
    let units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("sysinit.target").exists());
    if !require(
        "systemd-analyze and the system units",
        analyze.is_some() && units.is_some(),
    ) {
        return;
    }
    let (analyze, units) = (analyze.unwrap(), units.unwrap());
    // A root with the system's units, the unit under test and an executable at ExecStart.
    let verify = |unit_text: &str| -> Output {
        let root = tempfile::tempdir().unwrap();
        let copy = |from: &Path, to: &Path| {
            ok(Command::new("cp").arg("-r").arg(from).arg(to));
        };
        std::fs::create_dir_all(root.path().join("usr/lib/systemd")).unwrap();
        copy(&units, &root.path().join("usr/lib/systemd/system"));
        std::fs::create_dir_all(root.path().join("etc/systemd/system")).unwrap();
        std::fs::write(
            root.path()
                .join("etc/systemd/system/oz-agent-worker.service"),
            unit_text,
        )
        .unwrap();
        std::fs::create_dir_all(root.path().join("usr/local/bin")).unwrap();
        std::fs::copy(
            env!("CARGO_BIN_EXE_oz-agent-worker"),
            root.path().join("usr/local/bin/oz-agent-worker"),
        )
        .unwrap();
        run(Command::new(&analyze)
            .arg("verify")
            .arg(format!("--root={}", root.path().display()))
            .arg("oz-agent-worker.service"))
    };
    let unit =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/systemd/oz-agent-worker.service"))
            .unwrap();
    let out = verify(&unit);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify ({}):\n{}",
        out.status,
        text(&out.stderr)
    );
    for needed in [
        "EnvironmentFile=",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "StateDirectory=",
        "ProtectHome=true",
        "PrivateTmp=true",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(needed)),
            "{needed} missing"
        );
    }
    // The check can fail: a misspelt key is reported.
    let broken = verify(&unit.replace("PrivateTmp=", "PrivateTnp="));
    assert!(
        text(&broken.stderr).contains("PrivateTnp"),
        "{}",
        text(&broken.stderr)
    );
}

/// The release workflow runs the release script CI exercises, on version tags only, and checks
/// the tag against the crate version before building anything.
#[test]
fn deploy_release_workflow_runs_the_release_script_on_version_tags() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(".github/workflows/release.yml")).unwrap();
    let workflow: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(
        workflow["on"]["push"]["tags"],
        serde_norway::Value::Sequence(vec!["v*".into()]),
        "triggered by version tags"
    );
    let steps = workflow["jobs"]["release"]["steps"]
        .as_sequence()
        .expect("steps");
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    let check = runs
        .iter()
        .position(|r| r.contains("Cargo.toml") && r.contains("GITHUB_REF_NAME"))
        .expect("a step compares the tag with the crate version");
    let build = runs
        .iter()
        .position(|r| r.trim() == "scripts/release.sh")
        .expect("a step runs scripts/release.sh");
    assert!(check < build, "the version check comes before the build");
    assert!(root.join("scripts/release.sh").is_file());
}
