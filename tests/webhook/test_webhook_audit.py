"""From an admission decision to `trustctl audit`: records in the JSON-lines log and as Events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devkit.factories import Issuer, pod_object
from trustgate.audit.reader import records_from_events
from trustgate.audit.sinks import AuditLog, EventSink, JsonLinesSink
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
        items = [e for e in self.created if kwargs.get("field_selector") == f"reason={e['reason']}"]
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
