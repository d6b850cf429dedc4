"""Shared by the end-to-end tests: the control-plane binaries, the node kit, what real nodes need of the host, and
bringing a stack up and down."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from devkit.controlplane import cached_bin_dir, expected_bin_dir, find_binaries
from devkit.devstack import DevStack
from devkit.nodes import cgroups
from devkit.nodes.kit import BUILD_HINT as NODE_KIT_HINT
from devkit.nodes.kit import NodeKit, cached_kit, find_kit

from ..prerequisites import in_ci, require_root, require_tools, unavailable

BUILD_HINT = "bash devkit/controlplane/build.sh (or make controlplane)"
TOOLS = ("ip", "nft", "nsenter", "unshare", "mount")
T = TypeVar("T")
S = TypeVar("S", bound=DevStack)


def _built(build: Callable[[], T], cached: Callable[[], T | None], what: str, missing: str, hint: str) -> T:
    """What `build` makes with CI=true or TRUSTGATE_E2E_BUILD=1 (a missing or failed build then fails the test,
    never skips it); else what an earlier build left in the cache, or the test is unavailable."""
    if in_ci() or os.environ.get("TRUSTGATE_E2E_BUILD") == "1":
        try:
            return build()
        except Exception as error:  # any failure to build must fail CI
            pytest.fail(f"cannot build {what} ({error}); try: {hint}")
    found = cached()
    if found is None:
        unavailable(f"{missing}; build: {hint}")
    return found


def binaries() -> Path:
    """The built control plane. With CI=true a missing or failed build fails the test, never skips it."""
    return _built(
        lambda: find_binaries(build=True),
        cached_bin_dir,
        "the Kubernetes control plane",
        f"Kubernetes control-plane binaries not built in {expected_bin_dir()}",
        BUILD_HINT,
    )


def node_kit() -> NodeKit:
    """The built node kit; with CI=true a missing or failed build fails, never skips."""
    return _built(
        lambda: find_kit(build=True),
        cached_kit,
        "the node binaries and images",
        "worker node binaries and images are not built",
        NODE_KIT_HINT,
    )


def running(stack: S) -> Iterator[S]:
    """For a fixture to `yield from`: `stack` up while the tests use it, and down after (also when `up` failed
    half-way)."""
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def tear_down(down: Callable[[], None], leftovers: Callable[[], list[str]]) -> None:
    """Run `down`, then fail on what it raised or on what it left on the host: the leftovers are read even
    when `down` fails, so that an error does not hide them."""
    errors = []
    try:
        down()
    except Exception as error:
        errors.append(str(error))
    left = leftovers()
    assert not errors and not left, f"teardown errors: {errors}; left on the host: {left}"


def require_host() -> None:
    """Real nodes: root, the network and mount tools, a cgroup v1 host."""
    require_root("real nodes need root (network namespaces, mounts, cgroups); run the tests as root")
    require_tools(TOOLS, "apt-get install iproute2 nftables util-linux mount")
    if not cgroups.is_cgroup_v1():
        unavailable("the node launcher drives cgroup v1 hosts without systemd; this host's /sys/fs/cgroup is not v1")
