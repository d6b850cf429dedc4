"""Fixtures for the scheduler extender's tests."""

from __future__ import annotations

import pytest

from devkit.factories import Issuer

from .extender_support import World


@pytest.fixture(scope="session")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def world(issuer: Issuer) -> World:
    return World(issuer)
