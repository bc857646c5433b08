# shellcheck shell=bash
# Kubernetes API server for the Kubernetes backend tests (no internet needed).
#
# Builds kube-apiserver, kube-controller-manager, kube-scheduler and kubelet v1.20.2 once, offline, from Debian's
# `kubernetes` source package (it ships vendor/) with Debian's golang-1.19, into a cache folder
# outside the repo keyed by version; etcd comes from Debian's `etcd-server` package (extracted,
# not installed, so no system service starts). Then starts etcd + kube-apiserver +
# kube-controller-manager (job, garbagecollector, ttl-after-finished controllers) on loopback,
# waits until the API server is ready, writes an admin kubeconfig and a restricted one (a static
# token bound to exactly the Role in docs/kubernetes-rbac.yaml), and exports:
#   OZ_TEST_KUBECONFIG             admin kubeconfig (system:masters)
#   OZ_TEST_KUBECONFIG_RESTRICTED  kubeconfig of user oz-worker, RBAC-bound in namespace oz-rbac
#   OZ_TEST_KUBECONFIG_NORBAC      kubeconfig of user oz-nobody (no permissions at all)
#   OZ_TEST_KUBE_NAMESPACE_RBAC    the namespace the restricted user may use (oz-rbac)
# Also kube-scheduler and one kubelet (node `localhost`, dockershim on this machine's Docker
# Engine; see oz_k8s_start_node), also next to an API server started earlier without them, and
# exports OZ_TEST_KUBE_NODE, OZ_TEST_KUBE_PAUSE_IMAGE and OZ_TEST_KUBE_SIDECAR.
#
# Sourced by scripts/test.sh. Can also be run directly: `bash scripts/setup/40-kubernetes.sh
# build` (build only) or `... start` (build if needed, start, print the exports).
# Build cost on a fresh 2-core machine: ~5 min CPU for the API server and controller manager,
# ~9 min CPU more for kube-scheduler and kubelet (skipped when the cache has the binaries).

oz_k8s_version=v1.20.2
oz_k8s_cache="${OZ_TEST_CACHE:-/var/cache/oz-agent-worker-test}/kubernetes-$oz_k8s_version"
oz_k8s_port="${OZ_TEST_KUBE_PORT:-16443}"
oz_k8s_etcd_port="${OZ_TEST_ETCD_PORT:-12379}"
oz_k8s_kubelet_port="${OZ_TEST_KUBELET_PORT:-10250}"
oz_k8s_kubelet_healthz_port="${OZ_TEST_KUBELET_HEALTHZ_PORT:-10248}"
oz_k8s_node=localhost
oz_k8s_admin_token=oz-test-admin-token

oz_k8s_apt() {
  apt-get -o DPkg::Lock::Timeout=600 "$@"
}

oz_k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet)

# The binaries of $oz_k8s_bins not yet in the cache (one per line; empty when all are there).
oz_k8s_missing() {
  local b
  for b in "${oz_k8s_bins[@]}"; do
    [ -x "$oz_k8s_cache/bin/$b" ] || echo "$b"
  done
}

# Build into $oz_k8s_cache/bin once; fast no-op when present. Only the missing binaries are
# built (one `make` for all of them, so they share one compilation).
oz_k8s_build() {
  local cache="$oz_k8s_cache" missing
  missing="$(oz_k8s_missing)"
  if [ -z "$missing" ] && [ -x "$cache/etcd/usr/bin/etcd" ]; then
    return 0
  fi
  local started=$SECONDS
  mkdir -p "$cache/bin" "$cache/src" "$cache/apt/lists/partial"
  command -v rsync >/dev/null || oz_k8s_apt install -y --no-install-recommends rsync
  command -v jq >/dev/null || oz_k8s_apt install -y --no-install-recommends jq
  # Private apt config for deb-src, so the system's sources.list stays untouched.
  echo 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main' \
    >"$cache/apt/src.list"
  local apto=(-o "Dir::Etc::sourcelist=$cache/apt/src.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$cache/apt/lists")
  # Toolchain and etcd: downloaded and extracted into the cache (nothing installed, no service).
  (
    cd "$cache/src"
    [ -n "$(ls /var/lib/apt/lists/*_Packages* 2>/dev/null)" ] || oz_k8s_apt update
    rm -f ./*.deb
    if [ ! -x "$cache/etcd/usr/bin/etcd" ]; then
      apt-get download etcd-server
      mkdir -p "$cache/etcd" && dpkg-deb -x etcd-server_*.deb "$cache/etcd"
    fi
    if [ -n "$missing" ] && [ ! -x "$cache/go/usr/lib/go-1.19/bin/go" ]; then
      apt-get download golang-1.19-go golang-1.19-src
      mkdir -p "$cache/go"
      dpkg-deb -x golang-1.19-go_*.deb "$cache/go"
      dpkg-deb -x golang-1.19-src_*.deb "$cache/go"
    fi
    rm -f ./*.deb
  )
  if [ -n "$missing" ]; then
    local what
    what="$(printf 'cmd/%s ' $missing)"
    (
      cd "$cache/src"
      if ! ls kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
        apt-get "${apto[@]}" update
        apt-get "${apto[@]}" source --download-only kubernetes
      fi
      rm -rf build && mkdir build
      tar xzf kubernetes_*.orig.tar.gz -C build
      cd build/kubernetes-*
      export PATH="$cache/go/usr/lib/go-1.19/bin:$PATH" GOROOT="$cache/go/usr/lib/go-1.19" \
        GOPROXY=off CGO_ENABLED=0 GOFLAGS= HOME="$cache/src/home" \
        KUBE_GIT_VERSION=$oz_k8s_version KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 KUBE_GIT_TREE_STATE=clean
      make WHAT="${what% }" GOLDFLAGS="-s -w"
      local b
      for b in $missing; do
        install -m 0755 "_output/bin/$b" "$cache/bin/$b"
      done
    )
    # The tree is ~2.5 GB after the build; only the binaries (and etcd) are kept.
    rm -rf "$cache/src" "$cache/go" "$cache/apt"
  fi
  echo "kubernetes $oz_k8s_version ($(echo $missing)) built into $cache in $((SECONDS - started)) s"
}

oz_k8s_kubeconfig() { # file token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: oz-test
  cluster: {server: "https://127.0.0.1:$oz_k8s_port", insecure-skip-tls-verify: true}
users:
- name: oz-test
  user: {token: "$2"}
contexts:
- name: oz-test
  context: {cluster: oz-test, user: oz-test, namespace: default}
current-context: oz-test
EOF
}

oz_k8s_ready() {
  curl -sfk --max-time 2 -H "Authorization: Bearer $oz_k8s_admin_token" \
    "https://127.0.0.1:$oz_k8s_port/readyz" >/dev/null 2>&1
}

oz_k8s_wait() { # what seconds command...
  local what=$1 limit=$2 i=0
  shift 2
  until "$@"; do
    i=$((i + 1))
    if [ "$i" -gt $((limit * 4)) ]; then
      echo "40-kubernetes: $what not ready after ${limit}s; logs in $oz_k8s_state" >&2
      return 1
    fi
    sleep 0.25
  done
}

# Runs a command quietly; when it fails, prints everything it said to stderr and returns its
# status (under `set -e` the caller stops there).
oz_k8s_loud() { # what command...
  local what=$1 out rc=0
  shift
  out="$("$@" 2>&1)" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "40-kubernetes: $what failed (exit $rc):" >&2
    printf '%s\n' "$out" >&2
  fi
  return "$rc"
}

# Quiet probe for oz_k8s_wait (its own message says what did not become ready).
oz_k8s_has_default_namespace() {
  "${oz_k8s_kc[@]}" get namespace default -o name >/dev/null 2>&1
}

# The Docker Engine refuses a negative oom_score_adj on this kind of machine (no
# CAP_SYS_RESOURCE), and dockershim asks -998 for every pod sandbox (-997 for Guaranteed pods).
# A runc wrapper, registered as the engine's default runtime in /etc/docker/daemon.json (dockerd
# reloads it on SIGHUP, no restart), clamps a negative value to 0 and execs runc; nothing else
# changes for other containers (the worker never sets a negative one).
# To undo: set "default-runtime": "runc" in daemon.json and SIGHUP dockerd.
oz_k8s_docker_clamp() {
  local wrapper="$oz_k8s_cache/runc-clamp" runc conf=/etc/docker/daemon.json pid
  if oz_k8s_docker_is_clamped && [ -x "$wrapper" ]; then
    return 0
  fi
  command -v jq >/dev/null || oz_k8s_apt install -y --no-install-recommends jq
  runc="$(command -v runc)" || {
    echo "40-kubernetes: runc (the Docker Engine's runtime) is not on PATH" >&2
    return 1
  }
  {
    echo '#!/bin/sh'
    echo '# Installed by oz-agent-worker scripts/setup/40-kubernetes.sh: runc, with a negative'
    echo '# process.oomScoreAdj in the bundle clamped to 0 (this engine may not lower it).'
    echo 'b=""; prev=""'
    echo 'for a in "$@"; do { [ "$prev" = "--bundle" ] || [ "$prev" = "-b" ]; } && b="$a"; prev="$a"; done'
    echo 'if [ -n "$b" ] && [ -f "$b/config.json" ]; then'
    echo '  sed -i -E '"'"'s/"oomScoreAdj": ?-[0-9]+/"oomScoreAdj":0/'"'"' "$b/config.json"'
    echo 'fi'
    echo "exec $runc \"\$@\""
  } >"$wrapper.tmp"
  chmod 0755 "$wrapper.tmp" && mv "$wrapper.tmp" "$wrapper"
  mkdir -p /etc/docker
  [ -s "$conf" ] || echo '{}' >"$conf"
  jq --arg w "$wrapper" '.runtimes.clamp = {path: $w} | ."default-runtime" = "clamp"' "$conf" >"$conf.tmp"
  mv "$conf.tmp" "$conf"
  pid="$(cat /var/run/docker.pid 2>/dev/null)" || {
    echo "40-kubernetes: no /var/run/docker.pid: reload dockerd by hand to pick up $conf" >&2
    return 1
  }
  kill -HUP "$pid"
  oz_k8s_wait "the Docker Engine's clamp runtime (see $conf)" 30 oz_k8s_docker_is_clamped
}

oz_k8s_docker_is_clamped() {
  [ "$(docker info --format '{{.DefaultRuntime}}' 2>/dev/null)" = clamp ]
}

# The pod sandbox ("pause") image, built locally from the busybox test image (nothing can be
# pulled): a shell that sleeps until SIGTERM. Tagged by the base image's id.
oz_k8s_pause_image() {
  local base="${OZ_TEST_DOCKER_IMAGE:?OZ_TEST_DOCKER_IMAGE is set by 20-docker.sh}" id
  id="$(docker image inspect --format '{{.Id}}' "$base")" || return 1
  id="${id#sha256:}"
  oz_k8s_pause="oz-test/pause:${id:0:12}"
  if docker image inspect "$oz_k8s_pause" >/dev/null 2>&1; then
    return 0
  fi
  printf 'FROM %s\nCMD ["/bin/sh", "-c", "trap \\"exit 0\\" TERM INT; sleep 2147483647 & wait"]\n' "$base" |
    DOCKER_BUILDKIT=0 oz_k8s_loud "building $oz_k8s_pause" docker build -q -t "$oz_k8s_pause" -
}

# The sidecar image for pods: the Docker tests' sidecar (the stand-in agent at /entrypoint.sh)
# plus GNU tar, and dash as /bin/sh (busybox's sh runs its own applets before PATH), with their
# libraries, because the Job's sidecar copy uses `tar --exclude`, which Debian's busybox-static
# tar lacks. Tagged by the base sidecar's id and the host tar's version.
oz_k8s_sidecar_image() {
  local base="${OZ_TEST_DOCKER_SIDECAR:?OZ_TEST_DOCKER_SIDECAR is set by 20-docker.sh}" id tag work lib
  id="$(docker image inspect --format '{{.Id}}' "$base")" || return 1
  id="${id#sha256:}"
  tag="$( { echo "$id path dash"; tar --version | head -1; } | sha256sum | cut -c1-12)"
  oz_k8s_sidecar="oz-test/k8s-sidecar:$tag"
  if docker image inspect "$oz_k8s_sidecar" >/dev/null 2>&1; then
    return 0
  fi
  work="$(mktemp -d)"
  mkdir -p "$work/root/usr/local/bin" "$work/root/lib64" "$work/root/lib/x86_64-linux-gnu"
  cp "$(command -v tar)" "$work/root/usr/local/bin/tar"
  cp "$(command -v dash)" "$work/root/usr/local/bin/dash"
  for lib in $({ ldd "$(command -v tar)"; ldd "$(command -v dash)"; } | grep -o '/[^ ]*'); do
    cp -L "$lib" "$work/root$lib"
  done
  printf 'FROM %s\nENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nCOPY root/ /\nRUN rm /bin/sh && ln -s /usr/local/bin/dash /bin/sh\n' "$base" >"$work/Dockerfile"
  DOCKER_BUILDKIT=0 oz_k8s_loud "building $oz_k8s_sidecar" docker build -q -t "$oz_k8s_sidecar" "$work"
  rm -rf "$work"
}

oz_k8s_kubelet_healthy() {
  curl -sf --max-time 2 "http://127.0.0.1:$oz_k8s_kubelet_healthz_port/healthz" >/dev/null 2>&1
}

oz_k8s_node_ready() {
  [ "$("${oz_k8s_kc[@]}" get node "$oz_k8s_node" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

oz_k8s_alive() { # pidfile
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# One node: kube-scheduler and a kubelet (dockershim on this machine's Docker Engine) named
# `localhost`. Started when not running, also next to an API server started earlier without them.
oz_k8s_start_node() {
  local state=$oz_k8s_state cache="$oz_k8s_cache" pids="$OZ_TEST_STATE_DIR/pids"
  oz_k8s_docker_clamp
  oz_k8s_pause_image
  oz_k8s_sidecar_image
  if ! oz_k8s_alive "$state/scheduler.pid"; then
    "$cache/bin/kube-scheduler" --kubeconfig="$state/admin.kubeconfig" --leader-elect=false \
      --port=0 --secure-port=0 --kube-api-qps=200 --kube-api-burst=400 >"$state/scheduler.log" 2>&1 &
    echo $! >"$state/scheduler.pid"
    echo $! >>"$pids"
  fi
  if ! oz_k8s_kubelet_healthy; then
    mkdir -p "$state/kubelet"
    cat >"$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $oz_k8s_kubelet_port
healthzBindAddress: 127.0.0.1
healthzPort: $oz_k8s_kubelet_healthz_port
readOnlyPort: 0
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 110
serializeImagePulls: false
EOF
    "$cache/bin/kubelet" --config="$state/kubelet.yaml" --kubeconfig="$state/admin.kubeconfig" \
      --hostname-override="$oz_k8s_node" --container-runtime=docker \
      --docker-endpoint="${DOCKER_HOST:-unix:///var/run/docker.sock}" \
      --pod-infra-container-image="$oz_k8s_pause" --root-dir="$state/kubelet" \
      --cert-dir="$state/kubelet-pki" >"$state/kubelet.log" 2>&1 &
    echo $! >"$state/kubelet.pid"
    echo $! >>"$pids"
    oz_k8s_wait "kubelet" 60 oz_k8s_kubelet_healthy
  fi
  oz_k8s_wait "node $oz_k8s_node" 60 oz_k8s_node_ready
  # The kubelet refuses a loopback node IP, so the node has no address and the API server could
  # not reach it for logs: give it its host name (it stays).
  oz_k8s_loud "patching the address of node $oz_k8s_node" "${oz_k8s_kc[@]}" patch node "$oz_k8s_node" \
    --subresource=status --type=merge \
    -p '{"status":{"addresses":[{"type":"Hostname","address":"localhost"}]}}'
  # The kubelet registers the node with the not-ready taint, which only the node lifecycle
  # controller (not run here: it would taint and evict on its own schedule) removes.
  if "${oz_k8s_kc[@]}" get node "$oz_k8s_node" -o 'jsonpath={.spec.taints[*].key}' 2>/dev/null | grep -q not-ready; then
    oz_k8s_loud "removing the not-ready taint of node $oz_k8s_node" \
      "${oz_k8s_kc[@]}" taint node "$oz_k8s_node" node.kubernetes.io/not-ready-
  fi
  export OZ_TEST_KUBE_NODE="$oz_k8s_node"
  export OZ_TEST_KUBE_PAUSE_IMAGE="$oz_k8s_pause"
  export OZ_TEST_KUBE_SIDECAR="$oz_k8s_sidecar"
}

oz_k8s_start() {
  local state="${OZ_TEST_STATE_DIR:?OZ_TEST_STATE_DIR must be set}/kubernetes"
  oz_k8s_state=$state
  mkdir -p "$state"
  local cache="$oz_k8s_cache" pids="$OZ_TEST_STATE_DIR/pids"
  if ! oz_k8s_ready; then
    rm -rf "$state/etcd" && mkdir -p "$state/certs"
    [ -f "$state/sa.key" ] || openssl genrsa -out "$state/sa.key" 2048 2>/dev/null
    openssl rsa -in "$state/sa.key" -pubout -out "$state/sa.pub" 2>/dev/null
    # Static tokens: the admin, the RBAC-restricted worker identity, and one with no rights.
    {
      echo "$oz_k8s_admin_token,oz-admin,1,system:masters"
      echo "oz-test-worker-token,oz-worker,2"
      echo "oz-test-nobody-token,oz-nobody,3"
    } >"$state/tokens.csv"
    "$cache/etcd/usr/bin/etcd" --data-dir "$state/etcd" \
      --listen-client-urls "http://127.0.0.1:$oz_k8s_etcd_port" --advertise-client-urls "http://127.0.0.1:$oz_k8s_etcd_port" \
      --listen-peer-urls "http://127.0.0.1:$((oz_k8s_etcd_port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((oz_k8s_etcd_port + 1))" \
      --initial-cluster "default=http://127.0.0.1:$((oz_k8s_etcd_port + 1))" >"$state/etcd.log" 2>&1 &
    echo $! >>"$pids"
    "$cache/bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$oz_k8s_etcd_port" \
      --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$oz_k8s_port" \
      --cert-dir="$state/certs" --token-auth-file="$state/tokens.csv" --authorization-mode=RBAC \
      --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$state/sa.pub" \
      --service-account-signing-key-file="$state/sa.key" --service-cluster-ip-range=10.96.0.0/24 \
      --disable-admission-plugins=ServiceAccount --enable-priority-and-fairness=false \
      --feature-gates=TTLAfterFinished=true >"$state/apiserver.log" 2>&1 &
    echo $! >>"$pids"
    oz_k8s_wait "kube-apiserver" 90 oz_k8s_ready
    oz_k8s_kubeconfig "$state/admin.kubeconfig" "$oz_k8s_admin_token"
    "$cache/bin/kube-controller-manager" --kubeconfig="$state/admin.kubeconfig" \
      --controllers=job,garbagecollector,ttl-after-finished --feature-gates=TTLAfterFinished=true \
      --leader-elect=false --port=0 --secure-port=0 --kube-api-qps=200 --kube-api-burst=400 \
      >"$state/controller-manager.log" 2>&1 &
    echo $! >>"$pids"
  fi
  oz_k8s_kubeconfig "$state/admin.kubeconfig" "$oz_k8s_admin_token"
  oz_k8s_kubeconfig "$state/worker.kubeconfig" oz-test-worker-token
  oz_k8s_kubeconfig "$state/nobody.kubeconfig" oz-test-nobody-token
  # The RBAC namespace and binding: exactly the Role the README documents.
  oz_k8s_kc=(kubectl --kubeconfig "$state/admin.kubeconfig")
  oz_k8s_wait "default namespace" 30 oz_k8s_has_default_namespace
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  oz_k8s_loud "applying namespace oz-rbac" "${oz_k8s_kc[@]}" apply -f - <<'EOF'
apiVersion: v1
kind: Namespace
metadata: {name: oz-rbac}
EOF
  oz_k8s_loud "applying the Role in docs/kubernetes-rbac.yaml" \
    "${oz_k8s_kc[@]}" -n oz-rbac apply -f "$root/docs/kubernetes-rbac.yaml"
  oz_k8s_loud "applying RoleBinding oz-agent-worker" "${oz_k8s_kc[@]}" -n oz-rbac apply -f - <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: oz-agent-worker}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: oz-agent-worker}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: oz-worker}]
EOF
  export OZ_TEST_KUBECONFIG="$state/admin.kubeconfig"
  export OZ_TEST_KUBECONFIG_RESTRICTED="$state/worker.kubeconfig"
  export OZ_TEST_KUBECONFIG_NORBAC="$state/nobody.kubeconfig"
  export OZ_TEST_KUBE_NAMESPACE_RBAC=oz-rbac
  oz_k8s_start_node
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-start}" in
  build) oz_k8s_build ;;
  start)
    export OZ_TEST_STATE_DIR="${OZ_TEST_STATE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/target/test-state}"
    mkdir -p "$OZ_TEST_STATE_DIR" && touch "$OZ_TEST_STATE_DIR/pids"
    oz_k8s_build
    oz_k8s_start
    echo "export OZ_TEST_KUBECONFIG=$OZ_TEST_KUBECONFIG OZ_TEST_KUBECONFIG_RESTRICTED=$OZ_TEST_KUBECONFIG_RESTRICTED OZ_TEST_KUBECONFIG_NORBAC=$OZ_TEST_KUBECONFIG_NORBAC OZ_TEST_KUBE_NAMESPACE_RBAC=$OZ_TEST_KUBE_NAMESPACE_RBAC OZ_TEST_KUBE_NODE=$OZ_TEST_KUBE_NODE OZ_TEST_KUBE_SIDECAR=$OZ_TEST_KUBE_SIDECAR"
    ;;
  *) echo "usage: $0 [build|start]" >&2 && exit 2 ;;
  esac
else
  oz_k8s_build
  oz_k8s_start
fi
