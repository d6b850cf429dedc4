#!/usr/bin/env bash
# Build the real upstream Kubernetes control plane (kube-apiserver,
# kube-scheduler, kube-controller-manager, kubectl) and etcd from source via
# the Go module proxy, for trustgate's development kit (tests, dev stack, benchmarks).
#
#   bash devkit/controlplane/build.sh
#
# Output: ${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}/k8s-<K8S_VERSION>/bin/
# The last line printed is that directory. If all five binaries already exist
# there, it prints the directory and exits at once. A cold build takes several
# minutes on 2 cores (kube-apiserver alone is the bulk of it).
#
# The pinned versions are those in go.mod (k8s) and etcd/go.mod (etcd); go.sum
# of both is committed so the build works with -mod=readonly on a fresh
# machine. K8S_VERSION / ETCD_VERSION may override them: the wrapper module is
# then regenerated in a temp dir (needs the module proxy, writes nothing here).
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}"
BIN_DIR="${CACHE_ROOT}/k8s-${K8S_VERSION}/bin"
BINARIES=(kube-apiserver kube-scheduler kube-controller-manager kubectl etcd)

all_present() {
  local b
  for b in "${BINARIES[@]}"; do
    [[ -x "${BIN_DIR}/${b}" ]] || return 1
  done
}

if all_present; then
  echo "${BIN_DIR}"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: 'go' not found in PATH (need Go >= 1.26 and the Go module proxy)" >&2
  exit 1
fi

mkdir -p "${BIN_DIR}"
# Serialise concurrent builds (e.g. two test runs started at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${BIN_DIR}/.build.lock"
  flock 9
  if all_present; then
    echo "${BIN_DIR}"
    exit 0
  fi
  # Temp binaries left by a build that was killed outright (SIGKILL); safe under the lock.
  rm -f "${BIN_DIR}"/.*.tmp.*
fi

START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }

TMP_DIRS=()
TMP_FILES=()
HEARTBEAT_PID=""
BUILD_PID=""
cleanup() {
  [[ -n "${BUILD_PID}" ]] && kill "${BUILD_PID}" 2>/dev/null || true
  [[ -n "${HEARTBEAT_PID}" ]] && kill "${HEARTBEAT_PID}" 2>/dev/null || true
  local f
  for f in "${TMP_FILES[@]+"${TMP_FILES[@]}"}"; do rm -f "$f"; done
  for f in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do rm -rf "$f"; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# pinned_version <go.mod> <module>: the version go.mod requires.
pinned_version() {
  awk -v m="$2" '($1 == "require" && $2 == m) {print $3} ($1 == m) {print $2}' "$1" | head -n1
}

# Kubernetes wrapper module: the committed one if the version matches,
# otherwise a generated one. Staging modules (replaced by ./staging/... in
# k8s.io/kubernetes's own go.mod) are pinned to their published v0.Y.Z tags.
K8S_MOD_DIR="${HERE}"
if [[ "$(pinned_version "${HERE}/go.mod" k8s.io/kubernetes)" != "${K8S_VERSION}" ]]; then
  echo "generating wrapper module for k8s.io/kubernetes ${K8S_VERSION} (t=$(elapsed)s)..."
  K8S_MOD_DIR="$(mktemp -d)"
  TMP_DIRS+=("${K8S_MOD_DIR}")
  cp "${HERE}/tools.go" "${K8S_MOD_DIR}/"
  upstream_mod="$(cd "${K8S_MOD_DIR}" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  staging_version="v0.${K8S_VERSION#v1.}"
  {
    echo "module trustgate.dev/controlplane"
    echo
    echo "go 1.26.0"
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    echo "replace ("
    awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "${upstream_mod}" \
      | while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "${staging_version}"; done
    echo ")"
  } >"${K8S_MOD_DIR}/go.mod"
  (cd "${K8S_MOD_DIR}" && go mod tidy)
fi

ETCD_MOD_DIR="${HERE}/etcd"
if [[ "$(pinned_version "${HERE}/etcd/go.mod" go.etcd.io/etcd/server/v3)" != "${ETCD_VERSION}" ]]; then
  echo "generating wrapper module for etcd ${ETCD_VERSION} (t=$(elapsed)s)..."
  ETCD_MOD_DIR="$(mktemp -d)"
  TMP_DIRS+=("${ETCD_MOD_DIR}")
  cp "${HERE}/etcd/tools.go" "${ETCD_MOD_DIR}/"
  printf 'module trustgate.dev/controlplane/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "${ETCD_VERSION}" >"${ETCD_MOD_DIR}/go.mod"
  (cd "${ETCD_MOD_DIR}" && go mod tidy)
fi

K8S_MINOR="${K8S_VERSION#v1.}"
K8S_MINOR="${K8S_MINOR%%.*}"
K8S_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION}"
K8S_LDFLAGS+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_MINOR}"
K8S_LDFLAGS+=" -X k8s.io/component-base/version.gitTreeState=clean"
K8S_LDFLAGS+=" -X k8s.io/component-base/version.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ETCD_LDFLAGS="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}"

declare -A PKG=(
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
  [etcd]=go.etcd.io/etcd/server/v3
)

export CGO_ENABLED=0
export GOWORK=off   # never let a go.work above this directory take part
i=0
for b in "${BINARIES[@]}"; do
  i=$((i + 1))
  if [[ -x "${BIN_DIR}/${b}" ]]; then
    echo "${b} (${i}/${#BINARIES[@]}) already built"
    continue
  fi
  if [[ "$b" == etcd ]]; then
    mod_dir="${ETCD_MOD_DIR}"; ldflags="${ETCD_LDFLAGS}"
  else
    mod_dir="${K8S_MOD_DIR}"; ldflags="${K8S_LDFLAGS}"
  fi
  echo "building ${b} (${i}/${#BINARIES[@]})... (t=$(elapsed)s)"
  # Heartbeat on stderr so a CI log shows the build is alive. sleep must not
  # hold our stdout/stderr open, or a caller reading them waits for it; no child
  # keeps the lock fd (9), or a killed build would hold the lock for a while.
  ( while sleep 60 </dev/null >/dev/null 2>&1; do echo "  ... still building ${b} (t=$(elapsed)s)" >&2; done ) 9>&- &
  HEARTBEAT_PID=$!
  tmp="${BIN_DIR}/.${b}.tmp.$$"
  TMP_FILES+=("${tmp}")
  t0=$(date +%s)
  # In the background + wait, so INT/TERM are handled at once and cleanup stops the build.
  (cd "${mod_dir}" && exec go build -mod=readonly -trimpath -buildvcs=false -ldflags "${ldflags}" -o "${tmp}" "${PKG[$b]}") 9>&- &
  BUILD_PID=$!
  wait "${BUILD_PID}"
  BUILD_PID=""
  kill "${HEARTBEAT_PID}" 2>/dev/null || true
  wait "${HEARTBEAT_PID}" 2>/dev/null || true
  HEARTBEAT_PID=""
  chmod 0755 "${tmp}"
  mv -f "${tmp}" "${BIN_DIR}/${b}"   # atomic: same directory
  echo "built ${b} in $(( $(date +%s) - t0 ))s (t=$(elapsed)s)"
done

echo "all ${#BINARIES[@]} binaries ready in $(elapsed)s"
echo "${BIN_DIR}"
