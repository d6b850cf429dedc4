"""Reading audit records back, from everywhere they are kept, as one list (`trustctl audit`).

Every replica writes its own records: to stdout (kept by the container runtime and the cluster's
log pipeline), to its file on a volume, and as Events. `read_records` reads JSON-lines files and
log captures (a directory is every file in it; container runtime log lines, CRI or Docker's
json-file, are unwrapped, and the lines that are not records are skipped); `records_from_events`
reads the Events; `trustgate.audit.apiserver` rebuilds records from kube-apiserver's audit log.
`merge` makes one list of them, newest first, each record once (by `AuditRecord.identity`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from trustgate.audit.record import (
    DECISION_LABEL,
    DECISION_REJECTED,
    DECISIONS,
    LOG_MARKER,
    RECORD_ANNOTATION,
    AuditRecord,
    format_rfc3339,
)

log = logging.getLogger(__name__)

# A CRI log line (containerd, CRI-O): `<RFC 3339 time> <stream> <P|F> <text>`; P: more of the line follows.
_CRI_LINE = re.compile(r"^(\S+) (stdout|stderr) ([PF]) ?(.*)$")


class Filters:
    """What `trustctl audit` narrows a list to."""

    def __init__(
        self,
        since: float | datetime | None = None,
        namespace: str | None = None,
        node: str | None = None,
        decision: str | None = None,
        now: float | None = None,
    ) -> None:
        self.cutoff = _since_timestamp(since, now)
        self.namespace, self.node, self.decision = namespace, node, decision

    def __call__(self, record: AuditRecord) -> bool:
        return _matches(record, self.cutoff, self.namespace, self.node, self.decision)


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


def merge(*sources: Iterable[AuditRecord]) -> list[AuditRecord]:
    """One list of the records of every source, newest first, each record once. Where copies differ
    (a record rebuilt from the API server's audit log says less than the replica's own), the copy of
    the earliest source is kept: pass the replicas' own records first."""
    seen: dict[tuple[str, ...], AuditRecord] = {}
    for source in sources:
        for record in source:
            seen.setdefault(record.identity, record)
    found = list(seen.values())
    found.sort(key=lambda r: r.timestamp, reverse=True)
    return found


def record_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The files named, a directory standing for every regular file in it (not recursively), sorted."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file())
        else:
            files.append(path)  # a missing file fails when it is opened, with its name
    return files


def read_records(
    path: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    since: float | datetime | None = None,
    namespace: str | None = None,
    node: str | None = None,
    decision: str | None = None,
    now: float | None = None,
) -> list[AuditRecord]:
    """The records in JSON-lines files, log captures or directories of them, newest first, each once.
    Raises `OSError` when a file cannot be read."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    keep = Filters(since, namespace, node, decision, now)
    found: list[AuditRecord] = []
    for file in record_files(paths):
        found += [r for r in _records_in(file) if keep(r)]
    return merge(_newest_first(found))


def _records_in(path: Path) -> Iterator[AuditRecord]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, text in _log_texts(handle):
            record = parse_log_text(text)
            if record is not None:
                yield record
            elif LOG_MARKER in text:
                log.warning("%s:%d: a malformed audit record", path, number)


def _log_texts(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """The text of each log line, unwrapped from a container runtime's format; CRI partial lines joined."""
    partial: list[str] = []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        cri = _CRI_LINE.match(line)
        if cri is not None:
            partial.append(cri.group(4))
            if cri.group(3) == "P":
                continue
            line, partial = "".join(partial), []
        elif line.startswith('{"log":'):
            try:
                wrapped = json.loads(line)
            except ValueError:
                pass
            else:
                if isinstance(wrapped, dict) and isinstance(wrapped.get("log"), str):
                    line = wrapped["log"].rstrip("\n")
        yield number, line


def parse_log_text(text: str) -> AuditRecord | None:
    """The record a log line holds: a marked record line, or a line of an audit file of an older version
    (an object with `time`, `uid` and `decision`); None for any other line."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        data = json.loads(text[start:])
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if LOG_MARKER not in data and not {"time", "uid", "decision"} <= data.keys():
        return None
    try:
        return AuditRecord.from_dict(data)
    except (ValueError, TypeError):
        return None


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
    decision = labels.get(DECISION_LABEL) if isinstance(labels, Mapping) else None
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
    """Records from trustgate's Events (those labelled with a decision: violations, evictions, key releases; all
    namespaces unless `namespace`), newest first, each once."""
    keep = Filters(since, namespace, node, decision, now)
    records: list[AuditRecord] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"label_selector": DECISION_LABEL, "limit": page_size}
        if token:
            kwargs["_continue"] = token
        if namespace:
            page = core_v1_api.list_namespaced_event(namespace, **kwargs)
        else:
            page = core_v1_api.list_event_for_all_namespaces(**kwargs)
        for event in _field(page, "items", "items") or []:
            record = record_from_event(event)
            if record is not None and keep(record):
                records.append(record)
        token = _continue_token(_field(page, "metadata", "metadata"))
        if not token:
            break
    return merge(_newest_first(records))
