//! The `oz-local-control-plane` command line. Its lifecycle output is tested against a real
//! worker connection in the worker's `tests/scenarios/local_control_plane.rs`.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_oz-local-control-plane");

#[test]
fn help_names_the_listen_address_and_exits_zero() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("--listen"), "{text}");
}

#[test]
fn an_unknown_flag_is_refused_with_its_name() {
    let output = Command::new(BIN).arg("--no-such-flag").output().unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("--no-such-flag"), "{text}");
}
