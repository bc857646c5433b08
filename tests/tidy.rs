//! Tidy: architecture rules checked by reading the sources, as rust-analyzer's `tidy.rs` does.
//!
//! The domain stays pure (no tokio, no adapter crate, no I/O, no clock, no printing or
//! logging), the ports name no library type, each outside library is used by its one adapter,
//! and every Rust file opens with a `//!` line saying what it is. Each rule has a test on a
//! made-up source that shows it can fail.

use std::path::{Path, PathBuf};

/// What the domain must not name, outside comments, string literals and its test module.
const DOMAIN_FORBIDDEN: &[&str] = &[
    "tokio",
    "bollard",
    "kube::",
    "k8s_openapi",
    "tungstenite",
    "opentelemetry",
    "crate::adapters",
    "crate::app",
    "std::fs",
    "std::net",
    "std::process",
    "Instant::now",
    "SystemTime::now",
    "print!",
    "println!",
    "dbg!",
    "tracing",
    "log::",
];

/// Library names the ports must not mention: they speak in domain terms only.
const PORTS_FORBIDDEN: &[&str] = &[
    "bollard",
    "kube::",
    "k8s_openapi",
    "tungstenite",
    "opentelemetry",
];

/// Each outside library and the only folders (relative to the workspace root) that may use it.
const LIBRARY_HOMES: &[(&str, &[&str])] = &[
    ("bollard", &["src/adapters/docker"]),
    ("kube::", &["src/adapters/kubernetes"]),
    ("k8s_openapi", &["src/adapters/kubernetes"]),
    (
        "tungstenite",
        &[
            "src/adapters/control_plane",
            "crates/oz-local-control-plane",
        ],
    ),
    ("opentelemetry", &["src/adapters/otel"]),
];

/// The folders whose files the library rule covers (tests and benches may drive any library).
const LIBRARY_SCOPE: &[&str] = &["src", "crates"];

/// The folders whose every `.rs` file must start with `//!`.
const DOC_SCOPE: &[&str] = &["src", "crates", "tests", "benches"];

#[test]
fn the_domain_depends_on_no_runtime_adapter_io_clock_or_logging() {
    let problems: Vec<String> = rust_files(&root().join("src/domain"))
        .iter()
        .flat_map(|path| {
            let text = read(path);
            let code = code_of(&text, true);
            forbidden_names(&code, DOMAIN_FORBIDDEN)
                .into_iter()
                .map(move |(line, name)| format!("{}:{line}: {name}", shown(path)))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "the domain must stay pure (no tokio, adapter crate, I/O, clock or logging); found:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_ports_name_no_library_type() {
    let problems: Vec<String> = rust_files(&root().join("src/ports"))
        .iter()
        .flat_map(|path| {
            let code = code_of(&read(path), false);
            forbidden_names(&code, PORTS_FORBIDDEN)
                .into_iter()
                .map(move |(line, name)| format!("{}:{line}: {name}", shown(path)))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "the ports must not name a library type; found:\n{}",
        problems.join("\n")
    );
}

#[test]
fn each_outside_library_is_used_only_by_its_adapter() {
    let mut problems = Vec::new();
    for scope in LIBRARY_SCOPE {
        for path in rust_files(&root().join(scope)) {
            let relative = shown(&path);
            let code = code_of(&read(&path), false);
            problems.extend(misplaced_libraries(&relative, &code));
        }
    }
    assert!(
        problems.is_empty(),
        "a library is used outside its adapter; found:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_rust_file_starts_with_a_module_doc_line() {
    let missing: Vec<String> = DOC_SCOPE
        .iter()
        .flat_map(|scope| rust_files(&root().join(scope)))
        .filter(|path| !starts_with_module_doc(&read(path)))
        .map(|path| shown(&path))
        .collect();
    assert!(
        missing.is_empty(),
        "every .rs file must start with a `//!` line saying what it is; missing in:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_domain_rule_finds_tokio_printing_and_the_clock_in_code_but_not_in_comments() {
    let source = "//! Doc mentioning tokio.\nuse tokio::sync::mpsc; // and tracing\n\
                  fn f() { let now = std::time::Instant::now(); println!(\"{now:?}\"); }\n\
                  fn g() { let s = \"crate::adapters in a string\"; }\n\
                  #[cfg(test)]\nmod tests { fn t() { std::time::Instant::now(); } }\n";
    let found = forbidden_names(&code_of(source, true), DOMAIN_FORBIDDEN);
    assert_eq!(found, [(2, "tokio"), (3, "Instant::now"), (3, "println!")]);
}

#[test]
fn the_ports_rule_finds_a_library_type() {
    let source = "//! A port.\npub trait Source { fn docker(&self) -> bollard::Docker; }\n";
    let found = forbidden_names(&code_of(source, false), PORTS_FORBIDDEN);
    assert_eq!(found, [(2, "bollard")]);
}

#[test]
fn the_library_rule_finds_kube_outside_the_kubernetes_adapter_only() {
    let code = code_of("//! A file.\nuse kube::Client;\n", false);
    assert_eq!(
        misplaced_libraries("src/adapters/docker/executor.rs", &code),
        ["src/adapters/docker/executor.rs:2: kube:: (only in src/adapters/kubernetes)"]
    );
    assert!(misplaced_libraries("src/adapters/kubernetes/watch.rs", &code).is_empty());
}

#[test]
fn the_doc_rule_finds_a_file_without_a_module_doc_line() {
    assert!(starts_with_module_doc("//! What this is.\nfn f() {}\n"));
    assert!(!starts_with_module_doc("/// An item doc.\nfn f() {}\n"));
    assert!(!starts_with_module_doc("\n//! Too late.\n"));
}

/// The library rule for one file: every library it names outside the library's homes.
fn misplaced_libraries(relative: &str, code: &[(usize, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (library, homes) in LIBRARY_HOMES {
        if homes
            .iter()
            .any(|home| relative.starts_with(&format!("{home}/")))
        {
            continue;
        }
        for (line, _) in forbidden_names(code, &[library]) {
            problems.push(format!(
                "{relative}:{line}: {library} (only in {})",
                homes.join(", ")
            ));
        }
    }
    problems
}

/// Each `(line number, name)` where a name of `names` occurs in `code`, in order.
fn forbidden_names<'a>(code: &[(usize, String)], names: &[&'a str]) -> Vec<(usize, &'a str)> {
    code.iter()
        .flat_map(|(number, line)| {
            names
                .iter()
                .filter(|name| line.contains(**name))
                .map(move |name| (*number, *name))
        })
        .collect()
}

/// The code of `text` by 1-based line number: without `//` comments and the contents of string
/// literals, and (when `skip_tests`) without everything from the first `#[cfg(test)]` on (the
/// test module sits at the end of a file).
fn code_of(text: &str, skip_tests: bool) -> Vec<(usize, String)> {
    let mut code = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if skip_tests && line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        code.push((index + 1, strip_comment_and_strings(line)));
    }
    code
}

/// `line` without its `//` comment and with the contents of its string literals removed.
fn strip_comment_and_strings(line: &str) -> String {
    let mut kept = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    kept.push('"');
                }
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            kept.push('"');
        } else if c == '/' && chars.peek() == Some(&'/') {
            break;
        } else {
            kept.push(c);
        }
    }
    kept
}

fn starts_with_module_doc(text: &str) -> bool {
    text.starts_with("//!")
}

/// The workspace root (this package sits at it).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `path` relative to the workspace root, with `/` separators.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", shown(path)))
}

/// Every `.rs` file under `dir`, sorted; skips `target` folders.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("cannot list {}: {err}", shown(&dir)));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name != "target") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no .rs file under {}", shown(dir));
    files
}
