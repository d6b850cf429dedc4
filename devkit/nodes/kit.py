"""Where the node binaries and images are: the JSON file that ``build.sh`` writes last."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from devkit import buildscript

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
BUILD_HINT = "bash devkit/nodes/build.sh (needs root, apt and the Go module proxy; about 10 minutes cold)"


class KitError(RuntimeError):
    """The node kit is not built, or could not be built."""


@dataclass(frozen=True)
class Image:
    """An OCI archive and the reference it is imported under."""

    ref: str
    archive: Path


@dataclass(frozen=True)
class NodeKit:
    """Every executable and image a worker node runs, as built by build.sh."""

    k8s_version: str
    containerd_version: str
    kubelet: Path
    kube_proxy: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    runc: Path
    cni_bin_dir: Path
    pause_image: Image
    test_image: Image

    @classmethod
    def load(cls, path: Path) -> NodeKit:
        raw = json.loads(Path(path).read_text())
        return cls(
            k8s_version=raw["k8s_version"],
            containerd_version=raw["containerd_version"],
            kubelet=Path(raw["kubelet"]),
            kube_proxy=Path(raw["kube_proxy"]),
            containerd=Path(raw["containerd"]),
            containerd_shim=Path(raw["containerd_shim"]),
            ctr=Path(raw["ctr"]),
            runc=Path(raw["runc"]),
            cni_bin_dir=Path(raw["cni_bin_dir"]),
            pause_image=Image(raw["pause_image"]["ref"], Path(raw["pause_image"]["archive"])),
            test_image=Image(raw["test_image"]["ref"], Path(raw["test_image"]["archive"])),
        )

    def missing(self) -> list[str]:
        """Files this kit names that are not there (e.g. a cache that was partly removed)."""
        executables = [self.kubelet, self.kube_proxy, self.containerd, self.containerd_shim, self.ctr, self.runc]
        executables += [self.cni_bin_dir / p for p in ("bridge", "host-local", "loopback", "portmap")]
        absent = [str(p) for p in executables if not os.access(p, os.X_OK)]
        absent += [str(i.archive) for i in (self.pause_image, self.test_image) if not i.archive.is_file()]
        return absent


def _pinned(go_mod: Path, module: str) -> str:
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod.read_text(), re.M)
    if not m:
        raise KitError(f"{go_mod} pins no version of {module}")
    return m.group(1)


def kit_path() -> Path:
    """The JSON file build.sh writes for the pinned versions."""
    root = HERE.parent.parent
    k8s = _pinned(root / "devkit/controlplane/go.mod", "k8s.io/kubernetes")
    ctrd = _pinned(HERE / "containerd/go.mod", "github.com/containerd/containerd/v2")
    cache = Path(os.environ.get("TRUSTGATE_CACHE") or Path.home() / ".cache" / "trustgate")
    return cache / f"node-kit-k8s-{k8s}-containerd-{ctrd}.json"


def cached_kit() -> NodeKit | None:
    """The kit if build.sh completed for the pinned versions and nothing is missing, else None."""
    path = kit_path()
    if not path.is_file():
        return None
    kit = NodeKit.load(path)
    return None if kit.missing() else kit


def find_kit(build: bool = True) -> NodeKit:
    """The node kit, running build.sh first when ``build`` and the cache is incomplete.

    build.sh's progress goes to stderr; it returns at once when everything is cached.
    """
    kit = cached_kit()
    if kit is not None:
        return kit
    kit = NodeKit.load(
        buildscript.build(
            BUILD_SCRIPT,
            build,
            KitError,
            f"node binaries and images are not built ({kit_path()} missing or incomplete); run: {BUILD_HINT}",
        )
    )
    if kit.missing():
        raise KitError(f"{BUILD_SCRIPT} finished but these are missing: {', '.join(kit.missing())}")
    return kit
