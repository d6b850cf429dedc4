"""From an admission decision to `trustctl audit`: records in the JSON-lines log and as Events."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from devkit.factories import Issuer, pod_object
from trustgate.audit.reader import records_from_events
from trustgate.audit.sinks import AuditLog, EventSink, JsonLinesSink, StreamSink
from trustgate.cli.main import main
from trustgate.core.snapshot import StaticCluster
from webhook.app import create_app

from .reviews import (
    EXPIRED,
    KERNEL_UNTRUSTED,
    NO_REPORT,
    TRUST_SELECTOR,
    WARN_POLICY,
    pod_binding,
    pod_create,
    snapshot,
)


def trustctl_audit(argv: list[str]) -> int:
    return main(["audit", *argv])


class FakeEvents:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def create_namespaced_event(self, namespace: str, body: dict[str, Any]) -> None:
        assert body["metadata"]["namespace"] == namespace
        self.created.append(body)

    def list_event_for_all_namespaces(self, **kwargs: Any) -> dict[str, Any]:
        label = kwargs.get("label_selector")
        items = [e for e in self.created if label in e["metadata"]["labels"]]
        return {"items": items, "metadata": {}}


def test_rejections_and_warnings_reach_trustctl_audit(
    issuer: Issuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    events = FakeEvents()
    event_sink = EventSink(events)
    audit = AuditLog([JsonLinesSink(path), event_sink])
    bound = pod_object(name="vault", node_selector=TRUST_SELECTOR)
    client = create_app(StaticCluster(snapshot(issuer, policies=[WARN_POLICY]), pods=[bound]), audit).test_client()

    client.post("/validate", json=pod_create(pod_object(name="web", node_selector=TRUST_SELECTOR, node_name=EXPIRED)))
    client.post("/validate", json=pod_binding(bound, NO_REPORT))
    client.post("/validate", json=pod_create(pod_object(name="w", labels={"tier": "sensitive"}, node_name=EXPIRED)))
    client.post(
        "/validate",
        json=pod_create(pod_object(name="dry", node_selector=TRUST_SELECTOR, node_name=EXPIRED), dry_run=True),
    )
    client.post("/validate", json=pod_create(pod_object(name="ok", node_name=KERNEL_UNTRUSTED)))

    assert trustctl_audit(["--file", str(path), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    found = [json.loads(line) for line in lines]
    assert [(r["pod"], r["decision"]) for r in found] == [("w", "warned"), ("vault", "rejected"), ("web", "rejected")]
    assert found[1]["user"] == "system:kube-scheduler" and found[1]["node"] == NO_REPORT

    assert trustctl_audit(["--file", str(path), "--decision", "rejected", "--node", NO_REPORT]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["TIME", "DECISION", "POD", "NODE"]
    assert len(table) == 2 and "default/vault" in table[1] and "no trust report" in table[1]

    assert event_sink.flush()
    # the rejected CREATE left no pod: its Event points at the namespace; the bound pod and the warned one exist
    assert [e["involvedObject"]["kind"] for e in events.created] == ["Namespace", "Pod", "Pod"]
    assert events.created[1]["involvedObject"]["uid"] == "uid-default-vault"
    assert {e["reason"] for e in events.created} == {"TrustPolicyViolation"}
    assert [r.pod for r in records_from_events(events)] == ["w", "vault", "web"]
    audit.close()


# Records that cannot be kept


class Broken:
    """A durable sink whose disk is full."""

    name = "jsonl"

    def write(self, record: Any) -> None:
        raise OSError(28, "No space left on device")


def warned_pod() -> dict[str, Any]:
    return pod_create(pod_object(name="w", labels={"tier": "sensitive"}, node_name=EXPIRED))


def test_a_warn_admission_that_no_durable_sink_can_record_is_refused(issuer: Issuer) -> None:
    events = FakeEvents()
    event_sink = EventSink(events)
    audit = AuditLog([Broken(), event_sink])
    client = create_app(StaticCluster(snapshot(issuer, policies=[WARN_POLICY])), audit).test_client()

    response = client.post("/validate", json=warned_pod()).get_json()["response"]

    assert response["allowed"] is False and response["status"]["code"] == 503
    assert "cannot be recorded" in response["status"]["message"]
    assert response["auditAnnotations"]["trustgate-decision"] == "rejected"
    assert "audit_unavailable" in response["auditAnnotations"]["trustgate-codes"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'trustgate_audit_unrecorded_total{decision="warned"} 1.0' in metrics
    assert 'trustgate_audit_unrecorded_total{decision="rejected"} 1.0' in metrics  # the refusal, on Events only
    assert 'trustgate_audit_write_failures_total{sink="jsonl"} 2.0' in metrics
    assert event_sink.flush()
    (event,) = events.created  # people still see why: an Event of the refusal, none of the admission
    assert event["metadata"]["labels"]["trustgate.dev/decision"] == "rejected"
    assert "cannot be recorded" in event["message"]
    audit.close()


def test_with_on_audit_failure_admit_an_unrecorded_warn_admission_is_admitted_and_counted(issuer: Issuer) -> None:
    audit = AuditLog([Broken()])
    cluster = StaticCluster(snapshot(issuer, policies=[WARN_POLICY]))
    client = create_app(cluster, audit, refuse_unrecorded=False).test_client()

    response = client.post("/validate", json=warned_pod()).get_json()["response"]

    assert response["allowed"] is True and response["warnings"]
    assert audit.registry.get_sample_value("trustgate_audit_unrecorded_total", {"decision": "warned"}) == 1


def test_a_warn_admission_recorded_on_stdout_alone_is_admitted(
    issuer: Issuer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    audit = AuditLog([StreamSink(), Broken()], replica="webhook-7d9f-x2")
    client = create_app(StaticCluster(snapshot(issuer, policies=[WARN_POLICY])), audit).test_client()

    response = client.post("/validate", json=warned_pod()).get_json()["response"]

    assert response["allowed"] is True
    (line,) = capfd.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["trustgate_audit"] == "v1" and record["pod"] == "w" and record["decision"] == "warned"
    assert record["replica"] == "webhook-7d9f-x2" and record["uid"] == response["uid"]


def test_a_rejection_that_cannot_be_recorded_stays_a_rejection_and_is_counted(issuer: Issuer) -> None:
    audit = AuditLog([Broken()])
    client = create_app(StaticCluster(snapshot(issuer)), audit).test_client()
    review = pod_create(pod_object(name="web", node_selector=TRUST_SELECTOR, node_name=EXPIRED))

    response = client.post("/validate", json=review).get_json()["response"]

    assert response["allowed"] is False and response["status"]["code"] == 403
    assert audit.registry.get_sample_value("trustgate_audit_unrecorded_total", {"decision": "rejected"}) == 1


def test_the_audit_annotations_carry_the_records_identity(issuer: Issuer) -> None:
    client = create_app(StaticCluster(snapshot(issuer)), AuditLog([StreamSink(os.open(os.devnull, os.O_WRONLY))]))
    review = pod_create(pod_object(name="web", node_selector=TRUST_SELECTOR, node_name=NO_REPORT))

    annotations = client.test_client().post("/validate", json=review).get_json()["response"]["auditAnnotations"]

    assert annotations["trustgate-uid"] == review["request"]["uid"]
    assert annotations["trustgate-operation"] == "CREATE"
    assert annotations["trustgate-codes"] == "no_report"
