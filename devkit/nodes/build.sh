#!/usr/bin/env bash
# Build and cache everything a real Kubernetes worker node needs on this machine:
#
#   kubelet, kube-proxy   (k8s.io/kubernetes, the wrapper module in devkit/controlplane)
#   containerd, containerd-shim-runc-v2, ctr   (the wrapper module in devkit/nodes/containerd)
#   the pause image       (build/pause/linux/pause.c of the Kubernetes module, static, as an OCI archive)
#   a busybox test image  (Debian's busybox-static, as an OCI archive)
#   Debian's runc, CNI plugins, iptables, nftables and conntrack (apt-get, when missing)
#
#   bash devkit/nodes/build.sh
#
# Everything goes under ${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}. The last line printed is
# the path of a JSON file naming every artefact (devkit/nodes/kit.py reads it). Run again, it
# only checks: what is built stays built. Go sources come from the Go module proxy; go.sum of
# both wrapper modules is committed, so the builds run with -mod=readonly. Needs root for apt.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
K8S_MOD_DIR="${ROOT}/devkit/controlplane"
CTRD_MOD_DIR="${HERE}/containerd"
CACHE_ROOT="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}"
# shellcheck source=../buildlib.sh
source "${ROOT}/devkit/buildlib.sh"

die() { echo "devkit/nodes/build.sh: $*" >&2; exit 1; }

START=$(date +%s)

CTRD_VERSION="$(pinned_version "${CTRD_MOD_DIR}/go.mod" github.com/containerd/containerd/v2)"
[[ -n "${CTRD_VERSION}" ]] || die "no containerd version pinned in ${CTRD_MOD_DIR}/go.mod"
if [[ "$(pinned_version "${K8S_MOD_DIR}/go.mod" k8s.io/kubernetes)" != "${K8S_VERSION}" ]]; then
  die "K8S_VERSION=${K8S_VERSION} but ${K8S_MOD_DIR}/go.mod pins $(pinned_version "${K8S_MOD_DIR}/go.mod" k8s.io/kubernetes); a node is built only at the pinned version"
fi

K8S_BIN="${CACHE_ROOT}/k8s-${K8S_VERSION}/bin"
CTRD_BIN="${CACHE_ROOT}/containerd-${CTRD_VERSION}/bin"
IMAGES="${CACHE_ROOT}/images"
KIT="${CACHE_ROOT}/node-kit-k8s-${K8S_VERSION}-containerd-${CTRD_VERSION}.json"

# Everything already there: say so at once (no apt, no Go needed).
if [[ -f "${KIT}" ]] && python3 - "${KIT}" <<'EOF'
import json, os, sys
kit = json.load(open(sys.argv[1]))
files = [kit[k] for k in ("kubelet", "kube_proxy", "containerd", "containerd_shim", "ctr", "runc")]
files += [os.path.join(kit["cni_bin_dir"], p) for p in ("bridge", "host-local", "loopback", "portmap")]
files += ["/usr/sbin/nft", "/usr/sbin/conntrack"]
archives = [kit[k]["archive"] for k in ("pause_image", "test_image")]
sys.exit(0 if all(os.access(f, os.X_OK) for f in files) and all(os.path.isfile(a) for a in archives) else 1)
EOF
then
  echo "${KIT}"
  exit 0
fi
mkdir -p "${K8S_BIN}" "${CTRD_BIN}" "${IMAGES}"

# ---- Debian packages -------------------------------------------------------------------
# runc: the OCI runtime the containerd shim calls; containernetworking-plugins: bridge,
# host-local, loopback, portmap; nftables: kube-proxy's nftables mode runs nft;
# iptables: the portmap plugin; conntrack: clearing stale UDP flows; busybox-static: the
# test image; gcc and libc6-dev: the static pause binary.
PACKAGES=(runc containernetworking-plugins iptables nftables conntrack busybox-static gcc libc6-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ "$(id -u)" == 0 ]] || die "Debian packages missing: ${missing[*]} (run as root, or: apt-get install ${missing[*]})"
  echo "installing Debian packages: ${missing[*]} (t=$(elapsed)s)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi
for f in /usr/sbin/runc /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/loopback /usr/lib/cni/portmap \
  /usr/sbin/nft /usr/sbin/conntrack /bin/busybox; do
  [[ -x "$f" ]] || die "$f missing although its Debian package is installed"
done

require_go devkit/nodes/build.sh
export GOWORK=off   # never let a go.work above these directories take part
export CGO_ENABLED=0

# go_build <module dir> <output> <package> <ldflags>: build one command, unless it is built.
go_build() {
  local mod="$1" out="$2" pkg="$3" ldflags="$4" name t0
  name="$(basename "${out}")"
  if [[ -x "${out}" ]]; then
    echo "${name} already built"
    return
  fi
  echo "building ${name} (t=$(elapsed)s)..."
  t0=$(date +%s)
  go_install "${mod}" "${ldflags}" "${pkg}" "${out}" || die "go build ${pkg} failed (see above)"
  echo "built ${name} in $(( $(date +%s) - t0 ))s (t=$(elapsed)s)"
}

# ---- containerd ------------------------------------------------------------------------
exec 8>"${CTRD_BIN}/.build.lock"
flock 8
CTRD_LDFLAGS="-s -w -X github.com/containerd/containerd/v2/version.Version=${CTRD_VERSION}"
for b in containerd containerd-shim-runc-v2 ctr; do
  go_build "${CTRD_MOD_DIR}" "${CTRD_BIN}/${b}" "github.com/containerd/containerd/v2/cmd/${b}" "${CTRD_LDFLAGS}"
done
exec 8>&-

# ---- kubelet and kube-proxy --------------------------------------------------------------
# The same directory and lock as devkit/controlplane/build.sh: a control-plane build under
# way finishes first (two Go builds at once on 2 cores only slow each other down).
exec 9>"${K8S_BIN}/.build.lock"
if ! flock -n 9; then
  echo "waiting for another build in ${K8S_BIN} to finish (t=$(elapsed)s)..."
  start_heartbeat "waiting for ${K8S_BIN}/.build.lock"
  flock 9
  stop_heartbeat
fi
rm -f "${K8S_BIN}"/.kubelet.tmp.* "${K8S_BIN}"/.kube-proxy.tmp.*
K8S_LDFLAGS="$(k8s_ldflags "${K8S_VERSION}")"
for b in kubelet kube-proxy; do
  go_build "${K8S_MOD_DIR}" "${K8S_BIN}/${b}" "k8s.io/kubernetes/cmd/${b}" "${K8S_LDFLAGS}"
done
exec 9>&-

# ---- images ----------------------------------------------------------------------------
exec 7>"${IMAGES}/.build.lock"
flock 7
K8S_SRC="$(cd "${K8S_MOD_DIR}" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
[[ -f "${K8S_SRC}/build/pause/linux/pause.c" ]] || die "no build/pause/linux/pause.c in k8s.io/kubernetes@${K8S_VERSION} (${K8S_SRC})"
PAUSE_TAG="$(sed -n 's/^TAG ?= *//p' "${K8S_SRC}/build/pause/Makefile")"
[[ -n "${PAUSE_TAG}" ]] || die "no TAG in ${K8S_SRC}/build/pause/Makefile"
# pack_image <ref> <archive> <fill> <ociarchive.py flags...>: unless <archive> is there, <fill> <rootfs>
# fills an empty root filesystem and it is packed as the single-image OCI archive <archive>.
pack_image() {
  local ref="$1" tar="$2" fill="$3" work
  shift 3
  [[ -s "${tar}" ]] && return
  work="$(mktemp -d)"
  TMP_PATHS+=("${work}")
  mkdir -p "${work}/rootfs"
  "${fill}" "${work}/rootfs"
  python3 "${HERE}/ociarchive.py" --rootfs "${work}/rootfs" --ref "${ref}" "$@" --out "${tar}.tmp" \
    || die "packing ${ref} failed"
  mv -f "${tar}.tmp" "${tar}"
}

pause_rootfs() {
  echo "building ${PAUSE_REF} from ${K8S_SRC}/build/pause/linux/pause.c (t=$(elapsed)s)"
  # The flags of build/pause/Makefile.
  gcc -Os -Wall -Werror -static -DVERSION="v${PAUSE_TAG}-${K8S_VERSION}" -o "$1/pause" \
    "${K8S_SRC}/build/pause/linux/pause.c" || die "gcc could not build the pause binary"
  strip "$1/pause"
}

busybox_rootfs() {
  echo "packing ${BUSYBOX_REF} from Debian's busybox-static (t=$(elapsed)s)"
  mkdir -p "$1/bin" "$1/tmp" "$1/www" "$1/etc"
  cp /bin/busybox "$1/bin/busybox"
  for applet in sh cat echo env hostname httpd id ip ls nc ping sleep wget; do
    ln -s busybox "$1/bin/${applet}"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$1/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$1/etc/group"
}

PAUSE_REF="registry.k8s.io/pause:${PAUSE_TAG}"
PAUSE_TAR="${IMAGES}/pause-${PAUSE_TAG}.oci.tar"
pack_image "${PAUSE_REF}" "${PAUSE_TAR}" pause_rootfs --entrypoint /pause --user 65535:65535

BUSYBOX_VERSION="$(dpkg-query -W -f='${Version}' busybox-static)"
BUSYBOX_TAG="$(echo "${BUSYBOX_VERSION#*:}" | tr -c 'A-Za-z0-9_.\n-' '_')"
BUSYBOX_REF="trustgate.local/busybox:${BUSYBOX_TAG}"
BUSYBOX_TAR="${IMAGES}/busybox-${BUSYBOX_TAG}.oci.tar"
pack_image "${BUSYBOX_REF}" "${BUSYBOX_TAR}" busybox_rootfs --cmd /bin/sh --env PATH=/bin
exec 7>&-

python3 - "${KIT}" <<EOF || die "could not write ${KIT}"
import json, os, sys
kit = {
    "k8s_version": "${K8S_VERSION}",
    "containerd_version": "${CTRD_VERSION}",
    "kubelet": "${K8S_BIN}/kubelet",
    "kube_proxy": "${K8S_BIN}/kube-proxy",
    "containerd": "${CTRD_BIN}/containerd",
    "containerd_shim": "${CTRD_BIN}/containerd-shim-runc-v2",
    "ctr": "${CTRD_BIN}/ctr",
    "runc": "/usr/sbin/runc",
    "cni_bin_dir": "/usr/lib/cni",
    "pause_image": {"ref": "${PAUSE_REF}", "archive": "${PAUSE_TAR}"},
    "test_image": {"ref": "${BUSYBOX_REF}", "archive": "${BUSYBOX_TAR}"},
}
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    json.dump(kit, f, indent=2)
    f.write("\n")
os.replace(tmp, sys.argv[1])
EOF
echo "node kit ready in $(elapsed)s"
echo "${KIT}"
