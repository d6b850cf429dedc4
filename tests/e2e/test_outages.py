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
from devkit.factories import trust_policy
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
def nodes(stack: DevStack) -> Iterator[Fleet]:
    fleet = Fleet(stack, ISSUER)
    fleet.add(TRUSTED_NODE, VALID)
    fleet.add(BARE_NODE, NO_REPORT)
    stack.kubectl("create", "namespace", "outage", check=False)
    eventually(
        lambda: stack.kubectl("get", "sa", "default", "-n", "outage", check=False).returncode == 0,
        "the default ServiceAccount of outage",
    )
    policy = trust_policy("outage", podSelector={"matchLabels": {"outage-trust": "true"}})
    stack.kubectl("apply", "-f", "-", input=json.dumps(policy))
    for kind in ("validating", "mutating"):
        eventually(lambda k=kind: "outage-trust" in json.dumps(stack.webhooks(k)), f"the {kind} webhook scoped", 30)
    eventually(lambda: _labelled(stack), "the trusted node labelled", 30)
    yield fleet
    fleet.remove()


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


# --- the README's emergency procedures ("If trustgate is down"), step by step ------------------------------


def only_for(name: str, node: str) -> dict[str, Any]:
    """A trust pod that kube-scheduler may place only on `node`."""
    manifest = pod(name, "outage", trust=True)
    terms = [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
    manifest["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": terms
    }
    return manifest


def pinned(name: str, node: str) -> dict[str, Any]:
    """A trust pod created bound to `node` (spec.nodeName): no scheduler, only the webhook judges it."""
    manifest = pod(name, "outage", trust=True)
    del manifest["spec"]["affinity"]
    manifest["spec"]["nodeName"] = node
    return manifest


def restart_controller(stack: DevStack, *flags: str) -> None:
    """What `helm upgrade --reuse-values --set controller.…` does to the controller: new flags, restarted."""
    stack.stop_service("controller")
    stack.service_args["controller"] = list(flags)
    stack.start_service("controller")


def bindings_judged_for(stack: DevStack, user: str) -> bool:
    (bindings,) = [w for w in stack.webhooks("validating") if w["name"] == "bindings.trustgate.dev"]
    return f"request.userInfo.username != '{user}'" not in json.dumps(bindings.get("matchConditions"))


def binding_refused(stack: DevStack, name: str) -> bool:
    events = stack.kubectl(
        "get", "events", "-n", "outage", "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return any("bindings.trustgate.dev" in (e.get("message") or "") for e in json.loads(events.stdout)["items"])


def test_the_extender_emergency_procedure_schedules_trust_pods_only_where_the_webhook_lets_them(
    stack: DevStack, nodes: Fleet, cleanup: None
) -> None:
    tag = uuid.uuid4().hex[:6]
    stack.crash_service("extender")  # it cannot be brought back: trust pods wait
    waiting = f"waiting-{tag}"
    assert create(stack, pod(waiting, "outage", trust=True))[0]
    try:
        # 1. helm upgrade --reuse-values --set controller.checkSchedulerBindings=true
        restart_controller(stack, "--check-scheduler-bindings")
        eventually(lambda: bindings_judged_for(stack, "system:kube-scheduler"), "kube-scheduler's bindings judged", 30)
        # 2. kube-scheduler with the chart's kube-scheduler-config-without-extender.yaml
        stack.use_scheduler_config(stack._scheduler_config(without_extender=True))
        # the waiting pod and new ones are placed, on the trusted node only; the webhook refuses the other
        placed = f"placed-{tag}"
        assert create(stack, pod(placed, "outage", trust=True))[0]
        for name in (waiting, placed):
            assert eventually(lambda n=name: node_of(stack, "outage", n), f"{name} placed", 90) == TRUSTED_NODE
        refused = f"refused-{tag}"
        assert create(stack, only_for(refused, BARE_NODE))[0]
        eventually(lambda: binding_refused(stack, refused), "a binding to the node without a report refused", 60)
        assert node_of(stack, "outage", refused) is None
        plain = f"plain-{tag}"
        assert create(stack, pod(plain, "outage"))[0]
        eventually(lambda: node_of(stack, "outage", plain), "a plain pod scheduled", 60)
    finally:
        # 3. back: the extender, kube-scheduler's configuration with it, checkSchedulerBindings=false
        stack.start_service("extender")
        stack.use_scheduler_config(stack._scheduler_config())
        restart_controller(stack)
    eventually(lambda: not bindings_judged_for(stack, "system:kube-scheduler"), "kube-scheduler's bindings exempt", 30)
    after = f"after-{tag}"
    assert create(stack, pod(after, "outage", trust=True))[0]
    assert eventually(lambda: node_of(stack, "outage", after), "a trust pod placed by the extender", 90) == TRUSTED_NODE


def test_the_webhook_emergency_procedure_admits_trust_pods_unjudged_until_it_is_undone(
    stack: DevStack, nodes: Fleet, cleanup: None
) -> None:
    tag = uuid.uuid4().hex[:6]
    stack.crash_service("webhook")  # it cannot be brought back: trust pods are refused
    refused, error = create(stack, pinned(f"refused-{tag}", BARE_NODE))
    assert not refused and "trustgate" in error
    try:
        # 1. helm upgrade --reuse-values --set webhook.failurePolicy=Ignore
        restart_controller(stack, "--webhook-failure-policy=Ignore")
        eventually(
            lambda: (
                {w["failurePolicy"] for w in stack.webhooks("validating") + stack.webhooks("mutating")} == {"Ignore"}
            ),
            "the webhooks ignoring failures",
            30,
        )
        # trust pods are admitted again, unjudged: the documented price of this procedure
        admitted = f"unjudged-{tag}"
        eventually(lambda: create(stack, pinned(admitted, BARE_NODE))[0], "a trust pod admitted unjudged", 30)
    finally:
        # 2. back: the webhook, then failurePolicy=Fail
        stack.start_service("webhook")
        restart_controller(stack)
    eventually(
        lambda: {w["failurePolicy"] for w in stack.webhooks("validating") + stack.webhooks("mutating")} == {"Fail"},
        "the webhooks failing closed again",
        30,
    )
    again, error = create(stack, pinned(f"judged-{tag}", BARE_NODE))
    assert not again and "trustgate" in error, "a pinned trust pod on the node without a report must be refused"
