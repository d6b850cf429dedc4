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

# pinned_version <go.mod> <module>: the version go.mod requires.
pinned_version() {
  awk -v m="$2" '($1 == "require" && $2 == m) {print $3} ($1 == m) {print $2}' "$1" | head -n1
}

HELM_VERSION="${HELM_VERSION:-$(pinned_version "${HERE}/go.mod" helm.sh/helm/v3)}"
CACHE_ROOT="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}"
BIN_DIR="${CACHE_ROOT}/helm-${HELM_VERSION}/bin"

if [[ -x "${BIN_DIR}/helm" ]]; then
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
  if [[ -x "${BIN_DIR}/helm" ]]; then
    echo "${BIN_DIR}"
    exit 0
  fi
  # A temp binary left by a build that was killed outright (SIGKILL); safe under the lock.
  rm -f "${BIN_DIR}"/.helm.tmp.*
fi

START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }

MOD_DIR="${HERE}"
TMP_DIR=""
TMP_FILE=""
HEARTBEAT_PID=""
BUILD_PID=""
cleanup() {
  [[ -n "${BUILD_PID}" ]] && kill "${BUILD_PID}" 2>/dev/null || true
  [[ -n "${HEARTBEAT_PID}" ]] && kill "${HEARTBEAT_PID}" 2>/dev/null || true
  [[ -n "${TMP_FILE}" ]] && rm -f "${TMP_FILE}"
  [[ -n "${TMP_DIR}" ]] && rm -rf "${TMP_DIR}"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export CGO_ENABLED=0
export GOWORK=off   # never let a go.work above this directory take part

if [[ "$(pinned_version "${HERE}/go.mod" helm.sh/helm/v3)" != "${HELM_VERSION}" ]]; then
  echo "generating wrapper module for helm.sh/helm/v3 ${HELM_VERSION} (t=$(elapsed)s)..."
  TMP_DIR="$(mktemp -d)"
  MOD_DIR="${TMP_DIR}"
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
# Heartbeat on stderr so a CI log shows the build is alive. sleep must not hold our stdout/stderr
# open, or a caller reading them waits for it; no child keeps the lock fd (9), or a killed build
# would hold the lock for a while.
( while sleep 60 </dev/null >/dev/null 2>&1; do echo "  ... still building helm (t=$(elapsed)s)" >&2; done ) 9>&- &
HEARTBEAT_PID=$!
TMP_FILE="${BIN_DIR}/.helm.tmp.$$"
# In the background + wait, so INT/TERM are handled at once and cleanup stops the build.
(cd "${MOD_DIR}" && exec go build -mod=readonly -trimpath -buildvcs=false -ldflags "${LDFLAGS}" \
  -o "${TMP_FILE}" helm.sh/helm/v3/cmd/helm) 9>&- &
BUILD_PID=$!
wait "${BUILD_PID}"
BUILD_PID=""
kill "${HEARTBEAT_PID}" 2>/dev/null || true
wait "${HEARTBEAT_PID}" 2>/dev/null || true
HEARTBEAT_PID=""
chmod 0755 "${TMP_FILE}"
mv -f "${TMP_FILE}" "${BIN_DIR}/helm"   # atomic: same directory
TMP_FILE=""
"${BIN_DIR}/helm" version --short >&2
echo "built helm in $(elapsed)s"
echo "${BIN_DIR}"
