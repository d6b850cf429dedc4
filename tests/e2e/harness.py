"""Shared by the end-to-end tests: the control-plane binaries, the node kit, and what real nodes need of the host."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from devkit.controlplane import cached_bin_dir, expected_bin_dir, find_binaries
from devkit.nodes import cgroups
from devkit.nodes.kit import BUILD_HINT as NODE_KIT_HINT
from devkit.nodes.kit import NodeKit, cached_kit, find_kit

from ..prerequisites import in_ci, unavailable

BUILD_HINT = "bash devkit/controlplane/build.sh (or make controlplane)"
TOOLS = ("ip", "nft", "nsenter", "unshare", "mount")


def binaries() -> Path:
    """The built control plane. With CI=true a missing or failed build fails the test, never skips it."""
    if in_ci() or os.environ.get("TRUSTGATE_E2E_BUILD") == "1":
        try:
            return find_binaries(build=True)
        except Exception as error:  # any failure to build must fail CI
            pytest.fail(f"cannot build the Kubernetes control plane ({error}); try: {BUILD_HINT}")
    cached = cached_bin_dir()
    if cached is None:
        unavailable(f"Kubernetes control-plane binaries not built in {expected_bin_dir()}; build: {BUILD_HINT}")
    return cached


def node_kit() -> NodeKit:
    """The built node kit; with CI=true a missing or failed build fails, never skips."""
    if in_ci() or os.environ.get("TRUSTGATE_E2E_BUILD") == "1":
        try:
            return find_kit(build=True)
        except Exception as error:
            pytest.fail(f"cannot build the node binaries and images ({error}); try: {NODE_KIT_HINT}")
    kit = cached_kit()
    if kit is None:
        unavailable(f"worker node binaries and images are not built; build: {NODE_KIT_HINT}")
    return kit


def require_host() -> None:
    """Real nodes: root, the network and mount tools, a cgroup v1 host."""
    if os.geteuid() != 0:
        unavailable("real nodes need root (network namespaces, mounts, cgroups); run the tests as root")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed; apt-get install iproute2 nftables util-linux mount")
    if not cgroups.is_cgroup_v1():
        unavailable("the node launcher drives cgroup v1 hosts without systemd; this host's /sys/fs/cgroup is not v1")
