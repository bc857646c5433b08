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
  local kubelet_pid=""
  [ -f "$OZ_TEST_STATE_DIR/kubernetes/kubelet.pid" ] && kubelet_pid="$(cat "$OZ_TEST_STATE_DIR/kubernetes/kubelet.pid")"
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$OZ_TEST_STATE_DIR/pids"
  # A kubelet this run started leaves its pods' containers on the engine and its bind mounts
  # under the state directory: remove both, so nothing of the run outlives it.
  if [ -n "$kubelet_pid" ] && grep -qx "$kubelet_pid" "$OZ_TEST_STATE_DIR/pids"; then
    for _ in $(seq 1 50); do kill -0 "$kubelet_pid" 2>/dev/null || break; sleep 0.1; done
    docker ps -aq --filter 'name=^k8s_' | xargs -r docker rm -f >/dev/null 2>&1 || true
    awk -v dir="$OZ_TEST_STATE_DIR/" 'index($2, dir) == 1 {print $2}' /proc/mounts | sort -r |
      while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
  fi
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
