"""Bad input, health, readiness and metrics: clear 400s, well-formed rejections, never a traceback or an allow."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from devkit.factories import Issuer, pod_object
from trustgate.audit.sinks import AuditLog
from trustgate.core.snapshot import Snapshot, StaticCluster
from webhook.app import create_app

from .reviews import EXPIRED, TRUST_SELECTOR, TRUSTED, pod_binding, pod_create, snapshot

REJECTED_POD = pod_object(node_selector=TRUST_SELECTOR, node_name=EXPIRED)


def review_of(pod: Mapping[str, Any] = REJECTED_POD) -> dict[str, Any]:
    return pod_create(copy.deepcopy(pod))


def assert_bad_request(answer: Any, fragment: str) -> None:
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["kind"] == "Status" and body["code"] == 400 and body["reason"] == "BadRequest"
    assert fragment in body["message"]
    assert "Traceback" not in answer.get_data(as_text=True)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"AdmissionReview"', "not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (json.dumps(review_of() | {"apiVersion": "admission.k8s.io/v1beta1"}).encode(), "expected apiVersion"),
        (json.dumps(review_of() | {"kind": "Pod"}).encode(), "expected apiVersion admission.k8s.io/v1 kind"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), "has no request"),
        (json.dumps(review_of() | {"request": "x"}).encode(), "has no request"),
    ],
    ids=["malformed", "empty", "array", "string", "deep", "v1beta1", "kind", "no-request", "request-not-object"],
)
def test_unanswerable_bodies_get_a_clear_400(client: FlaskClient, body: bytes, fragment: str) -> None:
    assert_bad_request(client.post("/validate", data=body, content_type="application/json"), fragment)


@pytest.mark.parametrize("uid", [None, "", 42])
def test_missing_uid_is_400(client: FlaskClient, uid: Any) -> None:
    review = review_of()
    if uid is None:
        del review["request"]["uid"]
    else:
        review["request"]["uid"] = uid
    assert_bad_request(client.post("/validate", json=review), "no uid")


def test_body_over_the_size_limit_is_400(client: FlaskClient) -> None:
    review = review_of()
    review["request"]["object"]["metadata"]["annotations"] = {"big": "x" * (8 * 1024 * 1024)}
    assert_bad_request(client.post("/validate", json=review), "larger than 8388608 bytes")


def test_size_limit_is_configurable(issuer: Issuer, audit: AuditLog) -> None:
    client = create_app(StaticCluster(snapshot(issuer)), audit, max_body_bytes=1024).test_client()
    review = review_of()
    review["request"]["object"]["metadata"]["annotations"] = {"big": "x" * 2048}
    assert_bad_request(client.post("/validate", json=review), "larger than 1024 bytes")
    assert client.post("/validate", json=review_of()).status_code == 200


def test_unexpected_object_kind_is_rejected_not_allowed(client: FlaskClient) -> None:
    review = review_of()
    review["request"]["object"] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"template": REJECTED_POD},
    }
    answer = client.post("/validate", json=review)
    assert answer.status_code == 200
    response = answer.get_json()["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert "expected a Pod for pods CREATE, got Deployment" in response["status"]["message"]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda r: r["request"].update(object=None), "has no Pod object"),
        (lambda r: r["request"].update(object=["pod"]), "has no Pod object"),
        (lambda r: r["request"]["object"].update(spec="x"), "spec must be an object"),
        (lambda r: r["request"]["object"]["spec"].update(nodeName=7), "nodeName must be a string"),
        (lambda r: r["request"]["object"].update(apiVersion="v2"), "expected a v1 Pod"),
        (lambda r: r["request"].update(operation=5), "request.operation must be a string"),
        (lambda r: r["request"].update(dryRun="yes"), "dryRun must be a boolean"),
        (lambda r: r["request"]["kind"].update(kind="Binding"), "expected a Pod"),
        (lambda r: r["request"]["object"]["spec"].update(containers="nginx"), "spec.containers must be a list"),
        (
            lambda r: r["request"]["object"]["spec"].update(
                affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": "bad"}}
            ),
            "cannot determine the trust requirement",
        ),
    ],
    ids=[
        "no-object",
        "object-not-mapping",
        "spec",
        "node-name",
        "api-version",
        "operation",
        "dry-run",
        "request-kind",
        "containers",
        "affinity",
    ],
)
def test_malformed_requests_with_a_uid_are_rejected(client: FlaskClient, mutate: Any, fragment: str) -> None:
    review = review_of(pod_object(node_name=TRUSTED))  # a pod that would otherwise be allowed
    mutate(review)
    answer = client.post("/validate", json=review)
    assert answer.status_code == 200
    response = answer.get_json()["response"]
    assert response["allowed"] is False, response
    assert fragment in response["status"]["message"]
    assert response["status"]["message"].startswith("trustgate: ")


def test_binding_with_unexpected_kind_is_rejected(client: FlaskClient) -> None:
    review = pod_binding(pod_object(name="web"), TRUSTED)
    review["request"]["object"]["kind"] = "Pod"
    response = client.post("/validate", json=review).get_json()["response"]
    assert response["allowed"] is False and "expected a Binding" in response["status"]["message"]


def test_internal_error_fails_closed(issuer: Issuer, audit: AuditLog) -> None:
    class Exploding(StaticCluster):
        def snapshot(self) -> Snapshot:
            raise RuntimeError("cache corrupted")

    client = create_app(Exploding(snapshot(issuer)), audit).test_client()
    answer = client.post("/validate", json=review_of(pod_object(node_name=TRUSTED)))
    assert answer.status_code == 200
    response = answer.get_json()["response"]
    assert response["allowed"] is False
    assert "internal error" in response["status"]["message"] and "fail closed" in response["status"]["message"]
    assert client.get("/readyz").status_code == 503


def test_wrong_method_and_path_are_json_errors(client: FlaskClient) -> None:
    answer = client.get("/validate")
    assert answer.status_code == 405 and answer.get_json()["kind"] == "Status"
    answer = client.post("/convert", json=review_of())
    assert answer.status_code == 404 and answer.get_json()["code"] == 404


def test_unhandled_exception_is_a_json_500_without_traceback(issuer: Issuer, audit: AuditLog) -> None:
    app = create_app(StaticCluster(snapshot(issuer)), audit)

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("secret detail")

    answer = app.test_client().get("/boom")
    assert answer.status_code == 500
    text = answer.get_data(as_text=True)
    assert "Traceback" not in text and "secret detail" not in text
    assert answer.get_json()["reason"] == "InternalError"


# Health, readiness, metrics


def test_healthz_and_readyz(client: FlaskClient, issuer: Issuer, audit: AuditLog) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    unsynced = create_app(StaticCluster(snapshot(issuer, synced=False)), audit).test_client()
    assert unsynced.get("/healthz").status_code == 200
    answer = unsynced.get("/readyz")
    assert answer.status_code == 503 and "not synced" in answer.get_data(as_text=True)


def sample(text: str, name: str, **labels: str) -> float:
    """A sample's value from the text exposition, whatever the label order."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return 0.0


def test_metrics(client: FlaskClient) -> None:
    client.post("/validate", json=review_of())
    client.post("/validate", json=review_of(pod_object(node_name=TRUSTED)))
    client.post("/validate", json=pod_create(pod_object(labels={"tier": "sensitive"}, node_name=EXPIRED)))
    client.post("/validate", data=b"nope")
    text = client.get("/metrics").get_data(as_text=True)
    requests = "trustgate_webhook_admission_requests_total"
    assert sample(text, requests, operation="CREATE", resource="pods", decision="rejected") == 1
    assert sample(text, requests, operation="CREATE", resource="pods", decision="allowed") == 1
    assert sample(text, requests, operation="CREATE", resource="pods", decision="warned") == 1
    assert sample(text, requests, operation="other", resource="other", decision="invalid") == 1
    assert sample(text, "trustgate_webhook_admission_duration_seconds_count") == 4
    assert sample(text, "trustgate_webhook_violations_total", decision="rejected", reason="expired") == 1
    assert sample(text, "trustgate_webhook_violations_total", decision="warned", reason="expired") == 1
    assert sample(text, "trustgate_audit_records_total", decision="rejected", reason="expired") == 1
    assert sample(text, "trustgate_audit_write_failures_total", sink="jsonl") == 0
    assert "trustgate_webhook_violations_total" in text


def test_metric_labels_stay_bounded(client: FlaskClient) -> None:
    for i in range(20):
        review = review_of()
        review["request"]["operation"] = f"OP{i}"
        review["request"]["resource"]["resource"] = f"things{i}"
        client.post("/validate", json=review)
    text = client.get("/metrics").get_data(as_text=True)
    assert "OP1" not in text and "things1" not in text
    requests = "trustgate_webhook_admission_requests_total"
    assert sample(text, requests, operation="other", resource="other", decision="allowed") == 20


def test_main_refuses_a_bad_configuration(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from webhook import main as webhook_main

    for name in ("TRUSTGATE_ISSUER", "TRUSTGATE_JWKS", "TRUSTGATE_PEM"):
        monkeypatch.delenv(name, raising=False)
    assert webhook_main.main(["--tls-cert", "/nonexistent.crt", "--tls-key", "/nonexistent.key"]) == 2
    assert "trustgate-webhook:" in capsys.readouterr().err


def test_with_client_certificates_required_a_caller_without_one_gets_no_decision_and_no_record(
    issuer: Issuer, audit: AuditLog, audit_path: Path
) -> None:
    client = create_app(StaticCluster(snapshot(issuer)), audit, client_certificates=True).test_client()
    review = pod_create(pod_object(name="x" * 1000, node_selector=TRUST_SELECTOR, node_name=EXPIRED))
    for path in ("/validate", "/mutate"):
        answer = client.post(path, json=review)
        assert answer.status_code == 401 and answer.get_json()["reason"] == "Unauthorized"
    assert not audit_path.exists()
    assert client.get("/readyz").status_code == 200  # kubelet probes present no certificate
