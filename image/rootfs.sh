#!/usr/bin/env bash
# The Debian root filesystem of the trustgate image: a tarball made by mmdebstrap from
# image/debian.lock (the Essential:yes set, image/packages.txt and their dependencies, at the
# locked versions), cached by the hash of its inputs. It is the image's first layer as it is.
#
#   bash image/rootfs.sh              # the cached tarball, built if missing; last line: its path
#   bash image/rootfs.sh --rebuild    # build it again even if cached (same path, same bytes)
#   bash image/rootfs.sh --resolve    # resolve packages.txt on the mirror anew, write debian.lock
#
# Output: ${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}/image/rootfs-<hash>.tar. The .deb files of the
# last build are kept beside it (debs/), so a rebuild needs no network. Needs root (mmdebstrap's
# root mode: chroot, mount) and mmdebstrap (bash image/install-build-tools.sh).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOCK="${HERE}/debian.lock"
CACHE="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}/image"
DEBS="${CACHE}/debs"
MODE=cached
case "${1:-}" in
  "") ;;
  --rebuild) MODE=rebuild ;;
  --resolve) MODE=resolve ;;
  *) echo "usage: $0 [--rebuild|--resolve]" >&2; exit 2 ;;
esac

fail() { echo "rootfs.sh: $*" >&2; exit 1; }
[[ "$(id -u)" == 0 ]] || fail "needs root (mmdebstrap's root mode chroots and mounts /proc)"
command -v mmdebstrap >/dev/null || fail "mmdebstrap not installed: bash image/install-build-tools.sh"

# The wanted packages, without comments.
mapfile -t WANTED < <(sed 's/#.*//' "${HERE}/packages.txt" | tr -s ' \t' '\n' | sed '/^$/d')

if [[ "${MODE}" == resolve ]]; then
  EPOCH="$(date +%s)"
else
  [[ -f "${LOCK}" ]] || fail "${LOCK} missing: make image-lock"
  EPOCH="$(sed -n 's/^# SOURCE_DATE_EPOCH \([0-9]*\)$/\1/p' "${LOCK}")"
  [[ -n "${EPOCH}" ]] || fail "${LOCK} has no '# SOURCE_DATE_EPOCH <seconds>' line: make image-lock"
  # Everything the tarball is made from; the image build's own commit is not part of it, so the
  # rootfs layer (and its digest) stays the same from commit to commit until one of these changes.
  KEY="$(cat "${LOCK}" "${HERE}/packages.txt" "${HERE}/debian.sources" "${HERE}/dpkg.cfg" "${BASH_SOURCE[0]}" \
    | sha256sum | cut -c1-16)"
  OUT="${CACHE}/rootfs-${KEY}.tar"
  if [[ "${MODE}" == cached && -f "${OUT}" ]]; then
    echo "${OUT}"
    exit 0
  fi
fi

mkdir -p "${CACHE}"
exec 9>"${CACHE}/.rootfs.lock"
flock 9
if [[ "${MODE}" == cached && -f "${OUT}" ]]; then
  echo "${OUT}"
  exit 0
fi

WORK="$(mktemp -d "${CACHE}/.rootfs.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT
mkdir -p "${DEBS}" "${WORK}/debs"

# Pin every locked package: apt's candidate is then the locked version wherever the mirror still
# has it, for the Essential:yes set too. What was installed is compared with the lock below.
: >"${WORK}/preferences"
if [[ "${MODE}" != resolve ]]; then
  sed '/^#/d; /^$/d' "${LOCK}" | while IFS='=' read -r package version; do
    printf 'Package: %s\nPin: version %s\nPin-Priority: 1001\n\n' "${package}" "${version}"
  done >"${WORK}/preferences"
fi

export SOURCE_DATE_EPOCH="${EPOCH}"
export TRUSTGATE_INSTALLED="${WORK}/installed"
echo "building the Debian rootfs (mmdebstrap, ${#WANTED[@]} packages + Essential:yes)..." >&2
START=$(date +%s)
status=0
# merged-usr: /bin, /lib, /sbin as symlinks into /usr and usr-is-merged, as Debian's own images
# (otherwise apt picks usrmerge, which pulls in perl).
mmdebstrap --variant=essential --mode=root --format=tar \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include="$(IFS=,; echo "${WANTED[*]}")" \
  --dpkgopt="${HERE}/dpkg.cfg" \
  --skip=essential/unlink \
  --setup-hook="mkdir -p \"\$1/etc/apt/preferences.d\" && cp '${WORK}/preferences' \"\$1/etc/apt/preferences.d/trustgate-lock\"" \
  --setup-hook="mkdir -p \"\$1/var/cache/apt/archives\"" \
  --setup-hook="sync-in '${DEBS}' /var/cache/apt/archives" \
  --customize-hook="sync-out /var/cache/apt/archives '${WORK}/debs'" \
  --customize-hook='chroot "$1" dpkg-query -W -f="\${Package}=\${Version}\n" | LC_ALL=C sort >"$TRUSTGATE_INSTALLED"' \
  --customize-hook='rm -f "$1/etc/apt/preferences.d/trustgate-lock" "$1/etc/resolv.conf" "$1/etc/hostname"' \
  --customize-hook='echo "trustgate:x:65532:65532:trustgate:/nonexistent:/usr/sbin/nologin" >>"$1/etc/passwd"' \
  --customize-hook='echo "trustgate:x:65532:" >>"$1/etc/group"' \
  --customize-hook='echo "trustgate:!:::::::" >>"$1/etc/shadow"' \
  bookworm "${WORK}/rootfs.tar" "${HERE}/debian.sources" >"${WORK}/log" 2>&1 || status=$?
if [[ "${status}" != 0 ]]; then
  tail -n 30 "${WORK}/log" >&2
  if grep -q "Unable to locate package\|was not found\|has no installation candidate" "${WORK}/log"; then
    echo "rootfs.sh: the Debian mirror does not serve a wanted package" >&2
  fi
  fail "mmdebstrap failed (exit ${status})"
fi
echo "built the Debian rootfs in $(( $(date +%s) - START ))s" >&2

# Only the .deb files of this build stay in the download cache.
rm -rf "${DEBS}.old"
mv "${DEBS}" "${DEBS}.old"
mv "${WORK}/debs" "${DEBS}"
rm -rf "${DEBS}.old"

if [[ "${MODE}" == resolve ]]; then
  if [[ -f "${LOCK}" ]] && diff -q <(sed '/^#/d; /^$/d' "${LOCK}") "${TRUSTGATE_INSTALLED}" >/dev/null; then
    echo "${LOCK} unchanged ($(grep -vc '^#' "${LOCK}") packages)" >&2
    exit 0
  fi
  {
    echo "# The Debian packages of the trustgate image (amd64, bookworm) as installed: package=version."
    echo "# Regenerate with \`make image-lock\` (resolves image/packages.txt on image/debian.sources)."
    echo "# SOURCE_DATE_EPOCH ${EPOCH}"
    cat "${TRUSTGATE_INSTALLED}"
  } >"${LOCK}.tmp"
  mv -f "${LOCK}.tmp" "${LOCK}"
  echo "wrote ${LOCK} ($(grep -vc '^#' "${LOCK}") packages)" >&2
  exit 0
fi

if ! diff <(sed '/^#/d; /^$/d' "${LOCK}") "${TRUSTGATE_INSTALLED}" >"${WORK}/drift"; then
  sed 's/^/  /' "${WORK}/drift" >&2
  fail "the packages installed differ from ${LOCK} (< locked, > installed): the mirror no longer" \
    "serves a locked version (a bookworm point or security release replaced it), or packages.txt changed;" \
    "run \`make image-lock\` and commit image/debian.lock"
fi

# The tarball is the image's first layer: no device nodes (the runtime makes /dev).
mmtarfilter --path-exclude='/dev/*' <"${WORK}/rootfs.tar" >"${WORK}/layer.tar"
mv -f "${WORK}/layer.tar" "${OUT}"
# One rootfs at a time in the cache: the others are from older locks.
find "${CACHE}" -maxdepth 1 -name 'rootfs-*.tar' ! -path "${OUT}" -delete
echo "${OUT}"
