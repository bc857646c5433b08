# Direct backend tests: real host processes running scripts/oz-standin as the `oz` CLI.
# Needs only /bin/sh and coreutils-level tools (awk, sleep, printenv, sort, tr), which every
# Debian base has; this checks them and keeps the stand-in executable. Sourced by
# scripts/test.sh (bash, set -euo pipefail); idempotent and instant.
for tool in /bin/sh awk sleep printenv sort tr; do
  command -v "$tool" >/dev/null || { echo "direct tests need $tool" >&2; return 1; }
done
chmod +x scripts/oz-standin
