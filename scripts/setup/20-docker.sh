# shellcheck shell=bash
# Docker test infrastructure (sourced by scripts/test.sh; also runnable alone with `bash`):
# checks that the Docker Engine answers, builds the test images from Debian's busybox-static
# (idempotent, keyed by a content hash), starts Debian's docker-registry on 127.0.0.1:5000 and
# pushes the images to it, and starts a second one on 127.0.0.1:5001 that asks for a user and
# password (htpasswd, bcrypt, made with Debian's apache2-utils) holding one private image. Exports:
#   OZ_TEST_DOCKER_IMAGE     a busybox task image (local only)
#   OZ_TEST_DOCKER_SIDECAR   a sidecar image with a stand-in /entrypoint.sh (local only)
#   OZ_TEST_REGISTRY         127.0.0.1:5000
#   OZ_TEST_REGISTRY_IMAGE   / OZ_TEST_REGISTRY_SIDECAR: the same images in the local registry
#   OZ_TEST_REGISTRY_ONLY    an image only in the registry (removed locally), for pull tests
#   OZ_TEST_AUTH_REGISTRY    127.0.0.1:5001, the registry that needs credentials
#   OZ_TEST_AUTH_USER        / OZ_TEST_AUTH_PASSWORD: its user and password (test-only values)
#   OZ_TEST_AUTH_IMAGE       an image only in that registry (removed locally), for credential tests
set -euo pipefail
OZ_TEST_STATE_DIR="${OZ_TEST_STATE_DIR:-$(pwd)/target/test-state}"
mkdir -p "$OZ_TEST_STATE_DIR"
touch "$OZ_TEST_STATE_DIR/pids"
oz_docker_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/docker"

if ! timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "20-docker.sh: the Docker Engine at ${DOCKER_HOST:-unix:///var/run/docker.sock} does not answer (is dockerd running? try 'docker info')" >&2
  return 1 2>/dev/null || exit 1
fi

# Content hash of everything the images are built from.
oz_hash="$( { cat "${BASH_SOURCE[0]}" "$oz_docker_dir/standin-entrypoint.sh"; dpkg-deb --version | sed -n 1p; } | sha256sum | cut -c1-12)"
export OZ_TEST_DOCKER_IMAGE="oz-test/busybox:$oz_hash"
export OZ_TEST_DOCKER_SIDECAR="oz-test/sidecar:$oz_hash"
export OZ_TEST_REGISTRY="127.0.0.1:5000"
export OZ_TEST_REGISTRY_IMAGE="$OZ_TEST_REGISTRY/$OZ_TEST_DOCKER_IMAGE"
export OZ_TEST_REGISTRY_SIDECAR="$OZ_TEST_REGISTRY/$OZ_TEST_DOCKER_SIDECAR"
export OZ_TEST_REGISTRY_ONLY="$OZ_TEST_REGISTRY/oz-test/registry-only:$oz_hash"
export OZ_TEST_AUTH_REGISTRY="127.0.0.1:5001"
export OZ_TEST_AUTH_USER="oz-test"
export OZ_TEST_AUTH_PASSWORD="oz-test-registry-password"
export OZ_TEST_AUTH_IMAGE="$OZ_TEST_AUTH_REGISTRY/oz-test/private:$oz_hash"

oz_build_images() {
  local work rootfs deb
  work="$(mktemp -d)"
  rootfs="$work/rootfs"
  (
    cd "$work"
    if ! apt-get download busybox-static >/dev/null 2>&1; then
      apt-get update >/dev/null
      apt-get download busybox-static >/dev/null
    fi
  )
  deb="$(ls "$work"/busybox-static_*.deb)"
  mkdir -p "$rootfs" && dpkg-deb -x "$deb" "$rootfs"
  rm -rf "$rootfs/usr/share/doc" "$rootfs/usr/share/man"
  mkdir -p "$rootfs"/{usr/bin,sbin,usr/sbin,tmp,etc,proc,sys,dev,root}
  chmod 1777 "$rootfs/tmp"
  for a in $("$rootfs/bin/busybox" --list-full); do [ -e "$rootfs/$a" ] || ln -s /bin/busybox "$rootfs/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
  echo 'root:x:0:' > "$rootfs/etc/group"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$work/rootfs.tar" .
  # The plain image, in the `docker save` format, by hand (deterministic image id).
  mkdir -p "$work/img" && cp "$work/rootfs.tar" "$work/img/layer.tar"
  local diff cfg
  diff="$(sha256sum "$work/img/layer.tar" | cut -d' ' -f1)"
  cat > "$work/img/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:$diff"]},"history":[{"created_by":"20-docker.sh busybox-static"}]}
JSON
  cfg="$(sha256sum "$work/img/config.json" | cut -d' ' -f1)"
  mv "$work/img/config.json" "$work/img/$cfg.json"
  echo "[{\"Config\":\"$cfg.json\",\"RepoTags\":[\"$OZ_TEST_DOCKER_IMAGE\"],\"Layers\":[\"layer.tar\"]}]" > "$work/img/manifest.json"
  tar --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/img" -cf "$work/image.tar" manifest.json "$cfg.json" layer.tar
  docker load -i "$work/image.tar" >/dev/null
  # The sidecar: the same rootfs plus the stand-in agent at /entrypoint.sh (so /agent/entrypoint.sh
  # once mounted at /agent); busybox gives it the sh and tar the materialisation needs.
  install -m 0755 "$oz_docker_dir/standin-entrypoint.sh" "$rootfs/entrypoint.sh"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$work/sidecar.tar" .
  docker import --change 'CMD ["/bin/sh"]' "$work/sidecar.tar" "$OZ_TEST_DOCKER_SIDECAR" >/dev/null
  rm -rf "$work"
}

if ! docker image inspect "$OZ_TEST_DOCKER_IMAGE" >/dev/null 2>&1 \
  || ! docker image inspect "$OZ_TEST_DOCKER_SIDECAR" >/dev/null 2>&1; then
  echo "20-docker.sh: building $OZ_TEST_DOCKER_IMAGE and $OZ_TEST_DOCKER_SIDECAR"
  oz_build_images
  # Drop the tags earlier versions of this script built (12-hex tags of its own repositories),
  # once they are a day old: other checkouts sharing this engine may still be using them.
  oz_now="$(date +%s)"
  for oz_old in $(docker images --format '{{.Repository}}:{{.Tag}}' \
    | grep -E "^(127\.0\.0\.1:500[01]/)?oz-test/(busybox|sidecar|registry-only|private):[0-9a-f]{12}$" \
    | grep -v ":$oz_hash\$"); do
    oz_tagged="$(docker image inspect --format '{{.Metadata.LastTagTime.Unix}}' "$oz_old" 2>/dev/null || echo "$oz_now")"
    if [ $((oz_now - oz_tagged)) -gt 86400 ]; then docker rmi "$oz_old" >/dev/null 2>&1 || true; fi
  done
fi

# The local registry (plain HTTP: Docker treats 127.0.0.0/8 as insecure).
if ! curl -sf "http://$OZ_TEST_REGISTRY/v2/" >/dev/null 2>&1; then
  if ! command -v docker-registry >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry >/dev/null; }
  fi
  mkdir -p "$OZ_TEST_STATE_DIR/registry"
  cat > "$OZ_TEST_STATE_DIR/registry.yml" <<YAML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $OZ_TEST_STATE_DIR/registry}, delete: {enabled: true}}
http: {addr: $OZ_TEST_REGISTRY}
YAML
  docker-registry serve "$OZ_TEST_STATE_DIR/registry.yml" >"$OZ_TEST_STATE_DIR/registry.log" 2>&1 &
  echo $! >> "$OZ_TEST_STATE_DIR/pids"
  for _ in $(seq 1 50); do curl -sf "http://$OZ_TEST_REGISTRY/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -sf "http://$OZ_TEST_REGISTRY/v2/" >/dev/null || { echo "20-docker.sh: docker-registry did not start, see $OZ_TEST_STATE_DIR/registry.log" >&2; return 1 2>/dev/null || exit 1; }
fi
for oz_pair in "$OZ_TEST_DOCKER_IMAGE $OZ_TEST_REGISTRY_IMAGE" "$OZ_TEST_DOCKER_SIDECAR $OZ_TEST_REGISTRY_SIDECAR" "$OZ_TEST_DOCKER_IMAGE $OZ_TEST_REGISTRY_ONLY"; do
  read -r oz_src oz_dst <<< "$oz_pair"
  oz_repo="${oz_dst#*/}"; oz_repo="${oz_repo%:*}"
  if ! curl -sf "http://$OZ_TEST_REGISTRY/v2/$oz_repo/manifests/$oz_hash" \
      -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' >/dev/null 2>&1; then
    docker tag "$oz_src" "$oz_dst" && docker push "$oz_dst" >/dev/null
  fi
done
docker rmi "$OZ_TEST_REGISTRY_ONLY" >/dev/null 2>&1 || true

# The registry that needs credentials: the same docker-registry behind htpasswd (bcrypt).
oz_auth_status() { curl -s -o /dev/null -w '%{http_code}' "$@" "http://$OZ_TEST_AUTH_REGISTRY/v2/" 2>/dev/null || true; }
if [ "$(oz_auth_status)" != 401 ]; then
  if ! command -v htpasswd >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends apache2-utils >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends apache2-utils >/dev/null; }
  fi
  if ! command -v docker-registry >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry >/dev/null; }
  fi
  mkdir -p "$OZ_TEST_STATE_DIR/auth-registry"
  htpasswd -Bbn "$OZ_TEST_AUTH_USER" "$OZ_TEST_AUTH_PASSWORD" > "$OZ_TEST_STATE_DIR/auth-registry.htpasswd"
  cat > "$OZ_TEST_STATE_DIR/auth-registry.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $OZ_TEST_STATE_DIR/auth-registry}, delete: {enabled: true}}
http: {addr: $OZ_TEST_AUTH_REGISTRY}
auth: {htpasswd: {realm: oz-test, path: $OZ_TEST_STATE_DIR/auth-registry.htpasswd}}
YAML
  docker-registry serve "$OZ_TEST_STATE_DIR/auth-registry.yml" >"$OZ_TEST_STATE_DIR/auth-registry.log" 2>&1 &
  echo $! >> "$OZ_TEST_STATE_DIR/pids"
  for _ in $(seq 1 50); do [ "$(oz_auth_status)" = 401 ] && break; sleep 0.1; done
  [ "$(oz_auth_status)" = 401 ] || { echo "20-docker.sh: the htpasswd docker-registry did not start, see $OZ_TEST_STATE_DIR/auth-registry.log" >&2; return 1 2>/dev/null || exit 1; }
fi
if [ "$(oz_auth_status -u "$OZ_TEST_AUTH_USER:$OZ_TEST_AUTH_PASSWORD")" != 200 ]; then
  echo "20-docker.sh: $OZ_TEST_AUTH_REGISTRY refuses $OZ_TEST_AUTH_USER (a registry from another setup? stop it and rerun)" >&2
  return 1 2>/dev/null || exit 1
fi
# Push with a client config of our own, never the operator's ~/.docker.
oz_auth_config="$OZ_TEST_STATE_DIR/auth-docker-config"
mkdir -p "$oz_auth_config"
oz_auth_b64="$(printf '%s:%s' "$OZ_TEST_AUTH_USER" "$OZ_TEST_AUTH_PASSWORD" | base64 -w0)"
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$OZ_TEST_AUTH_REGISTRY" "$oz_auth_b64" > "$oz_auth_config/config.json"
if ! curl -sf -u "$OZ_TEST_AUTH_USER:$OZ_TEST_AUTH_PASSWORD" "http://$OZ_TEST_AUTH_REGISTRY/v2/oz-test/private/manifests/$oz_hash" \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' >/dev/null 2>&1; then
  docker tag "$OZ_TEST_DOCKER_IMAGE" "$OZ_TEST_AUTH_IMAGE" && DOCKER_CONFIG="$oz_auth_config" docker push "$OZ_TEST_AUTH_IMAGE" >/dev/null
fi
docker rmi "$OZ_TEST_AUTH_IMAGE" >/dev/null 2>&1 || true
echo "20-docker.sh: images $OZ_TEST_DOCKER_IMAGE, $OZ_TEST_DOCKER_SIDECAR; registries $OZ_TEST_REGISTRY, $OZ_TEST_AUTH_REGISTRY (htpasswd)"
