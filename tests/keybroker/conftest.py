"""The key broker's unit tests: one ES256 attestation authority for the reports."""

from __future__ import annotations

import pytest

from devkit.factories import Issuer


@pytest.fixture(scope="session")
def issuer() -> Issuer:
    return Issuer(alg="ES256")
