#!/usr/bin/env bash
# Build helm (helm.sh/helm/v3/cmd/helm) from source via the Go module proxy, CGO_ENABLED=0.
#
#   bash tools/helm/build.sh
#
# Output: ${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}/helm-<HELM_VERSION>/bin/helm
# The last line printed is that directory. If the binary already exists there, it prints the
# directory and exits at once.
#
# The pinned version is the one in go.mod; go.sum is committed so the build works with
# -mod=readonly on a fresh machine. HELM_VERSION may override it: the wrapper module is then
# regenerated in a temp dir (needs the module proxy, writes nothing here).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../devkit/buildlib.sh
source "${HERE}/../../devkit/buildlib.sh"

HELM_VERSION="${HELM_VERSION:-$(pinned_version "${HERE}/go.mod" helm.sh/helm/v3)}"
CACHE_ROOT="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}"
BIN_DIR="${CACHE_ROOT}/helm-${HELM_VERSION}/bin"

exit_if_built "${BIN_DIR}" test -x "${BIN_DIR}/helm"
require_go build.sh
lock_bin_dir "${BIN_DIR}" '.helm.tmp.*' test -x "${BIN_DIR}/helm"

START=$(date +%s)

MOD_DIR="${HERE}"

export CGO_ENABLED=0
export GOWORK=off   # never let a go.work above this directory take part

if [[ "$(pinned_version "${HERE}/go.mod" helm.sh/helm/v3)" != "${HELM_VERSION}" ]]; then
  echo "generating wrapper module for helm.sh/helm/v3 ${HELM_VERSION} (t=$(elapsed)s)..."
  MOD_DIR="$(mktemp -d)"
  TMP_PATHS+=("${MOD_DIR}")
  cp "${HERE}/tools.go" "${MOD_DIR}/"
  printf 'module trustgate.dev/tools/helm\n\ngo 1.26.0\n\nrequire helm.sh/helm/v3 %s\n' "${HELM_VERSION}" \
    >"${MOD_DIR}/go.mod"
  (cd "${MOD_DIR}" && go mod tidy)
fi

# As helm's own Makefile: the release version, and the Kubernetes version its client-go speaks
# (client-go v0.Y.Z is Kubernetes 1.Y) for `helm lint` and the default capabilities.
client_go="$(pinned_version "${MOD_DIR}/go.mod" k8s.io/client-go)"
client_go="${client_go#v0.}"
K8S_MINOR="${client_go%%.*}"
LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  LDFLAGS+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${K8S_MINOR}"
done

echo "building helm ${HELM_VERSION}... (t=$(elapsed)s)"
go_install "${MOD_DIR}" "${LDFLAGS}" helm.sh/helm/v3/cmd/helm "${BIN_DIR}/helm"
"${BIN_DIR}/helm" version --short >&2
echo "built helm in $(elapsed)s"
echo "${BIN_DIR}"
