"""Shared by the end-to-end tests: where the control-plane binaries come from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devkit.controlplane import cached_bin_dir, expected_bin_dir, find_binaries

from ..prerequisites import in_ci, unavailable

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
