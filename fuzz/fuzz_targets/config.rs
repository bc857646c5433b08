//! Fuzzes the YAML config file: the input is written to a file and loaded as
//! `oz-agent-worker check --config-file <file>` would load it (parse, sections, validation).
//! Any input must give a configuration or a configuration error: no panic, and no allocation
//! beyond libFuzzer's `-malloc_limit_mb`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("oz-fuzz-config-{}.yaml", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let path = path();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let file = path.to_string_lossy().into_owned();
    let args = ["oz-agent-worker", "check", "--config-file", file.as_str()];
    let env = |name: &str| match name {
        "WARP_API_KEY" => Some("fuzz-key".to_owned()),
        "HOME" => Some("/tmp".to_owned()),
        _ => None,
    };
    let _ = oz_agent_worker::app::config::load(args, &env);
});
