//! Fuzzes the inbound frame decoder: `oz_protocol::decode_server_frame`, then the worker's
//! conversion of what it accepts into domain values. Any input must give a value or a
//! rejection: no panic, and no allocation beyond libFuzzer's `-malloc_limit_mb`.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The worker's default limit on a frame it parses.
const MAX_FRAME: usize = 16 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let _ = oz_protocol::decode_server_frame(data, MAX_FRAME);
    let _ = oz_agent_worker::adapters::control_plane::decode_inbound_frame(data, MAX_FRAME);
    // A small limit exercises the size check on every input.
    let _ = oz_protocol::decode_server_frame(data, 64);
});
