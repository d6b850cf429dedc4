"""POST /mutate: a trust-requiring pod being created is marked for the extender; nothing else changes."""

from __future__ import annotations

import base64
import json
from typing import Any

from flask.testing import FlaskClient

from devkit.factories import Issuer, pod_object
from trustgate.audit.sinks import AuditLog
from trustgate.core.snapshot import StaticCluster
from webhook.app import create_app
from webhook.mark import is_marked, mark_patch

from .reviews import PCI_POLICY, TRUST_SELECTOR, TRUSTED, pod_create, snapshot


def mutate(client: FlaskClient, review: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/mutate", json=review)
    assert answer.status_code == 200
    response = answer.get_json()["response"]
    assert response["uid"] == review["request"]["uid"]
    return response


def patched(pod: dict[str, Any], response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


def test_a_trust_requiring_pod_gets_the_trust_resource(client: FlaskClient) -> None:
    pod = pod_object(name="db", node_selector=TRUST_SELECTOR)
    patch = patched(pod, mutate(client, pod_create(pod)))
    assert patch == [
        {
            "op": "add",
            "path": "/spec/containers/0/resources",
            "value": {"requests": {"trustgate.dev/trust": "1"}, "limits": {"trustgate.dev/trust": "1"}},
        }
    ]


def test_existing_requests_and_limits_are_kept() -> None:
    pod = pod_object(name="db", node_selector=TRUST_SELECTOR)
    pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}}
    [operation] = mark_patch(pod)
    assert operation["value"] == {
        "requests": {"cpu": "100m", "trustgate.dev/trust": "1"},
        "limits": {"memory": "64Mi", "trustgate.dev/trust": "1"},
    }


def test_pods_that_need_no_mark_are_left_unchanged(client: FlaskClient, issuer: Issuer) -> None:
    plain = pod_object(name="web")
    pinned = pod_object(name="db", node_selector=TRUST_SELECTOR, node_name=TRUSTED)  # no scheduler: no extender
    already = pod_object(name="db", node_selector=TRUST_SELECTOR)
    already["spec"]["containers"][0]["resources"] = {"limits": {"trustgate.dev/trust": "1"}}
    for pod in (plain, pinned, already):
        response = mutate(client, pod_create(pod))
        assert response["allowed"] is True and "patch" not in response
    assert is_marked(already) and not is_marked(plain)


def test_a_policy_selected_pod_is_marked_too(client: FlaskClient) -> None:
    pod = pod_object(name="api", namespace="payments")  # PCI_POLICY selects its namespace
    assert patched(pod, mutate(client, pod_create(pod)))


def test_unsynced_the_mark_cannot_be_told_and_the_pod_is_refused(issuer: Issuer) -> None:
    client = create_app(StaticCluster(snapshot(issuer, policies=[PCI_POLICY], synced=False)), AuditLog()).test_client()
    response = mutate(client, pod_create(pod_object(name="web")))
    assert response["allowed"] is False and "not ready" in response["status"]["message"]
