"""An audit record: a rejection, policy violation, eviction or image key release, as JSON, and where records
live in the cluster.

Pure data: no I/O. The sinks (`trustgate.audit.sinks`) write records; `trustgate.audit.reader`
reads them back. A record's `uid` is its identity: the admission request's uid (unique per webhook
call, and carried into the API server's audit log as the `trustgate-uid` annotation), or a fresh one
for an eviction. The same record reaching several sinks, or read from several places, is one record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

DECISION_REJECTED = "rejected"
DECISION_WARNED = "warned"
DECISION_AUDITED = "audited"
DECISION_RELEASED = "released"  # an image key released to a node that meets the policies covering the image
DECISION_EVICTED = "evicted"  # a running pod evicted from a node that lost trust (onTrustLost: Evict)
DECISIONS = (DECISION_REJECTED, DECISION_WARNED, DECISION_AUDITED, DECISION_RELEASED, DECISION_EVICTED)

# The operation of image key requests (`keybroker`): refused ones are `rejected`, like refused admissions.
OPERATION_KEY_RELEASE = "KEY_RELEASE"

EVENT_REASON = "TrustPolicyViolation"
EVENT_REASON_RELEASED = "ImageKeyReleased"  # a release is no violation: a Normal Event of its own reason
EVICTION_EVENT_REASON = "TrustLostEviction"
DECISION_LABEL = "trustgate.dev/decision"  # on every Event that carries a record
RECORD_ANNOTATION = "trustgate.dev/audit-record"
# The member that marks a JSON line as an audit record among other log lines (stdout, a log pipeline).
LOG_MARKER = "trustgate_audit"
LOG_MARKER_VALUE = "v1"

# Every field that reaches a record (and an Event) is bounded: a request may carry a megabyte of name.
# Kubernetes' own limits where it has one (names 253, namespaces 63), generous ones elsewhere.
FIELD_LIMITS = {
    "time": 40,
    "uid": 64,
    "operation": 16,
    "namespace": 63,
    "pod": 253,
    "node": 253,
    "user": 256,
    "policy": 512,
    "enforcement": 16,
    "decision": 16,
    "pod_uid": 64,
    "image": 512,
    "replica": 253,
}
MAX_REASONS = 16
MAX_REASON_CHARS = 512


def truncate(text: str, limit: int) -> str:
    """Printable text of at most `limit` characters, cut with `...` when too long."""
    text = "".join(c if c.isprintable() else " " for c in text)
    if len(text) <= limit:
        return text
    return text[: max(limit - 3, 0)].rstrip() + "..."[: max(limit, 0)]


def format_rfc3339(timestamp: float) -> str:
    """`2026-11-26T10:00:00.123Z` (UTC, milliseconds)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class AuditRecord:
    """One rejection, policy violation, eviction or image key release. `time` is RFC 3339 UTC; dry runs are
    never recorded. A key request (`operation` KEY_RELEASE) names the node and the image, and no pod: the
    broker cannot know which pod a pull is for."""

    time: str
    uid: str
    operation: str
    namespace: str
    pod: str
    node: str
    user: str
    policy: str
    enforcement: str
    decision: str  # rejected | warned | audited | evicted
    reasons: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)  # the reasons' stable codes (trustgate.core.reasons.Code)
    pod_uid: str = ""  # the pod's uid when it exists (Events point at the pod then)
    image: str = ""  # the encrypted image of an image key request
    replica: str = ""  # the instance that wrote it (a pod name), where known

    def capped(self) -> AuditRecord:
        """The record with every field within its limit (`FIELD_LIMITS`, `MAX_REASONS`, `MAX_REASON_CHARS`)."""
        values: dict[str, Any] = {name: truncate(getattr(self, name), limit) for name, limit in FIELD_LIMITS.items()}
        values["reasons"] = [truncate(r, MAX_REASON_CHARS) for r in self.reasons[:MAX_REASONS]]
        if len(self.reasons) > MAX_REASONS:
            values["reasons"][-1] = f"... and {len(self.reasons) - MAX_REASONS + 1} more reasons"
        values["codes"] = [truncate(c, 32) for c in self.codes[:MAX_REASONS]]
        return AuditRecord(**values)

    @property
    def timestamp(self) -> float:
        try:
            return parse_rfc3339(self.time)
        except ValueError:
            return 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    def to_log_line(self) -> str:
        """One JSON object on one line, marked as an audit record among a log stream's other lines."""
        return json.dumps({LOG_MARKER: LOG_MARKER_VALUE, **asdict(self)}, separators=(",", ":"), ensure_ascii=False)

    @property
    def identity(self) -> tuple[str, ...]:
        """What makes two copies of a record one record: its uid, or (without one) all that it says."""
        if self.uid:
            return ("uid", self.uid)
        return ("fields", self.time, self.decision, self.namespace, self.pod, self.node, *self.reasons)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        """A record from its JSON form; raises ValueError when it is not one."""
        if not isinstance(data, Mapping):
            raise ValueError("audit record must be a JSON object")
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = data.get(f.name)
            if f.name in ("reasons", "codes"):
                if value is None:
                    value = []
                if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
                    raise ValueError(f"audit record {f.name} must be a list of strings")
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
