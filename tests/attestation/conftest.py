"""Emulated TPMs (Debian's swtpm) for the authority's tests; skipped without swtpm unless CI=true."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.swtpm import INSTALL_HINT, LocalCa, SoftwareTpm, missing_tools
from agent.tpm2 import Tpm2Tools


def _require_tools() -> None:
    missing = missing_tools()
    if missing:
        message = f"{', '.join(missing)} not installed; {INSTALL_HINT}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def ek_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    _require_tools()
    return LocalCa(tmp_path_factory.mktemp("ek-ca"))


@pytest.fixture(scope="module")
def swtpm(ek_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftwareTpm]:
    tpm = SoftwareTpm(tmp_path_factory.mktemp("swtpm"), ek_ca).start()
    try:
        yield tpm
    finally:
        tpm.stop()


@pytest.fixture
def tools(swtpm: SoftwareTpm, tmp_path: Path) -> Tpm2Tools:
    """tpm2-tools on the module's TPM, with a fresh agent state directory (a new AK)."""
    swtpm.reboot()  # PCRs back to their reset values
    return Tpm2Tools(swtpm.tcti, tmp_path / "agent-state")
