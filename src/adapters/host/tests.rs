//! Unit tests of the Direct backend's pure pieces: task-id safety, the dotenv parser, output
//! redaction and tail, exit-status text, and env composition.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use super::dotenv::{self, DotenvError};
use super::environment::{self, HostEnv};
use super::output::{LineSplitter, OutputSink, Phase, Redactor, Stream, TAIL_BYTES};
use super::process::describe;
use super::workspace::is_safe_path_component;
use crate::app::config::{LogFormat, LogLevel};
use crate::app::logging::capture::capture;
use crate::domain::env::EnvList;
use crate::domain::spec::{SpecSettings, prepare};
use crate::domain::{AgentConfig, Assignment, TaskId};

#[test]
fn task_ids_must_be_one_safe_path_component() {
    for ok in ["t1", "run-42_x", ".hidden", "a..b"] {
        assert!(is_safe_path_component(ok), "{ok}");
    }
    for bad in ["", ".", "..", "../x", "a/b", "a\\b", "/abs", "x\0y"] {
        assert!(!is_safe_path_component(bad), "{bad:?}");
    }
}

fn pairs(text: &str) -> Vec<(String, String)> {
    dotenv::parse(text).unwrap()
}

fn kv(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn dotenv_accepts_quotes_comments_and_export() {
    let text = "# comment\n\nexport A=1\nB = two words  # trailing\nC=\"x \\\"q\\\" \\n y\"\nD='lit $HOME \\n'\nE=\nF=\"multi\nline\"\nG=a#b\n";
    assert_eq!(
        pairs(text),
        kv(&[
            ("A", "1"),
            ("B", "two words"),
            ("C", "x \"q\" \n y"),
            ("D", "lit $HOME \\n"),
            ("E", ""),
            ("F", "multi\nline"),
            ("G", "a#b"),
        ])
    );
}

#[test]
fn dotenv_errors_name_the_line_not_the_value() {
    let cases = [
        ("A=1\nnot a pair\n", DotenvError::MissingEquals(2)),
        ("1A=x", DotenvError::InvalidKey(1)),
        ("A=\"open", DotenvError::Unterminated(1)),
        ("A='x' y", DotenvError::TrailingText(1)),
    ];
    for (text, expected) in cases {
        let error = dotenv::parse(text).unwrap_err();
        assert_eq!(error, expected, "{text:?}");
        assert!(!error.to_string().contains("open"));
    }
}

#[test]
fn redaction_masks_long_values_whole_and_keeps_short_flags() {
    let redactor = Redactor::new(["0", "ghp_secret", "ghp_secret_longer", "abc"]);
    assert_eq!(
        redactor.redact("status 0: ghp_secret_longer and ghp_secret, abc"),
        "status 0: *** and ***, abc"
    );
}

#[test]
fn tail_keeps_the_last_bytes_of_redacted_lines() {
    let mut sink = OutputSink::new("t1", Phase::Agent, Redactor::new(["supersecret"]));
    let mut lines = LineSplitter::new(Stream::Stdout);
    for i in 0..500 {
        lines.feed(format!("line {i} supersecret\n").as_bytes(), &mut sink);
    }
    lines.feed(b"no newline at the end", &mut sink);
    lines.finish(&mut sink);
    let tail = sink.tail();
    assert!(tail.len() <= TAIL_BYTES + 4, "{}", tail.len());
    assert!(tail.ends_with("no newline at the end"));
    assert!(tail.contains("line 499 ***"));
    assert!(!tail.contains("secret"));
    assert!(!tail.contains("line 0 "));
}

#[test]
fn output_lines_are_info_events_with_task_id_phase_and_stream_and_masked_secrets() {
    let pem = "-----BEGIN KEY-----\nAAAAsecretline1\nBBBBsecretline2\n-----END KEY-----";
    let log = capture(LogFormat::Json, LogLevel::Info, || {
        let mut sink = OutputSink::new("t-7", Phase::Setup, Redactor::new(["hunter2-token", pem]));
        let mut out = LineSplitter::new(Stream::Stdout);
        let mut err = LineSplitter::new(Stream::Stderr);
        out.feed(b"token is hunter2-token\n", &mut sink);
        err.feed(format!("{pem}\n").as_bytes(), &mut sink);
        err.finish(&mut sink);
    });
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert_eq!(lines.len(), 5, "{log}");
    for line in &lines {
        assert_eq!(line["level"], "INFO", "{log}");
        assert_eq!(line["task_id"], "t-7", "{log}");
        assert_eq!(line["phase"], "setup", "{log}");
    }
    assert_eq!(lines[0]["stream"], "stdout");
    assert_eq!(lines[0]["message"], "token is ***");
    assert!(lines[1..].iter().all(|l| l["stream"] == "stderr"), "{log}");
    assert!(lines[1..].iter().all(|l| l["message"] == "***"), "{log}");
    assert!(
        !log.contains("hunter2") && !log.contains("secretline"),
        "{log}"
    );
    let quiet = capture(LogFormat::Text, LogLevel::Warn, || {
        let mut sink = OutputSink::new("t-7", Phase::Agent, Redactor::default());
        sink.line(Stream::Stdout, b"below the level");
    });
    assert_eq!(quiet, "", "output follows --log-level");
}

#[test]
fn overlong_lines_are_cut() {
    let mut sink = OutputSink::new("t1", Phase::Agent, Redactor::default());
    let mut lines = LineSplitter::new(Stream::Stderr);
    lines.feed(&vec![b'x'; 20_000], &mut sink);
    lines.finish(&mut sink);
    assert!(sink.tail().len() <= TAIL_BYTES + 4);
}

#[test]
fn exit_status_text_and_code() {
    let check = |raw: i32, code: Option<i32>, text: &str| {
        assert_eq!(describe(ExitStatus::from_raw(raw)), (code, text.to_owned()));
    };
    check(2 << 8, Some(2), "exit status 2");
    check(15, Some(143), "signal: terminated");
    check(9, Some(137), "signal: killed");
    check(
        11 | 0x80,
        Some(139),
        "signal: segmentation fault (core dumped)",
    );
}

fn spec_with_harness(harness: Option<&str>) -> crate::domain::TaskSpec {
    let mut assignment = Assignment::new(TaskId::parse("t1").unwrap());
    assignment.env_vars.insert("SHARED".into(), "server".into());
    assignment.task.agent_config = harness.map(|h| AgentConfig {
        harness_type: Some(h.into()),
        ..AgentConfig::default()
    });
    prepare(&assignment, &SpecSettings::default())
}

#[test]
fn task_env_layers_operator_harness_and_git_config() {
    let mut operator = EnvList::new();
    operator.push("SHARED", "operator");
    operator.push("GIT_CONFIG_GLOBAL", "/operator/gitconfig");
    let ws = Path::new("/ws/t1");
    let git = Path::new("/ws/t1/.gitconfig");
    let env = environment::task_env(&spec_with_harness(Some(" claude ")), &operator, ws, git);
    assert_eq!(env.get("SHARED"), Some("operator"));
    assert_eq!(env.get("CLAUDE_CONFIG_DIR"), Some("/ws/t1/.claude"));
    assert_eq!(env.get("GIT_CONFIG_GLOBAL"), Some("/ws/t1/.gitconfig"));
    assert_eq!(env.keys().filter(|k| *k == "SHARED").count(), 1);
    let env = environment::task_env(&spec_with_harness(Some("codex")), &operator, ws, git);
    assert_eq!(env.get("CODEX_HOME"), Some("/ws/t1/.codex"));
    assert_eq!(env.get("CLAUDE_CONFIG_DIR"), None);
    let env = environment::task_env(&spec_with_harness(Some("oz")), &operator, ws, git);
    assert_eq!(env.get("CODEX_HOME"), None);

    let merged = environment::merge_env_file(
        &env,
        kv(&[("SHARED", "setup"), ("GIT_CONFIG_GLOBAL", "/evil")]),
        git,
    );
    assert_eq!(merged.get("SHARED"), Some("setup"));
    assert_eq!(merged.get("GIT_CONFIG_GLOBAL"), Some("/ws/t1/.gitconfig"));
}

#[test]
fn agent_gets_only_home_tmpdir_path_from_the_host() {
    let host = HostEnv::from_pairs([
        ("HOME", "/home/w"),
        ("PATH", "/bin"),
        ("WARP_API_KEY", "worker-key"),
        ("OTHER", "x"),
    ]);
    let mut task = EnvList::new();
    task.push("PATH", "/task/bin");
    let env = environment::agent_env(&host, &task);
    let names: Vec<_> = env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
    assert_eq!(
        names,
        ["HOME", "PATH", "PATH"],
        "task PATH comes last and wins"
    );
    let setup = environment::setup_env(&host, &task, &EnvList::new());
    assert!(setup.iter().any(|(k, _)| k == "WARP_API_KEY"));
}

#[test]
fn the_host_env_snapshot_reads_text_values_and_never_shows_them_in_debug() {
    let host = HostEnv::from_pairs([("WARP_API_KEY", "secret-key"), ("HOME", "/home/op")]);
    assert_eq!(host.var("HOME").as_deref(), Some("/home/op"));
    assert_eq!(host.var("TMPDIR"), None);
    let shown = format!("{host:?}");
    assert!(shown.contains("WARP_API_KEY"), "{shown}");
    assert!(!shown.contains("secret-key"), "{shown}");
}
