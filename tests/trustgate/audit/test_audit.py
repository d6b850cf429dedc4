"""Audit records: JSON-lines and Event sinks, counters, reading back and `trustctl audit`."""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import trustgate.cli.main as cli_module
from trustgate.audit.reader import read_records, record_from_event, records_from_events
from trustgate.audit.record import (
    DECISION_LABEL,
    RECORD_ANNOTATION,
    AuditRecord,
    format_rfc3339,
)
from trustgate.audit.sinks import AuditLog, EventSink, JsonLinesSink
from trustgate.cli.main import build_parser, main
from trustgate.cli.tables import audit_table

T0 = 1_795_000_000.0


def make(seconds_ago: float = 0, now: float = T0, **overrides: Any) -> AuditRecord:
    """A record; its uid (its identity) follows from its pod and time unless given."""
    values: dict[str, Any] = {
        "time": format_rfc3339(now - seconds_ago),
        "operation": "CREATE",
        "namespace": "default",
        "pod": "web",
        "node": "worker-3",
        "user": "alice",
        "policy": "TrustPolicy pci",
        "enforcement": "Enforce",
        "decision": "rejected",
        "reasons": ["trust report expired at 2026-11-26T10:00:00Z"],
        "pod_uid": "",
    }
    values |= overrides
    values.setdefault("uid", str(uuid.uuid5(uuid.NAMESPACE_URL, f"{values['pod']}@{values['time']}")))
    return AuditRecord(**values)


def write_all(path: Path, records: list[AuditRecord]) -> None:
    sink = JsonLinesSink(path)
    for record in records:
        sink.write(record)


# Records and the JSON-lines sink


def test_record_round_trips_and_is_frozen() -> None:
    record = make()
    assert AuditRecord.from_json(record.to_json()) == record
    assert record.time == "2026-11-18T11:06:40.000Z"
    data = json.loads(record.to_json())
    assert set(data) >= {"time", "uid", "operation", "namespace", "pod", "node", "user", "policy"}
    assert set(data) >= {"enforcement", "decision", "reasons"}
    assert "dry_run" not in data
    with pytest.raises(AttributeError):
        record.pod = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "line",
    [
        '{"time": 5, "decision": "rejected"}',
        '{"decision": "rejected"}',
        '{"time": "x", "reasons": "r", "decision": "w"}',
        "[1]",
    ],
)
def test_record_from_bad_json_raises_value_error(line: str) -> None:
    with pytest.raises(ValueError):
        AuditRecord.from_json(line)


def test_json_lines_sink_appends_one_line_per_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text(make(pod="existing").to_json() + "\n")
    write_all(path, [make(pod="a"), make(pod="b")])
    lines = path.read_text().splitlines()
    assert [json.loads(line)["pod"] for line in lines] == ["existing", "a", "b"]


def test_json_lines_sink_is_thread_safe(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonLinesSink(path)
    long_reason = "r" * 3000

    def worker(n: int) -> None:
        for i in range(50):
            sink.write(make(pod=f"p{n}-{i}", reasons=[long_reason]))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 400
    assert len({AuditRecord.from_json(line).pod for line in lines}) == 400


def test_json_lines_sink_raises_in_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        JsonLinesSink(tmp_path / "nope" / "audit.jsonl").write(make())


# AuditLog: fan-out, counters, failures


class Recording:
    name = "memory"

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def write(self, record: AuditRecord) -> None:
        self.records.append(record)


class Failing:
    name = "broken"

    def write(self, record: AuditRecord) -> None:
        raise RuntimeError("disk on fire")


def test_audit_log_fans_out_and_survives_a_failing_sink(tmp_path: Path) -> None:
    memory = Recording()
    log = AuditLog([Failing(), JsonLinesSink(tmp_path / "missing" / "a.jsonl"), memory])
    log.record(make())  # never raises
    assert memory.records == [make()]
    assert log.failures("broken") == 1 and log.failures("jsonl") == 1 and log.failures("memory") == 0


def test_audit_log_counts_by_decision_and_reason_code() -> None:
    registry = CollectorRegistry()
    log = AuditLog([], registry=registry)
    log.record(
        make(
            reasons=["level kernel not trusted", "level runtime not trusted", "no trust report"],
            codes=["level", "no_report"],
        )
    )
    log.record(make(decision="warned", reasons=["asset tag country=EU not in [US]"], codes=["asset_tag"]))

    def count(decision: str, reason: str) -> float | None:
        return registry.get_sample_value("trustgate_audit_records_total", {"decision": decision, "reason": reason})

    assert count("rejected", "level") == 1  # once per record, not per reason
    assert count("rejected", "no_report") == 1
    assert count("warned", "asset_tag") == 1
    assert count("audited", "expired") == 0  # pre-declared: the label set is bounded and visible


# Reading records back


def test_read_records_newest_first_with_filters(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_all(
        path,
        [
            make(7200, pod="old"),
            make(60, pod="recent", namespace="payments", node="worker-1"),
            make(10, pod="newest", decision="warned", enforcement="Warn"),
        ],
    )
    with path.open("a") as handle:
        handle.write("not json\n\n{}\n")
    assert [r.pod for r in read_records(path)] == ["newest", "recent", "old"]
    assert [r.pod for r in read_records(path, since=3600, now=T0)] == ["newest", "recent"]
    assert [r.pod for r in read_records(path, namespace="payments")] == ["recent"]
    assert [r.pod for r in read_records(path, node="worker-3")] == ["newest", "old"]
    assert [r.pod for r in read_records(path, decision="warned")] == ["newest"]
    assert read_records(path, decision="audited") == []


def test_format_table() -> None:
    table = audit_table([make(pod="web"), make(pod="", namespace="ns", decision="warned", reasons=["a", "b"])])
    lines = table.splitlines()
    assert lines[0].split() == ["TIME", "DECISION", "POD", "NODE", "POLICY", "USER", "REASONS"]
    assert "2026-11-18T11:06:40Z" in lines[1] and "default/web" in lines[1] and "rejected" in lines[1]
    assert lines[2].rstrip().endswith("a; b")
    assert lines[1].index("worker-3") == lines[0].index("NODE")


# EventSink and reading Events back


class FakeCoreV1:
    """Just enough of CoreV1Api: creates events in memory and lists them back in pages."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.delay, self.fail = delay, fail
        self.lists: list[tuple[str | None, dict[str, Any]]] = []

    def create_namespaced_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.delay)
        if self.fail:
            raise ConnectionError("apiserver unreachable")
        self.events.append((namespace, body))
        return body

    def _page(self, items: list[dict[str, Any]], kwargs: dict[str, Any]) -> dict[str, Any]:
        assert kwargs["label_selector"] == DECISION_LABEL
        start = int(kwargs.get("_continue") or 0)
        end = start + kwargs["limit"]
        return {"items": items[start:end], "metadata": {"continue": str(end) if end < len(items) else ""}}

    def list_event_for_all_namespaces(self, **kwargs: Any) -> dict[str, Any]:
        self.lists.append((None, kwargs))
        return self._page([body for _, body in self.events], kwargs)

    def list_namespaced_event(self, namespace: str, **kwargs: Any) -> dict[str, Any]:
        self.lists.append((namespace, kwargs))
        return self._page([body for ns, body in self.events if ns == namespace], kwargs)


def test_event_sink_creates_a_warning_event_for_the_pod() -> None:
    api = FakeCoreV1()
    sink = EventSink(api)
    log = AuditLog([sink])
    log.record(make(pod_uid="0b6f0d1c-uid"))
    assert sink.flush()
    [(namespace, event)] = api.events
    assert namespace == "default"
    assert event["type"] == "Warning" and event["reason"] == "TrustPolicyViolation"
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "default",
        "name": "web",
        "uid": "0b6f0d1c-uid",
    }
    assert "worker-3" in event["message"] and "trust report expired" in event["message"]
    assert event["metadata"]["name"].startswith("web.")
    assert AuditRecord.from_json(event["metadata"]["annotations"][RECORD_ANNOTATION]) == make(pod_uid="0b6f0d1c-uid")
    log.close()


def test_event_sink_points_at_the_namespace_when_the_pod_does_not_exist() -> None:
    api = FakeCoreV1()
    sink = EventSink(api)
    sink.write(make(pod="web-", pod_uid="", namespace="payments"))
    assert sink.flush()
    [(_, event)] = api.events
    assert event["involvedObject"]["kind"] == "Namespace"
    assert event["involvedObject"]["name"] == "payments"
    assert event["metadata"]["namespace"] == "payments"
    name = event["metadata"]["name"]
    assert name.startswith("web.") and ".." not in name and "-." not in name
    sink.close()


def test_event_sink_runs_off_the_request_path() -> None:
    api = FakeCoreV1(delay=0.2)
    sink = EventSink(api)
    started = time.perf_counter()
    for _ in range(3):
        sink.write(make())
    assert time.perf_counter() - started < 0.1
    assert sink.flush(timeout=5)
    assert len(api.events) == 3
    sink.close()


def test_event_sink_failures_are_counted_not_raised() -> None:
    sink = EventSink(FakeCoreV1(fail=True))
    log = AuditLog([sink])
    log.record(make())
    log.record(make())
    assert sink.flush()
    assert log.failures("event") == 2
    log.close()


def test_a_full_event_queue_summarizes_instead_of_dropping() -> None:
    gate = threading.Event()

    class Stuck(FakeCoreV1):
        def create_namespaced_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
            gate.wait(5)
            return super().create_namespaced_event(namespace, body)

    api = Stuck()
    sink = EventSink(api, max_queue=2)
    log = AuditLog([sink])
    for _ in range(6):
        log.record(make())
    gate.set()
    assert sink.flush()
    deadline = time.monotonic() + 5
    while sum(e["count"] for _, e in api.events) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)  # the summary follows the queued records
    assert sum(event["count"] for _, event in api.events) == 6  # every record is in an Event, one or summed
    assert log.failures("event") == 0
    summarized = log.registry.get_sample_value("trustgate_audit_events_summarized_total")
    assert summarized is not None and summarized >= 3
    log.close()


def test_a_noisy_namespace_cannot_starve_the_events_of_another() -> None:
    api = FakeCoreV1(delay=0.002)
    sink = EventSink(api, burst=5, refill=60)
    for index in range(500):
        sink.write(make(pod=f"probe-{index}", namespace="noisy"))
    sink.write(make(pod="genuine", namespace="payments"))
    assert sink.flush(timeout=10)
    deadline = time.monotonic() + 5
    while len(api.events) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for namespace, event in api.events:
        by_namespace.setdefault(namespace, []).append(event)
    assert [e["involvedObject"]["name"] for e in by_namespace["payments"]] == ["payments"]
    assert len(by_namespace["noisy"]) <= 5  # its burst; the summary waits for a token
    sink.close()


def test_every_field_of_a_record_is_capped() -> None:
    huge = make(pod="p" * 1_000_000, user="u" * 10_000, reasons=["r" * 5000] * 100, node="n" * 1000)
    capped = huge.capped()
    assert len(capped.pod) == 253 and capped.pod.endswith("...")
    assert len(capped.user) <= 256 and len(capped.node) <= 253
    assert len(capped.reasons) == 16 and all(len(r) <= 512 for r in capped.reasons)
    assert capped.reasons[-1] == "... and 85 more reasons"
    assert len(capped.to_json()) < 16 * 1024


def test_the_audit_log_writes_capped_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog([JsonLinesSink(path)]).record(make(pod="p" * 1_000_000))
    assert len(path.read_bytes()) < 16 * 1024


def test_records_from_events_round_trip_with_paging_and_filters() -> None:
    api = FakeCoreV1()
    sink = EventSink(api)
    for i in range(7):
        sink.write(make(600 - i, now=time.time(), pod=f"p{i}", namespace="payments" if i % 2 else "default"))
    sink.write(make(7200, now=time.time(), pod="old"))
    assert sink.flush()
    sink.close()
    found = records_from_events(api, page_size=3)
    assert [r.pod for r in found] == ["p6", "p5", "p4", "p3", "p2", "p1", "p0", "old"]
    # one list of every Event that carries a record (violations, evictions, key releases), in three pages
    assert len(api.lists) == 3 and api.lists[1][1]["_continue"] == "3"
    assert {call[1]["label_selector"] for call in api.lists} == {DECISION_LABEL}
    assert [r.pod for r in records_from_events(api, namespace="payments")] == ["p5", "p3", "p1"]
    assert api.lists[-1][0] == "payments"
    assert len(records_from_events(api, since=3600)) == 7
    assert records_from_events(api, decision="warned") == []


def test_record_from_an_event_without_annotation() -> None:
    event = SimpleNamespace(
        metadata=SimpleNamespace(namespace="default", annotations=None, labels={"trustgate.dev/decision": "warned"}),
        involved_object=SimpleNamespace(kind="Pod", name="web", uid="u1"),
        message="trustgate admitted with a warning ...",
        last_timestamp=None,
        event_time=None,
        first_timestamp="2026-11-26T10:00:00Z",
    )
    record = record_from_event(event)
    assert record is not None
    assert (record.namespace, record.pod, record.decision, record.pod_uid) == ("default", "web", "warned", "u1")
    assert record.time == "2026-11-26T10:00:00Z"


# trustctl audit


def parser() -> argparse.ArgumentParser:
    return build_parser()


def run(argv: list[str]) -> int:
    return main(argv)


def test_audit_command_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    now = time.time()
    write_all(path, [make(7200, now=now, pod="old"), make(5, now=now, pod="new", node="worker-9")])
    assert run(["audit", "--file", str(path), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [AuditRecord.from_json(line).pod for line in lines] == ["new", "old"]
    assert run(["audit", "--file", str(path), "--json", "--since", "1h"]) == 0
    assert [json.loads(line)["pod"] for line in capsys.readouterr().out.splitlines()] == ["new"]
    assert run(["audit", "--file", str(path), "--json", "--node", "worker-9", "--decision", "rejected"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_audit_command_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    write_all(path, [make(pod="web")])
    assert run(["audit", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("TIME") and "default/web" in out
    assert run(["audit", "--file", str(path), "--namespace", "other"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no audit records" in captured.err


def test_audit_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["audit", "--file", str(tmp_path / "absent.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser().parse_args(["audit", "--decision", "maybe"])
    with pytest.raises(SystemExit):
        parser().parse_args(["audit", "--since", "soon"])


def test_audit_command_reads_events_with_kubeconfig(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api = FakeCoreV1()
    sink = EventSink(api)
    sink.write(make(now=time.time(), pod="from-event"))
    assert sink.flush()
    sink.close()
    seen: list[str | None] = []

    def fake_api(kubeconfig: str | None) -> FakeCoreV1:
        seen.append(kubeconfig)
        return api

    monkeypatch.setattr(cli_module, "_events_api", fake_api)
    assert run(["audit", "--kubeconfig", "/tmp/kc", "--json"]) == 0
    assert seen == ["/tmp/kc"]
    assert json.loads(capsys.readouterr().out)["pod"] == "from-event"


def test_records_from_events_reads_client_models() -> None:
    """The kubernetes client returns models (snake_case attributes), not dicts."""
    from kubernetes import client

    sink = EventSink(FakeCoreV1())
    record = make(now=time.time(), pod="modelled", pod_uid="u-1")
    event = client.CoreV1Event.model_validate(sink.event_body(record))
    pages = [
        client.CoreV1EventList(items=[event], metadata=client.V1ListMeta.model_validate({"continue": "next"})),
        client.CoreV1EventList(items=[], metadata=client.V1ListMeta()),
    ]

    class Api:
        def list_event_for_all_namespaces(self, **kwargs: Any) -> Any:
            assert kwargs["label_selector"] == DECISION_LABEL
            return pages.pop(0)

    assert records_from_events(Api()) == [record]
    assert pages == []
