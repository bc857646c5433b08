# shellcheck shell=bash
# Cargo tools the CI gates need: cargo-deny (licences, bans, duplicate versions, sources).
#
# Built once from crates.io with `cargo install --locked` into a cache folder outside the repo
# keyed by version, skipped when the binary is already there; then put on PATH. Sourced by
# scripts/test.sh and by .ci/run (before `cargo deny check`). Idempotent.
# Build cost on a fresh 2-core machine: a few minutes of CPU (skipped when cached).

oz_deny_version=0.20.2
oz_deny_root="${OZ_TEST_CACHE:-/var/cache/oz-agent-worker-test}/cargo-deny-$oz_deny_version"

if [ ! -x "$oz_deny_root/bin/cargo-deny" ]; then
  echo "building cargo-deny $oz_deny_version into $oz_deny_root"
  mkdir -p "$oz_deny_root"
  cargo install --locked --quiet cargo-deny --version "=$oz_deny_version" --root "$oz_deny_root"
fi
case ":$PATH:" in
  *":$oz_deny_root/bin:"*) ;;
  *) export PATH="$oz_deny_root/bin:$PATH" ;;
esac
