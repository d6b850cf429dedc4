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
# shellcheck source=../buildlib.sh
source "${HERE}/../buildlib.sh"
CACHE_ROOT="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}"
BIN_DIR="${CACHE_ROOT}/k8s-${K8S_VERSION}/bin"
BINARIES=(kube-apiserver kube-scheduler kube-controller-manager kubectl etcd)

all_present() {
  local b
  for b in "${BINARIES[@]}"; do
    [[ -x "${BIN_DIR}/${b}" ]] || return 1
  done
}

exit_if_built "${BIN_DIR}" all_present
require_go build.sh
lock_bin_dir "${BIN_DIR}" '.*.tmp.*' all_present

START=$(date +%s)

# Kubernetes wrapper module: the committed one if the version matches,
# otherwise a generated one. Staging modules (replaced by ./staging/... in
# k8s.io/kubernetes's own go.mod) are pinned to their published v0.Y.Z tags.
K8S_MOD_DIR="${HERE}"
if [[ "$(pinned_version "${HERE}/go.mod" k8s.io/kubernetes)" != "${K8S_VERSION}" ]]; then
  echo "generating wrapper module for k8s.io/kubernetes ${K8S_VERSION} (t=$(elapsed)s)..."
  K8S_MOD_DIR="$(mktemp -d)"
  TMP_PATHS+=("${K8S_MOD_DIR}")
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
  TMP_PATHS+=("${ETCD_MOD_DIR}")
  cp "${HERE}/etcd/tools.go" "${ETCD_MOD_DIR}/"
  printf 'module trustgate.dev/controlplane/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "${ETCD_VERSION}" >"${ETCD_MOD_DIR}/go.mod"
  (cd "${ETCD_MOD_DIR}" && go mod tidy)
fi

K8S_LDFLAGS="$(k8s_ldflags "${K8S_VERSION}")"
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
  t0=$(date +%s)
  go_install "${mod_dir}" "${ldflags}" "${PKG[$b]}" "${BIN_DIR}/${b}"
  echo "built ${b} in $(( $(date +%s) - t0 ))s (t=$(elapsed)s)"
done

echo "all ${#BINARIES[@]} binaries ready in $(elapsed)s"
echo "${BIN_DIR}"
