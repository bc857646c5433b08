#!/usr/bin/env bash
# Quick start: builds the worker and the local control plane, starts the control plane on
# 127.0.0.1:8765, runs the worker on the Direct backend with the stand-in `oz` CLI, sends it two
# sample tasks, prints the lifecycle as it happens, then shuts the worker down gracefully.
# Needs only Rust and /bin/sh. Usage: scripts/quickstart.sh [number of tasks]
set -euo pipefail
cd "$(dirname "$0")/.."
tasks="${1:-2}"
port="${OZ_QUICKSTART_PORT:-8765}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --quiet --bins
cat > "$work/config.yaml" <<YAML
worker_id: quickstart
backend:
  direct:
    workspace_root: $work/workspaces
    oz_path: $PWD/scripts/oz-standin
YAML

echo "== control plane on ws://127.0.0.1:$port (sends $tasks sample tasks)"
target/debug/oz-local-control-plane --listen "127.0.0.1:$port" --api-key quickstart-key \
  --tasks "$tasks" --exit-when-done | sed -u 's/^/[control plane] /' &
control_plane=$!

echo "== worker (Direct backend, stand-in oz)"
WARP_API_KEY=quickstart-key OTEL_METRICS_EXPORTER=none target/debug/oz-agent-worker \
  --config-file "$work/config.yaml" \
  --web-socket-url "ws://127.0.0.1:$port/api/v1/selfhosted/worker/ws" \
  --server-root-url "http://127.0.0.1:$port" \
  -e OZ_STANDIN_SLEEP=1 2>&1 | sed -u 's/^/[worker] /' &
worker=$!

status=0
wait "$control_plane" || status=$?
echo "== all tasks reported; stopping the worker (SIGTERM)"
pkill -TERM -f "oz-agent-worker --config-file $work/config.yaml" || true
wait "$worker" || true
exit "$status"
