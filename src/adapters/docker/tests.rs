//! Unit tests of the Docker backend's pure parts: references, volume names, credentials lookup,
//! the container body, redaction, output tails, the platform check and pull-failure hints. The
//! engine itself is exercised by `tests/scenarios/docker.rs`.

use std::collections::HashMap;

use bollard::auth::DockerCredentials;
use bollard::models::ImageInspect;

use super::Halt;
use super::config::{DockerConfig, PullPolicy};
use super::container::{Redactor, create_body, resources, tail};
use super::credentials::{Source, lookup};
use super::image::{Platform, PullRequest, check_platform, credentials_hint};
use super::reference::ImageRef;
use super::sidecar::{bind, marker_tar, validate, volume_name};
use crate::domain::FailureReason;
use crate::domain::env::EnvList;
use crate::domain::spec::{SpecSettings, prepare};
use crate::domain::task::{Assignment, InstanceShape, SidecarMount, TaskId};

fn parsed(raw: &str) -> String {
    ImageRef::parse(raw)
        .map(|r| r.to_string())
        .unwrap_or_else(|e| format!("ERR {}", e.why))
}

#[test]
fn references_normalise_like_docker() {
    let cases = [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        (
            "warpdotdev/warp-agent",
            "docker.io/warpdotdev/warp-agent:latest",
        ),
        (
            "index.docker.io/library/ubuntu:22.04",
            "docker.io/library/ubuntu:22.04",
        ),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
        (
            "127.0.0.1:5000/oz-test/busybox:abc",
            "127.0.0.1:5000/oz-test/busybox:abc",
        ),
        (
            "ghcr.io/o/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ghcr.io/o/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ),
        ("a__b/c-d.e:t", "docker.io/a__b/c-d.e:t"),
    ];
    for (raw, want) in cases {
        assert_eq!(parsed(raw), want, "{raw}");
    }
}

#[test]
fn bad_references_are_rejected_with_the_rule_they_break() {
    let cases = [
        ("", "the reference is empty"),
        ("Busybox", "the repository name must be lowercase"),
        ("busybox:", "the tag must"),
        ("busybox:-x", "the tag must"),
        ("busy box", "each path component"),
        ("a//b", "each path component"),
        ("-a", "each path component"),
        ("a@sha256:short", "the digest must"),
        ("bad_host:5000x/a", "the registry host"),
    ];
    for (raw, want) in cases {
        let got = parsed(raw);
        assert!(got.starts_with(&format!("ERR {want}")), "{raw}: {got}");
    }
}

#[test]
fn reference_parts_for_pull_auth_and_volumes() {
    let r = ImageRef::parse("busybox").unwrap();
    assert_eq!(r.familiar_repository(), "busybox");
    assert_eq!(r.pull_tag(), "latest");
    assert_eq!(r.registry_key(), "https://index.docker.io/v1/");
    assert_eq!(r.local_name(), "docker.io/library/busybox:latest");
    let r =
        ImageRef::parse("localhost:5000/a/b:t@sha256:0123456789abcdef0123456789abcdef").unwrap();
    assert_eq!(r.familiar_repository(), "localhost:5000/a/b");
    assert_eq!(r.pull_tag(), "sha256:0123456789abcdef0123456789abcdef");
    assert_eq!(r.registry_key(), "localhost:5000");
    assert_eq!(
        r.local_name(),
        "localhost:5000/a/b@sha256:0123456789abcdef0123456789abcdef"
    );
}

#[test]
fn volume_names_are_sanitised_and_keyed_by_digest() {
    assert_eq!(
        volume_name("warpdotdev/warp-agent", "sha256:0123456789abcdef0000"),
        "warpdotdev-warp-agent-0123456789ab"
    );
    assert_eq!(
        volume_name("localhost:5000/a/b", "sha256:abcdefabcdef12"),
        "localhost-5000-a-b-abcdefabcdef"
    );
    assert_eq!(volume_name("x", "weird:a:b"), "x-weird-a-b");
    assert_eq!(bind("v", "/agent", false), "v:/agent:ro");
    assert_eq!(bind("v", "/mnt/x", true), "v:/mnt/x");
}

#[test]
fn sidecar_lists_are_validated() {
    let s = |image: &str, path: &str| SidecarMount {
        image: image.to_owned(),
        mount_path: path.to_owned(),
        read_write: false,
    };
    assert!(validate(&[s("a", "/agent"), s("b", "/mnt/b")]).is_ok());
    for (list, want) in [
        (vec![s(" ", "/agent")], "empty image"),
        (vec![s("a", "")], "empty mount path"),
        (vec![s("a", "agent")], "relative mount path"),
        (
            vec![s("a", "/x"), s("b", "/x")],
            "duplicate sidecar mount path",
        ),
    ] {
        let err = validate(&list).unwrap_err();
        assert_eq!(err.reason, FailureReason::SidecarPrep);
        assert!(err.message.contains(want), "{}", err.message);
    }
}

#[test]
fn credentials_come_from_helpers_then_store_then_auths() {
    // "user:pass" in base64.
    let inline = r#"{"auths":{"http://127.0.0.1:5001/v2/":{"auth":"dXNlcjpwYXNz"}}}"#;
    match lookup(inline, "127.0.0.1:5001").unwrap() {
        Source::Inline(c) => {
            assert_eq!(c.username, "user");
            assert_eq!(c.password, "pass");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(lookup(inline, "127.0.0.1:5000").unwrap(), Source::None);
    let store = r#"{"credsStore":"desktop","credHelpers":{"ghcr.io":"gh"},"auths":{}}"#;
    assert_eq!(
        lookup(store, "ghcr.io").unwrap(),
        Source::Helper("gh".into())
    );
    assert_eq!(
        lookup(store, "quay.io").unwrap(),
        Source::Helper("desktop".into())
    );
    let hub = r#"{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p"}}}"#;
    assert!(matches!(
        lookup(hub, "https://index.docker.io/v1/").unwrap(),
        Source::Inline(_)
    ));
    let err = lookup(r#"{"auths":{"h":{"auth":"!!"}}}"#, "h").unwrap_err();
    assert!(!err.to_string().contains("!!"));
    // Debug output never shows the password.
    if let Source::Inline(c) = lookup(inline, "127.0.0.1:5001").unwrap() {
        assert!(!format!("{c:?}").contains("pass"));
    }
}

fn spec_with_env() -> crate::domain::spec::TaskSpec {
    let mut a = Assignment::new(TaskId::parse("run-1").unwrap());
    a.docker_image = Some("busybox".into());
    a.sidecar_image = Some("warpdotdev/warp-agent:1".into());
    a.env_vars
        .insert("GITHUB_TOKEN".into(), "ghp_secret_value".into());
    a.env_vars.insert("SHARED".into(), "from-server".into());
    a.instance_shape = Some(InstanceShape {
        vcpus: Some(2),
        memory_gb: Some(4),
    });
    prepare(&a, &SpecSettings::default())
}

#[test]
fn container_body_has_command_env_binds_limits_and_labels() {
    let spec = spec_with_env();
    let mut environment = EnvList::new();
    environment.push("SHARED", "from-operator");
    environment.push("OP", "1");
    let config = DockerConfig {
        worker_id: "w".into(),
        environment,
        volumes: vec!["/host:/data:ro".into()],
        ..DockerConfig::default()
    };
    let labels = HashMap::from([("k".to_owned(), "v".to_owned())]);
    let binds = vec!["vol:/agent:ro".to_owned(), "/host:/data:ro".to_owned()];
    let body = create_body(&spec, &config, "img", binds.clone(), labels.clone());
    let cmd = body.cmd.unwrap();
    assert_eq!(cmd[0], "/agent/entrypoint.sh");
    assert_eq!(&cmd[1..], spec.args.as_slice());
    assert_eq!(body.working_dir.as_deref(), Some("/workspace"));
    assert_eq!(body.entrypoint, None);
    let env = body.env.unwrap();
    assert!(env.contains(&"SHARED=from-operator".to_owned()));
    assert!(!env.contains(&"SHARED=from-server".to_owned()));
    assert!(env.contains(&"GITHUB_TOKEN=ghp_secret_value".to_owned()));
    assert_eq!(env.iter().filter(|e| e.starts_with("SHARED=")).count(), 1);
    assert!(!env.iter().any(|e| e.starts_with("WARP_API_KEY=")));
    assert_eq!(body.labels, Some(labels));
    let host = body.host_config.unwrap();
    assert_eq!(host.binds, Some(binds));
    assert_eq!(host.nano_cpus, Some(2_000_000_000));
    assert_eq!(host.memory, Some(4 << 30));
    assert_eq!(host.memory_swap, Some(4 << 30));
}

#[test]
fn resources_follow_the_shape_per_axis() {
    let shape = |vcpus, memory_gb| InstanceShape { vcpus, memory_gb };
    assert_eq!(resources(None), (None, None));
    assert_eq!(resources(Some(&shape(None, None))), (None, None));
    assert_eq!(resources(Some(&shape(Some(0), Some(-1)))), (None, None));
    assert_eq!(
        resources(Some(&shape(Some(1), None))),
        (Some(1_000_000_000), None)
    );
    assert_eq!(
        resources(Some(&shape(None, Some(1)))),
        (None, Some(1 << 30))
    );
}

#[test]
fn redaction_hides_secret_values_but_not_public_injected_ones() {
    let spec = spec_with_env();
    let r = Redactor::for_env(&spec.env);
    let text = "token ghp_secret_value for run-1 prompt=0 from-server";
    let out = r.redact(text);
    assert_eq!(out, "token *** for run-1 prompt=0 ***");
}

#[test]
fn tails_keep_the_last_lines_and_chars() {
    assert_eq!(tail("a\nb\nc\n", 2, 100), "b\nc");
    assert_eq!(tail("a\nb\nc", 5, 100), "a\nb\nc");
    assert_eq!(tail("abcdef", 1, 3), "def");
    assert_eq!(tail("", 3, 10), "");
}

#[test]
fn the_marker_is_a_valid_tar_of_one_file() {
    let tar = marker_tar("img");
    assert_eq!(tar.len(), 512 * 4);
    assert!(tar.starts_with(b".oz-sidecar-complete"));
    assert_eq!(&tar[257..263], b"ustar\0");
    let mut header = tar[..512].to_vec();
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    let stored = std::str::from_utf8(&tar[148..154]).unwrap();
    assert_eq!(u32::from_str_radix(stored, 8).unwrap(), sum);
    assert_eq!(&tar[512..516], b"img\n");
}

#[test]
fn only_linux_on_amd64_and_arm64_is_supported() {
    let cases = [
        ("linux", "amd64", true),
        ("linux", "arm64", true),
        ("linux", "arm", false),
        ("linux", "386", false),
        ("linux", "s390x", false),
        ("linux", "", false),
        ("windows", "amd64", false),
        ("darwin", "arm64", false),
        ("", "amd64", false),
        ("Linux", "amd64", false),
        ("linux", "AMD64", false),
        ("linux", "x86_64", false),
    ];
    for (os, arch, want) in cases {
        let platform = Platform {
            os: os.to_owned(),
            arch: arch.to_owned(),
        };
        assert_eq!(platform.is_supported(), want, "{platform}");
    }
}

#[test]
fn an_image_must_match_the_engine_platform_exactly() {
    let engine = Platform {
        os: "linux".to_owned(),
        arch: "amd64".to_owned(),
    };
    let inspect = |os: Option<&str>, arch: Option<&str>| ImageInspect {
        id: Some("sha256:abc".to_owned()),
        os: os.map(str::to_owned),
        architecture: arch.map(str::to_owned),
        ..ImageInspect::default()
    };
    // (image os, image arch, reason, expected error: None = accepted)
    let cases = [
        (Some("linux"), Some("amd64"), FailureReason::ImagePull, None),
        (
            Some("linux"),
            Some("amd64"),
            FailureReason::SidecarPrep,
            None,
        ),
        (
            Some("linux"),
            Some("arm64"),
            FailureReason::ImagePull,
            Some("image img:1 is for platform linux/arm64, but this worker requires linux/amd64"),
        ),
        (
            Some("windows"),
            Some("amd64"),
            FailureReason::SidecarPrep,
            Some("image img:1 is for platform windows/amd64, but this worker requires linux/amd64"),
        ),
        (
            None,
            None,
            FailureReason::ImagePull,
            Some("image img:1 is for platform /, but this worker requires linux/amd64"),
        ),
        (
            Some("linux"),
            None,
            FailureReason::ImagePull,
            Some("image img:1 is for platform linux/, but this worker requires linux/amd64"),
        ),
    ];
    for (os, arch, reason, want) in cases {
        let got = check_platform("img:1", inspect(os, arch), &engine, reason);
        match (got, want) {
            (Ok(accepted), None) => assert_eq!(accepted.id.as_deref(), Some("sha256:abc")),
            (Err(Halt::Failed(failure)), Some(want)) => {
                assert_eq!(failure.reason, reason, "{os:?}/{arch:?}");
                assert_eq!(failure.message, want, "{os:?}/{arch:?}");
            }
            (got, want) => panic!("{os:?}/{arch:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn a_registry_asking_for_credentials_gets_a_hint_naming_the_config() {
    let image = ImageRef::parse("127.0.0.1:5001/oz-test/private:1").unwrap();
    let request = |credentials: Option<DockerCredentials>, reason| PullRequest {
        image: &image,
        policy: PullPolicy::Always,
        credentials,
        reason,
    };
    let no_creds =
        "Head \"http://127.0.0.1:5001/v2/oz-test/private/manifests/1\": no basic auth credentials";
    let refused = "unauthorized: authentication required";
    let some = || Some(DockerCredentials::default());
    let cases = [
        (
            no_creds,
            request(None, FailureReason::ImagePull),
            Some(
                "registry 127.0.0.1:5001 requires credentials, and the Docker client config (DOCKER_CONFIG or ~/.docker/config.json) has none for it",
            ),
        ),
        (
            refused,
            request(some(), FailureReason::ImagePull),
            Some(
                "registry 127.0.0.1:5001 refused the credentials from the Docker client config (DOCKER_CONFIG or ~/.docker/config.json)",
            ),
        ),
        (
            no_creds,
            request(None, FailureReason::SidecarPrep),
            Some(
                "registry 127.0.0.1:5001 requires credentials, but sidecar images are pulled anonymously",
            ),
        ),
        (
            "manifest for 127.0.0.1:5001/oz-test/private:1 not found: manifest unknown",
            request(None, FailureReason::ImagePull),
            None,
        ),
    ];
    for (message, request, want) in cases {
        assert_eq!(
            credentials_hint(message, &request).as_deref(),
            want,
            "{message}"
        );
    }
}

#[test]
fn the_engine_and_client_config_come_from_the_standard_docker_variables() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    };
    let none = env(&[]);
    assert_eq!(super::docker_host(&none), super::DEFAULT_DOCKER_HOST);
    assert_eq!(super::client_config_dir(&none), None);

    let empty = env(&[
        ("DOCKER_HOST", ""),
        ("DOCKER_CONFIG", ""),
        ("HOME", "/home/op"),
    ]);
    assert_eq!(super::docker_host(&empty), super::DEFAULT_DOCKER_HOST);
    assert_eq!(
        super::client_config_dir(&empty),
        Some(std::path::PathBuf::from("/home/op/.docker"))
    );

    let set = env(&[
        ("DOCKER_HOST", "tcp://127.0.0.1:2375"),
        ("DOCKER_CONFIG", "/etc/docker-client"),
        ("HOME", "/home/op"),
    ]);
    assert_eq!(super::docker_host(&set), "tcp://127.0.0.1:2375");
    assert_eq!(
        super::client_config_dir(&set),
        Some(std::path::PathBuf::from("/etc/docker-client"))
    );
}
