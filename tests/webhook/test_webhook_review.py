"""Decoding AdmissionReviews and encoding responses; the decision module without HTTP."""

from __future__ import annotations

import json

import pytest

from devkit.factories import Issuer, pod_object
from trustgate.core.policy import Enforcement, Failure, Source
from trustgate.core.reasons import Code, Reason
from trustgate.core.snapshot import StaticCluster
from webhook.decide import ALLOW, decide, describe_failures
from webhook.review import ReviewError, annotation_key, decode_review, encode_response, truncate

from .reviews import EXPIRED, TRUST_SELECTOR, TRUSTED, pod_binding, pod_create, snapshot


def test_decode_reads_every_request_field() -> None:
    review = pod_binding(pod_object(name="web"), TRUSTED, dry_run=True)
    request = decode_review(json.dumps(review).encode())
    assert request.uid == review["request"]["uid"]
    assert (request.kind.kind, request.resource.resource, request.sub_resource) == ("Binding", "pods", "binding")
    assert request.request_kind is not None and request.request_kind.kind == "Binding"
    assert request.request_resource is not None and request.request_sub_resource == "binding"
    assert (request.name, request.namespace, request.operation) == ("web", "default", "CREATE")
    assert request.username == "system:kube-scheduler"
    assert request.object["target"]["name"] == TRUSTED
    assert request.dry_run is True and request.options["kind"] == "CreateOptions"
    assert request.resource_path == "pods/binding" and request.problems == ()


def test_decode_rejects_what_cannot_be_answered() -> None:
    with pytest.raises(ReviewError, match="no uid"):
        decode_review(b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}')


def test_encode_allow_is_minimal() -> None:
    assert encode_response("u1", True) == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "u1", "allowed": True},
    }


def test_encode_denial_warnings_and_annotations() -> None:
    body = encode_response(
        "u2",
        False,
        code=403,
        message="trustgate: no",
        warnings=["w" * 300, "fine\nwith a newline"],
        annotations={"trustgate/decision": "rejected", "trustgate-reasons": "r" * 5000},
    )
    response = body["response"]
    assert response["status"] == {"code": 403, "message": "trustgate: no"}
    assert [len(w) for w in response["warnings"]] == [119, len("fine with a newline")]
    assert response["warnings"][0].endswith("...") and "\n" not in response["warnings"][1]
    assert set(response["auditAnnotations"]) == {"trustgate-decision", "trustgate-reasons"}
    assert len(response["auditAnnotations"]["trustgate-reasons"]) == 1024


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("short", 119, "short"), ("x" * 120, 119, "x" * 116 + "..."), ("é" * 200, 10, "é" * 7 + "...")],
)
def test_truncate(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [("trustgate-node", "trustgate-node"), ("a/b", "a-b"), ("-x-", "x"), ("/", "trustgate"), ("k" * 80, "k" * 63)],
)
def test_annotation_keys(key: str, expected: str) -> None:
    assert annotation_key(key) == expected


def source(name: str) -> Source:
    return Source(name=name, enforcement=Enforcement.ENFORCE, levels=frozenset())


def reasons(*texts: str) -> tuple[Reason, ...]:
    return tuple(Reason(Code.LEVEL, text) for text in texts)


def test_describe_failures_groups_sources() -> None:
    affinity, pci = source("node affinity"), source("TrustPolicy pci")
    text = describe_failures(
        [
            Failure(affinity, reasons("trust report expired at T")),
            Failure(pci, reasons("trust report expired at T", "level kernel not trusted", "level boot not trusted")),
        ]
    )
    assert text == (
        "trust report expired at T (node affinity, TrustPolicy pci); "
        "level kernel not trusted; level boot not trusted (TrustPolicy pci)"
    )


def test_decide_is_pure_over_a_snapshot(issuer: Issuer) -> None:
    snap = snapshot(issuer)
    cluster = StaticCluster(snap)
    trusted = decode_review(json.dumps(pod_create(pod_object(node_selector=TRUST_SELECTOR, node_name=TRUSTED))))
    assert decide(snap, trusted, cluster) is ALLOW
    expired = decode_review(json.dumps(pod_create(pod_object(node_selector=TRUST_SELECTOR, node_name=EXPIRED))))
    decision = decide(snap, expired, cluster)
    assert not decision.allowed and decision.code == 403 and decision.outcome == "rejected"
    assert decision.violation is not None and decision.violation.pod_uid == ""  # a rejected CREATE leaves no pod
    # with a clock before the expiry, the same report passes
    report = snap.nodes[EXPIRED].report
    assert report is not None
    assert decide(snap, expired, cluster, now=report.expires_at - 60) is ALLOW
