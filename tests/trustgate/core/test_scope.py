"""The webhook configurations rendered from the policies: never narrower than the core's selection.

The CEL the API server evaluates is run here with cel-python over the same pods the core judges.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import celpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.factories import pod_object, trust_policy
from trustgate.core import images
from trustgate.core.policy import TrustPolicy, pod_facts, requirement_for
from trustgate.core.scope import Endpoint, Scope, image_regex, mutating_webhooks, validating_webhooks
from trustgate.core.selectors import parse_label_selector

SCOPE = Scope(exempt=frozenset({"kube-system", "trustgate-system"}), binders=("system:kube-scheduler", "ext"))
ENDPOINT = Endpoint("Q0E=")
NAMESPACES = {
    "default": {"kubernetes.io/metadata.name": "default"},
    "payments": {"kubernetes.io/metadata.name": "payments", "compliance": "pci"},
    "kube-system": {"kubernetes.io/metadata.name": "kube-system"},
}
POLICIES = [
    trust_policy("pci", namespaceSelector={"matchLabels": {"compliance": "pci"}}),
    trust_policy(
        "pci-db", namespaceSelector={"matchLabels": {"compliance": "pci"}}, podSelector={"matchLabels": {"app": "db"}}
    ),
    trust_policy(
        "secret-tier", podSelector={"matchExpressions": [{"key": "tier", "operator": "In", "values": ["secret"]}]}
    ),
    trust_policy("not-web", podSelector={"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
    trust_policy(
        "watched", podSelector={"matchExpressions": [{"key": "audit", "operator": "Exists"}]}, enforcement="Audit"
    ),
    trust_policy("encrypted", encryptedImages=["registry.example/secret/*", "docker.io/acme/vault*", "nginx"]),
    trust_policy("typo", podSelector={"matchExpressions": [{"key": "app", "operator": "In"}]}),
]
pytestmark = pytest.mark.filterwarnings("ignore:The recursion limit will not be reset")  # cel-python raises it
IMAGE_FORMS = [
    "nginx",
    "nginx:1.27",
    "docker.io/library/nginx:latest",
    "index.docker.io/library/nginx",
    "redis",
    "busybox",
    "registry.example/secret/db:1",
    "REGISTRY.EXAMPLE:443/secret/db",
    "registry.example/public/web",
    "registry-1.docker.io/acme/vault:1",
    "acme/vault-agent@sha256:" + "a" * 64,
    "registry.example.evil.com/x",
]


@functools.cache
def program(expression: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(expression))


def cel(expression: str, activation: dict[str, Any]) -> bool:
    return bool(program(expression).evaluate(celpy.json_to_cel(activation)))


def calls(webhooks: list[dict[str, Any]], request: dict[str, Any], namespace: str) -> list[str]:
    """The names of the webhooks the API server would call for `request` in `namespace`."""
    called = []
    operation, resource = request["request"]["operation"], request["request"].get("resource", "pods")
    for webhook in webhooks:
        if not any(operation in r["operations"] and resource in r["resources"] for r in webhook["rules"]):
            continue
        if not parse_label_selector(webhook["namespaceSelector"]).matches(NAMESPACES[namespace]):
            continue
        if all(cel(c["expression"], request) for c in webhook["matchConditions"]):
            called.append(webhook["name"])
    return called


def create(pod: dict[str, Any]) -> dict[str, Any]:
    request = {"operation": "CREATE", "subResource": "", "resource": "pods", "userInfo": {"username": "alice"}}
    return {"object": pod, "oldObject": None, "request": request}


def requires_trust(pod: dict[str, Any], policies: list[TrustPolicy]) -> bool:
    facts = pod_facts(pod)
    return requirement_for(facts, NAMESPACES[facts.namespace], policies) is not None


pods = st.builds(
    lambda namespace, labels, image, selector: pod_object(
        name="p", namespace=namespace, labels=labels, images=[image], node_selector=selector
    ),
    st.sampled_from(["default", "payments"]),
    st.sampled_from([{}, {"app": "web"}, {"app": "db"}, {"tier": "secret"}, {"audit": "1", "app": "web"}]),
    st.sampled_from(IMAGE_FORMS),
    st.sampled_from([{}, {"trustgate.dev/trusted": "true"}, {"asset.trustgate.dev/country": "US"}, {"disk": "ssd"}]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods, st.lists(st.sampled_from(POLICIES), max_size=4, unique_by=lambda p: p["metadata"]["name"]))
def test_every_pod_the_core_may_require_trust_of_is_sent_to_both_webhooks(pod: dict[str, Any], chosen: list) -> None:
    policies = [TrustPolicy.from_resource(p) for p in chosen]
    validating = validating_webhooks(policies, SCOPE, ENDPOINT)
    mutating = mutating_webhooks(policies, SCOPE, ENDPOINT)
    namespace = pod["metadata"]["namespace"]
    if requires_trust(pod, policies):
        assert calls(validating, create(pod), namespace), "the validating webhook would not see it"
        assert calls(mutating, create(pod), namespace), "it would never be marked"


def test_a_pod_no_policy_can_select_reaches_no_webhook() -> None:
    policies = [TrustPolicy.from_resource(p) for p in POLICIES[:3]]
    webhooks = validating_webhooks(policies, SCOPE, ENDPOINT) + mutating_webhooks(policies, SCOPE, ENDPOINT)
    plain = pod_object(name="web", namespace="default", labels={"app": "web"}, images=["redis"])
    assert calls(webhooks, create(plain), "default") == []


def test_exempt_namespaces_reach_no_webhook_whatever_the_pod() -> None:
    policies = [TrustPolicy.from_resource(p) for p in POLICIES]
    webhooks = validating_webhooks(policies, SCOPE, ENDPOINT) + mutating_webhooks(policies, SCOPE, ENDPOINT)
    pod = pod_object(name="x", namespace="kube-system", node_selector={"trustgate.dev/trusted": "true"})
    assert calls(webhooks, create(pod), "kube-system") == []


def test_bindings_by_the_scheduler_and_the_extender_are_not_sent() -> None:
    [bindings] = [w for w in validating_webhooks([], SCOPE, ENDPOINT) if w["name"] == "bindings.trustgate.dev"]
    [condition] = bindings["matchConditions"]
    for user, sent in (("system:kube-scheduler", False), ("ext", False), ("alice", True)):
        assert cel(condition["expression"], {"request": {"userInfo": {"username": user}}}) is sent


def test_an_update_that_changes_nothing_a_decision_reads_is_not_sent() -> None:
    policies = [TrustPolicy.from_resource(POLICIES[0])]
    [pods_webhook] = [w for w in validating_webhooks(policies, SCOPE, ENDPOINT) if w["name"].startswith("p-")]
    old = pod_object(name="db", namespace="payments", node_name="n1")
    annotated = pod_object(name="db", namespace="payments", node_name="n1")
    annotated["metadata"]["annotations"] = {"note": "x"}
    relabelled = pod_object(name="db", namespace="payments", node_name="n1", labels={"v": "2"})
    swapped = pod_object(name="db", namespace="payments", node_name="n1", images=["registry.example/secret/db"])
    update = {"operation": "UPDATE", "subResource": ""}
    expression = pods_webhook["matchConditions"][1]["expression"]
    assert not cel(expression, {"object": annotated, "oldObject": old, "request": update})
    assert cel(expression, {"object": relabelled, "oldObject": old, "request": update})
    assert cel(expression, {"object": swapped, "oldObject": old, "request": update})


def test_policies_sharing_a_namespace_selector_share_one_entry_and_typos_get_none() -> None:
    policies = [TrustPolicy.from_resource(p) for p in POLICIES]
    names = [w["name"] for w in validating_webhooks(policies, SCOPE, ENDPOINT)]
    assert names[0] == "bindings.trustgate.dev" and names[1] == "labels.pods.trustgate.dev"
    assert len(names) == 2 + 2  # pci and pci-db together; every other policy selects all namespaces
    assert all(
        w["failurePolicy"] == "Fail" and w["timeoutSeconds"] == 3 for w in mutating_webhooks(policies, SCOPE, ENDPOINT)
    )


@pytest.mark.parametrize("pattern", ["registry.example/secret/*", "docker.io/acme/vault*", "nginx", "localhost:5000/a"])
@pytest.mark.parametrize("image", [*IMAGE_FORMS, "localhost:5000/a:1", "LOCALHOST:5000/a"])
def test_an_image_regex_matches_whatever_the_pattern_covers(pattern: str, image: str) -> None:
    if images.matches(image, pattern):
        assert re.search(image_regex(pattern), image), (pattern, image)
