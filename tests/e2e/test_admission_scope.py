"""Only what can need trust reaches trustgate: the API server's own counts of webhook calls.

kube-apiserver counts every call it makes to an admission webhook
(`apiserver_admission_webhook_request_total`, by webhook name). Pods of a Deployment that no policy
selects, scheduled by kube-scheduler, must cost trustgate nothing: no call at creation, none at
binding. Pods a policy selects are marked, filtered and bound through the extender.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devkit import workloads
from devkit.devstack import ISSUER, DevStack
from devkit.factories import trust_policy
from devkit.fleet import VALID, Fleet
from devkit.waiting import eventually

pytestmark = pytest.mark.e2e

PAUSE = "registry.k8s.io/pause:3.10"
METRIC = re.compile(r"^apiserver_admission_webhook_request_total\{([^}]*)\} ([0-9.e+]+)$", re.M)


def webhook_calls(stack: DevStack) -> float:
    """Every call kube-apiserver has made to one of trustgate's webhooks so far."""
    text = stack.cp.client().request("GET", "/metrics")
    return sum(float(value) for labels, value in METRIC.findall(text) if "trustgate.dev" in labels)


def deployment(name: str, namespace: str, replicas: int, labels: dict[str, str]) -> dict[str, Any]:
    """Pause pods on the nodes labelled for this test."""
    return workloads.deployment(
        PAUSE,
        name,
        namespace,
        replicas,
        labels,
        containers=[{"name": "main", "image": PAUSE}],
        terminationGracePeriodSeconds=0,
        automountServiceAccountToken=False,
        nodeSelector={"scope-test": "true"},
    )


def pods(stack: DevStack, namespace: str, app: str) -> list[dict[str, Any]]:
    found = stack.kubectl("get", "pods", "-n", namespace, "-l", f"app={app}", "-o", "json")
    return json.loads(found.stdout)["items"]


@pytest.fixture(scope="module")
def nodes(stack: DevStack) -> Iterator[Fleet]:
    fleet = Fleet(stack, ISSUER)
    fleet.add("scope-1", VALID, **{"scope-test": "true"})
    fleet.add("scope-2", VALID, **{"scope-test": "true"})
    stack.kubectl("create", "namespace", "scope", check=False)
    policy = trust_policy("scope-secret", podSelector={"matchLabels": {"scope-tier": "secret"}})
    stack.kubectl("apply", "-f", "-", input=json.dumps(policy))
    eventually(lambda: "scope-tier" in json.dumps(stack.webhooks("mutating")), "the mutating webhook scoped", 30)
    yield fleet
    fleet.remove()


def test_plain_pods_of_a_deployment_reach_no_trustgate_webhook(stack: DevStack, nodes: Fleet) -> None:
    name = f"plain-{uuid.uuid4().hex[:6]}"
    before = webhook_calls(stack)
    stack.kubectl("apply", "-f", "-", input=json.dumps(deployment(name, "scope", 6, {})))
    bound = eventually(
        lambda: (
            (found := pods(stack, "scope", name)) and len(found) == 6 and all(p["spec"].get("nodeName") for p in found)
        ),
        "six plain pods created and bound",
        90,
    )
    assert bound
    assert webhook_calls(stack) - before == 0
    stack.kubectl("delete", "deployment", "-n", "scope", name, "--wait=false")


def test_pods_a_policy_selects_are_marked_and_bound_through_the_extender(stack: DevStack, nodes: Fleet) -> None:
    name = f"secret-{uuid.uuid4().hex[:6]}"
    before = webhook_calls(stack)
    stack.kubectl("apply", "-f", "-", input=json.dumps(deployment(name, "scope", 3, {"scope-tier": "secret"})))
    eventually(
        lambda: (
            (found := pods(stack, "scope", name)) and len(found) == 3 and all(p["spec"].get("nodeName") for p in found)
        ),
        "three trust pods created and bound",
        90,
    )
    for pod in pods(stack, "scope", name):
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert limits["trustgate.dev/trust"] == "1"  # marked: kube-scheduler consults the extender for it
    assert webhook_calls(stack) - before >= 3  # one mutating call each at creation (bindings: the extender's)
    stack.kubectl("delete", "deployment", "-n", "scope", name, "--wait=false")
