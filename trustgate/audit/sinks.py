"""Where audit records go: a JSON-lines file, Kubernetes Events, and Prometheus counters.

`AuditLog` fans a record out to its sinks and counts it. Recording never raises into the
decision: a sink that fails is logged and counted, and a rejection stays a rejection. Each Event
carries its full record as JSON in the annotation `trustgate.dev/audit-record`, so nothing is
parsed back out of the human-readable message. Events expire (the apiserver's `--event-ttl`,
1 h by default); the file is the durable record.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from trustgate.audit.fair_queue import FairQueue, Suppressed
from trustgate.audit.record import (
    DECISION_REJECTED,
    DECISION_RELEASED,
    DECISION_WARNED,
    DECISIONS,
    EVENT_REASON,
    EVENT_REASON_RELEASED,
    OPERATION_KEY_RELEASE,
    RECORD_ANNOTATION,
    AuditRecord,
    truncate,
)
from trustgate.core.reasons import CODES, Code

log = logging.getLogger(__name__)

EVENT_COMPONENT = "trustgate-webhook"
MAX_EVENT_MESSAGE = 1024


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
    Events are sent by a background thread, off the admission request's path, from a `FairQueue`:
    a namespace that produces records faster than its share (`burst` at once, one more every `refill`
    seconds) gets the rest summarized in one Event of its own later, so that it cannot crowd out the
    Events of other namespaces. A failed call is logged and counted, never raised.
    """

    name = "event"

    def __init__(
        self,
        core_v1_api: Any,
        max_queue: int = 1000,
        instance: str | None = None,
        burst: int = 25,
        refill: float = 5.0,
    ) -> None:
        self.api = core_v1_api
        self.instance = instance or socket.gethostname()
        self.on_failure: FailureHandler | None = None
        self.on_suppressed: Callable[[], None] | None = None
        self._queue_args = (max_queue, burst, refill)
        self._queue: FairQueue[AuditRecord] = FairQueue(max_queue, burst, refill)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._start_lock = threading.Lock()
        self._pid = os.getpid()

    def attach(self, on_failure: FailureHandler, on_suppressed: Callable[[], None] | None = None) -> None:
        self.on_failure, self.on_suppressed = on_failure, on_suppressed

    def write(self, record: AuditRecord) -> None:
        self._ensure_thread()
        if not self._queue.put(record.namespace or "default", record) and self.on_suppressed is not None:
            self.on_suppressed()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record has been sent (or failed). True when drained in time."""
        return self._queue.wait_idle(timeout)

    def close(self, timeout: float = 5.0) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            self.flush(timeout)
            self._stopping.set()
            thread.join(timeout)
        self._thread = None

    def event_body(self, record: AuditRecord, count: int = 1, message: str | None = None) -> dict[str, Any]:
        namespace = record.namespace or "default"
        if record.pod and record.pod_uid:
            involved = {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": record.pod}
            involved["uid"] = record.pod_uid
        elif record.operation == OPERATION_KEY_RELEASE and record.node:
            # A key request is about a node (as kubelet's node Events, kept in `default`), not a pod.
            involved = {"apiVersion": "v1", "kind": "Node", "name": record.node}
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
            "reason": EVENT_REASON_RELEASED if record.decision == DECISION_RELEASED else EVENT_REASON,
            "type": "Normal" if record.decision == DECISION_RELEASED else "Warning",
            "message": message or event_message(record),
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": count,
            "source": {"component": EVENT_COMPONENT},
        }

    def summary_body(self, summary: Suppressed[AuditRecord]) -> dict[str, Any]:
        """One Event for the records of a namespace that went beyond its share; it carries the latest."""
        latest = dataclasses.replace(summary.latest, pod_uid="")  # about the namespace, not one pod
        message = truncate(
            f"trustgate: {summary.count} more rejections and violations in namespace {summary.source} than its "
            f"share of Events; the latest: {event_message(summary.latest)} (every record: trustctl audit)",
            MAX_EVENT_MESSAGE,
        )
        return self.event_body(latest, count=summary.count, message=message)

    def send(self, record: AuditRecord) -> None:
        body = self.event_body(record)
        self.api.create_namespaced_event(body["metadata"]["namespace"], body)

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # forked (gunicorn preload): threads do not survive a fork
            self._pid, self._thread = os.getpid(), None
            self._queue = FairQueue(*self._queue_args)
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping.clear()
                self._thread = threading.Thread(target=self._run, name="trustgate-events", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            item = self._queue.get(timeout=0.5)
            if item is None:
                continue
            try:
                if isinstance(item, Suppressed):
                    body = self.summary_body(item)
                    self.api.create_namespaced_event(body["metadata"]["namespace"], body)
                else:
                    self.send(item)
            except Exception as error:
                self._failed(error)
            finally:
                self._queue.done()

    def _failed(self, error: BaseException) -> None:
        if self.on_failure is not None:
            self.on_failure(self.name, error)
        else:
            log.error("audit sink %s failed: %s", self.name, error)


def event_message(record: AuditRecord) -> str:
    if record.operation == OPERATION_KEY_RELEASE:
        what = "released" if record.decision != DECISION_REJECTED else "refused"
        policy = f" [{record.policy}]" if record.policy else ""
        because = f": {'; '.join(record.reasons)}" if record.reasons else ""
        text = f"trustgate {what} the key of image {record.image or '?'} to node {record.node or '?'}{policy}{because}"
        return truncate(text, MAX_EVENT_MESSAGE)
    what = {DECISION_REJECTED: "rejected", DECISION_WARNED: "admitted with a warning"}.get(
        record.decision, "admitted, violation recorded"
    )
    pod = f"{record.namespace}/{record.pod}" if record.pod else record.namespace
    where = f" on node {record.node}" if record.node else ""
    policy = f" [{record.policy}]" if record.policy else ""
    message = f"trustgate {what} {record.operation.lower() or 'request'} of pod {pod}{where}{policy}: "
    return truncate(message + "; ".join(record.reasons), MAX_EVENT_MESSAGE)


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
            "Audit records of rejections and policy violations, by decision and reason code",
            ["decision", "reason"],
            registry=self.registry,
        )
        self.write_failures_total = Counter(
            "trustgate_audit_write_failures_total",
            "Audit records that a sink failed to write",
            ["sink"],
            registry=self.registry,
        )
        self.events_summarized_total = Counter(
            "trustgate_audit_events_summarized_total",
            "Audit records beyond their namespace's share of Events, summarized in one Event per namespace",
            registry=self.registry,
        )
        for decision in DECISIONS:
            for code in CODES:
                self.records_total.labels(decision, code)
        for sink in self.sinks:
            self.write_failures_total.labels(sink.name)
            attach = getattr(sink, "attach", None)
            if callable(attach):
                attach(self._sink_failed, self.events_summarized_total.inc)

    def expose(self, registry: CollectorRegistry) -> None:
        """Show this log's counters in `registry` too (an app's `/metrics`)."""
        if registry is not self.registry:
            for counter in (self.records_total, self.write_failures_total, self.events_summarized_total):
                registry.register(counter)

    def record(self, record: AuditRecord) -> None:
        record = record.capped()
        try:
            for code in record.codes or [Code.INTERNAL.value]:
                self.records_total.labels(record.decision, code).inc()
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
