"""Audit of rejected pods and policy violations.

Every rejection or violation found at admission becomes one `AuditRecord`. `AuditLog` fans a
record out to its sinks (a JSON-lines file, Kubernetes Events) and counts it in Prometheus.
Recording never raises into the decision: a sink that fails is logged and counted, and a
rejection stays a rejection.

`trustctl audit` reads the records back from the JSON-lines file (`--file`) or from the Events
(`--kubeconfig`). Each Event carries its full record as JSON in the annotation
`trustgate.dev/audit-record`, so nothing is parsed back out of the human-readable message.
Events expire (the apiserver's `--event-ttl`, 1 h by default); the file is the durable record.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from trustgate import table
from trustgate.core.reasons import CATEGORIES, reason_category

log = logging.getLogger(__name__)

DECISION_REJECTED = "rejected"
DECISION_WARNED = "warned"
DECISION_AUDITED = "audited"
DECISIONS = (DECISION_REJECTED, DECISION_WARNED, DECISION_AUDITED)

EVENT_REASON = "TrustPolicyViolation"
RECORD_ANNOTATION = "trustgate.dev/audit-record"
EVENT_COMPONENT = "trustgate-webhook"
MAX_EVENT_MESSAGE = 1024

def format_rfc3339(timestamp: float) -> str:
    """`2026-11-26T10:00:00.123Z` (UTC, milliseconds)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class AuditRecord:
    """One rejection or policy violation. `time` is RFC 3339 UTC; dry runs are never recorded."""

    time: str
    uid: str
    operation: str
    namespace: str
    pod: str
    node: str
    user: str
    policy: str
    enforcement: str
    decision: str  # rejected | warned | audited
    reasons: list[str] = field(default_factory=list)
    pod_uid: str = ""  # the pod's uid when it exists (Events point at the pod then)

    @property
    def timestamp(self) -> float:
        try:
            return parse_rfc3339(self.time)
        except ValueError:
            return 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        """A record from its JSON form; raises ValueError when it is not one."""
        if not isinstance(data, Mapping):
            raise ValueError("audit record must be a JSON object")
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = data.get(f.name)
            if f.name == "reasons":
                if value is None:
                    value = []
                if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
                    raise ValueError("audit record reasons must be a list of strings")
                values[f.name] = list(value)
            elif value is None:
                if f.name in ("time", "decision"):
                    raise ValueError(f"audit record has no {f.name}")
                values[f.name] = ""
            elif isinstance(value, str):
                values[f.name] = value
            else:
                raise ValueError(f"audit record {f.name} must be a string")
        return cls(**values)

    @classmethod
    def from_json(cls, line: str) -> AuditRecord:
        return cls.from_dict(json.loads(line))


class Sink(Protocol):
    name: str

    def write(self, record: AuditRecord) -> None: ...


FailureHandler = Callable[[str, BaseException], None]


class JsonLinesSink:
    """Appends one JSON line per record. Each line is a single `write(2)` on an `O_APPEND` descriptor,
    so lines from several threads or gunicorn workers never interleave; the file is opened per record,
    which also follows log rotation. Raises `OSError` on failure (the `AuditLog` logs and counts it)."""

    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(self, record: AuditRecord) -> None:
        line = (record.to_json() + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"short write to {self.path} ({written} of {len(line)} bytes)")
            finally:
                os.close(fd)


class EventSink:
    """Creates a Kubernetes Event (type Warning, reason `TrustPolicyViolation`) per record.

    The involved object is the pod when it exists (its uid is known), otherwise the namespace.
    Events are sent by a background thread from a bounded queue, off the admission request's
    path; a full queue or a failed call is logged and counted, never raised.
    """

    name = "event"

    def __init__(self, core_v1_api: Any, max_queue: int = 1000, instance: str | None = None) -> None:
        self.api = core_v1_api
        self.instance = instance or socket.gethostname()
        self.on_failure: FailureHandler | None = None
        self._queue: queue.Queue[AuditRecord | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._pid = os.getpid()

    def attach(self, on_failure: FailureHandler) -> None:
        self.on_failure = on_failure

    def write(self, record: AuditRecord) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._failed(OverflowError("event queue full, record dropped"))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record has been sent (or failed). True when drained in time."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 5.0) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            self.flush(timeout)
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                return
            thread.join(timeout)
        self._thread = None

    def event_body(self, record: AuditRecord) -> dict[str, Any]:
        namespace = record.namespace or "default"
        if record.pod and record.pod_uid:
            involved = {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": record.pod}
            involved["uid"] = record.pod_uid
        else:
            # Namespaced like the Event so it lists with `kubectl get events -n NS` and passes validation.
            involved = {"apiVersion": "v1", "kind": "Namespace", "namespace": namespace, "name": namespace}
        stamp = record.time.split(".")[0] + "Z" if "." in record.time else record.time
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": _event_name(record.pod or namespace),
                "namespace": namespace,
                "annotations": {RECORD_ANNOTATION: record.to_json()},
                "labels": {"app.kubernetes.io/managed-by": "trustgate", "trustgate.dev/decision": record.decision},
            },
            "involvedObject": involved,
            "reason": EVENT_REASON,
            "type": "Warning",
            "message": event_message(record),
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "source": {"component": EVENT_COMPONENT},
        }

    def send(self, record: AuditRecord) -> None:
        body = self.event_body(record)
        self.api.create_namespaced_event(body["metadata"]["namespace"], body)

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # forked (gunicorn preload): threads do not survive a fork
            self._pid, self._thread = os.getpid(), None
            self._queue = queue.Queue(maxsize=self._queue.maxsize)
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="trustgate-events", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            try:
                if record is None:
                    return
                self.send(record)
            except Exception as error:
                self._failed(error)
            finally:
                self._queue.task_done()

    def _failed(self, error: BaseException) -> None:
        if self.on_failure is not None:
            self.on_failure(self.name, error)
        else:
            log.error("audit sink %s failed: %s", self.name, error)


def event_message(record: AuditRecord) -> str:
    what = {DECISION_REJECTED: "rejected", DECISION_WARNED: "admitted with a warning"}.get(
        record.decision, "admitted, violation recorded"
    )
    pod = f"{record.namespace}/{record.pod}" if record.pod else record.namespace
    where = f" on node {record.node}" if record.node else ""
    policy = f" [{record.policy}]" if record.policy else ""
    message = f"trustgate {what} {record.operation.lower() or 'request'} of pod {pod}{where}{policy}: "
    message += "; ".join(record.reasons)
    return message if len(message) <= MAX_EVENT_MESSAGE else message[: MAX_EVENT_MESSAGE - 3] + "..."


def _event_name(base: str) -> str:
    """`<object>.<hex nanoseconds>`, like client-go's recorder, made a valid DNS subdomain."""
    cleaned = "".join(c if c.isalnum() or c in "-." else "-" for c in base.lower()).strip("-.")[:200]
    return f"{cleaned or 'trustgate'}.{time.time_ns():x}"


class AuditLog:
    """Fans each record out to the sinks and counts it; `record` never raises."""

    def __init__(self, sinks: Iterable[Sink] = (), registry: CollectorRegistry | None = None) -> None:
        self.sinks: tuple[Sink, ...] = tuple(sinks)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.records_total = Counter(
            "trustgate_audit_records_total",
            "Audit records of rejections and policy violations, by decision and reason category",
            ["decision", "reason"],
            registry=self.registry,
        )
        self.write_failures_total = Counter(
            "trustgate_audit_write_failures_total",
            "Audit records that a sink failed to write",
            ["sink"],
            registry=self.registry,
        )
        for decision in DECISIONS:
            for category in CATEGORIES:
                self.records_total.labels(decision, category)
        for sink in self.sinks:
            self.write_failures_total.labels(sink.name)
            attach = getattr(sink, "attach", None)
            if callable(attach):
                attach(self._sink_failed)

    def record(self, record: AuditRecord) -> None:
        try:
            for category in {reason_category(r) for r in record.reasons} or {"other"}:
                self.records_total.labels(record.decision, category).inc()
        except Exception:  # a bad label never stops the record
            log.exception("cannot count audit record")
        for sink in self.sinks:
            try:
                sink.write(record)
            except Exception as error:
                self._sink_failed(sink.name, error)

    def close(self) -> None:
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if callable(close):
                close()

    def failures(self, sink: str) -> float:
        value = self.registry.get_sample_value("trustgate_audit_write_failures_total", {"sink": sink})
        return value or 0.0

    def _sink_failed(self, sink: str, error: BaseException) -> None:
        log.error("audit sink %s failed to write a record: %s", sink, error)
        self.write_failures_total.labels(sink).inc()


# Reading records back


def _matches(
    record: AuditRecord, since: float | None, namespace: str | None, node: str | None, decision: str | None
) -> bool:
    if since is not None and record.timestamp < since:
        return False
    if namespace and record.namespace != namespace:
        return False
    if node and record.node != node:
        return False
    return not (decision and record.decision != decision)


def _since_timestamp(since: float | datetime | None, now: float | None) -> float | None:
    """`since` as a duration in seconds (records newer than now - since) or as an absolute datetime."""
    if since is None:
        return None
    if isinstance(since, datetime):
        return since.timestamp()
    return (time.time() if now is None else now) - float(since)


def _newest_first(records: list[AuditRecord]) -> list[AuditRecord]:
    records.reverse()  # newer lines come later: keep that order among equal timestamps
    records.sort(key=lambda r: r.timestamp, reverse=True)
    return records


def read_records(
    path: str | os.PathLike[str],
    since: float | datetime | None = None,
    namespace: str | None = None,
    node: str | None = None,
    decision: str | None = None,
    now: float | None = None,
) -> list[AuditRecord]:
    """Records from a JSON-lines audit log, newest first; lines that are not records are skipped."""
    cutoff = _since_timestamp(since, now)
    records = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = AuditRecord.from_json(line)
            except (ValueError, TypeError) as error:
                log.warning("%s:%d: not an audit record (%s)", path, number, error)
                continue
            if _matches(record, cutoff, namespace, node, decision):
                records.append(record)
    return _newest_first(records)


def _field(obj: Any, camel: str, snake: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(camel)
    return getattr(obj, snake, None)


def _continue_token(list_meta: Any) -> str | None:
    """`metadata.continue` of a list: a dict, or a client model (`var_continue`, older clients `_continue`)."""
    if list_meta is None:
        return None
    if isinstance(list_meta, Mapping):
        return list_meta.get("continue")
    return getattr(list_meta, "var_continue", None) or getattr(list_meta, "_continue", None)


def _event_time(event: Any) -> str:
    for camel, snake in (
        ("lastTimestamp", "last_timestamp"),
        ("eventTime", "event_time"),
        ("firstTimestamp", "first_timestamp"),
    ):
        value = _field(event, camel, snake)
        if isinstance(value, datetime):
            return format_rfc3339(value.timestamp())
        if isinstance(value, str) and value:
            return value
    return ""


def record_from_event(event: Any) -> AuditRecord | None:
    """The record an Event carries in its annotation; for an Event without one (not written by
    trustgate, or edited), a record with what the Event's own fields say."""
    metadata = _field(event, "metadata", "metadata")
    annotations = _field(metadata, "annotations", "annotations") or {}
    text = annotations.get(RECORD_ANNOTATION) if isinstance(annotations, Mapping) else None
    if isinstance(text, str):
        try:
            return AuditRecord.from_json(text)
        except (ValueError, TypeError):
            pass
    involved = _field(event, "involvedObject", "involved_object")
    kind = _field(involved, "kind", "kind")
    labels = _field(metadata, "labels", "labels") or {}
    decision = labels.get("trustgate.dev/decision") if isinstance(labels, Mapping) else None
    message = _field(event, "message", "message") or ""
    return AuditRecord(
        time=_event_time(event),
        uid="",
        operation="",
        namespace=str(_field(metadata, "namespace", "namespace") or ""),
        pod=str(_field(involved, "name", "name") or "") if kind == "Pod" else "",
        node="",
        user="",
        policy="",
        enforcement="",
        decision=decision if decision in DECISIONS else DECISION_REJECTED,
        reasons=[str(message)] if message else [],
        pod_uid=str(_field(involved, "uid", "uid") or "") if kind == "Pod" else "",
    )


def records_from_events(
    core_v1_api: Any,
    since: float | datetime | None = None,
    namespace: str | None = None,
    node: str | None = None,
    decision: str | None = None,
    now: float | None = None,
    page_size: int = 500,
) -> list[AuditRecord]:
    """Records from the `TrustPolicyViolation` Events (all namespaces unless `namespace`), newest first."""
    cutoff = _since_timestamp(since, now)
    selector = f"reason={EVENT_REASON}"
    records: list[AuditRecord] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"field_selector": selector, "limit": page_size}
        if token:
            kwargs["_continue"] = token
        if namespace:
            page = core_v1_api.list_namespaced_event(namespace, **kwargs)
        else:
            page = core_v1_api.list_event_for_all_namespaces(**kwargs)
        for event in _field(page, "items", "items") or []:
            record = record_from_event(event)
            if record is not None and _matches(record, cutoff, namespace, node, decision):
                records.append(record)
        token = _continue_token(_field(page, "metadata", "metadata"))
        if not token:
            break
    return _newest_first(records)


# Presentation and the `trustctl audit` command

_COLUMNS = ("TIME", "DECISION", "POD", "NODE", "POLICY", "USER", "REASONS")


def format_table(records: Sequence[AuditRecord]) -> str:
    """A plain-text table, one row per record, in the given order."""
    rows = [
        (
            r.time.split(".")[0] + "Z" if "." in r.time else r.time,
            r.decision,
            f"{r.namespace}/{r.pod}" if r.pod else r.namespace or "-",
            r.node or "-",
            r.policy or "-",
            r.user or "-",
            "; ".join(r.reasons) or "-",
        )
        for r in records
    ]
    return table.format_table(_COLUMNS, rows)
