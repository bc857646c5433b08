#!/usr/bin/env bash
# Quick start: builds the worker and the local control plane, starts the control plane on
# 127.0.0.1:8765, runs the worker on the Direct backend with the stand-in `oz` CLI, sends it two
# sample tasks, prints the lifecycle as it happens, then shuts the worker down gracefully.
# Needs only Rust and /bin/sh. Usage: scripts/quickstart.sh [number of tasks]
#
# Exits with the control plane's status (0 when every task completed), or the worker's when the
# control plane succeeded but the worker's graceful shutdown did not.
#
# Environment (all optional):
#   OZ_QUICKSTART_PORT=port      listen there instead of 8765
#   OZ_QUICKSTART_BIN_DIR=dir    use the prebuilt oz-agent-worker and oz-local-control-plane in
#                                dir instead of running `cargo build` (the tests use this, so
#                                they never wait for cargo's build lock)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks="${1:-2}"
port="${OZ_QUICKSTART_PORT:-8765}"
work="$(mktemp -d)"
control_plane=""
worker=""

# Stops whatever is still running (after an error or an interrupt), then removes the scratch
# directory. Only the pids this script started are signalled.
cleanup() {
  for pid in $worker $control_plane; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${OZ_QUICKSTART_BIN_DIR:-}" ]; then
  bin="$OZ_QUICKSTART_BIN_DIR"
else
  cargo build --quiet --bins
  bin="${CARGO_TARGET_DIR:-target}/debug"
fi
cat > "$work/config.yaml" <<YAML
worker_id: quickstart
state_dir: $work/state
backend:
  direct:
    workspace_root: $work/workspaces
    oz_path: $PWD/scripts/oz-standin
YAML

# Each program writes into a process substitution that prefixes its lines, so `$!` is the
# program's own pid (with a pipe it would be the pid of `sed`).
echo "== control plane on ws://127.0.0.1:$port (sends $tasks sample tasks)"
"$bin/oz-local-control-plane" --listen "127.0.0.1:$port" --api-key quickstart-key \
  --tasks "$tasks" --exit-when-done > >(sed -u 's/^/[control plane] /') &
control_plane=$!

echo "== worker (Direct backend, stand-in oz)"
WARP_API_KEY=quickstart-key OTEL_METRICS_EXPORTER=none "$bin/oz-agent-worker" \
  --config-file "$work/config.yaml" \
  --web-socket-url "ws://127.0.0.1:$port/api/v1/selfhosted/worker/ws" \
  --server-root-url "http://127.0.0.1:$port" \
  -e OZ_STANDIN_SLEEP=1 > >(sed -u 's/^/[worker] /') 2>&1 &
worker=$!

status=0
wait "$control_plane" || status=$?
control_plane=""
echo "== all tasks reported; stopping the worker (SIGTERM)"
kill -TERM "$worker" 2>/dev/null || true
worker_status=0
wait "$worker" || worker_status=$?
worker=""
echo "== control plane exited with $status, worker with $worker_status"
if [ "$status" -eq 0 ]; then
  status=$worker_status
fi
exit "$status"
