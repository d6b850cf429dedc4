#!/usr/bin/env bash
# The Python tools of the image build (image/tools.lock: SBOM library, python-debian, setuptools,
# pip-tools) in a virtualenv cached by the lock's hash. Last line printed: the virtualenv.
#
#   bash image/tools.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
CACHE="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}/image"
KEY="$( (cat "${HERE}/tools.lock"; "${PYTHON}" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)"
VENV="${CACHE}/tools-${KEY}"

if [[ -f "${VENV}/.complete" ]]; then
  echo "${VENV}"
  exit 0
fi
mkdir -p "${CACHE}"
exec 9>"${CACHE}/.tools.lock"
flock 9
if [[ ! -f "${VENV}/.complete" ]]; then
  echo "installing the image build's Python tools (image/tools.lock)..." >&2
  rm -rf "${VENV}"
  "${PYTHON}" -m venv "${VENV}"
  # Only the registry, whatever pip's environment adds (find-links); every file hash-checked.
  PIP_FIND_LINKS="" "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-hashes --only-binary=:all: -r "${HERE}/tools.lock"
  touch "${VENV}/.complete"
  find "${CACHE}" -maxdepth 1 -name 'tools-*' ! -path "${VENV}" -exec rm -rf {} +
fi
echo "${VENV}"
