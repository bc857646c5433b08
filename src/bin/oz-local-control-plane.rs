//! Placeholder until the local control plane lands.
fn main() {}
