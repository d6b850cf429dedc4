"""Fixtures for the scheduler extender's tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests/factories.py and this directory's helpers are plain modules (tests/ is not a package): make them
# importable whatever pytest's import mode.
for _path in (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from extender_support import World  # noqa: E402

from devkit.factories import Issuer  # noqa: E402


@pytest.fixture(scope="session")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def world(issuer: Issuer) -> World:
    return World(issuer)
