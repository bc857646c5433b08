#!/usr/bin/env bash
# Produces what a release ships, into $OZ_RELEASE_OUT (default target/release-artifacts):
#   oz-agent-worker-<version>-<target>.tar.gz (+ .sha256)  the stripped binary, README, the
#                                                          systemd unit and the RBAC Role
#   oz-agent-worker-image-<version>.tar.gz (+ .sha256)     the container image (`docker load`)
#   oz-agent-worker-<version>.tgz (+ .sha256)              the packaged Helm chart
#   SHA256SUMS                                             all of the above
# The binary is built with `cargo install --path .` (so that path is exercised too), into the
# usual target directory; the image is built from the root Dockerfile with the binary copied
# in (no toolchain or network needed in the image build when the base image is present).
#
# Environment:
#   OZ_RELEASE_OUT      output folder (emptied first)
#   OZ_RELEASE_IMAGE    image tag (default oz-agent-worker:<version>)
#   OZ_RELEASE_BASE     base image for the Dockerfile (default: the Dockerfile's own)
#   OZ_RELEASE_PYTHON   a Python with the PyPI helm-python-sdk, for packaging the chart
#                       (default python3)
#   OZ_RELEASE_SKIP_IMAGE=1  no image (e.g. on a machine without Docker)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
out="${OZ_RELEASE_OUT:-$root/target/release-artifacts}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
commit="$(git rev-parse --short=12 HEAD 2>/dev/null || true)"
target="$(rustc -vV | sed -n 's/^host: //p')"
image="${OZ_RELEASE_IMAGE:-oz-agent-worker:$version}"
python="${OZ_RELEASE_PYTHON:-python3}"
[ -n "$version" ] || { echo "release.sh: no version in Cargo.toml" >&2; exit 1; }
started=$SECONDS

rm -rf "$out"
mkdir -p "$out"

echo "== binary ($version${commit:+, git $commit}, $target)"
cargo install --quiet --locked --force --path . --bin oz-agent-worker \
  --root "$out/.install" --target-dir "$target_dir"
name="oz-agent-worker-$version-$target"
stage="$out/.stage/$name"
mkdir -p "$stage"
cp "$out/.install/bin/oz-agent-worker" "$stage/oz-agent-worker"
strip --strip-all "$stage/oz-agent-worker"
"$stage/oz-agent-worker" --version
cp README.md "$stage/"
mkdir -p "$stage/deploy/systemd" "$stage/docs"
cp deploy/systemd/oz-agent-worker.service "$stage/deploy/systemd/"
cp docs/kubernetes-rbac.yaml "$stage/docs/"
# Reproducible: sorted names, fixed owner, the commit's time (or the epoch) as mtime.
mtime="$(git log -1 --format=%ct 2>/dev/null || echo 0)"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
  -C "$out/.stage" -cf - "$name" | gzip -n >"$out/$name.tar.gz"

if [ "${OZ_RELEASE_SKIP_IMAGE:-0}" != 1 ]; then
  echo "== image $image"
  context="$out/.image"
  mkdir -p "$context"
  cp Dockerfile "$context/Dockerfile"
  cp "$stage/oz-agent-worker" "$context/oz-agent-worker"
  base_arg=()
  [ -z "${OZ_RELEASE_BASE:-}" ] || base_arg=(--build-arg "BASE_IMAGE=$OZ_RELEASE_BASE")
  # The classic builder: works with any Engine from 20.10 on, with or without buildx.
  DOCKER_BUILDKIT=0 docker build -q "${base_arg[@]}" \
    --build-arg "VERSION=$version" --build-arg "REVISION=${commit:-unknown}" \
    -t "$image" "$context" >/dev/null
  docker run --rm "$image" --version
  echo "image size: $(docker image inspect --format '{{.Size}}' "$image") bytes"
  docker save "$image" | gzip -n >"$out/oz-agent-worker-image-$version.tar.gz"
fi

echo "== chart"
"$python" - "$root/charts/oz-agent-worker" "$out" "$version" <<'PY'
import sys
import helm_python
chart, out, version = sys.argv[1:]
report = helm_python.lint(chart, {"worker": {"workerId": "release-lint"}}, strict=True)
problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
if report.get("errors") or problems:
    sys.exit(f"release.sh: helm lint found problems: {report}")
print(helm_python.package(chart, destination=out, version=version, app_version=version))
PY

rm -rf "$out/.install" "$out/.stage" "$out/.image"
(
  cd "$out"
  for file in *.tar.gz *.tgz; do sha256sum "$file" >"$file.sha256"; done
  sha256sum ./*.tar.gz ./*.tgz | sed 's# \./# #' >SHA256SUMS
)
echo "== release $version in $out ($((SECONDS - started)) s)"
ls -l "$out"
