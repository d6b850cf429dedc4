"""Failure reasons in a small, fixed set of categories: bounded label values for metrics.

Reasons are human sentences (report.py, node.py, policy.py and the services write them); a
metric must not carry them verbatim, or every node name and timestamp becomes a new series.
"""

from __future__ import annotations

from trustgate.core.node import NO_REPORT, UNKNOWN_NODE

CACHE_NOT_READY = "trust cache not ready"
POD_NOT_FOUND = "pod not found"

# A reason's category is that of its first matching prefix; joined reasons count by the first.
_PREFIXES: tuple[tuple[str, str], ...] = (
    (NO_REPORT, "no_report"),
    (UNKNOWN_NODE, "unknown_node"),
    ("trust report invalid", "invalid_report"),
    ("trust report expired", "expired"),
    ("trust report not valid before", "not_yet_valid"),
    ("trust report issued in the future", "not_yet_valid"),
    ("report bound to another host", "bound_elsewhere"),
    ("node reports no system UUID", "bound_elsewhere"),
    ("report predates the node's last reboot", "rebooted"),
    ("level ", "level"),
    ("asset tag ", "asset_tag"),
    ("node label ", "node_label"),
    ("node affinity", "node_label"),
    ("TrustPolicy ", "policy_invalid"),
)
# Service-level failures, found anywhere in a message.
_NEEDLES: tuple[tuple[str, str], ...] = (
    (CACHE_NOT_READY, "not_ready"),
    (POD_NOT_FOUND, "pod_not_found"),
    ("cannot determine", "policy_invalid"),
    ("malformed", "bad_request"),
    ("internal error", "internal"),
)
CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys([c for _, c in _PREFIXES + _NEEDLES] + ["other"]))


def reason_category(reason: str) -> str:
    for prefix, category in _PREFIXES:
        if reason.startswith(prefix):
            return category
    for needle, category in _NEEDLES:
        if needle in reason:
            return category
    return "other"
