"""Audit records rebuilt from kube-apiserver's audit log (`audit.k8s.io/v1` Events, one JSON per line).

Every webhook answer that is not a plain allow carries trustgate's `auditAnnotations`, and the API
server writes them into its own audit log, prefixed with the webhook's name
(`bindings.trustgate.dev/trustgate-decision: rejected`), beside what it knows itself: who asked, for
what object, and the answer it gave. That log is kept by the control plane, away from trustgate's
pods, under the retention the cluster's operators chose; with an audit policy of level Metadata or
more for pods, it holds every refusal the API server returned. The `trustgate-uid` annotation (the
admission request's uid) makes each rebuilt record the same record as the replica's own.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from trustgate.audit.reader import Filters, merge, record_files
from trustgate.audit.record import DECISIONS, AuditRecord, format_rfc3339, parse_rfc3339

log = logging.getLogger(__name__)

ANNOTATION_PREFIX = "trustgate-"
_VERBS = {"create": "CREATE", "update": "UPDATE", "patch": "UPDATE", "delete": "DELETE"}


def records_from_audit_event(event: Mapping[str, Any]) -> list[AuditRecord]:
    """The trustgate records in one API server audit Event: one per trustgate webhook that annotated it."""
    annotations = event.get("annotations")
    if not isinstance(annotations, Mapping):
        return []
    by_webhook: dict[str, dict[str, str]] = {}
    for key, value in annotations.items():
        webhook, _, name = str(key).rpartition("/")
        if webhook and name.startswith(ANNOTATION_PREFIX) and isinstance(value, str):
            by_webhook.setdefault(webhook, {})[name[len(ANNOTATION_PREFIX) :]] = value
    return [_record(event, values) for values in by_webhook.values() if values.get("decision") in DECISIONS]


def _record(event: Mapping[str, Any], values: Mapping[str, str]) -> AuditRecord:
    ref = event.get("objectRef") if isinstance(event.get("objectRef"), Mapping) else {}
    user = event.get("user") if isinstance(event.get("user"), Mapping) else {}
    namespace, _, pod = values.get("pod", "").partition("/")
    if not pod:
        namespace, pod = str(ref.get("namespace") or ""), str(ref.get("name") or "")
    verb = str(event.get("verb") or "")
    reasons = [r for r in values.get("reasons", "").split("; ") if r]
    return AuditRecord(
        time=_time(event),
        uid=values.get("uid", ""),
        operation=values.get("operation") or _VERBS.get(verb, verb.upper()),
        namespace=namespace,
        pod=pod,
        node=values.get("node", ""),
        user=str(user.get("username") or ""),
        policy=values.get("policy", ""),
        enforcement=values.get("enforcement", ""),
        decision=values["decision"],
        reasons=reasons,
        codes=[c for c in values.get("codes", "").split(",") if c],
    ).capped()


def _time(event: Mapping[str, Any]) -> str:
    for member in ("stageTimestamp", "requestReceivedTimestamp"):
        value = event.get(member)
        if isinstance(value, str) and value:
            try:
                return format_rfc3339(parse_rfc3339(value))
            except ValueError:
                continue
    return ""


def _events(path: os.PathLike[str] | str) -> Iterator[Mapping[str, Any]]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if "trustgate-decision" not in line:
                continue  # the bulk of an audit log: other requests, not parsed at all
            try:
                event = json.loads(line)
            except ValueError:
                log.warning("%s:%d: not an audit event", path, number)
                continue
            if isinstance(event, Mapping):
                yield event


def records_from_audit_log(
    paths: Iterable[str | os.PathLike[str]],
    since: float | datetime | None = None,
    namespace: str | None = None,
    node: str | None = None,
    decision: str | None = None,
    now: float | None = None,
) -> list[AuditRecord]:
    """The records of kube-apiserver audit log files (a directory: every file in it, rotated ones
    included), newest first, each once. Raises `OSError` when a file cannot be read."""
    keep = Filters(since, namespace, node, decision, now)
    found: list[AuditRecord] = []
    for path in record_files(paths):
        for event in _events(path):
            found += [r for r in records_from_audit_event(event) if keep(r)]
    return merge(found)
