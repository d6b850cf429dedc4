"""Shared by the end-to-end tests: where the control-plane binaries come from, and waiting."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from prerequisites import in_ci, unavailable

from devkit.controlplane import cached_bin_dir, expected_bin_dir, find_binaries

T = TypeVar("T")
BUILD_HINT = "bash devkit/controlplane/build.sh (or make controlplane)"


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


def eventually(check: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
