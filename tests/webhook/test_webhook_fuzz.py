"""Property-based tests of the admission webhook over HTTP: any body, any AdmissionReview shape, any broken part.

Invariants: never a 5xx, a traceback or the internal-error path; a 200 answers the request's uid; a
well-formed review is decided as the core (`Snapshot.evaluate`) says; a review placing a trust-requiring
pod with any part broken is refused (allowed false, or a 4xx); duplicate JSON keys are read like Go's
encoding/json (the last wins); fields that decisions do not read change nothing.

Examples per target: TRUSTGATE_FUZZ_EXAMPLES (default 10,000); a long run is a bigger value.
"""

from __future__ import annotations

import copy
import json
import os
import time
from functools import cache
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import event, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from devkit.factories import Issuer, pod_object
from trustgate.audit.sinks import AuditLog, JsonLinesSink
from trustgate.core.policy import pod_facts
from trustgate.core.snapshot import Snapshot, StaticCluster
from webhook.app import create_app
from webhook.mark import is_marked

from ..fuzzing import FUZZ, dumps_with_duplicate_member
from .reviews import (
    AUDIT_POLICY,
    ENCRYPTED_POLICY,
    EXPIRED,
    KERNEL_UNTRUSTED,
    NO_REPORT,
    PCI_POLICY,
    SCHEDULER,
    TRUST_SELECTOR,
    TRUSTED,
    WARN_POLICY,
    ephemeral_update,
    pod_binding,
    pod_create,
    pod_update,
    snapshot,
)

JSON = "application/json"
SECRET = "registry.example/secret/app:1"
NODES = [TRUSTED, TRUSTED, TRUSTED, EXPIRED, KERNEL_UNTRUSTED, NO_REPORT, "unknown-node"]

POD_POOL = [
    pod_object("plain"),
    pod_object("trusted", node_selector=TRUST_SELECTOR),
    pod_object("secret", images=[SECRET]),
    pod_object("pci", namespace="payments"),
    pod_object("sensitive", labels={"tier": "sensitive"}),
    pod_object("watched", labels={"tier": "watched"}),
    pod_object(
        "us", affinity_terms=[{"matchExpressions": [{"key": "asset.trustgate.dev/country", "operator": "Exists"}]}]
    ),
    pod_object("debug-target", node_selector=TRUST_SELECTOR),
]


@cache
def cluster() -> StaticCluster:
    """The four-node cluster of reviews.py, every policy kind, and the pool's pods (for Bindings to find)."""
    bound = [p for p in POD_POOL if p["metadata"]["name"] != "plain"]  # `plain` is not in the cluster
    policies = [PCI_POLICY, ENCRYPTED_POLICY, WARN_POLICY, AUDIT_POLICY]
    return StaticCluster(snapshot(Issuer(), policies=policies), pods=bound)


def cluster_snapshot() -> Snapshot:
    return cluster().snapshot()


@cache
def client() -> FlaskClient:
    # records kept (to nowhere) by a durable sink: the decisions are the core's, never turned into refusals
    return create_app(cluster(), AuditLog([JsonLinesSink(os.devnull)]), CollectorRegistry()).test_client()


# --- reviews ------------------------------------------------------------------------------------------


def _with_node(pod: dict[str, Any], node: str) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["spec"]["nodeName"] = node
    return pod


ROUTES = ["create-on-node", "create-unscheduled", "update", "binding", "legacy-binding", "ephemeral", "other"]


@st.composite
def reviews(draw: st.DrawFn) -> dict[str, Any]:
    """A review as kube-apiserver sends it, for one of the routes the webhook handles (or another one)."""
    route = draw(st.sampled_from(ROUTES))
    pod = draw(st.sampled_from(POD_POOL))
    node = draw(st.sampled_from(NODES))
    dry_run = draw(st.booleans())
    if route == "create-on-node":
        return pod_create(_with_node(pod, node), dry_run=dry_run, uid=f"u-{route}")
    if route == "create-unscheduled":
        return pod_create(copy.deepcopy(pod), uid=f"u-{route}")
    if route in ("binding", "legacy-binding"):
        return pod_binding(pod, node, legacy=route == "legacy-binding", dry_run=dry_run, uid=f"u-{route}")
    if route == "ephemeral":
        images = draw(st.sampled_from([["busybox"], [SECRET], ["busybox", SECRET]]))
        return ephemeral_update(_with_node(pod, node), images, uid=f"u-{route}")
    if route == "update":  # a bound pod changed into another (its images, labels or both)
        old = draw(st.sampled_from(POD_POOL))
        return pod_update(_with_node(old, node), _with_node(pod, node), dry_run=dry_run, uid=f"u-{route}")
    review = pod_create(_with_node(pod, node), uid=f"u-{route}")
    request = review["request"]
    other = draw(st.sampled_from(["DELETE", "CONNECT", "configmaps", "apps"]))
    if other in ("DELETE", "CONNECT"):
        request["operation"] = other
    elif other == "apps":
        request["resource"]["group"] = request["kind"]["group"] = "apps"
    else:
        request["resource"]["resource"] = other
    return review


# What each field the decision reads may be broken with: a truthy value of the wrong type (a falsy one
# often means "absent", which is legitimately defaulted).
NOT_STRING = [5, True, ["x"], {"a": 1}]
NOT_OBJECT = ["x", 5, True, [1]]
NOT_LIST = ["x", 5, {"a": 1}]
BREAKS = {
    "review": [("apiVersion", v) for v in ["admission.k8s.io/v1beta1", 1]] + [("kind", "Pod"), ("request", "x")],
    "request": [
        *(("uid", v) for v in [5, ["u"], ""]),
        *((key, v) for key in ("kind", "resource", "requestKind", "requestResource", "userInfo") for v in NOT_OBJECT),
        *(("kind", {"group": "", "version": "v1", "kind": v}) for v in NOT_STRING),
        *(("resource", {"group": 5, "version": "v1", "resource": "pods"}),),
        *((key, v) for key in ("subResource", "name", "namespace", "operation") for v in NOT_STRING),
        *(("dryRun", v) for v in ["yes", 1, [True]]),
        *(("object", v) for v in NOT_OBJECT),
    ],
    "pod": [
        *(("kind", v) for v in ["Binding", 5, ["Pod"]]),
        *(("apiVersion", v) for v in ["v2", 5]),
        *((key, v) for key in ("metadata", "spec") for v in NOT_OBJECT),
    ],
    "pod.metadata": [("labels", v) for v in [*NOT_OBJECT, {"app": 5}]],
    "pod.spec": [
        *(("nodeName", v) for v in NOT_STRING),
        *((key, v) for key in ("containers", "initContainers", "ephemeralContainers") for v in [*NOT_LIST, ["x"]]),
        *(("nodeSelector", v) for v in [*NOT_OBJECT, {"trustgate.dev/trusted": True}]),
        *(
            ("affinity", v)
            for v in [
                *NOT_OBJECT,
                {"nodeAffinity": "x"},
                {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": 5}},
            ]
        ),
    ],
    "binding": [
        *((key, v) for key in ("metadata", "target") for v in NOT_OBJECT),
        *(("kind", v) for v in ["Pod", 5]),
        *(("apiVersion", v) for v in ["v2", 5]),
    ],
    "binding.target": [*(("name", v) for v in NOT_STRING), *(("kind", v) for v in ["Pod", 5])],
    "binding.metadata": [(key, v) for key in ("name", "namespace") for v in NOT_STRING],
}
BREAK_LIST = [(where, key, value) for where, breaks in BREAKS.items() for key, value in breaks]


def _part(review: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The object at `where`, if this review has it (a Pod part only for a Pod, a Binding part for a Binding)."""
    request = review["request"]
    obj = request.get("object")
    is_binding = isinstance(obj, dict) and obj.get("kind") == "Binding"
    if where == "review":
        return review
    if where == "request":
        return request
    if where.startswith("pod") and not is_binding:
        return obj if where == "pod" else obj.get(where.split(".")[1])
    if where.startswith("binding") and is_binding:
        return obj if where == "binding" else obj.get(where.split(".")[1])
    return None


# --- the oracle ---------------------------------------------------------------------------------------


def placement(review: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The pod a well-formed review places and the node it places it on (no pod: nothing to check)."""
    request = review["request"]
    route = (request["resource"]["resource"], request.get("subResource", ""), request["operation"])
    if request["resource"]["group"] != "":
        return None, ""
    obj = request["object"]
    if route in (("pods", "", "CREATE"), ("pods", "", "UPDATE"), ("pods", "ephemeralcontainers", "UPDATE")):
        return obj, obj["spec"].get("nodeName") or ""
    if route in (("pods", "binding", "CREATE"), ("bindings", "", "CREATE")):
        pod = cluster().pods.get((request["namespace"], request["name"]))
        return pod, obj["target"]["name"]
    return None, ""


def expected(review: dict[str, Any]) -> str:
    """`allow`, `reject` or `not-found` for a well-formed review, from the core."""
    request = review["request"]
    pod, node = placement(review)
    is_binding = request["object"].get("kind") == "Binding"
    if pod is None:
        return "not-found" if is_binding and node else "allow"
    if not node:
        pods_route = request["resource"]["resource"] == "pods" and request.get("subResource", "") == ""
        if pods_route and not is_marked(pod) and cluster_snapshot().requirement(pod_facts(pod)) is not None:
            return "unmarked"  # kube-scheduler would not consult the extender for it
        return "allow"
    after = blocking(pod, node)
    if request["operation"] == "UPDATE" and request.get("subResource", "") == "":
        return "reject" if not after <= blocking(request["oldObject"], node) else "allow"  # only what it adds
    return "reject" if after else "allow"


def blocking(pod: dict[str, Any], node: str) -> set[Any]:
    """The checks the core says `pod` fails on `node` under an Enforce source."""
    snap = cluster_snapshot()
    requirement = snap.requirement(pod_facts(pod))
    if requirement is None:
        return set()
    verdict = snap.evaluate(requirement, snap.node(node), time.time())
    return set(verdict.reasons(verdict.enforced_failures))


def requires_trust(review: dict[str, Any]) -> bool:
    pod, node = placement(review)
    return pod is not None and bool(node) and cluster_snapshot().requirement(pod_facts(pod)) is not None


def post(body: bytes) -> tuple[int, Any]:
    response = client().post("/validate", data=body, content_type=JSON)
    text = response.get_data(as_text=True)
    assert response.status_code < 500, text
    assert "Traceback" not in text and 'File "' not in text, text
    assert "internal error" not in text, text  # the fail-closed path for unexpected exceptions
    return response.status_code, json.loads(text)


def answer(status: int, body: Any, uid: Any) -> Any:
    """The decision a reply carries, checked for shape: ('refused', status) or the response's contents."""
    if status != 200:
        assert 400 <= status < 500 and body["kind"] == "Status" and body["code"] == status
        return ("refused", status)
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == uid
    if not response["allowed"]:
        assert 400 <= response["status"]["code"] < 500 and response["status"]["message"].startswith("trustgate: ")
        assert response["auditAnnotations"]["trustgate-decision"] == "rejected"
    return (
        response["allowed"],
        (response.get("status") or {}).get("code"),
        (response.get("status") or {}).get("message"),
        response.get("warnings"),
        response.get("auditAnnotations"),
    )


def dumps_with_duplicate(review: dict[str, Any], where: str, key: str, junk: Any) -> bytes:
    """The JSON of `review` with an earlier member `key` (holding `junk`) in the object at `where`."""
    return dumps_with_duplicate_member(review, _part(review, where), key, junk)


# --- properties ---------------------------------------------------------------------------------------


@FUZZ
@given(
    reviews(),
    st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from(["request", "pod", "pod.spec", "binding.target"]),
            st.sampled_from(["object", "uid", "operation", "spec", "nodeName", "name", "containers"]),
            st.sampled_from([None, "x", 5, {"a": 1}, [1], "worker-1", "DELETE"]),
        ),
    ),
)
def test_a_well_formed_review_is_decided_as_the_core_says(review: dict[str, Any], duplicate) -> None:
    body = json.dumps(review).encode() if duplicate is None else dumps_with_duplicate(review, *duplicate)

    decision = answer(*post(body), review["request"]["uid"])

    outcome = expected(review)  # duplicates: the last member wins, so `review` is what was sent
    event(outcome)
    assert decision[0] is (outcome == "allow"), decision
    if outcome == "reject":
        assert decision[1] == 403 and "may not run on node" in decision[2]
    if outcome == "not-found":
        assert decision[1] == 403 and "not found" in decision[2]
    if outcome == "unmarked":
        assert decision[1] == 403 and "does not request trustgate.dev/trust" in decision[2]


@FUZZ
@given(reviews(), st.sampled_from(BREAK_LIST))
def test_a_review_with_a_broken_part_is_refused_when_it_places_a_trust_requiring_pod(review, breaking) -> None:
    where, key, value = breaking
    target = _part(review, where)
    trust = requires_trust(review)
    if target is None:
        return
    target[key] = copy.deepcopy(value)

    status, body = post(json.dumps(review).encode())

    uid = review["request"].get("uid") if isinstance(review.get("request"), dict) else None
    decision = answer(status, body, uid)
    event(f"{'trust' if trust else 'no trust'}: {'refused' if decision[0] in ('refused', False) else 'allowed'}")
    if trust:
        assert decision[0] in ("refused", False), (where, key, value, decision)


def _deep(n: int, opener: bytes, closer: bytes) -> bytes:
    return opener * n + b"0" + closer * n


RAW_BODIES = st.one_of(
    st.binary(max_size=256),
    st.text(max_size=128).map(str.encode),
    st.sampled_from([b"", b"null", b"[]", b"{}", b"\xef\xbb\xbf{}", b'{"apiVersion": "admission.k8s.io/v1"}']),
    st.integers(1, 5000).map(lambda n: _deep(n, b"[", b"]")),
    st.integers(1, 3000).map(
        lambda n: (
            b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":'
            + _deep(n, b'{"a":', b"}")
            + b"}}"
        )
    ),
    st.sampled_from(['"\\ud800"', "1e999", "123456789012345678901234567890", '"' + "\u00e9" * 10_000 + '"']).map(
        lambda v: (
            b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":'
            + v.encode()
            + b',"name":'
            + v.encode()
            + b"}}"
        )
    ),
)


@FUZZ
@given(RAW_BODIES)
def test_arbitrary_bodies_never_get_a_5xx_or_a_traceback(body: bytes) -> None:
    status, reply = post(body)

    if status == 200:
        assert reply["kind"] == "AdmissionReview" and isinstance(reply["response"]["uid"], str)
    else:
        assert status == 400 and reply["reason"] == "BadRequest"


IRRELEVANT = [
    ("review", "x-extra", {"a": 1}),
    ("request", "options", {"kind": "CreateOptions", "fieldManager": "kubectl"}),
    ("request", "options", "junk"),
    ("request", "userInfo", {"username": "mallory", "groups": ["system:masters"], "extra": {"a": ["b"]}}),
    ("request", "x-unknown", [1, 2]),
    ("request", "dryRun", True),
    ("pod.metadata", "annotations", {"trustgate.dev/trusted": "true"}),
    ("pod.metadata", "ownerReferences", [{"kind": "ReplicaSet", "name": "x"}]),
    ("pod.spec", "tolerations", [{"key": "trustgate.dev/trusted", "operator": "Exists"}]),
    ("pod.spec", "x-unknown", None),
    ("pod", "status", {"phase": "Pending"}),
    ("binding.metadata", "annotations", {"a": "b"}),
    ("binding", "x-unknown", 5),
]


@FUZZ
@given(reviews(), st.lists(st.sampled_from(IRRELEVANT), min_size=1, max_size=4))
def test_fields_the_decision_does_not_read_never_change_it(review: dict[str, Any], additions) -> None:
    uid = review["request"]["uid"]
    before = answer(*post(json.dumps(review).encode()), uid)

    for where, key, value in additions:
        target = _part(review, where)
        if target is not None:
            target[key] = copy.deepcopy(value)
            if where == "pod.spec" and review["request"].get("oldObject"):  # an ephemeral update: both versions
                review["request"]["oldObject"]["spec"][key] = copy.deepcopy(value)
    after = answer(*post(json.dumps(review).encode()), uid)

    assert after == before


def test_the_pool_covers_every_outcome() -> None:
    """The generators reach allowed, rejected and not-found decisions (else the properties prove little)."""
    outcomes = set()
    for pod in POD_POOL:
        for node in NODES:
            outcomes.add(expected(pod_create(_with_node(pod, node))))
            outcomes.add(expected(pod_binding(pod, node, user=SCHEDULER)))
    assert outcomes == {"allow", "reject", "not-found"}


@pytest.mark.parametrize("metadata", ["x", 5, [1]])
def test_a_pod_whose_metadata_is_not_an_object_is_refused_without_an_internal_error(metadata: Any) -> None:
    review = pod_create(_with_node(POD_POOL[1], TRUSTED))
    review["request"]["object"]["metadata"] = metadata

    decision = answer(*post(json.dumps(review).encode()), review["request"]["uid"])

    assert decision[0] is False and decision[1] == 403


@pytest.mark.parametrize("member", ["name", "namespace"])
def test_a_binding_whose_metadata_name_is_not_a_string_is_refused(member: str) -> None:
    review = pod_binding(POD_POOL[1], TRUSTED, uid="u-binding")
    assert requires_trust(review) and expected(review) == "allow"  # unbroken, it is admitted
    review["request"]["object"]["metadata"][member] = 5

    decision = answer(*post(json.dumps(review).encode()), "u-binding")

    assert decision[0] in ("refused", False)
