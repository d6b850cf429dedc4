#!/usr/bin/env bash
# Build the trustgate OCI image without a container daemon: Debian bookworm packages (mmdebstrap,
# image/debian.lock) and the project's wheel with its hash-pinned dependencies (pip inside the
# image's own Python, image/requirements.lock), assembled with umoci.
#
#   bash image/build.sh [--tag TAG] [--output DIR] [--rebuild-rootfs]
#
# Output in DIR (default: build/):
#   trustgate-image.oci.tar         OCI archive of the image trustgate:TAG (TAG: pyproject's version)
#   trustgate-image.sbom.cdx.json   its SBOM (also in the image: /usr/share/doc/trustgate/sbom.cdx.json)
#   trustgate-image.digest          its manifest digest
# The last line printed is the archive's path. The same tree gives the same bytes: file times are
# the last commit's (SOURCE_DATE_EPOCH) or, for the Debian layer, the lock's; tar entries sorted;
# no random ids. --rebuild-rootfs builds the Debian layer again instead of taking it from the cache.
# Needs root (chroot; files owned by root): bash image/install-build-tools.sh installs the rest.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CACHE="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}/image"
NAME=trustgate
VENV=/opt/trustgate
TAG=""
OUTDIR="${ROOT}/build"
ROOTFS_MODE=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --output) OUTDIR="$2"; shift 2 ;;
    --rebuild-rootfs) ROOTFS_MODE=--rebuild; shift ;;
    *) echo "usage: $0 [--tag TAG] [--output DIR] [--rebuild-rootfs]" >&2; exit 2 ;;
  esac
done

fail() { echo "build.sh: $*" >&2; exit 1; }
[[ "$(id -u)" == 0 ]] || fail "needs root (chroot into the image's root filesystem; files owned by root)"
for tool in umoci mmdebstrap mmtarfilter git flock; do
  command -v "${tool}" >/dev/null || fail "${tool} not found: bash image/install-build-tools.sh"
done

"${PYTHON}" -c 'import tomllib' 2>/dev/null || fail "${PYTHON} is not Python >= 3.11 (set PYTHON=python3.11)"
project_field() {
  "${PYTHON}" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"][sys.argv[2]])' \
    "${ROOT}/pyproject.toml" "$1"
}
VERSION="$(project_field version)"
TAG="${TAG:-${VERSION}}"
[[ "${TAG}" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || fail "invalid tag '${TAG}' (letters, digits, _ . -)"
SOURCE_DATE_EPOCH="$(git -C "${ROOT}" log -1 --format=%ct 2>/dev/null)" || fail "${ROOT} is not a git checkout with a commit"
export SOURCE_DATE_EPOCH
CREATED="$(date -u -d "@${SOURCE_DATE_EPOCH}" +%Y-%m-%dT%H:%M:%SZ)"
REVISION="$(git -C "${ROOT}" rev-parse HEAD)"
[[ -z "$(git -C "${ROOT}" status --porcelain)" ]] || REVISION+="-dirty"
BASE_EPOCH="$(sed -n 's/^# SOURCE_DATE_EPOCH \([0-9]*\)$/\1/p' "${HERE}/debian.lock")"

START=$(date +%s)
step() { echo "[$(( $(date +%s) - START ))s] $*" >&2; }

mkdir -p "${OUTDIR}"
exec 9>"${OUTDIR}/.build.lock"
flock 9
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

step "build tools"
TOOLS="$(bash "${HERE}/tools.sh" | tail -n1)"
step "Debian root filesystem"
ROOTFS="$(bash "${HERE}/rootfs.sh" ${ROOTFS_MODE} | tail -n1)"

step "wheels (image/requirements.lock, image/pip.lock)"
WHEELS="${CACHE}/wheels"
mkdir -p "${WHEELS}"
# The image's Python is Debian's 3.11 on glibc 2.36 (debian.lock): the wheels it accepts, whatever
# the host's Python and libc are (manylinux_2_36 down to manylinux1, as pip on such a host).
platforms=()
for minor in $(seq 36 -1 5); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
# Nothing to fetch (no index to ask) when the cache has a file of every locked package.
if ! "${TOOLS}/bin/python" - "${WHEELS}" "${HERE}/requirements.lock" "${HERE}/pip.lock" <<'PY'
import hashlib, pathlib, re, sys
have = {hashlib.sha256(path.read_bytes()).hexdigest() for path in pathlib.Path(sys.argv[1]).iterdir()}
entries = (e for lock in sys.argv[2:] for e in re.split(r"\n(?=\S)", pathlib.Path(lock).read_text()))
sys.exit(any((h := set(re.findall(r"--hash=sha256:([0-9a-f]{64})", e))) and not h & have for e in entries))
PY
then
  PIP_FIND_LINKS="" "${TOOLS}/bin/python" -m pip download --quiet --disable-pip-version-check \
    --require-hashes --no-deps --only-binary=:all: \
    --implementation cp --python-version 3.11 --abi cp311 "${platforms[@]}" \
    --dest "${WHEELS}" -r "${HERE}/requirements.lock" -r "${HERE}/pip.lock"
fi
# Only the files the locks name stay in the download cache.
for wheel in "${WHEELS}"/*; do
  grep -q "sha256:$(sha256sum "${wheel}" | cut -d' ' -f1)" "${HERE}/requirements.lock" "${HERE}/pip.lock" \
    || rm -f "${wheel}"
done

step "trustgate wheel"
# The work tree's files that git tracks or would add (not ignored ones), as a commit would have them.
mkdir -p "${WORK}/src" "${WORK}/dist"
git -C "${ROOT}" ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' file; do [[ -e "${ROOT}/${file}" ]] && printf '%s\0' "${file}"; done \
  | tar -C "${ROOT}" --null -T - -cf - | tar -C "${WORK}/src" -xf -
# setuptools from tools.lock: the wheel's metadata does not change with the newest setuptools.
PIP_FIND_LINKS="" "${TOOLS}/bin/python" -m pip wheel --disable-pip-version-check --no-deps --no-build-isolation \
  --wheel-dir "${WORK}/dist" "${WORK}/src" >"${WORK}/wheel.log" 2>&1 || { cat "${WORK}/wheel.log" >&2; fail "the wheel did not build"; }
WHEEL="$(ls "${WORK}"/dist/*.whl)"

step "install into ${VENV} (the image's Python, pip --require-hashes)"
STAGE="${WORK}/stage"
mkdir -p "${STAGE}"
tar -C "${STAGE}" -xpf "${ROOTFS}"
[[ -e "${STAGE}/dev/null" ]] || mknod -m 666 "${STAGE}/dev/null" c 1 3
INBOX="${STAGE}/tmp/trustgate-build"
mkdir -p "${INBOX}/wheels"
cp "${WHEELS}"/* "${WHEEL}" "${INBOX}/wheels/"
cp "${HERE}/requirements.lock" "${INBOX}/"
echo "${NAME}==${VERSION} --hash=sha256:$(sha256sum "${WHEEL}" | cut -d' ' -f1)" >"${INBOX}/trustgate.lock"
PIP_WHEEL="$(cd "${INBOX}/wheels" && ls pip-*.whl)"
# PYTHONHASHSEED and SOURCE_DATE_EPOCH make the compiled .pyc files reproducible (hash-based).
chroot "${STAGE}" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LC_ALL=C.UTF-8 PYTHONHASHSEED=0 \
  SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH}" PIP="/tmp/trustgate-build/wheels/${PIP_WHEEL}/pip" VENV="${VENV}" \
  /bin/sh -euc '
    umask 022
    /usr/bin/python3 -m venv --without-pip "$VENV"
    pip() { "$VENV/bin/python" "$PIP" --disable-pip-version-check --no-input --no-cache-dir "$@"; }
    pip install --quiet --no-index --find-links /tmp/trustgate-build/wheels --require-hashes --no-deps \
      --no-warn-script-location -r /tmp/trustgate-build/requirements.lock -r /tmp/trustgate-build/trustgate.lock
    pip check >/dev/null
  '
rm -rf "${INBOX}" "${STAGE}/root/.cache"

step "SBOM"
SBOM="${STAGE}/usr/share/doc/${NAME}/sbom.cdx.json"
"${TOOLS}/bin/python" "${HERE}/sbom.py" "${STAGE}" --venv "${VENV}" --name "${NAME}" --version "${VERSION}" \
  --output "${SBOM}"

step "layers and image"
tar_sorted() {  # reproducible tar: sorted names, one time, root-owned, no atime/ctime or pid in headers
  tar --sort=name --format=pax --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime="@${SOURCE_DATE_EPOCH}" --owner=0 --group=0 --numeric-owner "$@"
}
tar_sorted -C "${STAGE}" -cf "${WORK}/app.tar" ".${VENV}" "./usr/share/doc/${NAME}"
LAYOUT="${WORK}/layout"
umoci init --layout "${LAYOUT}"
umoci new --image "${LAYOUT}:${TAG}"
umoci raw add-layer --image "${LAYOUT}:${TAG}" --history.created "$(date -u -d "@${BASE_EPOCH}" +%Y-%m-%dT%H:%M:%SZ)" \
  --history.created_by "image/rootfs.sh: Debian bookworm, image/debian.lock (mmdebstrap)" "${ROOTFS}"
umoci raw add-layer --image "${LAYOUT}:${TAG}" --history.created "${CREATED}" \
  --history.created_by "image/build.sh: ${NAME} ${VERSION} in ${VENV}, image/requirements.lock (pip); SBOM" \
  "${WORK}/app.tar"
labels=(
  "org.opencontainers.image.title=${NAME}"
  "org.opencontainers.image.description=$(project_field description)"
  "org.opencontainers.image.version=${TAG}"
  "org.opencontainers.image.revision=${REVISION}"
  "org.opencontainers.image.created=${CREATED}"
  "org.opencontainers.image.licenses=Apache-2.0"
)
label_args=()
for label in "${labels[@]}"; do label_args+=(--config.label "${label}"); done
umoci config --image "${LAYOUT}:${TAG}" --created "${CREATED}" --history.created "${CREATED}" \
  --history.created_by "image/build.sh: user ${NAME} (65532), environment, labels" \
  --config.user 65532:65532 --config.workingdir / \
  --config.env "PATH=${VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --config.env LANG=C.UTF-8 --config.env PYTHONUNBUFFERED=1 --config.env PYTHONDONTWRITEBYTECODE=1 \
  "${label_args[@]}" --config.cmd trustctl --config.cmd --help
umoci gc --layout "${LAYOUT}"
"${PYTHON}" "${HERE}/oci.py" tag "${LAYOUT}" --name "${NAME}" --tag "${TAG}"
DIGEST="$("${PYTHON}" "${HERE}/oci.py" digest "${LAYOUT}")"

ARCHIVE="${OUTDIR}/${NAME}-image.oci.tar"
tar_sorted --mode=a+rX,u+w -C "${LAYOUT}" -cf "${WORK}/${NAME}-image.oci.tar" oci-layout index.json blobs
cp "${SBOM}" "${WORK}/${NAME}-image.sbom.cdx.json"
echo "${DIGEST}" >"${WORK}/${NAME}-image.digest"
for output in oci.tar sbom.cdx.json digest; do mv -f "${WORK}/${NAME}-image.${output}" "${OUTDIR}/"; done

compressed=$(( $(stat -c %s "${ARCHIVE}") ))
uncompressed=$(( $(stat -c %s "${ROOTFS}") + $(stat -c %s "${WORK}/app.tar") ))
step "${NAME}:${TAG} ${DIGEST}: $(( compressed / 1000000 )) MB archive, $(( uncompressed / 1000000 )) MB of layers uncompressed"
echo "${ARCHIVE}"
