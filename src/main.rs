//! Placeholder until bootstrap lands.
fn main() {}
