#!/usr/bin/env bash
# Runs each coverage-guided fuzz target (fuzz/, cargo-fuzz + libFuzzer) for a short while:
# `frame` (the inbound frame decoder and the worker's conversion) and `config` (the YAML config
# file). The committed corpus under fuzz/corpus/<target> seeds each run; new inputs go to a
# scratch copy, so the repository stays small. A panic, a crash, an allocation above
# -malloc_limit_mb or an RSS above -rss_limit_mb fails the run (and libFuzzer saves the input
# under fuzz/artifacts/).
#
# Usage: scripts/fuzz.sh [seconds per target, default 60] [target...]
# Needs cargo-fuzz (scripts/setup/60-cargo-fuzz.sh installs it) and a nightly toolchain; without
# one, the stable toolchain is used with RUSTC_BOOTSTRAP=1 for the -Z flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame config)
cache="${OZ_TEST_CACHE:-/var/cache/oz-agent-worker-test}"
fuzz_bin="${OZ_CARGO_FUZZ:-$cache/cargo-fuzz-0.13.1/bin}"
export PATH="$fuzz_bin:$PATH"
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz not found (run scripts/setup/60-cargo-fuzz.sh)" >&2; exit 1; }
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  cargo=(cargo +nightly)
else
  export RUSTC_BOOTSTRAP=1
  cargo=(cargo)
fi
target_dir="$cache/fuzz-target"
for target in "${targets[@]}"; do
  scratch="$(mktemp -d)"
  echo "== fuzz $target for ${seconds}s"
  (cd fuzz && "${cargo[@]}" fuzz run --target-dir "$target_dir" "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -malloc_limit_mb=256 -rss_limit_mb=1024 -print_final_stats=1) \
    || { rm -rf "$scratch"; echo "fuzz target $target FAILED" >&2; exit 1; }
  rm -rf "$scratch"
done
