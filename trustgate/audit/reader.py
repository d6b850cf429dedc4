"""Reading audit records back: from a JSON-lines file or from the cluster's Events (`trustctl audit`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from trustgate.audit.record import (
    DECISION_REJECTED,
    DECISIONS,
    EVENT_REASONS,
    RECORD_ANNOTATION,
    AuditRecord,
    format_rfc3339,
)

log = logging.getLogger(__name__)


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
    """Records from trustgate's Events (`TrustPolicyViolation`, `ImageKeyReleased`; all namespaces unless
    `namespace`), newest first."""
    cutoff = _since_timestamp(since, now)
    records: list[AuditRecord] = []
    for reason in EVENT_REASONS:
        records += _records_of_reason(core_v1_api, f"reason={reason}", cutoff, namespace, node, decision, page_size)
    return _newest_first(records)


def _records_of_reason(
    core_v1_api: Any,
    selector: str,
    cutoff: float | None,
    namespace: str | None,
    node: str | None,
    decision: str | None,
    page_size: int,
) -> list[AuditRecord]:
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
    return records
