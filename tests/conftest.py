"""Emulated TPMs (Debian's swtpm) for the agent's and the authority's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.tpm2 import Tpm2Tools
from devkit.swtpm import LocalCa, SoftwareTpm

from .prerequisites import require_tpm_tools


@pytest.fixture(scope="session")
def ek_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    require_tpm_tools()
    return LocalCa(tmp_path_factory.mktemp("ek-ca"))


@pytest.fixture(scope="module")
def swtpm(ek_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftwareTpm]:
    with SoftwareTpm(tmp_path_factory.mktemp("swtpm"), ek_ca) as tpm:
        yield tpm


@pytest.fixture
def tools(swtpm: SoftwareTpm, tmp_path: Path) -> Tpm2Tools:
    """tpm2-tools on the module's TPM, with a fresh agent state directory (a new AK)."""
    swtpm.reboot()  # PCRs back to their reset values
    return Tpm2Tools(swtpm.tcti, tmp_path / "agent-state")
