"""Each node's cgroup root (cgroup v1, cgroupfs driver): made before its kubelet, emptied after.

The kubelet refuses a ``cgroupRoot`` that does not exist in every hierarchy, and it puts all
pods below it (``<root>/kubepods/...``), so the root is also how the node's containers are
found and killed at teardown, whatever state containerd was left in.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from devkit.nodes.procs import NodeError, kill_pids

CGROUP_FS = Path("/sys/fs/cgroup")


def hierarchies() -> list[Path]:
    """Mounted cgroup hierarchies (v1 controllers, named ones, and a hybrid ``unified``)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0] if right else ""
        if fstype in ("cgroup", "cgroup2"):
            found.append(Path(left.split()[4]))
    return found


def is_cgroup_v1() -> bool:
    return (
        any(h.parent == CGROUP_FS and h.name != "unified" for h in hierarchies())
        and not (CGROUP_FS / "cgroup.controllers").exists()
    )


def create_root(name: str) -> None:
    """``/<name>`` in every v1 hierarchy, with cpuset's cpus and mems copied from the parent."""
    if not is_cgroup_v1():
        raise NodeError("this launcher drives cgroup v1 hosts (cgroupfs driver); /sys/fs/cgroup is not cgroup v1")
    for h in hierarchies():
        d = h / name
        d.mkdir(exist_ok=True)
        if (h / "cpuset.cpus").exists():
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (d / f).read_text().strip():
                    (d / f).write_text((h / f).read_text())


def kill_all(name: str, grace: float = 0.0) -> int:
    """Kill every process under ``/<name>``; returns how many there were."""
    pids: set[int] = set()
    for h in hierarchies():
        root = h / name
        if root.is_dir():
            for procs in root.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in procs.read_text().split())
    if pids:
        kill_pids(sorted(pids), grace)
    return len(pids)


def remove_root(name: str, timeout: float = 15.0) -> None:
    """Kill what is left under ``/<name>`` and remove its cgroups, deepest first."""
    deadline = time.monotonic() + timeout
    while True:
        kill_all(name)
        left = []
        for h in hierarchies():
            root = h / name
            if not root.is_dir():
                continue
            for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                try:
                    d.rmdir()
                except OSError:
                    left.append(d)
            try:
                root.rmdir()
            except OSError:
                left.append(root)
        if not left:
            return
        if time.monotonic() > deadline:
            raise NodeError(f"cgroups still busy after {timeout:.0f}s: {', '.join(map(str, left[:5]))}")
        time.sleep(0.2)
