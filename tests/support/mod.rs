//! Shared test harness: gates for tests that need real infrastructure.

#![allow(dead_code)]

mod eventually;
pub(crate) mod http;
pub(crate) mod otlp;
pub(crate) mod prometheus;
pub(crate) mod sdk;

pub(crate) use eventually::{eventually, eventually_some, poll_some, poll_until};

/// Whether a test that needs `what` should run.
///
/// `available` is the test's own probe (e.g. "the Docker engine answers and the test image
/// exists"). When it is false the test is skipped with a visible message, unless
/// `OZ_TEST_REQUIRE_ALL=1` (set by `scripts/test.sh`, which provisions everything): then the
/// missing piece is a failure, so CI can never pass by skipping.
pub(crate) fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var("OZ_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{what} is required (OZ_TEST_REQUIRE_ALL=1) but not available; run scripts/test.sh");
    }
    // Straight to the stderr handle, not `eprintln!`: libtest captures the print macros of
    // passing tests, which would hide the skip from a plain `cargo test`.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {what} is not available; run scripts/test.sh to provision it"
    );
    false
}

pub(crate) mod daemon;
pub(crate) mod direct;
pub(crate) mod docker;
pub(crate) mod kubernetes;
pub(crate) mod logs;
pub(crate) mod standin;

/// The `oz-local-control-plane` binary, next to the worker's in the same target directory.
///
/// Cargo gives a package's tests `CARGO_BIN_EXE_*` only for that package's own binaries, and
/// the control plane is another workspace member. `cargo test` at the workspace root builds it
/// (its crate has integration tests); when only this package was built, it is built here once.
pub(crate) fn local_control_plane_bin() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = std::path::Path::new(env!("CARGO_BIN_EXE_oz-agent-worker"))
                .with_file_name("oz-local-control-plane");
            if !path.exists() {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
                let status = std::process::Command::new(cargo)
                    .args(["build", "--quiet", "-p", "oz-local-control-plane", "--bin"])
                    .arg("oz-local-control-plane")
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .status()
                    .expect("cargo runs");
                assert!(status.success(), "building oz-local-control-plane failed");
            }
            path
        })
        .clone()
}
