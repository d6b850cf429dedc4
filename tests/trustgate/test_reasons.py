"""Failure reasons map to a bounded set of metric categories."""

from __future__ import annotations

import pytest

from trustgate.core.reasons import CATEGORIES, reason_category


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        ("no trust report", "no_report"),
        ("node not found in the cluster", "unknown_node"),
        ("trust report invalid: signature does not verify with key k", "invalid_report"),
        ("trust report expired at 2026-11-26T10:00:00Z", "expired"),
        ("trust report not valid before 2026-11-26T10:00:00Z", "not_yet_valid"),
        ("trust report issued in the future (2026-11-26T10:00:00Z)", "not_yet_valid"),
        ("report bound to another host (issued for node x)", "bound_elsewhere"),
        ("node reports no system UUID to bind the report to", "bound_elsewhere"),
        ("report predates the node's last reboot (boot id differs)", "rebooted"),
        ("level kernel not trusted; asset tag country=EU not in [US]", "level"),
        ("asset tag country=EU not in [US]", "asset_tag"),
        ("node label kubernetes.io/os In [linux] not satisfied", "node_label"),
        ("node affinity not satisfied by the node's verified labels", "node_label"),
        ("TrustPolicy p is invalid: enforcement must be Enforce, Warn or Audit", "policy_invalid"),
        ("trustgate: trust cache not ready, cannot admit pod a/b on node n yet (fail closed)", "not_ready"),
        ("trustgate: pod not found: cannot check the binding of pod a/b to node n", "pod_not_found"),
        ("something new", "other"),
    ],
)
def test_each_reason_falls_in_its_category(reason: str, category: str) -> None:
    assert reason_category(reason) == category
    assert category in CATEGORIES
