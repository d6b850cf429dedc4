"""Where audit records go: stdout, a JSON-lines file, Kubernetes Events, and Prometheus counters.

`AuditLog` fans a record out to its sinks and counts it. Recording never raises into the
decision: a sink that fails is logged and counted, and a rejection stays a rejection. A sink is
*durable* when the record outlives the process once `write` returns: stdout (`StreamSink`, taken
by the container runtime into the cluster's log pipeline) and the file (`JsonLinesSink`, on a
volume). `record` says whether a durable sink took the record, so that the webhook can refuse an
admission it could not record. Events are not durable: they are sent later, from a queue, and
expire (the apiserver's `--event-ttl`, 1 h by default); each carries its full record as JSON in
the annotation `trustgate.dev/audit-record`, so nothing is parsed back out of the message.
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
    DECISION_EVICTED,
    DECISION_LABEL,
    DECISION_REJECTED,
    DECISION_RELEASED,
    DECISION_WARNED,
    DECISIONS,
    EVENT_REASON,
    EVENT_REASON_RELEASED,
    EVICTION_EVENT_REASON,
    OPERATION_KEY_RELEASE,
    RECORD_ANNOTATION,
    AuditRecord,
    truncate,
)
from trustgate.core.reasons import CODES, Code
from trustgate.settings import AuditSettings

log = logging.getLogger(__name__)

EVENT_COMPONENT = "trustgate-webhook"
MAX_EVENT_MESSAGE = 1024


class Sink(Protocol):
    name: str

    def write(self, record: AuditRecord) -> None: ...


FailureHandler = Callable[[str, BaseException], None]


def is_durable(sink: Sink) -> bool:
    """Whether a record `write` returned from survives the process (a sink says so with `durable`)."""
    return bool(getattr(sink, "durable", True))


def _write_all(fd: int, data: bytes, where: str) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"cannot write to {where}")
        view = view[written:]


class StreamSink:
    """Writes one marked JSON line per record (`AuditRecord.to_log_line`) to a stream, stdout by default:
    the container runtime keeps it, and the cluster's log pipeline ships it, whatever becomes of the pod.

    A line is written with `write(2)` calls under a lock, so records of one process never interleave;
    the service's own log lines go to stderr. Raises `OSError` on failure (a closed pipe, a full disk)."""

    name = "stdout"
    durable = True

    def __init__(self, fd: int = 1) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def write(self, record: AuditRecord) -> None:
        line = (record.to_log_line() + "\n").encode("utf-8")
        with self._lock:
            _write_all(self.fd, line, "stdout" if self.fd == 1 else f"descriptor {self.fd}")


class JsonLinesSink:
    """Appends one JSON line per record. Each line is a single `write(2)` on an `O_APPEND` descriptor,
    so lines from several threads or gunicorn workers never interleave; the file is opened per record,
    which also follows log rotation. Raises `OSError` on failure (the `AuditLog` logs and counts it)."""

    name = "jsonl"
    durable = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(self, record: AuditRecord) -> None:
        line = (record.to_log_line() + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"short write to {self.path} ({written} of {len(line)} bytes)")
            finally:
                os.close(fd)


# The Event reason of a record's decision: violations by default.
EVENT_REASON_BY_DECISION = {DECISION_RELEASED: EVENT_REASON_RELEASED, DECISION_EVICTED: EVICTION_EVENT_REASON}


class EventSink:
    """Creates a Kubernetes Event (type Warning, reason `TrustPolicyViolation`) per record.

    The involved object is the pod when it exists (its uid is known), otherwise the namespace.
    Events are sent by a background thread, off the admission request's path, from a `FairQueue`:
    a namespace that produces records faster than its share (`burst` at once, one more every `refill`
    seconds) gets the rest summarized in one Event of its own later, so that it cannot crowd out the
    Events of other namespaces. A failed call is logged and counted, never raised.
    """

    name = "event"
    durable = False  # sent later, from a queue, and expired by the API server

    def __init__(
        self,
        core_v1_api: Any,
        max_queue: int = 1000,
        instance: str | None = None,
        burst: int = 25,
        refill: float = 5.0,
        component: str = EVENT_COMPONENT,
    ) -> None:
        self.api = core_v1_api
        self.component = component
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
                "labels": {"app.kubernetes.io/managed-by": "trustgate", DECISION_LABEL: record.decision},
            },
            "involvedObject": involved,
            "reason": EVENT_REASON_BY_DECISION.get(record.decision, EVENT_REASON),
            "type": "Normal" if record.decision == DECISION_RELEASED else "Warning",
            "message": message or event_message(record),
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": count,
            "source": {"component": self.component},
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
    policy = f" [{record.policy}]" if record.policy else ""
    if record.operation == OPERATION_KEY_RELEASE:
        what = "released" if record.decision != DECISION_REJECTED else "refused"
        because = f": {'; '.join(record.reasons)}" if record.reasons else ""
        text = f"trustgate {what} the key of image {record.image or '?'} to node {record.node or '?'}{policy}{because}"
        return truncate(text, MAX_EVENT_MESSAGE)
    pod = f"{record.namespace}/{record.pod}" if record.pod else record.namespace
    if record.decision == DECISION_EVICTED:
        message = f"trustgate evicted pod {pod} from node {record.node or 'unknown'}, which lost trust{policy}: "
        return truncate(message + "; ".join(record.reasons), MAX_EVENT_MESSAGE)
    what = {DECISION_REJECTED: "rejected", DECISION_WARNED: "admitted with a warning"}.get(
        record.decision, "admitted, violation recorded"
    )
    where = f" on node {record.node}" if record.node else ""
    message = f"trustgate {what} {record.operation.lower() or 'request'} of pod {pod}{where}{policy}: "
    return truncate(message + "; ".join(record.reasons), MAX_EVENT_MESSAGE)


def audit_log(
    registry: CollectorRegistry | None,
    settings: AuditSettings,
    events_api: Any = None,
    component: str = EVENT_COMPONENT,
) -> AuditLog:
    """A service's audit log from its settings: stdout and the file (durable), and Events through
    `events_api` unless `--no-events`."""
    sinks: list[Sink] = []
    if not settings.no_audit_stdout:
        sinks.append(StreamSink())
    if settings.audit_log:
        sinks.append(JsonLinesSink(settings.audit_log))
    replica = settings.replica_name()
    if events_api is not None and not settings.no_events:
        sinks.append(EventSink(events_api, instance=replica or None, component=component))
    return AuditLog(sinks, registry, replica=replica)


def _event_name(base: str) -> str:
    """`<object>.<hex nanoseconds>`, like client-go's recorder, made a valid DNS subdomain."""
    cleaned = "".join(c if c.isalnum() or c in "-." else "-" for c in base.lower()).strip("-.")[:200]
    return f"{cleaned or 'trustgate'}.{time.time_ns():x}"


class AuditLog:
    """Fans each record out to the sinks and counts it; `record` never raises. `replica` names this
    instance in every record (a pod name: which replica wrote what)."""

    def __init__(
        self, sinks: Iterable[Sink] = (), registry: CollectorRegistry | None = None, replica: str = ""
    ) -> None:
        self.sinks: tuple[Sink, ...] = tuple(sinks)
        self.replica = replica
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
        self.unrecorded_total = Counter(
            "trustgate_audit_unrecorded_total",
            "Audit records that no durable sink (stdout, file) took, by decision: the record exists nowhere",
            ["decision"],
            registry=self.registry,
        )
        for decision in DECISIONS:
            self.unrecorded_total.labels(decision)
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
            for counter in (
                self.records_total,
                self.write_failures_total,
                self.events_summarized_total,
                self.unrecorded_total,
            ):
                registry.register(counter)

    @property
    def durable(self) -> bool:
        """Whether any sink could keep a record beyond this process."""
        return any(is_durable(sink) for sink in self.sinks)

    def record(self, record: AuditRecord, durable_required: bool = False) -> bool:
        """Write `record` to every sink, the durable ones first; True when at least one of them took it.

        With `durable_required`, a record that no durable sink took goes nowhere else and is not
        counted as made: the caller turns its decision into a refusal, and records that instead."""
        if self.replica and not record.replica:
            record = dataclasses.replace(record, replica=self.replica)
        record = record.capped()
        kept = False
        for sink in sorted(self.sinks, key=lambda s: not is_durable(s)):
            if not is_durable(sink) and durable_required and not kept:
                break
            try:
                sink.write(record)
            except Exception as error:
                self._sink_failed(sink.name, error)
            else:
                kept = kept or is_durable(sink)
        if kept or not durable_required:
            try:
                for code in record.codes or [Code.INTERNAL.value]:
                    self.records_total.labels(record.decision, code).inc()
            except Exception:  # a bad label never stops the record
                log.exception("cannot count audit record")
        if not kept:
            log.error(
                "audit record of %s %s/%s (uid %s) kept by no durable sink",
                record.decision,
                record.namespace,
                record.pod,
                record.uid,
            )
            self.unrecorded_total.labels(record.decision if record.decision in DECISIONS else DECISION_REJECTED).inc()
        return kept

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
