"""The control-plane binaries: kube-apiserver, kube-scheduler, kube-controller-manager, kubectl and etcd.

``build.sh`` next to this file builds them from source through the Go module proxy into a cache
(``~/.cache/trustgate/k8s-<version>/bin``) that every run shares.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from devkit import buildscript
from devkit.controlplane.errors import ControlPlaneError

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
BINARIES: tuple[str, ...] = ("kube-apiserver", "kube-scheduler", "kube-controller-manager", "kubectl", "etcd")


def _script_var(name: str) -> str:
    m = re.search(rf'^{name}="\$\{{{name}:-([^}}]+)\}}"', BUILD_SCRIPT.read_text(), re.M)
    if not m:
        raise ControlPlaneError(f"cannot find {name} in {BUILD_SCRIPT}")
    return m.group(1)


def k8s_version() -> str:
    """The Kubernetes version build.sh builds (``K8S_VERSION`` env overrides)."""
    return os.environ.get("K8S_VERSION") or _script_var("K8S_VERSION")


def expected_bin_dir() -> Path:
    """Where build.sh puts (or would put) the binaries."""
    root = os.environ.get("TRUSTGATE_CACHE") or str(Path.home() / ".cache" / "trustgate")
    return Path(root) / f"k8s-{k8s_version()}" / "bin"


def cached_bin_dir() -> Path | None:
    """The binary directory if every binary is already built, else None (never builds)."""
    override = os.environ.get("TRUSTGATE_K8S_BIN")
    candidates = [Path(override)] if override else [expected_bin_dir()]
    for d in candidates:
        if all(os.access(d / b, os.X_OK) for b in BINARIES):
            return d
    return None


def find_binaries(build: bool = True) -> Path:
    """Return the directory holding the five control-plane binaries.

    ``TRUSTGATE_K8S_BIN`` may point at a ready directory. Otherwise runs build.sh, which
    returns at once when the binaries are cached and otherwise builds them (minutes on a
    cold machine); its progress is echoed to stderr. With ``build=False`` only the cache is
    consulted. Raises :class:`ControlPlaneError` on failure.
    """
    cached = cached_bin_dir()
    if cached is not None:
        return cached
    bin_dir = buildscript.build(
        BUILD_SCRIPT,
        build,
        ControlPlaneError,
        f"control-plane binaries not built in {expected_bin_dir()}; run: bash devkit/controlplane/build.sh",
    )
    missing = [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        raise ControlPlaneError(f"build.sh reported {bin_dir} but {missing} are missing there")
    return bin_dir
