# shellcheck shell=bash
# Kubernetes API server for the Kubernetes backend tests (no internet needed).
#
# Builds kube-apiserver and kube-controller-manager v1.20.2 once, offline, from Debian's
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
# There is no kubelet and no scheduler: the tests play the kubelet by patching pod status.
#
# Sourced by scripts/test.sh. Can also be run directly: `bash scripts/setup/40-kubernetes.sh
# build` (build only) or `... start` (build if needed, start, print the exports).
# Build cost on a fresh 2-core machine: ~5 min CPU (skipped when the cache has the binaries).

oz_k8s_version=v1.20.2
oz_k8s_cache="${OZ_TEST_CACHE:-/var/cache/oz-agent-worker-test}/kubernetes-$oz_k8s_version"
oz_k8s_port="${OZ_TEST_KUBE_PORT:-16443}"
oz_k8s_etcd_port="${OZ_TEST_ETCD_PORT:-12379}"
oz_k8s_admin_token=oz-test-admin-token

oz_k8s_apt() {
  apt-get -o DPkg::Lock::Timeout=600 "$@"
}

# Build into $oz_k8s_cache/bin once; fast no-op when present.
oz_k8s_build() {
  local cache="$oz_k8s_cache"
  if [ -x "$cache/bin/kube-apiserver" ] && [ -x "$cache/bin/kube-controller-manager" ] &&
    [ -x "$cache/etcd/usr/bin/etcd" ]; then
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
    if [ ! -x "$cache/bin/kube-apiserver" ] || [ ! -x "$cache/bin/kube-controller-manager" ]; then
      apt-get download golang-1.19-go golang-1.19-src
      mkdir -p "$cache/go"
      dpkg-deb -x golang-1.19-go_*.deb "$cache/go"
      dpkg-deb -x golang-1.19-src_*.deb "$cache/go"
    fi
    rm -f ./*.deb
  )
  if [ ! -x "$cache/bin/kube-apiserver" ] || [ ! -x "$cache/bin/kube-controller-manager" ]; then
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
      make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" GOLDFLAGS="-s -w"
      install -m 0755 _output/bin/kube-apiserver "$cache/bin/kube-apiserver"
      install -m 0755 _output/bin/kube-controller-manager "$cache/bin/kube-controller-manager"
    )
    # The tree is ~2.5 GB after the build; only the binaries (and etcd) are kept.
    rm -rf "$cache/src" "$cache/go" "$cache/apt"
  fi
  echo "kubernetes $oz_k8s_version built into $cache in $((SECONDS - started)) s"
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
      --leader-elect=false --port=0 --secure-port=0 >"$state/controller-manager.log" 2>&1 &
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
    echo "export OZ_TEST_KUBECONFIG=$OZ_TEST_KUBECONFIG OZ_TEST_KUBECONFIG_RESTRICTED=$OZ_TEST_KUBECONFIG_RESTRICTED OZ_TEST_KUBECONFIG_NORBAC=$OZ_TEST_KUBECONFIG_NORBAC OZ_TEST_KUBE_NAMESPACE_RBAC=$OZ_TEST_KUBE_NAMESPACE_RBAC"
    ;;
  *) echo "usage: $0 [build|start]" >&2 && exit 2 ;;
  esac
else
  oz_k8s_build
  oz_k8s_start
fi
