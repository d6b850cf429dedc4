"""The trust of a namespace's running pods as a `wgpolicyk8s.io/v1alpha2` PolicyReport.

The format the Kubernetes policy working group defined and that Policy Reporter, Kyverno's and
other tools read: one report per namespace (named `trustgate-pod-trust`), one result per running
trust-requiring pod, with its node, the failed checks and their codes. Pure: the controller writes
what this renders. A report is bounded: at most `max_results` results (failures first), while its
summary counts every pod; a namespace without trust-requiring pods has no report at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from trustgate.core.reasons import describe
from trustgate.core.running import PodTrust, Result

GROUP = "wgpolicyk8s.io"
VERSION = "v1alpha2"
PLURAL = "policyreports"
API_VERSION = f"{GROUP}/{VERSION}"
REPORT_NAME = "trustgate-pod-trust"
SOURCE = "trustgate"
RULE = "node-trust"
CATEGORY = "Node attestation"
MANAGED_BY = {"app.kubernetes.io/managed-by": "trustgate"}
OMITTED_ANNOTATION = "trustgate.dev/results-omitted"
DEFAULT_MAX_RESULTS = 1000  # ~0.6 KB each: a report stays far below etcd's 1.5 MiB object limit
_ORDER = {Result.FAIL: 0, Result.ERROR: 1, Result.WARN: 2, Result.PASS: 3}
_SEVERITY = {Result.FAIL: "high", Result.ERROR: "medium", Result.WARN: "medium", Result.PASS: "info"}
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class Entry:
    """A pod's trust and when it last changed (the result's timestamp: unchanged results keep theirs)."""

    trust: PodTrust
    since: float


def report_body(namespace: str, entries: Iterable[Entry], max_results: int = DEFAULT_MAX_RESULTS) -> dict[str, Any]:
    """The PolicyReport of `namespace` (without a resourceVersion)."""
    ordered = sorted(entries, key=lambda e: (_ORDER[e.trust.result], e.trust.name))
    summary = {"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0}
    for entry in ordered:
        summary[entry.trust.result.value] += 1
    kept = ordered[:max_results]
    metadata: dict[str, Any] = {"name": REPORT_NAME, "namespace": namespace, "labels": dict(MANAGED_BY)}
    if len(ordered) > len(kept):
        metadata["annotations"] = {OMITTED_ANNOTATION: str(len(ordered) - len(kept))}
    return {
        "apiVersion": API_VERSION,
        "kind": "PolicyReport",
        "metadata": metadata,
        "summary": summary,
        "results": [result(entry) for entry in kept],
    }


def result(entry: Entry) -> dict[str, Any]:
    trust = entry.trust
    properties = {"node": trust.node, "policies": ", ".join(trust.sources)}
    if trust.reasons:
        properties["codes"] = ",".join(dict.fromkeys(r.code.value for r in trust.reasons))
    if trust.evict:
        properties["onTrustLost"] = "Evict"
    return {
        "source": SOURCE,
        "policy": ", ".join(trust.failing or trust.sources) or "trust",
        "rule": RULE,
        "category": CATEGORY,
        "severity": _SEVERITY[trust.result],
        "result": trust.result.value,
        "scored": trust.result is not Result.WARN,
        "timestamp": {"seconds": int(entry.since), "nanos": int((entry.since % 1) * 1e9)},
        "resources": [_pod_reference(trust)],
        "message": message(trust),
        "properties": properties,
    }


def _pod_reference(trust: PodTrust) -> dict[str, str]:
    reference = {"apiVersion": "v1", "kind": "Pod", "namespace": trust.namespace, "name": trust.name}
    if trust.uid:
        reference["uid"] = trust.uid
    return reference


def message(trust: PodTrust) -> str:
    if trust.result is Result.PASS:
        return f"node {trust.node} satisfies {', '.join(trust.sources)}"
    text = f"node {trust.node} fails {', '.join(trust.failing) or 'the trust requirement'}: {describe(trust.reasons)}"
    if trust.evict:
        text += " (onTrustLost: Evict)"
    return text[:MAX_MESSAGE]


def content(report: Mapping[str, Any]) -> str:
    """What of a report trustgate decides, canonically (the API server returns members sorted): two
    reports with the same content need no write."""
    metadata = report.get("metadata") or {}
    omitted = (metadata.get("annotations") or {}).get(OMITTED_ANNOTATION)
    return json.dumps([report.get("summary"), report.get("results"), omitted], sort_keys=True)
