"""Tools the tests need from outside Python: missing ones fail the run in CI and skip it locally."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
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


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        unavailable(why)


def require_tools(tools: Iterable[str], hint: str) -> None:
    """Every one of `tools` on PATH; else unavailable, naming the missing ones and `hint`, how to install them."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed; {hint}")


def require_tpm_tools() -> None:
    missing = missing_tools()
    if missing:
        unavailable(f"{', '.join(missing)} not installed; {INSTALL_HINT}")


def require_helm() -> None:
    try:
        helm_binary()
    except ChartError as error:
        unavailable(str(error))
