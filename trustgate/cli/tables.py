"""Plain, left-aligned text tables like kubectl's: the rows of `trustctl nodes` and `trustctl audit`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trustgate.audit.record import AuditRecord
from trustgate.core.node import NodeTrust
from trustgate.core.report import LEVELS

NODE_HEADERS = ("NODE", "TRUSTED", "FAILING LEVELS", "ASSET TAGS", "TIME LEFT", "REASON")
AUDIT_HEADERS = ("TIME", "DECISION", "POD", "NODE", "POLICY", "USER", "REASONS")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in rows]) for i, header in enumerate(headers)]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *rows]
    )


@dataclass(frozen=True)
class NodeRow:
    node: str
    trusted: bool
    failing_levels: tuple[str, ...]
    asset_tags: dict[str, str]
    seconds_left: float | None
    reason: str

    def cells(self) -> list[str]:
        left = "-" if self.seconds_left is None else _duration(self.seconds_left)
        tags = ",".join(f"{k}={v}" for k, v in sorted(self.asset_tags.items())) or "-"
        return [
            self.node,
            "yes" if self.trusted else "no",
            ",".join(self.failing_levels) or "-",
            tags,
            left,
            self.reason or "-",
        ]


def node_row(trust: NodeTrust, now: float, skew: float) -> NodeRow:
    report = trust.report
    failing = tuple(level for level in LEVELS if not report.levels[level]) if report else ()
    failure = trust.failure_at(now, skew)
    reason = failure.message if failure is not None else ""
    if not reason and failing:
        reason = "; ".join(f"level {level} not trusted" for level in failing)
    return NodeRow(
        node=trust.name,
        trusted=not reason,
        failing_levels=failing,
        asset_tags=dict(report.asset_tags) if report else {},
        seconds_left=report.expires_at - now if report else None,
        reason=reason,
    )


def audit_table(records: Sequence[AuditRecord]) -> str:
    """One row per record, in the given order."""
    rows = [
        (
            r.time.split(".")[0] + "Z" if "." in r.time else r.time,
            r.decision,
            f"{r.namespace}/{r.pod}" if r.pod else f"image {r.image}" if r.image else r.namespace or "-",
            r.node or "-",
            r.policy or "-",
            r.user or "-",
            "; ".join(r.reasons) or "-",
        )
        for r in records
    ]
    return format_table(AUDIT_HEADERS, rows)


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "expired"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
