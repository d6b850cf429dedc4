"""The cluster's trust at a glance (`trustctl nodes`) and report publishing (`trustctl publish`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from trustgate.cluster.cache import NODES, REPORTS, list_objects
from trustgate.core.node import NodeTrust
from trustgate.core.report import LEVELS, ReportVerifier, decode_unverified, format_time
from trustgate.core.snapshot import Snapshot

GROUP, VERSION, PLURAL = "trustgate.dev", "v1alpha1", "nodetrustreports"


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """A client for `kubeconfig`; without one, as kubectl: $KUBECONFIG or ~/.kube/config, else in-cluster."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        return config.new_client_from_config()
    except config.ConfigException:
        config.load_incluster_config()
        return client.ApiClient()


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


NODE_HEADERS = ("NODE", "TRUSTED", "FAILING LEVELS", "ASSET TAGS", "TIME LEFT", "REASON")


def node_row(trust: NodeTrust, now: float, skew: float) -> NodeRow:
    report = trust.report
    failing = tuple(level for level in LEVELS if not report.levels[level]) if report else ()
    reason = trust.failure_at(now, skew) or ""
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


def cluster_rows(api: client.ApiClient, verifier: ReportVerifier, now: float | None = None) -> list[NodeRow]:
    nodes, _ = list_objects(api, NODES)
    reports, _ = list_objects(api, REPORTS)
    tokens = {r["metadata"]["name"]: (r.get("spec") or {}).get("token") or "" for r in reports}
    snapshot = Snapshot.build(verifier, nodes=nodes, reports=tokens)
    moment = time.time() if now is None else now
    return [node_row(t, moment, snapshot.skew) for t in sorted(snapshot.nodes.values(), key=lambda t: t.name)]


def publish(api: client.ApiClient, node: str, token: str) -> str:
    """Create or replace the node's NodeTrustReport; returns 'created' or 'replaced'."""
    spec: dict[str, Any] = {"token": token}
    try:  # unsigned display copies for `kubectl get ntr`; decisions never read them
        _, claims = decode_unverified(token)
        if isinstance(claims.get("iss"), str):
            spec["issuer"] = claims["iss"]
        if isinstance(claims.get("exp"), int | float):
            spec["expiresAt"] = format_time(claims["exp"])
    except (ValueError, OverflowError, OSError):
        pass
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NodeTrustReport", "metadata": {"name": node}, "spec": spec}
    objects = client.CustomObjectsApi(api)
    try:
        objects.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        return "created"
    except ApiException as error:
        if error.status != 409:
            raise
    current = objects.get_cluster_custom_object(GROUP, VERSION, PLURAL, node)
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    objects.replace_cluster_custom_object(GROUP, VERSION, PLURAL, node, body)
    return "replaced"


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "expired"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
