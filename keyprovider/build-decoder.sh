#!/usr/bin/env bash
# Build trustgate-layer-decoder (keyprovider/decoder, Go, from the ocicrypt and imgcrypt modules of the Go
# module proxy): the stream processor containerd runs for encrypted layers on the nodes. Cached in
# ~/.cache/trustgate/layer-decoder-<hash of the sources>/; the last line printed is the binary's path.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="${HERE}/decoder"
CACHE="${TRUSTGATE_CACHE:-${HOME}/.cache/trustgate}"
HASH="$(cat "${SRC}/go.mod" "${SRC}/go.sum" "${SRC}/main.go" | sha256sum | cut -c1-16)"
OUT_DIR="${CACHE}/layer-decoder-${HASH}"
OUT="${OUT_DIR}/trustgate-layer-decoder"
if [[ -x "${OUT}" ]]; then
  echo "${OUT}"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "build-decoder.sh: 'go' not found in PATH (need Go and the Go module proxy)" >&2; exit 1; }
mkdir -p "${OUT_DIR}"
exec 9>"${OUT_DIR}/.build.lock"
flock 9
if [[ ! -x "${OUT}" ]]; then
  t0=$(date +%s)
  tmp="${OUT}.tmp.$$"
  trap 'rm -f "${tmp}"' EXIT
  ( cd "${SRC}" && GOWORK=off CGO_ENABLED=0 go build -mod=readonly -trimpath -buildvcs=false -ldflags "-s -w" -o "${tmp}" . ) >&2
  mv -f "${tmp}" "${OUT}"
  echo "built trustgate-layer-decoder in $(( $(date +%s) - t0 ))s" >&2
fi
echo "${OUT}"
