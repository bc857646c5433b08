# shellcheck shell=bash
# Prometheus for the metrics tests (sourced by scripts/test.sh; also runnable alone with `bash`).
# Unpacks Debian's `prometheus` package (which ships `promtool` too) into target/test-tools
# without installing it system-wide, so no packaged service starts on :9090. Idempotent: a second
# run only checks the binaries. The tests start their own Prometheus on a free loopback port.
# Exports:
#   OZ_TEST_PROMETHEUS_BIN   the prometheus server binary
#   OZ_TEST_PROMTOOL_BIN     promtool
set -euo pipefail
oz_prom_dir="${OZ_TEST_TOOLS_DIR:-$(pwd)/target/test-tools}/prometheus"
oz_prom_bin="$oz_prom_dir/usr/bin/prometheus"
oz_promtool_bin="$oz_prom_dir/usr/bin/promtool"

if [ -n "$(command -v prometheus || true)" ] && [ -n "$(command -v promtool || true)" ]; then
  oz_prom_bin="$(command -v prometheus)"
  oz_promtool_bin="$(command -v promtool)"
elif ! { [ -x "$oz_prom_bin" ] && [ -x "$oz_promtool_bin" ]; }; then
  oz_prom_work="$(mktemp -d)"
  (
    cd "$oz_prom_work"
    if ! apt-get download prometheus >/dev/null 2>&1; then
      apt-get update >/dev/null
      apt-get download prometheus >/dev/null
    fi
  )
  mkdir -p "$oz_prom_dir"
  dpkg-deb -x "$oz_prom_work"/prometheus_*.deb "$oz_prom_dir"
  rm -rf "$oz_prom_work"
fi

if ! "$oz_prom_bin" --version >/dev/null 2>&1 || ! "$oz_promtool_bin" --version >/dev/null 2>&1; then
  echo "30-prometheus.sh: $oz_prom_bin or $oz_promtool_bin does not run" >&2
  return 1 2>/dev/null || exit 1
fi
export OZ_TEST_PROMETHEUS_BIN="$oz_prom_bin"
export OZ_TEST_PROMTOOL_BIN="$oz_promtool_bin"
echo "30-prometheus.sh: $("$oz_prom_bin" --version 2>&1 | sed -n 1p)"
