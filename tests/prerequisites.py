"""Tools the tests need from outside Python: missing ones fail the run in CI and skip it locally."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from devkit.chart import ChartError, helm_binary
from devkit.swtpm import INSTALL_HINT, missing_tools


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(message: str) -> NoReturn:
    """With CI=true a missing prerequisite is a failure, never a skip; locally, a skip that says how to get it."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def require_tpm_tools() -> None:
    missing = missing_tools()
    if missing:
        unavailable(f"{', '.join(missing)} not installed; {INSTALL_HINT}")


def require_helm() -> None:
    try:
        helm_binary()
    except ChartError as error:
        unavailable(str(error))
