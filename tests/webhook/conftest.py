"""Fixtures for the webhook tests: an issuer, a cluster of four nodes, the app with a JSON-lines audit log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from devkit.factories import Issuer
from trustgate.audit.sinks import AuditLog, JsonLinesSink
from trustgate.core.snapshot import StaticCluster
from webhook.app import create_app

from .reviews import AUDIT_POLICY, ENCRYPTED_POLICY, PCI_POLICY, WARN_POLICY, snapshot


@pytest.fixture(scope="session")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def audit(audit_path: Path) -> AuditLog:
    return AuditLog([JsonLinesSink(audit_path)])


@pytest.fixture
def cluster(issuer: Issuer) -> StaticCluster:
    return StaticCluster(snapshot(issuer, policies=[PCI_POLICY, ENCRYPTED_POLICY, WARN_POLICY, AUDIT_POLICY]))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def client(cluster: StaticCluster, audit: AuditLog, registry: CollectorRegistry) -> FlaskClient:
    return create_app(cluster, audit, registry).test_client()


@pytest.fixture
def post(client: FlaskClient) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """POST a review, check the envelope, return the response part."""

    def send(review: dict[str, Any]) -> dict[str, Any]:
        answer = client.post("/validate", json=review)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        body = answer.get_json()
        assert body["apiVersion"] == "admission.k8s.io/v1"
        assert body["kind"] == "AdmissionReview"
        assert body["response"]["uid"] == review["request"]["uid"]
        return body["response"]

    return send
