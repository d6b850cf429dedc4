"""Shared fixtures for the core package's unit tests: issuers per algorithm, verifiers, a fixed clock."""

from __future__ import annotations

import pytest

from devkit.factories import Issuer
from trustgate.core.report import ReportVerifier

from .craft import issuer_for


@pytest.fixture(scope="session")
def issuer() -> Issuer:
    """The ES256 attestation authority most tests use."""
    return issuer_for("ES256")


@pytest.fixture
def verifier(issuer: Issuer) -> ReportVerifier:
    """A fresh verifier (empty cache) trusting `issuer`."""
    return issuer.verifier()
