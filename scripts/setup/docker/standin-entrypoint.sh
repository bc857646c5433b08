#!/bin/sh
# Stand-in for the warp agent's /agent/entrypoint.sh, for tests only. Knobs (all optional):
#   OZ_STANDIN_ENV_NAMES=1    print the names (never the values) of every env variable
#   OZ_STANDIN_ENV_FILE=PATH  write the names (never the values) of every env variable to PATH
#                             (in a bind-mounted host dir, so it outlives the container)
#   OZ_STANDIN_PRINT=TEXT     print TEXT (used to check that failure messages redact secrets)
#   OZ_STANDIN_WRITE=PATH     write "written-by-$TASK_ID" to PATH (a mounted volume)
#   OZ_STANDIN_READ=PATH      print the file at PATH
#   OZ_STANDIN_OOM=SIZE       buffer SIZE bytes (e.g. 1600m) in one process and exit with its status
#   OZ_STANDIN_SLEEP=SECONDS  sleep; SIGTERM ends it with status 143
#   OZ_STANDIN_IGNORE_TERM=1  ignore SIGTERM (to test the kill after the grace period)
#   OZ_STANDIN_EXIT=N         exit with status N (default 0)
echo "standin: args: $*"
echo "standin: pwd: $(pwd)"
if [ -n "${OZ_STANDIN_ENV_NAMES:-}" ]; then env | cut -d= -f1 | sort | sed 's/^/env-name: /'; fi
if [ -n "${OZ_STANDIN_ENV_FILE:-}" ]; then
  env | cut -d= -f1 | sort > "$OZ_STANDIN_ENV_FILE.tmp" && mv "$OZ_STANDIN_ENV_FILE.tmp" "$OZ_STANDIN_ENV_FILE" || exit 92
fi
if [ -n "${OZ_STANDIN_PRINT:-}" ]; then echo "standin: $OZ_STANDIN_PRINT"; fi
if [ -n "${OZ_STANDIN_WRITE:-}" ]; then echo "written-by-$TASK_ID" > "$OZ_STANDIN_WRITE" || exit 90; fi
if [ -n "${OZ_STANDIN_READ:-}" ]; then cat "$OZ_STANDIN_READ" || exit 91; fi
if [ -n "${OZ_STANDIN_OOM:-}" ]; then head -c "$OZ_STANDIN_OOM" /dev/zero | sort > /dev/null; exit $?; fi
if [ -n "${OZ_STANDIN_SLEEP:-}" ]; then
  if [ -n "${OZ_STANDIN_IGNORE_TERM:-}" ]; then trap '' TERM; else trap 'echo "standin: got TERM"; exit 143' TERM; fi
  echo "standin: sleeping"
  sleep "$OZ_STANDIN_SLEEP" &
  wait $!
fi
exit "${OZ_STANDIN_EXIT:-0}"
