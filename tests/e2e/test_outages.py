"""trustgate down never stops what needs no trust: the outage matrix and the README's emergency procedures.

For each of: the extender killed, the extender cut off from the API server (its cache unsynced), the
webhook killed, and both killed, on the real control plane: pods in kube-system, in trustgate-system
and plain pods in an ordinary namespace are created and scheduled as without trustgate; a
trust-requiring pod stays Pending or is refused, and is never bound to the node without a report;
once trustgate is back, the trust pods are placed on the trusted node.

Then the README's procedures ("If trustgate is down"), each step as the README gives it.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devkit.devstack import ISSUER, DevStack
from devkit.fleet import NO_REPORT, VALID, Fleet
from devkit.tcp_proxy import TcpProxy
from devkit.waiting import eventually

pytestmark = pytest.mark.e2e

PAUSE = "registry.k8s.io/pause:3.10"
TRUSTED_NODE, BARE_NODE = "outage-trusted", "outage-bare"
PLAIN_NAMESPACES = ("kube-system", "trustgate-system", "outage")
HOLD = 8.0  # seconds a trust pod is watched staying unplaced while trustgate is down


def pod(name: str, namespace: str, trust: bool = False) -> dict[str, Any]:
    """A pod for the two nodes of this module; `trust`: selected by the module's TrustPolicy. It asks
    nothing of trust labels, so only trustgate keeps it off the node without a report."""
    terms = [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [n]}]} for n in (TRUSTED_NODE, BARE_NODE)
    ]
    required = {"nodeSelectorTerms": terms}
    labels = {"outage-test": "true"} | ({"outage-trust": "true"} if trust else {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "containers": [{"name": "main", "image": PAUSE}],
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}},
        },
    }


def create(stack: DevStack, manifest: dict[str, Any]) -> tuple[bool, str]:
    result = stack.kubectl("create", "-f", "-", check=False, input=json.dumps(manifest))
    return result.returncode == 0, result.stderr


def node_of(stack: DevStack, namespace: str, name: str) -> str | None:
    found = stack.kubectl("get", "pod", "-n", namespace, name, "-o", "json", check=False)
    return json.loads(found.stdout)["spec"].get("nodeName") if found.returncode == 0 else None


@pytest.fixture(scope="module")
def nodes(stack: DevStack) -> Fleet:
    fleet = Fleet(stack, ISSUER)
    fleet.add(TRUSTED_NODE, VALID)
    fleet.add(BARE_NODE, NO_REPORT)
    stack.kubectl("create", "namespace", "outage", check=False)
    eventually(
        lambda: stack.kubectl("get", "sa", "default", "-n", "outage", check=False).returncode == 0,
        "the default ServiceAccount of outage",
    )
    policy = {
        "apiVersion": "trustgate.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": "outage"},
        "spec": {"podSelector": {"matchLabels": {"outage-trust": "true"}}},
    }
    stack.kubectl("apply", "-f", "-", input=json.dumps(policy))
    for kind in ("validating", "mutating"):
        eventually(lambda k=kind: "outage-trust" in json.dumps(stack.webhooks(k)), f"the {kind} webhook scoped", 30)
    eventually(lambda: _labelled(stack), "the trusted node labelled", 30)
    return fleet


@pytest.fixture
def cleanup(stack: DevStack) -> Iterator[None]:
    yield
    for namespace in PLAIN_NAMESPACES:
        stack.kubectl("delete", "pod", "-n", namespace, "-l", "outage-test", "--wait=false", check=False)


def cut_extender_off(stack: DevStack) -> Callable[[], None]:
    """The extender reaches the API server through a proxy that is then cut: its watches fail."""
    proxy = TcpProxy(("127.0.0.1", stack.cp.ports.apiserver)).start()
    stack.stop_service("extender")
    stack.servers["extender"] = f"https://127.0.0.1:{proxy.port}"
    stack.start_service("extender")
    proxy.cut()

    def restore() -> None:
        stack.stop_service("extender")
        stack.servers.pop("extender")
        proxy.stop()
        stack.start_service("extender")

    return restore


def kill(stack: DevStack, *services: str) -> Callable[[], None]:
    for service in services:
        stack.crash_service(service)

    def restore() -> None:
        for service in services:
            stack.start_service(service)

    return restore


OUTAGES: dict[str, Callable[[DevStack], Callable[[], None]]] = {
    "extender killed": lambda stack: kill(stack, "extender"),
    "extender unsynced": cut_extender_off,
    "webhook killed": lambda stack: kill(stack, "webhook"),
    "both killed": lambda stack: kill(stack, "extender", "webhook"),
}


@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_an_outage_stops_only_trust_pods_and_they_are_placed_once_trustgate_is_back(
    stack: DevStack, nodes: Fleet, cleanup: None, outage: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    restore = OUTAGES[outage](stack)
    try:
        if outage == "extender unsynced":  # the extender answers, but with an error: its cache lost its watches
            eventually(lambda: _readyz(stack, "extender") == 503, "the extender to report itself unsynced", 30)
        plain = [(namespace, f"plain-{tag}-{i}") for i, namespace in enumerate(PLAIN_NAMESPACES)]
        for namespace, name in plain:
            admitted, error = create(stack, pod(name, namespace))
            assert admitted, f"{namespace}/{name} must never depend on trustgate ({outage}): {error}"
        trust_name = f"trust-{tag}"
        admitted, error = create(stack, pod(trust_name, "outage", trust=True))
        assert admitted or "trustgate" in error, error
        started = time.monotonic()
        for namespace, name in plain:
            eventually(lambda n=namespace, p=name: node_of(stack, n, p), f"{namespace}/{name} scheduled", 60)
        if admitted:  # the webhook marked it: the scheduler waits on the extender for it
            while time.monotonic() < started + HOLD:
                assert node_of(stack, "outage", trust_name) is None, f"a trust pod was placed during: {outage}"
                time.sleep(0.5)
    finally:
        restore()
    if not admitted:  # refused while the webhook was down: created again once it is back
        eventually(lambda: create(stack, pod(trust_name, "outage", trust=True))[0], "the trust pod admitted", 60)
    assert eventually(lambda: node_of(stack, "outage", trust_name), "the trust pod placed", 90) == TRUSTED_NODE
    print(f"\n{outage}: plain pods scheduled throughout; the trust pod waited, then went to {TRUSTED_NODE}")


def _labelled(stack: DevStack) -> bool:
    node = stack.cp.client().get(f"/api/v1/nodes/{TRUSTED_NODE}")
    return (node["metadata"].get("labels") or {}).get("trustgate.dev/trusted") == "true"


def _readyz(stack: DevStack, service: str) -> int:
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    try:
        with urllib.request.urlopen(f"{stack.url(service)}/readyz", context=context, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
