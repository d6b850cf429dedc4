"""Every replica's records, from every place they are kept, read back as one list with each record once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trustgate.audit.apiserver import records_from_audit_event, records_from_audit_log
from trustgate.audit.reader import merge, parse_log_text, read_records
from trustgate.audit.record import AuditRecord
from trustgate.audit.sinks import JsonLinesSink
from trustgate.cli.main import main

from .test_audit import make


def audit_event(record: AuditRecord, webhook: str = "p-1a2b3c4d5e.pods.trustgate.dev", **extra: Any) -> dict:
    """An `audit.k8s.io/v1` Event as kube-apiserver logs a request that trustgate's webhook annotated."""
    annotations = {
        "trustgate-decision": record.decision,
        "trustgate-pod": f"{record.namespace}/{record.pod}",
        "trustgate-node": record.node,
        "trustgate-policy": record.policy,
        "trustgate-enforcement": record.enforcement,
        "trustgate-reasons": "; ".join(record.reasons),
        "trustgate-uid": record.uid,
        "trustgate-operation": record.operation,
        "trustgate-codes": ",".join(record.codes),
    }
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": "9b4c6a3e-1f0d-4e61-9b3e-0c3c1a7e2d11",
        "stage": "ResponseComplete",
        "requestURI": f"/api/v1/namespaces/{record.namespace}/pods",
        "verb": "create",
        "user": {"username": record.user, "groups": ["system:authenticated"]},
        "objectRef": {"resource": "pods", "namespace": record.namespace, "name": record.pod, "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "status": "Failure", "code": 403},
        "requestReceivedTimestamp": "2026-11-18T11:06:40.120000Z",
        "stageTimestamp": record.time.replace("Z", "000Z"),
        "annotations": {
            "authorization.k8s.io/decision": "allow",
            **{f"{webhook}/{k}": v for k, v in annotations.items()},
        }
        | extra,
    }


def test_a_record_is_found_in_a_cri_log_capture_among_other_lines(tmp_path: Path) -> None:
    record = make(pod="web", codes=["expired"])
    capture = tmp_path / "0.log"
    line = record.to_log_line()
    capture.write_text(
        "2026-11-18T11:06:40.1Z stderr F 2026-11-18 11:06:40 INFO webhook.app: rejected CREATE pods\n"
        f"2026-11-18T11:06:40.2Z stdout P {line[:40]}\n"
        f"2026-11-18T11:06:40.2Z stdout F {line[40:]}\n"
        '2026-11-18T11:06:40.3Z stdout F {"level":"info","msg":"not a record"}\n'
    )

    assert read_records(capture) == [record]


def test_a_record_is_found_in_a_docker_json_log_file(tmp_path: Path) -> None:
    record = make(pod="web")
    wrapped = json.dumps({"log": record.to_log_line() + "\n", "stream": "stdout", "time": record.time})
    (tmp_path / "container-json.log").write_text(wrapped + "\n")

    assert parse_log_text(wrapped) is None  # the wrapper itself is not a record...
    assert read_records(tmp_path / "container-json.log") == [record]  # ...what it logged is


def test_each_replicas_files_and_stdout_captures_are_one_list_with_each_record_once(tmp_path: Path) -> None:
    a1, a2 = make(30, pod="a1", replica="webhook-a"), make(20, pod="a2", replica="webhook-a")
    b1 = make(10, pod="b1", replica="webhook-b")
    (tmp_path / "volume").mkdir()
    for name, records in (("webhook-a.jsonl", [a1, a2]), ("webhook-b.jsonl", [b1])):
        for record in records:
            JsonLinesSink(tmp_path / "volume" / name).write(record)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "webhook-a.log").write_text("".join(r.to_log_line() + "\n" for r in (a1, a2)))  # a's stdout, too
    (logs / "webhook-b.log").write_text("starting\n" + b1.to_log_line() + "\n")

    found = read_records([tmp_path / "volume", logs])

    assert [r.pod for r in found] == ["b1", "a2", "a1"]


def test_an_api_server_audit_event_becomes_the_record_the_webhook_wrote() -> None:
    record = make(pod="web", codes=["expired"], user="system:serviceaccount:shop:deployer")

    (rebuilt,) = records_from_audit_event(audit_event(record))

    assert rebuilt == record


def test_an_audit_event_without_trustgate_annotations_holds_no_record() -> None:
    event = audit_event(make())
    event["annotations"] = {"authorization.k8s.io/decision": "allow"}

    assert records_from_audit_event(event) == []


def test_an_api_server_audit_log_is_read_with_filters_and_its_other_lines_skipped(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    old, new = make(7200, pod="old", namespace="shop"), make(5, pod="new", namespace="payments")
    unrelated = {"kind": "Event", "verb": "get", "annotations": {"authorization.k8s.io/decision": "allow"}}
    log.write_text("\n".join(json.dumps(e) for e in (unrelated, audit_event(old), audit_event(new))) + "\n")

    assert [r.pod for r in records_from_audit_log([log])] == ["new", "old"]
    assert [r.pod for r in records_from_audit_log([tmp_path], namespace="shop")] == ["old"]


def test_merge_keeps_the_first_sources_copy_of_each_record() -> None:
    full = make(pod="web", replica="webhook-a", codes=["expired"])
    rebuilt = make(pod="web", codes=["expired"])  # the same uid: the audit log's copy names no replica

    assert merge([full], [rebuilt]) == [full]
    assert merge([rebuilt], [full]) == [rebuilt]


def test_trustctl_audit_merges_replica_files_and_the_api_server_audit_log_without_duplicates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only_in_file = make(30, pod="written-then-killed", replica="webhook-b")  # its answer never reached the API
    both = make(20, pod="refused", replica="webhook-a")
    only_in_apiserver = make(10, pod="from-a-lost-volume")
    JsonLinesSink(tmp_path / "webhook-a.jsonl").write(both)
    JsonLinesSink(tmp_path / "webhook-b.jsonl").write(only_in_file)
    log = tmp_path / "kube-apiserver-audit.log"
    log.write_text("".join(json.dumps(audit_event(r)) + "\n" for r in (both, only_in_apiserver)))

    argv = ["audit", "--file", str(tmp_path / "webhook-a.jsonl"), "--file", str(tmp_path / "webhook-b.jsonl")]
    assert main([*argv, "--apiserver-audit-log", str(log), "--json"]) == 0

    found = [AuditRecord.from_json(line) for line in capsys.readouterr().out.splitlines()]
    assert [r.pod for r in found] == ["from-a-lost-volume", "refused", "written-then-killed"]
    assert found[1].replica == "webhook-a"  # the replica's own copy, not the one rebuilt from the audit log
