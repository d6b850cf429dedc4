"""NodeTrustReport objects: publishing a node's report, and reading the cluster's trust in one snapshot."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trustgate.cluster.api import list_objects
from trustgate.cluster.resources import GROUP, GROUP_VERSION, NODES, REPORTS, REPORTS_PLURAL, VERSION
from trustgate.core.report import ReportVerifier, decode_unverified, format_time
from trustgate.core.snapshot import Snapshot


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
    body = {"apiVersion": GROUP_VERSION, "kind": "NodeTrustReport", "metadata": {"name": node}, "spec": spec}
    objects = client.CustomObjectsApi(api)
    try:
        objects.create_cluster_custom_object(GROUP, VERSION, REPORTS_PLURAL, body)
        return "created"
    except ApiException as error:
        if error.status != 409:
            raise
    current = objects.get_cluster_custom_object(GROUP, VERSION, REPORTS_PLURAL, node)
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    objects.replace_cluster_custom_object(GROUP, VERSION, REPORTS_PLURAL, node, body)
    return "replaced"


def read_snapshot(api: client.ApiClient, verifier: ReportVerifier) -> Snapshot:
    """The Nodes and their reports, listed once and verified: what `trustctl nodes` shows."""
    nodes, _ = list_objects(api, NODES)
    reports, _ = list_objects(api, REPORTS)
    tokens = {r["metadata"]["name"]: (r.get("spec") or {}).get("token") or "" for r in reports}
    return Snapshot.build(verifier, nodes=nodes, reports=tokens)
