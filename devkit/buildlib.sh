# Steps shared by the kit's Go build scripts (devkit/controlplane/build.sh, devkit/nodes/build.sh,
# tools/helm/build.sh): module pins, the per-directory build lock, a heartbeat for long steps,
# atomic installs of built binaries and cleanup on exit. Sourced, never run; the sourcing script
# sets -euo pipefail and START (the time its "t=" progress counts from).
#
# Every background child closes the lock fds (8, 9): a killed build must not leave a child
# holding a lock for a while.

elapsed() { echo $(( $(date +%s) - START )); }

# pinned_version <go.mod> <module>: the version go.mod requires.
pinned_version() {
  awk -v m="$2" '($1 == "require" && $2 == m) {print $3} ($1 == m) {print $2}' "$1" | head -n1
}

# require_go <prog>: exit unless the go command is there (<prog> names the script in the error).
require_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "$1: 'go' not found in PATH (need Go >= 1.26 and the Go module proxy)" >&2
    exit 1
  fi
}

# exit_if_built <bin dir> <check...>: when the check command finds everything built, print the
# directory (the script's result) and exit at once.
exit_if_built() {
  local dir="$1"
  shift
  if "$@"; then
    echo "${dir}"
    exit 0
  fi
}

# lock_bin_dir <bin dir> <stale glob> <check...>: create the directory and hold its build lock
# (fd 9) so that concurrent builds (e.g. two test runs started at once) take turns. Under the
# lock, exit as exit_if_built does when another build finished meanwhile; otherwise remove the
# temp binaries (<stale glob> in the directory) of a build killed outright (SIGKILL).
lock_bin_dir() {
  local dir="$1" stale="$2"
  shift 2
  mkdir -p "${dir}"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"${dir}/.build.lock"
    flock 9
    exit_if_built "${dir}" "$@"
    # shellcheck disable=SC2086  # the glob is meant to expand
    rm -f "${dir}"/${stale}
  fi
}

HEARTBEAT_PID=""
JOB_PID=""
TMP_PATHS=()  # removed on exit
cleanup() {
  [[ -n "${JOB_PID}" ]] && kill "${JOB_PID}" 2>/dev/null || true
  [[ -n "${HEARTBEAT_PID}" ]] && kill "${HEARTBEAT_PID}" 2>/dev/null || true
  local p
  for p in "${TMP_PATHS[@]+"${TMP_PATHS[@]}"}"; do rm -rf "$p"; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_heartbeat <what>: "  ... still <what>" on stderr every 60 s, so a CI log shows a long step
# is alive. sleep must not hold our stdout/stderr open, or a caller reading them waits for it.
start_heartbeat() {
  ( while sleep 60 </dev/null >/dev/null 2>&1; do echo "  ... still $1 (t=$(elapsed)s)" >&2; done ) 8>&- 9>&- &
  HEARTBEAT_PID=$!
}

stop_heartbeat() {
  kill "${HEARTBEAT_PID}" 2>/dev/null || true
  wait "${HEARTBEAT_PID}" 2>/dev/null || true
  HEARTBEAT_PID=""
}

# run_long <what> <command...>: in the background with a heartbeat, so that INT/TERM are handled
# at once and cleanup stops the command; returns its exit code.
run_long() {
  local what="$1"
  shift
  start_heartbeat "${what}"
  "$@" 8>&- 9>&- &
  JOB_PID=$!
  local rc=0
  wait "${JOB_PID}" || rc=$?
  JOB_PID=""
  stop_heartbeat
  return "${rc}"
}

# go_build_in <module dir> <ldflags> <output> <package>: the one way the kit builds a Go command.
go_build_in() {
  cd "$1" && exec go build -mod=readonly -trimpath -buildvcs=false -ldflags "$2" -o "$3" "$4"
}

# go_install <module dir> <ldflags> <package> <output>: build into a temp file beside <output>,
# then rename it into place (atomic: the same directory), so no partial binary is ever there.
go_install() {
  local mod="$1" ldflags="$2" pkg="$3" out="$4" name tmp
  name="$(basename "${out}")"
  tmp="$(dirname "${out}")/.${name}.tmp.$$"
  TMP_PATHS+=("${tmp}")
  run_long "building ${name}" go_build_in "${mod}" "${ldflags}" "${tmp}" "${pkg}" || return
  chmod 0755 "${tmp}" && mv -f "${tmp}" "${out}"
}

# k8s_ldflags <version>: the version stamps of a Kubernetes build, as its own Makefile sets them.
k8s_ldflags() {
  local minor="${1#v1.}"
  minor="${minor%%.*}"
  local flags="-s -w -X k8s.io/component-base/version.gitVersion=$1"
  flags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}"
  flags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  flags+=" -X k8s.io/component-base/version.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "${flags}"
}
