//! Shared test harness: gates for tests that need real infrastructure.

#![allow(dead_code)]

pub mod http;
pub mod otlp;
pub mod prometheus;
pub mod sdk;

/// Whether a test that needs `what` should run.
///
/// `available` is the test's own probe (e.g. "the Docker engine answers and the test image
/// exists"). When it is false the test is skipped with a visible message, unless
/// `OZ_TEST_REQUIRE_ALL=1` (set by `scripts/test.sh`, which provisions everything): then the
/// missing piece is a failure, so CI can never pass by skipping.
pub fn require(what: &str, available: bool) -> bool {
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

pub mod daemon;
pub mod direct;
pub mod docker;
pub mod kubernetes;
pub mod logs;
pub mod standin;
