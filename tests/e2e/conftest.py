"""One development stack (real control plane + trustgate services) shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devkit.devstack import DevStack

from ..prerequisites import require_helm
from .harness import binaries, running


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    require_helm()  # the stack installs what the chart renders
    yield from running(DevStack(tmp_path_factory.mktemp("stack"), bin_dir=binaries()))
