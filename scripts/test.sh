#!/usr/bin/env bash
# The one test command: provisions everything the tests need on a fresh Debian machine
# (packages, Docker test images, a local registry, a Kubernetes API server, Prometheus), then
# runs every test with OZ_TEST_REQUIRE_ALL=1 so nothing is silently skipped.
#
# Each scripts/setup/*.sh is sourced in name order; it must be idempotent, may export variables
# for the tests, and records background services' pids in $OZ_TEST_STATE_DIR/pids.
set -euo pipefail
cd "$(dirname "$0")/.."
export OZ_TEST_STATE_DIR="${OZ_TEST_STATE_DIR:-$PWD/target/test-state}"
mkdir -p "$OZ_TEST_STATE_DIR"
: > "$OZ_TEST_STATE_DIR/pids"
cleanup() {
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$OZ_TEST_STATE_DIR/pids"
}
trap cleanup EXIT
for setup in scripts/setup/*.sh; do
  [ -e "$setup" ] || continue
  echo "== setup: $setup"
  # shellcheck disable=SC1090
  . "$setup"
done
export OZ_TEST_REQUIRE_ALL=1
echo "== cargo test"
cargo test "$@"
echo "== fuzz (60 s per target)"
scripts/fuzz.sh 60
